"""Side-by-side measurements of cgroupfs against native /proc and LXCFS (`python -m benchmarks.reads`)."""

"""Real parts that both the tests and the benchmarks drive.

A `cgroupfs daemon` subprocess (daemon_process), cgroups on any hierarchy
(cgroups), a private Docker engine with a busybox image (docker_engine), what a
container sees (docker_checks), a /metrics client (metrics) and deadlines that
stretch on slow hosts (timing).

The tests run the benchmarks (tests/reliability/test_soak.py runs benchmarks.soak),
so the benchmarks must not import the tests: both import this package, and this
package imports neither, nor pytest.  Test policy (require(), skips, markers) stays
in tests/.  Not installed: it lives beside the code it drives, like tests/.
"""

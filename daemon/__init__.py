"""The host agent around the cgroupfs filesystem: everything with side effects.

Mounting and unmounting, the load-average sampler, Docker injection, metrics,
systemd notification and the command line live here; `cgroupfs` (the library)
starts nothing by itself.
"""

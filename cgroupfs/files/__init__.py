"""One module per virtual file: pure functions from typed snapshots to bytes.

No I/O happens here.  To learn how a field is computed, open the module named
after the file; docs/formulas.md says the same per cgroup version.
"""

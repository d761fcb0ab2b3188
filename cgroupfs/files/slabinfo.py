"""proc/slabinfo: the cgroup's own slab caches where the kernel keeps them apart.

cgroup v1 on kernels before 5.9 had per-cgroup caches, listed in the cgroup's
memory.kmem.slabinfo: its lines under the kernel's header.  Since 5.9 caches are
shared by every cgroup (that file prints nothing) and cgroup v2 never had such a
file: the container gets the header and no caches, not the host's list (which
the kernel shows to root only, for it maps the kernel's heap).  The container's
slab totals are meminfo's Slab, SReclaimable and SUnreclaim.
"""

from __future__ import annotations

# mm/slab_common.c print_slabinfo_header(), SLUB (no statistics)
HEADER = (
    "slabinfo - version: 2.1\n"
    "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
    " : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n"
)


def render(caches: tuple[str, ...] | None) -> bytes:
    return (HEADER + "".join(line + "\n" for line in caches or ())).encode()

#!/usr/bin/env python3
"""Build and cache the pure cgroup v2 test VM: kernel, initramfs, root image, Python libraries.

    python3 tests/vm/build.py [--cache DIR] [--packages "pkg ..."] [--force]

Everything lands under the cache directory (default /var/cache/cgroupfs-vm, or
$CGROUPFS_VM_CACHE), in directories named after a hash of the recipe:

    image-<key>/vmlinux            Debian's linux-image-6.1 amd64 kernel, uncompressed (QEMU boots
                                   the ELF through its PVH entry point)
    image-<key>/initramfs.cpio.gz  busybox-static + the virtio/ext4/9p/fuse modules; mounts the root
                                   disk and the control share, then hands over to the guest init
    image-<key>/rootfs.ext4        debootstrap --variant=minbase bookworm + the guest packages + the
                                   kernel's modules, made with mke2fs -d (opened with snapshot=on)
    pylib-<key>/pylib.ext4         the project's PyPI dependencies (pip install --target), as a
                                   read-only disk mounted at /mnt/pylib
    debs/                          .debs kept between builds (debootstrap --cache-dir, apt archives)

The image key hashes this file, the initramfs init script, the guest package list and the
Debian release; the pylib key hashes this file, the requirements from pyproject.toml and the
guest's Python version.  A directory is complete once its manifest.json exists: a build either
finishes and renames its work directory into place, or leaves nothing behind.  Nothing is installed on
the host and nothing from the host's Python environment is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
INITRAMFS_INIT = HERE / "initramfs_init.sh"

DEFAULT_CACHE = "/var/cache/cgroupfs-vm"
SUITE = "bookworm"
MIRROR = os.environ.get("CGROUPFS_VM_MIRROR", "http://deb.debian.org/debian")
# bookworm's 6.1 LTS kernel, generic amd64 flavour (the "cloud" flavour has no 9p).
KERNEL_METAPACKAGE = "linux-image-amd64"

# What the guest needs beyond minbase: the Makefile's TEST_PACKAGES (make test-v2 passes
# them as --packages too, so a package added there reaches the guest) and what the guest
# init uses.  Keep the two lists in step so `make test-v2` and a direct run.py share one image.
BASE_PACKAGES = (
    "python3", "python3-venv", "fuse3", "libfuse3-3", "busybox-static", "util-linux",
    "mount", "procps", "kmod", "e2fsprogs", "docker.io", "containerd", "runc", "tini",
    "iptables", "prometheus", "systemd",
)

# Loaded by the initramfs, in dependency order (the rest load on demand in the guest).
# crc32c_generic: ext4's metadata checksums ask the crypto API for crc32c at mount time,
# and the initramfs has no modprobe to answer the kernel's request for it.
INITRAMFS_MODULES = (
    "virtio_mmio", "virtio_pci", "virtio_blk", "virtio_console", "crc32c_generic",
    "ext4", "9pnet_virtio", "9p", "fuse",
)

ROOTFS_HEADROOM_BYTES = 3 << 30  # free space in the guest's root for Docker images and tests


class BuildError(Exception):
    """The VM could not be built; the message says which step failed."""


@dataclass(frozen=True)
class Artefacts:
    vmlinux: Path
    initramfs: Path
    rootfs: Path
    pylib: Path
    kernel_release: str
    image_key: str
    pylib_key: str


def log(message: str) -> None:
    print(f"[vm-build] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], quiet: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run a build step; a quiet one shows its output only when it fails."""
    if quiet:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        return subprocess.run(argv, check=True, **kwargs)
    except FileNotFoundError as error:
        raise BuildError(f"{argv[0]} is not installed ({error})") from None
    except subprocess.CalledProcessError as error:
        output = error.stdout if isinstance(error.stdout, bytes) else b""
        if output:
            sys.stderr.write("\n".join(output.decode(errors="replace").splitlines()[-40:]) + "\n")
        raise BuildError(f"{' '.join(argv[:4])}... exited with {error.returncode}") from None


def cache_dir() -> Path:
    return Path(os.environ.get("CGROUPFS_VM_CACHE") or DEFAULT_CACHE)


def digest(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:16]


def guest_packages(extra: str) -> list[str]:
    return sorted(set(BASE_PACKAGES) | set(extra.split()))


def image_key(packages: list[str]) -> str:
    return digest([Path(__file__).read_bytes(), INITRAMFS_INIT.read_bytes(),
                   " ".join(packages).encode(), SUITE.encode(), KERNEL_METAPACKAGE.encode()])


def requirements() -> list[str]:
    """The project's runtime and test dependencies, as pyproject.toml declares them."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return sorted(set(project.get("dependencies", [])) | set(extras.get("test", [])))


def pylib_key(reqs: list[str]) -> str:
    return digest([Path(__file__).read_bytes(), "\n".join(reqs).encode(), b"cp311"])


# --- locking and cleanup ---------------------------------------------------------------

@contextlib.contextmanager
def cache_lock(cache: Path):
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point == prefix.rstrip("/"):
                found.append(point)
    return found


def unmount_under(path: Path) -> None:
    for point in sorted(mounts_under(path), key=len, reverse=True):
        if subprocess.run(["umount", point], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["umount", "-l", point])


def remove_tree(path: Path) -> None:
    """rm -rf, but never through a mount (a chroot's /proc, or worse)."""
    if not path.exists():
        return
    unmount_under(path)
    left = mounts_under(path)
    if left:
        raise BuildError(f"refusing to delete {path}: still mounted: {left}")
    shutil.rmtree(path)


# --- kernel ----------------------------------------------------------------------------

def resolve_kernel_package() -> str:
    """linux-image-amd64 -> linux-image-6.1.0-NN-amd64, from the host's apt lists."""
    for attempt in range(2):
        result = subprocess.run(["apt-cache", "depends", KERNEL_METAPACKAGE],
                                capture_output=True, text=True)
        for line in result.stdout.splitlines():
            name = line.strip().removeprefix("Depends: ")
            if name.startswith("linux-image-") and name != KERNEL_METAPACKAGE:
                return name
        if attempt == 0:
            log("apt lists do not know the kernel package: apt-get update")
            run(["apt-get", "update", "-qq"], quiet=True)
    raise BuildError(f"apt-cache cannot resolve {KERNEL_METAPACKAGE}")


def extract_vmlinux(vmlinuz: Path, vmlinux: Path) -> None:
    """Uncompress the kernel inside a bzImage (what scripts/extract-vmlinux does)."""
    data = vmlinuz.read_bytes()
    decompressors = (
        (b"\xfd7zXZ\x00", lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ)),
        (b"\x1f\x8b\x08", lambda: __import__("zlib").decompressobj(31)),
    )
    for magic, make in decompressors:
        offset = data.find(magic)
        while offset >= 0:
            try:
                elf = make().decompress(data[offset:])
            except Exception:  # a false match of the magic bytes: try the next one
                elf = b""
            if elf.startswith(b"\x7fELF"):
                vmlinux.write_bytes(elf)
                return
            offset = data.find(magic, offset + 1)
    raise BuildError(f"no xz or gzip compressed ELF kernel found in {vmlinuz}")


def fetch_kernel(work: Path, debs: Path) -> tuple[Path, Path, str]:
    """Download and unpack the kernel package (never installed). Returns vmlinux, modules, release."""
    package = resolve_kernel_package()
    debs.mkdir(parents=True, exist_ok=True)
    cached = sorted(debs.glob(f"{package}_*_amd64.deb"))
    if not cached:
        log(f"downloading {package}")
        try:
            run(["apt-get", "download", "-qq", package], cwd=debs, quiet=True)
        except BuildError:
            # Stale apt lists name a kernel the mirror no longer has: refresh, resolve again.
            log("apt-get download failed: apt-get update, then once more")
            run(["apt-get", "update", "-qq"], quiet=True)
            package = resolve_kernel_package()
            run(["apt-get", "download", "-qq", package], cwd=debs, quiet=True)
        cached = sorted(debs.glob(f"{package}_*_amd64.deb"))
    if not cached:
        raise BuildError(f"apt-get download {package} produced no .deb")
    unpacked = work / "kernel"
    run(["dpkg-deb", "-x", str(cached[-1]), str(unpacked)], quiet=True)
    vmlinuz = sorted((unpacked / "boot").glob("vmlinuz-*"))[-1]
    release = vmlinuz.name.removeprefix("vmlinuz-")
    vmlinux = work / "vmlinux"
    extract_vmlinux(vmlinuz, vmlinux)
    modules = unpacked / "lib" / "modules" / release
    # The package ships no modules.dep (its postinst runs depmod): make one.
    run(["depmod", "-b", str(unpacked), release], quiet=True)
    return vmlinux, modules, release


def module_load_order(modules: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The .ko files for `wanted` and everything they depend on, dependencies first."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[Path(path).name.removesuffix(".ko").replace("-", "_")] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dependency in reversed(deps[path]):  # modules.dep lists the deepest last
            visit(dependency)
        order.append(path)

    for name in wanted:
        module = by_name.get(name.replace("-", "_"))
        if module is None:
            continue  # built into this kernel
        visit(module)
    return [modules / path for path in order]


# --- initramfs ---------------------------------------------------------------------------

class Newc:
    """A cpio "newc" archive writer: enough for a few files, symlinks and /dev/console."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.inode = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.inode, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % field for field in fields)
        self.inode += 1
        self.chunks.append(header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4))
        self.chunks.append(data + b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, executable: bool = False) -> None:
        self._entry(name, 0o100755 if executable else 0o100644, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self.chunks)


def build_initramfs(out: Path, busybox: Path, module_files: list[Path]) -> None:
    archive = Newc()
    for directory in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
        archive.directory(directory)
    archive.char_device("dev/console", 5, 1)
    archive.file("bin/busybox", busybox.read_bytes(), executable=True)
    archive.symlink("bin/sh", "busybox")
    archive.file("init", INITRAMFS_INIT.read_bytes(), executable=True)
    names = []
    for module in module_files:
        archive.file(f"lib/modules/{module.name}", module.read_bytes())
        names.append(module.name)
    archive.file("lib/modules/load-order", ("\n".join(names) + "\n").encode())
    out.write_bytes(gzip.compress(archive.finish(), compresslevel=6, mtime=0))


# --- root file system --------------------------------------------------------------------

@contextlib.contextmanager
def proc_mounted(root: Path):
    target = root / "proc"
    run(["mount", "-t", "proc", "proc", str(target)])
    try:
        yield
    finally:
        unmount_under(root)


def build_rootfs(root: Path, debs: Path, packages: list[str]) -> None:
    debs.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap --variant=minbase {SUITE} (mirror {MIRROR})")
    try:
        run(["debootstrap", "--variant=minbase", f"--cache-dir={debs}", SUITE, str(root), MIRROR],
            quiet=True)
    finally:
        unmount_under(root)  # debootstrap leaves /proc and /sys mounted when it fails
    # No service may start inside the chroot while packages are installed (docker.io's
    # postinst would start dockerd here and leave it running).
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    archives = root / "var/cache/apt/archives"
    for deb in debs.glob("*.deb"):
        if not (archives / deb.name).exists():
            shutil.copy2(deb, archives / deb.name)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
           "LC_ALL": "C", "HOME": "/root"}
    log(f"installing {len(packages)} guest packages: {' '.join(packages)}")
    with proc_mounted(root):
        run(["chroot", str(root), "apt-get", "install", "-y", "-qq", "--no-install-recommends",
             *packages], env=env, quiet=True)
    for deb in archives.glob("*.deb"):
        if not (debs / deb.name).exists():
            shutil.copy2(deb, debs / deb.name)
    run(["chroot", str(root), "apt-get", "clean"], env=env, quiet=True)
    policy.unlink()
    for leftover in ("var/lib/apt/lists",):
        for item in (root / leftover).glob("*_*"):
            item.unlink()
    (root / "etc/hostname").write_text("cgroupfs-v2\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 cgroupfs-v2\n::1 localhost\n")
    for mount_point in ("mnt/src", "mnt/pylib", "mnt/ctl", "mnt/src-share"):
        (root / mount_point).mkdir(parents=True, exist_ok=True)


def make_ext4(root: Path, image: Path) -> None:
    used = int(subprocess.run(["du", "-sb", str(root)], capture_output=True, text=True,
                              check=True).stdout.split()[0])
    size_mib = (used * 5 // 4 + ROOTFS_HEADROOM_BYTES) >> 20
    log(f"mke2fs -d: {used >> 20} MiB of files into a {size_mib} MiB ext4 image")
    run(["mke2fs", "-q", "-t", "ext4", "-L", "cgroupfs-v2", "-E", "root_owner=0:0",
         "-d", str(root), "-F", str(image), f"{size_mib}M"], quiet=True)


# --- the two cached products ---------------------------------------------------------------

def build_image(cache: Path, key: str, packages: list[str]) -> Path:
    final = cache / f"image-{key}"
    work = Path(tempfile.mkdtemp(prefix=f"build-image-{key}.", dir=cache))
    try:
        started = time.monotonic()
        vmlinux, modules, release = fetch_kernel(work, cache / "debs")
        root = work / "root"
        build_rootfs(root, cache / "debs", packages)
        log("copying the kernel's modules into the root image")
        shutil.copytree(modules, root / "lib/modules" / release, symlinks=True)
        for link in ("build", "source"):
            (root / "lib/modules" / release / link).unlink(missing_ok=True)
        out = work / "out"
        out.mkdir()
        shutil.move(vmlinux, out / "vmlinux")
        build_initramfs(out / "initramfs.cpio.gz", root / "bin/busybox",
                        module_load_order(modules, INITRAMFS_MODULES))
        make_ext4(root, out / "rootfs.ext4")
        manifest = {"kernel_release": release, "packages": packages, "suite": SUITE,
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "build_seconds": round(time.monotonic() - started, 1)}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.rename(out, final)
    finally:
        remove_tree(work)
    return final


def build_pylib(cache: Path, key: str, reqs: list[str]) -> Path:
    """pip install --target, packed into a small read-only ext4 disk: the guest imports from a
    block device ~2x faster than over 9p (thousands of lookups), with pip's .pyc files."""
    final = cache / f"pylib-{key}"
    work = Path(tempfile.mkdtemp(prefix=f"build-pylib-{key}.", dir=cache))
    try:
        site = work / "site"
        argv = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                "--root-user-action=ignore", "--no-warn-script-location", "--target", str(site)]
        if sys.version_info[:2] != (3, 11):
            # The guest runs Debian bookworm's CPython 3.11: ask pip for its wheels.
            argv += ["--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11",
                     "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64"]
        log(f"pip install --target: {' '.join(reqs)}")
        run(argv + reqs, quiet=True)
        out = work / "out"
        out.mkdir()
        used = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
        run(["mke2fs", "-q", "-t", "ext4", "-L", "cgroupfs-pylib", "-E", "root_owner=0:0",
             "-d", str(site), "-F", str(out / "pylib.ext4"), f"{(used * 2 >> 20) + 32}M"], quiet=True)
        (out / "manifest.json").write_text(json.dumps({"requirements": reqs}, indent=2) + "\n")
        os.rename(out, final)
    finally:
        remove_tree(work)
    return final


def forget_others(cache: Path, prefix: str, keep: Path, spare: int = 1) -> None:
    """Free the space of old builds, but keep the `spare` most recently used others: a
    direct run.py and `make test-v2` may differ in guest packages, and must not evict each
    other's image on every call."""
    def last_used(path: Path) -> float:
        try:
            return (path / "manifest.json").stat().st_mtime
        except OSError:
            return 0.0

    others = sorted((p for p in cache.glob(f"{prefix}-*") if p != keep and p.is_dir()),
                    key=last_used, reverse=True)
    for old in others[spare:]:
        log(f"removing stale {old.name}")
        remove_tree(old)


def ensure(packages_extra: str = "", force: bool = False, cache: Path | None = None) -> Artefacts:
    """Build what is missing (or everything with force) and return the paths to boot."""
    cache = cache or cache_dir()
    packages = guest_packages(packages_extra)
    ikey, reqs = image_key(packages), requirements()
    pkey = pylib_key(reqs)
    with cache_lock(cache):
        for stale in cache.glob("build-*"):  # a build that was killed outright
            remove_tree(stale)
        image = cache / f"image-{ikey}"
        pylib = cache / f"pylib-{pkey}"
        if force:
            remove_tree(image)
            remove_tree(pylib)
        if not (image / "manifest.json").exists():
            remove_tree(image)
            build_image(cache, ikey, packages)
            forget_others(cache, "image", image)
        if not (pylib / "manifest.json").exists():
            remove_tree(pylib)
            build_pylib(cache, pkey, reqs)
            forget_others(cache, "pylib", pylib)
        for used in (image, pylib):
            os.utime(used / "manifest.json")  # most recently used, for forget_others
    manifest = json.loads((image / "manifest.json").read_text())
    return Artefacts(vmlinux=image / "vmlinux", initramfs=image / "initramfs.cpio.gz",
                     rootfs=image / "rootfs.ext4", pylib=pylib / "pylib.ext4",
                     kernel_release=manifest["kernel_release"], image_key=ikey, pylib_key=pkey)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help=f"default $CGROUPFS_VM_CACHE or {DEFAULT_CACHE}")
    parser.add_argument("--packages", default="", help="extra Debian packages for the guest")
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("tests/vm/build.py must run as root (debootstrap, chroot)", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        artefacts = ensure(args.packages, args.force, args.cache)
    except BuildError as error:
        print(f"VM infrastructure failure: cannot build the VM: {error}", file=sys.stderr)
        return 100
    log(f"ready in {time.monotonic() - started:.1f}s: kernel {artefacts.kernel_release}, "
        f"image-{artefacts.image_key}, pylib-{artefacts.pylib_key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

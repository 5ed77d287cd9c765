"""The guest root filesystem: Debian trixie minbase with the test tools and a kernel.

Built once with mmdebstrap, cached under the cache directory in a folder named by a
hash of its manifest (suite, packages, kernel, Python pins) and rebuilt only when the
manifest changes. The Python packages get the exact versions the host runs.
"""

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from mptcp_nvme import proc
from mptcp_nvme.host.inputs import tools
from mptcp_nvme.channel import BLKTESTS_TOOLS, GUEST_RESULTS_DIR, GUEST_SOURCE_DIR
from mptcp_nvme.errors import SetupError, UsageError

SUITE = "trixie"
KERNEL_SUITE = "trixie-backports"
# tiny-initramfs satisfies the kernel's initramfs dependency (vng builds its own initramfs)
# without dracut, which pulls in udev: with udevd in the root, virtme-ng-init coldplugs
# every emulated device before starting the guest command, ~10 s of each boot under TCG.
# Nothing in the suite needs udev: devtmpfs makes the device nodes, modprobe loads modules.
# Likewise systemd-standalone-sysusers keeps systemd out (nvme-cli's uuid-runtime wants
# either), and with it the systemd-tmpfiles run that costs another ~2 s per boot.
KERNEL_PACKAGES = ("linux-image-amd64", "tiny-initramfs")
PACKAGES = (
    "nvme-cli", "fio", "ktls-utils", "keyutils", "iperf3", "iproute2", "kmod", "procps",
    "util-linux", "python3", "ca-certificates", "systemd-standalone-sysusers",
    # filesystems on the multipath namespace (mkfs/fsck cases)
    "e2fsprogs", "xfsprogs",
    # what the kernel tree's own net kselftests call (mptcp-nvme kselftest)
    "ethtool", "iptables", "nftables", "socat",
    # a user's blktests (mptcp-nvme blktests): its check's gawk and column, and udevadm,
    # which its nvme tests call (udevadm settle), moved off PATH at build
    # (BLKTESTS_TOOLS) with systemd-udevd gone, so that no boot coldplugs (see above)
    "gawk", "bsdextrautils", "udev",
)
# Installed from PyPI at the host's versions, so host and guest pytest speak alike.
GUEST_PYTHON_PACKAGES = ("pytest", "pyroute2", "tap.py", "psutil")
MANIFEST_NAME = "etc/mptcp-nvme-rootfs.json"
SETUP_HINT = "run ./ci/setup or apt-get install mmdebstrap e2fsprogs"
FORMAT = 4
# The guest's only "udevd", found by virtme-ng-init on PATH. virtme-ng-init runs udevd and
# udevadm (absent here) to coldplug devices, then looks for the virtio-serial ports that
# carry the guest command's I/O under the names udev's rules give them; this makes just
# those links, waiting for the ports a guest command needs.
GUEST_UDEVD_PATH = "usr/local/bin/udevd"
HOST_UDEVD = ("/usr/lib/systemd/systemd-udevd", "/lib/systemd/systemd-udevd")
GUEST_UDEVD = r"""#!/bin/sh
# mptcp-nvme: /dev/virtio-ports/<name> links in place of udev's coldplug.
mkdir -p /dev/virtio-ports
wanted=
grep -q 'virtme[.]exec=' /proc/cmdline && wanted="stdin stdout stderr dev_stdout dev_stderr"
deadline=$(($(date +%s) + 20))
while :; do
    for port in /sys/class/virtio-ports/*; do
        name=$(cat "$port/name" 2>/dev/null)
        [ -n "$name" ] && ln -sfn "/dev/${port##*/}" "/dev/virtio-ports/$name"
    done
    missing=
    for name in $wanted; do
        [ -e "/dev/virtio-ports/virtme.$name" ] || missing="$missing virtme.$name"
    done
    [ -z "$missing" ] && exit 0
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "udevd (mptcp-nvme): no virtio-serial port named$missing after 20s" >&2
        exit 1
    fi
    sleep 0.05
done
"""


def cache_dir():
    """Where built artefacts live: $MPTCP_NVME_CACHE, else ~/.cache/mptcp-nvme."""
    base = os.environ.get("MPTCP_NVME_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mptcp-nvme"
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def manifest():
    """Everything that defines the root filesystem's contents."""
    return {
        "format": FORMAT,
        "suite": SUITE,
        "packages": sorted(PACKAGES),
        "kernel": [f"{KERNEL_SUITE}/{name}" for name in KERNEL_PACKAGES],
        "python": {name: importlib.metadata.version(name) for name in GUEST_PYTHON_PACKAGES},
        "udevd": hashlib.sha256(GUEST_UDEVD.encode()).hexdigest()[:12],
    }


def manifest_key(data):
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def default_path():
    return cache_dir() / f"rootfs-{SUITE}-{manifest_key(manifest())}"


def is_complete(root):
    return (Path(root) / MANIFEST_NAME).is_file()


def debian_mirror(sources_dirs=("/etc/apt/sources.list.d",), sources_list="/etc/apt/sources.list"):
    """The host's Debian mirror (its apt sources), or $MPTCP_NVME_MIRROR."""
    if os.environ.get("MPTCP_NVME_MIRROR"):
        return os.environ["MPTCP_NVME_MIRROR"]
    texts = []
    for folder in sources_dirs:
        texts += [p.read_text() for p in sorted(Path(folder).glob("*.sources"))]
        texts += [p.read_text() for p in sorted(Path(folder).glob("*.list"))]
    with contextlib.suppress(OSError):
        texts.append(Path(sources_list).read_text())
    for text in texts:
        for uri in re.findall(r"(?:URIs:|^deb)\s+(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    raise SetupError("no Debian mirror found in the host's apt sources; set MPTCP_NVME_MIRROR")


def _run_with_progress(argv, label):
    """Run a build step, echoing its output to stderr prefixed with ``label``."""
    tail = []

    def echo(line):
        if line.startswith("(Reading database"):
            return                           # dpkg's percentage ticks, 20 lines a package
        print(f"{label}: {line.rstrip()}", file=sys.stderr, flush=True)
        tail.append(line.rstrip())
        del tail[:-20]
    if code := proc.stream(argv, echo):
        raise SetupError(f"{label} failed (exit {code}): {' | '.join(tail[-3:])}")


def guest_python(root):
    """The guest's python3.X name, read from its /usr/bin/python3 link."""
    return os.readlink(Path(root) / "usr/bin/python3").rsplit("/", 1)[-1]


def build(root):
    """Build the root filesystem at ``root`` (replacing a partial one)."""
    tools.require(["mmdebstrap"], SETUP_HINT)
    root = Path(root)
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    mirror = debian_mirror()
    data = manifest()
    mkdirs = f'mkdir -p "$1"{GUEST_SOURCE_DIR} "$1"{GUEST_RESULTS_DIR}'
    _run_with_progress([
        "mmdebstrap", "--variant=minbase", "--components=main",
        f"--include={','.join(PACKAGES)}",
        f'--customize-hook=chroot "$1" apt-get install -y -q -t {KERNEL_SUITE} {" ".join(KERNEL_PACKAGES)}',
        f"--customize-hook={mkdirs}",
        SUITE, str(partial),
        f"deb {mirror} {SUITE} main", f"deb {mirror} {KERNEL_SUITE} main",
    ], "rootfs")
    python = guest_python(partial)
    version = python.removeprefix("python")
    pins = [f"{name}=={pin}" for name, pin in data["python"].items()]
    _run_with_progress([
        sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
        "--target", str(partial / f"usr/local/lib/{python}/dist-packages"),
        "--python-version", version, "--implementation", "cp",
        "--platform", "manylinux2014_x86_64", "--only-binary=:all:", *pins,
    ], "rootfs pip")
    # Byte-compile in the guest's Python: the guest's root is a read-only image, so
    # without .pyc files every boot compiles pytest and pyroute2 again (~20 s under TCG).
    _run_with_progress(["chroot", str(partial), python, "-m", "compileall", "-q", "-j0",
                        f"/usr/local/lib/{python}/dist-packages"], "rootfs compileall")
    # The build host's resolver means nothing in the guest's namespaces, where a lookup
    # would wait for a server it cannot reach (tlshd looks up every peer).
    (partial / "etc/resolv.conf").unlink(missing_ok=True)
    (partial / "etc/resolv.conf").write_text("")
    udevd = partial / GUEST_UDEVD_PATH
    udevd.write_text(GUEST_UDEVD)
    udevd.chmod(0o755)
    _keep_udevadm_off_path(partial)
    (partial / MANIFEST_NAME).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return root


def _keep_udevadm_off_path(root):
    """udev's udevadm moved to BLKTESTS_TOOLS (blktests' PATH in the guest) and its
    systemd-udevd removed: virtme-ng-init, finding neither, runs our udevd and no
    coldplug, while ``udevadm settle`` in a blktests test finds no daemon and returns."""
    tools = root / BLKTESTS_TOOLS.lstrip("/")
    tools.mkdir(parents=True, exist_ok=True)
    shutil.move(root / "usr/bin/udevadm", tools / "udevadm")
    for daemon in ("usr/lib/systemd/systemd-udevd", "lib/systemd/systemd-udevd"):
        path = root / daemon
        if path.is_symlink() or path.exists():
            path.unlink()


@contextlib.contextmanager
def cache_lock(name):
    """An exclusive lock on a file in the cache directory: two runs (or xdist workers)
    never build the same cached artefact at once; the second waits, then finds it."""
    with open(cache_dir() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def disk_image(root, modules=None):
    """A read-only ext4 image of the directory ``root``, for the guest's virtio-blk root;
    with ``modules`` ({release: lib/modules/<release> directory of a bzImage}), a separate
    image per kernel that also holds them. ``root`` itself is never written.

    Rebuilt (a few seconds) when any entry of ``root`` (or of the modules) is newer than
    the image. Under TCG a 9p export of the directory doubles the guest's Python start-up:
    every lookup and read is a round trip to qemu.
    """
    tools.require(["mkfs.ext4"], SETUP_HINT)
    root = Path(root).resolve()
    modules = {release: Path(path).resolve() for release, path in (modules or {}).items()}
    key = hashlib.sha256(json.dumps([str(root), {r: str(p) for r, p in modules.items()}],
                                    sort_keys=True).encode()).hexdigest()[:8]
    image = cache_dir() / f"{root.name}-{key}.ext4"
    stamp = image.with_name(image.name + ".json")
    with cache_lock(image.name):
        states = [_tree_state(root), *(_tree_state(path) for path in modules.values())]
        newest = max(state[0] for state in states)
        with contextlib.suppress(OSError, ValueError, KeyError):
            if image.is_file() and json.loads(stamp.read_text())["newest"] >= newest:
                return image
        print(f"rootfs: writing {image} from {root}"
              + "".join(f" + modules {release}" for release in modules), file=sys.stderr, flush=True)
        blocks, entries = sum(s[1] for s in states), sum(s[2] for s in states)
        partial = image.with_name(f"{image.name}.{os.getpid()}.partial")
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="image-") as staging:
            source = root
            if modules:            # hard links of the root plus the modules: root untouched
                source = Path(staging) / "root"
                proc.cmd(["cp", "-al", root, source], timeout=600)
                for release, path in modules.items():
                    target = source / "lib/modules" / release
                    shutil.rmtree(target, ignore_errors=True)
                    shutil.copytree(path, target, symlinks=True)
            try:
                with open(partial, "wb") as file:
                    file.truncate(blocks * 512 * 5 // 4 + (256 << 20))
                _run_with_progress(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-L",
                                    "mptcp-nvme", "-N", str(entries * 3 // 2 + 4096), "-d",
                                    str(source), str(partial)], "rootfs image")
                os.replace(partial, image)
            finally:
                partial.unlink(missing_ok=True)
        stamp.write_text(json.dumps({"root": str(root), "newest": newest}) + "\n")
    return image


def _tree_state(root):
    """(newest mtime in ns, 512-byte blocks used, number of entries) of a directory tree."""
    newest = os.lstat(root).st_mtime_ns
    blocks = entries = 0
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            info = os.lstat(os.path.join(folder, name))
            newest = max(newest, info.st_mtime_ns)
            blocks += info.st_blocks
            entries += 1
    return newest, blocks, entries


def ensure(spec=None):
    """The root filesystem to boot: ``host`` for /, a given directory, or the cached build."""
    if spec == "host":
        if not any(Path(p).exists() for p in HOST_UDEVD) and not shutil.which("udevd"):
            raise SetupError("--rootfs host needs systemd-udevd on this host: virtme-ng-init "
                             "finds the guest command's I/O ports through udev's names")
        return Path("/")
    if spec:
        root = Path(spec)
        if not is_complete(root):
            raise UsageError(f"--rootfs {spec}: not a root filesystem built by mptcp-nvme "
                             f"(no {MANIFEST_NAME}); run 'mptcp-nvme setup'")
        return root
    root = default_path()
    with cache_lock(root.name):
        if not is_complete(root):
            print(f"rootfs: building {root} (Debian {SUITE}, once)", file=sys.stderr, flush=True)
            build(root)
    return root

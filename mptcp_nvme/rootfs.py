"""The guest root filesystem: Debian trixie minbase with the test tools and a kernel.

Built once with mmdebstrap, cached under the cache directory in a folder named by a
hash of its manifest (suite, packages, kernel, Python pins) and rebuilt only when the
manifest changes. The Python packages get the exact versions the host runs.
"""

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import SetupError, UsageError

SUITE = "trixie"
KERNEL_SUITE = "trixie-backports"
KERNEL_PACKAGE = "linux-image-amd64"
PACKAGES = (
    "nvme-cli", "fio", "ktls-utils", "keyutils", "iperf3", "iproute2", "kmod", "procps",
    "util-linux", "udev", "python3", "ca-certificates",
)
# Installed from PyPI at the host's versions, so host and guest pytest speak alike.
GUEST_PYTHON_PACKAGES = ("pytest", "pyroute2", "tap.py", "psutil")
# Mount points the VM shares into the guest (vng needs them to exist in the root).
GUEST_SOURCE_DIR = "/mnt/src"
GUEST_RESULTS_DIR = "/mnt/results"
MANIFEST_NAME = "etc/mptcp-nvme-rootfs.json"
FORMAT = 2


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
        "kernel": f"{KERNEL_SUITE}/{KERNEL_PACKAGE}",
        "python": {name: importlib.metadata.version(name) for name in GUEST_PYTHON_PACKAGES},
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


def _require_tools(*tools):
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        raise SetupError(f"missing host tool(s): {', '.join(missing)} "
                         "(run ./ci/setup or apt-get install mmdebstrap)")


def _run_with_progress(argv, label):
    """Run a build step, echoing its output to stderr prefixed with ``label``."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace") as proc:
        tail = []
        for line in proc.stdout:
            print(f"{label}: {line.rstrip()}", file=sys.stderr, flush=True)
            tail = (tail + [line.rstrip()])[-20:]
    if proc.returncode:
        raise SetupError(f"{label} failed (exit {proc.returncode}): {' | '.join(tail[-3:])}")


def guest_python(root):
    """The guest's python3.X name, read from its /usr/bin/python3 link."""
    return os.readlink(Path(root) / "usr/bin/python3").rsplit("/", 1)[-1]


def build(root):
    """Build the root filesystem at ``root`` (replacing a partial one)."""
    _require_tools("mmdebstrap")
    root = Path(root)
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    mirror = debian_mirror()
    data = manifest()
    mkdirs = f'mkdir -p "$1"{GUEST_SOURCE_DIR} "$1"{GUEST_RESULTS_DIR}'
    _run_with_progress([
        "mmdebstrap", "--variant=minbase", "--components=main",
        f"--include={','.join(PACKAGES)}",
        f'--customize-hook=chroot "$1" apt-get install -y -q -t {KERNEL_SUITE} {KERNEL_PACKAGE}',
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
    # Byte-compile in the guest's Python: the guest sees its root read-only (over 9p), so
    # without .pyc files every boot compiles pytest and pyroute2 again (~20 s under TCG).
    _run_with_progress(["chroot", str(partial), python, "-m", "compileall", "-q", "-j0",
                        f"/usr/local/lib/{python}/dist-packages"], "rootfs compileall")
    # The build host's resolver means nothing in the guest's namespaces, where a lookup
    # would wait for a server it cannot reach (tlshd looks up every peer).
    (partial / "etc/resolv.conf").unlink(missing_ok=True)
    (partial / "etc/resolv.conf").write_text("")
    (partial / MANIFEST_NAME).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return root


def ensure(spec=None):
    """The root filesystem to boot: ``host`` for /, a given directory, or the cached build."""
    if spec == "host":
        return Path("/")
    if spec:
        root = Path(spec)
        if not is_complete(root):
            raise UsageError(f"--rootfs {spec}: not a root filesystem built by mptcp-nvme "
                             f"(no {MANIFEST_NAME}); run 'mptcp-nvme setup'")
        return root
    root = default_path()
    if not is_complete(root):
        print(f"rootfs: building {root} (Debian {SUITE}, once)", file=sys.stderr, flush=True)
        build(root)
    return root

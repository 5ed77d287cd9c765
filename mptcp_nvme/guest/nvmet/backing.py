"""What nvmet exports as a namespace: a backing store of one of three kinds.

- ``loop``: a sparse file on a loop device, mptcp_nvme.sh's (nvmet's bdev backend);
- ``file``: the sparse file itself (nvmet's file backend, vfs I/O on the file);
- ``null_blk``: a memory-backed null_blk disk made through its configfs (bdev backend on
  a driver with no file system or loop in between).

Files live on a private tmpfs sized for them: a guest's /tmp overlay is smaller than the
script's 512 MiB once fio has written it all. Every store is a context manager that
undoes what it made, in reverse order, even when its setup fails half-way.
"""

import os
import re
import tempfile
from pathlib import Path

from mptcp_nvme import proc
from mptcp_nvme.errors import SetupError, UsageError
from mptcp_nvme.options import BACKINGS as KINDS
from mptcp_nvme.guest.checks import requirements
from mptcp_nvme.guest.nvmet.target import _Resource
from mptcp_nvme.poll import wait_for

SIZE = 512 * 2**20
# What each kind needs of the kernel and rootfs (checks.gates.require).
REQUIREMENTS = {
    "loop": ("kconfig:BLK_DEV_LOOP", "tool:losetup"),
    "file": (),
    "null_blk": ("module:null_blk",),
}
NULLB_CONFIGFS = Path(requirements.CONFIGFS) / "nullb"
_NULLB_NAME = re.compile(r"[\w.-]{1,31}")


def check_kind(kind):
    if kind not in KINDS:
        raise UsageError(f"backing must be one of {', '.join(KINDS)}, not {kind!r}")
    return kind


def _run(argv):
    return proc.cmd(argv).stdout


class _Store(_Resource):
    """A store: ``_setup(stack)`` registers its own undo steps (nvmet's resource
    plumbing) and sets ``path``, what nvmet's ``device_path`` takes."""

    kind = None
    path = None

    def __str__(self):
        return f"{self.kind} {self.path}"


def _sparse_file(stack, size, directory):
    """A sparse file of ``size`` bytes in ``directory`` (None: a tmpfs of its own)."""
    if directory is None:
        directory = tempfile.mkdtemp(prefix="mptcp_nvme.")
        stack.callback(os.rmdir, directory)
        _run(["mount", "-t", "tmpfs", "-o", f"size={size + 2**20}", "mptcp_nvme", directory])
        stack.callback(_run, ["umount", directory])
    fd, path = tempfile.mkstemp(prefix="mptcp_nvme.", suffix=".img", dir=directory)
    stack.callback(os.unlink, path)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return path


class FileStore(_Store):
    """A sparse file of ``size`` bytes; deleted on exit."""

    kind = "file"

    def __init__(self, size=SIZE, directory=None):
        self.size = size
        self.directory = directory

    def _setup(self, stack):
        self.path = _sparse_file(stack, self.size, self.directory)


class LoopDevice(FileStore):
    """A sparse file of ``size`` bytes on a loop device; detached and deleted on exit."""

    kind = "loop"

    def _setup(self, stack):
        if not requirements.load_module("loop"):
            raise SetupError("kernel module loop not available (CONFIG_BLK_DEV_LOOP)")
        backing = _sparse_file(stack, self.size, self.directory)
        self.path = _run(["losetup", "--find", "--show", backing]).strip()
        stack.callback(_run, ["losetup", "--detach", self.path])


class NullBlk(_Store):
    """A memory-backed null_blk disk of ``size`` bytes (whole MiB), made through
    null_blk's configfs; the disk takes the configfs item's name. Without memory_backed
    null_blk reads zeros whatever was written, which no verified I/O would survive."""

    kind = "null_blk"

    def __init__(self, size=SIZE, name=None, configfs=NULLB_CONFIGFS):
        if size % 2**20:
            raise UsageError(f"null_blk sizes are whole MiB, not {size} bytes")
        name = name or f"mptcp_nvme_{os.getpid()}_{os.urandom(2).hex()}"
        if not _NULLB_NAME.fullmatch(name):
            raise UsageError(f"bad null_blk name {name!r}")
        self.size = size
        self.name = name
        self.item = Path(configfs) / name

    def _setup(self, stack):
        if not requirements.load_module("null_blk"):
            raise SetupError("kernel module null_blk not available (CONFIG_BLK_DEV_NULL_BLK)")
        if not self.item.parent.is_dir():
            raise SetupError(f"{self.item.parent} missing: null_blk without configfs support")
        self.item.mkdir()
        stack.callback(self.item.rmdir)
        for attribute, value in (("size", self.size // 2**20), ("memory_backed", 1),
                                 ("blocksize", 512)):
            (self.item / attribute).write_text(f"{value}\n")
        (self.item / "power").write_text("1\n")
        stack.callback((self.item / "power").write_text, "0\n")
        self.path = f"/dev/{self.name}"
        wait_for(lambda: os.path.exists(self.path), f"{self.path} to appear", timeout=10)


STORES = {"file": FileStore, "loop": LoopDevice, "null_blk": NullBlk}


def store(kind, size=SIZE):
    """A new, not yet entered, backing store of ``kind``."""
    return STORES[check_kind(kind)](size=size)

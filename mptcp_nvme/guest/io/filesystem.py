"""File systems on a namespace: mkfs, fsck, a mount owned by a context manager, and a
tree of files whose checksums say whether it came back intact."""

import contextlib
import hashlib
import os
import random
import tempfile
from pathlib import Path

from mptcp_nvme import proc
from mptcp_nvme.errors import SetupError

# fstype: (mkfs argv, read-only check argv, what it needs)
FILESYSTEMS = {
    "ext4": (("mkfs.ext4", "-q", "-F"), ("e2fsck", "-f", "-n"),
             ("tool:mkfs.ext4", "tool:e2fsck", "tool:blkid")),
    "xfs": (("mkfs.xfs", "-q", "-f"), ("xfs_repair", "-n"),
            ("tool:mkfs.xfs", "tool:xfs_repair", "tool:blkid", "module:xfs")),
}
TIMEOUT = 300.0


def mkfs(fstype, device):
    proc.cmd([*FILESYSTEMS[fstype][0], device], timeout=TIMEOUT)


def fsck(fstype, device):
    """The file system's read-only check; its report, or CmdExitFailure when it found
    anything to repair."""
    return proc.cmd([*FILESYSTEMS[fstype][1], device], timeout=TIMEOUT).stdout


def fstype_of(device):
    """What blkid reads from the device's superblock ('' for none)."""
    done = proc.cmd(["blkid", "-p", "-o", "value", "-s", "TYPE", device], fail=False)
    return done.stdout.strip()


@contextlib.contextmanager
def mounted(device, fstype, options=()):
    """``device`` mounted on a fresh directory for the block; unmounted (and the
    directory removed) on exit, also when the block fails."""
    where = tempfile.mkdtemp(prefix="mptcp_nvme.mnt.")
    try:
        proc.cmd(["mount", "-t", fstype, *(("-o", ",".join(options)) if options else ()),
                  device, where])
        try:
            yield Path(where)
        finally:
            proc.cmd(["umount", where], timeout=TIMEOUT)
    finally:
        os.rmdir(where)


def write_tree(root, files=24, dirs=3, max_size=2**20, seed=None):
    """``files`` files of random content and size (up to ``max_size``) in ``dirs``
    nested directories under ``root``, synced; returns checksums(root)."""
    rng = random.Random(seed)
    folders = [Path(root)]
    for index in range(dirs):
        folders.append(folders[-1] / f"dir{index}")
        folders[-1].mkdir()
    for index in range(files):
        path = folders[index % len(folders)] / f"file{index}"
        path.write_bytes(rng.randbytes(rng.randrange(1, max_size)))
    os.sync()
    return checksums(root)


def checksums(root):
    """{path relative to ``root``: sha256} of every regular file under it."""
    found = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    if not found:
        raise SetupError(f"no files under {root}")
    return found

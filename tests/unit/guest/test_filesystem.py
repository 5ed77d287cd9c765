"""filesystem.py: the tree of files and its checksums (mkfs and mounts run in the VM)."""

import pytest

from mptcp_nvme.errors import SetupError
from mptcp_nvme.guest.io import filesystem


def test_a_tree_is_reproducible_and_a_changed_byte_shows(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    written = filesystem.write_tree(first, files=10, dirs=2, max_size=4096, seed="x")
    assert written == filesystem.write_tree(second, files=10, dirs=2, max_size=4096, seed="x")
    assert len(written) == 10 and "dir0/dir1/file2" in written
    victim = first / "dir0" / "file1"
    victim.write_bytes(victim.read_bytes()[:-1] + b"?")
    changed = filesystem.checksums(first)
    assert [p for p in written if changed[p] != written[p]] == ["dir0/file1"]


def test_an_empty_tree_is_an_error(tmp_path):
    with pytest.raises(SetupError, match="no files"):
        filesystem.checksums(tmp_path)


def test_every_filesystem_has_mkfs_check_and_requirements():
    for fstype, (mkfs, check, needs) in filesystem.FILESYSTEMS.items():
        assert f"tool:{mkfs[0]}" in needs and f"tool:{check[0]}" in needs, fstype

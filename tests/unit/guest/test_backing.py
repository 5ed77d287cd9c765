"""Backing stores, made for real on the host when it can (root, loop, null_blk)."""

import os
import re
import shutil
from pathlib import Path

import pytest

from mptcp_nvme.errors import UsageError
from mptcp_nvme.guest.nvmet import backing
from mptcp_nvme.guest.checks import requirements

ROOT = os.geteuid() == 0


@pytest.mark.skipif(not ROOT or not os.path.exists("/dev/loop-control")
                    or not shutil.which("losetup"),
                    reason="needs root, /dev/loop-control and losetup")
def test_loop_device_is_a_sparse_file_detached_on_exit(tmp_path):
    with backing.LoopDevice(size=8 * 2**20, directory=tmp_path) as loop:
        assert re.fullmatch(r"/dev/loop\d+", loop.path)
        image = next(tmp_path.iterdir())
        assert image.stat().st_size == 8 * 2**20
        assert image.stat().st_blocks == 0
        sysfs = Path("/sys/block") / Path(loop.path).name / "loop/backing_file"
        assert sysfs.read_text().strip() == str(image)
    assert list(tmp_path.iterdir()) == []
    assert not sysfs.exists()


def test_file_store_is_the_sparse_file_deleted_on_exit(tmp_path):
    with backing.FileStore(size=4 * 2**20, directory=tmp_path) as store:
        assert Path(store.path).parent == tmp_path
        assert os.stat(store.path).st_size == 4 * 2**20
        assert str(store) == f"file {store.path}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not ROOT, reason="needs root")
def test_null_blk_is_memory_backed_and_removed_on_exit():
    if not requirements.load_module("null_blk") or not backing.NULLB_CONFIGFS.is_dir():
        pytest.skip("no null_blk module with configfs on this host")
    with backing.NullBlk(size=4 * 2**20) as disk:
        assert disk.path == f"/dev/{disk.name}"
        with open(disk.path, "r+b", buffering=0) as dev:
            dev.write(b"mptcp-nvme" * 52)            # 520 bytes: more than one sector
            dev.seek(0)
            assert dev.read(10) == b"mptcp-nvme"    # memory_backed keeps what was written
        size = Path("/sys/block", disk.name, "size").read_text()
        assert int(size) * 512 == 4 * 2**20
    assert not disk.item.exists()
    assert not os.path.exists(disk.path)


def test_bad_kind_and_sizes_are_usage_errors():
    with pytest.raises(UsageError, match="backing must be one of loop, file, null_blk, not 'nvme'"):
        backing.store("nvme")
    with pytest.raises(UsageError, match="whole MiB"):
        backing.NullBlk(size=2**20 + 512)
    assert isinstance(backing.store("file"), backing.FileStore)
    assert set(backing.REQUIREMENTS) == set(backing.KINDS) == set(backing.STORES)

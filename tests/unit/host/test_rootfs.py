"""The guest root's ext4 image: built from the directory, reused, rebuilt when it changes."""

import os
import shutil
import subprocess

import pytest

from mptcp_nvme.host.inputs import rootfs

pytestmark = pytest.mark.skipif(not shutil.which("debugfs"), reason="needs e2fsprogs")


def read_from_image(image, path):
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True,
                          text=True, check=True).stdout


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.setenv("MPTCP_NVME_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "rootfs-test"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("guest\n")
    return root


def test_the_image_holds_the_tree_and_is_reused(tree):
    image = rootfs.disk_image(tree)
    assert image.parent == rootfs.cache_dir() and image.suffix == ".ext4"
    assert read_from_image(image, "/etc/hostname") == "guest\n"
    built = image.stat().st_mtime_ns
    assert rootfs.disk_image(tree) == image
    assert image.stat().st_mtime_ns == built


def test_a_change_in_the_tree_rebuilds_the_image(tree):
    image = rootfs.disk_image(tree)
    modules = tree / "lib/modules/7.4.0"
    modules.mkdir(parents=True)
    (modules / "modules.dep").write_text("kernel/nvme.ko:\n")
    later = image.stat().st_mtime_ns + 10**9
    os.utime(tree / "lib", ns=(later, later))
    assert rootfs.disk_image(tree) == image
    assert read_from_image(image, "/lib/modules/7.4.0/modules.dep") == "kernel/nvme.ko:\n"


def test_images_of_two_trees_do_not_collide(tree, tmp_path):
    other = tmp_path / "elsewhere" / tree.name
    shutil.copytree(tree, other)
    assert rootfs.disk_image(tree) != rootfs.disk_image(other)


def test_the_host_root_needs_udevd(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(rootfs, "HOST_UDEVD", (str(tmp_path / "systemd-udevd"),))
    with pytest.raises(rootfs.SetupError, match="--rootfs host needs systemd-udevd"):
        rootfs.ensure("host")
    (tmp_path / "systemd-udevd").touch()
    assert str(rootfs.ensure("host")) == "/"

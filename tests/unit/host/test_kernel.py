"""Locating the kernel under test; every bad --kernel is one UsageError line."""

import struct

import pytest

from mptcp_nvme.host.inputs import kernel
from mptcp_nvme.errors import UsageError


def fake_bzimage(path, release):
    """Enough of an x86 boot header for image_release(): HdrS and the version pointer."""
    data = bytearray(0x400)
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = struct.pack("<H", 0x300 - 0x200)
    text = f"{release} (builder@host) #1 SMP".encode()
    data[0x300:0x300 + len(text)] = text
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def rootfs(tmp_path):
    boot = tmp_path / "root/boot"
    boot.mkdir(parents=True)
    for release in ("6.12.9+deb13-amd64", "7.3.4+deb13-amd64", "6.9.1"):
        fake_bzimage(boot / f"vmlinuz-{release}", release)
    return tmp_path / "root"


def test_default_is_newest_in_rootfs(rootfs):
    found = kernel.locate(None, rootfs)
    assert found.release == "7.3.4+deb13-amd64"
    assert found.image == rootfs / "boot/vmlinuz-7.3.4+deb13-amd64"


def test_installed_version(rootfs):
    assert kernel.locate("6.9.1", rootfs).image.name == "vmlinuz-6.9.1"


def test_bzimage_path(rootfs, tmp_path):
    image = fake_bzimage(tmp_path / "bzImage", "7.4.0-rc1")
    found = kernel.locate(str(image), rootfs)
    assert (found.release, found.tree, found.modules) == ("7.4.0-rc1", None, None)


def test_bzimage_with_modules(rootfs, tmp_path):
    image = fake_bzimage(tmp_path / "bzImage", "7.4.0")
    mods = tmp_path / "lib/modules/7.4.0"
    mods.mkdir(parents=True)
    (mods / "modules.dep").write_text("")
    assert kernel.locate(str(image), rootfs, str(mods)).modules == mods


def make_tree(tmp_path, built=True):
    tree = tmp_path / "linux"
    tree.mkdir()
    (tree / "Kconfig").write_text("")
    (tree / "Makefile").write_text("")
    if built:
        (tree / "arch/x86/boot").mkdir(parents=True)
        fake_bzimage(tree / kernel.BZIMAGE, "7.4.0-rc2+")
        (tree / "include/config").mkdir(parents=True)
        (tree / "include/config/kernel.release").write_text("7.4.0-rc2-dirty\n")
    return tree


def test_built_tree(rootfs, tmp_path):
    tree = make_tree(tmp_path)
    found = kernel.locate(str(tree), rootfs)
    assert (found.release, found.tree, found.image) == ("7.4.0-rc2-dirty", tree, tree / kernel.BZIMAGE)


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file or directory, and not a kernel installed in the rootfs "
                "(installed: 7.3.4+deb13-amd64, 6.12.9+deb13-amd64, 6.9.1)"),
    ("unbuilt", "kernel tree is not built (no arch/x86/boot/bzImage); run 'mptcp-nvme build"),
    ("not-a-tree", "directory is not a kernel source tree"),
    ("not-an-image", "not an x86 bzImage"),
])
def test_bad_kernel(rootfs, tmp_path, case, message):
    spec = {
        "missing": lambda: "/nonexistent/bzImage",
        "unbuilt": lambda: str(make_tree(tmp_path, built=False)),
        "not-a-tree": lambda: str(tmp_path),
        "not-an-image": lambda: str((tmp_path / "x").write_text("x") and tmp_path / "x"),
    }[case]()
    with pytest.raises(UsageError) as raised:
        kernel.locate(spec, rootfs)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_modules_are_not_installed_into_the_host_root(tmp_path):
    image = fake_bzimage(tmp_path / "bzImage", "7.4.0")
    with pytest.raises(UsageError, match="--modules cannot go with --rootfs host"):
        kernel.locate(str(image), "/", str(tmp_path))


def test_bzimage_modules_go_to_a_per_kernel_image_not_into_the_rootfs(rootfs, tmp_path, monkeypatch):
    """The shared rootfs is never written: a bzImage's modules are added to a separate
    image of that kernel (ext4, read back with debugfs)."""
    import shutil
    import subprocess
    from mptcp_nvme.host.inputs import rootfs as rootfs_mod
    if not shutil.which("mkfs.ext4") or not shutil.which("debugfs"):
        pytest.skip("needs e2fsprogs (mkfs.ext4, debugfs)")
    monkeypatch.setenv("MPTCP_NVME_CACHE", str(tmp_path / "cache"))
    image = fake_bzimage(tmp_path / "bzImage", "7.4.0")
    mods = tmp_path / "lib/modules/7.4.0"
    (mods / "kernel").mkdir(parents=True)
    (mods / "modules.dep").write_text("kernel/nvme.ko:\n")
    before = sorted(p.relative_to(rootfs) for p in rootfs.rglob("*"))
    found = kernel.locate(str(image), rootfs, str(mods))
    disk = rootfs_mod.disk_image(rootfs, kernel.image_modules(found))
    assert sorted(p.relative_to(rootfs) for p in rootfs.rglob("*")) == before
    listed = subprocess.run(["debugfs", "-R", "cat /lib/modules/7.4.0/modules.dep", str(disk)],
                            capture_output=True, text=True)
    assert listed.stdout == "kernel/nvme.ko:\n", listed.stderr
    assert disk != rootfs_mod.disk_image(rootfs)          # the plain image is another one


def test_bad_modules_directory(rootfs, tmp_path):
    image = fake_bzimage(tmp_path / "bzImage", "7.4.0")
    with pytest.raises(UsageError, match="not a lib/modules/<release> directory"):
        kernel.locate(str(image), rootfs, str(tmp_path))


def test_empty_rootfs(tmp_path):
    with pytest.raises(UsageError, match="no kernel installed in the root filesystem"):
        kernel.locate(None, tmp_path)


def test_fragments_hold_every_option_the_suite_needs():
    text = "\n".join(p.read_text() for p in kernel.fragments())
    for option in ("BLK_DEV_LOOP", "CONFIGFS_FS", "NVME_CORE", "NVME_FABRICS", "NVME_TCP",
                   "NVME_MULTIPATH", "NVME_TARGET", "NVME_TARGET_TCP", "NVME_TCP_TLS",
                   "NVME_TARGET_TCP_TLS", "NVME_KEYRING", "NVME_AUTH", "NET_HANDSHAKE", "KEYS",
                   "TLS", "NET_SCH_NETEM", "VETH", "MPTCP", "MPTCP_IPV6"):
        assert f"CONFIG_{option}=" in text, option
    assert "CONFIG_EXT4_FS=y" in kernel.BOOT_FRAGMENT.read_text()
    debug = kernel.fragments(debug=True)[-1].read_text()
    for option in ("KASAN", "DEBUG_KMEMLEAK", "PROVE_LOCKING"):
        assert f"CONFIG_{option}=y" in debug


def test_unmet_fragment_options_are_named(tmp_path):
    fragment = tmp_path / "frag.config"
    fragment.write_text("CONFIG_NVME_TCP=m\nCONFIG_EXT4_FS=y\nCONFIG_MPTCP=y\n"
                        "# CONFIG_DEBUG_INFO is not set\nCONFIG_NR_CPUS=8\n")
    dotconfig = tmp_path / ".config"
    dotconfig.write_text("CONFIG_NVME_TCP=y\n# CONFIG_EXT4_FS is not set\nCONFIG_MPTCP=y\n"
                         "CONFIG_DEBUG_INFO=y\nCONFIG_NR_CPUS=64\n")
    assert kernel.unmet_options(kernel.read_config(dotconfig), [fragment]) == [
        "CONFIG_EXT4_FS=y (is n)", "CONFIG_DEBUG_INFO=n (is y)", "CONFIG_NR_CPUS=8 (is 64)"]


def test_the_fragments_parse():
    for fragment in kernel.fragments(debug=True):
        assert kernel.read_config(fragment), fragment


def test_a_later_fragment_replaces_an_earlier_ones_setting(tmp_path):
    """debug.config turns kmemleak on where mptcp-nvme.config leaves it off: no warning."""
    normal, debug = tmp_path / "a.config", tmp_path / "b.config"
    normal.write_text("CONFIG_DEBUG_KMEMLEAK=y\nCONFIG_DEBUG_KMEMLEAK_DEFAULT_OFF=y\n")
    debug.write_text("# CONFIG_DEBUG_KMEMLEAK_DEFAULT_OFF is not set\n")
    dotconfig = tmp_path / ".config"
    dotconfig.write_text("CONFIG_DEBUG_KMEMLEAK=y\n")
    assert kernel.unmet_options(kernel.read_config(dotconfig), [normal, debug]) == []
    assert kernel.unmet_options(kernel.read_config(dotconfig), [normal]) == [
        "CONFIG_DEBUG_KMEMLEAK_DEFAULT_OFF=y (is n)"]
    for option in ("KFENCE", "DEBUG_LIST", "UBSAN", "DEBUG_ATOMIC_SLEEP"):
        assert f"CONFIG_{option}=y" in kernel.fragments(debug=True)[-1].read_text()

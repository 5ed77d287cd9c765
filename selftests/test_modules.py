"""The NVMe/TCP modules the suite stands on."""

from pathlib import Path

import pytest

from mptcp_nvme.guest import NVMET, load_module


@pytest.mark.requires("kconfig:CONFIGFS_FS", "kconfig:NVME_TARGET_TCP", "kconfig:NVME_TCP")
def test_nvme_tcp_modules_load(features):
    """nvmet, nvmet-tcp and nvme-tcp load and nvmet appears in configfs"""
    for module in ("nvmet", "nvmet_tcp", "nvme_tcp"):
        assert load_module(module), f"modprobe {module}: not loaded"
    assert features.configfs, "configfs is not mounted"
    assert (NVMET / "ports").is_dir() and (NVMET / "subsystems").is_dir()
    assert features.trtypes["tcp"] is None, features.trtypes["tcp"]
    assert Path("/dev/nvme-fabrics").exists(), "nvme-fabrics has no /dev/nvme-fabrics"

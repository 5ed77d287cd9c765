"""The guest's bytecode made on the host (host/inputs/bytecode.py), with this machine's
own root standing in for a rootfs folder: its loader, libraries and Python."""

import importlib.util
import sys
from pathlib import Path

import pytest

from mptcp_nvme.host.inputs import bytecode

PYTHON = f"python{sys.version_info.major}.{sys.version_info.minor}"
needs_loader = pytest.mark.skipif(
    bytecode.guest_interpreter("/", PYTHON) is None,
    reason=f"this host has no /{bytecode.LOADER} or /usr/bin/{PYTHON}")


@needs_loader
def test_the_framework_is_compiled_by_the_roots_python_into_its_pycache(tmp_path):
    package = tmp_path / "mptcp_nvme"
    (package / "guest").mkdir(parents=True)
    (package / "guest" / "agent.py").write_text("X = 1\n")
    (tmp_path / "selftests").mkdir()
    (tmp_path / "selftests" / "test_x.py").write_text("def test(): pass\n")
    assert bytecode.compile_for_guest("/", PYTHON, tmp_path)
    assert Path(importlib.util.cache_from_source(str(package / "guest" / "agent.py"))).is_file()
    assert not (tmp_path / "selftests" / "__pycache__").exists()   # pytest rewrites those


@needs_loader
def test_a_source_that_does_not_compile_is_reported_not_raised(tmp_path):
    (tmp_path / "mptcp_nvme").mkdir()
    (tmp_path / "mptcp_nvme" / "broken.py").write_text("def (:\n")
    assert not bytecode.compile_for_guest("/", PYTHON, tmp_path)


def test_a_rootfs_without_loader_or_python_is_left_alone(tmp_path):
    (tmp_path / "mptcp_nvme").mkdir()
    assert bytecode.guest_interpreter(tmp_path, "python3.13") is None
    assert not bytecode.compile_for_guest(tmp_path, "python3.13", tmp_path)
    assert not (tmp_path / "mptcp_nvme" / "__pycache__").exists()

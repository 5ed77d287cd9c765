"""Bad input gets one clear line on stderr and a non-zero exit, never a traceback."""

import json
import os
import subprocess
import sys

import pytest

from mptcp_nvme.host.inputs import rootfs
from tests.unit.host.test_kernel import fake_bzimage


@pytest.fixture
def fake_rootfs(tmp_path):
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / rootfs.MANIFEST_NAME).write_text(json.dumps(rootfs.manifest()))
    fake_bzimage(root / "boot/vmlinuz-7.3.4+deb13-amd64", "7.3.4+deb13-amd64")
    return root


def cli(*args, env=None):
    result = subprocess.run([sys.executable, "-m", "mptcp_nvme.host.cli", *args],
                            capture_output=True, text=True, env=env, timeout=60)
    return result.returncode, result.stdout, result.stderr


def assert_one_line(stderr, expected):
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("mptcp-nvme: ") and expected in lines[0], stderr


@pytest.mark.parametrize("args, expected", [
    (["run", "--bogus"], "unrecognized arguments: --bogus"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["run", "--accel", "xen"], "invalid choice: 'xen'"),
    (["run", "--vms", "two"], "must be 1..16 or auto, not 'two'"),
    ([], "the following arguments are required: command"),
])
def test_usage_errors(args, expected):
    code, stdout, stderr = cli(*args)
    assert code == 2
    assert_one_line(stderr, expected)


def test_missing_kernel_path(fake_rootfs):
    code, _, stderr = cli("run", "--rootfs", str(fake_rootfs), "--kernel", "/no/such/bzImage")
    assert code == 2
    assert_one_line(stderr, "--kernel /no/such/bzImage: no such file or directory")


def test_rootfs_not_built(tmp_path):
    code, _, stderr = cli("run", "--rootfs", str(tmp_path))
    assert code == 2
    assert_one_line(stderr, f"--rootfs {tmp_path}: not a root filesystem built by mptcp-nvme")


def test_missing_selftest_path(fake_rootfs):
    code, _, stderr = cli("run", "--rootfs", str(fake_rootfs), "selftests/test_nothing.py")
    assert code == 2
    assert_one_line(stderr, "selftests/test_nothing.py: no such selftest file or directory")


def test_missing_host_tool(fake_rootfs):
    env = dict(os.environ, PATH="/nonexistent")
    code, _, stderr = cli("run", "--rootfs", str(fake_rootfs), env=env)
    assert code == 1
    assert_one_line(stderr, "missing host tool(s): qemu-system-x86_64")


@pytest.mark.parametrize("args, expected", [
    (["kselftest", "net/mptcp"], "kselftests come from the kernel tree under test: give --kernel TREE"),
    (["kselftest", "--kernel", "/", "net/mptcp"], "/: not a kernel tree"),
    (["run", "--kernel", "/", "--kselftest", "net/mptcp"], "/: not a kernel tree"),
    (["kselftest", "--kernel", "/", "net/../x"], "expected COLLECTION[:TEST]"),
    (["kselftest"], "the following arguments are required: COLLECTION[:TEST]"),
])
def test_bad_kselftest_input_is_one_line_before_any_vm(args, expected):
    code, _, stderr = cli(*args)
    assert code == 2
    assert_one_line(stderr, expected)


@pytest.mark.parametrize("args, expected", [
    (["blktests"], "the following arguments are required: --blktests"),
    (["blktests", "--blktests", "/"], "/: not a blktests checkout"),
    (["blktests", "--blktests", "/", "--trtype", "mptcp"], "blktests cannot run NVMe over MPTCP"),
    (["blktests", "--blktests", "/", "--trtype", "rdma"], "must be one of tcp, loop"),
    (["blktests", "--blktests", "/", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_blktests_input_is_one_line_before_any_vm(args, expected):
    code, _, stderr = cli(*args)
    assert code == 2
    assert_one_line(stderr, expected)


def test_build_needs_a_tree(tmp_path):
    code, _, stderr = cli("build", str(tmp_path))
    assert code == 2
    assert_one_line(stderr, "not a kernel source tree")


def test_build_without_a_compiler(tmp_path):
    (tmp_path / "Kconfig").write_text("")
    env = dict(os.environ, PATH="/nonexistent")
    code, _, stderr = cli("build", str(tmp_path), env=env)
    assert code == 1
    assert_one_line(stderr, "missing host tool(s): make, gcc, flex, bison, bc (a kernel build")


@pytest.mark.parametrize("args, expected", [
    ([], {"family": "ipv4", "trtype": "mptcp", "paths": "1", "iopolicy": "numa", "loss": "0",
          "tls": False}),
    (["tcp", "4", "round-robin", "1", "tls"],
     {"family": "ipv4", "trtype": "tcp", "paths": "4", "iopolicy": "round-robin", "loss": "1",
      "tls": True}),
    (["v4map", "mptcp", "2"], {"family": "v4map", "trtype": "mptcp", "paths": "2",
                               "iopolicy": "numa", "loss": "0", "tls": False}),
    (["ipv6"], {"family": "ipv6", "trtype": "mptcp", "paths": "1", "iopolicy": "numa",
                "loss": "0", "tls": False}),
])
def test_script_arguments_as_the_newer_script_takes_them(args, expected):
    from mptcp_nvme.host.cli import script_options
    assert script_options(args) == expected


@pytest.mark.parametrize("args, expected", [
    (["script", "udp"], "script: bad trtype 'udp': choose one of tcp|mptcp"),
    (["script", "ipv6", "tcp", "5"], "script: bad paths '5': choose one of 1|2|3|4"),
    (["script", "ipv4", "tcp", "1", "numa", "0", "tls", "extra"], "script: too many arguments"),
    (["run", "--family", "ipx"], "invalid choice: 'ipx'"),
    (["run", "--retry-failed", "x"], "invalid int value: 'x'"),
])
def test_bad_script_input_is_one_line(args, expected):
    code, _, stderr = cli(*args)
    assert code == 2
    assert_one_line(stderr, expected)

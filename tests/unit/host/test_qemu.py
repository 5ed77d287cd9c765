"""The vng command line and the per-test outcome summary, without booting anything."""

from pathlib import Path

import pytest
from _pytest.reports import TestReport

from mptcp_nvme.host.results import outcome
from mptcp_nvme.host.vm import qemu as vm
from mptcp_nvme.errors import UsageError
from mptcp_nvme.host.inputs.kernel import Kernel


def config(**overrides):
    kernel = Kernel(image=Path("/r/boot/vmlinuz-7.3"), release="7.3", origin="rootfs 7.3")
    fields = dict(kernel=kernel, root_image=Path("/c/r.ext4"), command="true", accel="tcg",
                  rwdirs={"/mnt/results": "/host/res"}, rodirs={"/mnt/src": "/host/src"},
                  append=("nvme_core.multipath=Y",), name="mptcp-nvme-1-main")
    fields.update(overrides)
    return vm.VMConfig(**fields)


def test_tcg_run_of_a_rootfs_kernel():
    assert vm.vng_argv(config()) == [
        "vng", "--run", "/r/boot/vmlinuz-7.3", "--verbose", "--force-9p",
        "--name", "mptcp-nvme-1-main",
        "--cpus", "2", "--memory", "2G", "--root-disk", "/c/r.ext4", "--root-fstype", "ext4",
        "--disable-kvm", "--qemu-opts=-accel tcg,thread=single",
        "--rwdir", "/mnt/results=/host/res", "--rodir", "/mnt/src=/host/src",
        "--append", "nvme_core.multipath=Y", "--", "true"]


def test_kvm_tree_on_host_root():
    tree = Kernel(image=Path("/k/arch/x86/boot/bzImage"), release="7.4", origin="tree",
                  tree=Path("/k"))
    argv = vm.vng_argv(config(kernel=tree, root_image=None, accel="kvm"))
    assert argv[:3] == ["vng", "--run", "/k"]
    assert "--disable-kvm" not in argv and "--root-disk" not in argv


def test_tcg_threads_are_a_choice_of_the_config():
    assert "--qemu-opts=-accel tcg,thread=multi" in vm.vng_argv(config(tcg_threads="multi"))


def test_bad_accel_is_a_usage_error():
    with pytest.raises(UsageError, match="--accel xen: choose one of auto, kvm, tcg"):
        vm.resolve_accel("xen", Path("/nonexistent"))


def report(when, outcome, longrepr=None, **extra):
    rep = TestReport(nodeid="t", location=("t", 0, "t"), keywords={}, outcome=outcome,
                     longrepr=longrepr, when=when, duration=0.01)
    for name, value in extra.items():
        setattr(rep, name, value)
    return rep


@pytest.mark.parametrize("reports, expected", [
    ([report("setup", "passed"), report("call", "passed"), report("teardown", "passed")],
     ("pass", "")),
    ([report("setup", "skipped", ("f", 1, "Skipped: missing: tool tlshd not installed")),
      report("teardown", "passed")], ("skip", "missing: tool tlshd not installed")),
    ([report("setup", "passed"), report("call", "failed", "boom"), report("teardown", "passed")],
     ("fail", "")),
    ([report("setup", "failed", "boom"), report("teardown", "passed")],
     ("error", "setup failed")),
    ([report("setup", "passed"), report("call", "passed"), report("teardown", "failed", "x")],
     ("error", "teardown failed")),
    ([report("setup", "passed"), report("call", "skipped", ("f", 1, "x"), wasxfail="bug 1"),
      report("teardown", "passed")], ("xfail", "bug 1")),
    ([report("setup", "passed"), report("call", "passed", wasxfail="bug 1"),
      report("teardown", "passed")], ("xpass", "")),
])
def test_summarize(reports, expected):
    assert outcome.summarize(reports) == expected


class _Config:
    workerinput = {"workerid": "gw0"}

    def getoption(self, name):
        return None


def test_a_boot_failure_is_typed_and_a_host_bug_keeps_its_traceback(monkeypatch):
    from mptcp_nvme.host.vm import pytest_run as runner
    from mptcp_nvme.host.vm.qemu import BootFailed, VMError

    vm_runner = runner.VmRunner(_Config())
    monkeypatch.setattr(vm_runner, "_boot", lambda: (_ for _ in ()).throw(VMError("no agent")))
    with pytest.raises(BootFailed, match="VM boot failed: no agent"):
        vm_runner._guest()
    with pytest.raises(BootFailed, match="failed to boot earlier"):
        vm_runner._guest()
    buggy = runner.VmRunner(_Config())
    monkeypatch.setattr(buggy, "_boot", lambda: {}["a bug in the host code"])
    with pytest.raises(KeyError):
        buggy._guest()

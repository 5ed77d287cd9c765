"""The guest side's pytest plugin, registered by mptcp_nvme.plugin: the agent that
serves tests to the host (--guest-agent), the selftest checks (requirements, kernel
health, kmemleak: guest/checks/gates.py) of a run in the guest or a native run (--ktap
without --vm), and a kselftest install's or a blktests copy's list as items."""

from mptcp_nvme.guest import blktests, kselftest, timing
from mptcp_nvme.guest.checks import gates
from mptcp_nvme.guest.checks.gates import enable_selftest_checks

features = gates.features           # a fixture of this plugin


def register(config):
    """This side's plugins for a run that needs them; whether it registered any."""
    if config.getoption("guest_agent"):
        from mptcp_nvme.guest.agent import GuestAgent
        config.pluginmanager.register(GuestAgent(config), "mptcp_nvme_agent")
        enable_selftest_checks(config)
        timing.enable(config)
        return True
    if config.getoption("ktap") and not config.getoption("vm"):
        enable_selftest_checks(config)     # native run: sudo pytest selftests --ktap -
        timing.enable(config)
    return False


def pytest_collect_file(file_path, parent):
    """A kselftest install's kselftest-list.txt: the tree's own kselftests as items; a
    blktests copy's blktests-list.txt: the user's blktests as items."""
    return kselftest.collect_file(file_path, parent) or blktests.collect_file(file_path, parent)

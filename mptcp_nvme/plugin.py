"""The pytest plugin (``pytest11`` entry point), for the host and the guest alike: the
options (options.OPTIONS), test descriptions, and which side's plugins to register:
the VM runner and reporters on the host (mptcp_nvme.host), the agent and the selftest
checks in the guest (mptcp_nvme.guest). Inert unless --ktap, --vm or --guest-agent.
"""

import collections
import tempfile
from pathlib import Path

import pytest

from mptcp_nvme import options
from mptcp_nvme.channel import DESCRIPTION
from mptcp_nvme.channel import results_dir
from mptcp_nvme.guest.checks.gates import enable_selftest_checks
from mptcp_nvme.guest.checks.gates import features  # noqa: F401 -- a fixture of this plugin
from mptcp_nvme.guest import kselftest


def pytest_addoption(parser):
    group = parser.getgroup("mptcp_nvme", "mptcp-nvme selftests")
    options.add_pytest_options(group)
    group.addoption("--ktap", metavar="PATH", help="write KTAP to PATH ('-' for stdout)")
    group.addoption("--vm", action="store_true", help="run the selftests in a virtme-ng guest")
    group.addoption("--guest-agent", action="store_true",
                    help="internal: serve tests to the host from inside the guest")
    group.addoption("--guest-config", metavar="FILE",
                    help="internal: the run's guest options as JSON (options.guest_config)")


def path_count(text):
    """--paths as the CLI checks it (options.OPTIONS)."""
    return options.BY_NAME["paths"].convert(text)


def pytest_configure(config):
    config.addinivalue_line("markers", "requires(*what): kernel/rootfs requirements, "
                            "e.g. 'module:nvmet', 'kconfig:NVME_TCP_TLS', 'tool:fio', "
                            "'trtype:mptcp', 'iopolicy:round-robin', 'feature:tls'")
    config.addinivalue_line("markers", "timeout(seconds): per-test limit in the VM")
    config.addinivalue_line("markers", "nvme_recovery_expected: NVMe error recovery in the "
                            "kernel log does not fail this test (a fault test)")
    if config.getoption("guest_config"):
        options.apply_guest_config(Path(config.getoption("guest_config")).read_text(),
                                   config.option, tempfile.mkdtemp(prefix="mptcp-nvme-"))
    if config.getoption("guest_agent"):
        from mptcp_nvme.guest.agent import GuestAgent
        config.pluginmanager.register(GuestAgent(config), "mptcp_nvme_agent")
        enable_selftest_checks(config)
    elif config.getoption("vm"):
        if not is_xdist_controller(config):
            from mptcp_nvme.host.vm.pytest_run import VmRunner
            config.pluginmanager.register(VmRunner(config), "mptcp_nvme_vm")
    elif config.getoption("ktap"):
        enable_selftest_checks(config)     # native run: sudo pytest selftests --ktap -
    if not config.getoption("guest_agent") and (config.getoption("vm") or config.getoption("ktap")):
        from mptcp_nvme.host import budget, shard
        shard.register(config)
        budget.register(config)            # after VmRunner: its protocol hook goes first
    if config.getoption("ktap") and not hasattr(config, "workerinput"):
        from mptcp_nvme.host.results.reporters import KtapReporter, ResultsJson
        config.pluginmanager.register(KtapReporter(config), "mptcp_nvme_ktap")
        if config.getoption("results_dir"):
            folder = results_dir(config)
            config.pluginmanager.register(ResultsJson(folder / "results.json", folder),
                                          "mptcp_nvme_results_json")
            from mptcp_nvme.host.results.faults_report import FaultsReport
            config.pluginmanager.register(FaultsReport(folder), "mptcp_nvme_faults")


def pytest_collect_file(file_path, parent):
    """A kselftest install's kselftest-list.txt: the tree's own kselftests as items."""
    return kselftest.collect_file(file_path, parent)


def is_xdist_controller(config):
    return (not hasattr(config, "workerinput")
            and getattr(config.option, "numprocesses", None) not in (None, 0))


def describe(item, unique=False):
    """What a test checks, for KTAP: its docstring's first line (formatted with its
    parameters) or its name, followed by the parameter id unless ``unique``."""
    obj = getattr(item, "obj", None)        # a kselftest item has none
    doc = ((obj.__doc__ if obj is not None else None) or "").strip().splitlines()
    params = getattr(getattr(item, "callspec", None), "params", {})
    text = item.originalname if hasattr(item, "originalname") else item.name
    if doc:
        try:
            text = doc[0].strip().format(**params)
        except (KeyError, IndexError, ValueError):
            text = doc[0].strip()
    callspec = getattr(item, "callspec", None)
    return f"{text} [{callspec.id}]" if callspec and not unique else text


@pytest.hookimpl(tryfirst=True)       # before -k/-m deselection: descriptions stay stable
def pytest_collection_modifyitems(config, items):
    variants = collections.Counter(function_key(item) for item in items)
    for item in items:
        item.user_properties.append((DESCRIPTION, describe(item, variants[function_key(item)] == 1)))


def function_key(item):
    return item.nodeid.split("[", 1)[0]

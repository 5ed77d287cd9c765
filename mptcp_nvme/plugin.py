"""The pytest plugin (``pytest11`` entry point) of both sides: the options
(options.OPTIONS), the markers and the tests' KTAP descriptions, then each side's own
plugin: mptcp_nvme.guest.plugin (the agent, the selftest checks, kselftest items) and,
outside the agent, mptcp_nvme.host.plugin (the VM runner, shards, budget, reporters).
Inert unless --ktap, --vm or --guest-agent. The one module at the top level that names
either side; it imports the host's only when the run is not the guest's agent.
"""

import collections
import tempfile
from pathlib import Path

import pytest

from mptcp_nvme import options
from mptcp_nvme.channel import DESCRIPTION
from mptcp_nvme.guest import plugin as guest_plugin


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
    config.addinivalue_line("markers", "kernel_log_expected(*patterns): kernel log lines "
                            "matching one of these regular expressions do not fail this test")
    if config.getoption("guest_config"):
        options.apply_guest_config(Path(config.getoption("guest_config")).read_text(),
                                   config.option, tempfile.mkdtemp(prefix="mptcp-nvme-"))
    config.pluginmanager.register(guest_plugin, "mptcp_nvme_guest")
    if not guest_plugin.register(config):
        from mptcp_nvme.host import plugin as host_plugin
        host_plugin.register(config)


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

"""Fixtures and hooks shared by the in-guest selftests (also used by ``sudo pytest selftests``).

Every test gets: its declared requirements checked (all unmet ones named in the SKIP),
the kernel log since it started checked for kernel problems (a hit fails it), and on
failure its kernel log saved under the results directory.
"""

import re
import subprocess

import pytest

from mptcp_nvme import health
from mptcp_nvme.plugin import DIAG, results_dir
from mptcp_nvme.requirements import Features

FEATURES = pytest.StashKey[Features]()
KERNEL_LOG = pytest.StashKey[health.KernelLog]()
TEST_LOG = pytest.StashKey[list]()


def probed(config):
    """The one probe of this session (loads nvmet, nvmet-tcp, nvme-tcp; mounts configfs)."""
    if FEATURES not in config.stash:
        config.stash[FEATURES] = Features.probe()
    return config.stash[FEATURES]


@pytest.fixture(scope="session")
def features(pytestconfig):
    return probed(pytestconfig)


def require(config, *requirements):
    """Skip (or fail with --expect-all-features) naming every unmet requirement."""
    unmet = [why for why in map(probed(config).unmet, requirements) if why]
    if unmet:
        message = "missing: " + "; ".join(unmet)
        if config.getoption("expect_all_features"):
            pytest.fail(message + " (--expect-all-features)", pytrace=False)
        pytest.skip(message)


def pytest_runtest_setup(item):
    config = item.config
    if KERNEL_LOG not in config.stash:
        config.stash[KERNEL_LOG] = health.KernelLog()
        item.user_properties.append((DIAG, probed(config).summary()))
    config.stash[KERNEL_LOG].new_lines()          # start this test's window
    item.stash[TEST_LOG] = []
    requirements = [r for mark in item.iter_markers("requires") for r in mark.args]
    require(config, *requirements)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if KERNEL_LOG not in item.config.stash or TEST_LOG not in item.stash:
        return report
    lines = item.config.stash[KERNEL_LOG].new_lines()
    item.stash[TEST_LOG] += lines
    bad = health.problems(lines)
    if bad and not report.failed:
        report.outcome = "failed"
        report.longrepr = (f"kernel log reports problems during {report.when}:\n"
                           + "\n".join(bad))
    if report.failed:
        save_artifacts(item, report)
    return report


def save_artifacts(item, report):
    folder = results_dir(item.config) / "artifacts" / re.sub(r"[^\w.-]+", "_", item.nodeid)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dmesg.txt").write_text("\n".join(item.stash[TEST_LOG]) + "\n")
    (folder / f"{report.when}.txt").write_text(report.longreprtext + "\n" + "".join(
        f"\n--- {name} ---\n{text}" for name, text in report.sections))


def pytest_sessionfinish(session):
    if KERNEL_LOG in session.config.stash:
        dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
        (results_dir(session.config) / "dmesg.txt").write_text(dmesg)

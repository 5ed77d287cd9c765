"""Guest side (and native runs): per-test requirements, the kernel-log gate, kmemleak,
artifacts of failed tests, and the run's leftovers check."""

import fnmatch
import json
import sys

import pytest

from mptcp_nvme import crash, proc
from mptcp_nvme.channel import CRASH, DIAG, KMEMLEAK_END, artifact_dir, results_dir
from mptcp_nvme.guest.checks import health
from mptcp_nvme.guest.checks.requirements import Features


def enable_selftest_checks(config):
    """Requirements and kernel health for tests that run on this kernel (idempotent;
    not on the host of a --vm run, whose tests run in the guest)."""
    if not config.getoption("vm") and not config.pluginmanager.has_plugin(SelftestChecks.NAME):
        config.pluginmanager.register(SelftestChecks(config), SelftestChecks.NAME)


FEATURES = pytest.StashKey[Features]()


def probed(config):
    """The one probe of this session (loads nvmet, nvmet-tcp, nvme-tcp; mounts configfs)."""
    if FEATURES not in config.stash:
        config.stash[FEATURES] = Features.probe()
    return config.stash[FEATURES]


@pytest.fixture(scope="session")
def features(pytestconfig):
    """What the running kernel offers (requirements.Features)."""
    return probed(pytestconfig)


def require(config, *requirements):
    """Skip naming every unmet requirement; with --expect-all-features fail instead,
    unless each unmet one matches an --allow-missing pattern."""
    features = probed(config)
    unmet = [(requirement, why) for requirement in requirements
             if (why := features.unmet(requirement))]
    if unmet:
        message = "missing: " + "; ".join(why for _, why in unmet)
        allowed = config.getoption("allow_missing") or ()
        excused = all(any(fnmatch.fnmatchcase(requirement, pattern) for pattern in allowed)
                      for requirement, _ in unmet)
        if config.getoption("expect_all_features") and not excused:
            pytest.fail(message + " (--expect-all-features)", pytrace=False)
        pytest.skip(message)


class SelftestChecks:
    """Per test: declared requirements checked (every unmet one named in the SKIP), the
    kernel log since it started checked for problems (a hit fails it), and on failure its
    kernel log and failure text saved under the results directory."""

    NAME = "mptcp_nvme_checks"
    TEST_LOG = pytest.StashKey[list]()

    def __init__(self, config):
        self.config = config
        self.kernel_log = None
        self.kmemleak = None

    def pytest_runtest_setup(self, item):
        if self.kernel_log is None:
            self.kernel_log = health.KernelLog()
            self.kmemleak = health.Kmemleak()
            summary = probed(self.config).summary()
            if not self.kmemleak.available:
                summary += f"; kmemleak not checked ({self.kmemleak.why_not})"
            item.user_properties.append((DIAG, summary))
        self.kernel_log.new_lines()             # this test's window starts here
        item.stash[self.TEST_LOG] = []
        require(self.config, *[r for mark in item.iter_markers("requires") for r in mark.args])

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if self.kernel_log is None or self.TEST_LOG not in item.stash:
            return report
        lines = self.kernel_log.new_lines()
        item.stash[self.TEST_LOG] += lines
        if report.when == "teardown" and self.kmemleak.available:
            if leaks := self.kmemleak.new_leaks():
                lines = lines + leaks.splitlines()
        bad = health.problems(lines, recovery_expected=bool(
            item.get_closest_marker("nvme_recovery_expected")), expected=[
                p for mark in item.iter_markers("kernel_log_expected") for p in mark.args])
        if bad and not report.failed:
            found = crash.extract("\n".join(lines))
            report.outcome = "failed"
            report.longrepr = "\n\n".join(
                [f"kernel log reports problems during {report.when}:"]
                + [c.describe() for c in found]
                + (["other problem lines:\n" + "\n".join(bad)] if not found else []))
            report.user_properties += [(CRASH, c.summary()) for c in found]
        if report.failed:
            self._save_artifacts(item, report)
        return report

    def _save_artifacts(self, item, report):
        folder = artifact_dir(results_dir(self.config), item.nodeid)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "dmesg.txt").write_text("\n".join(item.stash[self.TEST_LOG]) + "\n")
        (folder / f"{report.when}.txt").write_text(report.longreprtext + "\n" + "".join(
            f"\n--- {name} ---\n{text}" for name, text in report.sections))

    @pytest.hookimpl(trylast=True)     # after pytest's own teardown of session fixtures
    def pytest_sessionfinish(self, session):
        if self.kernel_log is not None:
            dmesg = proc.cmd(["dmesg"], fail=False).stdout
            (results_dir(self.config) / "dmesg.txt").write_text(dmesg)
            self.kernel_log.close()
            left = health.leftovers()
            (results_dir(self.config) / "leftovers.json").write_text(json.dumps(left, indent=2))
            if any(left.values()):
                print(f"mptcp-nvme: left behind after the run: {left}", file=sys.stderr)
            if self.kmemleak is not None and self.kmemleak.available:
                # a leak reported after the last test's scan (kmemleak reports an object
                # only once it is old enough) belongs to the run: ci/debug-lane reads it
                leaks = self.kmemleak.new_leaks()
                (results_dir(self.config) / KMEMLEAK_END).write_text(leaks + "\n" if leaks else "")


def mptcp_counter_findings(network, fallback_expected=False, before=None):
    """After a test that used ``network``: (diagnostics, problems) of the MPTcpExt
    counters of its two namespaces since ``before`` ({side: counters} when the network
    was handed on from an earlier test, guest/net/pool.py; else it was built for the
    test and its counters are the test's own): the non-zero counters worth reporting,
    and a fallback or checksum error unless the test expects fallbacks (marker
    mptcp_fallback_expected)."""
    from mptcp_nvme.guest.net import netstat
    from mptcp_nvme.guest.net.pool import counters_by_side
    shown, problems = [], []
    for side, now in counters_by_side(network).items():
        counters = netstat.counter_delta((before or {}).get(side, {}), now)
        if reported := netstat.reported({k: v for k, v in counters.items() if v}):
            shown.append(f"MPTcpExt {side}: " + " ".join(f"{k}={v}" for k, v in reported.items()))
        if not fallback_expected:
            problems += [f"{side}: {p}" for p in netstat.counter_problems(counters)]
    return shown, problems


def judge_link_limited(problems, links, bits_per_s):
    """Judge ``problems`` (broken claims about link-limited traffic: shares that follow
    the links' rates, aggregates that add them up) of a transfer of ``bits_per_s`` over
    ``links``: a failure where the links limited it or have no rate to say otherwise
    (topology.link_limited), a SKIP naming the bottleneck where they did not, since the
    guest's CPU, not the links, then decided the split."""
    if not problems:
        return
    from mptcp_nvme.topology import link_limited
    limited, measured = link_limited(links, bits_per_s)
    if limited is False:
        pytest.skip(f"the links did not limit the transfer, the guest did: {measured}; "
                    f"not judged: {'; '.join(problems)}")
    pytest.fail("; ".join(problems) + f" ({measured})", pytrace=False)

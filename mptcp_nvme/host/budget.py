"""--time-budget S: a wall-clock budget for the whole run, as the MPTCP CI has. It starts
when pytest starts (on the xdist controller, handed to every worker); a test that has
not started when it is spent is reported SKIP "time budget ..." in KTAP, JUnit and
results.json, never dropped. A test already running is not cut: --test-timeout is its
limit."""

import time

import pytest
from _pytest.reports import TestReport

DEADLINE = "mptcp_nvme_deadline"       # workerinput key: the controller's deadline


class TimeBudget:
    def __init__(self, config):
        self.budget = config.getoption("time_budget")
        handed = getattr(config, "workerinput", {}).get(DEADLINE)
        self.deadline = handed if handed is not None else time.time() + self.budget

    @pytest.hookimpl(optionalhook=True)       # an xdist hook: absent without xdist
    def pytest_configure_node(self, node):
        node.workerinput[DEADLINE] = self.deadline

    @pytest.hookimpl(tryfirst=True)           # registered after VmRunner: called before it
    def pytest_runtest_protocol(self, item, nextitem):
        if time.time() < self.deadline:
            return None
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for report in skipped_reports(item, f"time budget of {self.budget:g}s spent "
                                            "before it started"):
            ihook.pytest_runtest_logreport(report=report)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True


def skipped_reports(item, reason):
    """setup (skipped, with ``reason``) and teardown reports of a test that never ran."""
    common = dict(nodeid=item.nodeid, location=item.location, keywords={}, sections=[],
                  user_properties=list(item.user_properties))
    path, line, _ = item.location
    return [TestReport(outcome="skipped", longrepr=(path, (line or 0) + 1, f"Skipped: {reason}"),
                       when="setup", duration=0, **common),
            TestReport(outcome="passed", longrepr=None, when="teardown", duration=0, **common)]


def register(config):
    if config.getoption("time_budget") is not None:
        config.pluginmanager.register(TimeBudget(config), "mptcp_nvme_time_budget")

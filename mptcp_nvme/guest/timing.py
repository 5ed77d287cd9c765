"""Where a test's time goes: every fixture's setup timed (the topology, the nvmet
target, the connection, ...) and kept on the test's report as FIXTURE_TIME; pytest's
own reports split setup, call and teardown. results.json carries both
(host/results/outcome.py: phases_ms, fixtures_ms) and summary.md lists the slowest."""

import time

import pytest

from mptcp_nvme.channel import FIXTURE_TIME


class FixtureTimer:
    NAME = "mptcp_nvme_fixture_timer"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        started = time.monotonic()
        yield
        # the test whose setup ran it (a module- or session-scoped fixture: the first
        # test that used it); none outside a test's setup
        item = getattr(request, "_pyfuncitem", None)
        if item is not None:
            item.user_properties.append(
                (FIXTURE_TIME, [fixturedef.argname, round(time.monotonic() - started, 4)]))


def enable(config):
    if not config.pluginmanager.has_plugin(FixtureTimer.NAME):
        config.pluginmanager.register(FixtureTimer(), FixtureTimer.NAME)

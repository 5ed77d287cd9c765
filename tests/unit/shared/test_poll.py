"""mptcp_nvme.poll: waiting with a deadline that says what it waited for."""

import pytest

from mptcp_nvme.poll import PollTimeout, samples_over, wait_for


def test_the_condition_value_is_returned_once_true():
    calls = iter([0, None, "ready"])
    assert wait_for(lambda: next(calls), "the third call", interval=0) == "ready"


def test_a_deadline_names_what_was_awaited_and_the_last_error():
    def failing():
        raise FileNotFoundError(2, "No such file", "/sys/x")

    with pytest.raises(PollTimeout, match=r"timed out after 0.1s waiting for /sys/x to appear "
                                          r"\(last error: .*No such file.*\)"):
        wait_for(failing, "/sys/x to appear", timeout=0.1, interval=0.01)


def test_other_exceptions_are_not_swallowed():
    with pytest.raises(ZeroDivisionError):
        wait_for(lambda: 1 / 0, "arithmetic", timeout=1)


def test_an_observation_window_returns_every_value_seen():
    values = iter(["live", "live", "connecting", "live"] + ["live"] * 100)
    seen = samples_over(lambda: next(values), seconds=0.05, interval=0.01)
    assert seen == {"live", "connecting"}
    assert samples_over(lambda: "live", seconds=0) == {"live"}

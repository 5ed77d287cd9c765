"""Deadline polling: the only way this project waits for the kernel."""

import time


class PollTimeout(TimeoutError):
    """A condition did not become true before its deadline."""


def wait_for(condition, what, timeout=10.0, interval=0.05):
    """Call ``condition()`` until it returns a truthy value and return that value.

    ``what`` names the awaited state; it is in the PollTimeout message when the
    deadline passes, together with the last exception the condition raised.
    """
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except OSError as err:
            last_error = err
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise PollTimeout(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


def samples_over(sample, seconds, interval=0.2):
    """The distinct values ``sample()`` returned, called every ``interval`` for ``seconds``:
    an observation window (a state that must hold across several keep-alives, say), not a
    wait; the caller judges what was seen."""
    deadline = time.monotonic() + seconds
    seen = {sample()}
    while time.monotonic() < deadline:
        time.sleep(interval)
        seen.add(sample())
    return seen

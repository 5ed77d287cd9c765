"""--quick, a smoke run (blktests' QUICK_RUN): how long a selftest's time-based phases run.

A phase that runs for a time (a fio runtime, an MPTCP stream, a fault's baseline and
window) asks ``seconds(config, length)``: its own length, or under --quick at most
options.QUICK_S. Nothing else changes: the same setup, the same checks on what moved.
"""

from mptcp_nvme.options import QUICK_S


def seconds(config, length):
    """``length`` (seconds), or under --quick at most QUICK_S."""
    return min(length, QUICK_S) if config.getoption("quick", default=False) else length


def fio_job(config, job):
    """``job`` (fio.FioJob) with its runtime, if it has one, cut as seconds() cuts."""
    return job.replace(runtime=seconds(config, job.runtime)) if job.runtime else job

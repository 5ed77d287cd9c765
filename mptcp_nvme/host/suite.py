"""Running selftests through pytest with the VM runner (plugin.py --vm): the checks on
the test paths, the pytest command line built from the run options, and the KTAP exit
code. Used by 'mptcp-nvme run', 'script' and 'matrix'."""

from pathlib import Path

from mptcp_nvme import SOURCE_DIR
from mptcp_nvme import options
from mptcp_nvme.errors import UsageError

SELFTESTS = SOURCE_DIR / "selftests"
DEFAULT_IO_TIMEOUT = 30      # nvme_core's io_timeout, seconds


def test_paths(tests):
    """The selftest files or node ids, absolute; UsageError for one that does not exist
    or lies outside the source tree (the guest sees only the tree)."""
    paths = [str(Path(t).resolve()) if "::" not in t else t for t in tests] or [str(SELFTESTS)]
    for test in paths:
        path = Path(test.partition("::")[0]).resolve()
        if not path.exists():
            raise UsageError(f"{test}: no such selftest file or directory")
        if SOURCE_DIR not in (path, *path.parents):
            raise UsageError(f"{test}: selftests must be inside {SOURCE_DIR} (shared with the guest)")
    return paths


def pytest_argv(chosen, results, ktap="-", keyword=None, tests=()):
    """pytest's arguments for a VM run of ``chosen`` options into ``results`` (of
    ``tests``, which decide how many VMs a run without -n gets: parallel); with --rate,
    the guest's nvme_core.io_timeout scaled to it (io_timeout)."""
    append = [*(chosen.get("append") or ()), *io_timeout(chosen.get("append"), chosen.get("rate"))]
    chosen = {**chosen, "results_dir": str(results), "append": append or None,
              **parallel(chosen, results, tests)}
    return ["--vm", "--ktap", str(ktap), "-p", "no:terminal", "-p", "no:cacheprovider",
            "--rootdir", str(SOURCE_DIR), "--junitxml", str(Path(results) / "junit.xml"),
            *options.to_argv(chosen, only=options.for_pytest),
            *(["-k", keyword] if keyword else [])]


def parallel(chosen, results, tests=()):
    """-n resolved to a number: not given, auto, except for one test by its node id (a
    second VM would only cost a worker's start-up); auto: host/vm/capacity.py. With
    several VMs and neither --durations-from nor --shard, the durations cache's snapshot
    as --durations-from, so the tests start longest first (host/order.py)."""
    from mptcp_nvme.host import order
    from mptcp_nvme.host.vm import capacity
    vms = chosen.get("vms")
    if vms is None:
        vms = 1 if len(tests) == 1 and "::" in tests[0] else "auto"
    if vms == "auto":
        vms = capacity.vm_count(chosen.get("memory") or options.defaults("run")["memory"])
    found = {"vms": vms if vms > 1 else None}       # one VM: in this process, no xdist
    if vms > 1 and not chosen.get("durations_from") and not chosen.get("shard"):
        known = order.snapshot(results)
        if known:
            found["durations_from"] = str(known)
    return found


def io_timeout(append, rate):
    """nvme_core.io_timeout for the script's links at ``rate``, unless --append sets it:
    the script's fio keeps up to 1024 x 128 KiB in flight, which at 30mbit takes 33 times
    as long to drain as at its 1000mbit; without scaling the default 30 s, every lossy
    tcp cell ends in I/O timeouts and error recovery instead of a measurement."""
    if not rate or any(arg.startswith("nvme_core.io_timeout=") for arg in append or ()):
        return []
    from mptcp_nvme import topology
    scale = max(1.0, topology.Netem.parse(rate=topology.SCRIPT_RATE).rate_bit /
                topology.Netem.parse(rate=rate).rate_bit)
    return [f"nvme_core.io_timeout={round(DEFAULT_IO_TIMEOUT * scale)}"]


def run(argv, plugins=()):
    """pytest.main; (pytest's exit status, the KTAP exit code or None when none was set)."""
    import pytest

    from mptcp_nvme.host.results.reporters import KTAP_EXIT
    holder = {}

    class Capture:
        def pytest_unconfigure(self, config):
            holder["code"] = config.stash.get(KTAP_EXIT, None)

    status = pytest.main(argv, plugins=[Capture(), *plugins])
    return status, holder.get("code")

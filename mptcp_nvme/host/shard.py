"""--shard I/N: this run takes the I-th of N deterministic parts of the selected tests,
so that N machines (a CI matrix) run a suite side by side and 'mptcp-nvme merge' puts
the parts back together.

The split depends on the node ids alone, never on the order pytest collected them in:
the same on every machine. Tests go longest first (ties by node id) into the part with
the least time so far (ties: the lowest part); the time of a test is its time in
``--durations-from`` (a previous run's results.json), the mean of the known ones for a
test that run did not have, and 1 for every test without that file, which is a split by
count. A part keeps the collection order of its tests; the others are deselected before
the KTAP plan is written.
"""

import pytest

from mptcp_nvme.options import durations, shard_spec


def split(nodeids, count, times=None):
    """The node ids in ``count`` parts, balanced by ``times`` ({node id: seconds}; the
    mean of the known for the others) or by count: a list of sets."""
    weight = weights(nodeids, times)
    parts, loads = [set() for _ in range(count)], [0.0] * count
    for nodeid in sorted(set(nodeids), key=lambda n: (-weight[n], n)):
        part = min(range(count), key=lambda i: (loads[i], i))
        parts[part].add(nodeid)
        loads[part] += weight[nodeid]
    return parts


def weights(nodeids, times=None):
    """{node id: its time in ``times``, the mean of the known ones for the others, 1 for
    every one without ``times``}."""
    times = times or {}
    known = [times[n] for n in nodeids if n in times]
    default = sum(known) / len(known) if known else 1.0
    return {n: times.get(n, default) for n in nodeids}


class Shard:
    """Deselects the tests of the other parts, after -k/-m have deselected theirs."""

    def __init__(self, config):
        self.index, self.count = shard_spec(config.getoption("shard"))
        source = config.getoption("durations_from")
        self.times = durations(source) if source else {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        mine = split([item.nodeid for item in items], self.count, self.times)[self.index - 1]
        kept = [item for item in items if item.nodeid in mine]
        dropped = [item for item in items if item.nodeid not in mine]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept


def register(config):
    if config.getoption("shard"):
        config.pluginmanager.register(Shard(config), "mptcp_nvme_shard")

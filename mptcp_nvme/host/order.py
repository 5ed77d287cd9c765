"""With several VMs (-n N, -n auto), the tests start longest first, so that the VMs
finish together instead of one VM running the longest test while the others idle.

The times come from ``--durations-from`` when given, else from the durations cache
(``<cache>/durations.json``: every test's last time, merged in after each 'mptcp-nvme
run'). The host snapshots the cache into the run's folder (durations-before.json) and
every xdist worker orders by that one file, so the workers collect the same order, as
xdist requires. A test without a time goes by the mean of the known ones. One VM keeps
pytest's collection order (KTAP in file order); so does --shard, whose split must be the
same on every machine and so never reads the cache."""

import json
import os
import tempfile
from pathlib import Path

import pytest

from mptcp_nvme.host.shard import weights
from mptcp_nvme.options import durations

CACHE_NAME = "durations.json"
SNAPSHOT_NAME = "durations-before.json"


def cache_path():
    from mptcp_nvme.host.inputs.rootfs import cache_dir
    return cache_dir() / CACHE_NAME


def snapshot(results, cache=None):
    """The cache as a results.json-shaped file in ``results`` for --durations-from; None
    when the cache knows no test."""
    known = _read(cache or cache_path())
    if not known:
        return None
    path = Path(results) / SNAPSHOT_NAME
    path.write_text(json.dumps({"tests": [{"nodeid": n, "time_ms": ms}
                                          for n, ms in sorted(known.items())]}) + "\n")
    return path


def remember(tests, cache=None):
    """Merge the times of a run's tests (its results.json's) into the cache (atomically: a
    concurrent run loses at most its own update, never the file)."""
    cache = Path(cache or cache_path())
    known = _read(cache)
    known.update({t["nodeid"]: t["time_ms"] for t in tests
                  if isinstance(t, dict) and t.get("nodeid") and isinstance(t.get("time_ms"), int)
                  and t.get("result") not in ("skip", None)})
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.name + ".")
    with os.fdopen(fd, "w") as out:
        json.dump(known, out, sort_keys=True)
    os.replace(tmp, cache)


def _read(path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}


def longest_first(items, times):
    """``items`` sorted by their time (shard.weights: the unknown at the mean), longest
    first; ties keep the collection order (sorted() is stable)."""
    weight = weights([item.nodeid for item in items], times)
    return sorted(items, key=lambda item: -weight[item.nodeid])


class LongestFirst:
    def __init__(self, config):
        self.times = durations(config.getoption("durations_from"))

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        items[:] = longest_first(items, self.times)


def register(config):
    """In the xdist workers of a run with known times and no --shard."""
    if hasattr(config, "workerinput") and config.getoption("durations_from") \
            and not config.getoption("shard"):
        config.pluginmanager.register(LongestFirst(config), "mptcp_nvme_longest_first")

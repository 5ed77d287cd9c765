"""-n auto (host/vm/capacity.py) and longest first (host/order.py): how many VMs the
host runs, the durations cache, and the order the workers start the tests in."""

import json
import os
import subprocess
import sys

import pytest

from mptcp_nvme.host import order, suite
from mptcp_nvme.host.vm import capacity

GiB = 1 << 30


@pytest.mark.parametrize("cores, available, memory, vms", [
    (2, 24 * GiB, "2G", 2),          # this machine: the cores decide
    (16, 12 * GiB, "2G", 4),         # memory decides: (12 - 1) GiB / (2 GiB + qemu's)
    (4, 2 * GiB, "2G", 1),           # never below one
    (64, 512 * GiB, "512M", 16),     # never above 16
])
def test_auto_takes_the_cores_and_the_memory(cores, available, memory, vms):
    assert capacity.vm_count(memory, cores=cores, available=available) == vms


def test_auto_reads_this_hosts_memory():
    assert 1 <= capacity.vm_count("2G") <= capacity.MAX_VMS
    assert capacity.available_memory() > 0


class Item:
    def __init__(self, nodeid):
        self.nodeid = nodeid


def test_longest_first_and_the_unknown_at_the_mean():
    items = [Item(n) for n in ("a", "b", "c", "d", "e")]
    times = {"a": 1.0, "b": 30.0, "d": 10.0, "e": 30.0}      # c: the mean, 17.75
    assert [i.nodeid for i in order.longest_first(items, times)] == ["b", "e", "c", "d", "a"]
    assert [i.nodeid for i in order.longest_first(items, {})] == ["a", "b", "c", "d", "e"]


def test_the_cache_keeps_each_tests_last_time_and_skips_nothing_else(tmp_path):
    cache = tmp_path / "durations.json"
    run = tmp_path / "results.json"
    run.write_text(json.dumps({"tests": [
        {"nodeid": "t::a", "result": "pass", "time_ms": 1200},
        {"nodeid": "t::b", "result": "skip", "time_ms": 3},             # a skip says nothing
        {"nodeid": "t::c", "result": "fail", "time_ms": 90000}]}))
    order.remember(json.loads(run.read_text())["tests"], cache)
    order.remember([{"nodeid": "t::a", "result": "pass", "time_ms": 1500}], cache)
    assert json.loads(cache.read_text()) == {"t::a": 1500, "t::c": 90000}
    order.remember([], cache)                                          # no test: unchanged
    assert json.loads(cache.read_text()) == {"t::a": 1500, "t::c": 90000}
    snapshot = order.snapshot(tmp_path, cache)
    from mptcp_nvme.options import durations
    assert durations(snapshot) == {"t::a": 1.5, "t::c": 90.0}
    assert order.snapshot(tmp_path, tmp_path / "none.json") is None


def test_several_vms_read_the_snapshot_one_or_a_shard_do_not(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "durations.json").write_text(json.dumps({"t::a": 5000}))
    monkeypatch.setenv("MPTCP_NVME_CACHE", str(cache))
    argv = lambda **chosen: suite.pytest_argv({"memory": "2G", **chosen}, tmp_path / "r")
    (tmp_path / "r").mkdir()
    two = argv(vms=2)
    assert two[two.index("-n") + 1] == "2"
    assert two[two.index("--durations-from") + 1] == str(tmp_path / "r" / order.SNAPSHOT_NAME)
    assert "--durations-from" not in argv(vms=1) and "-n" not in argv(vms=1)
    assert "--durations-from" not in argv(vms=2, shard="1/2")
    auto = argv(vms="auto")
    assert auto[auto.index("-n") + 1] == str(capacity.vm_count("2G"))


def test_without_n_a_run_takes_auto_but_one_test_by_node_id_one_vm(tmp_path, monkeypatch):
    monkeypatch.setattr(capacity, "vm_count", lambda memory: 2)
    argv = lambda tests: suite.pytest_argv({"memory": "2G"}, tmp_path, tests=tests)
    for tests in ([], ["/src/selftests"], ["/src/selftests/test_tls.py"],
                  ["/src/selftests/test_tls.py::a", "/src/selftests/test_tls.py::b"]):
        assert argv(tests)[argv(tests).index("-n") + 1] == "2"
    assert "-n" not in argv(["/src/selftests/test_tls.py::test_tls_fio[tcp]"])


WORKERS = """
import os
def ran(name):
    with open(os.environ["ORDER_LOG"], "a") as log:
        log.write(name + "\\n")
def test_short(): ran("short")
def test_long(): ran("long")
def test_new(): ran("new")
"""


def test_xdist_workers_start_the_longest_first(tmp_path):
    """A real xdist worker orders by the file of known times; the unknown test goes by
    the mean. Without the file, the collection order."""
    (tmp_path / "test_w.py").write_text(WORKERS)
    times = tmp_path / "times.json"
    times.write_text(json.dumps({"tests": [{"nodeid": "test_w.py::test_short", "time_ms": 10},
                                           {"nodeid": "test_w.py::test_long", "time_ms": 900}]}))
    for extra, expected in ((["--durations-from", str(times)], "long new short"),
                            ([], "short long new")):
        log = tmp_path / f"order{len(extra)}.log"
        done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n",
                               "1", "--ktap", str(tmp_path / "k"), *extra, "test_w.py"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "ORDER_LOG": str(log)})
        assert done.returncode == 0, done.stdout + done.stderr
        assert log.read_text().split() == expected.split()

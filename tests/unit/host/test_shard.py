"""--shard I/N and --time-budget S, from real pytest runs (native mode, no VM) and the
split itself: deterministic, balanced, every test in exactly one part."""

import json
import random

import pytest

from mptcp_nvme import ktap
from mptcp_nvme.host import shard
from tests.unit.host.test_cli import assert_one_line, cli
from tests.unit.shared.test_plugin import run_native
from tests import DATA

ALL = ["connect over tcp [tcp]", "connect over mptcp [mptcp]", "a test without variants",
       "nvme over mptcp test", "needs what this machine lacks"]


def descriptions(results):
    return [r.description.removeprefix("mptcp_nvme: ") for r in results]


def test_parts_cover_the_run_once_and_keep_its_order(tmp_path):
    parts = []
    for index in (1, 2, 3):
        _, (planned, results) = run_native(tmp_path, "--shard", f"{index}/3")
        assert planned == len(results)                 # deselected: not in the plan
        parts.append(descriptions(results))
    assert sorted(sum(parts, [])) == sorted(ALL)
    assert [len(p) for p in parts] == [2, 2, 1]        # by count: sizes differ by 1 at most
    for part in parts:
        assert part == [d for d in ALL if d in part]   # collection order within a part


def test_shard_applies_after_k(tmp_path):
    _, (_, one) = run_native(tmp_path, "-k", "matrix", "--shard", "1/2")
    _, (_, two) = run_native(tmp_path, "-k", "matrix", "--shard", "2/2")
    assert sorted(descriptions(one) + descriptions(two)) == sorted(ALL[:2])
    assert len(one) == len(two) == 1


def test_split_is_independent_of_collection_order():
    nodeids = [f"selftests/test_{m}.py::test_{t}[{p}]" for m in "abc" for t in "xy"
               for p in ("tcp", "mptcp")]
    shuffled = random.Random(15).sample(nodeids, len(nodeids))
    assert shard.split(nodeids, 3) == shard.split(shuffled, 3)


def test_split_by_durations_is_greedy_longest_first():
    times = {"a": 10.0, "b": 6.0, "c": 5.0, "d": 4.0, "e": 1.0}
    assert shard.split(list(times), 2, times) == [{"a", "d"}, {"b", "c", "e"}]
    # a test the durations file does not know weighs the mean of the known ones
    assert shard.split(["new", "a", "b"], 2, {"a": 10.0, "b": 2.0}) == [{"a"}, {"new", "b"}]


def test_split_with_more_parts_than_tests():
    assert shard.split(["b", "a"], 3) == [{"a"}, {"b"}, set()]


@pytest.mark.parametrize("value, expected", [
    ("3/2", "must be I/N with 1 <= I <= N, not '3/2'"),
    ("0/2", "must be I/N with 1 <= I <= N, not '0/2'"),
    ("a/b", "must be I/N (e.g. 1/4), not 'a/b'"),
])
def test_bad_shard_is_one_line_and_exit_2(value, expected):
    code, _, stderr = cli("run", "--shard", value)
    assert code == 2
    assert_one_line(stderr, f"argument --shard: {expected}")


def test_durations_from_must_be_a_results_json(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"format": 1}))
    code, _, stderr = cli("run", "--shard", "1/2", "--durations-from", str(bad))
    assert code == 2
    assert_one_line(stderr, "not a results.json")
    code, _, stderr = cli("run", "--durations-from", str(tmp_path / "none.json"))
    assert code == 2
    assert_one_line(stderr, "No such file or directory")


def test_time_budget_skips_what_did_not_start_in_ktap_junit_and_results_json(tmp_path):
    junit = tmp_path / "junit.xml"
    done, (planned, results) = run_native(tmp_path, "--time-budget", "0",
                                          "--junitxml", str(junit))
    assert planned == 5 and done.returncode == 0
    reason = "time budget of 0s spent before it started"
    assert [(r.directive, r.reason) for r in results] == [("SKIP", reason)] * 5
    assert done.stdout.splitlines()[-1] == (
        "# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:5 error:0")
    assert junit.read_text().count(f'<skipped type="pytest.skip" message="{reason}"') == 5
    document = json.loads((tmp_path / "results/results.json").read_text())
    assert [(t["result"], t["reason"]) for t in document["tests"]] == [("skip", reason)] * 5
    assert document["time_budget"] == 0


def test_a_budget_left_runs_every_test(tmp_path):
    _, (_, results) = run_native(tmp_path, "--time-budget", "3600")
    assert [r.directive for r in results] == [None, None, None, None, "SKIP"]
    assert "time budget" not in results[4].reason


def test_time_budget_in_a_vm_run():
    """Captured: 'run --time-budget 1' on the stock kernel (tests/data/ci/budget): the
    first test started in time and ran to its end (the 21 s boot included); the others
    are SKIP 'time budget', in KTAP, junit.xml and results.json alike."""
    data = DATA / "ci/budget"
    planned, results = ktap.parse((data / "ktap.txt").read_text())
    assert planned == 3 and [r.directive for r in results] == [None, "SKIP", "SKIP"]
    reason = "time budget of 1s spent before it started"
    assert [r.reason for r in results[1:]] == [reason, reason]
    assert (data / "junit.xml").read_text().count(f'message="{reason}"') == 2
    document = json.loads((data / "results.json").read_text())
    assert [t["result"] for t in document["tests"]] == ["pass", "skip", "skip"]
    assert document["time_budget"] == 1


@pytest.mark.user_cache
def test_shards_of_the_whole_suite_merged_equal_the_unsharded_list(tmp_path):
    """The suite's real collection (selftests/, every parameter): shards 1/2 and 2/2,
    merged, list exactly the unsharded run's tests. A spent --time-budget makes every
    test a SKIP before any VM boots, so this needs the rootfs cache but no VM."""
    from mptcp_nvme.host.inputs import rootfs
    if not rootfs.default_path().is_dir():
        pytest.skip("no cached rootfs (run ./ci/setup)")
    folders = {}
    for part in ("whole", "1/2", "2/2"):
        folder = tmp_path / part.replace("/", "of")
        code, _, stderr = cli("run", "--time-budget", "0.001", "--results-dir", str(folder),
                              *(["--shard", part] if "/" in part else []))
        assert code == ktap.EXIT_SKIP, stderr
        folders[part] = folder
    code, _, stderr = cli("merge", str(folders["1/2"]), str(folders["2/2"]),
                          "--results-dir", str(tmp_path / "merged"))
    assert code == ktap.EXIT_SKIP, stderr

    def ids(folder):
        return [t["nodeid"] for t in json.loads((folder / "results.json").read_text())["tests"]]
    whole, one, two = ids(folders["whole"]), ids(folders["1/2"]), ids(folders["2/2"])
    assert len(whole) > 100 and not set(one) & set(two) and abs(len(one) - len(two)) <= 1
    assert sorted(ids(tmp_path / "merged")) == sorted(whole)

"""mptcp-nvme merge on real results folders (tests/data/ci: the same selection run whole
and as --shard 1/2 and 2/2 on the stock kernel): the merged run is the unsharded one."""

import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from mptcp_nvme import ktap
from mptcp_nvme.errors import UsageError
from mptcp_nvme.host.results import merge, summary
from tests.unit.host.test_cli import assert_one_line, cli
import tests

DATA = tests.DATA / "ci"


@pytest.fixture
def shards(tmp_path):
    for name in ("full", "shard1", "shard2"):
        shutil.copytree(DATA / name, tmp_path / name)
    return tmp_path


def result_lines(text):
    """(description, ok, directive, reason) of every KTAP result, numbers and times left out."""
    return sorted((r.description, r.ok, r.directive, r.reason) for r in ktap.parse(text)[1])


def test_merged_shards_equal_the_unsharded_run(shards):
    code, stdout, stderr = cli("merge", str(shards / "shard2"), str(shards / "shard1"),
                               "--results-dir", str(shards / "merged"))
    assert code == 0, stderr
    full = json.loads((shards / "full/results.json").read_text())
    merged = json.loads((shards / "merged/results.json").read_text())
    assert sorted(t["nodeid"] for t in merged["tests"]) == sorted(t["nodeid"] for t in full["tests"])
    assert [(t["nodeid"], t["result"]) for t in merged["tests"]] == [
        (t["nodeid"], t["result"]) for name in ("shard1", "shard2")       # shard order
        for t in json.loads((shards / name / "results.json").read_text())["tests"]]
    assert merged["totals"] == full["totals"] and merged["kernel"] == full["kernel"]
    assert [(p["dir"], p["shard"]) for p in merged["merged"]] == [("../shard1", "1/2"),
                                                                  ("../shard2", "2/2")]
    planned, results = ktap.parse(stdout)
    assert planned == 3 and [r.number for r in results] == [1, 2, 3]
    assert result_lines(stdout) == result_lines((shards / "full/ktap.txt").read_text())
    assert stdout.splitlines()[-1] == (shards / "full/ktap.txt").read_text().splitlines()[-1]
    assert (shards / "merged/ktap.txt").read_text() == stdout
    cases = ET.parse(shards / "merged/junit.xml").getroot().iter("testcase")
    full_cases = ET.parse(shards / "full/junit.xml").getroot().iter("testcase")
    assert sorted((c.get("classname"), c.get("name")) for c in cases) == sorted(
        (c.get("classname"), c.get("name")) for c in full_cases)
    text = (shards / "merged/summary.md").read_text()
    assert "3 tests: 2 pass, 1 skip." in text and "| 1/2 | 2 |" in text
    assert "nvmet rejects addr_trtype=mptcp (EINVAL)" in text


def test_artifacts_are_relative_to_the_merged_folder(shards):
    path = shards / "shard1/results.json"
    document = json.loads(path.read_text())
    document["tests"][0]["artifacts"] = ["vm-main/artifacts/t/kernel.log"]
    path.write_text(json.dumps(document))
    merged, _, _ = merge.merge([shards / "shard1", shards / "shard2"], shards / "out")
    assert merged["tests"][0]["artifacts"] == ["../shard1/vm-main/artifacts/t/kernel.log"]


@pytest.mark.parametrize("folders, expected", [
    (["shard1", "shard1copy"], "is in both"),
    (["shard1", "nothing"], "nothing: no results.json"),
    (["full", "shard2"], "is in both"),
])
def test_not_shards_of_one_run_is_one_line_and_exit_2(shards, folders, expected):
    shutil.copytree(shards / "shard1", shards / "shard1copy")
    (shards / "nothing").mkdir()
    code, _, stderr = cli("merge", *(str(shards / f) for f in folders),
                          "--results-dir", str(shards / "out"))
    assert code == 2
    assert_one_line(stderr, expected)


def test_different_kernels_do_not_merge(shards):
    path = shards / "shard2/results.json"
    document = json.loads(path.read_text())
    document["kernel"]["release"] = "7.3.4-virtme"
    path.write_text(json.dumps(document))
    with pytest.raises(UsageError, match="different kernels: 7.3.4\\+deb13-amd64, 7.3.4-virtme"):
        merge.merge([shards / "shard1", shards / "shard2"], shards / "out")


def test_ktap_from_results_json_matches_the_runs_own(shards):
    """write_ktap renders a results.json as the run printed it (numbers, times, totals)."""
    import io
    out = io.StringIO()
    code = summary.write_ktap(json.loads((shards / "full/results.json").read_text()), out)
    assert code == ktap.EXIT_PASS
    assert out.getvalue() == (shards / "full/ktap.txt").read_text()

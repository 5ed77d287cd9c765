"""KCIDB I/O JSON from real results.json documents (tests/data/ci), validated with the
kcidb-io package's own schema."""

import json

import jsonschema
import pytest

from mptcp_nvme.errors import UsageError
from mptcp_nvme.host.results import kcidb
from tests.unit.host.test_cli import cli
import tests

DATA = tests.DATA / "ci"


def run(name):
    return json.loads((DATA / name / "results.json").read_text())


def test_a_run_is_a_checkout_a_build_and_its_tests():
    report = kcidb.validate(kcidb.build_report([run("full")]))
    assert report["version"]["major"] >= 5
    [checkout], [build] = report["checkouts"], report["builds"]
    assert checkout["id"] == "mptcp_nvme:7.3.4+deb13-amd64" and "git_commit_hash" not in checkout
    assert build["checkout_id"] == checkout["id"] and build["architecture"] == "x86_64"
    tests = {t["path"]: t for t in report["tests"]}
    assert sorted(tests) == [
        "mptcp_nvme.test_admin.test_admin_identify_logs_and_features.mptcp-2path-loss0",
        "mptcp_nvme.test_admin.test_admin_identify_logs_and_features.tcp-2path-loss0",
        "mptcp_nvme.test_modules.test_nvme_tcp_modules_load"]
    skipped = tests["mptcp_nvme.test_admin.test_admin_identify_logs_and_features.mptcp-2path-loss0"]
    assert skipped["status"] == "SKIP" and "addr_trtype=mptcp" in skipped["misc"]["reason"]
    assert tests["mptcp_nvme.test_modules.test_nvme_tcp_modules_load"]["status"] == "PASS"
    assert all(t["build_id"] == build["id"] and t["duration"] > 0 for t in report["tests"])


def test_runs_of_two_kernels_and_the_budget_skips():
    other = run("shard2")
    other["kernel"] = {**other["kernel"], "release": "7.3.4-virtme", "origin": "tree /x",
                       "tree": "/x", "commit": "0123456789abcdef0123456789abcdef01234567"}
    report = kcidb.validate(kcidb.build_report([run("budget"), run("shard1"), other]))
    assert len(report["checkouts"]) == len(report["builds"]) == 2        # shared per kernel
    assert report["checkouts"][1]["git_commit_hash"] == other["kernel"]["commit"]
    assert len({t["id"] for t in report["tests"]}) == 3 + 2 + 1
    budget = [t for t in report["tests"] if "time budget" in t["misc"].get("reason", "")]
    assert [t["status"] for t in budget] == ["SKIP", "SKIP"]


def test_artifacts_are_output_files():
    document = run("full")
    document["tests"][1]["artifacts"] = ["vm-main/artifacts/t/kernel.log"]
    report = kcidb.validate(kcidb.build_report([document], artifacts_url="https://ci.example/r/1"))
    assert report["tests"][1]["output_files"] == [
        {"name": "kernel.log", "url": "https://ci.example/r/1/vm-main/artifacts/t/kernel.log"}]
    local = kcidb.build_report([document])["tests"][1]["output_files"][0]["url"]
    assert local == "file:///tmp/wt15/full/vm-main/artifacts/t/kernel.log"


def test_an_older_results_json_names_its_kernel_by_the_probe_line():
    document = run("full")
    del document["kernel"]
    [checkout] = kcidb.validate(kcidb.build_report([document]))["checkouts"]
    assert checkout["misc"]["kernel_release"] == "7.3.4+deb13-amd64"
    document["tests"] = []
    with pytest.raises(UsageError, match="no kernel recorded"):
        kcidb.build_report([document])


def test_validate_rejects_what_kcidb_would():
    report = kcidb.build_report([run("full")])
    report["tests"][0]["status"] = "OK"
    with pytest.raises(jsonschema.exceptions.ValidationError):
        kcidb.validate(report)


def test_merge_writes_it(tmp_path):
    out = tmp_path / "kcidb.json"
    code, _, stderr = cli("merge", str(DATA / "shard1"), str(DATA / "shard2"),
                          "--results-dir", str(tmp_path / "merged"), "--kcidb", str(out))
    assert code == 0, stderr
    report = kcidb.validate(json.loads(out.read_text()))
    assert len(report["tests"]) == 3

"""VM integration on the stock kernel: auth (with TLS too), digests, queue layouts, ANA,
admin commands, backing stores, file systems, churn, iopolicies on asymmetric links, the
IPv6, v4-mapped and mixed families and two fault cases over NVMe/TCP (their mptcp cases
run on the mptcp kernel, test_mptcp_kernel.py), over two VMs side by side."""

import json
import re

import pytest

from mptcp_nvme import ktap

from .conftest import REPO

pytestmark = pytest.mark.vm
FILES = ("test_auth.py", "test_digest.py", "test_queues.py", "test_ana.py", "test_admin.py",
         "test_families.py", "test_mixed_family.py", "test_backing.py", "test_mkfs.py",
         "test_churn.py", "test_iopolicy.py", "test_faults.py")
GROUPS = {"auth": 7, "digest": 2, "queue": 3, "ana": 3, "admin": 1, "ipv6": 1, "v4map": 3,
          "backing": 3, "mkfs": 2, "churn": 2, "iopolicy": 3, "fault": 2}
NEWER_IOPOLICIES = ("weighted-lat", "adaptive")     # not in 7.3: SKIP naming them


def test_feature_cases_pass_over_tcp(mptcp_nvme):
    run = mptcp_nvme("run", "-n", "2", "--trtype", "tcp", "--expect-all-features",
                     *(f"--allow-missing=iopolicy:{name}" for name in NEWER_IOPOLICIES),
                     "--fault", "link-down", "--fault", "delete",
                     *(REPO / "selftests" / name for name in FILES))
    assert run.code == ktap.EXIT_PASS, run.stdout + run.stderr
    skipped = [r for r in run.results if r.directive == "SKIP"]
    assert sorted(r.reason for r in skipped) == sorted([
        f"missing: iopolicy {name} not offered by nvme_core" for name in NEWER_IOPOLICIES]), skipped
    assert all(r.ok and r.directive is None for r in run.results if r not in skipped), run.results
    assert re.search(r"^# 100 cycles over tcp .* at baseline$", run.stdout, re.M), run.stdout
    assert re.search(r"^# stream over v4map .*: subflows v4map>v4map v6fast>v6fast "
                     r"v6slow>v6slow; bytes per link v6fast=\d+ v6slow=\d+ v4map=\d+$",
                     run.stdout, re.M), run.stdout
    # the faults: no byte lost, recovered, their table and timelines written
    outcomes = json.loads((run.results_dir / "faults.json").read_text())
    assert [(o["fault"], o["trtype"]) for o in outcomes] == [("link-down", "tcp"), ("delete", "tcp")]
    for outcome in outcomes:
        assert outcome["impact"]["recovered"] and not outcome["problem"], outcome
        assert not outcome["io_error"] and not outcome["verify_error"], outcome
    table = (run.results_dir / "faults.md").read_text()
    assert "| link-down | tcp ×2 |" in table and "| delete | tcp ×2 |" in table
    assert sorted(p.name for p in run.results_dir.glob("faults/*.png")) == [
        "delete-tcp.png", "link-down-tcp.png"]
    for group, count in GROUPS.items():
        named = [r for r in run.results if f"mptcp_nvme: {group}" in r.description.lower()
                 or f" {group} " in r.description.lower()]
        assert len(named) >= count, (group, [r.description for r in run.results])
    assert all(not any(left.values()) for left in run.all_leftovers().values()), run.all_leftovers()

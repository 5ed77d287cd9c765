"""VM integration on the stock kernel: auth, digests, queue layouts, ANA, admin commands,
the IPv6 and v4-mapped families and two fault cases over NVMe/TCP (their mptcp cases
run on the mptcp kernel, test_mptcp_kernel.py), over two VMs side by side."""

import json

import pytest

from mptcp_nvme import ktap

from .conftest import REPO

pytestmark = pytest.mark.vm
FILES = ("test_auth.py", "test_digest.py", "test_queues.py", "test_ana.py", "test_admin.py",
         "test_families.py", "test_faults.py")
GROUPS = {"auth": 5, "digest": 2, "queue": 3, "ana": 3, "admin": 1, "ipv6": 1, "v4map": 1,
          "fault": 2}


def test_feature_cases_pass_over_tcp(mptcp_nvme):
    run = mptcp_nvme("run", "-n", "2", "--trtype", "tcp", "--expect-all-features",
                     "--fault", "link-down", "--fault", "delete",
                     *(REPO / "selftests" / name for name in FILES))
    assert run.code == ktap.EXIT_PASS, run.stdout + run.stderr
    assert all(r.ok and r.directive is None for r in run.results), run.results
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

"""VM integration on the stock kernel: auth (with TLS too), digests, queue layouts, ANA,
admin commands, backing stores, file systems, churn, iopolicies on asymmetric links, the
blktests parity cases, the
IPv6, v4-mapped and mixed families and two fault cases over NVMe/TCP (their mptcp cases
SKIP here and run on the mptcp kernel, test_mptcp_kernel.py): the stock_suite run."""

import json
import re

import pytest

from mptcp_nvme.vocabulary import BOND_MODES

from .conftest import NEWER_IOPOLICIES, STOCK_FAULTS, is_mptcp_case, not_link_limited

pytestmark = pytest.mark.vm
GROUPS = {"auth": 7, "digest": 2, "queue": 3, "ana": 3, "admin": 1, "ipv6": 1, "v4map": 3,
          "backing": 3, "mkfs": 2, "churn": 2, "iopolicy": 3, "fault": 6, "bond": 8}


def test_feature_cases_pass_over_tcp(stock_suite):
    run = stock_suite
    newer = {f"iopolicy {name} over": f"missing: iopolicy {name} not offered by nvme_core"
             for name in NEWER_IOPOLICIES}
    newer["nvmet's debugfs"] = "missing: CONFIG_NVME_TARGET_DEBUGFS not set"
    run.assert_mptcp_skips_and_the_rest_passes(skips=newer)
    skipped = [r for r in run.results if r.directive == "SKIP" and not is_mptcp_case(r)
               and not not_link_limited(r)]
    assert sorted(r.reason for r in skipped) == sorted(newer.values()), skipped
    assert re.search(r"^# 100 cycles over tcp .* at baseline$", run.stdout, re.M), run.stdout
    assert re.search(r"^# stream over v4map .*: subflows v4map>v4map v6fast>v6fast "
                     r"v6slow>v6slow; bytes per link v6fast=\d+ v6slow=\d+ v4map=\d+$",
                     run.stdout, re.M), run.stdout
    # the faults: no byte lost, recovered, their table and timelines written
    # (and link-down on a bond of the links in each bonding mode)
    outcomes = json.loads((run.results_dir / "faults.json").read_text())
    assert [(o["fault"], o["trtype"]) for o in outcomes if not o["via"]] == [
        (f, "tcp") for f in STOCK_FAULTS]
    bonds = [f"bond-{mode}" for mode in BOND_MODES]
    assert sorted(o["via"] for o in outcomes if o["via"]) == sorted(
        b.replace("-", ":", 1) for b in bonds), outcomes
    for outcome in outcomes:
        assert outcome["impact"]["recovered"] and not outcome["problem"], outcome
        assert not outcome["io_error"] and not outcome["verify_error"], outcome
    table = (run.results_dir / "faults.md").read_text()
    assert "| link-down | tcp ×2 |" in table and "| delete | tcp ×2 |" in table
    assert "| link-down | tcp ×1 on bond:active-backup |" in table, table
    assert sorted(p.name for p in run.results_dir.glob("faults/*.png")) == sorted(
        ["delete-tcp.png", "link-down-tcp.png", *(f"link-down-tcp-{b}.png" for b in bonds)])
    # blktests parity (README): every case of a blktests nvme test that runs over tcp
    parity = [r for r in run.results if "(blktests nvme/" in r.description
              and not is_mptcp_case(r)]
    assert len(parity) >= 18 and all(r.ok for r in parity), [r.description for r in parity]
    for group, count in GROUPS.items():
        named = [r for r in run.results if f"mptcp_nvme: {group}" in r.description.lower()
                 or f" {group} " in r.description.lower()]
        assert len(named) >= count, (group, [r.description for r in run.results])
    assert all(not any(left.values()) for left in run.all_leftovers().values()), run.all_leftovers()

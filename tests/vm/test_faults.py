"""VM integration: fault cases on the default kernel (NVMe/TCP multipath; the mptcp cases
SKIP there and run on the mptcp kernel, tests/vm/test_mptcp_kernel.py), selected from the
whole suite with -k fault as a user would."""

import json
import re

import pytest

from mptcp_nvme import ktap

from .conftest import REPO

pytestmark = pytest.mark.vm


def test_tcp_fault_cases_recover_with_no_lost_byte(mptcp_nvme):
    run = mptcp_nvme("run", "-k", "fault", "--trtype", "tcp", "--fault", "link-down",
                     "--fault", "delete", REPO / "selftests")
    assert run.code == ktap.EXIT_PASS, run.stdout + run.stderr
    assert [r.description for r in run.results] == [
        "mptcp_nvme: fault link-down during verified writes over tcp [link-down-tcp]",
        "mptcp_nvme: fault delete during verified writes over tcp [delete-tcp]"]
    assert all(r.ok and r.directive is None for r in run.results), run.results
    assert re.search(r"^# I/O errors: 0; verify errors: 0$", run.stdout, re.M)
    outcomes = json.loads((run.results_dir / "faults.json").read_text())
    assert [(o["fault"], o["trtype"]) for o in outcomes] == [("link-down", "tcp"), ("delete", "tcp")]
    for outcome in outcomes:
        assert outcome["impact"]["recovered"] and not outcome["problem"], outcome
        assert not outcome["io_error"] and not outcome["verify_error"], outcome
    # the deleted controller was connected again: both are live at the end
    assert outcomes[1]["paths"] == 2
    table = (run.results_dir / "faults.md").read_text()
    assert "| link-down | tcp ×2 |" in table and "| delete | tcp ×2 |" in table
    assert sorted(p.name for p in run.results_dir.glob("faults/*.png")) == [
        "delete-tcp.png", "link-down-tcp.png"]
    assert not any(run.leftovers().values()), run.leftovers()

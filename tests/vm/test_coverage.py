"""VM integration on the stock kernel: auth, digests, queue layouts, ANA and admin
commands over NVMe/TCP (their mptcp cases run on the mptcp kernel, test_mptcp_kernel.py),
over two VMs side by side."""

import pytest

from mptcp_nvme import ktap

from .conftest import REPO

pytestmark = pytest.mark.vm
FILES = ("test_auth.py", "test_digest.py", "test_queues.py", "test_ana.py", "test_admin.py")
GROUPS = {"auth": 5, "digest": 2, "queue": 3, "ana": 3, "admin": 1}   # tcp cases of each


def test_feature_cases_pass_over_tcp(mptcp_nvme):
    run = mptcp_nvme("run", "-n", "2", "--trtype", "tcp", "--expect-all-features",
                     *(REPO / "selftests" / name for name in FILES))
    assert run.code == ktap.EXIT_PASS, run.stdout + run.stderr
    assert all(r.ok and r.directive is None for r in run.results), run.results
    for group, count in GROUPS.items():
        named = [r for r in run.results if f"mptcp_nvme: {group}" in r.description.lower()
                 or f" {group} " in r.description.lower()]
        assert len(named) >= count, (group, [r.description for r in run.results])
    assert all(not any(left.values()) for left in run.all_leftovers().values()), run.all_leftovers()

"""VM integration: NVMe/TCP TLS 1.3 selftests and the script's TLS scenario on the default
kernel; afterwards no tlshd and no PSK made by the suite may be left in the guest."""

import re

import pytest

from mptcp_nvme import ktap

from .conftest import SCRIPT_RUNTIME

pytestmark = pytest.mark.vm


def test_tls_selftests(stock_suite):
    run = stock_suite           # test_tls.py among the others
    run.assert_mptcp_skips_and_the_rest_passes(
        [r for r in run.results if "TLS" in r.description or "tls" in r.description.lower()])
    described = " | ".join(r.description for r in run.results)
    for expected in ("nvme discover --tls", "plaintext connect is refused when the port requires TLS",
                     "another secret fails the handshake", "TLS on 4 paths over tcp"):
        assert expected in described
    for leftovers in run.all_leftovers().values():
        assert leftovers["tlshd"] == [] and leftovers["nvme PSKs"] == [], leftovers
        assert not any(leftovers.values()), leftovers
    assert list(run.results_dir.glob("vm-*/tlshd/*-target.log")), "no tlshd log kept"


def test_script_scenario_over_tls(mptcp_nvme):
    run = mptcp_nvme("script", "tcp", "4", "round-robin", "0", "1", "--runtime", str(SCRIPT_RUNTIME))
    assert run.code == ktap.EXIT_PASS, run.stdout + run.stderr
    assert re.fullmatch(r"ok 1 - mptcp_nvme: nvme over tcp test # time=\d+ms",
                        run.stdout.splitlines()[-2])

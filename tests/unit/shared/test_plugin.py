"""The pytest plugin end to end on this machine (native mode, no VM): KTAP from real
pytest runs, descriptions, requirement skips and exit codes."""

import subprocess
import sys

from mptcp_nvme import ktap

CASES = '''
import pytest

@pytest.mark.parametrize("trtype", ["tcp", "mptcp"])
def test_matrix(trtype):
    """connect over {trtype}"""

def test_unique():
    """a test without variants"""
    assert False, "expected failure"

@pytest.mark.parametrize("trtype", ["mptcp"])
def test_single_variant(trtype):
    """nvme over {trtype} test"""

@pytest.mark.requires("tool:no-such-tool", "kconfig:NO_SUCH_OPTION")
def test_needs_things():
    """needs what this machine lacks"""
'''


def run_native(tmp_path, *args):
    (tmp_path / "test_cases.py").write_text(CASES)
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:terminal", "-p",
                           "no:cacheprovider", "--ktap", "-", "--results-dir",
                           str(tmp_path / "results"), *args, str(tmp_path / "test_cases.py")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    return done, ktap.parse(done.stdout)


def test_ktap_of_a_native_run(tmp_path):
    done, (planned, results) = run_native(tmp_path)
    assert planned == 5
    assert [(r.ok, r.description, r.directive) for r in results] == [
        (True, "mptcp_nvme: connect over tcp [tcp]", None),
        (True, "mptcp_nvme: connect over mptcp [mptcp]", None),
        (False, "mptcp_nvme: a test without variants", None),
        (True, "mptcp_nvme: nvme over mptcp test", None),
        (True, "mptcp_nvme: needs what this machine lacks", "SKIP"),
    ]
    assert results[4].reason == ("missing: tool no-such-tool not installed; "
                                 "CONFIG_NO_SUCH_OPTION not set")
    assert "# E       AssertionError: expected failure" in done.stdout
    assert done.stdout.splitlines()[-1] == (
        "# Totals: pass:3 fail:1 xfail:0 xpass:0 skip:1 error:0")
    assert (tmp_path / "results/leftovers.json").is_file()


def test_descriptions_do_not_change_with_k(tmp_path):
    _, (_, results) = run_native(tmp_path, "-k", "matrix and tcp and not mptcp")
    assert [r.description for r in results] == ["mptcp_nvme: connect over tcp [tcp]"]


def test_expect_all_features_turns_skips_into_failures(tmp_path):
    _, (_, results) = run_native(tmp_path, "--expect-all-features", "-k", "needs_things")
    assert not results[0].ok
    assert results[0].reason == "setup failed"

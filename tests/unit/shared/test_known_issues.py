"""Known kernel issues (host/results/known_issues.py): a matching failure is XFAIL with
its reason, an 'always' issue that did not happen is XPASS, everything else is left as
it was; a bad file is one clear error."""

import io

import pytest
from _pytest.reports import TestReport

from mptcp_nvme import ktap
from mptcp_nvme.channel import CRASH
from mptcp_nvme.errors import UsageError
from mptcp_nvme import known_issues
from mptcp_nvme.host.results.outcome import Outcome

NODE = "selftests/test_datapath.py::test_dm[tcp-2path]"
RCU_WARNING = ("WARNING: CPU: 1 PID: 312 at kernel/rcu/tree_plugin.h:331 "
               "rcu_note_context_switch+0x4d1/0x5f0\nVoluntary context switch within RCU "
               "read-side critical section!")
FILE = '''
[[issue]]
id = "dm-rq-nvme-tcp-rcu"
tests = ["selftests/test_datapath.py::test_dm*"]
match = "Voluntary context switch within RCU"
kernels = ["7.3*"]
reason = "request-based dm over nvme-tcp sleeps in lock_sock under RCU"
link = "docs/kernel-findings.md#dm-rq"

[[issue]]
id = "psk-left-linked"
tests = ["selftests/test_auth.py::test_concat*"]
match = "derived PSK .* left"
reason = "secure concatenation leaves its derived PSK in .nvme"
always = true
'''


def reports(call="passed", text="", crashes=(), nodeid=NODE):
    common = dict(nodeid=nodeid, location=("f", 1, "t"), keywords={}, sections=[])
    made = [TestReport(outcome="passed", longrepr=None, when="setup", duration=0.1,
                       user_properties=[], **common),
            TestReport(outcome=call, longrepr=text or None, when="call", duration=1.0,
                       user_properties=[(CRASH, c) for c in crashes], **common),
            TestReport(outcome="passed", longrepr=None, when="teardown", duration=0.1,
                       user_properties=[], **common)]
    return made


@pytest.fixture
def issues(tmp_path):
    path = tmp_path / "known-issues.toml"
    path.write_text(FILE)
    return known_issues.load(path)


def ktap_of(outcome):
    out = io.StringIO()
    outcome.render(ktap.KtapWriter(out))
    return out.getvalue()


def test_a_failure_the_issue_explains_is_xfail_with_its_reason(issues):
    made = reports("failed", "kernel log reports problems during call:\n" + RCU_WARNING)
    applied = known_issues.apply(made, issues, "7.3.4+deb13-amd64")
    assert applied.id == "dm-rq-nvme-tcp-rcu"
    outcome = Outcome.from_reports(made)
    assert (outcome.result, outcome.reason) == (
        "xfail", "known issue dm-rq-nvme-tcp-rcu: request-based dm over nvme-tcp sleeps in "
                 "lock_sock under RCU")
    text = ktap_of(outcome)
    assert "# known issue dm-rq-nvme-tcp-rcu (docs/kernel-findings.md#dm-rq): Voluntary" in text
    assert "# XFAIL known issue dm-rq-nvme-tcp-rcu" in text and "\nnot ok" not in "\n" + text


def test_a_crash_fingerprint_is_matched_too(issues):
    made = reports("failed", "assert False", crashes=(
        "warning: Voluntary context switch within RCU read-side critical section! "
        "fingerprint warning:rcu_note_context_switch",))
    assert known_issues.apply(made, issues, "7.3.4").id == "dm-rq-nvme-tcp-rcu"


@pytest.mark.parametrize("release, nodeid, text", [
    ("7.4.0", NODE, RCU_WARNING),                                   # another kernel
    ("7.3.4", "selftests/test_datapath.py::test_verify[tcp]", RCU_WARNING),  # another test
    ("7.3.4", NODE, "AssertionError: 3 != 4"),                      # another failure
    (None, NODE, RCU_WARNING),                                      # kernel unknown
])
def test_anything_else_stays_a_failure(issues, release, nodeid, text):
    made = reports("failed", text, nodeid=nodeid)
    assert known_issues.apply(made, issues, release) is None
    assert Outcome.from_reports(made).result == "fail"


def test_an_always_issue_that_did_not_happen_is_xpass_and_says_remove_it(issues):
    made = reports("passed", nodeid="selftests/test_auth.py::test_concat[tcp]")
    assert known_issues.apply(made, issues, "7.3.4").id == "psk-left-linked"
    outcome = Outcome.from_reports(made)
    assert outcome.result == "xpass" and outcome.failed
    assert any("did not happen on 7.3.4: if it is fixed, remove it" in d
               for d in outcome.diagnostics)
    assert ktap_of(outcome).splitlines()[-1].startswith("not ok 1 - ")


def test_a_sometimes_issue_that_did_not_happen_is_a_plain_pass(issues):
    made = reports("passed")
    assert known_issues.apply(made, issues, "7.3.4") is None
    assert Outcome.from_reports(made).result == "pass"


def test_a_skipped_test_is_no_xpass(issues):
    made = reports("skipped", ("f", 1, "Skipped: no tlshd"),
                   nodeid="selftests/test_auth.py::test_concat[tcp]")
    assert known_issues.apply(made, issues, "7.3.4") is None
    assert Outcome.from_reports(made).result == "skip"


def test_the_tree_has_a_valid_file_and_no_file_is_no_issue(tmp_path, monkeypatch):
    known_issues.load()                                   # the tree's own parses
    monkeypatch.setattr(known_issues, "DEFAULT_FILE", tmp_path / "absent.toml")
    assert known_issues.load() == ()


@pytest.mark.parametrize("text, message", [
    ("[[issue]]\nid = 'a'\n", "'match' must be a non-empty string"),
    ("[[issue]]\nid='a'\nmatch='x'\nreason='r'\n", "'tests' must be a list of patterns"),
    ("[[issue]]\nid='a'\nmatch='x'\nreason='r'\ntests=[]\n", "'tests' names no test"),
    ("[[issue]]\nid='a'\nmatch='('\nreason='r'\ntests=['t']\n", "'match' is not a regex"),
    ("[[issue]]\nid='a'\nmatch='x'\nreason='r'\ntests=['t']\nalways='yes'\n", "'always' must be"),
    ("[[issue]]\nid='a'\nmatch='x'\nreason='r'\ntests=['t']\nkernel=['7']\n", "unknown key(s) kernel"),
    ("[[issue]]\nid='a'\nmatch='x'\nreason='r'\ntests=['t']\n" * 2, "the id is used twice"),
    ("[issues]\n", "unknown table(s) issues"),
    ("[[issue]\n", "not a known-issues file"),
])
def test_a_bad_file_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "k.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=None) as err:
        known_issues.load(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value).strip()


def test_a_missing_file_given_on_the_command_line_is_an_error(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        known_issues.load(tmp_path / "nope.toml")

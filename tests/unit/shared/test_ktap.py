"""KTAP writer: exact lines in mptcp_nvme.sh's style, round-tripped through tap.py."""

import io

import pytest

from mptcp_nvme import ktap


def write(results, version=13):
    out = io.StringIO()
    writer = ktap.KtapWriter(out, version=version)
    writer.header(len(results))
    for args in results:
        writer.result(*args)
    writer.totals()
    return out.getvalue(), writer


def test_script_shape():
    text, writer = write([("nvme over tcp test", "pass", 25025.4),
                          ("nvme over mptcp test", "skip", None, "NVMe transport mptcp: EINVAL")])
    assert text.splitlines() == [
        "TAP version 13",
        "1..2",
        "ok 1 - mptcp_nvme: nvme over tcp test # time=25025ms",
        "ok 2 - mptcp_nvme: nvme over mptcp test # SKIP NVMe transport mptcp: EINVAL",
        "# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:1 error:0",
    ]
    assert writer.exit_code == ktap.EXIT_PASS


def test_ktap_version_1_header():
    text, _ = write([("a", "pass", 1)], version=1)
    assert text.splitlines()[0] == "KTAP version 1"


@pytest.mark.parametrize("outcomes, code", [
    (["pass", "skip"], ktap.EXIT_PASS),
    (["skip", "skip"], ktap.EXIT_SKIP),
    (["pass", "fail"], ktap.EXIT_FAIL),
    (["pass", "error"], ktap.EXIT_FAIL),
    (["xpass"], ktap.EXIT_FAIL),
    (["xfail", "pass"], ktap.EXIT_PASS),
])
def test_exit_codes(outcomes, code):
    _, writer = write([(f"t{i}", o, 1) for i, o in enumerate(outcomes)])
    assert writer.exit_code == code


def test_description_never_carries_a_hash_or_newline():
    line = ktap.format_result(3, "a # b\nc", "fail", 7)
    assert line == "not ok 3 - mptcp_nvme: a b c # time=7ms"


def test_round_trip_through_tap_parser():
    text, _ = write([("read", "pass", 1200), ("tls", "skip", None, "tool tlshd not installed"),
                     ("write", "fail", 30), ("boot", "error", 5, "TIMEOUT after 20s"),
                     ("known", "xfail", None, "bug 123")])
    planned, results = ktap.parse(text)
    assert planned == 5
    assert [(r.number, r.ok, r.directive) for r in results] == [
        (1, True, None), (2, True, "SKIP"), (3, False, None), (4, False, "ERROR"),
        (5, True, "XFAIL")]
    assert results[0].description == "mptcp_nvme: read"
    assert results[0].time_ms == 1200
    assert results[1].reason == "tool tlshd not installed"
    assert results[3].reason == "TIMEOUT after 20s"


def test_diagnostics_are_hash_prefixed():
    out = io.StringIO()
    ktap.KtapWriter(out).diag("line one\nline two")
    assert out.getvalue() == "# line one\n# line two\n"

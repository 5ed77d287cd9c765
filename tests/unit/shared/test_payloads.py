"""The typed payloads of the MATRIX and FAULT properties (mptcp_nvme/payloads.py): what
the guest writes is what the host reads, on real recorded outcomes."""

import json

import tests
from mptcp_nvme import payloads
from mptcp_nvme.channel import FAULT, MATRIX

RECORDED = json.loads((tests.DATA / "faults/faults.json").read_text())


def test_a_measurement_round_trips_as_its_property():
    measured = payloads.Measurement(read_mib=21.5, write_mib=19.25)
    name, value = measured.to_property()
    assert name == MATRIX and json.loads(value) == {"read_mib": 21.5, "write_mib": 19.25,
                                                    "transport": None, "sampling_s": None,
                                                    "link_bytes": None}
    assert payloads.Measurement.find([("ktap_diag", "x"), (name, value)]) == measured
    assert payloads.Measurement.find([("ktap_diag", "x")]) is None
    # an older guest's (no transport sampling) still reads
    assert payloads.Measurement.from_property('{"read_mib": 1.0, "write_mib": 2.0}') == \
        payloads.Measurement(1.0, 2.0)
    sampled = payloads.Measurement(1.0, 2.0, transport={"read": {"path1": {"retransmits": 3}}},
                                   sampling_s=0.25, link_bytes={"read": {"path1": 10, "path2": 0}})
    assert payloads.Measurement.find([sampled.to_property()]) == sampled


def test_every_recorded_fault_outcome_round_trips():
    """faults.json as a real run wrote it: each outcome read back as the dataclass and
    written again gives the same JSON (the host adds nodeid and result)."""
    for recorded in RECORDED:
        sent = {k: v for k, v in recorded.items() if k not in ("nodeid", "result")}
        outcome = payloads.FaultOutcome.from_json(sent)
        assert isinstance(outcome.impact, (payloads.FaultImpact, type(None)))
        name, value = outcome.to_property()
        assert name == FAULT
        again = payloads.FaultOutcome.from_property(value)
        assert again == outcome
        assert json.loads(json.dumps(again.to_json())) == {"live": None, "via": None,
                                                          **sent}      # older: neither field


def test_the_fault_table_reads_what_the_guest_sent(tmp_path):
    from _pytest.reports import TestReport
    from mptcp_nvme.host.results.faults_report import FaultsReport

    sent = {k: v for k, v in RECORDED[0].items() if k not in ("nodeid", "result")}
    outcome = payloads.FaultOutcome.from_json(sent)
    report = TestReport(nodeid="selftests/test_faults.py::test_fault[x]", location=("x", 1, "x"),
                        keywords={}, outcome="passed", longrepr=None, when="call",
                        user_properties=[outcome.to_property()])
    table = FaultsReport(tmp_path)
    table.pytest_runtest_logreport(report)
    assert json.loads(json.dumps(table.outcomes)) == [
        {"live": None, "via": None, **sent, "nodeid": report.nodeid, "result": "passed"}]

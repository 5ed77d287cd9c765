"""nvme-cli's answers to the blktests-parity commands, parsed from output captured in a
guest (nvme-cli 2.13, libnvme 1.13, nvmet of 7.3.4): tests/data/nvme-cli."""

import json

import pytest

from mptcp_nvme.errors import SetupError
from mptcp_nvme.guest.nvme import commands, fabrics
from tests import DATA as TEST_DATA

DATA = TEST_DATA / "nvme-cli"


def document(name):
    return json.loads((DATA / name).read_text())


@pytest.mark.parametrize("name, status, code, sct, sc", [
    # a read past the end: nvmet's file backend says so, its block backend fails it
    ("read-past-end-file-7.3.txt", "Capacity Exceeded", 0x6081, 0, 0x81),
    ("read-past-end-loop-7.3.txt", "Internal Error", 0x6006, 0, 0x06),
    ("resv-conflict-2.13.txt", "Reservation Conflict", 0x4083, 0, 0x83),
])
def test_a_failed_command_ends_with_its_nvme_status(name, status, code, sct, sc):
    found = commands.parse_status((DATA / name).read_text())
    assert (found.name, found.code) == (status, code)
    assert (found.status_code_type, found.status_code, found.do_not_retry) == (sct, sc, True)
    assert str(found) == f"{status} (0x{code:04x})"


def test_a_message_without_a_status_has_none():
    assert commands.parse_status("/dev/nvme0n1: No such file or directory") is None
    assert commands.parse_status("") is None


def test_namespace_descriptors_by_type():
    assert commands.ns_descriptors(document("ns-descs-uuid-nguid-2.13.json")) == {
        "uuid": "bfdf8542-919f-44de-af9d-1513e6bfbdd0",
        "nguid": "f0e1d2c3b4a5968778695a4b3c2d1e0f", "csi": "0"}
    # nvmet leaves out an all-zero NGUID (none was configured)
    assert set(commands.ns_descriptors(document("ns-descs-uuid-2.13.json"))) == {"uuid", "csi"}
    with pytest.raises(SetupError, match="unexpected nvme ns-descs output"):
        commands.ns_descriptors({"error": "Invalid Field in Command"})


def test_supported_commands_per_command_set():
    supported = commands.supported_commands(document("effects-log-nvmet-7.3.json"))
    assert set(supported) == {0, 2}              # NVM and zoned command sets
    nvm = supported[0]
    assert {0x02, 0x06, 0x09, 0x0a, 0x0c, 0x18} <= set(nvm["admin"])
    assert set(nvm["io"]) == {0x00, 0x01, 0x02, 0x08, 0x09, 0x0d, 0x0e, 0x11, 0x15}
    assert nvm["io"][0x01] == 3                  # write: LBCC | NCC
    assert 0x7d in supported[2]["io"]            # zone append, zoned set only
    with pytest.raises(SetupError, match="unexpected nvme effects-log output"):
        commands.supported_commands({"error": "x"})


def test_reservation_report_names_the_holder():
    report = commands.reservation_report(document("resv-report-held-2.13.json"))
    assert (report.generation, report.rtype) == (1, 1)
    assert report.registrants == (commands.Registrant(
        "d6d73f2e82af4180a3bc6484d4d91952", 0xabc, True),)
    assert report.holder.rkey == 0xabc
    with pytest.raises(SetupError, match="unexpected nvme resv-report output"):
        commands.reservation_report(document("resv-report-disabled-2.13.json"))


def test_discovery_log_carries_its_generation_counter():
    genctr, records = fabrics.parse_discovery_log(
        (DATA / "discover-genctr-2.13.json").read_text())
    assert genctr == 2
    assert [r.subtype for r in records] == ["current discovery subsystem", "nvme subsystem"]
    assert fabrics.parse_discovery((DATA / "discover-genctr-2.13.json").read_text()) == records

"""Fault definitions (guest/faults.py) and the fault table (host/results/faults_report.py) without
a VM; the report is drawn from outcomes recorded by real runs (tests/data/faults)."""

import dataclasses
import json
import struct
from types import SimpleNamespace

import pytest

from mptcp_nvme import vocabulary
from mptcp_nvme.guest import faults
from mptcp_nvme.guest.io import fiolog
from mptcp_nvme import topology
from mptcp_nvme.host.results import faults_report
from mptcp_nvme.payloads import FaultOutcome
import tests

DATA = tests.DATA / "faults"


def scene(trtype="tcp", links=2, controllers=2, endpoint_flags=("subflow",)):
    topo = topology.topology_for_paths(links)
    topo = topology.replace(topo, host=topology.replace(topo.host, endpoint_flags=endpoint_flags))
    return faults.Scene(SimpleNamespace(topology=topo), None, None, trtype, ["nvme0"] * controllers)


def test_the_options_choices_are_the_faults():
    assert vocabulary.FAULTS == tuple(faults.INJECTORS)


@pytest.mark.parametrize("fault, case, reason", [
    ("endpoint", scene("tcp"), "MPTCP endpoints carry no NVMe/TCP connection"),
    ("endpoint", scene("mptcp", endpoint_flags=()), "no MPTCP endpoints"),
    ("link-down", scene("mptcp", links=1), "one link"),
    ("blackhole", scene("tcp", links=1), "one link"),
    ("all-but-one-down", scene("tcp", links=1), "one link"),
])
def test_a_fault_that_cannot_apply_says_why(fault, case, reason):
    assert reason in faults.INJECTORS[fault]().unmet(case)


def test_every_fault_applies_to_two_links_over_mptcp_and_tcp():
    for name, fault in faults.INJECTORS.items():
        assert fault().unmet(scene("mptcp", controllers=1)) is None, name
        if name != "endpoint":
            assert fault().unmet(scene("tcp")) is None, name
    assert faults.Delete.controllers == 2 and faults.LinkDown.controllers == 1


def test_the_keep_alive_window_outlasts_the_keep_alive_timeout():
    assert faults.KeepAlive().window_s(scene()) > faults.TIMEOUTS["keep_alive_tmo"]
    assert faults.Reset().window_s(scene()) == 0


def test_link_faults_pick_the_last_link_or_all_but_it():
    three = scene(links=3)
    assert faults.LinkDown().links(three) == [3]
    assert faults.AllButOneDown().links(three) == [1, 2]
    assert [link.index for link in faults.KeepAlive().links(three)] == [1, 2, 3]


def observations(start_s, rates, step_s=faults.SAMPLE_S, sectors=0):
    """Observations every ``step_s`` from ``start_s``, moving ``rates`` sectors a second."""
    made = [faults.Observation(start_s, None, {}, {}, sectors)]
    for value in rates:
        sectors += value * step_s
        made.append(faults.Observation(made[-1].at_s + step_s, None, {}, {}, sectors))
    return made


def test_the_live_rate_is_sectors_a_second_over_the_window():
    samples = observations(10.0, [100, 100, 300, 300])
    assert faults.rate(samples) == pytest.approx(200)
    assert faults.rate(samples, since=11.0) == pytest.approx(300)
    assert faults.rate(samples[:1]) is None
    assert faults.rate([faults.Observation(1.0, None, {}, {})] * 2) is None


def test_the_run_stops_only_once_the_throughput_is_back_for_the_whole_window():
    # baseline 1000/s after a ramp at 100/s (left out); the heal at 20 s
    before = observations(0.0, [100, 100] + [1000] * 4)
    stalled = observations(20.0, [0] * 4 + [1000] * 2)
    assert not faults.back(before, stalled, healed_at=20.0)      # 2 s window half stalled
    recovered = observations(20.0, [0, 0] + [950] * 4)
    assert faults.back(before, recovered, healed_at=20.0)        # 950 >= 0.9 * 1000
    slow = observations(20.0, [0, 0] + [800] * 4)
    assert not faults.back(before, slow, healed_at=20.0)         # the log's 80 %, not live's
    early = observations(20.0, [1000] * 3)
    assert not faults.back(before, early, healed_at=20.0)        # before MIN_AFTER_S
    assert not faults.back([], recovered, healed_at=20.0)
    on = {"path1": 3, "path2": 6}
    with_links = [dataclasses.replace(o, subflows=9, links=on) for o in before]
    rejoining = [dataclasses.replace(o, subflows=3, links={"path1": 3}) for o in recovered]
    assert not faults.back(with_links, rejoining, healed_at=20.0)     # path2's subflows not back
    partly = [dataclasses.replace(o, subflows=6, links={"path1": 3, "path2": 3})
              for o in recovered]
    assert not faults.back(with_links, partly, healed_at=20.0)        # path2: 3 of its 6
    assert faults.missing_subflows(on, partly[-1].links) == {"path2": (6, 3)}
    rejoined = rejoining[:-1] + [dataclasses.replace(rejoining[-1], subflows=9, links=on)]
    assert faults.back(with_links, rejoined, healed_at=20.0)
    assert faults.missing_subflows(on, {"path1": 4, "path2": 6}) == {}
    assert not faults.back(observations(0.0, [0] * 6), recovered, healed_at=20.0)   # no I/O


def test_impact_times_are_made_relative_to_the_fault():
    impact = fiolog.FaultImpact(fault_start_s=1000.5, fault_end_s=1008.5, recovered_fraction=0.9,
                                baseline=7000.0, during=3500.0, longest_stall_s=1.2,
                                stall_start_s=1000.6, stall_at_end=False, recovery_s=0.4,
                                recovered=True, reason=None)
    shifted = faults._relative(impact, 1000.5)
    assert (shifted.fault_start_s, shifted.fault_end_s, shifted.stall_start_s) == (0, 8.0, 0.1)
    assert shifted.longest_stall_s == 1.2 and shifted.recovery_s == 0.4


def recorded():
    return json.loads((DATA / "faults.json").read_text())


def test_over_a_bond_one_link_faults_hit_the_active_slave_in_active_backup():
    """The other slaves of an active-backup bond carry nothing: the fault goes where the
    I/O is (the bond's active slave, as netlink reports it); every other mode's, the
    last link, as without a bond."""
    topo = topology.topology_for_paths(2)
    for mode, hit in (("active-backup", 1), ("balance-rr", 2), ("802.3ad", 2)):
        bonded = topology.bonded(topo, mode)
        network = SimpleNamespace(topology=bonded, bond_active_link=lambda: bonded.links[0])
        case = faults.Scene(network, None, None, "tcp", ["nvme0"])
        assert faults.LinkDown().links(case) == [hit], mode
        assert [link.index for link in faults.Blackhole().links(case)] == [hit], mode
        assert faults.LinkDown().unmet(case) is None


def test_a_bond_case_has_its_own_row_and_chart(tmp_path):
    plain = next(o for o in recorded() if o["trtype"] == "tcp" and o["timeline"])
    bond = dict(plain, paths=1, via="bond:active-backup")
    assert faults_report.row(bond)[1] == "tcp ×1 on bond:active-backup"
    assert faults_report.row(plain)[1] == f"tcp ×{plain['paths']}"
    assert faults_report.case_name(bond) == f"{plain['fault']}-tcp-bond-active-backup"
    faults_report.write_outputs([plain, bond], tmp_path)
    assert sorted(p.name for p in tmp_path.glob("faults/*.png")) == [
        f"{plain['fault']}-tcp-bond-active-backup.png", f"{plain['fault']}-tcp.png"]
    rows = [line for line in (tmp_path / "faults.md").read_text().splitlines()
            if line.startswith(f"| {plain['fault']} |")]
    assert [r.split(" | ")[1] for r in rows] == [f"tcp ×{plain['paths']}",
                                                 "tcp ×1 on bond:active-backup"]


def test_the_table_has_a_row_per_case_in_fault_order():
    outcomes = recorded()
    text = faults_report.markdown(outcomes)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| fault | transport × controllers | MiB/s before | longest stall")
    rows = [line.split(" | ")[0][2:] for line in lines[1:]]
    assert rows == sorted(rows, key=list(vocabulary.FAULTS).index)
    assert len(lines) - 1 == len(outcomes)


def test_a_row_shows_stall_recovery_errors_and_subflows():
    outcome = next(o for o in recorded() if o["trtype"] == "mptcp")
    cells = faults_report.row(outcome)
    assert cells[0] == outcome["fault"] and cells[1] == f"mptcp ×{outcome['paths']}"
    assert cells[3].endswith(" s") and cells[6] == "0"
    assert cells[7] == "/".join(str(outcome["subflows"][k]) for k in ("before", "during", "after"))
    failed = dict(outcome, impact=dict(outcome["impact"], recovered=False), verify_error="EILSEQ",
                  problem="recovery: not back")
    cells = faults_report.row(failed)
    assert (cells[5], cells[6], cells[-1]) == ("**no**", "verify", "recovery: not back")


def test_write_outputs_draws_a_timeline_per_case(tmp_path):
    outcomes = recorded()
    written = faults_report.write_outputs(outcomes, tmp_path)
    assert written[:2] == [tmp_path / "faults.json", tmp_path / "faults.md"]
    pngs = sorted(tmp_path.glob("faults/*.png"))
    assert len(pngs) == len([o for o in outcomes if o["timeline"]]) > 0
    data = pngs[0].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1080, 480)


def test_the_device_s_recovery_stands_when_the_log_is_too_uneven_to_show_it():
    """A loaded guest's 100 ms log (port over mptcp in a soak): 78 % at best after the
    heal, while the device's sectors were back to 90 % over 2 s: recovered, by the
    device, and said so; neither back: still the log's failure."""
    before = observations(0.0, [100, 100] + [1000] * 6)
    after = observations(20.0, [0, 0] + [950] * 4)
    live = faults.live_summary(before, after, fault_start=12.0, healed_at=20.0)
    assert live["back"] and live["at_s"] == 11.0
    assert live["baseline_mib_s"] == pytest.approx(1000 * 512 / 2**20, abs=0.01)
    slow = faults.live_summary(before, observations(20.0, [0, 0] + [700] * 4), 12.0, 20.0)
    assert not slow["back"]
    impact = fiolog.FaultImpact(fault_start_s=0.0, fault_end_s=8.0, recovered_fraction=0.8,
                                baseline=2900.0, during=0.0, longest_stall_s=8.2,
                                stall_start_s=0.1, stall_at_end=False, recovery_s=None,
                                recovered=False, reason="not back to 80% for 1 s before the log ends")
    outcome = FaultOutcome(fault="port", trtype="mptcp", paths=1, window_s=8.0, impact=impact,
                           timeline=(), written_mib=21.3, io_error=None, verify_error=None,
                           subflows={}, states_during=("connecting",), recovery_lines=(),
                           problem=None, live=live)
    [line] = [l for l in faults.describe(outcome) if l.startswith("device: ")]
    assert "back (the log's 100 ms samples did not hold 80% for 1 s: judged on the " \
           "device's sectors)" in line
    assert FaultOutcome.from_json(json.loads(json.dumps(outcome.to_json()))) == outcome

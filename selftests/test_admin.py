"""Admin commands through nvme-cli's JSON on each transport: what the host reads back is
what nvmet was configured with (model, serial, subsystem NQN, namespaces, size), every
path of the subsystem is live, and the health and error logs are clean."""

import pytest

from mptcp_nvme.guest import DIAG, target as nvmet

NVMET_MODEL = "Linux"          # nvmet's default attr_model


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(2,))
def test_admin_identify_logs_and_features(connection, nvme_host, target, trtype, paths,
                                          backing_device, record_property):
    """admin commands over {trtype}: id-ctrl, id-ns, list-subsys, smart-log, error-log, get-feature"""
    ctrl = f"/dev/{connection.controllers[0]}"
    serial = nvmet.Configfs().read(target.subsystem.path / "attr_serial")
    identify = nvme_host.admin(["id-ctrl", ctrl])
    assert identify["mn"].strip() == NVMET_MODEL, identify["mn"]
    assert identify["sn"].strip() == serial, (identify["sn"], serial)
    assert identify["subnqn"] == target.nqn
    assert identify["nn"] >= 1 and identify["cntlid"] > 0
    record_property(DIAG, f"id-ctrl: mn {identify['mn'].strip()!r} sn {serial} "
                          f"cntlid {identify['cntlid']} nn {identify['nn']}")

    namespace = nvme_host.admin(["id-ns", connection.device])
    block = 2 ** namespace["lbafs"][namespace["flbas"] & 0xF]["ds"]
    assert namespace["nsze"] * block == nvmet.device_size(backing_device), namespace["nsze"]

    subsystems = [s for host in nvme_host.admin(["list-subsys"])
                  for s in host.get("Subsystems", []) if s.get("NQN") == target.nqn]
    assert len(subsystems) == 1, subsystems
    paths_seen = subsystems[0]["Paths"]
    assert sorted(p["Name"] for p in paths_seen) == sorted(connection.controllers)
    assert {p["State"] for p in paths_seen} == {"live"}, paths_seen
    # sysfs 'transport' of an mptcp controller reads "tcp" on some revisions of the series
    # (and on the CI stand-in): the queue sockets (the connection fixture) prove it
    transports = {p["Transport"] for p in paths_seen}
    assert transports == {trtype} or (trtype == "mptcp" and transports == {"tcp"}), paths_seen
    record_property(DIAG, f"list-subsys: {len(paths_seen)} paths live, transport "
                          f"{'/'.join(sorted(transports))}")

    smart = nvme_host.admin(["smart-log", ctrl])
    assert smart["critical_warning"] == 0, smart
    errors = nvme_host.admin(["error-log", ctrl, "--log-entries=16"])
    assert not [e for e in errors.get("errors", []) if e.get("error_count")], errors

    # Number of Queues (feature 7): what the controller granted, 0-based, covers the
    # I/O queues the host connected (queue_count counts the admin queue too)
    queues = nvme_host.admin(["get-feature", ctrl, "--feature-id=7"])
    # nvme-cli 2.13: {"feature: 0x07": [{"name": "Number of Queues", "Current": "0x007f007f"}],
    #                 "Feature: 0x07": [{"Number of IO Completion Queues Allocated ...": 128, ...}]}
    current = next((entry["Current"] for value in queues.values() if isinstance(value, list)
                    for entry in value if isinstance(entry, dict) and "Current" in entry), None)
    assert current is not None, queues
    granted = (int(str(current), 0) & 0xFFFF) + 1
    io_queues = nvme_host.controller(connection.controllers[0]).queue_count - 1
    assert granted >= io_queues, (queues, io_queues)
    record_property(DIAG, f"get-feature 7: {granted} I/O queues granted, {io_queues} connected")

"""Header and data digests: connect asking for them, fio with crc32c verification, and
the proof on the wire: the ICReq of every queue asks for the digests and the target's
ICResp grants them (captured on the host's links), none when none were asked."""

import pytest

from mptcp_nvme.guest import DDGST, DIAG, HDGST, fio, IcCapture

DIGESTS = {"none": {}, "hdr+data": {"hdr_digest": True, "data_digest": True}}


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
@pytest.mark.parametrize("digests", DIGESTS)
def test_digest(digests, trtype, target, nvme_host, network, prove_transport, record_property):
    """digest {digests} over {trtype}: negotiated on every queue, verified writes intact"""
    options = DIGESTS[digests]
    expected = (HDGST if options.get("hdr_digest") else 0) | (DDGST if options.get("data_digest") else 0)
    ifnames = [link.host_ifname for link in network.topology.links]
    with IcCapture(network.host, ifnames, target.trsvcid) as capture:
        with nvme_host.connected(trtype, network.topology.traddrs[:1], target.trsvcid,
                                 target.nqn, options=options) as connection:
            capture.stop()
            [ctrl] = prove_transport(nvme_host, target.nqn) or [None]
            job = fio.FioJob(numjobs=1, iodepth=16, size=fio.VERIFY_SIZE).verifying()
            result = fio.run(job, connection.device, network.host.argv())
    granted, asked = capture.granted(), capture.asked()
    record_property(DIAG, f"ICReq dgst per queue {sorted(asked.values())}, ICResp dgst "
                          f"{sorted(granted.values())}; verified {result.read.io_bytes} bytes")
    assert ctrl is not None and len(granted) == len(ctrl.queues) == ctrl.queue_count, (granted, ctrl)
    assert set(asked.values()) == set(granted.values()) == {expected}, (asked, granted)
    assert result.read.io_bytes == result.write.io_bytes > 0

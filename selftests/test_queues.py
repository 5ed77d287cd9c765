"""Queue layouts: nr_io_queues, nr_write_queues and nr_poll_queues on connect, the counts
read back from the kernel (sysfs queue_count and its "mapped default/read/poll queues"
line), every queue's socket proven to be of the transport (for MPTCP: an MPTCP
connection with its subflows, for every queue type), and polled I/O over poll queues."""

import re

import pytest

from mptcp_nvme.guest import DIAG, fio, KernelLog

LAYOUTS = {  # name: (connect options, mapped default/read/poll queues)
    "io1": ({"nr_io_queues": 1}, (1, 0, 0)),
    "io2-write1": ({"nr_io_queues": 2, "nr_write_queues": 1}, (1, 2, 0)),
    "io1-poll1": ({"nr_io_queues": 1, "nr_poll_queues": 1}, (1, 0, 1)),
}
MAPPED = re.compile(r"(nvme\d+): mapped (\d+)/(\d+)/(\d+) default/read/poll queues")


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_queue_layout(layout, trtype, target, nvme_host, network, prove_transport,
                      record_property):
    """queue layout {layout} over {trtype}: counts read back, every queue's socket proven"""
    options, mapped = LAYOUTS[layout]
    log = KernelLog()
    try:
        with nvme_host.connected(trtype, network.topology.traddrs[:1], target.trsvcid,
                                 target.nqn, options=options) as connection:
            [name] = connection.controllers
            lines = log.new_lines()
            [ctrl] = prove_transport(nvme_host, target.nqn) or [None]
            queue_count = nvme_host.controller(name).queue_count
            job = fio.FioJob(numjobs=1, iodepth=16, size=fio.VERIFY_SIZE)
            if "nr_poll_queues" in options:
                job = job.replace(ioengine="pvsync2", hipri=True, iodepth=1)
            result = fio.run(job.verifying(), connection.device, network.host.argv())
    finally:
        log.close()
    found = [tuple(map(int, m.groups()[1:])) for m in map(MAPPED.search, lines)
             if m and m[1] == name]
    record_property(DIAG, f"{name}: queue_count {queue_count}, mapped {found}, "
                          f"{len(ctrl.queues) if ctrl else 0} queue sockets; "
                          f"verified {result.read.io_bytes} bytes")
    assert queue_count == 1 + sum(options.values()), queue_count
    assert found == [mapped], found
    assert ctrl is not None and len(ctrl.queues) == queue_count, ctrl
    assert result.read.io_bytes == result.write.io_bytes > 0

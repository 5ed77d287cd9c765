"""ANA: nvmet gives the namespace's group a state per port (optimized, non-optimized,
inaccessible) and the host's multipath iopolicies follow it: no I/O through an
inaccessible path, a non-optimized one only when no optimized path is left, and a state
change in the middle of verified writes is followed without an error. Which path carried
the I/O is read from the paths' own block statistics (under MPTCP every controller's
subflows use every link, so link bytes cannot tell)."""

import pytest

from mptcp_nvme.guest import DIAG, fio, quick, wait_for

QUIET = 0.02          # a path the iopolicy must avoid carries at most this share
MID_IO_QUIET = 0.05   # after a change mid-I/O: what was in flight on the old path completes
JOB = fio.FioJob(rw="randrw", numjobs=1, iodepth=16, bs="16k", runtime=3)


def set_states(target, nvme_host, disks, states):
    """Port i's ANA state to states[i]; wait until the host's paths read them."""
    for port, state in zip(target.ports, states):
        port.set_ana_state(state)
    expected = dict(zip(disks.values(), states))
    wait_for(lambda: all(nvme_host.ana_state(d) == s for d, s in expected.items()),
             f"the host's paths to read ANA states {states}", 15)


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(2,),
                    iopolicy=("numa", "round-robin", "queue-depth"))
def test_ana_states_steer_io(request, connection, nvme_host, network, target, iopolicy, trtype,
                             record_property):
    """ANA states steer {iopolicy} over {trtype}: inaccessible never used, non-optimized only as the last resort"""
    nvme_host.set_iopolicy(connection.nqn, iopolicy)
    disks = nvme_host.path_disks(connection.nqn)
    first, second = sorted(disks)
    assert len(disks) == 2, disks
    prefix = network.host.argv()
    for states, avoided in ((("optimized", "non-optimized"), second),
                            (("inaccessible", "non-optimized"), first),
                            (("optimized", "inaccessible"), second)):
        set_states(target, nvme_host, disks, states)
        before = fio.sectors_per_path(disks)
        fio.run(quick.fio_job(request.config, JOB), connection.device, prefix)
        spread = fio.path_shares(before, fio.sectors_per_path(disks))
        record_property(DIAG, f"ANA {'/'.join(states)}: I/O per path "
                              + " ".join(f"{c}={s:.0%}" for c, s in sorted(spread.items())))
        assert spread[avoided] <= QUIET, f"ANA {states}: {avoided} carried {spread[avoided]:.0%}"

    # a change in the middle of verified writes: from the first path to the second
    set_states(target, nvme_host, disks, ("optimized", "non-optimized"))
    job = fio.FioJob(numjobs=1, iodepth=16, bs="16k").verifying_while_writing(6, backlog=16)
    with fio.start(job, connection.device, prefix) as running:
        fio.wait_for_io(running, connection.device)
        set_states(target, nvme_host, disks, ("non-optimized", "optimized"))
        before = fio.sectors_per_path(disks)
        result = fio.finish(running, job, connection.device, prefix, flush=False)
    spread = fio.path_shares(before, fio.sectors_per_path(disks))
    record_property(DIAG, f"ANA change mid-I/O: verified {result.read.io_bytes} bytes; after "
                          "it I/O per path " + " ".join(f"{c}={s:.0%}" for c, s in sorted(spread.items())))
    assert result.read.io_bytes > 0 and result.error == 0
    assert spread[second] >= 1 - MID_IO_QUIET, spread

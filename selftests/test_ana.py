"""ANA: nvmet gives the namespace's group a state per port (optimized, non-optimized,
inaccessible) and the host's multipath iopolicies follow it: no I/O through an
inaccessible path, a non-optimized one only when no optimized path is left, and a state
change in the middle of verified writes is followed without an error. Which path carried
the I/O is read from the paths' own block statistics (under MPTCP every controller's
subflows use every link, so link bytes cannot tell)."""

import pytest

from mptcp_nvme.guest import DIAG, fio, sock_diag, wait_for

QUIET = 0.02          # a path the iopolicy must avoid carries at most this share
MID_IO_QUIET = 0.05   # after a change mid-I/O: what was in flight on the old path completes
# Which path carries I/O needs blocks, not seconds: 1024 of them (16 MiB of 16 KiB), so a
# path carrying QUIET's 2 % did 20 or more.
JOB = fio.FioJob(rw="randrw", numjobs=1, iodepth=16, bs="16k", runtime=None, time_based=False,
                 size="16m")


def ana_paths(target, nvme_host, nqn):
    """{controller: (its nvmet port, its path's hidden disk)}, the port found by the
    controller's address (controller names do not follow the ports' order) among the
    path addresses the ports serve (a single port listens on the wildcard)."""
    ports = {sock_diag.normalize(path): port for path, port in zip(target.addresses, target.ports)}
    disks = nvme_host.path_disks(nqn)
    return {c.name: (ports[sock_diag.normalize(c.address["traddr"])], disks[c.name])
            for c in nvme_host.controllers(nqn) if c.name in disks}


def set_states(nvme_host, paths, states):
    """Each path's port to its ANA state ({controller: state}); wait until the host's
    paths read them."""
    for ctrl, state in states.items():
        paths[ctrl][0].set_ana_state(state)
    wait_for(lambda: all(nvme_host.ana_state(paths[c][1]) == s for c, s in states.items()),
             f"the host's paths to read ANA states {states}", 15)


def shares_text(spread):
    return " ".join(f"{c}={s:.0%}" for c, s in sorted(spread.items()))


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(2,),
                    iopolicy=("numa", "round-robin", "queue-depth"))
def test_ana_states_steer_io(connection, nvme_host, network, target, iopolicy, trtype,
                             record_property):
    """ANA states steer {iopolicy} over {trtype}: inaccessible never used, non-optimized only as the last resort"""
    nvme_host.set_iopolicy(connection.nqn, iopolicy)
    # each controller's path disk appears once its namespace scan is done, which on
    # lossy links can come after the connection is up
    wait_for(lambda: len(ana_paths(target, nvme_host, connection.nqn)) == len(network.topology.links),
             f"a path disk for each of the {len(network.topology.links)} controllers", 30)
    paths = ana_paths(target, nvme_host, connection.nqn)
    if len(paths) < 2:
        pytest.skip(f"ANA steering needs at least 2 paths; the topology has {len(paths)}")
    disks = {ctrl: disk for ctrl, (_, disk) in paths.items()}
    first, *rest = paths            # the first path against every other one

    def states(first_state, rest_state):
        return {first: first_state, **{ctrl: rest_state for ctrl in rest}}
    prefix = network.host.argv()
    for chosen, avoided in ((states("optimized", "non-optimized"), rest),
                            (states("inaccessible", "non-optimized"), [first]),
                            (states("optimized", "inaccessible"), rest)):
        set_states(nvme_host, paths, chosen)
        before = fio.sectors_per_path(disks)
        fio.run(JOB, connection.device, prefix)
        spread = fio.path_shares(before, fio.sectors_per_path(disks))
        named = "/".join(chosen.values())
        record_property(DIAG, f"ANA {named}: I/O per path {shares_text(spread)}")
        for ctrl in avoided:
            assert spread[ctrl] <= QUIET, f"ANA {named}: {ctrl} carried {spread[ctrl]:.0%}"

    # a change in the middle of verified writes: from the first path to the others
    set_states(nvme_host, paths, states("optimized", "non-optimized"))
    # backlog 4: reads back even where a debug kernel under TCG writes a few blocks a second
    job = fio.FioJob(numjobs=1, iodepth=16, bs="16k").verifying_while_writing(6, backlog=4)
    with fio.start(job, connection.device, prefix) as running:
        fio.wait_for_io(running, connection.device)
        set_states(nvme_host, paths, states("non-optimized", "optimized"))
        before = fio.sectors_per_path(disks)
        result = fio.finish(running, job, connection.device, prefix, flush=False)
    spread = fio.path_shares(before, fio.sectors_per_path(disks))
    record_property(DIAG, f"ANA change mid-I/O: verified {result.read.io_bytes} bytes; after "
                          f"it I/O per path {shares_text(spread)}")
    assert result.read.io_bytes > 0 and result.error == 0
    assert sum(spread[ctrl] for ctrl in rest) >= 1 - MID_IO_QUIET, spread

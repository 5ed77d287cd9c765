"""The data path of mptcp_nvme.sh: discover, connect, multipath iopolicy and fio, plus the
evidence the script never gathered: which links the traffic really used."""

import pytest

from mptcp_nvme.guest import (
    DIAG, dm_mpath, fio, judge_link_limited, proof, quick, SetupError, stream, target as nvmet,
    topology)

# Short fio runs keep the matrix affordable under TCG: 2 s moves tens of MiB, thousands of
# I/Os, enough for the shares per path; the script's own scenario (selftests/test_script.py)
# runs the full 10 s, the benchmarks (selftests/bench/) measure throughput.
MATRIX_FIO = fio.FioJob(runtime=2)
MIN_SHARE = 0.10        # every path carries at least this share of the bytes when spread
# A joined link carrying less than this of the bytes carries none of the data: an idle
# subflow's or controller's own segments (handshakes, keep-alives, window updates) are
# orders of magnitude less.
IDLE_SHARE = 0.01
# Over MPTCP on links that are not rate-limited the scheduler, not the links, decides the
# split (under TCG the guest's CPU is the bottleneck, more so on a debug kernel): every
# link must carry a part, not a fair one: more than an idle subflow (IDLE_SHARE).
# ci/bench-datapath measures the aggregation on rate-limited links.
NUMA_SHARE = 0.80       # numa keeps (nearly) everything on one path
SOCKET_RATE_MBIT = 50   # per link for the socket test: well below what the guest can push
# The stream over several links must carry its best link's achievable rate and at least
# this share of what the other links add (4 x 50 Mbit/s: 50 + 50 = twice one link).
AGGREGATE_SHARE = 1 / 3


def format_shares(shares):
    return " ".join(f"{name}={share:.0%}" for name, share in shares.items())


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1, 4))
def test_discover(target, nvme_host, network):
    """discover the subsystem over {trtype} on every path"""
    for link, port in zip(network.topology.links, target.ports):
        records = nvme_host.discover(target.trtype, link.traddr, target.trsvcid)
        ours = [(r.portid, r.trsvcid) for r in records if r.subnqn == target.nqn]
        assert ours == [(port.port_id, str(target.trsvcid))], (
            f"discovery at {link.traddr}: {records}")


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1, 4))
def test_connect(connection, nvme_host, network, trtype, paths, prove_transport):
    """connect one controller per path over {trtype}: every queue's socket is {trtype}"""
    controllers = nvme_host.controllers(connection.nqn)
    assert len(controllers) == paths
    assert {c.state for c in controllers} == {"live"}
    assert {c.address["traddr"] for c in controllers} == set(network.topology.traddrs)
    assert connection.device.startswith("/dev/nvme")
    # The transport from the kernel's sockets, not sysfs 'transport' (some revisions of
    # the series read "tcp" there for mptcp controllers).
    proven = prove_transport.proven[connection.nqn]     # by the connection fixture
    assert len(proven) == paths and {c.transport for c in proven} == {trtype}, proven
    assert all(len(c.queues) == c.queue_count >= 2 for c in proven), proven


@pytest.mark.matrix(trtype=("mptcp",), paths=(1,))
@pytest.mark.mptcp_fallback_expected
def test_mptcp_connect_to_tcp_port_is_caught(network, backing_device, trtype, nvme_host):
    """connect over mptcp to a tcp-only port: the queues fell back to TCP, and the proof says so"""
    target = nvmet.Target(backing_device, "tcp", network.topology.traddrs,
                          in_target_netns=network.target.enter)
    links = network.topology.links
    with target:
        try:
            with nvme_host.connected("mptcp", network.topology.traddrs, target.trsvcid,
                                     target.nqn):
                with pytest.raises(proof.TransportProofFailed,
                                   match=r"MPTCP fallback\), not mptcp"):
                    proof.prove_queues(network.host, nvme_host, target.nqn, "mptcp", links,
                                          timeout=3)
        except SetupError as err:        # a kernel that refuses the fallback is right too
            assert "connect" in str(err), err


@pytest.mark.matrix(trtype=("tcp",), paths=(2,), iopolicy=("numa", "round-robin", "queue-depth"))
def test_iopolicy(connection, nvme_host, iopolicy):
    """set the {iopolicy} iopolicy and read it back"""
    nvme_host.set_iopolicy(connection.nqn, iopolicy)
    assert nvme_host.iopolicy(connection.nqn) == iopolicy


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1, 4), iopolicy=("numa", "round-robin"))
def test_fio(request, connection, nvme_host, network, trtype, paths, iopolicy, record_property):
    """fio randread then randwrite over {trtype}"""
    nvme_host.set_iopolicy(connection.nqn, iopolicy)
    disks = nvme_host.path_disks(connection.nqn)
    before, sectors = network.link_counters(), fio.sectors_per_path(disks)
    results = fio.run_script_sequence(connection.device, quick.fio_job(request.config, MATRIX_FIO),
                                      network.host.argv())
    shares = network.link_bytes_since(before).shares()
    by_path = fio.path_shares(sectors, fio.sectors_per_path(disks))
    read, write = results["randread"].read, results["randwrite"].write
    record_property(DIAG, f"READ {read.mib_per_s:.1f} MiB/s, WRITE {write.mib_per_s:.1f} MiB/s, "
                          f"bytes per path: {format_shares(shares)}")
    assert read.io_bytes > 0 and write.io_bytes > 0
    if paths == 1:
        return
    if trtype == "tcp" and iopolicy == "numa":
        assert max(shares.values()) >= NUMA_SHARE, f"numa spread I/O: {format_shares(shares)}"
    elif trtype == "mptcp" and iopolicy == "numa":
        # one controller carries the I/O: the links its connections join carry it
        # (topology's rules: an IPv4 connection joins no IPv6 link), unless the subflow
        # limit leaves the choice of links to the path manager
        busiest = max(by_path, key=by_path.get)
        links = {link.name: link for link in network.topology.links}
        link = links[proof.link_of(nvme_host.controller(busiest).address["traddr"],
                                   network.topology.links, "target")]
        joins, limit = topology.join_candidates(network.topology, link)
        if topology.subflows_capped(network.topology, link):
            record_property(DIAG, f"no per-path floor: the endpoints ask for {len(joins)} "
                                  f"joins, the subflow limit allows {limit}, on links of the "
                                  f"kernel's choosing")
        else:
            joined = {host for host, _ in topology.expected_subflows(network.topology, link)}
            low = {name: share for name, share in shares.items()
                   if name in joined and share < IDLE_SHARE}
            assert not low, (f"numa I/O went by {busiest} over {link.name}, whose connections "
                             f"join {', '.join(sorted(joined))}: {format_shares(low)} below "
                             f"{IDLE_SHARE:.0%} ({format_shares(shares)})")
    else:
        floor = IDLE_SHARE if trtype == "mptcp" else MIN_SHARE
        assert min(shares.values()) >= floor, (
            f"a path carried less than {floor:.0%}: {format_shares(shares)}")


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(2,))
def test_fio_verify(connection, network, record_property):
    """crc32c-verified writes over {trtype} read back intact"""
    job = fio.FioJob(numjobs=2, iodepth=32, size=fio.VERIFY_SIZE).verifying()
    result = fio.run(job, connection.device, network.host.argv())
    record_property(DIAG, f"verified {result.read.io_bytes} bytes")
    assert result.read.io_bytes == result.write.io_bytes > 0


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(2,), multipath=("dm",))
def test_dm_multipath_fio_verify(multipath, iopolicy, connection, nvme_host, network,
                                 record_property):
    """dm-multipath ({iopolicy} selector) over {trtype} paths, native multipath off: verified writes read back intact, every path carrying I/O"""
    if multipath != "dm":           # --multipath native|bond on the command line
        pytest.skip(f"dm-multipath's case: not for --multipath {multipath}")
    paths = nvme_host.path_devices(connection.nqn)
    assert len(paths) == len(connection.controllers), paths
    before = {path: fio.sectors_moved(path) for path in paths}
    job = fio.FioJob(numjobs=2, iodepth=32, size=fio.VERIFY_SIZE).verifying()
    with dm_mpath.Multipath("mptcp-nvme-dm", paths, iopolicy) as mpath:
        result = fio.run(job, mpath.device, network.host.argv(), flush=False)
        status = mpath.status()
    moved = {path: [now - then for now, then in zip(fio.sectors_moved(path), before[path])]
             for path in paths}
    record_property(DIAG, f"dm status: {status}")
    record_property(DIAG, f"verified {result.read.io_bytes} bytes; sectors read/written per "
                          "path: " + " ".join(f"{p}={r}/{w}" for p, (r, w) in moved.items()))
    assert result.read.io_bytes == result.write.io_bytes > 0
    failed = [p for p in dm_mpath.parse_status(status) if not p.active or p.fail_count]
    assert not failed, f"dm-multipath failed paths: {failed}"
    idle = [path for path, (read, written) in moved.items() if not (read and written)]
    assert not idle, f"the {iopolicy} selector left {', '.join(idle)} without reads or writes"


@pytest.fixture
def rate_limited_network(make_network, topo):
    """``topo`` with every link at SOCKET_RATE_MBIT: links, not the guest's CPU, limit
    the stream, so spreading over the paths shows in the throughput."""
    return make_network(topology.with_rate(topo, f"{SOCKET_RATE_MBIT}mbit"))


def joinable(topo, pairs=()):
    """The links a connection over the first one gets subflows on: topology's rules, or
    where the subflow limit leaves the choice to the kernel (topology.subflows_capped),
    the host links of the subflows it made (``pairs``, (host link, target link))."""
    if pairs and topology.subflows_capped(topo, topo.links[0]):
        return {host for host, _ in pairs}
    return {host for host, _ in topology.expected_subflows(topo, topo.links[0])}


def aggregate_floor(topo, pairs=()):
    """(Mbit/s the stream must reach, how that was derived) from the achievable rates
    (topology.achievable_bit: the rate, or the loss-limited rate of one flow) of the
    links it joins (joinable)."""
    used = joinable(topo, pairs)
    rates = sorted((topology.achievable_bit(link) / 1e6 for link in topo.links
                    if link.name in used), reverse=True)
    best, others = rates[0], sum(rates[1:])
    floor = best + AGGREGATE_SHARE * others
    return floor, (f"the best link's {best:.0f} Mbit/s + {AGGREGATE_SHARE:.2g} of the other "
                   f"joined links' {others:.0f} Mbit/s (achievable rates of "
                   + "/".join(f"{r:.0f}" for r in rates) + " Mbit/s)")


def share_floors(topo, pairs=()):
    """{link name: the least share of the stream's bytes it must carry}: MIN_SHARE for
    links alike, in proportion to its achievable rate against the joined links' mean;
    0 for a link the connection gets no subflow on (joinable)."""
    used = joinable(topo, pairs)
    rates = {link.name: topology.achievable_bit(link) for link in topo.links}
    mean = sum(rates[name] for name in used) / len(used)
    return {name: MIN_SHARE * rate / mean if name in used else 0.0
            for name, rate in rates.items()}


@pytest.mark.matrix(paths=(1, 4))
@pytest.mark.requires("kconfig:MPTCP")
def test_mptcp_socket(request, rate_limited_network, paths, record_property):
    """an MPTCP stream joins a subflow per path and aggregates them"""
    topo = rate_limited_network.topology
    joins = len(topology.expected_subflows(topo, topo.links[0])) - 1
    result = stream.measure(rate_limited_network, seconds=quick.seconds(request.config, 4),
                            expect_subflows=joins)
    record_property(DIAG, f"MPTCP stream {result.mbit_per_s:.0f} Mbit/s over {paths} x "
                          f"{SOCKET_RATE_MBIT} Mbit/s links, {result.subflows} joined subflows, "
                          f"MPJoin {result.mpjoin}, "
                          f"bytes per path: {format_shares(result.link_shares)}")
    assert result.subflows >= joins
    used = joinable(topo, result.pairs)
    idle = {name: share for name, share in result.link_shares.items()
            if name in used and share < IDLE_SHARE}
    assert not idle, (f"joined links that carried none of the stream: {format_shares(idle)} "
                      f"({format_shares(result.link_shares)})")
    problems = []
    floors = share_floors(topo, result.pairs)
    if short := {name: share for name, share in result.link_shares.items()
                 if share < floors[name]}:
        problems.append(f"links below their share (MIN_SHARE {MIN_SHARE:.0%} scaled by the "
                        f"link's achievable rate): {format_shares(short)} of "
                        f"{format_shares(floors)}")
    if len(used) > 1:
        floor, derived = aggregate_floor(topo, result.pairs)
        if result.mbit_per_s < floor:
            problems.append(f"{result.mbit_per_s:.0f} Mbit/s over {paths} links is below "
                            f"{floor:.0f} Mbit/s: {derived}")
    judge_link_limited(problems, [link for link in topo.links if link.name in used],
                       result.mbit_per_s * 1e6)

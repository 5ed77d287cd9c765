"""The cells of ``mptcp-nvme matrix`` (not part of the suite: pytest collects test_*.py;
the matrix runs this file and takes medians over the repeats).

- ``test_cell``: mptcp_nvme.sh's scenario for one (trtype, paths, iopolicy, loss) and one
  repeat: the script's 4 links at --rate (its loss profile scaled to the rate, or the
  links of --topology), a port and a controller per path, the iopolicy, then the
  script's fio job, randread then randwrite for --runtime seconds each. With
  --multipath dm, native multipath is off and a dm-multipath device over the paths,
  with a path selector in place of the iopolicy, carries the fio job; with --multipath
  bond, the links are one Linux bond per side in a bonding mode (in place of the
  iopolicy) and one controller on its address carries it.
- ``test_bare``: the same cell set up and measured from a plain shell (bare_cell.sh), for
  calibration: the framework's cells must reach 0.95 of it.
- ``test_raw``: the same fio job on the backing loop device, no fabric: the raw baseline.

Each passing case records its READ and WRITE MiB/s under the MATRIX property.
"""

import tempfile
from contextlib import nullcontext
from pathlib import Path

import pytest

from mptcp_nvme.guest import (
    DIAG, TLS_NEEDS, fio, Measurement, proc, require, topology, transport)

BARE_CELL = Path(__file__).with_name("bare_cell.sh")


def pytest_generate_tests(metafunc):
    if "repeat" in metafunc.fixturenames:
        count = metafunc.config.getoption("repeat")
        metafunc.parametrize("repeat", range(count), ids=[f"r{i}" for i in range(count)])
    if "sampled" in metafunc.fixturenames and metafunc.config.getoption("sampling_cost"):
        metafunc.parametrize("sampled", (True, False), ids=("sampled", "unsampled"),
                             indirect=True)


@pytest.fixture
def sampled(request):
    """Whether the cell samples tcp_info: each way with --sampling-cost (a parameter),
    else unless --no-transport-sampling."""
    if hasattr(request, "param"):
        return request.param
    return not request.config.getoption("no_transport_sampling")


@pytest.fixture
def job(request):
    return fio.FioJob(runtime=request.config.getoption("runtime"))


@pytest.fixture
def topo(request, paths, loss):
    """The script's 4 links whatever ``paths`` is, or --topology's scaled to --rate; a
    bond cell's bonded in its mode (the ``iopolicy`` parameter)."""
    topology_file = request.config.getoption("topology")
    rate = request.config.getoption("rate")
    if topology_file:
        found = topology.scaled_to(topology.load_topology(topology_file),
                                   rate or topology.SCRIPT_RATE)
    else:
        found = topology.script_topology(paths, loss=loss, rate=rate,
                                         loss_links=request.config.getoption("loss_links"))
    params = request.node.callspec.params
    if params.get("multipath") == "bond":
        found = topology.bonded(found, params["iopolicy"])
    return found


def record(record_property, results, sampler=None, topo=None, moved=None):
    read, write = results["randread"].read, results["randwrite"].write
    assert read.io_bytes > 0 and write.io_bytes > 0, "fio moved no data"
    found = sampler.by_direction(topo) if sampler and not sampler.error else None
    record_property(*Measurement(
        read.mib_per_s, write.mib_per_s,
        transport=found and {direction: {name: link.to_dict() for name, link in per.items()}
                             for direction, per in found.items()},
        sampling_s=sampler and round(sampler.busy_s, 3),
        link_bytes=moved and {"read": moved.of("rx"), "write": moved.of("tx")}).to_property())
    record_property(DIAG, f"READ: bw={read.mib_per_s:.2f}MiB/s WRITE: bw={write.mib_per_s:.2f}MiB/s")
    if sampler and sampler.error:
        record_property(DIAG, f"transport sampling stopped: {sampler.error}")
    for direction, per in (found or {}).items():
        record_property(DIAG, f"{direction} transport: "
                              + "; ".join(link.describe() for link in per.values()))


def sampling(sampled, network, port):
    """A TransportSampler of the cell's queue connections, or none (``sampled`` false)."""
    if not sampled:
        return nullcontext()
    return transport.TransportSampler(network, port)


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(4,), iopolicy=("numa",), loss=(False,))
def test_cell(request, multipath, trtype, paths, iopolicy, loss, repeat, sampled, network,
              nvme_host, job, record_property, prove_transport, multipath_device):
    """matrix cell {trtype} {paths} {multipath} {iopolicy} {loss:d}"""
    tls = request.config.getoption("tls")
    if tls:
        require(request.config, *TLS_NEEDS, f"tls:{trtype}")
    make_target = request.getfixturevalue("make_target")
    traddrs = network.topology.traddrs[:paths]
    if tls:
        request.getfixturevalue("tls_transport")
        for name in ("psks", "tlshd"):
            request.getfixturevalue(name)
        target = make_target(addresses=traddrs, nqn=request.getfixturevalue("subsysnqn"),
                             tls=True, treq="required")
        nvme_host = request.getfixturevalue("tls_host")
    else:
        target = make_target(addresses=traddrs)
    with nvme_host.connected(trtype, traddrs, target.trsvcid, target.nqn, tls=tls) as conn:
        prove_transport(nvme_host, target.nqn)
        if multipath == "native":
            nvme_host.set_iopolicy(target.nqn, iopolicy)
            assert nvme_host.iopolicy(target.nqn) == iopolicy
        with multipath_device(nvme_host, conn) as device, \
                sampling(sampled, network, target.trsvcid) as sampler:
            before = network.link_counters()
            results = fio.run_script_sequence(device, job, prefix=network.host.argv(),
                                              flush=multipath == "native")
            moved = network.link_bytes_since(before)
    record(record_property, results, sampler, network.topology, moved)
    # the links' own counters: which slave of a bond, which link of a path, carried it
    record_property(DIAG, f"bytes per link: reads {moved.format('rx')}, "
                          f"writes {moved.format('tx')}")


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(4,), iopolicy=("round-robin",), loss=(False,))
def test_bare(request, trtype, paths, iopolicy, loss, repeat, job, record_property):
    """matrix calibration {trtype} {paths} {iopolicy} {loss:d} from a plain shell"""
    require(request.config, *topology.REQUIREMENTS, "tool:nvme", "tool:fio", "tool:ip",
            "tool:tc", "tool:losetup")
    if request.config.getoption("topology") or request.config.getoption("tls"):
        pytest.skip("the bare calibration cell is the script's own topology, without TLS")
    if loss and request.config.getoption("loss_links"):
        pytest.skip("the bare calibration cell puts one netem on every link: no --loss-links")
    links = topology.script_topology(paths, loss=loss, rate=request.config.getoption("rate")).links
    netem = links[0].netem
    fio_argv = [arg.replace("=randread", "=@RW@") for arg in job.argv("@DEV@")]
    with tempfile.TemporaryDirectory(prefix="bare-cell-") as out:
        argv = ["bash", str(BARE_CELL), trtype, str(paths), iopolicy, str(len(links)),
                str(netem.rate_bit), str(netem.delay_us), f"{netem.loss_pct:g}", out,
                "--", *fio_argv]
        done = proc.cmd(argv, fail=False, timeout=2 * job.runtime + 180)
        assert done.ret == 0, f"bare_cell.sh exit {done.ret}: {done.stderr.strip()[-800:]}"
        results = {rw: fio.parse(Path(out, f"{rw}.json").read_text())
                   for rw in fio.SCRIPT_SEQUENCE}
    record(record_property, results)


def test_raw(repeat, backing_device, job, record_property):
    """matrix raw: the fio job on the backing device, no fabric"""
    results = fio.run_script_sequence(backing_device, job, flush=False)
    record(record_property, results)

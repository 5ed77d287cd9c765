"""mptcp_nvme.sh's scenario, one test: ``mptcp-nvme script [trtype] [path] [iopolicy] [loss] [tls]``.

Defaults are the script's (mptcp, 1 path, numa, no loss, no TLS); the command line
options --trtype/--paths/--iopolicy/--loss/--tls choose others. Reports like the script:
``ok 1 - mptcp_nvme: nvme over <trtype> test # time=...ms``.
"""

import pytest

from mptcp_nvme import fio
from mptcp_nvme.plugin import DIAG, require
from mptcp_nvme.tls import TLS_NEEDS


@pytest.mark.matrix(trtype=("mptcp",), paths=(1,), iopolicy=("numa",), loss=(False,))
def test_script(request, trtype, network, iopolicy, record_property):
    """nvme over {trtype} test"""
    tls = request.config.getoption("tls")
    if tls:
        require(request.config, *TLS_NEEDS)
    target = request.getfixturevalue("tls_target" if tls else "target")
    nvme_host = request.getfixturevalue("tls_host" if tls else "nvme_host")
    first = network.topology.links[0]
    records = nvme_host.discover(trtype, first.traddr, target.trsvcid, tls=tls)
    assert any(r.subnqn == target.nqn for r in records), f"{target.nqn} not in the discovery log"
    traddrs = network.topology.traddrs
    with nvme_host.connected(trtype, traddrs, target.trsvcid, target.nqn, tls=tls) as connection:
        nvme_host.set_iopolicy(target.nqn, iopolicy)
        assert nvme_host.iopolicy(target.nqn) == iopolicy
        results = fio.run_script_sequence(connection.device, prefix=network.host.argv())
    read, write = results["randread"].read, results["randwrite"].write
    record_property(DIAG, f"READ: bw={read.mib_per_s:.1f}MiB/s WRITE: bw={write.mib_per_s:.1f}MiB/s")

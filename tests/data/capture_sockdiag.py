"""Capture raw sock_diag dump replies (MPTCP sockets, TCP sockets with ULP info) of the
calling network namespace, for tests/unit/guest/test_net_evidence.py:

    python3 tests/data/capture_sockdiag.py PREFIX     # writes PREFIX-mptcp.bin, PREFIX-tcp.bin

Run it where the sockets to capture live (e.g. inside a guest's host netns with NVMe
controllers connected, or next to a local MPTCP socket pair)."""

import socket
import sys

from pyroute2.netlink import NETLINK_SOCK_DIAG, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.diag import SOCK_DIAG_BY_FAMILY

from mptcp_nvme.guest.net import sock_diag
from mptcp_nvme.vocabulary import IPPROTO_MPTCP


def capture(protocol):
    data = b""
    for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
        req = sock_diag.dump_request(protocol, family)
        req["header"]["type"] = SOCK_DIAG_BY_FAMILY
        req["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        req["header"]["sequence_number"] = seq
        req.encode()
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
            nl.send(req.data)
            while True:
                chunk = nl.recv(1 << 16)
                data += chunk
                if int.from_bytes(chunk[4:6], "little") in (2, 3):    # NLMSG_ERROR, NLMSG_DONE
                    break
    return data


if __name__ == "__main__":
    prefix = sys.argv[1]
    for name, protocol in (("mptcp", IPPROTO_MPTCP), ("tcp", socket.IPPROTO_TCP)):
        with open(f"{prefix}-{name}.bin", "wb") as out:
            out.write(capture(protocol))

"""What the kernel says about the sockets under an NVMe controller: MPTCP or plain TCP,
fallen back or not, and which links the subflows of each queue use.

Read from sock_diag (inet_diag) in the host's network namespace:
- MPTCP sockets (protocol IPPROTO_MPTCP, given in INET_DIAG_REQ_PROTOCOL) with their
  struct mptcp_info: the connection token and the fallback flag;
- TCP sockets with their ULP info: an MPTCP subflow carries the token of the MPTCP
  socket it belongs to (MPTCP_SUBFLOW_ATTR_TOKEN_LOC).
An NVMe queue is one connected socket from the controller's source address to its
traddr:trsvcid; the controller's sysfs ``queue_count`` says how many there must be
(admin + I/O queues). The transport of a controller is decided by these sockets,
never by sysfs ``transport``, which reads "tcp" for revisions of the series that
reuse the TCP controller ops.

Also the MPTcpExt counters of /proc/net/netstat: per test deltas, with the fallback
and checksum-error counters that fail a test.
"""

import dataclasses
import ipaddress
import socket
import struct

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, nla
from pyroute2.netlink.diag import (SOCK_DIAG_BY_FAMILY, SS_ESTABLISHED, DiagSocket,
                                   MarshalDiag, inet_diag_msg, inet_diag_req)

from mptcp_nvme.vocabulary import IPPROTO_MPTCP

INET_DIAG_INFO_EXT = 1 << (2 - 1)          # idiag_ext bit of INET_DIAG_INFO (= 2)
MPTCP_INFO_FLAG_FALLBACK = 1 << 0
# struct mptcp_info up to mptcpi_bytes_acked (include/uapi/linux/mptcp.h): 6 x u8,
# 2 bytes hole, flags, token, write_seq, snd_una, rcv_nxt, local_addr_used,
# local_addr_max, csum_enabled, hole, retransmits, bytes_retrans, sent, received, acked
_MPTCP_INFO = struct.Struct("=6B2xII3Q3BxI4Q")
_MPTCP_INFO_NAMES = ("subflows", "add_addr_signal", "add_addr_accepted", "subflows_max",
                     "add_addr_signal_max", "add_addr_accepted_max", "flags", "token",
                     "write_seq", "snd_una", "rcv_nxt", "local_addr_used", "local_addr_max",
                     "csum_enabled", "retransmits", "bytes_retrans", "bytes_sent",
                     "bytes_received", "bytes_acked")
# struct tcp_info (include/uapi/linux/tcp.h) up to tcpi_delivery_rate: 8 x u8 (state,
# ca_state, retransmits, probes, backoff, options, wscales, flags), 24 x u32 (rto .. 
# total_retrans), pacing_rate, max_pacing_rate, bytes_acked, bytes_received (u64),
# segs_out, segs_in, notsent_bytes, min_rtt, data_segs_in, data_segs_out (u32),
# delivery_rate (u64). Times in us, rates in bytes/s.
_TCP_INFO = struct.Struct("=8B24I4Q6IQ")
_TCP_INFO_NAMES = ("state", "ca_state", "retransmits", "probes", "backoff", "options",
                   "wscale", "flags", "rto", "ato", "snd_mss", "rcv_mss", "unacked", "sacked",
                   "lost", "retrans", "fackets", "last_data_sent", "last_ack_sent",
                   "last_data_recv", "last_ack_recv", "pmtu", "rcv_ssthresh", "rtt", "rttvar",
                   "snd_ssthresh", "snd_cwnd", "advmss", "reordering", "rcv_rtt", "rcv_space",
                   "total_retrans", "pacing_rate", "max_pacing_rate", "bytes_acked",
                   "bytes_received", "segs_out", "segs_in", "notsent_bytes", "min_rtt",
                   "data_segs_in", "data_segs_out", "delivery_rate")


class _mptcp_diag_req(inet_diag_req):
    """inet_diag_req_v2 with the attribute that carries a protocol number above 255."""

    nla_map = (("INET_DIAG_REQ_NONE", "none"), ("INET_DIAG_REQ_BYTECODE", "hex"),
               ("INET_DIAG_REQ_SK_BPF_STORAGES", "hex"), ("INET_DIAG_REQ_PROTOCOL", "uint32"))


class _ulp_info(nla):
    nla_map = (("INET_ULP_INFO_UNSPEC", "none"), ("INET_ULP_INFO_NAME", "asciiz"),
               ("INET_ULP_INFO_TLS", "hex"), ("INET_ULP_INFO_MPTCP", "subflow_info"))

    class subflow_info(nla):
        nla_map = (("MPTCP_SUBFLOW_ATTR_UNSPEC", "none"),
                   ("MPTCP_SUBFLOW_ATTR_TOKEN_REM", "uint32"),
                   ("MPTCP_SUBFLOW_ATTR_TOKEN_LOC", "uint32"),
                   ("MPTCP_SUBFLOW_ATTR_RELWRITE_SEQ", "uint32"),
                   ("MPTCP_SUBFLOW_ATTR_MAP_SEQ", "uint64"),
                   ("MPTCP_SUBFLOW_ATTR_MAP_SFSEQ", "uint32"),
                   ("MPTCP_SUBFLOW_ATTR_SSN_OFFSET", "uint32"),
                   ("MPTCP_SUBFLOW_ATTR_MAP_DATALEN", "uint16"),
                   ("MPTCP_SUBFLOW_ATTR_FLAGS", "uint32"),
                   ("MPTCP_SUBFLOW_ATTR_ID_REM", "uint8"),
                   ("MPTCP_SUBFLOW_ATTR_ID_LOC", "uint8"),
                   ("MPTCP_SUBFLOW_ATTR_PAD", "none"))


def _nla_map(info_type, ulp_type):
    """inet_diag_msg's attributes with INET_DIAG_INFO and INET_DIAG_ULP_INFO retyped."""
    retyped = {"INET_DIAG_INFO": info_type, "INET_DIAG_ULP_INFO": ulp_type}
    return tuple((name, retyped.get(name, kind)) for name, kind in inet_diag_msg.nla_map)


class _mptcp_diag_msg(inet_diag_msg):
    nla_map = _nla_map("hex", "hex")           # INET_DIAG_INFO is a struct mptcp_info


class _tcp_diag_msg(inet_diag_msg):
    nla_map = _nla_map("hex", "ulp_info")      # tcp_info is not needed, the ULP info is
    ulp_info = _ulp_info


def _marshal(message_class):
    marshal = MarshalDiag()
    marshal.msg_map = {socket.AF_INET: message_class, socket.AF_INET6: message_class}
    return marshal


@dataclasses.dataclass(frozen=True)
class SocketRecord:
    """One connected socket as sock_diag reports it (addresses normalised: an
    IPv4-mapped IPv6 address is written as the IPv4 address)."""

    protocol: str                  # "mptcp" or "tcp"
    local: str
    lport: int
    remote: str
    rport: int
    bound_ifindex: int = 0         # SO_BINDTODEVICE, 0 when unbound
    token: int | None = None       # MPTCP: the connection's local token
    fallback: bool = False         # MPTCP: fell back to plain TCP
    subflow_of: int | None = None  # TCP: the local token of the MPTCP socket it serves
    tcp_info: dict | None = dataclasses.field(default=None, compare=False)  # TCP: parse_tcp_info

    @property
    def is_subflow(self):
        return self.subflow_of is not None


def normalize(address):
    """'::ffff:10.1.1.1' -> '10.1.1.1'; other addresses in their canonical text."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip)


def _unhex(value):
    return bytes.fromhex(value.replace(":", "")) if isinstance(value, str) else bytes(value or b"")


def parse_mptcp_info(raw):
    """struct mptcp_info (as bytes) -> dict of its fields up to mptcpi_bytes_acked."""
    raw = bytes(raw).ljust(_MPTCP_INFO.size, b"\0")
    return dict(zip(_MPTCP_INFO_NAMES, _MPTCP_INFO.unpack_from(raw)))


def parse_tcp_info(raw):
    """struct tcp_info (as bytes) -> dict of its fields up to tcpi_delivery_rate; None
    for a struct too short to hold them (a kernel older than 4.9)."""
    raw = bytes(raw)
    if len(raw) < _TCP_INFO.size:
        return None
    return dict(zip(_TCP_INFO_NAMES, _TCP_INFO.unpack_from(raw)))


def _record(msg, protocol):
    common = dict(protocol=protocol, local=normalize(msg["idiag_src"]), lport=msg["idiag_sport"],
                  remote=normalize(msg["idiag_dst"]), rport=msg["idiag_dport"],
                  bound_ifindex=msg["idiag_if"])
    if protocol == "mptcp":
        info = msg.get_attr("INET_DIAG_INFO")
        if info is None:
            return SocketRecord(**common)
        fields = parse_mptcp_info(_unhex(info))
        return SocketRecord(**common, token=fields["token"],
                            fallback=bool(fields["flags"] & MPTCP_INFO_FLAG_FALLBACK))
    info = msg.get_attr("INET_DIAG_INFO")
    common["tcp_info"] = parse_tcp_info(_unhex(info)) if info is not None else None
    ulp = msg.get_attr("INET_DIAG_ULP_INFO")
    if ulp is not None and ulp.get_attr("INET_ULP_INFO_NAME") == "mptcp":
        subflow = ulp.get_attr("INET_ULP_INFO_MPTCP")
        if subflow is not None:
            return SocketRecord(**common, subflow_of=subflow.get_attr("MPTCP_SUBFLOW_ATTR_TOKEN_LOC"))
    return SocketRecord(**common)


ESTABLISHED = 1 << SS_ESTABLISHED
TCP_TIME_WAIT = 6
# Every TCP state (1 ESTABLISHED .. 12 NEW_SYN_RECV) but TIME_WAIT, which a closed
# connection rightly keeps for a minute: what a leak check counts.
LIVE_STATES = ((1 << 13) - 2) & ~(1 << TCP_TIME_WAIT)


def dump_request(protocol, family, states=ESTABLISHED):
    """The sock_diag request for sockets of ``protocol`` (IPPROTO_MPTCP or IPPROTO_TCP)
    and ``family`` in ``states`` (a bit per TCP state), with INET_DIAG_INFO (and ULP info
    for TCP)."""
    req = _mptcp_diag_req() if protocol == IPPROTO_MPTCP else inet_diag_req()
    req["sdiag_family"] = family
    req["idiag_states"] = states
    req["idiag_ext"] = INET_DIAG_INFO_EXT
    if protocol == IPPROTO_MPTCP:
        req["sdiag_protocol"] = 0
        req["attrs"] = [("INET_DIAG_REQ_PROTOCOL", IPPROTO_MPTCP)]
    else:
        req["sdiag_protocol"] = socket.IPPROTO_TCP
    return req


def _marshal_for(protocol):
    return _marshal(_mptcp_diag_msg if protocol == IPPROTO_MPTCP else _tcp_diag_msg)


def _records(messages, protocol):
    name = "mptcp" if protocol == IPPROTO_MPTCP else "tcp"
    return [_record(msg, name) for msg in messages
            if msg.get("idiag_family") in (socket.AF_INET, socket.AF_INET6)]


def parse_dump(data, protocol):
    """SocketRecords of the raw bytes of a sock_diag dump reply (tests: captured replies)."""
    return _records(_marshal_for(protocol).parse(data), protocol)


def _dump(protocol, states):
    records = []
    with DiagSocket() as diag:
        diag.set_marshal(_marshal_for(protocol))
        diag.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            replies = diag.nlm_request(dump_request(protocol, family, states),
                                       SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP)
            records += _records(replies, protocol)
    return records


def sockets(states=ESTABLISHED):
    """Every MPTCP and TCP socket in ``states`` (default: established) of the calling
    thread's network namespace (enter it first: Netns.enter())."""
    return _dump(IPPROTO_MPTCP, states) + _dump(socket.IPPROTO_TCP, states)

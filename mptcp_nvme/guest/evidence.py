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

import contextlib
import dataclasses
import ipaddress
import select
import socket
import struct
import threading

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, nla
from pyroute2.netlink.diag import (SOCK_DIAG_BY_FAMILY, SS_ESTABLISHED, DiagSocket,
                                   MarshalDiag, inet_diag_msg, inet_diag_req)

from mptcp_nvme.poll import PollTimeout, wait_for

IPPROTO_MPTCP = 262
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


@dataclasses.dataclass(frozen=True)
class QueueSocket:
    """The socket of one NVMe queue and, for MPTCP, its subflows."""

    socket: SocketRecord
    subflows: tuple                # SocketRecord of each TCP subflow

    @property
    def transport(self):
        if self.socket.protocol == "tcp":
            return "tcp"
        return "tcp (MPTCP fallback)" if self.socket.fallback else "mptcp"


@dataclasses.dataclass(frozen=True)
class ControllerSockets:
    """An NVMe controller's queues as the kernel's sockets show them."""

    name: str
    traddr: str
    trsvcid: int
    queue_count: int               # sysfs queue_count: admin + I/O queues
    queues: tuple                  # QueueSocket per socket found
    # Several controllers to one target port (several subsystems on it) cannot be told
    # apart by their sockets: then their queue_counts summed, else 0.
    port_queue_count: int = 0

    @property
    def transport(self):
        """'mptcp', 'tcp', 'tcp (MPTCP fallback)', 'none' or 'mixed: ...'."""
        kinds = sorted({queue.transport for queue in self.queues})
        if not kinds:
            return "none"
        return kinds[0] if len(kinds) == 1 else "mixed: " + ", ".join(kinds)


def port_key(address):
    """(traddr, trsvcid, source address) of a controller's sysfs address dict: what its
    sockets share with every other controller to the same target port."""
    src = normalize(address["src_addr"]) if address.get("src_addr") else None
    return normalize(address["traddr"]), int(address["trsvcid"]), src


def controller_sockets(name, address, queue_count, records, port_queue_count=0):
    """The queues of controller ``name`` (sysfs address dict) among ``records``; with
    ``port_queue_count`` (see ControllerSockets) the sockets of its port's others too."""
    traddr, trsvcid, src = port_key(address)
    subflows = {}
    for record in records:
        if record.is_subflow:
            subflows.setdefault(record.subflow_of, []).append(record)
    queues = []
    for record in records:
        if record.is_subflow or record.remote != traddr or record.rport != trsvcid:
            continue
        if src is not None and record.local != src:
            continue
        own = subflows.get(record.token, []) if record.protocol == "mptcp" else []
        queues.append(QueueSocket(record, tuple(sorted(own, key=lambda s: (s.local, s.lport)))))
    queues.sort(key=lambda q: q.socket.lport)
    return ControllerSockets(name, traddr, trsvcid, queue_count, tuple(queues), port_queue_count)


def link_of(address, links, side="host"):
    """The name of the link whose ``side`` ("host" or "target") address is ``address``
    (else the address)."""
    for link in links:
        ip = link.host_addr.ip if side == "host" else link.target_addr.ip
        if normalize(str(ip)) == normalize(address):
            return link.name
    return address


def subflow_pairs(subflows, links):
    """Sorted (host link, target link) of each subflow: which link it leaves from and
    which target address it goes to (topology.expected_subflows() speaks the same)."""
    return sorted((link_of(s.local, links), link_of(s.remote, links, "target"))
                  for s in subflows)


def coverage_problems(ctrl, links, trtype):
    """Why ``ctrl`` is not what ``trtype`` must give, as a list of sentences ([] = fine).

    mptcp: queue_count sockets, each an MPTCP connection that did not fall back, each
    with subflows from every link in ``links``. tcp: queue_count plain TCP sockets."""
    problems = []
    if ctrl.port_queue_count and len(ctrl.queues) != ctrl.port_queue_count:
        problems.append(f"{ctrl.name}: {len(ctrl.queues)} queue sockets to "
                        f"{ctrl.traddr}:{ctrl.trsvcid}, the queue_count of the controllers "
                        f"to that port sums to {ctrl.port_queue_count}")
    elif not ctrl.port_queue_count and len(ctrl.queues) != ctrl.queue_count:
        problems.append(f"{ctrl.name}: {len(ctrl.queues)} queue sockets to "
                        f"{ctrl.traddr}:{ctrl.trsvcid}, sysfs queue_count is {ctrl.queue_count}")
    wanted = {link.name for link in links}
    for queue in ctrl.queues:
        where = f"{ctrl.name} queue socket :{queue.socket.lport}"
        if queue.transport != trtype:
            problems.append(f"{where} is {queue.transport}, not {trtype}")
            continue
        if trtype == "mptcp":
            used = {link_of(s.local, links) for s in queue.subflows}
            if missing := sorted(wanted - used):
                problems.append(f"{where} has {len(queue.subflows)} subflows, none from "
                                f"{', '.join(missing)}")
    return problems


def describe(ctrl, links):
    """One line: the controller's queues, their transport and subflows per link."""
    counts = [len(q.subflows) for q in ctrl.queues]
    line = (f"{ctrl.name} -> {ctrl.traddr}:{ctrl.trsvcid}: {len(ctrl.queues)}/"
            f"{ctrl.port_queue_count or ctrl.queue_count} queue sockets"
            + (" (with the other controllers to this port)" if ctrl.port_queue_count else "")
            + f", {ctrl.transport}")
    if any(counts):
        per_link = {}
        for queue in ctrl.queues:
            for sub in queue.subflows:
                name = link_of(sub.local, links)
                per_link[name] = per_link.get(name, 0) + 1
        line += (f", subflows per queue {'/'.join(map(str, counts))}, per link "
                 + " ".join(f"{name}={n}" for name, n in sorted(per_link.items())))
    return line


# --- MPTcpExt counters ----------------------------------------------------------

FALLBACK_COUNTERS = ("MPCapableFallbackACK", "MPCapableFallbackSYNACK", "MPFallbackTokenInit",
                     "DSSCorruptionFallback", "MPCapableDataFallback", "DssFallback",
                     "SimultConnectFallback", "FallbackFailed", "InfiniteMapTx", "InfiniteMapRx")
ERROR_COUNTERS = ("DataCsumErr",)
REPORTED_PREFIXES = ("MPCapable", "MPJoin", "DSS", "Dss", "DataCsum", "MPFallback", "Infinite")


def parse_netstat(text, group="MPTcpExt"):
    """{name: value} of one group of /proc/net/netstat (name line, value line)."""
    lines = text.splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith(group + ":"):
            return {n: int(v) for n, v in zip(names.split()[1:], values.split()[1:])}
    return {}


def mptcp_counters():
    """MPTcpExt of the calling thread's network namespace."""
    with open("/proc/thread-self/net/netstat") as netstat:
        return parse_netstat(netstat.read())


def counter_delta(before, after):
    return {name: after[name] - before.get(name, 0) for name in after
            if after[name] != before.get(name, 0)}


def reported(delta):
    """The deltas worth a KTAP diagnostic: handshakes, joins, fallbacks, DSS, checksums."""
    return {name: value for name, value in sorted(delta.items())
            if name.startswith(REPORTED_PREFIXES) or name in FALLBACK_COUNTERS}


def counter_problems(delta):
    """Fallbacks and checksum errors in a delta, as sentences."""
    return [f"MPTcpExt {name} +{delta[name]}" for name in (*FALLBACK_COUNTERS, *ERROR_COUNTERS)
            if delta.get(name, 0) > 0]


# --- polling the proof -------------------------------------------------------------

class TransportProofFailed(AssertionError):
    """The queue sockets of a subsystem are not what its trtype must give."""


def prove_queues(netns, host, nqn, trtype, links, timeout=20.0, interval=0.25):
    """ControllerSockets of every controller of ``nqn``, polled (MPTCP subflows join
    after the connect returns) until each matches ``trtype``: every queue an MPTCP
    connection without fallback and with subflows from every one of ``links``, or a
    plain TCP socket. TransportProofFailed lists what was still wrong at the deadline."""
    state = {"ctrls": [], "problems": ["no controller"]}

    def settled():
        with netns.enter():
            records = sockets()
        shared = {}
        for other in host.every_controller():
            key = port_key(other.address) if other.address.get("traddr") else None
            shared.setdefault(key, []).append(other.queue_count or 0)
        ctrls = [controller_sockets(c.name, c.address, c.queue_count or 0, records,
                                    sum(shared[key]) if len(shared[key := port_key(c.address)]) > 1
                                    else 0)
                 for c in host.controllers(nqn)]
        problems = [p for ctrl in ctrls for p in coverage_problems(ctrl, links, trtype)]
        state.update(ctrls=ctrls, problems=problems if ctrls else ["no controller"])
        return not state["problems"]

    try:
        wait_for(settled, f"the queue sockets of {nqn} to be {trtype}", timeout, interval)
    except PollTimeout:
        raise TransportProofFailed(
            f"after {timeout:g}s the queue sockets of {nqn} are not all {trtype}: "
            + "; ".join(state["problems"])
            + "\n" + "\n".join(describe(ctrl, links) for ctrl in state["ctrls"])) from None
    return state["ctrls"]


# --- the NVMe/TCP connection handshake on the wire ------------------------------------

ICREQ, ICRESP = 0x00, 0x01          # NVMe/TCP PDU types of the initialize connection pair
HDGST, DDGST = 0x01, 0x02           # their dgst field: header and data digest enabled
_ETH_P_ALL = 0x0003


@dataclasses.dataclass(frozen=True)
class IcPdu:
    """An ICReq (host to target) or ICResp seen on a link: which way, its TCP ports, the
    digests it asks for (ICReq) or grants (ICResp)."""

    kind: int
    sport: int
    dport: int
    dgst: int


def parse_ic_pdu(frame):
    """The IcPdu at the start of an Ethernet frame's TCP payload, or None."""
    if len(frame) < 14:
        return None
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == 0x0800:
        ihl = (frame[14] & 0x0F) * 4
        if frame[23] != socket.IPPROTO_TCP:
            return None
        tcp = 14 + ihl
    elif ethertype == 0x86DD:
        if frame[20] != socket.IPPROTO_TCP:     # no extension headers on these links
            return None
        tcp = 14 + 40
    else:
        return None
    if len(frame) < tcp + 20:
        return None
    payload = frame[tcp + (frame[tcp + 12] >> 4) * 4:]
    # common header: type, flags, hlen (128 for both), pdo, plen; dgst at byte 11
    if len(payload) < 16 or payload[0] not in (ICREQ, ICRESP) or payload[2] != 128:
        return None
    if int.from_bytes(payload[4:8], "little") != 128:
        return None
    return IcPdu(payload[0], int.from_bytes(frame[tcp:tcp + 2], "big"),
                 int.from_bytes(frame[tcp + 2:tcp + 4], "big"), payload[11])


class IcCapture:
    """Capture the ICReq/ICResp PDUs to or from ``trsvcid`` on ``ifnames`` of ``netns``
    (AF_PACKET) while the block runs: the proof of what a connection negotiated."""

    def __init__(self, netns, ifnames, trsvcid):
        self.netns, self.ifnames, self.trsvcid = netns, list(ifnames), int(trsvcid)
        self.pdus, self._socks, self._stop = [], [], threading.Event()
        self._thread = None

    def __enter__(self):
        with self.netns.enter():
            for ifname in self.ifnames:
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
                sock.bind((ifname, 0))
                sock.settimeout(0.2)
                self._socks.append(sock)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self):
        while not self._stop.is_set():
            ready, _, _ = select.select(self._socks, [], [], 0.2)
            for sock in ready:
                with contextlib.suppress(OSError):       # closed by stop()
                    pdu = parse_ic_pdu(sock.recv(65535))
                    if pdu and self.trsvcid in (pdu.sport, pdu.dport):
                        self.pdus.append(pdu)

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join()
        for sock in self._socks:
            sock.close()
        self._socks = []

    def __exit__(self, *exc_info):
        self.stop()

    def granted(self):
        """{host port: dgst} of every ICResp seen: one per queue connection."""
        return {pdu.dport: pdu.dgst for pdu in self.pdus if pdu.kind == ICRESP}

    def asked(self):
        """{host port: dgst} of every ICReq seen."""
        return {pdu.sport: pdu.dgst for pdu in self.pdus if pdu.kind == ICREQ}

"""The NVMe/TCP connection handshake on the wire: ICReq/ICResp PDUs captured on a
link with a packet socket (header and data digest negotiation)."""

import contextlib
import dataclasses
import select
import socket
import threading




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

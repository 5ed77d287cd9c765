"""The transport proof: which sockets carry each NVMe controller's queues (one per
queue, from sock_diag), MPTCP or plain TCP, fallen back or not, and which links their
subflows use; prove_queues() polls until every queue is what its trtype must give."""

import dataclasses


from mptcp_nvme.poll import PollTimeout, wait_for
from mptcp_nvme.topology import family_joinable, join_candidates, subflows_capped
from mptcp_nvme.guest.net.sock_diag import SocketRecord, normalize, sockets


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


def coverage_problems(ctrl, links, trtype, topology=None):
    """Why ``ctrl`` is not what ``trtype`` must give, as a list of sentences ([] = fine).

    mptcp: queue_count sockets, each an MPTCP connection that did not fall back, each
    with subflows from every link in ``links`` that its family can join (an IPv4
    connection has none on an IPv6 link: topology.family_joinable); unless the
    ``topology``'s endpoints ask for more joins than its subflow limit allows
    (topology.subflows_capped): then each has as many subflows as the limit allows, on
    links of the path manager's choosing. tcp: queue_count plain TCP sockets."""
    problems = []
    if ctrl.port_queue_count and len(ctrl.queues) != ctrl.port_queue_count:
        problems.append(f"{ctrl.name}: {len(ctrl.queues)} queue sockets to "
                        f"{ctrl.traddr}:{ctrl.trsvcid}, the queue_count of the controllers "
                        f"to that port sums to {ctrl.port_queue_count}")
    elif not ctrl.port_queue_count and len(ctrl.queues) != ctrl.queue_count:
        problems.append(f"{ctrl.name}: {len(ctrl.queues)} queue sockets to "
                        f"{ctrl.traddr}:{ctrl.trsvcid}, sysfs queue_count is {ctrl.queue_count}")
    initial = next((link for link in links if normalize(link.traddr) == normalize(ctrl.traddr)),
                   None)
    wanted = {link.name for link in links
              if initial is None or family_joinable(initial, link)}
    capped = (topology is not None and initial is not None and bool(links)
              and subflows_capped(topology, initial))
    joins, limit = join_candidates(topology, initial) if capped else ((), 0)
    for queue in ctrl.queues:
        where = f"{ctrl.name} queue socket :{queue.socket.lport}"
        if queue.transport != trtype:
            problems.append(f"{where} is {queue.transport}, not {trtype}")
            continue
        if trtype == "mptcp" and capped:
            if len(queue.subflows) < 1 + limit:
                problems.append(f"{where} has {len(queue.subflows)} subflows; the endpoints ask "
                                f"for {len(joins)} joins, the limit allows {limit}: "
                                f"{1 + limit} subflows")
        elif trtype == "mptcp":
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


# --- polling the proof -------------------------------------------------------------

class TransportProofFailed(AssertionError):
    """The queue sockets of a subsystem are not what its trtype must give."""


def prove_queues(netns, host, nqn, trtype, links, timeout=20.0, interval=0.25, topology=None):
    """ControllerSockets of every controller of ``nqn``, polled (MPTCP subflows join
    after the connect returns) until each matches ``trtype``: every queue an MPTCP
    connection without fallback and with subflows from every one of ``links`` (as many
    as the limit allows where ``topology`` asks for more: coverage_problems), or a
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
        problems = [p for ctrl in ctrls
                    for p in coverage_problems(ctrl, links, trtype, topology)]
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

"""Faults injected while fio writes and verifies, and what each did to the I/O.

A fault is applied after a baseline phase, held for a window, then healed; fio writes
with crc32c verification throughout (verify_backlog: every block is read back and checked
while the run goes on) and logs its bandwidth every 100 ms on the monotonic clock, the
clock the fault's times are taken on. After the heal the run goes on only until the
device's throughput, sampled live from its sector counters, has been back for a while
(``back``), at most AFTER_S: then fio is interrupted and reports what it did. What is
recorded (``Outcome``): the longest stall and the time to full bandwidth again (fiolog),
I/O and verify errors, the controllers' states and the MPTCP subflows before, during and
after, and whether the kernel log shows NVMe error recovery.

The faults:
- ``link-down``: the host end of the last link down, then up (routes restored, and the
  link's MPTCP endpoint announced again, as a network manager and mptcpd would).
- ``blackhole``: the last link drops every packet (netem loss 100 %), then heals.
Over a bond of the links (topology.Bond) both hit a slave, the active one in
active-backup: what the bond's link monitoring (miimon sees carrier, not loss) and LACP
(802.3ad: a slave whose LACPDUs stop leaves the aggregator) make of it is the question.
- ``all-but-one-down``: every link but the last down (the first controller's, and the
  MPTCP connection's initial subflow's), then up.
- ``endpoint``: the host's MPTCP endpoint of the last link removed (its subflows close),
  then added again (the path manager joins new ones).
- ``port``: the subsystem taken off the nvmet port of the last controller, then exported
  again: the host reconnects every reconnect_delay until it is back.
- ``reset``: reset_controller on the first controller; healed when it is live again.
- ``delete``: the last controller of the subsystem deleted, then connected again (needs
  a second controller: I/O goes on over the others).
- ``keep-alive``: every link black-holed for longer than the keep-alive timeout: the host
  finds the target gone and recovers once it answers again.
"""

import collections
import contextlib
import dataclasses
import errno
import re
import time

from mptcp_nvme.guest.io import fio, fiolog
from mptcp_nvme.guest.net import proof
from mptcp_nvme.guest.net import sock_diag
from mptcp_nvme.guest.checks.health import KernelLog
from mptcp_nvme.payloads import FaultOutcome
from mptcp_nvme.poll import wait_for

# Controllers of a fault test: a short keep-alive and reconnect delay, so that failover
# and recovery show within seconds, and a controller loss timeout far beyond any window.
TIMEOUTS = {"keep_alive_tmo": 5, "reconnect_delay": 1, "ctrl_loss_tmo": 120}
# The baseline phase and the window; AFTER_S is the most the run goes on after the heal
# waiting for the bandwidth to come back (a loaded TCG guest can take many seconds): a
# run that recovers ends sooner (``back``), one that does not is judged on that much log.
BEFORE_S, WINDOW_S, AFTER_S = 3.0, 8.0, 30.0
SAMPLE_S = 0.5
# fio checks every block it wrote, VERIFY_BACKLOG blocks at a time: writes and reads
# alternate, so the bandwidth is their sum; "back" is RECOVERED of the baseline for 1 s.
VERIFY_BACKLOG = 16
RECOVERED = 0.8
HANG_S = 60.0            # a stall this long is a hang, whatever the fault
# Live, from the device's sectors: back once the last LIVE_WINDOW_S moved at least
# LIVE_RECOVERED of the baseline phase's rate, at the earliest MIN_AFTER_S after the
# heal. Stricter than the log's analysis (RECOVERED for fiolog.STEADY_S) over a window
# twice as long, so that the log it is judged on holds a recovery too.
LIVE_WINDOW_S = 2 * fiolog.STEADY_S
LIVE_RECOVERED = 0.9
MIN_AFTER_S = 2.0
RECOVERY_LINES = re.compile(r"nvme\w*: (starting error recovery|Reconnecting in|"
                            r"failed to send keep-alive|keep alive|I/O tag \d+ .* timeout|"
                            r"resetting controller|Successfully reconnected)", re.I)


@dataclasses.dataclass
class Scene:
    """What a fault acts on: the network, the host, the target and the connection."""

    network: object          # topology.Network
    nvme_host: object        # initiator.NvmeHost
    target: object           # nvmet.Target
    trtype: str
    controllers: list        # controller names, one per path
    reconnect: object = None  # callable(traddr) -> controller name: connect one path again


class Fault:
    name = ""
    what = ""
    controllers = 1          # at least, whatever the transport

    def unmet(self, scene):
        """Why this fault does not apply to ``scene`` (a SKIP reason), or None."""
        return None

    def apply(self, scene):
        raise NotImplementedError

    def heal(self, scene):
        raise NotImplementedError

    def window_s(self, scene, default=WINDOW_S):
        """How long the fault holds: ``default`` (WINDOW_S, or --quick's)."""
        return default


def hit_link(scene):
    """The link a one-link fault hits: the last; over an active-backup bond, the active
    slave's (the others carry nothing)."""
    topo = scene.network.topology
    if topo.bond and topo.bond.mode == "active-backup":
        return scene.network.bond_active_link()
    return topo.links[-1]


class LinkDown(Fault):
    name, what = "link-down", "the last link (a bond's active slave) down, then up"

    def links(self, scene):
        return [hit_link(scene).index]

    def unmet(self, scene):
        if len(scene.network.topology.links) < 2:
            return "one link: nothing would carry the I/O"
        return None

    def apply(self, scene):
        for index in self.links(scene):
            scene.network.set_link_up(index, False)

    def heal(self, scene):
        for index in self.links(scene):
            scene.network.set_link_up(index, True)
            if scene.trtype == "mptcp":
                rejoin(scene, index)


def rejoin(scene, index):
    """What the in-kernel path managers need for link ``index``'s subflows to come back
    after it was down (they do nothing on link up): the host's endpoint added again
    (the host joins from the link to the connection's first address), then the
    target's address announced again (announce_again)."""
    if scene.network.topology.host.endpoint_flags:
        scene.network.endpoint(index, False)
        scene.network.endpoint(index, True)
    announce_again(scene, index)


def announce_again(scene, index):
    """The target's ``signal`` endpoint of link ``index`` removed and added (RM_ADDR,
    ADD_ADDR): the host joins the link's target address again. The host's path manager
    opens that join only when an address is announced: a host endpoint added again
    joins the connection's first address and no announced one (pm_netlink.c, the
    'subflow' flag without 'fullmesh'), so the join that the host endpoint's removal
    closed stays closed without this. Not the address the controllers connected to:
    withdrawing it (RM_ADDR) would close every join to it, and announcing it gives the
    host nothing to join that it has not."""
    link = scene.network.topology.links[index - 1]
    connected = scene.target.addresses if scene.target else ()
    if "signal" in scene.network.topology.target.endpoint_flags and link.traddr not in connected:
        scene.network.endpoint(index, False, side="target")
        scene.network.endpoint(index, True, side="target")


class AllButOneDown(LinkDown):
    name, what = "all-but-one-down", "every link but the last down, then up"

    def links(self, scene):
        return [link.index for link in scene.network.topology.links[:-1]]


class Blackhole(Fault):
    name, what = "blackhole", "the last link (a bond's active slave) drops every packet, then heals"

    def links(self, scene):
        return [hit_link(scene)]

    unmet = LinkDown.unmet

    def apply(self, scene):
        self.saved = {link.index: scene.network.netem[link.index] for link in self.links(scene)}
        for link in self.links(scene):
            scene.network.set_netem(link.index, loss="100%")

    def heal(self, scene):
        # the last link first: a connection that gets through on the first link finds
        # the others (its joins' links) healed already
        for index, netem in reversed(getattr(self, "saved", {}).items()):
            scene.network.set_netem(index, loss=f"{netem.loss_pct:g}%")


class KeepAlive(Blackhole):
    name, what = "keep-alive", "every link black-holed beyond the keep-alive timeout"

    def links(self, scene):
        return list(scene.network.topology.links)

    def unmet(self, scene):
        return None

    def window_s(self, scene, default=WINDOW_S):
        return max(default, 2 * TIMEOUTS["keep_alive_tmo"])   # even under --quick


class Endpoint(Fault):
    name, what = "endpoint", "the last link's MPTCP endpoint removed, then added again"

    def unmet(self, scene):
        if scene.trtype != "mptcp":
            return "MPTCP endpoints carry no NVMe/TCP connection"
        if not scene.network.topology.host.endpoint_flags:
            return "the topology gives the host no MPTCP endpoints"
        return LinkDown.unmet(self, scene)

    def apply(self, scene):
        scene.network.endpoint(scene.network.topology.links[-1].index, False)

    def heal(self, scene):
        index = scene.network.topology.links[-1].index
        scene.network.endpoint(index, True)
        announce_again(scene, index)


class PortFault(Fault):
    name, what = "port", "the subsystem taken off the last controller's nvmet port, then back"

    def __init__(self):
        self.unexported = contextlib.ExitStack()

    def apply(self, scene):
        port = scene.target.ports[len(scene.controllers) - 1]
        self.unexported.enter_context(port.unexported(scene.target.subsystem,
                                                      scene.target.in_target_netns))

    def heal(self, scene):
        self.unexported.close()


class Reset(Fault):
    name, what = "reset", "reset_controller on the first controller"

    def apply(self, scene):
        scene.nvme_host.reset_controller(scene.controllers[0])

    def heal(self, scene):
        wait_for(lambda: scene.nvme_host.controller(scene.controllers[0]).state == "live",
                 f"{scene.controllers[0]} live again after its reset", 60)

    def window_s(self, scene, default=WINDOW_S):
        return 0.0


class Delete(Fault):
    name, what = "delete", "the last controller deleted, then connected again"
    controllers = 2          # MPTCP too: deleting its one controller would leave no path

    def apply(self, scene):
        self.address = scene.nvme_host.controller(scene.controllers[-1]).address["traddr"]
        scene.nvme_host.delete_controller(scene.controllers[-1])

    def heal(self, scene):
        if getattr(self, "address", None):
            scene.controllers[-1] = scene.reconnect(self.address)


INJECTORS = {fault.name: fault for fault in (LinkDown, Blackhole, AllButOneDown, Endpoint, PortFault,
                                             Reset, Delete, KeepAlive)}


@dataclasses.dataclass
class Observation:
    at_s: float                # monotonic
    subflows: int | None       # established MPTCP subflows in the host netns
    links: dict                # {link name: how many of them leave by it (host address)}
    states: dict               # controller -> state
    sectors: int | None = None  # read + written on fio's device (verify reads count too)


def observe(scene, device=None):
    sectors = sum(fio.sectors_moved(device)) if device else None
    subflows, links = None, {}
    if scene.trtype == "mptcp":
        with scene.network.host.enter():
            records = [record for record in sock_diag.sockets() if record.is_subflow]
        subflows = len(records)
        links = dict(collections.Counter(proof.link_of(r.local, scene.network.topology.links)
                                         for r in records))
    states = {name: scene.nvme_host.controller(name).state for name in scene.controllers}
    return Observation(time.monotonic(), subflows, links, states, sectors)


def rate(samples, since=float("-inf")):
    """Sectors a second between the first sample at or after ``since`` and the last;
    None without two such samples."""
    window = [o for o in samples if o.at_s >= since and o.sectors is not None]
    if len(window) < 2 or window[-1].at_s <= window[0].at_s:
        return None
    return (window[-1].sectors - window[0].sectors) / (window[-1].at_s - window[0].at_s)


def missing_subflows(before, after):
    """{link: (subflows before, after)} of the links with fewer subflows ``after`` than
    ``before`` (Observation.links)."""
    return {link: (count, after.get(link, 0)) for link, count in sorted(before.items())
            if after.get(link, 0) < count}


def live_rates(before, after):
    """(the baseline phase's rate, the last LIVE_WINDOW_S's after the heal) of the
    device's sectors, as back() takes them; None for one it has too few samples of."""
    baseline = (rate(before, before[0].at_s + fiolog.RAMP_UP_S) or rate(before)) if before else None
    now = rate(after, after[-1].at_s - LIVE_WINDOW_S) if after else None
    return baseline, now


def back(before, after, healed_at):
    """Whether the throughput ``after`` the heal is back to the baseline ``before``
    (its first fiolog.RAMP_UP_S left out), by LIVE_RECOVERED, LIVE_WINDOW_S and
    MIN_AFTER_S, and over MPTCP every link has as many subflows as before: enough to
    stop the run, not the verdict (that is the log's and inject()'s)."""
    if not before or not after or after[-1].at_s - healed_at < max(MIN_AFTER_S, LIVE_WINDOW_S):
        return False
    if before[-1].subflows is not None and missing_subflows(before[-1].links, after[-1].links):
        return False            # the path manager has not rejoined every link yet
    baseline, now = live_rates(before, after)
    return bool(baseline) and now is not None and now >= LIVE_RECOVERED * baseline


def sample_until(scene, deadline, samples, stop=lambda: False, device=None):
    """Observe every SAMPLE_S until ``deadline`` (monotonic) or ``stop()``."""
    while True:
        samples.append(observe(scene, device))
        if time.monotonic() >= deadline or stop():
            return
        time.sleep(min(SAMPLE_S, max(0.0, deadline - time.monotonic())))


def inject(fault, scene, device, log_prefix, prefix=(), phase_s=lambda length: length):
    """Run the verifying fio job on ``device`` and ``fault`` in its middle: the Outcome.
    ``phase_s(length)`` cuts the baseline phase and the window (quick.seconds)."""
    baseline_s = phase_s(BEFORE_S)
    window = fault.window_s(scene, phase_s(WINDOW_S))
    # fio is interrupted once the bandwidth is back, else AFTER_S after the heal ended;
    # its runtime is only a ceiling, HANG_S past the planned end: a heal that takes long
    # (a reconnect under a debug kernel) must not end the log before the fault does
    runtime = round(baseline_s + window + AFTER_S + HANG_S)
    job = fio.FioJob(rw="randwrite", bs="16k", numjobs=1, iodepth=16, size="50%",
                     log_prefix=log_prefix).verifying_while_writing(runtime, VERIFY_BACKLOG)
    kernel_log = KernelLog()
    before, during, after = [], [], []
    io_error = verify_error = problem = None
    result = None
    try:
        with fio.start(job, device, prefix, timeout=runtime + HANG_S + 60) as running:
            fio.wait_for_io(running, device)
            sample_until(scene, time.monotonic() + baseline_s, before, device=device)
            fault_start = time.monotonic()
            try:
                fault.apply(scene)
                sample_until(scene, fault_start + window, during, device=device)
            finally:
                fault.heal(scene)
                fault_end = time.monotonic()
            sample_until(scene, fault_end + AFTER_S, after, device=device,
                         stop=lambda: running.poll() is not None
                         or back(before, after, fault_end))
            interrupted = running.poll() is None
            running.interrupt()         # back: no need to write on to the runtime's end
            try:
                result = fio.finish(running, job, device, prefix, flush=False,
                                    interrupted=interrupted)
            except fio.FioFailed as err:
                result = err.result
                if result is not None and result.error == errno.EILSEQ:
                    verify_error = str(err)
                else:
                    io_error = str(err)
    finally:
        lines = [line for line in kernel_log.new_lines() if RECOVERY_LINES.search(line)]
        kernel_log.close()
    try:
        samples = fiolog.merge([fiolog.log_files(log_prefix)["bw"]])
    except FileNotFoundError:
        samples = []
    timeline = fiolog.timeline(samples)     # writes and their verifying reads
    impact = (fiolog.analyse(timeline, fault_start, fault_end, RECOVERED)
              if timeline.values else None)
    live = live_summary(before, after, fault_start, fault_end)
    if impact is None:
        problem = "fio logged no write bandwidth"
    elif not impact.recovered and not live["back"]:
        # the log's 100 ms samples are uneven under load (a loaded TCG guest logs zeros
        # between full ones): when the device's sectors showed the bandwidth back (back(),
        # stricter in level and window), that is the recovery; neither: it never came back
        problem = f"recovery: {impact.reason}"
    elif impact.longest_stall_s and impact.longest_stall_s >= HANG_S:
        problem = f"stall: {impact.longest_stall_s:.1f} s, a hang"
    if after and set(after[-1].states.values()) != {"live"}:
        problem = problem or f"controllers after the fault: {after[-1].states}"
    subflows = {}
    if scene.trtype == "mptcp" and before and after:
        names = sorted({*before[-1].links, *after[-1].links})
        subflows = {"before": before[-1].subflows,
                    "during": min((o.subflows for o in during), default=None),
                    "after": after[-1].subflows,
                    "per_link": {name: [before[-1].links.get(name, 0),
                                        min((o.links.get(name, 0) for o in during), default=None),
                                        after[-1].links.get(name, 0)] for name in names}}
        if lost := missing_subflows(before[-1].links, after[-1].links):
            problem = problem or "subflows not back after the fault: " + ", ".join(
                f"{link} {now} of {then}" for link, (then, now) in lost.items())
    bond = scene.network.topology.bond
    return FaultOutcome(
        fault=fault.name, trtype=scene.trtype, paths=len(scene.controllers), window_s=window,
        via=f"bond:{bond.mode}" if bond else None,
        impact=_relative(impact, fault_start) if impact else None,
        timeline=tuple((round(end - fault_start, 2), round(value / 1024, 3))
                       for end, value in zip(timeline.times_s, timeline.values)),
        written_mib=round(result.write.io_bytes / 2**20, 1) if result else 0.0,
        io_error=io_error, verify_error=verify_error, subflows=subflows,
        states_during=tuple(sorted({s for o in during for s in o.states.values() if s})),
        recovery_lines=tuple(lines[:20]), problem=problem, live=live)


def live_summary(before, after, fault_start, healed_at):
    """FaultOutcome.live: the device's bandwidth before and at the end, in MiB/s, and
    whether back() held when the run ended (``at_s``: then, from the fault's start)."""
    baseline, now = live_rates(before, after)
    mib = lambda sectors: round(sectors * 512 / 2**20, 2) if sectors is not None else None
    return {"baseline_mib_s": mib(baseline), "after_mib_s": mib(now),
            "back": back(before, after, healed_at),
            "at_s": round(after[-1].at_s - fault_start, 2) if after else None}


def _relative(impact, origin):
    """``impact`` with its absolute (monotonic) times relative to ``origin``."""
    shift = {name: round(getattr(impact, name) - origin, 2)
             for name in ("fault_start_s", "fault_end_s", "stall_start_s")
             if getattr(impact, name) is not None}
    return dataclasses.replace(impact, **shift)


def describe(outcome):
    """KTAP diagnostics of an Outcome."""
    lines = [f"fault {outcome.fault} over {outcome.trtype} ({outcome.paths} controller(s)"
             + (f", {outcome.via}" if outcome.via else "")
             + f"): {outcome.window_s:g} s window; wrote {outcome.written_mib} MiB"]
    if outcome.impact:
        lines.append("writes: " + fiolog.describe(outcome.impact))
    if outcome.subflows:
        lines.append("MPTCP subflows before/during/after: " + "/".join(
            str(outcome.subflows[k]) for k in ("before", "during", "after")) + "; per link "
            + " ".join(f"{name}={'/'.join(map(str, counts))}"
                       for name, counts in outcome.subflows.get("per_link", {}).items()))
    if outcome.live and outcome.live.get("baseline_mib_s") is not None:
        live = outcome.live
        lines.append(
            f"device: {live['baseline_mib_s']} MiB/s before, {live['after_mib_s']} MiB/s in "
            f"the last {LIVE_WINDOW_S:g} s ({live['at_s']} s after the fault's start): "
            + ("back" if live["back"] else "not back")
            + (f" (the log's 100 ms samples did not hold {RECOVERED:.0%} for "
               f"{fiolog.STEADY_S:g} s: judged on the device's sectors)"
               if live["back"] and outcome.impact and not outcome.impact.recovered else ""))
    lines.append(f"controller states during: {', '.join(outcome.states_during) or 'none'}; "
                 f"kernel error recovery: {'yes' if outcome.recovery_lines else 'no'}")
    lines.append(f"I/O errors: {outcome.io_error or 0}; verify errors: {outcome.verify_error or 0}")
    return lines

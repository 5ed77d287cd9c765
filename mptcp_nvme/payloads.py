"""What a test's report carries from the guest to the host besides its outcome: the
payloads of the channel.MATRIX and channel.FAULT properties, typed, each with one writer
(``to_property``) and one reader (``from_property``/``find``). Shared by both sides;
imports nothing of either."""

import dataclasses
import json

from mptcp_nvme.channel import FAULT, MATRIX


class _Payload:
    """A dataclass sent as one JSON user property named ``NAME``."""

    NAME = None

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data):
        return cls(**data)

    def to_property(self):
        return self.NAME, json.dumps(self.to_json())

    @classmethod
    def from_property(cls, value):
        return cls.from_json(json.loads(value))

    @classmethod
    def find(cls, user_properties):
        """The payload among a report's user_properties, or None."""
        return next((cls.from_property(v) for n, v in user_properties if n == cls.NAME), None)


@dataclasses.dataclass(frozen=True)
class Measurement(_Payload):
    """A matrix cell's run (selftests/bench/bench_matrix.py): MiB/s each way, and where the
    cell sampled it (guest/net/transport.py) the transport under the queues:
    {"read"|"write": {link: LinkTransport as a dict}} and the seconds the sampling took;
    the bytes each link's host interface moved over the cell's two jobs, {"read"|"write":
    {link: bytes}} (topology.LinkBytes: rx, target to host, carries the reads' data; tx
    the writes'; a bond's slaves each, where tcp_info sees only the bond's one address)."""

    NAME = MATRIX
    read_mib: float
    write_mib: float
    transport: dict | None = None
    sampling_s: float | None = None
    link_bytes: dict | None = None


@dataclasses.dataclass(frozen=True)
class FaultImpact:
    """What a fault from ``fault_start_s`` to ``fault_end_s`` (seconds on the log's clock)
    did to a timeline; values in its unit (KiB/s for a bw log), times in seconds.

    baseline: median of the windows before the fault, less the first second (ramp-up)
        when a second remains; None without a window before the fault.
    during: median of the windows ending within the fault; None without one.
    longest_stall_s: longest run of windows at or under 5 % of the baseline from the fault
        start to the end of the log, 0 without one; None without a baseline.
    stall_start_s: start of that run's first window; None without a stall.
    stall_at_end: that run reaches the end of the log: its length is a lower bound.
    recovery_s: from the fault end to the start of the first 1 s whose mean is >=
        recovered_fraction × baseline (0 if it never fell); else None. (A mean, not every
        window: at 100 ms a window holds a few I/Os and single windows go to 0 at full rate.)
    recovered: recovery_s is not None. reason: why it is None, else None.
    """

    fault_start_s: float
    fault_end_s: float
    recovered_fraction: float
    baseline: float | None
    during: float | None
    longest_stall_s: float | None
    stall_start_s: float | None
    stall_at_end: bool
    recovery_s: float | None
    recovered: bool
    reason: str | None


@dataclasses.dataclass(frozen=True)
class FaultOutcome(_Payload):
    """What one fault did (guest/faults.py inject()); times in seconds, relative to the
    fault's start."""

    NAME = FAULT
    fault: str
    trtype: str
    paths: int
    window_s: float
    impact: FaultImpact | None
    timeline: tuple            # ((end s, MiB/s), ...) of the written bandwidth
    written_mib: float
    io_error: str | None       # fio's first non-verify error
    verify_error: str | None
    subflows: dict             # before/during (fewest)/after
    states_during: tuple       # every controller state seen during the fault
    recovery_lines: tuple      # the kernel's NVMe error-recovery lines
    problem: str | None        # the phase that did not hold, or None
    # from the device's sector counters, sampled live: {"baseline_mib_s", "after_mib_s"
    # (the last window's), "back": whether the run saw the bandwidth back, "at_s"}
    live: dict | None = None
    via: str | None = None     # the multipath layer when not NVMe's or MPTCP's: "bond:<mode>"

    @classmethod
    def from_json(cls, data):
        data = dict(data)
        data["impact"] = FaultImpact(**data["impact"]) if data.get("impact") else None
        data["timeline"] = tuple(tuple(point) for point in data["timeline"])
        data["states_during"] = tuple(data["states_during"])
        data["recovery_lines"] = tuple(data["recovery_lines"])
        return cls(**data)

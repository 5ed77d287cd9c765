"""fio's interval logs (bandwidth, IOPS) read into per-window timelines, and what a fault
did to them: the longest stall, the bandwidth during the fault, the time to recover.

fio (3.x) writes ``time_ms, value, direction, block size`` then, by version and options,
offset (log_offset=1), command priority (3.20 and later), issue time. With log_avg_msec a
line is the mean over the window ending at ``time_ms`` (ms since the job started); a
window in which no I/O completed has no line. Each job logs on its own: with
per_job_logs=0 the jobs' logs are appended one after the other to the same file.
"""

import dataclasses
import statistics

from mptcp_nvme.payloads import FaultImpact

STALL_FRACTION = 0.05   # a window at or under 5 % of the baseline is stalled
RAMP_UP_S = 1.0         # left out of the baseline when there is enough data after it
STEADY_S = 1.0          # recovered: this long at or above the fraction of the baseline


def log_options(prefix, interval_ms=100):
    """fio options for ``PREFIX_bw.log`` and ``PREFIX_iops.log``, one file per type,
    each line the mean over ``interval_ms``, stamped in ms of CLOCK_MONOTONIC (Python's
    time.monotonic(), on which a fault's times are taken) instead of since the job's
    start. fio appends to these files: remove them before the run."""
    return [f"--write_bw_log={prefix}", f"--write_iops_log={prefix}",
            f"--log_avg_msec={interval_ms}", "--per_job_logs=0",
            "--log_alternate_epoch=1", "--log_alternate_epoch_clock_id=1"]


def log_files(prefix):
    """The files log_options(prefix) makes fio write: {"bw": path, "iops": path}."""
    return {kind: f"{prefix}_{kind}.log" for kind in ("bw", "iops")}


@dataclasses.dataclass(frozen=True)
class Sample:
    """One log line: window end (ms), value (KiB/s or IO/s), 0 read, 1 write, 2 trim."""

    time_ms: int
    value: float
    direction: int


def read_log(path):
    """The samples of one fio log, in file order."""
    samples = []
    with open(path) as log:
        for number, line in enumerate(log, 1):
            if not line.strip():
                continue
            fields = [field.strip() for field in line.split(",")]
            try:
                if not 4 <= len(fields) <= 7:
                    raise ValueError(f"{len(fields)} columns, not 4 to 7")
                samples.append(Sample(int(fields[0]), float(fields[1]), int(fields[2])))
            except ValueError as err:
                raise ValueError(f"{path}:{number}: not a fio log line ({err}): "
                                 f"{line.rstrip()!r}") from None
    return samples


def _jobs(samples):
    """The samples split where time goes back: each part is one job's log."""
    jobs, previous = [], None
    for sample in samples:
        if previous is None or sample.time_ms < previous:
            jobs.append([])
        jobs[-1].append(sample)
        previous = sample.time_ms
    return jobs


def _per_window(jobs, interval_ms):
    """{(direction, window): value}: a job's samples in one window averaged (fio's final
    flush can repeat a window), the jobs summed."""
    total = {}
    for job in jobs:
        values = {}
        for sample in job:
            key = (sample.direction, (sample.time_ms + interval_ms // 2) // interval_ms)
            values.setdefault(key, []).append(sample.value)
        for key, found in values.items():
            total[key] = total.get(key, 0) + statistics.fmean(found)
    return total


def merge(paths, interval_ms=100):
    """The jobs' samples summed per window (ends aligned to ``interval_ms``): of one log
    per job (per_job_logs=1) or of shared logs holding several jobs (per_job_logs=0)."""
    jobs = [job for path in paths for job in _jobs(read_log(path))]
    total = _per_window(jobs, interval_ms)
    return [Sample(window * interval_ms, total[direction, window], direction)
            for window, direction in sorted(key[::-1] for key in total)]


@dataclasses.dataclass(frozen=True)
class Timeline:
    """``values[i]``: the value (summed over jobs and the directions kept) in the window
    ending at ``start_ms + i * interval_ms``; 0 where no I/O completed."""

    start_ms: int
    interval_ms: int
    values: tuple[float, ...]

    def end_ms(self, index):
        return self.start_ms + index * self.interval_ms

    @property
    def times_s(self):
        return tuple(self.end_ms(i) / 1000 for i in range(len(self.values)))


def timeline(samples, interval_ms=100, direction=None):
    """Evenly spaced windows from the first sample to the last; ``direction`` keeps only
    reads (0), writes (1) or trims (2); samples of several jobs are summed."""
    kept = [s for s in samples if direction is None or s.direction == direction]
    total = {}
    for (_, window), value in _per_window(_jobs(kept), interval_ms).items():
        total[window] = total.get(window, 0) + value
    if not total:
        return Timeline(0, interval_ms, ())
    first, last = min(total), max(total)
    return Timeline(first * interval_ms, interval_ms,
                    tuple(total.get(w, 0.0) for w in range(first, last + 1)))


def analyse(timeline, fault_start_s, fault_end_s, recovered_fraction=0.9):
    """The FaultImpact of a fault on ``timeline``, fault times on the log's clock."""
    if fault_end_s < fault_start_s:
        raise ValueError(f"the fault ends ({fault_end_s} s) before it starts ({fault_start_s} s)")
    step, values = timeline.interval_ms, timeline.values
    ends = [timeline.end_ms(i) for i in range(len(values))]
    start_ms, end_ms = round(fault_start_s * 1000), round(fault_end_s * 1000)
    impact = dict(fault_start_s=fault_start_s, fault_end_s=fault_end_s,
                  recovered_fraction=recovered_fraction, longest_stall_s=None,
                  stall_start_s=None, stall_at_end=False, recovery_s=None, recovered=False)
    within = [v for t, v in zip(ends, values) if start_ms < t <= end_ms]
    impact["during"] = statistics.median(within) if within else None
    before = [v for t, v in zip(ends, values) if t <= start_ms]
    ramp, steady = round(RAMP_UP_S * 1000 / step), round(STEADY_S * 1000 / step)
    if len(before) - ramp >= steady:
        before = before[ramp:]
    # the mean, as the recovery windows below and the run's live check (faults.back)
    # take it: verify's alternating writes and reads make the 100 ms samples uneven,
    # and their median stood above their mean, so a run that was back by its sectors
    # was "not back" by its log
    baseline = impact["baseline"] = statistics.fmean(before) if before else None
    if not baseline:
        reason = "no samples before the fault" if baseline is None else "no I/O before the fault"
        return FaultImpact(**impact, reason=reason)

    first = next((i for i, t in enumerate(ends) if t > start_ms), len(values))
    stall, run = (0, None), 0
    for i in range(first, len(values)):
        run = run + 1 if values[i] <= STALL_FRACTION * baseline else 0
        if run > stall[0]:
            stall = (run, i - run + 1)
    impact["longest_stall_s"] = stall[0] * step / 1000
    if stall[1] is not None:
        impact["stall_start_s"] = (ends[stall[1]] - step) / 1000
        impact["stall_at_end"] = stall[1] + stall[0] == len(values)

    if not ends or ends[-1] <= end_ms:
        return FaultImpact(**impact, reason="the log ends during the fault")
    after = next(i for i, t in enumerate(ends) if t > end_ms)
    for i in range(after, len(values) - steady + 1):
        if statistics.fmean(values[i:i + steady]) >= recovered_fraction * baseline:
            impact.update(recovery_s=max(0, ends[i] - step - end_ms) / 1000, recovered=True)
            return FaultImpact(**impact, reason=None)
    return FaultImpact(**impact, reason=f"not back to {recovered_fraction:.0%} for "
                                        f"{STEADY_S:g} s before the log ends")


def _mib(kib_per_s):
    return f"{kib_per_s / 1024:.1f} MiB/s"


def describe(impact):
    """One line for a KTAP diagnostic, for a bw log (KiB/s, shown in MiB/s)."""
    during = "no window within the fault"
    if impact.during is not None and impact.baseline:
        during = f"during fault {impact.during / impact.baseline:.0%} of baseline " \
                 f"{_mib(impact.baseline)}"
    elif impact.during is not None:
        during = f"during fault {_mib(impact.during)}"
    if impact.longest_stall_s is None:
        return f"no baseline ({impact.reason}), {during}"
    if impact.stall_start_s is None:
        stall = "no stall"
    else:
        until = ", until the log ends" if impact.stall_at_end else ""
        stall = f"stall {impact.longest_stall_s:.1f} s (from {impact.stall_start_s:.1f} s{until})"
    if impact.recovered:
        recovery = (f"back to {impact.recovered_fraction:.0%} {impact.recovery_s:.1f} s "
                    f"after the fault ended")
    else:
        recovery = impact.reason
    return f"{stall}, {during}, {recovery}"

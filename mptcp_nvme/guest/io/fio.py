"""fio jobs with mptcp_nvme.sh's defaults, run with JSON output and parsed.

The script runs randread then randwrite, each followed by ``nvme flush``.
A verify job writes every block once with crc32c headers and reads it all
back: it must end with no error and read back every byte it wrote.
"""

import contextlib
import dataclasses
import errno
import json
import os
import re
from pathlib import Path

from mptcp_nvme import proc
from mptcp_nvme.guest.io import fiolog
from mptcp_nvme.errors import SetupError, UsageError
from mptcp_nvme.guest.nvme.initiator import NvmeHost
from mptcp_nvme.poll import wait_for

SCRIPT_SEQUENCE = ("randread", "randwrite")
INTERRUPTED = 128       # fio's exit code once a SIGINT ended its jobs (it still reports)
# What a verify case writes and reads back: a bounded amount, thousands of blocks over
# every path, enough to show a lost or corrupted one; a proof of integrity, not a
# benchmark (ten seconds of fio belong to those and to the script scenario).
VERIFY_SIZE = "16m"
_SIZE = re.compile(r"(\d+)([kmg]?)", re.I)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}
_WRITING = ("write", "randwrite", "rw", "readwrite", "randrw", "trimwrite")


@dataclasses.dataclass(frozen=True)
class FioJob:
    """One fio job; the defaults are the script's. ``None`` leaves an option out.

    ``verify`` (e.g. "crc32c") adds do_verify=1 and needs a job that writes
    each block once (random map on) and is not time-based: fio never starts the
    read-back of a time-based write. Several jobs write disjoint slices (size
    and offset_increment: size/numjobs) so none overwrites another's blocks.
    """

    rw: str = "randread"
    direct: bool = True
    norandommap: bool = True
    randrepeat: bool = False
    ioengine: str = "libaio"
    thread: bool = True
    bs: str = "128k"
    runtime: int | None = 10
    time_based: bool = True
    numjobs: int = 4
    iodepth: int = 256
    group_reporting: bool = True
    size: str = "100%"
    verify: str | None = None
    verify_backlog: int | None = None   # verify every N blocks written, while writing
    log_prefix: str | None = None       # 100 ms bw/iops logs (fiolog), monotonic clock
    hipri: bool = False                 # polled completions (pvsync2/io_uring, poll queues)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @property
    def writes(self):
        return self.rw in _WRITING

    def verifying(self, verify="crc32c"):
        """This job as a write-then-verify run of the whole target."""
        rw = self.rw if self.writes else "randwrite"
        return self.replace(rw=rw, verify=verify, norandommap=False, time_based=False,
                            runtime=None)

    def verifying_while_writing(self, runtime, backlog=64, verify="crc32c"):
        """This job as a time-based write that reads back and checks every block it
        wrote, ``backlog`` blocks at a time, for ``runtime`` seconds: the verification
        runs through the whole run (a fault in the middle is checked too)."""
        return self.replace(rw=self.rw if self.writes else "randwrite", verify=verify,
                            verify_backlog=backlog, norandommap=False, time_based=True,
                            runtime=runtime)

    def _verify_slices(self):
        if self.numjobs == 1:
            return {}
        if self.size.endswith("%") and self.size[:-1].isdigit():
            share = f"{int(self.size[:-1]) // self.numjobs}%"
        elif match := _SIZE.fullmatch(self.size):
            kib = int(match[1]) * _UNITS[match[2].lower()] // 2**10 // self.numjobs
            share = f"{kib}k"
        else:
            raise UsageError(f"a verify job with numjobs > 1 needs a whole percentage or a "
                             f"size like 16m, not {self.size!r}")
        if share in ("0%", "0k"):
            raise UsageError(f"a verify job's size {self.size} leaves nothing to each of its "
                             f"{self.numjobs} jobs")
        return {"size": share, "offset_increment": share}

    def argv(self, filename):
        """fio's command line for this job on ``filename``, JSON output."""
        if self.verify and (not self.writes or self.norandommap or
                            (self.time_based and not self.verify_backlog)):
            raise UsageError("a verify job must write, once per block (no norandommap), "
                             "and not be time_based unless it verifies as it goes "
                             "(verify_backlog)")
        options = {
            "name": self.rw, "filename": filename, "rw": self.rw,
            "direct": int(self.direct), "norandommap": self.norandommap,
            "randrepeat": int(self.randrepeat), "ioengine": self.ioengine,
            "thread": self.thread, "bs": self.bs, "runtime": self.runtime,
            "time_based": self.time_based, "numjobs": self.numjobs, "iodepth": self.iodepth,
            "group_reporting": self.group_reporting, "size": self.size,
            "hipri": self.hipri,
        }
        if self.verify:
            # verify_state_save would leave *-verify.state files in the cwd
            options.update(self._verify_slices(), verify=self.verify, do_verify=1,
                           verify_state_save=0, verify_backlog=self.verify_backlog)
        argv = ["fio", "--output-format=json"]
        for key, value in options.items():
            if value is True:
                argv.append(f"--{key}")
            elif value is not False and value is not None:
                argv.append(f"--{key}={value}")
        if self.log_prefix:
            argv += fiolog.log_options(self.log_prefix)
        return argv


@dataclasses.dataclass(frozen=True)
class Direction:
    """One direction's totals: bandwidth, IOPS, completion latency percentiles (µs)."""

    io_bytes: int
    bw_bytes: float
    iops: float
    clat_p50_us: float | None
    clat_p99_us: float | None
    clat_p999_us: float | None

    @property
    def mib_per_s(self):
        return self.bw_bytes / 2**20


@dataclasses.dataclass(frozen=True)
class FioResult:
    """A fio run. ``error`` is the first job errno (0: none); ``error_count``
    counts the jobs that ended with an error plus the errors fio counted
    under continue_on_error (``total_err``)."""

    read: Direction
    write: Direction
    error: int
    error_count: int


_PERCENTILES = {"clat_p50_us": "50.000000", "clat_p99_us": "99.000000",
                "clat_p999_us": "99.900000"}


def _direction(jobs, key):
    """Totals over jobs (one job with group_reporting); percentiles: the worst job's."""
    stats = [job[key] for job in jobs]
    percentiles = {}
    for field, label in _PERCENTILES.items():
        values = [s["clat_ns"]["percentile"][label] for s in stats
                  if label in s.get("clat_ns", {}).get("percentile", {})]
        percentiles[field] = max(values) / 1000 if values else None
    return Direction(
        io_bytes=sum(s["io_bytes"] for s in stats),
        bw_bytes=sum(s["bw_bytes"] for s in stats),
        iops=sum(s["iops"] for s in stats),
        **percentiles,
    )


def _json_document(text):
    """fio prints its warnings on stdout too, before the line the JSON document opens."""
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.startswith("{"):
            return text[offset:]
        offset += len(line)
    raise ValueError("no JSON document")


def parse(text):
    """A FioResult from ``--output-format=json`` output (fio 3.x)."""
    try:
        jobs = json.loads(_json_document(text))["jobs"]
        errors = [job.get("error", 0) for job in jobs]
        return FioResult(
            read=_direction(jobs, "read"),
            write=_direction(jobs, "write"),
            error=next((e for e in errors if e), 0),
            error_count=sum(1 for e in errors if e) + sum(j.get("total_err", 0) for j in jobs),
        )
    except (ValueError, KeyError, TypeError) as err:
        raise SetupError(f"unexpected fio output ({err!r}): {text[:300]!r}") from err


class FioFailed(SetupError):
    """fio exited non-zero or reported job errors; ``result`` holds what it measured."""

    def __init__(self, message, result=None):
        self.result = result
        super().__init__(message)


def run(job, filename, prefix=(), flush=True, timeout=None):
    """Run ``job`` on ``filename`` behind ``prefix``; ``nvme flush`` it after a write
    job when ``flush``. Raises FioFailed on any fio error (a verify mismatch is EILSEQ)
    and on a verify job that did not read back every byte it wrote.
    """
    argv = [*prefix, *job.argv(filename)]
    if timeout is None and job.runtime:
        timeout = job.runtime + 120
    try:
        done = proc.cmd(argv, fail=False, timeout=timeout)
    except proc.CmdExitFailure as err:          # timed out
        raise FioFailed(str(err)) from err
    return checked(done, job, filename, prefix, flush)


def start(job, filename, prefix=(), timeout=None):
    """``job`` on ``filename`` started in the background: a proc.bkg to hand to
    finish(), or to leave (its context stops it)."""
    if job.log_prefix:
        for path in fiolog.log_files(job.log_prefix).values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)              # fio appends to an existing log
    return proc.bkg([*prefix, *job.argv(filename)],
                    timeout=timeout or (job.runtime or 0) + 120)


def wait_for_io(running, device, timeout=30):
    """Wait until a start()ed job's I/O shows on ``device`` (or fio ended early)."""
    start = sectors_moved(device)
    wait_for(lambda: sectors_moved(device) != start or running.poll() is not None,
             f"fio's first I/O on {device}", timeout)


_STAT = re.compile(r"\s*(\d+)\s+\d+\s+(\d+)\s+\d+\s+(\d+)\s+\d+\s+(\d+)")


def sectors_moved(device, sysfs="/sys"):
    """(sectors read, sectors written) of a block device, from /sys/block/<dev>/stat."""
    text = Path(sysfs, "block", Path(device).name, "stat").read_text()
    match = _STAT.match(text)
    if not match:
        raise SetupError(f"unexpected {device} stat: {text!r}")
    return int(match.group(2)), int(match.group(4))


def sectors_per_path(disks):
    """{controller: sectors read + written} of each path's hidden disk (NvmeHost.path_disks)."""
    return {ctrl: sum(sectors_moved(disk)) for ctrl, disk in disks.items()}


def path_shares(before, after):
    """{controller: its share of the sectors moved} between two sectors_per_path()."""
    delta = {ctrl: after[ctrl] - before[ctrl] for ctrl in before}
    total = sum(delta.values()) or 1
    return {ctrl: value / total for ctrl, value in delta.items()}


def finish(running, job, filename, prefix=(), flush=True, interrupted=False):
    """Wait for a start()ed job and check it as run() does; ``interrupted``: the caller
    ended it early (running.interrupt()), so fio's INTERRUPTED exit is no failure."""
    try:
        done = running.process()
    except proc.CmdExitFailure as err:          # timed out
        raise FioFailed(str(err)) from err
    return checked(done, job, filename, prefix, flush, interrupted)


def checked(done, job, filename, prefix=(), flush=True, interrupted=False):
    """The FioResult of a finished fio, or FioFailed (see run())."""
    try:
        result = parse(done.stdout)
    except SetupError:
        result = None
    failed = done.ret and not (interrupted and done.ret == INTERRUPTED)
    if failed or result is None or result.error:
        if result is None:
            reason = f"exit {done.ret}, no JSON result"
        elif result.error:
            name = errno.errorcode.get(result.error, result.error)
            reason = f"error {name} ({os.strerror(result.error)})"
        else:
            reason = f"exit {done.ret}"
        detail = done.stderr.strip().splitlines()[-5:]
        raise FioFailed(f"fio {job.rw} on {filename}: {reason}: {' | '.join(detail)}", result)
    if job.verify and not job.verify_backlog and result.read.io_bytes != result.write.io_bytes:
        raise FioFailed(f"fio verify on {filename} read back {result.read.io_bytes} of the "
                        f"{result.write.io_bytes} bytes it wrote", result)
    if flush and job.writes:
        NvmeHost(prefix).flush(filename)
    return result


def run_script_sequence(filename, job=FioJob(), prefix=(), flush=True):
    """The script's fio part: ``job`` as randread, then as randwrite."""
    return {rw: run(job.replace(rw=rw), filename, prefix, flush) for rw in SCRIPT_SEQUENCE}

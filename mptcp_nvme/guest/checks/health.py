"""Kernel health per test: new kernel log lines since the test started, checked for trouble."""

import os
import re
import time
from pathlib import Path

import psutil

from mptcp_nvme import proc
from mptcp_nvme.guest.security import psk

# Kernel self-checks (blktests' dmesg gate) and the nvme error patterns of mptcp_nvme.sh.
SELF_CHECKS = [
    r"WARNING:", r"\bBUG:", r"Oops", r"KASAN", r"UBSAN", r"kernel BUG at",
    r"possible circular locking dependency", r"possible recursive locking",
    r"INFO: lockdep", r"suspicious RCU usage", r"rcu: INFO: .*stall", r"self-detected stall",
    r"unreferenced object", r"Buffer I/O error",
]
# NVMe's error path: a problem, except in a test that makes it run (a fault test).
RECOVERY = [r"starting error recovery", r"fatal error occurred", r"failed nvme_keep_alive_end_io"]
PROBLEMS = re.compile("|".join(SELF_CHECKS + RECOVERY))
SELF_CHECK_PROBLEMS = re.compile("|".join(SELF_CHECKS))


class KernelLog:
    """A cursor on /dev/kmsg: ``new_lines()`` returns what was logged since the last call."""

    def __init__(self, path="/dev/kmsg"):
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def new_lines(self):
        lines = []
        while True:
            try:
                record = os.read(self.fd, 8192)
            except BlockingIOError:
                return lines
            except BrokenPipeError:      # records overwritten before we read them
                lines.append("(kernel log records lost: ring buffer wrapped)")
                continue
            if not record:
                return lines
            header, _, message = record.decode(errors="replace").partition(";")
            fields = header.split(",")
            stamp = f"[{int(fields[2]) / 1e6:12.6f}] " if len(fields) > 2 else ""
            lines.append(stamp + message.split("\n", 1)[0])

    def close(self):
        os.close(self.fd)


_REMOVING = re.compile(r"nvme (nvme\d+): Removing ctrl")
_KEEP_ALIVE_FAILED = re.compile(r"nvme (nvme\d+): failed nvme_keep_alive_end_io")


def problems(lines, recovery_expected=False, expected=()):
    """The lines that report a kernel problem. A keep-alive that fails on a controller
    already being removed (disconnect aborts it) is part of the removal, not a problem;
    with ``recovery_expected`` NVMe's error recovery is none either, nor is a line that
    matches one of the ``expected`` patterns (marker kernel_log_expected)."""
    pattern = SELF_CHECK_PROBLEMS if recovery_expected else PROBLEMS
    expected = [re.compile(p) for p in expected]
    removing, found = set(), []
    for line in lines:
        if any(p.search(line) for p in expected):
            continue
        if match := _REMOVING.search(line):
            removing.add(match[1])
        match = _KEEP_ALIVE_FAILED.search(line)
        if match and match[1] in removing:
            continue
        if pattern.search(line):
            found.append(line)
    return found


def leftovers():
    """What a finished run must not leave behind: {kind: [names]} (empty lists when clean)."""
    nvmet = Path("/sys/kernel/config/nvmet")
    loops = proc.cmd(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                     fail=False).stdout.splitlines()
    return {
        "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
        "nvmet subsystems": _entries(nvmet / "subsystems"),
        "nvmet ports": _entries(nvmet / "ports"),
        "nvme controllers": _entries(Path("/sys/class/nvme")),
        "loop devices": [line.split()[0] for line in loops if "mptcp_nvme." in line],
        "tlshd": sorted(str(p.pid) for p in psutil.process_iter(["name"]) if p.info["name"] == "tlshd"),
        "nvme PSKs": psk.suite_keys(),
        # a topology with its host side in the initial netns (faults) adds these there
        "veths in the initial netns": sorted(n for n in os.listdir("/sys/class/net")
                                             if re.fullmatch(r"ns[12]eth\d+", n)),
        "MPTCP endpoints in the initial netns": _init_endpoints(),
    }


def _init_endpoints():
    # pyroute2 only at the end of a run: it is kept off the start-up path
    from pyroute2.netlink.exceptions import NetlinkError
    from mptcp_nvme.guest.net import builder, namespaces
    try:
        with namespaces.INIT_NETNS.mptcp() as mptcp:
            return sorted(builder.endpoints(mptcp))
    except (NetlinkError, OSError):      # no MPTCP path manager: nothing can be left
        return []


def _entries(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


KMEMLEAK = Path("/sys/kernel/debug/kmemleak")
# kmemleak reports an unreferenced object only once it is older than its minimum age
# (5 s, kmemleak.c): a scan right after a test misses what the test just leaked.
KMEMLEAK_MIN_AGE = 5.0


class Kmemleak:
    """kmemleak on a kernel with CONFIG_DEBUG_KMEMLEAK: cleared at the start, scanned
    after each test; ``new_leaks()`` is the report of what leaked since the last call."""

    def __init__(self, path=KMEMLEAK):
        self.path = Path(path)
        if not self.path.parent.is_dir() or not os.path.ismount(self.path.parent):
            proc.cmd(["mount", "-t", "debugfs", "none", str(self.path.parent)], fail=False)
        self.available = self.path.exists() and self._enabled()
        self.why_not = ("" if self.available else "off: boot with kmemleak=on"
                        if self.path.exists() else "no CONFIG_DEBUG_KMEMLEAK")
        if self.available:
            self._write("clear")

    def _enabled(self):
        """Built in is not on: with CONFIG_DEBUG_KMEMLEAK_DEFAULT_OFF (or after an error)
        the file is there but refuses every command but "clear" with EPERM until booted
        with kmemleak=on. "stack=on" is kmemleak's default, so probing with it changes
        nothing."""
        try:
            self._write("stack=on")
        except PermissionError:
            return False
        return True

    def _write(self, command):
        with open(self.path, "w") as control:
            control.write(command)

    def new_leaks(self):
        """Scan once what the test leaked last is old enough to be reported, return the
        unreferenced objects found, then forget them ('clear')."""
        if not self.available:
            return ""
        time.sleep(KMEMLEAK_MIN_AGE + 0.5)   # kmemleak's own age threshold, not an event
        self._write("scan")
        report = self.path.read_text()
        self._write("clear")
        return report.strip()

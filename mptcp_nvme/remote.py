"""Running selftests in a guest: the host's session with one VM, and the guest's agent loop.

The host sends one JSON line per test on the guest command's stdin (``run`` with the
test's nodeid and the next one, so module and session fixtures live across tests);
the guest answers on its stdout with lines tagged ``MARK``: ``ready`` once collected,
then ``result`` with pytest's own serialized reports. stdout carries nothing else.
While a test runs, the host may send ``sysrq`` (a test overran): a reader thread in the
guest writes the keys to /proc/sysrq-trigger at once (w: blocked tasks, l: every CPU's
backtrace) and answers ``sysrq-done``; the kernel's answer is on the console.
"""

import dataclasses
import json
import os
import queue
import shlex
import sys
import threading
import time
from pathlib import Path

import pytest

from .rootfs import GUEST_RESULTS_DIR, GUEST_SOURCE_DIR
from .vm import VM, VMError

MARK = "@@mptcp-nvme@@ "
# The agent's channel: fds the guest shell dups from the command's stdin and stdout
# before pytest's capture takes fds 0-2 over (fd 1 then goes to stderr).
REQUEST_FD, REPLY_FD = 3, 4
SOURCE_DIR = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class GuestLayout:
    """Where the guest finds the source tree, writes results, and which Python it runs."""
    source: str
    results: str
    python: str

    @classmethod
    def on_rootfs(cls):
        """The suite's rootfs: the source and results folders shared at fixed mount points."""
        return cls(GUEST_SOURCE_DIR, GUEST_RESULTS_DIR, "python3")

    @classmethod
    def on_host_root(cls, results):
        """The host's own root: the same paths as on the host, and this venv's Python."""
        return cls(str(SOURCE_DIR), str(results), sys.executable)


def guest_command(test_args, extra_args=(), layout=GuestLayout.on_rootfs()):
    """The shell command that starts the agent inside the guest (``extra_args`` are
    guest paths already, e.g. --guest-config)."""
    argv = [layout.python, "-m", "pytest", "-p", "mptcp_nvme.plugin", "--guest-agent",
            "-p", "no:cacheprovider", "-p", "no:terminal", "--rootdir", layout.source,
            "--results-dir", layout.results, *extra_args]
    argv += [guest_path(arg, layout.source) for arg in test_args]
    return (f"cd {layout.source} && PYTHONPATH={layout.source} "
            f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 exec {shlex.join(argv)} "
            f"{REQUEST_FD}<&0 {REPLY_FD}>&1 1>&2")


def guest_path(arg, source=GUEST_SOURCE_DIR):
    """Map a host test path (or nodeid) inside the source tree to the guest's view."""
    path, sep, rest = str(arg).partition("::")
    absolute = Path(path).resolve()
    try:
        relative = absolute.relative_to(SOURCE_DIR)
    except ValueError:
        raise ValueError(f"{arg}: selftests must live inside {SOURCE_DIR} to be shared "
                         "with the guest") from None
    return f"{source}/{relative}{sep}{rest}"


class NotRun(Exception):
    """The guest is well but could not run the test (it did not collect it)."""


class GuestSession:
    """One booted guest running the agent; ``run()`` executes one test in it."""

    def __init__(self, vm_config, boot_timeout):
        self.vm = VM(vm_config)
        self.boot_timeout = boot_timeout
        self.booted_in = None
        self.collect_errors = []

    def start(self):
        started = time.monotonic()
        self.vm.start()
        try:
            self._receive("ready", self.boot_timeout, "the guest agent to start")
        except BaseException:
            self.vm.stop(grace=0)
            raise
        self.booted_in = time.monotonic() - started
        return self

    def _receive(self, event, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            line = self.vm.read_line(deadline - time.monotonic(), what)
            if not line.startswith(MARK):
                self.vm._log(f"[guest stdout] {line}")
                continue
            message = json.loads(line[len(MARK):])
            if message.get("event") == event:
                return message
            if message.get("event") == "collect-error":
                self.collect_errors.append(f"{message['nodeid']}: {message['text']}")

    def run(self, nodeid, next_nodeid, timeout):
        """Serialized reports of one test; VMError if the guest dies or overruns, NotRun
        (with the guest's collection errors) if it did not collect the test."""
        self.vm.send_line(json.dumps({"op": "run", "nodeid": nodeid, "next": next_nodeid}))
        result = self._receive("result", timeout, f"the result of {nodeid}")
        if result.get("error"):
            raise NotRun("\n".join([result["error"], *self.collect_errors]))
        return result["reports"]

    def sysrq(self, keys="wl", timeout=15.0):
        """Ask the guest (whose test overran) to dump blocked tasks and CPU backtraces
        to the console; True when it confirmed. The console lines follow."""
        try:
            self.vm.send_line(json.dumps({"op": "sysrq", "keys": keys}))
            self._receive("sysrq-done", timeout, "the guest to run sysrq")
        except VMError:
            return False
        return True

    @property
    def alive(self):
        return self.vm.alive

    def close(self, grace=60.0):
        self.vm.stop(grace=grace)


class GuestAgent:
    """pytest plugin for the guest: runs the tests the host asks for, one at a time."""

    def __init__(self, config):
        self.config = config
        self.reports = []
        config.option.tbstyle = "short"      # failure text travels to the host's KTAP
        self.requests = os.fdopen(REQUEST_FD, "r")
        self.channel = os.fdopen(REPLY_FD, "w", buffering=1)
        self.lock = threading.Lock()
        self.runs = queue.Queue()             # run requests for the main thread; None: EOF
        threading.Thread(target=self._read_requests, daemon=True).start()

    def send(self, **message):
        with self.lock:
            self.channel.write(MARK + json.dumps(message) + "\n")
            self.channel.flush()

    def _read_requests(self):
        """Requests from the host: runs queue up, sysrq is served at once (the main
        thread may be stuck in the test that the host wants the backtraces of)."""
        for line in self.requests:
            request = json.loads(line)
            if request.get("op") == "sysrq":
                with open("/proc/sys/kernel/sysrq", "w") as sysrq:
                    sysrq.write("1")
                for key in request.get("keys", "wl"):
                    with open("/proc/sysrq-trigger", "w") as trigger:
                        trigger.write(key)
                self.send(event="sysrq-done")
            else:
                self.runs.put(request)
        self.runs.put(None)

    def pytest_runtest_logreport(self, report):
        self.reports.append(report)

    def pytest_collectreport(self, report):
        if report.failed:
            self.send(event="collect-error", nodeid=report.nodeid, text=str(report.longrepr))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        items = {item.nodeid: item for item in session.items}
        self.send(event="ready", collected=len(items))
        hook = self.config.hook
        for request in iter(self.runs.get, None):
            item = items.get(request["nodeid"])
            self.reports = []
            if item is None:
                self.send(event="result", nodeid=request["nodeid"], reports=[],
                          error=f"{request['nodeid']} was not collected in the guest")
                continue
            hook.pytest_runtest_protocol(item=item, nextitem=items.get(request.get("next")))
            self.send(event="result", nodeid=item.nodeid, reports=[
                hook.pytest_report_to_serializable(config=self.config, report=report)
                for report in self.reports])
        return True

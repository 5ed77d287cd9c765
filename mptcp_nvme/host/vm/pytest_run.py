"""Host side: every selftest runs in this process's guest (one VM per xdist worker)."""

import contextlib
import itertools
import os
import shutil
import sys
import time
from pathlib import Path

import psutil
import pytest
from _pytest.reports import TestReport

from mptcp_nvme import SOURCE_DIR
from mptcp_nvme import options
from mptcp_nvme.channel import (ARTIFACT, CRASH, DIAG, DIRECTIVE, FLAKY, GUEST_CONFIG_NAME,
                                KSELFTEST_DIR, BLKTESTS_DIR, results_dir)
from mptcp_nvme import known_issues
from mptcp_nvme.host.vm import guest_failure as failures
from mptcp_nvme.host.inputs import bytecode, rootfs
from mptcp_nvme.host.inputs import kernel as kernel_mod
from mptcp_nvme.host.vm.guest_session import GuestLayout, GuestSession, NotRun, guest_command
from mptcp_nvme.errors import SetupError, UsageError
from mptcp_nvme.host.vm.qemu import BootFailed, VMConfig, VMError, VMTimeout, require_host_tools, resolve_accel


PREPARED = pytest.StashKey[tuple]()


def prepare(config):
    """The shared inputs of every VM of this run, made once (before any VM boots, on
    the xdist controller too) and only read afterwards: (rootfs, kernel, root image)."""
    if PREPARED not in config.stash:
        opt = config.getoption
        require_host_tools()
        root = rootfs.ensure(opt("rootfs"))
        kernel = kernel_mod.locate(opt("kernel"), root, opt("modules"))
        image = None if root == Path("/") else rootfs.disk_image(
            root, kernel_mod.image_modules(kernel))
        if image:       # the guest sees SOURCE_DIR read-only: its .pyc files made here
            bytecode.compile_for_guest(root, rootfs.guest_python(root), SOURCE_DIR)
        config.stash[PREPARED] = (root, kernel, image)
    return config.stash[PREPARED]


def kernel_identity(config):
    """kernel.identity() of the run's kernel for results.json; a native run's is this
    machine's running kernel. None when it cannot be located (the run said why)."""
    if not config.getoption("vm"):
        return {"release": os.uname().release, "origin": "running kernel", "tree": None,
                "commit": None, "arch": os.uname().machine}
    try:
        kernel = config.stash[PREPARED][1] if PREPARED in config.stash else kernel_mod.locate(
            config.getoption("kernel"), rootfs.ensure(config.getoption("rootfs")),
            config.getoption("modules"))
    except (SetupError, UsageError):
        return None
    return kernel_mod.identity(kernel)


def guest_config_file(config, folder):
    """The run's guest options, written where the guest reads them (its results folder)."""
    path = Path(folder) / GUEST_CONFIG_NAME
    path.write_text(options.guest_config(options.values(config.option)) + "\n")
    return path


def share_installs(results, out, layout):
    """The run's installed kselftests (host/kselftest.py) and blktests copy
    (host/blktests.py), copied into the VM's results folder: the guest runs them there,
    writable as both expect their folder to be. {host folder: guest folder} for
    guest_command; {} when the run has neither."""
    shared = {}
    for name in (KSELFTEST_DIR, BLKTESTS_DIR):
        installed = Path(results) / name
        if installed.is_dir():
            shutil.copytree(installed, Path(out) / name, symlinks=True, dirs_exist_ok=True)
            shared[installed] = f"{layout.results}/{name}"
    return shared


RUN_ID = "MPTCP_NVME_RUN_ID"     # the run's controller pid, inherited by its xdist workers


def run_id():
    """The id of this run (VmReaper sets it in the controller before any worker starts):
    every VM of the run carries it in its name."""
    return os.environ.get(RUN_ID) or str(os.getpid())


def vm_prefix(run):
    return f"mptcp-nvme-{run}-"


def reap_vms(run):
    """Every qemu of run ``run`` still alive, terminated (killed if it lingers): a
    worker killed with its VM up (the controller interrupted: SIGTERM, Ctrl-C) leaves
    its qemu orphaned. How many there were."""
    prefix = vm_prefix(run)
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if any("qemu-system" in a for a in argv[:1]) and any(a.startswith(prefix) for a in argv):
            found.append(proc)
    for proc in found:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(found, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return len(found)


class VmReaper:
    """The run's controller (or its only process): names the run for its VMs, and at the
    end, however the run ended, stops any VM of it still alive."""

    def __init__(self):
        self.run = str(os.getpid())
        os.environ[RUN_ID] = self.run          # before xdist spawns the workers

    def pytest_unconfigure(self, config):
        reaped = reap_vms(self.run)
        if reaped:
            print(f"mptcp-nvme: stopped {reaped} VM(s) of this run left running by its "
                  "workers", file=sys.stderr)


BOOT_ATTEMPTS = 2
GUEST_ARGS_NAME = "guest-args.txt"      # the test files, in the VM's results folder


class VmRunner:
    """Host side: every selftest runs in this process's guest (one VM per xdist worker)."""

    def __init__(self, config):
        self.config = config
        self.session = None
        self.boot_error = None
        self.boots = itertools.count()
        self.diagnostics_sent = False
        self.header = None
        self.worker = getattr(config, "workerinput", {}).get("workerid", "main")
        self.kernel = None
        self._known_issues = None

    def _vm_config(self):
        opt = self.config.getoption
        root, kernel, image = prepare(self.config)
        self.kernel = kernel
        out = results_dir(self.config) / f"vm-{self.worker}"
        out.mkdir(parents=True, exist_ok=True)
        layout = GuestLayout.on_rootfs() if image else GuestLayout.on_host_root(out.resolve())
        shared = share_installs(results_dir(self.config), out, layout)
        accel, why = resolve_accel(opt("accel"), kernel.image)
        self.header = (f"vm {self.worker}: {kernel.origin}, accel {accel} ({why}), "
                       f"rootfs {root}")
        return VMConfig(
            kernel=kernel, root_image=image, accel=accel, cpus=opt("cpus"), memory=opt("memory"),
            append=tuple(opt("append") or ()), boot_timeout=opt("boot_timeout"),
            rwdirs={layout.results: str(out.resolve())},
            rodirs={layout.source: str(SOURCE_DIR)} if image else {},
            console_log=out / f"console-{next(self.boots)}.log",
            name=f"{vm_prefix(run_id())}{self.worker}",
            command=guest_command(self.config.args, [
                "--guest-config", f"{layout.results}/{guest_config_file(self.config, out).name}"],
                layout, shared, args_file=(out / GUEST_ARGS_NAME,
                                           f"{layout.results}/{GUEST_ARGS_NAME}")),
        )

    def _guest(self):
        """The running guest, booted when needed. A boot that fails (VMError) or cannot
        be set up (SetupError) is BootFailed for this and every later test; any other
        exception is a bug in this code and keeps its traceback."""
        if self.boot_error:
            raise BootFailed(f"not run: the VM failed to boot earlier ({self.boot_error})")
        if self.session is None or not self.session.alive:
            if self.session is not None:
                self.session.close(grace=0)
            self.session = None
            self.diagnostics_sent = False
            try:
                self.session = self._boot()
            except (VMError, SetupError, UsageError) as err:
                self.boot_error = str(err).splitlines()[0]
                raise BootFailed(f"VM boot failed: {err}") from None
        return self.session

    def _boot(self):
        """A booted guest; a guest that dies or hangs before its agent is ready is booted
        once more (TCG guests rarely crash while patching kernel text at boot)."""
        retried = ""
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            cfg = self._vm_config()
            try:
                session = GuestSession(cfg, cfg.boot_timeout).start()
            except VMError as err:
                if attempt == BOOT_ATTEMPTS:
                    raise
                retried += (f"; boot {attempt} failed ({str(err).splitlines()[0]}, "
                            f"see {cfg.console_log.name}), booted again")
                continue
            self.header += retried
            return session

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        """Run ``item`` in the guest; with --retry-failed N a failed test runs again on a
        fresh VM, up to N times, unless the kernel crashed (never retried away).

        Not pytest-rerunfailures: it reruns by calling pytest_runtest_protocol's own
        setup/call/teardown in this process, but here the test runs in the guest and
        this hook replaces that protocol; a rerun must also boot a fresh VM."""
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        retries = self.config.getoption("retry_failed")
        earlier = []
        for attempt in range(retries + 1):
            reports = self._run_once(item, nextitem)
            failed = any(r.failed for r in reports)
            crashed = any(name == CRASH for r in reports for name, _ in r.user_properties)
            if not failed or crashed or attempt == retries:
                break
            earlier.append(first_failure_line(reports))
            if self.session is not None:
                self.session.close(grace=0)           # the retry gets a fresh VM
        if earlier and not failed:
            reports[0].user_properties += [
                (DIAG, f"flaky: passed on attempt {attempt + 1} of {retries + 1}; failed "
                       f"before: {' | '.join(earlier)}"), (FLAKY, attempt)]
        if not self.diagnostics_sent and self.header:
            booted = f", booted in {self.session.booted_in:.1f}s" if self.session else ""
            reports[0].user_properties.insert(0, (DIAG, self.header + booted))
            self.diagnostics_sent = True
        known_issues.apply(reports, self.known_issues(), self.kernel.release if self.kernel else None)
        for report in reports:
            ihook.pytest_runtest_logreport(report=report)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def known_issues(self):
        if self._known_issues is None:
            self._known_issues = known_issues.load(self.config.getoption("known_issues"))
        return self._known_issues

    def _run_once(self, item, nextitem):
        started = time.monotonic()
        mark = None
        try:
            guest = self._guest()
            mark = guest.vm.console_mark()
            timeout = self._timeout(item)
            data = guest.run(item.nodeid, nextitem.nodeid if nextitem else None, timeout)
            if guest.vm.fatal:           # the test survived an Oops; the next gets a fresh VM
                guest.close(grace=0)
            return [self._report(d) for d in data]
        except NotRun as err:
            return failure_reports(item, str(err), time.monotonic() - started)
        except VMError as err:
            return self._guest_failure_reports(item, err, mark, time.monotonic() - started)

    def _guest_failure_reports(self, item, err, mark, duration):
        """The guest died or overran during ``item``: its crash reports (after sysrq w/l
        for an overrun) instead of a console tail, the console kept as an artifact."""
        hung = isinstance(err, VMTimeout)
        session, lines = self.session, []
        if session is not None and mark is not None:
            if hung and session.alive and session.sysrq():
                session.vm.wait_console_quiet()
            lines = session.vm.console_since(mark)
        if session is not None:
            session.close(grace=0)
        headline = str(err).split("\n--- console tail ---", 1)[0]
        if mark is None:                  # never booted: the boot error says it all
            return failure_reports(item, str(err), duration, "TIMEOUT" if hung else None)
        tree = getattr(self.kernel, "tree", None)
        report = failures.guest_failure(headline, lines, results_dir(self.config) / f"vm-{self.worker}",
                                        item.nodeid, tree=tree, hung=hung)
        props = [(CRASH, c.summary()) for c in report.crashes]
        props += [(ARTIFACT, path) for path in report.artifacts]
        return failure_reports(item, report.text, duration, "TIMEOUT" if hung else None, props)

    def _report(self, data):
        report = self.config.hook.pytest_report_from_serializable(config=self.config, data=data)
        if isinstance(report.longrepr, list):     # a skip's (path, line, reason) after JSON
            report.longrepr = tuple(report.longrepr)
        return report

    def _timeout(self, item):
        marker = item.get_closest_marker("timeout")
        return float(marker.args[0]) if marker else self.config.getoption("test_timeout")

    def pytest_sessionfinish(self, session):
        if self.session is not None:
            self.session.close()


def first_failure_line(reports):
    """The last line of a failed report's text (the assertion or error), for 'flaky'."""
    for report in reports:
        if report.failed:
            lines = [l for l in report.longreprtext.splitlines() if l.strip()]
            return lines[-1].strip()[:200] if lines else f"{report.when} failed"
    return "?"


def failure_reports(item, text, duration, directive=None, extra=()):
    """setup/call/teardown reports for a test that the VM could not run."""
    props = (list(item.user_properties) + ([(DIRECTIVE, directive)] if directive else [])
             + list(extra))
    common = dict(nodeid=item.nodeid, location=item.location, keywords={}, sections=[],
                  user_properties=props)
    return [TestReport(outcome="passed", longrepr=None, when="setup", duration=0, **common),
            TestReport(outcome="failed", longrepr=text, when="call", duration=duration, **common),
            TestReport(outcome="passed", longrepr=None, when="teardown", duration=0, **common)]

"""The pytest plugin: KTAP reporting, running selftests in a VM (host) and serving them (guest).

Registered through the ``pytest11`` entry point; inert unless one of ``--ktap``, ``--vm``
or ``--guest-agent`` is given.
"""

import collections
import fnmatch
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from _pytest.reports import TestReport

from . import kernel as kernel_mod
from . import health, ktap, options, rootfs
from .requirements import Features
from .remote import SOURCE_DIR, GuestAgent, GuestLayout, GuestSession, NotRun, guest_command
from .vm import VMConfig, VMError, VMTimeout, require_host_tools, resolve_accel

DIAG = "ktap_diag"
DESCRIPTION = "ktap_description"
DIRECTIVE = "ktap_directive"
CRASH = "crash"               # crash.Crash.summary() of a kernel crash report
ARTIFACT = "artifact"         # a file kept for the test (host path)
FLAKY = "flaky"               # failed attempts before it passed
FAILURE_LINES = 60


def pytest_addoption(parser):
    group = parser.getgroup("mptcp_nvme", "mptcp-nvme selftests")
    options.add_pytest_options(group)
    group.addoption("--ktap", metavar="PATH", help="write KTAP to PATH ('-' for stdout)")
    group.addoption("--vm", action="store_true", help="run the selftests in a virtme-ng guest")
    group.addoption("--guest-agent", action="store_true",
                    help="internal: serve tests to the host from inside the guest")
    group.addoption("--guest-config", metavar="FILE",
                    help="internal: the run's guest options as JSON (options.guest_config)")


def path_count(text):
    """--paths as the CLI checks it (options.OPTIONS)."""
    return options.BY_NAME["paths"].convert(text)


def guest_config_file(config, folder):
    """The run's guest options, written where the guest reads them (its results folder)."""
    path = Path(folder) / GUEST_CONFIG_NAME
    path.write_text(options.guest_config(options.values(config.option)) + "\n")
    return path


GUEST_CONFIG_NAME = "guest-config.json"


def pytest_configure(config):
    config.addinivalue_line("markers", "requires(*what): kernel/rootfs requirements, "
                            "e.g. 'module:nvmet', 'kconfig:NVME_TCP_TLS', 'tool:fio', "
                            "'trtype:mptcp', 'iopolicy:round-robin', 'feature:tls'")
    config.addinivalue_line("markers", "timeout(seconds): per-test limit in the VM")
    if config.getoption("guest_config"):
        options.apply_guest_config(Path(config.getoption("guest_config")).read_text(),
                                   config.option, tempfile.mkdtemp(prefix="mptcp-nvme-"))
    if config.getoption("guest_agent"):
        config.pluginmanager.register(GuestAgent(config), "mptcp_nvme_agent")
        enable_selftest_checks(config)
    elif config.getoption("vm"):
        if not is_xdist_controller(config):
            config.pluginmanager.register(VmRunner(config), "mptcp_nvme_vm")
    elif config.getoption("ktap"):
        enable_selftest_checks(config)     # native run: sudo pytest selftests --ktap -
    if config.getoption("ktap") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(KtapReporter(config), "mptcp_nvme_ktap")
        if config.getoption("results_dir") and not config.getoption("guest_agent"):
            from .results import ResultsJson
            names = {"diag": DIAG, "description": DESCRIPTION, "crash": CRASH,
                     "artifact": ARTIFACT, "flaky": FLAKY}
            folder = results_dir(config)
            config.pluginmanager.register(
                ResultsJson(folder / "results.json", folder, summarize, names),
                "mptcp_nvme_results_json")


def enable_selftest_checks(config):
    """Requirements and kernel health for tests that run on this kernel (idempotent;
    not on the host of a --vm run, whose tests run in the guest)."""
    if not config.getoption("vm") and not config.pluginmanager.has_plugin(SelftestChecks.NAME):
        config.pluginmanager.register(SelftestChecks(config), SelftestChecks.NAME)


FEATURES = pytest.StashKey[Features]()


def probed(config):
    """The one probe of this session (loads nvmet, nvmet-tcp, nvme-tcp; mounts configfs)."""
    if FEATURES not in config.stash:
        config.stash[FEATURES] = Features.probe()
    return config.stash[FEATURES]


@pytest.fixture(scope="session")
def features(pytestconfig):
    """What the running kernel offers (requirements.Features)."""
    return probed(pytestconfig)


def require(config, *requirements):
    """Skip naming every unmet requirement; with --expect-all-features fail instead,
    unless each unmet one matches an --allow-missing pattern."""
    features = probed(config)
    unmet = [(requirement, why) for requirement in requirements
             if (why := features.unmet(requirement))]
    if unmet:
        message = "missing: " + "; ".join(why for _, why in unmet)
        allowed = config.getoption("allow_missing") or ()
        excused = all(any(fnmatch.fnmatchcase(requirement, pattern) for pattern in allowed)
                      for requirement, _ in unmet)
        if config.getoption("expect_all_features") and not excused:
            pytest.fail(message + " (--expect-all-features)", pytrace=False)
        pytest.skip(message)


class SelftestChecks:
    """Per test: declared requirements checked (every unmet one named in the SKIP), the
    kernel log since it started checked for problems (a hit fails it), and on failure its
    kernel log and failure text saved under the results directory."""

    NAME = "mptcp_nvme_checks"
    TEST_LOG = pytest.StashKey[list]()

    def __init__(self, config):
        self.config = config
        self.kernel_log = None
        self.kmemleak = None

    def pytest_runtest_setup(self, item):
        if self.kernel_log is None:
            self.kernel_log = health.KernelLog()
            self.kmemleak = health.Kmemleak()
            summary = probed(self.config).summary()
            if not self.kmemleak.available:
                summary += "; kmemleak not checked (no CONFIG_DEBUG_KMEMLEAK)"
            item.user_properties.append((DIAG, summary))
        self.kernel_log.new_lines()             # this test's window starts here
        item.stash[self.TEST_LOG] = []
        require(self.config, *[r for mark in item.iter_markers("requires") for r in mark.args])

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if self.kernel_log is None or self.TEST_LOG not in item.stash:
            return report
        lines = self.kernel_log.new_lines()
        item.stash[self.TEST_LOG] += lines
        if report.when == "teardown" and self.kmemleak.available:
            if leaks := self.kmemleak.new_leaks():
                lines = lines + leaks.splitlines()
        bad = health.problems(lines)
        if bad and not report.failed:
            from . import crash
            found = crash.extract("\n".join(lines))
            report.outcome = "failed"
            report.longrepr = "\n\n".join(
                [f"kernel log reports problems during {report.when}:"]
                + [c.describe() for c in found]
                + (["other problem lines:\n" + "\n".join(bad)] if not found else []))
            report.user_properties += [(CRASH, c.summary()) for c in found]
        if report.failed:
            self._save_artifacts(item, report)
        return report

    def _save_artifacts(self, item, report):
        folder = results_dir(self.config) / "artifacts" / re.sub(r"[^\w.-]+", "_", item.nodeid)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "dmesg.txt").write_text("\n".join(item.stash[self.TEST_LOG]) + "\n")
        (folder / f"{report.when}.txt").write_text(report.longreprtext + "\n" + "".join(
            f"\n--- {name} ---\n{text}" for name, text in report.sections))

    def pytest_sessionfinish(self, session):
        if self.kernel_log is not None:
            dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
            (results_dir(self.config) / "dmesg.txt").write_text(dmesg)
            self.kernel_log.close()
            left = health.leftovers()
            (results_dir(self.config) / "leftovers.json").write_text(json.dumps(left, indent=2))
            if any(left.values()):
                print(f"mptcp-nvme: left behind after the run: {left}", file=sys.stderr)


def is_xdist_controller(config):
    return (not hasattr(config, "workerinput")
            and getattr(config.option, "numprocesses", None) not in (None, 0))


def results_dir(config):
    path = Path(config.getoption("results_dir") or "results")
    path.mkdir(parents=True, exist_ok=True)
    return path


def describe(item, unique=False):
    """What a test checks, for KTAP: its docstring's first line (formatted with its
    parameters) or its name, followed by the parameter id unless ``unique``."""
    doc = (getattr(item, "obj", None).__doc__ or "").strip().splitlines()
    params = getattr(getattr(item, "callspec", None), "params", {})
    text = item.originalname if hasattr(item, "originalname") else item.name
    if doc:
        try:
            text = doc[0].strip().format(**params)
        except (KeyError, IndexError, ValueError):
            text = doc[0].strip()
    callspec = getattr(item, "callspec", None)
    return f"{text} [{callspec.id}]" if callspec and not unique else text


@pytest.hookimpl(tryfirst=True)       # before -k/-m deselection: descriptions stay stable
def pytest_collection_modifyitems(config, items):
    variants = collections.Counter(function_key(item) for item in items)
    for item in items:
        item.user_properties.append((DESCRIPTION, describe(item, variants[function_key(item)] == 1)))


def function_key(item):
    return item.nodeid.split("[", 1)[0]


class KtapReporter:
    """Turns pytest reports (local, from a VM or from xdist workers) into KTAP."""

    def __init__(self, config):
        target = config.getoption("ktap")
        self.stream = sys.stdout if target == "-" else open(target, "w", buffering=1)
        self.writer = ktap.KtapWriter(self.stream, version=config.getoption("ktap_version"))
        self.pending = {}
        self.collect_errors = 0

    def pytest_sessionstart(self, session):
        self.writer.header()

    def pytest_collection_finish(self, session):
        if not is_xdist_controller(session.config):
            self.writer.plan(len(session.items))

    def pytest_xdist_node_collection_finished(self, node, ids):
        if self.writer.planned is None:
            self.writer.plan(len(ids))

    def pytest_collectreport(self, report):
        if report.failed:
            self.collect_errors += 1
            self.writer.diag(f"collection error in {report.nodeid}:\n{report.longreprtext}")

    def pytest_runtest_logreport(self, report):
        self.pending.setdefault(report.nodeid, []).append(report)
        if report.when == "teardown":
            self._emit(self.pending.pop(report.nodeid))

    def _emit(self, reports):
        pairs = list(itertools.chain.from_iterable(r.user_properties for r in reports))
        props = dict(pairs)
        for diagnostic in dict.fromkeys(value for name, value in pairs if name == DIAG):
            self.writer.diag(diagnostic)
        description = props.get(DESCRIPTION, reports[0].nodeid)
        outcome, reason = summarize(reports)
        if props.get(DIRECTIVE) and outcome in ("fail", "error"):
            outcome, reason = "error", f"{props[DIRECTIVE]} {reason}".strip()
        if outcome in ("fail", "error", "xpass"):
            text = "\n".join(r.longreprtext for r in reports if r.failed)
            self.writer.diag("\n".join(failure_window(text.splitlines())))
        time_ms = sum(r.duration for r in reports) * 1000
        self.writer.result(description, outcome, time_ms, reason)

    def pytest_sessionfinish(self, session, exitstatus):
        self.writer.totals()
        code = self.writer.exit_code
        if self.collect_errors or exitstatus in (pytest.ExitCode.INTERNAL_ERROR,
                                                 pytest.ExitCode.INTERRUPTED):
            code = ktap.EXIT_FAIL
        session.config.stash[KTAP_EXIT] = code


KTAP_EXIT = pytest.StashKey[int]()


def failure_window(lines, head=40, tail=FAILURE_LINES - 40):
    """A long failure text's head (a crash report starts with kind, headline and
    fingerprint) and tail (an assertion ends with its message)."""
    if len(lines) <= head + tail:
        return lines
    return [*lines[:head], f"... ({len(lines) - head - tail} lines in junit.xml)", *lines[-tail:]]


def summarize(reports):
    """(outcome, reason) of one test from its setup/call/teardown reports."""
    for report in reports:
        if report.skipped:
            reason = skip_reason(report)
            if hasattr(report, "wasxfail"):
                return "xfail", report.wasxfail
            return "skip", reason
    for report in reports:
        if report.failed:
            # a kernel problem found after the test (kmemleak at teardown) is its failure
            found_by_gate = any(name == CRASH for name, _ in report.user_properties)
            if report.when == "call" or found_by_gate:
                return "fail", ""
            return "error", f"{report.when} failed"
    if any(hasattr(r, "wasxfail") for r in reports):
        return "xpass", ""
    return "pass", ""


def skip_reason(report):
    if isinstance(report.longrepr, tuple):
        return report.longrepr[2].removeprefix("Skipped: ")
    return str(report.longrepr)


BOOT_ATTEMPTS = 2


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

    def _vm_config(self):
        opt = self.config.getoption
        require_host_tools()
        root = rootfs.ensure(opt("rootfs"))
        kernel = kernel_mod.locate(opt("kernel"), root, opt("modules"))
        self.kernel = kernel
        kernel_mod.install_modules(kernel, root)
        image = None if root == Path("/") else rootfs.disk_image(root)
        out = results_dir(self.config) / f"vm-{self.worker}"
        out.mkdir(parents=True, exist_ok=True)
        layout = GuestLayout.on_rootfs() if image else GuestLayout.on_host_root(out.resolve())
        accel, why = resolve_accel(opt("accel"), kernel.image)
        self.header = (f"vm {self.worker}: {kernel.origin}, accel {accel} ({why}), "
                       f"rootfs {root}")
        return VMConfig(
            kernel=kernel, root_image=image, accel=accel, cpus=opt("cpus"), memory=opt("memory"),
            append=tuple(opt("append") or ()), boot_timeout=opt("boot_timeout"),
            rwdirs={layout.results: str(out.resolve())},
            rodirs={layout.source: str(SOURCE_DIR)} if image else {},
            console_log=out / f"console-{next(self.boots)}.log",
            name=f"mptcp-nvme-{os.getpid()}-{self.worker}",
            command=guest_command(self.config.args, [
                "--guest-config", f"{layout.results}/{guest_config_file(self.config, out).name}"],
                layout),
        )

    def _guest(self):
        if self.boot_error:
            raise VMError(f"not run: the VM failed to boot earlier ({self.boot_error})")
        if self.session is None or not self.session.alive:
            if self.session is not None:
                self.session.close(grace=0)
            self.session = None
            self.diagnostics_sent = False
            try:
                self.session = self._boot()
            except Exception as err:
                self.boot_error = str(err).splitlines()[0]
                raise VMError(f"VM boot failed: {err}") from None
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
        for report in reports:
            ihook.pytest_runtest_logreport(report=report)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _run_once(self, item, nextitem):
        started = time.monotonic()
        mark = None
        try:
            guest = self._guest()
            mark = guest.vm.console_mark()
            timeout = self._timeout(item)
            data = guest.run(item.nodeid, nextitem.nodeid if nextitem else None, timeout)
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
        from . import failures
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

"""The kernel tree's own kselftests as pytest items: one item per ``collection:test``
entry of an installed kselftest tree's kselftest-list.txt (made by the host with
``make -C tools/testing/selftests install``, host/kselftest.py), run with kselftest's own
runner (``run_kselftest.sh -t``, per-test timeout from the collection's ``settings``).

The runner's KTAP line says how the test ended; the test's own output (the runner
prefixes it with ``# ``) goes with the report as nested KTAP (channel.SUBTESTS), which
the host's reporters indent under the test's result. An item is an item: the VM runner
sends it to the guest like any selftest, and the kernel-log gate, crash reports, JUnit
and results.json apply as they do to every test. Parsing is pure (parse_runner_output,
nested_ktap), unit-tested on captured runs under tests/data/kselftest/.

Node ids do not depend on where the install lies (the host's results folder, the
guest's copy of it): ``kselftest::net/mptcp:pm_netlink.sh``.
"""

import dataclasses
import re
from pathlib import Path

import pytest

from mptcp_nvme import proc
from mptcp_nvme.channel import DIRECTIVE, SUBTESTS, artifact_dir, results_dir

LIST_NAME = "kselftest-list.txt"
RUNNER = "run_kselftest.sh"
RUNNER_LOG = "run_kselftest.txt"    # its stdout, beside the test's log, in the artifacts
NODE = "kselftest"
DEFAULT_TIMEOUT = 45          # kselftest/runner.sh's kselftest_default_timeout
MARGIN = 60                   # beyond the runner's own timeout: it reports TIMEOUT itself
FAILURE_TAIL = 10             # lines of a failed test's output in its failure text

_RESULT = re.compile(r"^(?P<ok>ok|not ok) \d+ (?P<name>.*?)(?: # (?P<directive>.*))?$")
_RUNNER_NOTE = re.compile(r"^# (?:timeout set to|overriding timeout to) \d+$")
_KTAP_LINE = re.compile(r"^\s*(?:(?:TAP|KTAP) version \d+|1\.\.\d+|(?:not )?ok \d+\b|#)")


def header(entry):
    """How kselftest's runner names ``collection:test`` (its TEST_HDR_MSG)."""
    collection, _, test = entry.rpartition(":")
    return f"selftests: {collection}: {test}"


def entries(text):
    """The ``collection:test`` entries of a kselftest-list.txt."""
    return [line.strip() for line in text.splitlines() if ":" in line]


def settings_timeout(text):
    """The ``timeout=`` of a collection's settings file, else the runner's default."""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "timeout" and value.strip().isdigit():
            return int(value)
    return DEFAULT_TIMEOUT


@dataclasses.dataclass(frozen=True)
class RunnerResult:
    """One test's end as run_kselftest.sh reported it."""
    outcome: str                  # ktap.OUTCOMES: pass, fail, skip or xfail
    reason: str                   # a skip's reason; exit=N or TIMEOUT N seconds for a failure
    output: tuple                 # the test's own lines, the runner's '# ' removed
    result_line: str              # the runner's result line ('' when it printed none)

    @property
    def timed_out(self):
        return self.reason.startswith("TIMEOUT")


def parse_runner_output(text, entry, log=""):
    """run_kselftest.sh's stdout for one ``entry`` and, run with ``-p DIR``, the test's
    log file -> RunnerResult. The runner prefixes the test's lines with '# ', inline
    or in the log; its own 'timeout set to' notes are left out. No result line (the
    runner did not get to run it) is a failure with whatever it printed."""
    name = header(entry)
    inline, result, started = [], None, False
    for line in text.splitlines():
        match = _RESULT.match(line)
        if match and match["name"] == name:
            result = match
            break
        if started:
            inline.append(line)
        started = started or line == f"# {name}"
    output = tuple(unprefixed(line) for line in inline + log.splitlines()
                   if not _RUNNER_NOTE.match(line))
    if result is None:
        return RunnerResult("fail", f"{RUNNER} printed no result for {entry}",
                            output or tuple(text.splitlines()), "")
    directive = (result["directive"] or "").strip()
    if result["ok"] == "not ok":
        return RunnerResult("fail", directive or "not ok", output, result[0])
    if directive.upper().startswith("SKIP"):
        return RunnerResult("skip", skip_reason(output), output, result[0])
    if directive.upper().startswith("XFAIL"):
        return RunnerResult("xfail", directive[5:].strip(), output, result[0])
    return RunnerResult("pass", "", output, result[0])


def unprefixed(line):
    """A test's line as it printed it, without the runner's '# '."""
    return line[2:] if line.startswith("# ") else line.removeprefix("#")


def skip_reason(output):
    """Why a test skipped: its last line that says so, else its last two lines."""
    lines = [line.strip() for line in output if line.strip()]
    said = [line for line in lines if "skip" in line.lower()]
    reason = said[-1] if said else " ".join(lines[-2:]) or "exit 4 (KSFT_SKIP)"
    return " ".join(reason.replace("#", " ").split())[:200]


def nested_ktap(output):
    """A test's output as the body of a KTAP subtest: its own KTAP lines (version,
    plan, results, diagnostics) as they are, any other line as a diagnostic."""
    return "\n".join(line.rstrip() if _KTAP_LINE.match(line) else f"# {line}".rstrip()
                     for line in output if line.strip())


class KselftestFailed(Exception):
    """A kselftest ended 'not ok'; the message is its failure text."""


class KselftestList(pytest.File):
    """An installed kselftest tree's kselftest-list.txt: an item per entry."""

    def collect(self):
        for entry in entries(self.path.read_text()):
            yield KselftestItem.from_parent(self, name=entry)


class KselftestItem(pytest.Item):
    """One ``collection:test``, run by run_kselftest.sh in the install it was listed in."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.originalname = header(self.name)        # the KTAP description (plugin.describe)
        self.add_marker(pytest.mark.timeout(self.timeout() + MARGIN))   # the host's limit

    def timeout(self):
        """--kselftest-timeout, else the collection's settings, else the runner's default."""
        override = self.config.getoption("kselftest_timeout", None)
        if override:
            return override
        settings = self.path.parent / self.name.rpartition(":")[0] / "settings"
        return settings_timeout(settings.read_text()) if settings.is_file() else DEFAULT_TIMEOUT

    def runtest(self):
        """run_kselftest.sh -t ENTRY -p DIR: the test's output goes to a log in its
        artifacts folder, not to the runner's default /dev/stdout (in a vng guest,
        that is vng's own stdout port, the host's channel to the agent)."""
        override = self.config.getoption("kselftest_timeout", None)
        logs = artifact_dir(results_dir(self.config), self.nodeid)
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / Path(self.name.rpartition(":")[2]).name     # the runner's -p file
        run = proc.cmd([f"./{RUNNER}", "-t", self.name, "-p", logs,
                        *(["-o", override] if override else [])],
                       cwd=self.path.parent, fail=False, timeout=self.timeout() + MARGIN / 2)
        (logs / RUNNER_LOG).write_text(run.stdout + run.stderr)
        result = parse_runner_output(run.stdout, self.name,
                                     log.read_text(errors="replace") if log.is_file() else "")
        if result.output:
            self.user_properties.append((SUBTESTS, nested_ktap(result.output)))
        self.add_report_section("call", "kselftest output", "\n".join(result.output))
        if result.outcome == "skip":
            pytest.skip(result.reason)
        if result.outcome == "xfail":
            pytest.xfail(result.reason)
        if result.outcome == "fail":
            if result.timed_out:
                self.user_properties.append((DIRECTIVE, "TIMEOUT"))
            raise KselftestFailed(failure_text(result, run.stderr))

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, KselftestFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, self.name


def failure_text(result, stderr=""):
    """What a failed kselftest's report says: the runner's verdict and the end of the
    test's output (all of it is in the nested KTAP and the artifacts)."""
    lines = [line for line in result.output if line.strip()]
    shown = lines[-FAILURE_TAIL:]
    head = f"{RUNNER}: {result.result_line or result.reason}"
    more = f" (last {len(shown)} of {len(lines)} lines)" if len(shown) < len(lines) else ""
    text = f"{head}\noutput{more}:\n" + "\n".join(shown) if shown else f"{head}\n(no output)"
    return text + (f"\nstderr:\n{stderr.strip()}" if stderr.strip() else "")


def collect_file(file_path, parent):
    """pytest_collect_file for plugin.py: a kselftest install's list, with a node id
    that does not depend on where the install lies."""
    if file_path.name == LIST_NAME and (file_path.parent / RUNNER).is_file():
        return KselftestList.from_parent(parent, path=file_path, nodeid=NODE)
    return None

"""KTAP output in the style of the kernel's mptcp_nvme.sh selftest, and parsing it back.

Writer rules (Documentation/dev-tools/ktap.rst and kselftest):
``TAP version 13`` (or ``KTAP version 1``), the plan ``1..N``, one result line per
test numbered from 1, ``# time=NNNms`` on results that ran, ``# SKIP <reason>`` on
skipped ones, diagnostics starting with ``# `` and a closing Totals line.
"""

import dataclasses
import re
import sys

from tap.parser import Parser

PREFIX = "mptcp_nvme: "

# Outcome -> (ok?, directive) and the Totals bucket it counts in.
OUTCOMES = {
    "pass": (True, None),
    "fail": (False, None),
    "xfail": (True, "XFAIL"),
    "xpass": (False, None),
    "skip": (True, "SKIP"),
    "error": (False, "ERROR"),
}

EXIT_PASS, EXIT_FAIL, EXIT_SKIP = 0, 1, 4
SUBTEST_INDENT = "  "


def clean_description(text):
    """One line without ``#``: KTAP forbids ``#`` in descriptions."""
    return " ".join(str(text).replace("#", " ").split())


def format_result(number, description, outcome, time_ms=None, reason=None):
    """One KTAP result line."""
    ok, directive = OUTCOMES[outcome]
    line = f"{'ok' if ok else 'not ok'} {number} - {PREFIX}{clean_description(description)}"
    if directive:
        line += f" # {directive}"
        if reason:
            line += f" {clean_description(reason)}"
    elif time_ms is not None:
        line += f" # time={int(round(time_ms))}ms"
    return line


@dataclasses.dataclass
class KtapWriter:
    """Streams a KTAP document; ``exit_code`` follows kselftest (0 pass, 1 fail, 4 skip)."""

    stream: object = dataclasses.field(default_factory=lambda: sys.stdout)
    version: int = 13
    counts: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    number: int = 0
    planned: int | None = None

    def header(self, planned=None):
        self._emit("KTAP version 1" if self.version == 1 else "TAP version 13")
        if planned is not None:
            self.plan(planned)

    def plan(self, planned):
        self.planned = planned
        self._emit(f"1..{planned}")

    def diag(self, text):
        for line in str(text).splitlines() or [""]:
            self._emit(f"# {line}".rstrip())

    def subtest(self, text):
        """A nested KTAP document (a kselftest's own output), indented a level: it
        belongs to the result that follows."""
        for line in str(text).splitlines():
            self._emit(f"{SUBTEST_INDENT}{line}".rstrip())

    def result(self, description, outcome, time_ms=None, reason=None):
        self.number += 1
        self.counts[outcome] += 1
        self._emit(format_result(self.number, description, outcome, time_ms, reason))

    def totals(self):
        if self.planned is None:
            self.plan(self.number)
        c = self.counts
        self._emit(
            f"# Totals: pass:{c['pass']} fail:{c['fail']} xfail:{c['xfail']} "
            f"xpass:{c['xpass']} skip:{c['skip']} error:{c['error']}"
        )

    @property
    def exit_code(self):
        c = self.counts
        if c["fail"] or c["error"] or c["xpass"]:
            return EXIT_FAIL
        if self.number and c["skip"] == self.number:
            return EXIT_SKIP
        return EXIT_PASS

    def _emit(self, line):
        print(line, file=self.stream, flush=True)


@dataclasses.dataclass(frozen=True)
class ParsedResult:
    number: int
    ok: bool
    description: str
    directive: str | None
    reason: str
    time_ms: int | None


_TIME = re.compile(r"time=(\d+)ms")
_DIRECTIVES = ("SKIP", "TODO", "XFAIL", "ERROR", "TIMEOUT")
_VERSION = re.compile(r"^(TAP version 13|KTAP version 1)$", re.M)


def parse(text):
    """Parse a KTAP/TAP document with tap.py; returns (plan count or None, results)."""
    planned, results = None, []
    # The version line is checked here: tap.py would want YAML support for TAP 13.
    for line in Parser().parse_text(_VERSION.sub("", text)):
        if line.category == "plan":
            planned = line.expected_tests
        elif line.category == "test":
            words = line.directive.text.split(maxsplit=1)
            directive = words[0].upper() if words and words[0].upper() in _DIRECTIVES else None
            timing = _TIME.search(line.directive.text)
            results.append(ParsedResult(
                number=line.number,
                ok=line.ok,
                description=line.description.removeprefix("-").strip(),
                directive=directive,
                reason=words[1] if directive and len(words) > 1 else "",
                time_ms=int(timing.group(1)) if timing else None,
            ))
    return planned, results

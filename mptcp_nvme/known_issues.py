"""Known kernel issues: a failure the suite understands and that is not ours to fix is
reported as an expected failure (KTAP ``# XFAIL`` with the reason), and a known issue
that stops happening fails loudly (``XPASS``), so that its entry gets removed.

The file (``known-issues.toml`` at the top of the tree, or ``--known-issues FILE``)
holds one ``[[issue]]`` table each::

    [[issue]]
    id = "dm-rq-nvme-tcp-rcu"                 # a name, unique in the file
    tests = ["selftests/test_datapath.py::*dm*"]   # node id patterns (fnmatch)
    match = "Voluntary context switch within RCU"  # a regex over the failure text,
                                                   # crash summaries and fingerprints
    kernels = ["7.3*"]                        # release patterns; none: every kernel
    reason = "dm_mq_queue_rq -> nvme_tcp_queue_rq sleeps in lock_sock under RCU"
    link = "docs/kernel-findings.md#..."      # optional: where it is written up
    always = true                             # optional: it happens on every run, so
                                              # a pass on a matching kernel is XPASS

It is applied on the host to a test's reports before any reporter sees them (the
VM runner), through pytest's own xfail fields: a matching failed report becomes
skipped with ``wasxfail``, an ``always`` issue's passing test gets ``wasxfail`` on its
call report. outcome.summarize() then decides xfail or xpass like for any test.
"""

import dataclasses
import fnmatch
import re
import tomllib
from pathlib import Path

from mptcp_nvme import SOURCE_DIR
from mptcp_nvme.channel import CRASH, DIAG
from mptcp_nvme.errors import UsageError

DEFAULT_FILE = SOURCE_DIR / "known-issues.toml"
FIELDS = {"id", "tests", "match", "kernels", "reason", "link", "always"}


@dataclasses.dataclass(frozen=True)
class KnownIssue:
    id: str
    tests: tuple
    match: re.Pattern
    reason: str
    kernels: tuple = ()
    link: str = ""
    always: bool = False

    def applies(self, nodeid, release):
        """Whether this issue concerns test ``nodeid`` on kernel ``release``."""
        return (any(fnmatch.fnmatchcase(nodeid, pattern) for pattern in self.tests)
                and (not self.kernels or release is not None and any(
                    fnmatch.fnmatchcase(release, pattern) for pattern in self.kernels)))

    def found_in(self, text):
        """The first line of ``text`` the issue's regex matches, or None."""
        for line in text.splitlines():
            if self.match.search(line):
                return line.strip()
        return None

    def where(self):
        return f" ({self.link})" if self.link else ""


def load(path=None):
    """The issues of ``path`` (default DEFAULT_FILE; a missing default file: none).
    UsageError naming the file and the entry for anything wrong in it."""
    path = Path(path) if path else DEFAULT_FILE
    if not path.is_file():
        if path == DEFAULT_FILE:
            return ()
        raise UsageError(f"--known-issues {path}: no such file")
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise UsageError(f"{path}: not a known-issues file: {err}") from None
    if set(document) - {"issue"}:
        raise UsageError(f"{path}: unknown table(s) {', '.join(sorted(set(document) - {'issue'}))}; "
                         "expected [[issue]] entries")
    issues, seen = [], set()
    for number, entry in enumerate(document.get("issue", []), 1):
        where = f"{path}: issue {entry.get('id', number)!r}"
        if unknown := set(entry) - FIELDS:
            raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        for key in ("id", "match", "reason"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise UsageError(f"{where}: '{key}' must be a non-empty string")
        if entry["id"] in seen:
            raise UsageError(f"{where}: the id is used twice")
        seen.add(entry["id"])
        for key in ("tests", "kernels"):
            value = entry.get(key, [] if key == "kernels" else None)
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise UsageError(f"{where}: '{key}' must be a list of patterns")
        if not entry["tests"]:
            raise UsageError(f"{where}: 'tests' names no test")
        if not isinstance(entry.get("always", False), bool):
            raise UsageError(f"{where}: 'always' must be true or false")
        try:
            pattern = re.compile(entry["match"])
        except re.error as err:
            raise UsageError(f"{where}: 'match' is not a regex: {err}") from None
        issues.append(KnownIssue(id=entry["id"], tests=tuple(entry["tests"]), match=pattern,
                                 reason=entry["reason"].strip(),
                                 kernels=tuple(entry.get("kernels", [])),
                                 link=entry.get("link", ""), always=entry.get("always", False)))
    return tuple(issues)


def _evidence(reports):
    """What a known issue's regex is matched against: the failed reports' texts and
    every crash summary (kind, headline, fingerprint) of the test."""
    texts = [r.longreprtext for r in reports if r.failed]
    texts += [value for r in reports for name, value in r.user_properties if name == CRASH]
    return "\n".join(texts)


def apply(reports, issues, release):
    """Turn a test's ``reports`` (setup/call/teardown, modified in place) into an
    expected failure when a known issue explains its failure, or into an unexpected
    pass when an ``always`` issue did not happen; the KnownIssue applied, or None."""
    if not reports or not issues:
        return None
    nodeid = reports[0].nodeid
    failed = [r for r in reports if r.failed]
    skipped = any(r.skipped for r in reports)
    for issue in issues:
        if not issue.applies(nodeid, release):
            continue
        if failed:
            line = issue.found_in(_evidence(reports))
            if line is None:
                continue
            for report in failed:
                report.outcome = "skipped"
                report.wasxfail = f"known issue {issue.id}: {issue.reason}"
            reports[0].user_properties.append(
                (DIAG, f"known issue {issue.id}{issue.where()}: {line}"))
            return issue
        if issue.always and not skipped:
            call = next((r for r in reports if r.when == "call"), reports[-1])
            call.wasxfail = f"known issue {issue.id} did not happen"
            reports[0].user_properties.append(
                (DIAG, f"known issue {issue.id} did not happen on {release}: if it is fixed, "
                       f"remove it from the known-issues file{issue.where()}"))
            return issue
    return None

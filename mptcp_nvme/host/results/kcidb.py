"""KCIDB I/O JSON (https://docs.kernelci.org/kcidb/) from results.json documents, for CI
bots that submit to KernelCI's common database; validated with the kcidb-io package.

    report = kcidb.build_report([json.load(open("results/a/results.json")), ...],
                                origin="mptcp_nvme", artifacts_url=None)
    kcidb.validate(report)      # jsonschema ValidationError when it does not conform

Each run (one results.json, reporters.ResultsJson) is one kernel: its "kernel" block
(kernel.identity(): release, origin, tree, commit, arch) gives
- a checkout: id ``<origin>:<git commit>`` for a git tree, else ``<origin>:<release>``;
  the commit in git_commit_hash when there is one;
- a build of it: id ``<origin>:<release>:<hash of the kernel's origin>``, the
  architecture, status PASS (the kernel booted or was found; a build that fails never
  gets here);
- a test per results.json test: id ``<build id>:<run start>:<node id>``, path
  ``mptcp_nvme.<file>.<test>[.<parameters>]``, status PASS/FAIL/ERROR/SKIP (KTAP's
  xfail is PASS, xpass FAIL; the KTAP outcome is in misc), duration in seconds, and the
  test's artifacts as output_files: ``artifacts_url/<path in the results folder>`` when
  the folder is published there, else file:// URLs of the results folder.
Runs of the same kernel share one checkout and build. Older results.json without a
"kernel" block fall back to the release in the kernel probe's diagnostic line.
"""

import datetime
import hashlib
import json
import re
from pathlib import Path

from mptcp_nvme.errors import UsageError

ORIGIN = "mptcp_nvme"
STATUS = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skip": "SKIP", "xfail": "PASS",
          "xpass": "FAIL"}
_PROBE = re.compile(r"^kernel (\S+): modules ")
_SEGMENT = re.compile(r"[^a-zA-Z0-9_-]+")
_SHA1 = re.compile(r"[0-9a-f]{40}")


def build_report(runs, origin=ORIGIN, artifacts_url=None):
    """KCIDB I/O data (the kcidb-io package's latest schema) of ``runs``, a list of
    results.json documents (dicts); UsageError for a run whose kernel is unknown."""
    from kcidb_io.schema import LATEST
    report = {"version": {"major": LATEST.major, "minor": LATEST.minor},
              "checkouts": [], "builds": [], "tests": []}
    known = set()
    for run in runs:
        kernel = run_kernel(run)
        checkout_id = f"{origin}:{kernel['commit'] or kernel['release']}"
        build_id = f"{origin}:{kernel['release']}:{_digest(kernel.get('origin'))}"
        started = _time(run.get("started"))
        if checkout_id not in known:
            known.add(checkout_id)
            checkout = {"id": checkout_id, "origin": origin, "valid": True,
                        "misc": {"kernel_release": kernel["release"],
                                 "kernel_origin": kernel.get("origin")}}
            if kernel["commit"]:
                checkout["git_commit_hash"] = kernel["commit"]
            report["checkouts"].append(checkout)
        if build_id not in known:
            known.add(build_id)
            build = {"id": build_id, "checkout_id": checkout_id, "origin": origin,
                     "architecture": kernel.get("arch") or "x86_64", "status": "PASS",
                     "misc": {"kernel_release": kernel["release"],
                              "kernel_origin": kernel.get("origin")}}
            if started:
                build["start_time"] = started
            report["builds"].append(build)
        for test in run["tests"]:
            report["tests"].append(_test(test, build_id, origin, run, artifacts_url))
    return report


def _test(test, build_id, origin, run, artifacts_url):
    entry = {"id": f"{build_id}:{int(run.get('started') or 0)}:{test['nodeid']}",
             "build_id": build_id, "origin": origin, "path": kcidb_path(test["nodeid"]),
             "status": STATUS[test["result"]],
             "duration": round((test.get("time_ms") or 0) / 1000, 3),
             "misc": {"nodeid": test["nodeid"], "description": test.get("description"),
                      "ktap_result": test["result"], "reason": test.get("reason"),
                      "crashes": test.get("crashes") or [], "flaky": bool(test.get("flaky"))}}
    entry["misc"] = {k: v for k, v in entry["misc"].items() if v is not None}
    files = [{"name": Path(a).name, "url": _url(a, run, artifacts_url)}
             for a in test.get("artifacts") or ()]
    if files:
        entry["output_files"] = files
    return entry


def kcidb_path(nodeid):
    """``mptcp_nvme.<file>.<test>[.<parameters>]`` of a pytest node id."""
    file, _, name = nodeid.partition("::")
    name, _, params = name.partition("[")
    segments = [Path(file).stem, *name.split("::"), params.rstrip("]")]
    return ".".join([ORIGIN, *(_SEGMENT.sub("_", s).strip("_") for s in segments if s)])


def run_kernel(run):
    """The run's kernel identity; UsageError when the document names none."""
    kernel = dict(run.get("kernel") or {})
    if not kernel.get("release"):
        for test in run.get("tests", ()):
            for line in test.get("diagnostics") or ():
                match = _PROBE.match(line)
                if match:
                    kernel.setdefault("release", match.group(1))
                    kernel.setdefault("origin", f"kernel {match.group(1)}")
    if not kernel.get("release"):
        raise UsageError(f"{run.get('results_dir', 'results.json')}: no kernel recorded "
                         "(no 'kernel' block and no kernel probe line)")
    commit = kernel.get("commit")
    kernel["commit"] = commit if commit and _SHA1.fullmatch(commit) else None
    return kernel


def _url(artifact, run, artifacts_url):
    if artifacts_url:
        return f"{artifacts_url.rstrip('/')}/{artifact}"
    return (Path(run.get("results_dir") or ".").resolve() / artifact).as_uri()


def _digest(text):
    return hashlib.sha256(str(text).encode()).hexdigest()[:12]


def _time(seconds):
    if not seconds:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()


def validate(report):
    """``report`` when it conforms to KCIDB I/O (the kcidb-io package's latest schema or
    one it accepts); else jsonschema.exceptions.ValidationError."""
    from kcidb_io.schema import LATEST
    LATEST.validate(report)
    return report


def write(path, runs, origin=ORIGIN, artifacts_url=None):
    """Build, validate and write the KCIDB report of ``runs`` to ``path``; an invalid one
    is a UsageError naming the first problem."""
    import jsonschema
    report = build_report(runs, origin, artifacts_url)
    try:
        validate(report)
    except jsonschema.exceptions.ValidationError as err:
        where = "/".join(map(str, err.absolute_path)) or "report"
        raise UsageError(f"{path}: KCIDB report invalid at {where}: {err.message}") from None
    Path(path).write_text(json.dumps(report, indent=2) + "\n")
    return report

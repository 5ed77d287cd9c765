"""The outputs of 'mptcp-nvme series' in its results folder, rendered from the two runs'
results.json documents and series.compare():

- summary.md: the verdict first ("no new failures" or "new failures: <node ids>"), the
  patches, both kernels, then every category (new failures, new crashes, fixed, still
  failing, new skips, not run), for a human or a patchwork check;
- results.json: the verdict, the patches, both kernels and every test with its result
  on each;
- junit.xml: both runs' testsuites, named base and series;
- kcidb.json: KCIDB I/O JSON (host/results/kcidb.py), both kernels as checkouts and builds.

A series that does not apply or build gets summary.md and results.json with that
verdict alone (rejected())."""

import json
from pathlib import Path

from mptcp_nvme.host.results import kcidb, merge, summary

MATRIX = "matrix"             # the matrix's folder in the verdict's, when one ran
CATEGORIES = (("new_failures", "New failures"), ("new_crashes", "New crashes"),
              ("fixed", "Fixed"), ("still_failing", "Still failing"),
              ("new_skips", "New skips"), ("known_crashes", "Crashes the base has too"),
              ("not_run", "Run on the base only"))


def headline(changes):
    """The verdict in one line."""
    parts = []
    if changes["new_failures"]:
        parts.append("new failures: " + ", ".join(changes["new_failures"]))
    if changes["new_crashes"]:
        parts.append("new crashes: " + ", ".join(fp for _, fp in changes["new_crashes"]))
    return "; ".join(parts) or "no new failures"


def document(series, runs, changes, code, matrix=None):
    """The verdict's results.json: {"verdict", "exit", "series", "kernels", "changes",
    "tests": [{"nodeid", "description", "base": {...}, "series": {...}}]}, and "matrix"
    (matrix_summary()) when one ran."""
    tests = {}
    for name, run in runs.items():
        for test in run["tests"]:
            entry = tests.setdefault(test["nodeid"], {"nodeid": test["nodeid"],
                                                      "description": test["description"],
                                                      "base": None, "series": None})
            entry[name] = {k: test.get(k) for k in ("result", "reason", "time_ms", "crashes",
                                                     "artifacts", "flaky")}
            entry[name]["artifacts"] = [f"{name}/{a}" for a in test.get("artifacts") or ()]
    return {"format": 1, "verdict": headline(changes), "exit": code,
            "series": _series(series),
            "kernels": {name: run.get("kernel") for name, run in runs.items()},
            "totals": {name: run.get("totals") or summary.count(run["tests"])
                       for name, run in runs.items()},
            "changes": {k: [list(v) if isinstance(v, tuple) else v for v in vs]
                        for k, vs in changes.items()},
            "tests": list(tests.values()), **({"matrix": matrix} if matrix else {})}


def _series(series):
    return {"spec": series.spec, "kind": series.kind, "base": series.base,
            "tree": str(series.tree),
            "patches": [{"index": p.index, "total": p.total, "subject": p.subject}
                        for p in series.patches]}


def markdown(verdict):
    """summary.md of a verdict document."""
    lines = [f"# mptcp-nvme series: {verdict['verdict']}", ""]
    lines += _patches(verdict)
    for name, kernel in (verdict.get("kernels") or {}).items():
        totals = verdict["totals"][name]
        lines.append(f"- {name}: {kernel.get('release') if kernel else '?'}"
                     + (f", commit {kernel['commit'][:12]}" if kernel and kernel.get("commit")
                        else "") + ": "
                     + (", ".join(f"{n} {o}" for o, n in totals.items() if n) or "no tests"))
    matrix = verdict.get("matrix")
    if matrix:
        lines.append(f"- matrix (base+series against base, {matrix['dir']}/matrix.md): "
                     + "; ".join([matrix.get("headline") or "no mptcp/tcp pair",
                                  *(["regressions: " + ", ".join(matrix["regressions"])]
                                    if matrix.get("regressions") else []),
                                  *(["a cell failed"] if matrix.get("exit") else [])]))
    results = {t["nodeid"]: t for t in verdict.get("tests", ())}
    for key, title in CATEGORIES:
        found = verdict.get("changes", {}).get(key) or []
        if not found and key not in ("new_failures", "new_crashes"):
            continue
        lines += ["", f"## {title}: {len(found) or 'none'}"]
        for item in found:
            if isinstance(item, list):
                lines.append(f"- `{item[0]}`: {item[1]}")
                continue
            test = results.get(item, {})
            now = test.get("series") or test.get("base") or {}
            reason = summary._cell(now.get("reason") or "")
            was = (test.get("base") or {}).get("result", "not run")
            lines.append(f"- `{item}`: {was} -> {(test.get('series') or {}).get('result', 'not run')}"
                         + (f" ({reason})" if reason else ""))
    return "\n".join(lines) + "\n"


def _patches(verdict):
    series = verdict["series"]
    count = len(series["patches"])
    lines = [f"Series `{series['spec']}` ({count} patch{'es' if count != 1 else ''}) on "
             f"{series['base'][:12]} of `{series['tree']}`:"]
    lines += [f"- {p['index']}/{p['total']} {p['subject']}" for p in series["patches"]]
    return lines + [""]


def write(out, series, runs, changes, code, matrix=None):
    """Every output into ``out`` (runs: {"base": doc, "series": doc}, their folders
    out/base and out/series; ``matrix``: matrix_summary()'s); the verdict document."""
    out = Path(out)
    verdict = document(series, runs, changes, code, matrix)
    (out / "results.json").write_text(json.dumps(verdict, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(verdict))
    junit = merge.merge_junit([out / name for name in runs])
    for suite, name in zip(junit.getroot(), runs):
        suite.set("name", f"{name}: {suite.get('name')}")
    junit.write(out / "junit.xml", encoding="utf-8", xml_declaration=True)
    kcidb.write(out / "kcidb.json", list(runs.values()))
    return verdict


def matrix_summary(out, code):
    """The matrix that ran in ``out``/MATRIX (base+series against the base, exit ``code``)
    as the verdict carries it: {"dir", "exit", "headline", "regressions"}."""
    from mptcp_nvme.host.matrix import document, report
    rows = report.summarize(document.load(Path(out) / MATRIX / "matrix.json"))
    return {"dir": MATRIX, "exit": code, "headline": report.headline(rows),
            "regressions": report.regressions(rows)}


def rejected(out, series, reason):
    """summary.md and results.json of a series that does not apply or build."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    verdict = {"format": 1, "verdict": reason, "exit": 1, "series": _series(series),
               "kernels": {}, "totals": {}, "changes": {}, "tests": []}
    (out / "results.json").write_text(json.dumps(verdict, indent=2) + "\n")
    text = "\n".join([f"# mptcp-nvme series: {reason}", "", *_patches(verdict)])
    (out / "summary.md").write_text(text)
    return verdict

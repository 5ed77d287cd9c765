"""'mptcp-nvme merge DIR...': the results folders of one suite's shards (--shard I/N) put
back together as one run: results.json (tests in shard order, artifacts relative to the
merged folder, "merged" listing the parts), junit.xml (every shard's testsuite in one
testsuites), ktap.txt (one plan, renumbered, the Totals line) and summary.md.

A folder without results.json, a test in two folders, or folders of different kernels
is a UsageError: the parts would not make one run."""

import io
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from mptcp_nvme.errors import UsageError
from mptcp_nvme.host.results import summary
from mptcp_nvme.options import shard_spec


def read_run(folder):
    """(folder, results.json document) of one results folder; UsageError if it has none."""
    folder = Path(folder)
    path = folder / "results.json"
    if not path.is_file():
        raise UsageError(f"{folder}: no results.json (not a results folder of 'mptcp-nvme run')")
    try:
        document = json.loads(path.read_text())
        document["tests"], document["started"], document["finished"]
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path}: not a results.json ({err})") from None
    return folder, document


def _order(run):
    shard = run[1].get("shard")
    return shard_spec(shard)[0] if shard else 0


def merge_documents(runs, out):
    """One results.json document from [(folder, document)] of the parts, written for the
    folder ``out``."""
    runs = sorted(runs, key=_order)              # stable: argument order without --shard
    seen, tests = {}, []
    for folder, document in runs:
        for test in document["tests"]:
            if test["nodeid"] in seen:
                raise UsageError(f"{test['nodeid']} is in both {seen[test['nodeid']]} and "
                                 f"{folder}: not shards of one run")
            seen[test["nodeid"]] = folder
            tests.append({**test, "artifacts": [_rebase(a, folder, out)
                                                for a in test.get("artifacts", ())]})
    kernels = {json.dumps(d.get("kernel"), sort_keys=True) for _, d in runs if d.get("kernel")}
    if len(kernels) > 1:
        raise UsageError("the folders ran different kernels: "
                         + ", ".join(sorted(json.loads(k)["release"] for k in kernels)))
    return {
        "format": 1,
        "started": min(d["started"] for _, d in runs),
        "finished": max(d["finished"] for _, d in runs),
        "results_dir": str(out),
        "tests": tests,
        "totals": summary.count(tests),
        "kernel": json.loads(kernels.pop()) if kernels else None,
        "shard": None,
        "time_budget": runs[0][1].get("time_budget"),
        "merged": [{"dir": os.path.relpath(folder, out), "shard": d.get("shard"),
                    "tests": len(d["tests"]), "started": d["started"],
                    "finished": d["finished"]} for folder, d in runs],
    }


def _rebase(artifact, folder, out):
    """An artifact path of a part (relative to its folder) relative to ``out``."""
    path = Path(artifact)
    return os.path.relpath(path if path.is_absolute() else Path(folder) / path, out)


def merge_junit(folders):
    """One <testsuites> with every folder's <testsuite> elements; UsageError for a
    folder without junit.xml."""
    root = ET.Element("testsuites", name="mptcp-nvme")
    for folder in folders:
        path = Path(folder) / "junit.xml"
        try:
            tree = ET.parse(path)
        except FileNotFoundError:
            raise UsageError(f"{folder}: no junit.xml") from None
        except ET.ParseError as err:
            raise UsageError(f"{path}: {err}") from None
        suites = [tree.getroot()] if tree.getroot().tag == "testsuite" else tree.getroot()
        root.extend(suites)
    return ET.ElementTree(root)


def merge(folders, out, version=13):
    """Merge the results ``folders`` into ``out``; (merged results.json document, KTAP
    text, KTAP exit code)."""
    out = Path(out)
    runs = [read_run(folder) for folder in folders]
    if any(folder.resolve() == out.resolve() for folder, _ in runs):
        raise UsageError(f"{out}: the merged folder must not be one of the merged ones")
    document = merge_documents(runs, out)
    junit = merge_junit([folder for folder, _ in sorted(runs, key=_order)])
    text = io.StringIO()
    header = [f"merged {len(runs)} results folders: "
              + ", ".join(f"{p['dir']} ({p['shard'] or 'unsharded'}, {p['tests']} tests)"
                          for p in document["merged"])]
    code = summary.write_ktap(document, text, version=version, header=header)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    junit.write(out / "junit.xml", encoding="utf-8", xml_declaration=True)
    (out / "ktap.txt").write_text(text.getvalue())
    (out / "summary.md").write_text(summary.markdown(document))
    return document, text.getvalue(), code

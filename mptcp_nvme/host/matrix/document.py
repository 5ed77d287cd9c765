"""matrix.json, the record of a ``mptcp-nvme matrix`` run: its schema (the Settings, Cell
and Run dataclasses), its one writer (``save``, with ``new``/``add_run``) and its one reader
(``load``, which checks a file against the schema). run.py writes it as runs end;
report.py reads it; neither spells out its keys.

    {"version": 1, "created": ISO time, "settings": Settings, "kernels": {name: info},
     "cells": [Cell with "runs": [Run, ...]], ...}
"""

import dataclasses
import datetime
import json
import os
from pathlib import Path

from mptcp_nvme.errors import UsageError

VERSION = 1
KINDS = ("fabric", "bare", "raw")
IDENTITY = ("kernel", "kind", "trtype", "paths", "multipath", "iopolicy", "loss", "tls",
            "sampled")


@dataclasses.dataclass(frozen=True)
class Settings:
    rate_mbit: float
    runtime_s: int
    repeat: int
    loss: dict
    topology: str | None
    tls: bool
    append: list
    loss_links: int | None = None     # --loss-links: the loss on that many of the last links


@dataclasses.dataclass(frozen=True)
class Cell:
    """One measured configuration; identity fields first (IDENTITY, see identity())."""

    kernel: str
    kind: str
    trtype: str | None
    paths: int | None
    multipath: str | None
    iopolicy: str | None
    loss: int | None
    tls: bool
    label: str
    links: int
    usable_links: int
    link_rate_mbit: list
    runs: list
    sampled: bool = True      # tcp_info sampled during its runs (--sampling-cost: a twin without)


@dataclasses.dataclass(frozen=True)
class Run:
    """One repeat of a cell: the bench's Measurement when it passed, else why not."""

    nodeid: str
    repeat: int
    status: str               # passed, skipped, failed
    read_mib: float | None
    write_mib: float | None
    duration_s: float
    reason: str | None
    transport: dict | None = None     # Measurement.transport, where the cell sampled it
    link_bytes: dict | None = None    # Measurement.link_bytes: each link's interface bytes


def _names(kind, optional=()):
    return tuple(f.name for f in dataclasses.fields(kind) if f.name not in optional)


# What a file must have (older files lack the newer fields: multipath, settings' extras).
REQUIRED = {"settings": _names(Settings, ("loss", "topology", "tls", "append", "loss_links")),
            "cell": _names(Cell, ("multipath", "sampled")),
            "run": _names(Run, ("nodeid", "repeat", "duration_s", "reason", "transport",
                                "link_bytes"))}


def new(settings):
    """A matrix.json document without kernels or cells yet."""
    return {"version": VERSION, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "settings": dataclasses.asdict(settings), "kernels": {}, "cells": []}


def add_cell(doc, cell):
    """``cell`` (a Cell) in ``doc``; the dict that now stands for it there."""
    entry = dataclasses.asdict(cell)
    doc["cells"].append(entry)
    return entry


def add_run(entry, run):
    """``run`` (a Run) in the cell ``entry``, replacing an earlier one of its nodeid."""
    entry["runs"] = [r for r in entry["runs"] if r.get("nodeid") != run.nodeid] + [dataclasses.asdict(run)]


def save(doc, path):
    """Write matrix.json atomically: an interrupted run never leaves half a file."""
    path = Path(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


def load(path):
    """matrix.json as a dict; UsageError (one line, naming the file) when it is unusable."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: not JSON ({err})") from None
    problem = _problem(doc)
    if problem:
        raise UsageError(f"{path}: {problem}")
    return doc


def _problem(doc):
    """What makes ``doc`` unusable, or None."""
    if not isinstance(doc, dict):
        return "not a matrix.json object"
    if doc.get("version") != VERSION:
        return f"matrix.json version {doc.get('version')!r}, this mptcp-nvme reads version {VERSION}"
    missing = [key for key in ("created", "settings", "kernels", "cells") if key not in doc]
    if missing:
        return f"lacks {', '.join(map(repr, missing))}"
    if not (isinstance(doc["kernels"], dict) and isinstance(doc["cells"], list)):
        return "'kernels' must be an object and 'cells' a list"
    checks, seen = [("settings", doc["settings"], "settings")], {}
    for index, cell in enumerate(doc["cells"]):
        checks.append((f"cells[{index}]", cell, "cell"))
        if isinstance(cell, dict) and isinstance(cell.get("runs"), list):
            checks += [(f"cells[{index}].runs[{i}]", run, "run") for i, run in enumerate(cell["runs"])]
    for where, value, kind in checks:
        if not isinstance(value, dict):
            return f"{where} is not an object"
        missing = [key for key in REQUIRED[kind] if key not in value]
        if missing:
            return f"{where} lacks {', '.join(map(repr, missing))}"
        if kind != "cell":
            continue
        if not isinstance(value["runs"], list):
            return f"{where}.runs is not a list"
        if value["kind"] not in KINDS:
            return f"{where} has kind {value['kind']!r}, not one of {', '.join(KINDS)}"
        if value["kernel"] not in doc["kernels"]:
            return f"{where} names kernel {value['kernel']!r}, absent from 'kernels'"
        if seen.setdefault(key(value), where) != where:
            return f"{where} is the same cell as {seen[key(value)]}"
    return None


def key(cell, **changes):
    return tuple(changes[f] if f in changes else identity(cell, f) for f in IDENTITY)


def identity(cell, field):
    """A cell's identity field; multipath is native for an old file's non-raw cells,
    sampled true (what its runs carry says whether they sampled)."""
    if field == "multipath" and "multipath" not in cell:
        return None if cell["kind"] == "raw" else "native"
    if field == "sampled" and "sampled" not in cell:
        return True
    return cell[field]



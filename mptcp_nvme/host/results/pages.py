"""Static HTML results pages, rendered from the results folders' documents.

- ``write_series_page(folder)``: ``folder/index.html`` of one series run ('mptcp-nvme
  series', the patchwork bot): the verdict (and the patchwork check) in the colour of its
  state, the patches (linked to patchwork when patchwork.json knows them), both kernels
  and their totals, every test with its result on the base and on base+series (what
  changed first, new failures at the top), each failing test's reason, failure text,
  crash summaries, diagnostics and artifacts, the runs' files and console logs, and the
  fault tables, fault timelines and matrix chart a run wrote;
- ``write_run_page(folder)``: the same for a plain 'mptcp-nvme run' folder;
- ``index_entries(root)`` / ``write_index(root)``: ``root/index.html``, every series
  judged under ``root``, newest first.

The inputs: the verdict's results.json (series/verdict.py; a rejected series has no
tests and no kernels), the two runs' own results.json in base/ and series/ (reporters.py:
the failure text and diagnostics), the bot's patchwork.json, faults.md and the PNGs.
Any of them may be missing: the page shows what there is.

Standard library only, one inline <style>, no script (a Content-Security-Policy forbids
any): the pages open offline from file:// as from a static web server. Every value read
from a document is escaped; links are relative hrefs to files that exist in the folder,
or http(s) addresses from patchwork.json.
"""

import datetime
import html
import itertools
import json
import re
from pathlib import Path
from urllib.parse import quote

from mptcp_nvme.host.results import summary
from mptcp_nvme.host.results.outcome import FAILED

STATES = ("success", "warning", "fail", "pending")      # patchwork's check states
COLOURS = {"success": "#1a7f37", "warning": "#9a6700", "fail": "#cf222e", "pending": "#57606a"}
RUNS = {"base": "base", "series": "base+series"}
# the verdict's categories, in the order the tests table shows them
ORDER = {"new_failures": "new failure", "new_crashes": "new crash",
         "still_failing": "still failing", "fixed": "fixed", "new_skips": "new skip",
         "not_run": "run on the base only", "changed": "changed"}
RUN_FILES = ("summary.md", "results.json", "junit.xml", "ktap.txt", "kcidb.json", "run.log",
             "faults.md", "faults.json", "matrix.md", "matrix.json")
TOP_FILES = ("summary.md", "results.json", "junit.xml", "kcidb.json", "patchwork.json",
             "input/series.mbox")
MAX_LISTED = 500
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' file: data:"
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;
 background:#fff;max-width:1240px;margin:0 auto;padding:0 16px 32px}
h1{font-size:20px;margin:4px 0;word-break:break-word}h2{font-size:17px;margin:22px 0 6px;
 border-bottom:1px solid #d0d7de}h3{font-size:15px;margin:14px 0 4px}h4{margin:8px 0 2px}
header.verdict{color:#fff;padding:12px 16px;border-radius:6px;margin:14px 0}
header.verdict p{margin:2px 0}.badge{color:#fff;padding:1px 7px;border-radius:9px}
table{border-collapse:collapse;width:100%;margin:4px 0}
th,td{border:1px solid #d0d7de;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f6f8fa}table.facts{width:auto}table.facts th{min-width:8em}
tr.changed{background:#fff8c5}tr.new,tr.failed{background:#ffebe9}
pre{background:#f6f8fa;border:1px solid #d0d7de;padding:8px;white-space:pre-wrap;
 word-break:break-word;margin:4px 0}code{font-size:13px}small{color:#57606a}
.r-pass{color:#1a7f37}.r-fail,.r-error,.r-xpass{color:#cf222e;font-weight:bold}
.r-skip,.r-xfail,.r-not-run{color:#9a6700}.missing{color:#57606a}div.files{margin:4px 0}
article{border-left:4px solid #cf222e;padding:0 10px;margin:10px 0}
img{max-width:100%;border:1px solid #d0d7de}footer{margin-top:28px;color:#57606a}
""" + "".join(f".s-{state}{{background:{colour}}}" for state, colour in COLOURS.items())


def write_series_page(folder, patchwork=None):
    """``folder/index.html`` of one series run (``patchwork``: patchwork.json's content,
    read from the folder when not given); its path."""
    folder = Path(folder)
    verdict = _load(folder / "results.json") or {}
    patchwork = patchwork if patchwork is not None else _load(folder / "patchwork.json") or {}
    runs = {name: {t["nodeid"]: t for t in (_load(folder / name / "results.json") or {})
                   .get("tests") or ()} for name in RUNS}
    check = patchwork.get("check") or {}
    headline = verdict.get("verdict") or check.get("description") or "no verdict (no results.json)"
    tests = sorted_tests(verdict)
    matrix = verdict.get("matrix")    # a bot tree's matrix: base+series against the base
    body = [_header(headline, state_of(verdict, patchwork), check),
            _series_section(verdict.get("series") or {}, patchwork),
            _kernels_section(verdict), _tests_section(tests),
            _failures_section(folder, tests, runs),
            *(_extras(folder, name, label) for name, label in RUNS.items()),
            *([_extras(folder, matrix["dir"], "base+series against base", "the matrix")]
              if matrix else []),
            _files_section(folder, TOP_FILES,
                           {**RUNS, **({matrix["dir"]: "base+series against base"} if matrix else {})})]
    title = (patchwork.get("series") or {}).get("name") or (verdict.get("series") or {}).get(
        "spec") or folder.name
    return _write(folder / "index.html", f"mptcp-nvme series: {title}", body)


def write_run_page(folder):
    """``folder/index.html`` of a plain 'mptcp-nvme run' results folder; its path."""
    folder = Path(folder)
    document = _load(folder / "results.json") or {}
    tests = document.get("tests") or []
    totals = document.get("totals") or summary.count(tests)
    kernel = document.get("kernel") or {}
    headline = f"{len(tests)} tests: {_totals(totals)}"
    facts = [("kernel", kernel.get("release")), ("commit", kernel.get("commit")),
             ("origin", kernel.get("origin")), ("arch", kernel.get("arch")),
             ("shard", document.get("shard")), ("started", _when(document.get("started")))]
    shown = sorted(tests, key=lambda t: (t.get("result") not in FAILED, t.get("result") != "skip"))
    details = [_run_detail(folder, t) for t in shown if _has_detail(t)]
    body = [_header(headline, state_of(document), None),
            "<section id=\"run\"><h2>Run</h2>" + _facts([(k, _e(v)) for k, v in facts])
            + "</section>",
            _run_table(shown), _section("details", "Details", details),
            _extras(folder, "", "run"), _files_section(folder, (), {"": "run"})]
    return _write(folder / "index.html", f"mptcp-nvme run: {headline}", body)


def index_entries(root):
    """Every immediate subfolder of ``root`` with an index.html and a results.json:
    {"folder", "title", "verdict", "state", "description", "date", "version",
    "series_id", "web_url", "mtime"}, newest (results.json's mtime) first."""
    root = Path(root)
    entries = []
    for sub in sorted(root.iterdir()) if root.is_dir() else ():
        document = sub / "results.json"
        if sub.is_dir() and (sub / "index.html").is_file() and document.is_file():
            entries.append(_entry(sub, document))
    return sorted(entries, key=lambda e: (e["mtime"], e["folder"]), reverse=True)


def write_index(root, entries=None):
    """``root/index.html``: every series judged (``entries``: index_entries(root) unless
    given), newest first; its path."""
    root = Path(root)
    entries = index_entries(root) if entries is None else sorted(
        entries, key=lambda e: (e.get("date") or "", e.get("folder") or ""), reverse=True)
    counts = {s: sum(e.get("state") == s for e in entries) for s in STATES}
    head = "<tr><th>date</th><th>series</th><th>version</th><th>check</th><th>verdict</th></tr>"
    rows = "".join(_index_row(e) for e in entries)
    table = f"<table id=\"index\">{head}{rows}</table>" if rows else "<p>No series judged yet.</p>"
    total = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"
    return _write(root / "index.html", "mptcp-nvme: series judged",
                  [f"<h1>mptcp-nvme: series judged</h1><p id=\"counts\">{len(entries)} series: "
                   f"{_e(total)}</p>", table])


def _index_row(entry):
    link = _link(f"{entry.get('folder')}/index.html", entry.get("title") or entry.get("folder"))
    if _safe_url(entry.get("web_url")):
        link += " (" + _external(entry["web_url"], "patchwork") + ")"
    description = entry.get("description")
    return (f"<tr><td>{_e(entry.get('date'))}</td><td>{link}</td>"
            f"<td>{_e(entry.get('version') or '')}</td><td>{_badge(entry.get('state'))}</td>"
            f"<td>{_e(entry.get('verdict'))}"
            + (f"<br><small>{_e(description)}</small>" if description else "") + "</td></tr>")


def state_of(document, patchwork=None):
    """The page's state: patchwork's check if known, else fail on a non-zero exit (a plain
    run's document, without one: on a failed test, or no test at all)."""
    check = (patchwork or {}).get("check") or {}
    if check.get("state") in STATES:
        return check["state"]
    code = document.get("exit")
    if code is None:
        tests = document.get("tests") or ()
        code = not tests or any(t.get("result") in FAILED for t in tests)
    return "fail" if code else "success"


def sorted_tests(verdict):
    """[(category or None, test)] of a verdict document: new failures first, then the
    other changes in ORDER, then the tests whose result did not change; by node id within
    each (the same page for the same results, however the run's tests finished)."""
    changes = verdict.get("changes") or {}
    named = {key: {c[0] if isinstance(c, list | tuple) else c for c in changes.get(key) or ()}
             for key in ORDER}
    found = []
    for test in verdict.get("tests") or ():
        category = next((key for key in ORDER if test["nodeid"] in named[key]), None)
        if category is None and _result(test, "base") != _result(test, "series"):
            category = "changed"
        found.append((category, test))
    rank = list(ORDER)
    return sorted(found, key=lambda pair: (rank.index(pair[0]) if pair[0] else len(rank),
                                           pair[1]["nodeid"]))


def _entry(sub, document):
    verdict, patchwork = _load(document) or {}, _load(sub / "patchwork.json") or {}
    series, check = patchwork.get("series") or {}, patchwork.get("check") or {}
    mtime = document.stat().st_mtime
    text = verdict.get("verdict") or _totals(summary.count(verdict.get("tests") or ()))
    return {"folder": sub.name, "state": state_of(verdict, patchwork), "verdict": text,
            "title": series.get("name") or (verdict.get("series") or {}).get("spec") or sub.name,
            "description": check.get("description"), "date": _when(mtime),
            "version": series.get("version"), "series_id": series.get("id"),
            "web_url": series.get("web_url"), "mtime": mtime}


def _header(headline, state, check):
    parts = [f"<header id=\"verdict\" class=\"verdict s-{_e(state)}\">",
             f"<p class=\"state\">{_e(state)}</p>", f"<h1>{_e(headline)}</h1>"]
    if check:
        parts.append(f"<p id=\"check\">patchwork check {_e(check.get('context') or '')}: "
                     f"<strong>{_e(check.get('state'))}</strong> "
                     f"{_e(check.get('description') or '')}</p>")
    return "\n".join(parts + ["</header>"])


def _series_section(series, patchwork):
    known, theirs = patchwork.get("series") or {}, patchwork.get("patches") or []
    name = known.get("name") or series.get("spec")
    mbox = known.get("mbox")
    facts = [("series", _external(known.get("web_url"), name)),
             ("version", _e(known.get("version"))), ("patchwork id", _e(known.get("id"))),
             ("mbox", _external(mbox, "download") if _safe_url(mbox) else None),
             ("spec", _e(series.get("spec")) if series.get("spec") != name else None),
             ("base", _e(series.get("base"))), ("tree", _e(series.get("tree")))]
    ours = series.get("patches") or []
    items = []
    for i, patch in enumerate(ours or theirs):
        other = theirs[i] if i < len(theirs) else {}
        text = (f"{patch.get('index')}/{patch.get('total')} {patch.get('subject')}" if ours
                else patch.get("name"))
        url = other.get("web_url") if ours else patch.get("web_url")
        items.append(f"<li>{_external(url, text) if _safe_url(url) else _e(text)}</li>")
    patches = f"<ul id=\"patches\">{''.join(items)}</ul>" if items else "<p>No patch known.</p>"
    return ("<section id=\"series\"><h2>Series</h2>" + _facts(facts)
            + f"<h3>{len(items)} patch{'es' if len(items) != 1 else ''}</h3>{patches}</section>")


def _kernels_section(verdict):
    kernels, totals = verdict.get("kernels") or {}, verdict.get("totals") or {}
    if not kernels:
        return "<section id=\"kernels\"><h2>Kernels</h2><p>No kernel ran.</p></section>"
    rows = []
    for name, kernel in kernels.items():
        kernel = kernel or {}
        rows.append(f"<tr><td>{_e(RUNS.get(name, name))}</td><td>{_e(kernel.get('release'))}</td>"
                    f"<td><code>{_e(kernel.get('commit'))}</code></td><td>{_e(kernel.get('arch'))}"
                    f"</td><td>{_e(_totals(totals.get(name) or {}))}</td></tr>")
    head = "<tr><th>run</th><th>release</th><th>commit</th><th>arch</th><th>totals</th></tr>"
    return (f"<section id=\"kernels\"><h2>Kernels</h2><table id=\"kernel-runs\">{head}"
            f"{''.join(rows)}</table></section>")


def _tests_section(tests):
    if not tests:
        return "<section id=\"tests\"><h2>Tests</h2><p>No test ran.</p></section>"
    rows = []
    for number, (category, test) in enumerate(tests):
        was, now = _result(test, "base"), _result(test, "series")
        change = f"{ORDER[category]}: {was} -> {now}" if category else ""
        classes = "changed" + (" new" if category in ("new_failures", "new_crashes") else "") \
            if category else "same"
        rows.append(f"<tr class=\"{classes}\"><td>{_test_name(test, number)}</td>"
                    f"{_result_cell(test.get('base'))}{_result_cell(test.get('series'))}"
                    f"<td>{_e(change)}</td></tr>")
    head = "<tr><th>test</th><th>base</th><th>base+series</th><th>change</th></tr>"
    return (f"<section id=\"tests\"><h2>Tests ({len(tests)})</h2>"
            f"<table id=\"results\">{head}{''.join(rows)}</table></section>")


def _failures_section(folder, tests, runs):
    articles = []
    for number, (_, test) in enumerate(tests):
        sides = {name: test.get(name) or {} for name in RUNS}
        if not any(s.get("result") in FAILED or s.get("crashes") for s in sides.values()):
            continue
        parts = [f"<article id=\"t{number}\"><h3><code>{_e(test['nodeid'])}</code></h3>"
                 f"<p>{_e(test.get('description'))}</p>"]
        for name, label in RUNS.items():
            own = runs[name].get(test["nodeid"]) or {}
            if own or sides[name]:
                # the run's own entry (failure text, diagnostics), artifacts from the folder
                merged = {**own, "artifacts": [f"{name}/{a}" for a in own.get("artifacts") or ()]}
                merged.update({k: v for k, v in sides[name].items() if v is not None})
                parts += _test_detail(folder, merged, f"<h4 class=\"r-{_e(merged.get('result'))}\">"
                                      f"{_e(label)}: {_e(merged.get('result'))}</h4>")
        articles.append("".join(parts) + "</article>")
    return _section("failures", "Failures", articles)


def _test_detail(folder, test, heading):
    """One run's result of a test under ``heading``: reason, failure text, crashes,
    artifacts (relative to ``folder``), diagnostics and nested KTAP."""
    parts = [heading]
    if test.get("reason"):
        parts.append(f"<p class=\"reason\">reason: {_e(test['reason'])}</p>")
    if test.get("failure"):
        parts.append(f"<pre class=\"failure\">{_e(test['failure'])}</pre>")
    parts += _list("crashes", [_e(c) for c in test.get("crashes") or ()])
    parts += _list("artifacts", [_artifact(folder, a) for a in test.get("artifacts") or ()])
    diagnostics = "".join(f"<li>{_e(d)}</li>" for d in test.get("diagnostics") or ())
    if diagnostics:
        shown = " open" if test.get("result") in FAILED else ""
        parts.append(f"<details{shown}><summary>diagnostics ({len(test['diagnostics'])})"
                     f"</summary><ul class=\"diagnostics\">{diagnostics}</ul></details>")
    for nested in test.get("nested_ktap") or ():
        parts.append(f"<details><summary>kselftest KTAP</summary><pre>{_e(nested)}</pre></details>")
    return parts


def _run_detail(folder, test):
    heading = (f"<h3 class=\"r-{_e(test.get('result'))}\"><code>{_e(test['nodeid'])}</code>: "
               f"{_e(test.get('result'))}</h3><p>{_e(test.get('description'))}</p>")
    return (f"<article id=\"{_e(_anchor(test['nodeid']))}\">"
            + "".join(_test_detail(folder, test, heading)) + "</article>")


def _run_table(tests):
    if not tests:
        return "<section id=\"tests\"><h2>Tests</h2><p>No test ran.</p></section>"
    rows = [f"<tr class=\"{'failed' if t.get('result') in FAILED else 'same'}\">"
            f"<td><a href=\"#{_e(_anchor(t['nodeid']))}\"><code>{_e(t['nodeid'])}</code></a>"
            f"<br><small>{_e(t.get('description'))}</small></td>{_result_cell(t)}"
            f"<td>{_e(t.get('reason') or '')}</td></tr>" for t in tests]
    head = "<tr><th>test</th><th>result</th><th>reason</th></tr>"
    return (f"<section id=\"tests\"><h2>Tests ({len(tests)})</h2>"
            f"<table id=\"results\">{head}{''.join(rows)}</table></section>")


def _extras(folder, name, label, what="faults and charts"):
    """A run's fault table, fault timelines and matrix chart, when it wrote them."""
    run = folder / name if name else folder
    parts = []
    for table in ("faults.md", "matrix.md"):
        if (run / table).is_file():
            parts.append(markdown((run / table).read_text(encoding="utf-8", errors="replace")))
    images = sorted((run / "faults").glob("*.png")) + [p for p in [run / "matrix.png"]
                                                        if p.is_file()]
    for image in images:
        rel = image.relative_to(folder).as_posix()
        parts.append(f"<figure><img src=\"{_href(rel)}\" alt=\"{_e(rel)}\">"
                     f"<figcaption>{_link(rel, rel)}</figcaption></figure>")
    if not parts:
        return ""
    return (f"<section class=\"extras\" id=\"extras-{_e(name or 'run')}\">"
            f"<h2>{_e(label)}: {_e(what)}</h2>{''.join(parts)}</section>")


def _files_section(folder, top, runs):
    """Links to the files the folder and its runs hold: documents, logs, console logs and
    every artifact."""
    documents = [_link(f, f) for f in top if (folder / f).is_file()]
    items = ["verdict: " + ", ".join(documents)] if documents else []
    for name, label in runs.items():
        run = folder / name if name else folder
        prefix = f"{name}/" if name else ""
        found = [f"{prefix}{f}" for f in RUN_FILES if (run / f).is_file()]
        found += [p.relative_to(folder).as_posix() for p in sorted(run.glob("vm-*/console*.log"))]
        if found:
            items.append(f"{_e(label)}: " + ", ".join(_link(f, f) for f in found))
        artifacts = sorted(p.relative_to(folder).as_posix() for pattern in
                           ("vm-*/artifacts/**/*", "artifacts/**/*") for p in run.glob(pattern)
                           if p.is_file())
        if artifacts:
            shown = ", ".join(_link(a, a) for a in artifacts[:MAX_LISTED])
            more = f" and {len(artifacts) - MAX_LISTED} more" if len(artifacts) > MAX_LISTED else ""
            items.append(f"<details><summary>{_e(label)}: {len(artifacts)} artifacts</summary>"
                         f"{shown}{_e(more)}</details>")
    return _section("files", "Files", [f"<div class=\"files\">{item}</div>" for item in items])


def write_markdown_page(path, title, text):
    """``text`` (markdown as the runs write it) as a page of its own at ``path``."""
    return _write(Path(path), title, [f"<main>{markdown(text)}</main>"])


def markdown(text):
    """The markdown the runs write (faults.md, summary.md) as HTML: headings, pipe tables,
    lists, paragraphs, **bold** and `code`; everything escaped."""
    kind = lambda line: ("table" if line.startswith("|") else "list" if line.startswith("- ")
                         else "head" if line.startswith("#") else "text" if line.strip() else "")
    out = []
    for what, lines in itertools.groupby(text.splitlines(), key=kind):
        lines = list(lines)
        if what == "table":
            out.append(_md_table(lines))
        elif what == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(l[2:])}</li>" for l in lines) + "</ul>")
        elif what == "head":
            out += [f"<h4>{_inline(l.lstrip('#').strip())}</h4>" for l in lines]
        elif what == "text":
            out.append(f"<p>{_inline(' '.join(lines))}</p>")
    return "\n".join(out)


_CELL = re.compile(r"(?<!\\)\|")            # a cell border, not an escaped \|
_RULE = re.compile(r"^\|?(\s*:?-{3,}:?\s*\|?)+$")     # |---|---| under the head


def _md_table(lines):
    rows = []
    for line in (l.strip() for l in lines):
        if _RULE.match(line):
            continue
        body = line[1:-1] if line.endswith("|") and not line.endswith("\\|") else line[1:]
        cells = [_inline(c.strip().replace("\\|", "|")) for c in _CELL.split(body)]
        tag = "td" if rows else "th"
        rows.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
    return f"<table class=\"markdown\">{''.join(rows)}</table>"


def _inline(text):
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _test_name(test, number):
    name = f"<code>{_e(test['nodeid'])}</code>"
    failing = any((test.get(n) or {}).get("result") in FAILED for n in RUNS)
    return ((f"<a href=\"#t{number}\">{name}</a>" if failing else name)
            + f"<br><small>{_e(test.get('description'))}</small>")


def _result_cell(values):
    values = values or {}
    result = values.get("result") or "not run"
    extra = [f"{values['time_ms'] / 1000:.1f} s" if values.get("time_ms") else "",
             "flaky" if values.get("flaky") else "",
             f"{len(values['crashes'])} crash(es)" if values.get("crashes") else ""]
    small = ", ".join(e for e in extra if e)
    return (f"<td class=\"r-{_e(result.replace(' ', '-'))}\">{_e(result)}"
            + (f" <small>{_e(small)}</small>" if small else "") + "</td>")


def _artifact(folder, path):
    """A link to an artifact that exists inside the folder, else its name."""
    rel = Path(str(path))
    inside = not rel.is_absolute() and ".." not in rel.parts
    if inside and (folder / rel).is_file():
        return _link(rel.as_posix(), rel.as_posix())
    return f"<span class=\"missing\">{_e(path)} (not kept)</span>"


def _has_detail(test):
    return any(test.get(k) for k in ("reason", "failure", "crashes", "artifacts", "diagnostics",
                                     "nested_ktap"))


def _list(css, items):
    if not items:
        return []
    return [f"<p>{css}:</p><ul class=\"{css}\">" + "".join(f"<li>{i}</li>" for i in items)
            + "</ul>"]


def _facts(facts):
    """A two-column table of (name, HTML) pairs, the empty ones left out."""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in facts if v)
    return f"<table class=\"facts\">{rows}</table>"


def _section(css, title, parts):
    if not parts:
        return ""
    return f"<section id=\"{css}\"><h2>{_e(title)}</h2>{''.join(parts)}</section>"


def _write(path, title, body):
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(b for b in body if b)
            + f"\n<footer>written by mptcp-nvme at {stamp}</footer>\n</body></html>\n")
    path.write_text(page, encoding="utf-8")
    return path


def _load(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _result(test, name):
    return (test.get(name) or {}).get("result") or "not run"


def _totals(totals):
    return ", ".join(f"{n} {o}" for o, n in totals.items() if n) or "no tests"


def _when(stamp):
    if stamp is None:
        return None
    when = datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc)
    return when.isoformat(timespec="seconds")


def _anchor(nodeid):
    return "test-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", str(nodeid))


def _badge(state):
    return f"<span class=\"badge s-{_e(state)}\">{_e(state)}</span>"


def _e(value):
    return html.escape("" if value is None else str(value))


def _href(rel):
    return _e(quote(str(rel)))


def _link(rel, text):
    return f"<a href=\"{_href(rel)}\">{_e(text)}</a>"


def _safe_url(url):
    return isinstance(url, str) and url.startswith(("https://", "http://"))


def _external(url, text):
    """A link to patchwork (http(s) only: a javascript: address is shown, not linked)."""
    if not _safe_url(url):
        return _e(text)
    return f"<a href=\"{_e(url)}\">{_e(text)}</a>"

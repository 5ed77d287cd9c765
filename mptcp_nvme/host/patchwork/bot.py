"""'mptcp-nvme patchwork poll|serve|run': a CI bot on patchwork.

poll() is one pass: new series from the series-completed events since the persisted
cursor, each decided (waiting for its patches, not ours, or queued on a base tree) and
every queued one run. run() is one series end to end: a pending check on every patch,
the 'series' machinery (apply, cached incremental builds, base and base+series runs,
compare), then the final check on every patch with a one-line description and the
series' results page as its link. What the checks mean (check_for):

- success: no new failures (nor crashes, nor skips) against the base;
- warning: new failures only in known-flaky tests ([flaky] in the config), tests that
  passed only on a retry (unstable), new skips, or (a tree with a matrix) a matrix cell
  that failed or fell beyond the repeats' spread against the base;
- fail: a new failure or a new crash, a patch that does not apply or a build that fails.

A failure the base has too is not the series'; a failure is retried once on a fresh VM
(--retry-failed 1) before it counts; a final check is never followed by a pending one.
"""

import dataclasses
import datetime
import json
import re
import sys
import time

from mptcp_nvme.errors import SeriesRejected, SetupError, UsageError
from mptcp_nvme.host.patchwork.client import PatchworkError
from mptcp_nvme.host.results import pages
from mptcp_nvme.host.series import patches

_DIFF_PATH = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.M)
_TAGS = re.compile(r"^\[([^\]]*)\]")
DESCRIPTION_MAX = 200
MAX_ATTEMPTS = 2


def say(text):
    print(f"patchwork: {text}", file=sys.stderr, flush=True)


def changed_files(mbox):
    """The files a series' mbox changes (both sides of every diff)."""
    return sorted({path for pair in _DIFF_PATH.findall(mbox) for path in pair})


def subject_tags(name):
    """The words of a patch name's leading [...] ('[net-next,v2,1/3] x' -> net-next, v2, 1/3)."""
    match = _TAGS.match(name.strip())
    return [w for w in re.split(r"[\s,]+", match.group(1)) if w] if match else []


def step_past(date):
    """The cursor after an event of ``date``: patchwork's since is inclusive."""
    when = datetime.datetime.fromisoformat(date) + datetime.timedelta(microseconds=1)
    return when.isoformat(timespec="microseconds")


@dataclasses.dataclass
class Bot:
    """One bot: its config, a patchwork client, its state and the judge (series.judge)."""

    config: object
    client: object
    state: object
    judge: object
    now: object = time.time

    def poll(self):
        """One pass; the number of series run."""
        project = self.client.project(self.config.project)
        cursor = self.state.cursor()
        for event in self.client.events(project["id"], since=cursor):
            found = event["payload"]["series"]
            if self.state.see(found["id"], found.get("name"), found.get("version")):
                say(f"series {found['id']} '{found.get('name')}' v{found.get('version')}: new")
            cursor = step_past(event["date"])
            self.state.set_cursor(cursor)
        ran = 0
        for entry in self.state.pending():
            try:
                ran += self.consider(entry)
            except PatchworkError as err:
                if err.status == 404:          # deleted from patchwork: nothing to judge
                    self.state.update(entry["id"], status="errored", decision="not on patchwork")
                self._log(entry, f"left for the next pass: {err}")
            except SetupError as err:          # the run broke (a VM, a tool): next pass again
                self._log(entry, f"run failed, left for the next pass: {err}")
        return ran

    def consider(self, entry):
        """Decide one series; run it when it is ours and complete. 1 when it ran."""
        series_id = entry["id"]
        if entry["status"] == "running":
            if entry["attempts"] >= MAX_ATTEMPTS:
                self.state.update(series_id, status="errored", decision="interrupted twice")
                self._log(entry, "errored: its run was interrupted twice")
                self._post_all(series_id, "warning", "CI error: the run was interrupted twice",
                               self.page_url(entry.get("folder")))
                return 0
            self._log(entry, "its run was interrupted: running it again")
            return self.run(series_id)
        detail = self.client.series(series_id)
        if self.config.delegate and not self._delegated(detail):
            self.state.update(series_id, status="not ours", decision="delegated elsewhere")
            self._log(entry, "not ours: not delegated to " + self.config.delegate)
            return 0
        if not detail.get("received_all"):
            self.state.update(series_id, status="waiting", decision="waiting for its patches")
            self._log(entry, f"waiting: {detail.get('received_total')}/{detail.get('total')} "
                             "patches received")
            return 0
        mbox = self.client.download(detail["mbox"]).decode(errors="replace")
        if not self.config.touches_ours(changed_files(mbox)):
            self.state.update(series_id, status="not ours", decision="touches none of our files")
            self._log(entry, "not ours: touches none of our files")
            return 0
        self.state.update(series_id, status="queued", decision="ours")
        return self.run(series_id, detail=detail, mbox=mbox)

    def run(self, series_id, detail=None, mbox=None):
        """One series end to end (also 'patchwork run ID'); 1."""
        detail = detail or self.client.series(series_id)
        mbox = mbox if mbox is not None else self.client.download(detail["mbox"]).decode(
            errors="replace")
        self.state.see(series_id, detail.get("name"), detail.get("version"))
        entry = self.state.series(series_id)
        folder = entry.get("folder") or f"series-{series_id}-v{detail.get('version') or 1}"
        out = self.config.results_dir / folder
        url = self.page_url(folder)
        self._post_all(series_id, "pending", "queued: base and base+series will run", url,
                       detail=detail)
        self.state.update(series_id, status="running", folder=folder,
                          attempts=entry["attempts"] + 1)
        input_dir = out / "input"
        input_dir.mkdir(parents=True, exist_ok=True)
        (input_dir / "series.mbox").write_text(mbox)
        tree, series, why = self.base_for(detail, input_dir)
        if tree is None:
            verdict = {"format": 1, "verdict": why, "exit": 1, "series": None, "kernels": {},
                       "totals": {}, "changes": {}, "tests": []}
            (out / "results.json").write_text(json.dumps(verdict, indent=2) + "\n")
        else:
            self.state.update(series_id, tree=tree.tag)
            self._log(entry, f"running on {tree.tag} ({tree.branch})")
            verdict = self.judge(series, out, self.selection(tree), matrix=tree.matrix)
        state, description = check_for(verdict, self.config.flaky_reason)
        self._post_all(series_id, state, description, url, detail=detail)
        self._record(out, detail, state, description)
        pages.write_series_page(out)
        pages.write_index(self.config.results_dir)
        self.state.update(series_id, status="done", decision=f"{state}: {description}")
        self._log(entry, f"{state}: {description}")
        return 1

    def base_for(self, detail, input_dir):
        """(Tree, patches.Series, None) the series runs on, or (None, None, why): the tree
        an earlier version got; else the subject tag's; else the first on which the
        whole series applies."""
        mbox = input_dir / "series.mbox"
        earlier = self.state.earlier_tree(detail.get("name"), detail.get("version") or 1)
        tags = subject_tags((detail.get("patches") or [{}])[0].get("name", ""))
        tagged = next((self.config.tree(t) for t in tags if self.config.tree(t)), None)
        if earlier and self.config.tree(earlier):
            candidates = [self.config.tree(earlier)]
        elif tagged:
            candidates = [tagged]
        else:
            candidates = list(self.config.trees)
        problems = []
        for tree in candidates:
            try:
                series = patches.resolve(str(mbox), tree.path, input_dir)
                series = dataclasses.replace(series, base=patches.commit_of(tree.path, tree.branch))
                patches.check_applies(series, input_dir)
                return tree, series, None
            except (SeriesRejected, UsageError) as err:
                problems.append(f"{tree.tag}: {err}")
        return None, None, "does not apply: " + "; ".join(problems)

    def selection(self, tree):
        args = list(tree.args)
        if not any(a.startswith("--retry-failed") for a in args):
            args += ["--retry-failed", "1"]
        return [*tree.tests, *args]

    def page_url(self, folder):
        return f"{self.config.results_url}/{folder}/" if folder else self.config.results_url + "/"

    def _post_all(self, series_id, state, description, url, detail=None):
        detail = detail or self.client.series(series_id)
        for patch in detail.get("patches") or ():
            if state == "pending" and self.state.final_posted(patch["id"], series_id):
                continue                       # never downgrade a final check
            self.client.post_check(patch["id"], state, self.config.context, description, url)
            self.state.posted(patch["id"], series_id, state, description, url)

    def _record(self, out, detail, state, description):
        """patchwork.json beside the verdict (the results page shows it)."""
        keep = lambda item, keys: {k: item.get(k) for k in keys}
        (out / "patchwork.json").write_text(json.dumps({
            "series": keep(detail, ("id", "name", "version", "web_url", "mbox")),
            "patches": [keep(p, ("id", "name", "web_url")) for p in detail.get("patches") or ()],
            "check": {"state": state, "description": description,
                      "context": self.config.context}}, indent=2) + "\n")

    def _delegated(self, detail):
        for patch in detail.get("patches") or ():
            found = self.client.patch(patch["id"]).get("delegate") or {}
            if found.get("username") == self.config.delegate:
                return True
        return False

    def _log(self, entry, text):
        say(f"series {entry['id']} '{entry.get('name')}' v{entry.get('version')}: {text}")


def check_for(verdict, flaky_reason=lambda nodeid: None):
    """(state, one-line description) of a series' verdict document (series.judge's)."""
    changes = verdict.get("changes") or {}
    if not verdict.get("tests") and not verdict.get("kernels"):
        return "fail", _line(verdict.get("verdict") or "rejected")
    crashes = changes.get("new_crashes") or []
    failures = changes.get("new_failures") or []
    real = [n for n in failures if not flaky_reason(n)]
    if crashes:
        return "fail", _line("new crash: " + ", ".join(f"{n} ({fp})" for n, fp in crashes))
    if real:
        now = {t["nodeid"]: t.get("series") or {} for t in verdict.get("tests") or ()}
        return "fail", _line("new failure: " + _names(real, lambda n: _how(now.get(n, {}))))
    unstable = [t["nodeid"] for t in verdict["tests"] if (t.get("series") or {}).get("flaky")]
    warnings = []
    if failures:
        warnings.append("known-flaky failures: " + _names(failures))
    if unstable:
        warnings.append("unstable (passed on a retry): " + _names(unstable))
    if changes.get("new_skips"):
        warnings.append("new skips: " + _names(changes["new_skips"]))
    matrix = verdict.get("matrix") or {}
    ratio = [matrix["headline"]] if matrix.get("headline") else []
    if matrix.get("regressions"):
        warnings.append("matrix regression against the base: " + ", ".join(matrix["regressions"]))
    if matrix.get("exit"):
        warnings.append("a matrix cell failed")
    if warnings:
        return "warning", _line("; ".join([*warnings, *ratio]))
    totals = (verdict.get("totals") or {}).get("series") or {}
    return "success", _line("; ".join([f"{totals.get('pass', 0)} pass, {totals.get('skip', 0)} "
                                       "skip", "no new failures", *ratio]))


def _how(result):
    """' (error: TIMEOUT)' for a test that errored, as results.json says; '' for a fail."""
    if result.get("result") in (None, "fail"):
        return ""
    return f" ({result['result']}" + (f": {result['reason']})" if result.get("reason") else ")")


def _names(nodeids, how=lambda nodeid: ""):
    shown = [n.split("::", 1)[-1] + how(n) for n in nodeids[:3]]
    return ", ".join(shown) + (f" and {len(nodeids) - 3} more" if len(nodeids) > 3 else "")


def _line(text):
    text = " ".join(str(text).split())
    return text if len(text) <= DESCRIPTION_MAX else text[:DESCRIPTION_MAX - 1] + "…"


def serve(bot, interval, passes=None, sleep=time.sleep):
    """poll() every ``interval`` seconds (``passes`` of them, else until killed); a pass
    that patchwork fails (after the client's retries) is one line and the next pass
    goes on from the saved cursor."""
    done = 0
    while passes is None or done < passes:
        try:
            bot.poll()
        except (PatchworkError, SetupError) as err:
            say(f"pass failed: {err}")
        done += 1
        if passes is None or done < passes:
            sleep(interval)


def make(config, judge=None, client=None, state=None):
    """A Bot from a loaded config: the real client, state and judge unless given."""
    from mptcp_nvme.host.patchwork.client import Patchwork
    from mptcp_nvme.host.patchwork.state import State
    from mptcp_nvme.host.series.judge import judge as series_judge
    client = client or Patchwork(config.url, api=config.api, token=config.token,
                                 log=lambda line: say(line))
    return Bot(config, client, state or State(config.state_path), judge or series_judge)

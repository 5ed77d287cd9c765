"""'mptcp-nvme series SERIES --base TREE': a patch series against its base, for CI bots.

SERIES is an mbox file (what ``git am`` takes), a message id that b4 turns into one (from
lore, or offline from a local mbox: ``--local-mbox FILE``), or a git range A..B of TREE.
TREE is a git kernel work tree. Everything about the input is checked before any build:
a bad one is a UsageError (one line, exit 2).

- The series is first applied to the base commit in a scratch clone (index only, no
  work tree: seconds); a patch that does not apply is a SeriesRejected naming it.
- The base is TREE's HEAD (for a range A..B: A). Its build is a copy of TREE's work tree
  (build products and mtimes kept: a built TREE makes it incremental) with a shared
  clone of TREE's repository as its .git, checked out at the base commit and built with
  ``mptcp-nvme build --trim``'s fragments, cached under ``<cache>/series/`` by
  (commit, config).
- The series' build is a copy of the base's built tree with the series applied by
  ``git am`` there: only what the patches touch rebuilds. Cached by (base commit, the
  patches, config). A build that fails is a SeriesRejected with its first error line.
- The same selection then runs on both kernels (``mptcp-nvme run`` as a subprocess, one
  after the other, into DIR/base and DIR/series) and compare() says what changed;
  host/verdict.py writes the outputs.
"""

import dataclasses
import email
import email.header
import email.policy
import hashlib
import os
import re
import shutil
import sys
from pathlib import Path

from mptcp_nvme import proc
from mptcp_nvme.errors import SeriesRejected, SetupError, UsageError
from mptcp_nvme.host import kernel as kernel_mod
from mptcp_nvme.host.rootfs import cache_dir

BUILT_STAMP = ".mptcp-nvme-built"
KEEP = {"base": 2, "series": 4}        # built trees kept in the cache, per kind
GIT_TIMEOUT = 600.0
# git am's commits in the series' build tree: a fixed committer, author dates kept
COMMITTER = {"GIT_COMMITTER_NAME": "mptcp-nvme series", "GIT_COMMITTER_EMAIL": "series@mptcp-nvme"}
_MSGID = re.compile(r"<?([^\s<>@/]+@[^\s<>@/]+)>?")
_LORE = re.compile(r"https?://\S+/([^\s/]+@[^\s/]+)/?\S*")
_PREFIX = re.compile(r"^\s*\[[^\]]*\]\s*")
_NUMBER = re.compile(r"\b(\d+)/(\d+)\]")
_DIFF = re.compile(r"^(diff --git |--- \S.*\n\+\+\+ \S)", re.M)
FAILED = ("fail", "error", "xpass")
SKIPPED = ("skip",)
_FINGERPRINT = re.compile(r"\(fingerprint (\S+)\)\s*$")


@dataclasses.dataclass(frozen=True)
class Patch:
    index: int
    total: int
    subject: str          # without its [PATCH ...] prefix
    path: Path            # one mail, as git mailsplit wrote it

    def __str__(self):
        return f"patch {self.index}/{self.total} '{self.subject}'"


@dataclasses.dataclass(frozen=True)
class Series:
    spec: str
    kind: str             # mbox, msgid, range
    tree: Path            # the base's git work tree
    base: str             # the base commit
    patches: tuple

    def key(self):
        """What defines base+series: the base commit and the patches' bytes."""
        digest = hashlib.sha256(self.base.encode())
        for patch in self.patches:
            digest.update(patch.path.read_bytes())
        return digest.hexdigest()[:12]


def git(tree, *args, fail=True, env=None, timeout=GIT_TIMEOUT):
    return proc.cmd(["git", "-C", str(tree), *args], fail=fail, timeout=timeout,
                    env={**os.environ, **COMMITTER, **(env or {})})


def kernel_tree(path):
    """TREE as a git kernel work tree (its top level); UsageError when it is not one."""
    tree = Path(path).resolve()
    if not tree.is_dir() or not (tree / "Kconfig").is_file() or not (tree / "Makefile").is_file():
        raise UsageError(f"--base {path}: not a kernel source tree (no Kconfig and Makefile)")
    top = git(tree, "rev-parse", "--show-toplevel", fail=False)
    if top.ret or Path(top.stdout.strip()).resolve() != tree:
        raise UsageError(f"--base {path}: not a git work tree (the series is applied with git)")
    if git(tree, "rev-parse", "--verify", "-q", "HEAD^{commit}", fail=False).ret:
        raise UsageError(f"--base {path}: the git tree has no commit")
    return tree


def commit_of(tree, rev):
    """The commit ``rev`` names in ``tree``; UsageError when none."""
    found = git(tree, "rev-parse", "--verify", "-q", f"{rev}^{{commit}}", fail=False)
    if found.ret:
        raise UsageError(f"{rev}: not a commit in {tree}")
    return found.stdout.strip()


def resolve(spec, tree, scratch, local_mbox=None):
    """The Series that ``spec`` names, its patches split into ``scratch``."""
    tree = kernel_tree(tree)
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    path = Path(spec)
    if path.is_file():
        if local_mbox:
            raise UsageError("--local-mbox goes with a message id, not with an mbox file")
        return Series(spec, "mbox", tree, commit_of(tree, "HEAD"), split_mbox(path, scratch))
    if ".." in spec and not path.exists():
        start, _, end = spec.partition("...") if "..." in spec else spec.partition("..")
        base, head = commit_of(tree, start or "HEAD"), commit_of(tree, end or "HEAD")
        count = int(git(tree, "rev-list", "--count", f"{base}..{head}").stdout)
        if not count:
            raise UsageError(f"{spec}: no commits in the range")
        mbox = scratch / "range.mbox"
        mbox.write_text(git(tree, "format-patch", "--stdout", "--no-signature",
                            f"{base}..{head}").stdout)
        return Series(spec, "range", tree, base, split_mbox(mbox, scratch))
    msgid = message_id(spec)
    if msgid is None:
        raise UsageError(f"{spec}: not an mbox file, a git range A..B or a message id")
    mbox = b4_am(msgid, scratch, local_mbox)
    return Series(spec, "msgid", tree, commit_of(tree, "HEAD"), split_mbox(mbox, scratch))


def message_id(text):
    """The message id in ``text`` (bare, <bracketed> or a lore URL), else None."""
    match = _LORE.fullmatch(text.strip()) or _MSGID.fullmatch(text.strip())
    return match.group(1) if match else None


def b4_am(msgid, scratch, local_mbox=None):
    """The am-ready mbox b4 makes of the thread ``msgid`` (from ``local_mbox`` offline)."""
    if local_mbox and not Path(local_mbox).is_file():
        raise UsageError(f"--local-mbox {local_mbox}: no such file")
    b4 = Path(sys.executable).with_name("b4")
    argv = [str(b4) if b4.is_file() else "b4", "--no-stdin"]
    argv += ["--offline-mode", "am", "-m", str(local_mbox)] if local_mbox else ["am"]
    out = Path(scratch) / "b4"
    argv += ["--no-cover", "-o", str(out), "-n", "series", msgid]
    result = proc.cmd(argv, fail=False, timeout=300)
    mbox = out / "series.mbx"
    if result.ret or not mbox.is_file():
        said = [l.strip() for l in (result.stderr + result.stdout).splitlines()
                if l.startswith(("CRITICAL", "ERROR"))] or (result.stderr.strip().splitlines()
                                                            or [f"exit {result.ret}"])
        where = f"in {local_mbox}" if local_mbox else "on lore (offline? pass --local-mbox FILE)"
        raise UsageError(f"b4 found no patch series for {msgid} {where}: {said[0]}")
    return mbox


def split_mbox(path, scratch):
    """The patches of an mbox, in order; UsageError when it holds none (or a mail that
    is neither a patch nor a cover letter)."""
    folder = Path(scratch) / "mails"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    split = proc.cmd(["git", "mailsplit", "-b", f"-o{folder}", str(path)], fail=False)
    mails = sorted(folder.iterdir())
    if split.ret or not mails:
        raise UsageError(f"{path}: not a patch series (git mailsplit found no mail in it)")
    patches, strays = [], []
    for mail in mails:
        message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.compat32)
        subject = " ".join(str(email.header.make_header(
            email.header.decode_header(message.get("Subject") or ""))).split())
        if _DIFF.search(_body(message)):
            patches.append((subject, mail))
        elif not re.search(r"\b0+/\d+\]", subject):          # a cover letter is no patch
            strays.append(subject or mail.name)
    if not patches:
        raise UsageError(f"{path}: not a patch series (no mail in it has a diff)")
    if strays:
        raise UsageError(f"{path}: not a patch series: '{strays[0]}' has no diff")
    return tuple(Patch(i, len(patches), _PREFIX.sub("", subject) or mail.name, mail)
                 for i, (subject, mail) in enumerate(patches, 1))


def _body(message):
    parts = message.walk() if message.is_multipart() else [message]
    return "\n".join(p.get_payload(decode=True).decode(errors="replace") for p in parts
                     if not p.is_multipart() and p.get_payload(decode=True))


def _first_error(text):
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return next((l for l in lines if l.startswith(("error:", "fatal:"))), lines[0] if lines else "?")


def check_applies(series, scratch):
    """Apply the patches one by one to the base commit's index in a scratch clone (no
    work tree, nothing written to TREE); SeriesRejected naming the first that fails."""
    clone = Path(scratch) / "check.git"
    shutil.rmtree(clone, ignore_errors=True)
    proc.cmd(["git", "clone", "-q", "--bare", "--shared", str(series.tree), str(clone)],
             timeout=GIT_TIMEOUT)
    index = {"GIT_INDEX_FILE": str(clone / "check.index")}
    try:
        git(clone, "read-tree", series.base, env=index)
        for patch in series.patches:
            applied = git(clone, "apply", "--cached", str(patch.path), fail=False, env=index)
            if applied.ret:
                raise SeriesRejected(f"{patch} does not apply: {_first_error(applied.stderr)}")
    finally:
        shutil.rmtree(clone, ignore_errors=True)


def config_key(tree):
    """What defines the configuration: the tree's own .config and the fragments."""
    digest = hashlib.sha256()
    config = Path(tree) / ".config"
    digest.update(config.read_bytes() if config.is_file() else b"(vng's default config)")
    for fragment in kernel_mod.fragments(trim=True):
        digest.update(fragment.name.encode() + b"\0" + fragment.read_bytes())
    return digest.hexdigest()[:12]


def copy_tree(source, dest, with_git):
    """``source``'s files into ``dest`` with their mtimes (cp -a); its .git too, or not."""
    dest.mkdir(parents=True)
    entries = [str(p) for p in Path(source).iterdir() if with_git or p.name != ".git"]
    if entries:
        proc.cmd(["cp", "-a", "--reflink=auto", *entries, str(dest)], timeout=3600)


def _cached(home, make):
    """The built tree ``home``/linux: from the cache, else made by ``make(tree)`` and
    stamped; an unfinished one is removed, never reused. Past KEEP built trees of its
    kind (a kernel tree is ~3 GB), the least recently used go."""
    tree = home / "linux"
    stamp = home / BUILT_STAMP
    if stamp.is_file() and (tree / kernel_mod.BZIMAGE).is_file():
        say(f"the {home.name.partition('-')[0]} build is cached: {tree}")
        stamp.touch()
        return tree, True
    shutil.rmtree(home, ignore_errors=True)
    try:
        make(tree)
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise
    stamp.write_text(f"{tree}\n")
    prune(home)
    return tree, False


def prune(home):
    """Remove the least recently used built trees of ``home``'s kind beyond KEEP."""
    kind = home.name.partition("-")[0]
    used = lambda h: (h / BUILT_STAMP).stat().st_mtime if (h / BUILT_STAMP).is_file() else 0
    others = sorted((h for h in home.parent.glob(f"{kind}-*") if h != home and h.is_dir()),
                    key=used, reverse=True)
    for old in others[KEEP[kind] - 1:]:
        say(f"removing the least recently used {kind} build {old}")
        shutil.rmtree(old, ignore_errors=True)


def build_base(series, log, jobs=None):
    """The base commit's built tree (cached by commit and config); (tree, cached)."""
    key = f"base-{series.base[:12]}-{config_key(series.tree)}"

    def make(tree):
        say(f"copying {series.tree} for the base build")
        copy_tree(series.tree, tree, with_git=False)
        proc.cmd(["git", "clone", "-q", "--shared", "--no-checkout", str(series.tree),
                  str(tree / ".gitclone")], timeout=GIT_TIMEOUT)
        (tree / ".gitclone/.git").rename(tree / ".git")
        (tree / ".gitclone").rmdir()
        git(tree, "reset", "-q", series.base)            # the index, not the files
        git(tree, "update-index", "-q", "--refresh", fail=False)
        git(tree, "checkout", "-q", "-f", "--detach", series.base)   # only what differs
        say(f"building the base {series.base[:12]} (log: {log})")
        kernel_mod.build(tree, jobs=jobs, trim=True, log=log)
    return _cached(cache_dir() / "series" / key, make)


def build_series(series, base_tree, log, jobs=None):
    """base+series built incrementally in a copy of the base's built tree (cached by
    base commit, patches and config); (tree, cached). SeriesRejected when git am or the
    build fails."""
    key = f"series-{series.key()}-{config_key(series.tree)}"

    def make(tree):
        say("copying the base's built tree for the series")
        copy_tree(base_tree, tree, with_git=True)
        applied = git(tree, "am", "-q", "--committer-date-is-author-date",
                      *map(str, (p.path for p in series.patches)), fail=False)
        if applied.ret:
            git(tree, "am", "--abort", fail=False)
            raise SeriesRejected(f"the series does not apply with git am: "
                                 f"{_first_error(applied.stderr + applied.stdout)}")
        say(f"building base+series {git(tree, 'rev-parse', 'HEAD').stdout.strip()[:12]} "
            f"(log: {log})")
        try:
            kernel_mod.build(tree, jobs=jobs, trim=True, log=log)
        except SetupError as err:
            raise SeriesRejected(f"base+series does not build: "
                                 f"{str(err).partition(' failed: ')[2] or err}") from None
    return _cached(cache_dir() / "series" / key, make)


def say(text):
    print(f"series: {text}", file=sys.stderr, flush=True)


def crash_fingerprints(test):
    """The fingerprints of a results.json test's crash summaries."""
    found = (_FINGERPRINT.search(c) for c in test.get("crashes") or ())
    return [m.group(1) for m in found if m]


def compare(base, series):
    """What changed from the base's results.json document to the series': {category:
    [node ids]} for new_failures, fixed, still_failing, new_skips, not_run (in the base
    only), and new_crashes / known_crashes as [(node id, fingerprint)] (a fingerprint the
    base also crashed with, in any test, is known)."""
    before = {t["nodeid"]: t for t in base["tests"]}
    base_crashes = {fp for t in base["tests"] for fp in crash_fingerprints(t)}
    changes = {name: [] for name in ("new_failures", "fixed", "still_failing", "new_skips",
                                     "not_run", "new_crashes", "known_crashes")}
    for test in series["tests"]:
        nodeid, now = test["nodeid"], test["result"]
        was = before.get(nodeid, {}).get("result")
        if now in FAILED:
            changes["still_failing" if was in FAILED else "new_failures"].append(nodeid)
        elif was in FAILED:
            changes["fixed" if now not in SKIPPED else "new_skips"].append(nodeid)
        elif now in SKIPPED and was not in SKIPPED:
            changes["new_skips"].append(nodeid)
        for fingerprint in crash_fingerprints(test):
            known = fingerprint in base_crashes
            changes["known_crashes" if known else "new_crashes"].append((nodeid, fingerprint))
    ran = {t["nodeid"] for t in series["tests"]}
    changes["not_run"] = [nodeid for nodeid in before if nodeid not in ran]
    return changes


def exit_code(changes):
    """1 on new failures or new crashes, else 0."""
    return 1 if changes["new_failures"] or changes["new_crashes"] else 0


def run_selection(kernel_tree, results, selection):
    """``mptcp-nvme run --kernel kernel_tree --results-dir results *selection`` as a
    subprocess, its output on stderr and in results/run.log, KTAP in results/ktap.txt;
    its results.json document. SetupError when it ended without one."""
    from mptcp_nvme.host import merge, summary
    results = Path(results)
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    argv = [sys.executable, "-m", "mptcp_nvme.host.cli", "run", "--kernel", str(kernel_tree),
            "--results-dir", str(results), *selection]
    with open(results / "run.log", "w") as log:
        def on_line(line):
            log.write(line)
            sys.stderr.write(line)
        code = proc.stream(argv, on_line, cwd=Path(__file__).resolve().parents[2])
    if not (results / "results.json").is_file():
        raise SetupError(f"mptcp-nvme run on {kernel_tree} exited {code} without results.json "
                         f"(log: {results / 'run.log'})")
    document = merge.read_run(results)[1]
    with open(results / "ktap.txt", "w") as ktap:
        summary.write_ktap(document, ktap)
    return document

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
  host/series/verdict.py writes the outputs.
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
from mptcp_nvme.errors import SeriesRejected, UsageError

GIT_TIMEOUT = 600.0
# git am's commits in the series' build tree: a fixed committer, author dates kept
COMMITTER = {"GIT_COMMITTER_NAME": "mptcp-nvme series", "GIT_COMMITTER_EMAIL": "series@mptcp-nvme"}
_MSGID = re.compile(r"<?([^\s<>@/]+@[^\s<>@/]+)>?")
_LORE = re.compile(r"https?://\S+/([^\s/]+@[^\s/]+)/?\S*")
_PREFIX = re.compile(r"^\s*\[[^\]]*\]\s*")
_NUMBER = re.compile(r"\b(\d+)/(\d+)\]")
_DIFF = re.compile(r"^(diff --git |--- \S.*\n\+\+\+ \S)", re.M)


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


def say(text):
    print(f"series: {text}", file=sys.stderr, flush=True)


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


def first_error(text):
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
                raise SeriesRejected(f"{patch} does not apply: {first_error(applied.stderr)}")
    finally:
        shutil.rmtree(clone, ignore_errors=True)

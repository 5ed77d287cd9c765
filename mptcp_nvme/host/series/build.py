"""The base and base+series kernels of 'mptcp-nvme series', built once and cached by
(commit, config) and (base commit, patches, config) under the cache's series/."""

import hashlib
import shutil
from pathlib import Path

from mptcp_nvme import proc
from mptcp_nvme.errors import SeriesRejected, SetupError
from mptcp_nvme.host.inputs import kernel as kernel_mod
from mptcp_nvme.host.inputs.rootfs import cache_dir
from mptcp_nvme.host.series.patches import GIT_TIMEOUT, first_error, git, say
from mptcp_nvme.vocabulary import BUILT_STAMP


KEEP = {"base": 2, "series": 4}        # built trees kept in the cache, per kind


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
                                 f"{first_error(applied.stderr + applied.stdout)}")
        say(f"building base+series {git(tree, 'rev-parse', 'HEAD').stdout.strip()[:12]} "
            f"(log: {log})")
        try:
            kernel_mod.build(tree, jobs=jobs, trim=True, log=log)
        except SetupError as err:
            raise SeriesRejected(f"base+series does not build: "
                                 f"{str(err).partition(' failed: ')[2] or err}") from None
    return _cached(cache_dir() / "series" / key, make)

"""The CI's test kernel with the NVMe mptcp transport: Debian's linux-source plus the
stand-in patch (ci/mptcp-standin.patch), built by ``mptcp-nvme build --trim``.

``ci/mptcp-kernel`` calls this. The source package comes from trixie-backports through
apt (a private apt state under the cache: the host's own apt configuration is left
alone). The built tree is cached under the cache directory, keyed by the source
package's version, the patch and the kconfig fragments; a tree whose build did not
finish is removed, never reused.
"""

import hashlib
import shutil
import tempfile
import sys
import tarfile
import time
from pathlib import Path

from mptcp_nvme import SOURCE_DIR
from mptcp_nvme import proc
from mptcp_nvme.host.inputs import kernel as kernel_mod
from mptcp_nvme.errors import ArgumentParser, SetupError, run_command
from mptcp_nvme.host.inputs.rootfs import KERNEL_SUITE, SUITE, cache_dir, debian_mirror
from mptcp_nvme.vocabulary import BUILT_STAMP

SOURCE_PACKAGE = "linux-source-7.3"
PATCH = SOURCE_DIR / "ci" / "mptcp-standin.patch"
LISTS_MAX_AGE = 24 * 3600.0
APT_TIMEOUT = 600.0


class Apt:
    """apt-get/apt-cache on a private state directory with trixie and its backports."""

    def __init__(self, root):
        self.root = Path(root)
        self.sources = self.root / "sources.list"
        self.lists = self.root / "lists"

    def options(self):
        return ["-o", f"Dir::Etc::SourceList={self.sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
                "-o", f"Dir::State::Lists={self.lists}", "-o", f"Dir::Cache={self.root / 'cache'}",
                "-o", "Dir::State::status=/dev/null", "-o", "APT::Sandbox::User=root",
                "-o", "Debug::NoLocking=1"]

    def _run(self, tool, *args):
        result = proc.cmd([tool, *self.options(), *args], fail=False, timeout=APT_TIMEOUT)
        if result.ret:
            tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:]
            raise SetupError(f"{tool} {' '.join(args)} failed: {' '.join(tail)}")
        return result.stdout

    def update(self, force=False):
        stamp = self.root / "updated"
        fresh = stamp.is_file() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE
        if fresh and not force:
            return
        mirror = debian_mirror()
        for folder in (self.lists / "partial", self.root / "cache" / "archives" / "partial"):
            folder.mkdir(parents=True, exist_ok=True)
        self.sources.write_text(f"deb {mirror} {SUITE} main\ndeb {mirror} {KERNEL_SUITE} main\n")
        self._run("apt-get", "update", "-q")
        stamp.touch()

    def candidate(self, package):
        """The version apt would download, or None when no source offers it."""
        for line in self._run("apt-cache", "policy", package).splitlines():
            if line.strip().startswith("Candidate:"):
                version = line.split(":", 1)[1].strip()
                return None if version == "(none)" else version
        return None

    def download(self, package, version, folder):
        folder.mkdir(parents=True, exist_ok=True)
        wanted = folder / f"{package}_{version.replace(':', '%3a')}_all.deb"
        if not wanted.is_file():
            result = proc.cmd(["apt-get", *self.options(), "download", f"{package}={version}"],
                              cwd=folder, fail=False, timeout=APT_TIMEOUT)
            if result.ret or not wanted.is_file():
                raise SetupError(f"apt-get download {package}={version} failed: "
                                 f"{result.stderr.strip().splitlines()[-1:] or result.ret}")
        return wanted


def cache_key(version, patch=PATCH, fragment_paths=None):
    """What defines the built tree: source version, patch and kconfig fragments (the
    debug kernel's include kconfigs/debug.config, so its key differs)."""
    digest = hashlib.sha256(f"{SOURCE_PACKAGE}={version}\n".encode())
    digest.update(Path(patch).read_bytes())
    for path in fragment_paths or kernel_mod.fragments(trim=True):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def extract_source(deb, dest):
    """linux-source-X.Y.tar.xz out of the .deb, unpacked into ``dest``; the tree's path."""
    tarball = f"usr/src/{SOURCE_PACKAGE}.tar.xz"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as unpacked:
        proc.cmd(["dpkg-deb", "-x", deb, unpacked], timeout=APT_TIMEOUT)
        if not (Path(unpacked) / tarball).is_file():
            raise SetupError(f"{deb}: no {tarball} inside")
        with tarfile.open(Path(unpacked) / tarball, mode="r:xz") as inner:
            inner.extractall(dest, filter="tar")
    tree = dest / SOURCE_PACKAGE
    if not (tree / "Kconfig").is_file():
        raise SetupError(f"{deb}: {tarball} did not unpack to {tree}")
    return tree


def apply_patch(tree, patch=PATCH, log=None):
    """Apply the stand-in patch; SetupError with patch's first complaint when it fails."""
    for dry in (True, False):
        argv = ["patch", "-p1", "--forward", "--batch", "-i", str(patch)] + (["--dry-run"] if dry else [])
        result = proc.cmd(argv, cwd=tree, fail=False, log=log)
        if result.ret:
            lines = [l for l in (result.stdout + result.stderr).splitlines()
                     if "FAILED" in l or "malformed" in l.lower() or "can't find" in l.lower()
                     or "reversed" in l.lower() or "only garbage" in l.lower()]
            first = (lines or (result.stdout + result.stderr).strip().splitlines() or ["?"])[0]
            raise SetupError(f"{Path(patch).name} does not apply to {tree.name}: {first}"
                             + (f" (log: {log})" if log else ""))


def ensure(rebuild=False, jobs=None, log=None, debug=False):
    """The built stand-in tree: from the cache, else downloaded, patched and built;
    ``debug``: with kconfigs/debug.config (KASAN, lockdep, kmemleak, ...), a tree of
    its own beside the normal one."""
    root = cache_dir()
    apt = Apt(root / "apt-trixie")
    apt.update()
    version = apt.candidate(SOURCE_PACKAGE)
    if version is None:
        apt.update(force=True)
        version = apt.candidate(SOURCE_PACKAGE)
    if version is None:
        raise SetupError(f"{SOURCE_PACKAGE} is not offered by {SUITE} or {KERNEL_SUITE}")
    key = cache_key(version, fragment_paths=kernel_mod.fragments(debug=debug, trim=True))
    flavour = "mptcp-standin-debug" if debug else "mptcp-standin"
    home = root / "kernels" / f"{flavour}-{key}"
    tree = home / SOURCE_PACKAGE
    if (home / BUILT_STAMP).is_file() and (tree / kernel_mod.BZIMAGE).is_file() and not rebuild:
        print(f"mptcp-kernel: cached {SOURCE_PACKAGE} {version} + {PATCH.name} ({key})",
              file=sys.stderr)
        return tree
    if home.exists():
        print(f"mptcp-kernel: removing the unfinished build in {home}", file=sys.stderr)
        shutil.rmtree(home)
    log = Path(log) if log else root / "kernels" / f"{flavour}-{key}.log"
    started = time.monotonic()
    try:
        deb = apt.download(SOURCE_PACKAGE, version, root / "apt-trixie" / "debs")
        print(f"mptcp-kernel: unpacking {deb.name}", file=sys.stderr, flush=True)
        tree = extract_source(deb, home)
        apply_patch(tree, log=log)
        print(f"mptcp-kernel: building {SOURCE_PACKAGE} {version} + {PATCH.name} in {tree} "
              f"(log: {log})", file=sys.stderr, flush=True)
        kernel_mod.build(tree, debug=debug, jobs=jobs, trim=True, log=log)
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise
    (home / BUILT_STAMP).write_text(f"{SOURCE_PACKAGE}={version}\n{key}\n")
    print(f"mptcp-kernel: built in {(time.monotonic() - started) / 60:.1f} min", file=sys.stderr)
    return tree


def main(argv=None):
    parser = ArgumentParser(prog="ci/mptcp-kernel", description="Build (or find in the cache) the "
                     "test kernel with the stand-in NVMe mptcp transport; prints its tree last.")
    parser.add_argument("--rebuild", action="store_true", help="build even when cached")
    parser.add_argument("-j", "--jobs", type=int, help="make jobs (default: vng's, nproc)")
    parser.add_argument("--log", help="build log (default: next to the tree in the cache)")
    parser.add_argument("--debug", action="store_true", help="the debug kernel: "
                        "kconfigs/debug.config (KASAN, lockdep, kmemleak) on top, cached apart")

    def body():
        args = parser.parse_args(argv)
        print(ensure(rebuild=args.rebuild, jobs=args.jobs, log=args.log, debug=args.debug))
        return 0
    return run_command("mptcp-kernel", body, "interrupted; the unfinished build was removed")


if __name__ == "__main__":
    sys.exit(main())

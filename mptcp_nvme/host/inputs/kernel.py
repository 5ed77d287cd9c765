"""The kernel under test: locating it (tree, bzImage, installed version) and building a tree."""

import dataclasses
import re
import sys
import time
from pathlib import Path

from mptcp_nvme import SOURCE_DIR
from mptcp_nvme.guest.checks import requirements

from mptcp_nvme import proc
from mptcp_nvme.host.inputs import tools
from mptcp_nvme.errors import SetupError, UsageError

KCONFIG_DIR = SOURCE_DIR / "kconfigs"
BZIMAGE = "arch/x86/boot/bzImage"


@dataclasses.dataclass(frozen=True)
class Kernel:
    image: Path
    release: str
    origin: str           # what the user asked for, for messages and the KTAP header
    tree: Path | None = None        # a built source tree: vng boots it with --run TREE
    modules: Path | None = None     # a bzImage's lib/modules/<release>, for the rootfs


def _version_key(release):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", release)]


def installed(rootfs):
    """Kernels installed in a root filesystem, newest first: {release: vmlinuz path}."""
    images = {p.name.removeprefix("vmlinuz-"): p for p in Path(rootfs, "boot").glob("vmlinuz-*")}
    return dict(sorted(images.items(), key=lambda kv: _version_key(kv[0]), reverse=True))


def image_release(image):
    """The release string in an x86 bzImage header, or None when it is not one."""
    with open(image, "rb") as f:
        header = f.read(0x210)
        if len(header) < 0x210 or header[0x202:0x206] != b"HdrS":
            return None
        offset = int.from_bytes(header[0x20E:0x210], "little") + 0x200
        f.seek(offset)
        text = f.read(256).split(b"\0", 1)[0].decode(errors="replace")
    return text.split()[0] if text else None


def _tree_release(tree):
    release_file = tree / "include/config/kernel.release"
    if release_file.is_file():
        return release_file.read_text().strip()
    return image_release(tree / BZIMAGE)


def locate(spec, rootfs, modules=None):
    """Resolve ``--kernel``: None (newest in the rootfs), a tree, a bzImage or a version."""
    available = installed(rootfs)
    if not spec:
        if not available:
            raise UsageError(f"no kernel installed in the root filesystem {rootfs}; "
                             "pass --kernel TREE|BZIMAGE")
        release, image = next(iter(available.items()))
        return Kernel(image=image, release=release, origin=f"rootfs {release}")
    path = Path(spec)
    if path.is_dir():
        if not (path / "Kconfig").is_file() or not (path / "Makefile").is_file():
            raise UsageError(f"--kernel {spec}: directory is not a kernel source tree")
        if not (path / BZIMAGE).is_file():
            raise UsageError(f"--kernel {spec}: kernel tree is not built (no {BZIMAGE}); "
                             f"run 'mptcp-nvme build {spec}'")
        return Kernel(image=path / BZIMAGE, release=_tree_release(path), origin=f"tree {path}",
                      tree=path)
    if path.is_file():
        release = image_release(path)
        if release is None:
            raise UsageError(f"--kernel {spec}: not an x86 bzImage (no HdrS header)")
        if modules and Path(rootfs) == Path("/"):
            raise UsageError("--modules cannot go with --rootfs host: they would be "
                             "installed into the host's own /lib/modules")
        if modules and not Path(modules, "modules.dep").is_file():
            raise UsageError(f"--modules {modules}: not a lib/modules/<release> directory "
                             "(no modules.dep)")
        return Kernel(image=path, release=release, origin=f"image {path}",
                      modules=Path(modules) if modules else None)
    if spec in available:
        return Kernel(image=available[spec], release=spec, origin=f"rootfs {spec}")
    choices = ", ".join(available) or "none"
    raise UsageError(f"--kernel {spec}: no such file or directory, and not a kernel "
                     f"installed in the rootfs (installed: {choices})")


def image_modules(kernel):
    """What the guest's root image must add for ``kernel``: a bzImage's ``--modules``
    as {release: directory}; a tree needs nothing (vng shares its .virtme_mods)."""
    return {kernel.release: kernel.modules} if kernel.modules is not None else {}


def identity(kernel):
    """What results.json records of the kernel under test (host/results/kcidb.py makes the KCIDB
    checkout and build of it): release, origin, tree, the tree's git commit when it is a
    checkout, and the architecture."""
    commit = None
    if kernel.tree is not None and (Path(kernel.tree) / ".git").exists():
        try:
            commit = proc.cmd(["git", "-C", str(kernel.tree), "rev-parse", "HEAD"],
                              timeout=10).stdout.strip()
        except SetupError:
            commit = None
    return {"release": kernel.release, "origin": kernel.origin,
            "tree": str(kernel.tree) if kernel.tree is not None else None,
            "commit": commit, "arch": "x86_64"}


BOOT_FRAGMENT = KCONFIG_DIR / "vm.config"
BUILD_LOG = "mptcp-nvme-build.log"      # in the tree, unless build(log=...)


def fragments(debug=False, trim=False):
    """The kconfig fragments: booting in the VM, on request what a guest never uses
    turned off, the suite's features, debug on request (later ones win)."""
    names = (["vm.config"] + (["trim.config"] if trim else []) + ["mptcp-nvme.config"]
             + (["debug.config"] if debug else []))
    return [KCONFIG_DIR / name for name in names]


def build(tree, debug=False, jobs=None, trim=False, log=None):
    """Configure and build a kernel tree with vng and the suite's fragments.

    A tree without .config gets vng's default config; an existing .config is kept. Either
    way the fragments are merged in (make olddefconfig). Output goes to ``log`` (default
    BUILD_LOG in the tree), a progress line to stderr every PROGRESS_EVERY seconds. An option the VM needs to boot
    that does not hold afterwards stops the build; a feature option that does not (an
    older tree) is named in a warning, and the selftests that need it will SKIP.
    """
    tree = Path(tree)
    if not (tree / "Kconfig").is_file():
        raise UsageError(f"build {tree}: not a kernel source tree (no Kconfig)")
    tools.require(["vng", "make", "gcc", "flex", "bison", "bc"], "a kernel build needs "
                  "build-essential flex bison bc libelf-dev libssl-dev, and ./ci/setup")
    wanted = fragments(debug, trim)
    run = LoggedBuild(tree, Path(log) if log else tree / BUILD_LOG)
    if not (tree / ".config").is_file():
        run(["vng", "--kconfig"])
    run(["scripts/kconfig/merge_config.sh", "-m", ".config", *map(str, wanted)])
    run(["make", "olddefconfig"])
    config = read_config(tree / ".config")
    if unmet := unmet_options(config, [BOOT_FRAGMENT]):
        raise SetupError(f"{tree}/.config lacks {', '.join(unmet)}, which the VM needs to "
                         f"boot, after merging {BOOT_FRAGMENT.name} (unmet dependencies?)")
    if unmet := unmet_options(config, [f for f in wanted if f != BOOT_FRAGMENT]):
        print(f"mptcp-nvme build: warning: {tree}/.config lacks {', '.join(unmet)}; "
              "the selftests that need them will SKIP", file=sys.stderr, flush=True)
    # --verbose: without it vng runs make quietly, and the log would show no progress
    run(["vng", "--verbose", "--build"] + (["--jobs", str(jobs)] if jobs else []))
    return locate(str(tree), rootfs="/nonexistent")


PROGRESS_EVERY = 30.0
_ERROR_LINE = re.compile(r"(?:\berror\b|\*\*\*|Error \d|No rule to make target)", re.I)
_STEP_LINE = re.compile(r"^\s+(CC|LD|AR|AS|CC \[M\]|LD \[M\]|BTF|LINK|OBJCOPY)\s+(\S+)")


def first_error(lines):
    """The line of a build log that says what broke: the first compiler error
    ('file:line: error: ...'), else the first make/kbuild error line."""
    lines = list(lines)
    for pattern in (r":\d+:(\d+:)? (fatal )?error: ", r"\*\*\*|Error \d|No rule to make target",
                    _ERROR_LINE.pattern):
        for line in lines:
            if re.search(pattern, line, re.I):
                return line.strip()
    return None


class LoggedBuild:
    """Runs build steps with their output in ``log`` and one progress line on stderr
    every PROGRESS_EVERY seconds; a failure names its first error line and the log
    ('``what`` in TREE failed: ...')."""

    def __init__(self, tree, log, what="kernel build"):
        self.tree, self.log, self.what = tree, log, what
        self.started = time.monotonic()
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")

    def __call__(self, argv):
        state = {"steps": 0, "last": "", "next": time.monotonic() + PROGRESS_EVERY}
        errors = []
        with open(self.log, "a", errors="replace") as out:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()

            def on_line(line):
                out.write(line)
                if match := _STEP_LINE.match(line):
                    state.update(steps=state["steps"] + 1, last=match[2])
                elif _ERROR_LINE.search(line) and len(errors) < 200:
                    errors.append(line)
                if time.monotonic() >= state["next"]:
                    minutes = (time.monotonic() - self.started) / 60
                    print(f"build: {minutes:.0f} min, {state['steps']} steps of {argv[0]} "
                          f"{argv[-1]}, now {state['last']}", file=sys.stderr, flush=True)
                    state["next"] += PROGRESS_EVERY
            code = proc.stream(argv, on_line, cwd=self.tree, env=tools.tool_env())
        if code:
            error = first_error(errors) or f"{' '.join(argv)} exited {code}"
            raise SetupError(f"{self.what} in {self.tree} failed: {error} (log: {self.log})")


def read_config(path):
    """{NAME: value} of a .config or fragment file (requirements.parse_kconfig)."""
    return requirements.parse_kconfig(Path(path).read_text())


def unmet_options(config, fragment_paths):
    """Fragment settings the config does not honour ('y' satisfies 'm'); a later
    fragment's setting of an option replaces an earlier one's, as merge_config.sh does
    (debug.config turns kmemleak on where mptcp-nvme.config leaves it off)."""
    wanted = {}
    for path in fragment_paths:
        wanted.update(read_config(path))
    unmet = []
    for name, want in wanted.items():
        have = config.get(name, "n")
        if have != want and not (want == "m" and have == "y"):
            unmet.append(f"CONFIG_{name}={want} (is {have})")
    return unmet

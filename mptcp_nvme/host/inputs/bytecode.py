"""The guest's bytecode of the framework's own modules, compiled on the host before a boot.

The source folder is shared read-only with the guest, whose Python (the rootfs's, not
the host's: another version, another cache tag) cannot write its .pyc files there, so
without them every boot compiles the framework's modules again (in the guest, `pytest
--collect-only selftests` took 8.3 s without them, 6.8 s with them, on a loaded machine). The host compiles them with the guest's own interpreter, run
from the rootfs folder through the rootfs's dynamic loader (nothing is executed inside
the rootfs and nothing in it is written; no chroot, so no root needed), into the
source's ``__pycache__`` folders, where they sit beside the host's own
(``cpython-313`` beside ``cpython-311``) and are checked against the sources' mtime
and size like any .pyc. The selftests are left out, and the one module pytest loads as a
plugin (mptcp_nvme.plugin) gains nothing: pytest rewrites their asserts and never loads
a plain .pyc of them.

Best effort: a source folder the host cannot write, or a rootfs without the loader,
leaves the guest compiling as before (slower, never wrong).
"""

from pathlib import Path

from mptcp_nvme import proc

# What the guest imports from the source folder (besides the selftests pytest collects).
PACKAGES = ("mptcp_nvme",)
LOADER = "usr/lib64/ld-linux-x86-64.so.2"
LIBRARIES = ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")
TIMEOUT_S = 120


def guest_interpreter(root, python):
    """argv and environment running the rootfs ``root``'s ``python`` (e.g. python3.13)
    on this host, or None if the rootfs has not the parts that takes."""
    root = Path(root)
    loader, binary = root / LOADER, root / "usr/bin" / python
    libraries = [str(root / path) for path in LIBRARIES if (root / path).is_dir()]
    if not (loader.is_file() and binary.is_file() and libraries):
        return None
    argv = [str(loader), "--library-path", ":".join(libraries), str(binary)]
    return argv, {"PYTHONHOME": str(root / "usr"), "PATH": "/usr/bin:/bin"}


def compile_for_guest(root, python, source):
    """Byte-compile PACKAGES of ``source`` for the guest ``python`` of rootfs ``root``.
    True when done, False when it could not be (see the module's docstring)."""
    interpreter = guest_interpreter(root, python)
    folders = [str(Path(source) / name) for name in PACKAGES if (Path(source) / name).is_dir()]
    if interpreter is None or not folders:
        return False
    argv, env = interpreter
    try:        # serially: compileall -j would start workers without the loader
        done = proc.cmd([*argv, "-m", "compileall", "-q", *folders], env=env, fail=False,
                        timeout=TIMEOUT_S)
    except proc.CmdTimeout:
        return False
    return done.ret == 0

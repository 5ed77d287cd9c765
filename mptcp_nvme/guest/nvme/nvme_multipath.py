"""Native NVMe multipath on or off: nvme_core's multipath parameter, reloading the
module when it must change."""

import contextlib
from pathlib import Path

from mptcp_nvme import proc
from mptcp_nvme.errors import SetupError
from mptcp_nvme.guest.nvme.initiator import load_host_modules


def native_multipath(sysfs="/sys"):
    """nvme_core's multipath parameter: True (native multipath), False, or None when
    nvme_core is not loaded or the kernel lacks CONFIG_NVME_MULTIPATH."""
    try:
        return Path(sysfs, "module/nvme_core/parameters/multipath").read_text().strip() == "Y"
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def multipath_mode(native, sysfs="/sys"):
    """Native NVMe multipath on or off for the duration: nvme_core is reloaded with
    multipath=Y/N when it differs (it is read-only once loaded), and reloaded as it was
    on exit. No controller may exist meanwhile; nvme_core built in cannot change."""
    load_host_modules()
    was = native_multipath(sysfs)
    if was is None:
        raise SetupError("nvme_core has no multipath parameter (CONFIG_NVME_MULTIPATH)")
    if was == native:
        yield
        return
    _reload_nvme_core(native, sysfs)
    try:
        yield
    finally:
        _reload_nvme_core(was, sysfs)


def _reload_nvme_core(native, sysfs):
    modules = Path(sysfs, "module")
    if not (modules / "nvme_core/holders").is_dir():
        raise SetupError("nvme_core is built in: boot with nvme_core.multipath=N to turn "
                         "native multipath off")
    controllers = sorted(p.name for p in Path(sysfs, "class/nvme").glob("nvme*"))
    if controllers:
        raise SetupError(f"cannot reload nvme_core with controllers present: {', '.join(controllers)}")
    removed = []

    def remove(name):                 # the modules using it first (nvme_tcp, nvme_fabrics)
        for holder in sorted(p.name for p in (modules / name / "holders").iterdir()):
            if (modules / holder).exists():
                remove(holder)
        proc.cmd(["rmmod", name])
        removed.append(name)
    try:
        remove("nvme_core")
    except proc.CmdExitFailure as err:   # a holder in use (an nvmet target, say): back as it was
        proc.cmd(["modprobe", "-a", *reversed(removed)], fail=False)
        raise SetupError(f"cannot reload nvme_core: {err}") from err
    proc.cmd(["modprobe", "nvme_core", f"multipath={'Y' if native else 'N'}"])
    proc.cmd(["modprobe", "-a", *removed[:-1]])
    if native_multipath(sysfs) != native:
        raise SetupError(f"nvme_core reloaded with multipath={'Y' if native else 'N'} but "
                         f"reads {native_multipath(sysfs)}")

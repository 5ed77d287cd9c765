"""The fabrics connect options: what nvme-cli and /dev/nvme-fabrics take, checked
before the kernel sees them, and the replies and discovery log entries parsed."""

import dataclasses
import json
import re
import uuid

from mptcp_nvme.guest.checks import requirements
from mptcp_nvme.guest.security import dhchap
from mptcp_nvme.errors import SetupError, UsageError


FABRICS_DEVICE = str(requirements.FABRICS_DEV)


@dataclasses.dataclass(frozen=True)
class DiscoveryRecord:
    """One discovery log entry. Its trtype is left out on purpose: libnvme
    versions that predate a transport print it as "unrecognized"."""

    subtype: str
    subnqn: str
    traddr: str
    trsvcid: str
    adrfam: str
    treq: str
    portid: int


def parse_discovery(text):
    """Records of ``nvme discover -o json`` output (nvme-cli 2.x)."""
    return parse_discovery_log(text)[1]


def parse_discovery_log(text):
    """(generation counter, records) of ``nvme discover -o json`` output: the counter
    changes whenever the log does (a port or subsystem added or taken away)."""
    try:
        log = json.loads(text)
        return log["genctr"], [
            DiscoveryRecord(
                subtype=r["subtype"], subnqn=r["subnqn"], traddr=r["traddr"].strip(),
                trsvcid=r["trsvcid"].strip(), adrfam=r["adrfam"], treq=r["treq"],
                portid=int(r["portid"]),
            )
            for r in log["records"]
        ]
    except (ValueError, KeyError, TypeError) as err:
        raise SetupError(f"unexpected nvme discover output ({err!r}): {text[:200]!r}") from err


def parse_address(text):
    """sysfs ``address`` ("traddr=10.1.1.1,trsvcid=4420,src_addr=10.1.1.2") as a dict."""
    return dict(field.split("=", 1) for field in text.strip().split(",") if "=" in field)


def hostid_for(hostnqn):
    """A stable host id for ``hostnqn``: its own uuid if it is a uuid NQN, else one derived
    from it. The kernel refuses a new hostnqn that reuses its default host's id."""
    _, _, tail = hostnqn.partition(":uuid:")
    try:
        return str(uuid.UUID(tail))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, hostnqn))


# Options of a connection beyond the address, as the kernel's fabrics parser names them
# (nvme-cli's flags are the same names with dashes): True for a flag without a value.
# libnvme 1.x passes the digests for "tcp" only, like tls.
CONNECT_OPTIONS = {"keep_alive_tmo": False, "reconnect_delay": False, "ctrl_loss_tmo": False,
                   "nr_io_queues": False, "nr_write_queues": False, "nr_poll_queues": False,
                   "hdr_digest": True, "data_digest": True,
                   "dhchap_secret": False, "dhchap_ctrl_secret": False, "concat": True}
TCP_ONLY_IN_LIBNVME = ("hdr_digest", "data_digest", "concat")


def fabrics_options(trtype, traddr, trsvcid, nqn, *, hostnqn=None, hostid=None, tls=False,
                    tls_key=None, host_iface=None, options=None):
    """The option string the kernel's fabrics parser takes, in libnvme's order."""
    extra = checked_options(options)
    flags = [name for name, value in extra.items() if CONNECT_OPTIONS[name]]
    options = [("nqn", nqn), ("transport", trtype), ("traddr", traddr),
               ("host_iface", host_iface), ("trsvcid", trsvcid),
               ("hostnqn", hostnqn), ("hostid", hostid), ("tls_key", tls_key),
               *((k, v) for k, v in extra.items() if not CONNECT_OPTIONS[k])]
    fields = [f"{key}={value}" for key, value in options if value is not None] + flags
    if tls:
        fields.append("tls")
    text = ",".join(fields)
    if "\n" in text or any("," in str(value) for _, value in options if value is not None):
        raise UsageError(f"fabrics option values cannot hold ',' or newlines: {text!r}")
    return text


def checked_options(options):
    """``options`` ({CONNECT_OPTIONS name: value}) in CONNECT_OPTIONS' order, flags only
    when true; UsageError naming an unknown one."""
    unknown = sorted(set(options or {}) - set(CONNECT_OPTIONS))
    if unknown:
        raise UsageError(f"unknown connect option(s) {', '.join(unknown)} "
                         f"(choose from {', '.join(CONNECT_OPTIONS)})")
    chosen = {name: options[name] for name in CONNECT_OPTIONS
              if name in (options or {}) and options[name] not in (None, False)}
    for name in ("dhchap_secret", "dhchap_ctrl_secret"):
        if name in chosen:
            dhchap.check_key(chosen[name], name)
    return chosen


def parse_fabrics_reply(text):
    """Controller name from the kernel's "instance=N,cntlid=M" reply."""
    match = re.search(r"(?:^|,)instance=(\d+)", text)
    if not match:
        raise SetupError(f"no instance in the reply of {FABRICS_DEVICE}: {text!r}")
    return f"nvme{match.group(1)}"

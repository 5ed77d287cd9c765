"""What NVMe commands answer through nvme-cli (2.x): the NVMe status a failed command
ends with, namespace identification descriptors, the commands supported and effects
log, and reservation reports, from nvme-cli's JSON documents (NvmeHost.admin) and
messages; real output captured in a guest is under tests/data/nvme-cli."""

import re
from dataclasses import dataclass

from mptcp_nvme.errors import SetupError

# "NVMe status: Capacity Exceeded: Execution of the command has caused ...(0x6081)"
_STATUS = re.compile(r"NVMe status: (?P<name>[^:\n]+):[^\n]*\((?P<code>0x[0-9a-fA-F]+)\)")
# "ACS_2 (Get Log Page)", "IOCS_9 (Dataset Management)"
_OPCODE = re.compile(r"(?:ACS|IOCS)_(?P<opcode>\d+)\b")


@dataclass(frozen=True)
class NvmeStatus:
    """A command's completion status as nvme-cli prints it: the status field without its
    phase bit (bits 0-7 status code, 8-10 status code type, 14 do not retry)."""

    name: str
    code: int

    @property
    def status_code(self):
        return self.code & 0xFF

    @property
    def status_code_type(self):
        return (self.code >> 8) & 0x7

    @property
    def do_not_retry(self):
        return bool(self.code & 0x4000)

    def __str__(self):
        return f"{self.name} (0x{self.code:04x})"


def parse_status(text):
    """The NvmeStatus in nvme-cli's error message ``text``; None where it has none (a
    usage error, a missing device, an errno)."""
    found = _STATUS.search(text)
    return NvmeStatus(found["name"].strip(), int(found["code"], 16)) if found else None


def ns_descriptors(document):
    """``nvme ns-descs -o json`` as {descriptor type: value}, e.g. {"uuid": "...",
    "nguid": "...", "csi": "0"} (types the namespace does not report are absent)."""
    try:
        return {desc["Type"]: desc[desc["Type"]] for desc in document["ns-descs"]}
    except (KeyError, TypeError) as err:
        raise SetupError(f"unexpected nvme ns-descs output ({err!r}): "
                         f"{document!r:.200}") from None


def supported_commands(document):
    """``nvme effects-log -o json`` as {command set identifier: {"admin": {opcode:
    effects}, "io": {opcode: effects}}}, the commands the controller supports."""
    try:
        return {entry["command_set_identifier"]: {
                    kind: {int(_OPCODE.match(name)["opcode"]): effects
                           for name, effects in entry.get(key, {}).items()}
                    for kind, key in (("admin", "admin_cmd_set"), ("io", "io_cmd_set"))}
                for entry in document}
    except (KeyError, TypeError) as err:
        raise SetupError(f"unexpected nvme effects-log output ({err!r}): "
                         f"{document!r:.200}") from None


@dataclass(frozen=True)
class Registrant:
    hostid: str
    rkey: int
    holds: bool      # rcsts bit 0: this registrant holds the reservation


@dataclass(frozen=True)
class ReservationReport:
    generation: int
    rtype: int       # 0: no reservation
    registrants: tuple

    @property
    def holder(self):
        return next((r for r in self.registrants if r.holds), None)


def reservation_report(document):
    """``nvme resv-report -o json`` (extended data structure: 128-bit host ids)."""
    try:
        return ReservationReport(
            generation=document["gen"], rtype=document["rtype"],
            registrants=tuple(Registrant(e["hostid"], e["rkey"], bool(e["rcsts"] & 1))
                              for e in document.get("regctlext", ())))
    except (KeyError, TypeError) as err:
        raise SetupError(f"unexpected nvme resv-report output ({err!r}): "
                         f"{document!r:.200}") from None

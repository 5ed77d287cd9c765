"""The NVMe host against a fake sysfs, a fake /dev/nvme-fabrics and recorded nvme-cli runs."""

import errno
import json
import os
import pathlib
import shutil
import subprocess
import time

import pytest

from mptcp_nvme import proc
from mptcp_nvme.guest.nvme import fabrics
from mptcp_nvme.guest.nvme import initiator
from mptcp_nvme.errors import SetupError, UsageError
from mptcp_nvme.poll import PollTimeout

NQN = "nqn.2014-08.org.nvmexpress.mptcpdev.4242.7"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
HOSTID = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
PREFIX = ["nsenter", "--net=/run/netns/ns2"]
NOT_INSTALLED = "nvme-not-installed-here"

# nvme discover -o json (nvme-cli 2.x) against an nvmet port: the current
# discovery subsystem entry first, then the exported subsystem.
DISCOVERY_TCP = """{
  "genctr":2,
  "records":[
    {
      "trtype":"tcp",
      "adrfam":"ipv4",
      "subtype":"current discovery subsystem",
      "treq":"not specified, sq flow control disable supported",
      "portid":20001,
      "trsvcid":"4420",
      "subnqn":"nqn.2014-08.org.nvmexpress.discovery",
      "traddr":"10.1.1.1",
      "eflags":"explicit discovery connections, duplicate discovery information",
      "sectype":"none"
    },
    {
      "trtype":"tcp",
      "adrfam":"ipv4",
      "subtype":"nvme subsystem",
      "treq":"not specified, sq flow control disable supported",
      "portid":20001,
      "trsvcid":"4420",
      "subnqn":"nqn.2014-08.org.nvmexpress.tcpdev.4242.7",
      "traddr":"10.1.1.1",
      "eflags":"none",
      "sectype":"none"
    }
  ]
}
"""

# The same over mptcp with a libnvme that predates transport 4: no sectype,
# and the trtype reads "unrecognized".
DISCOVERY_MPTCP = """{
  "genctr":1,
  "records":[
    {
      "trtype":"unrecognized",
      "adrfam":"ipv4",
      "subtype":"nvme subsystem",
      "treq":"not specified, sq flow control disable supported",
      "portid":23456,
      "trsvcid":"31337",
      "subnqn":"nqn.2014-08.org.nvmexpress.mptcpdev.4242.7",
      "traddr":"10.1.2.1",
      "eflags":"none"
    }
  ]
}
"""


class FakeSysfs:
    """The corner of /sys the host reads: nvme-subsystem and nvme classes."""

    def __init__(self, root):
        self.root = pathlib.Path(root)
        (self.root / "class/nvme-subsystem").mkdir(parents=True)
        (self.root / "class/nvme").mkdir(parents=True)

    def subsystem(self, name, nqn, iopolicy="numa"):
        path = self.root / "class/nvme-subsystem" / name
        path.mkdir()
        (path / "subsysnqn").write_text(nqn + "\n")
        (path / "iopolicy").write_text(iopolicy + "\n")
        return path

    def controller(self, subsystem, name, transport, address, state="live", tls_key=None):
        path = self.root / "class/nvme" / name
        path.mkdir()
        (path / "transport").write_text(transport + "\n")
        (path / "address").write_text(address + "\n")
        (path / "state").write_text(state + "\n")
        if tls_key is not None:
            (path / "tls_key").write_text(tls_key + "\n")
        (subsystem / name).symlink_to(path)
        return path

    @staticmethod
    def disk(parent, name, nsid):
        (parent / name).mkdir()
        (parent / name / "nsid").write_text(f"{nsid}\n")


class FakeCommands:
    """Stands in for subprocess.run: records argv, answers per nvme subcommand."""

    def __init__(self, **answers):
        self.calls = []
        self.answers = answers

    def __call__(self, argv, **kwargs):
        self.calls.append(argv)
        if "udevadm" in argv:
            return subprocess.CompletedProcess(argv, 0, "", "")
        answer = self.answers[argv[argv.index("nvme") + 1]]
        stdout = answer(argv) if callable(answer) else answer
        return subprocess.CompletedProcess(argv, 0, stdout, "")


@pytest.fixture
def sysfs(tmp_path):
    return FakeSysfs(tmp_path / "sys")


@pytest.fixture
def nvme_cli(monkeypatch):
    """nvme-cli "installed", its runs recorded (set .answers per test)."""
    commands = FakeCommands()
    monkeypatch.setattr(initiator.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(proc.subprocess, "run", commands)
    return commands


def fake_fabrics(path, reply):
    """A plain file in place of /dev/nvme-fabrics. The writer does not seek: it
    reads from where its write ended, so the kernel's reply sits after room for
    the option string. ``room`` is that option string's length."""

    def prepare(room):
        path.write_text("x" * room + reply)
        return path

    return prepare


# --- option string and its reply ---------------------------------------------


def test_fabrics_options_tcp():
    assert fabrics.fabrics_options("tcp", "10.1.1.1", 4420, NQN) == (
        f"nqn={NQN},transport=tcp,traddr=10.1.1.1,trsvcid=4420")


def test_fabrics_options_mptcp_with_host_identity_and_interface():
    assert fabrics.fabrics_options("mptcp", "10.1.2.1", 31337, NQN, hostnqn=HOSTNQN,
                                hostid=HOSTID, host_iface="ns2eth2") == (
        f"nqn={NQN},transport=mptcp,traddr=10.1.2.1,host_iface=ns2eth2,trsvcid=31337,"
        f"hostnqn={HOSTNQN},hostid={HOSTID}")


def test_fabrics_options_tls_is_a_bare_flag_last():
    assert fabrics.fabrics_options("mptcp", "10.1.1.1", 4420, NQN, tls=True) == (
        f"nqn={NQN},transport=mptcp,traddr=10.1.1.1,trsvcid=4420,tls")


def test_fabrics_options_tls_key_serial():
    assert fabrics.fabrics_options("tcp", "10.1.1.1", 4420, NQN, tls=True, tls_key=235832308) == (
        f"nqn={NQN},transport=tcp,traddr=10.1.1.1,trsvcid=4420,tls_key=235832308,tls")


def test_fabrics_options_connect_options_values_then_flags():
    options = {"data_digest": True, "nr_poll_queues": 1, "hdr_digest": False,
               "keep_alive_tmo": 5}
    assert fabrics.fabrics_options("mptcp", "10.1.1.1", 4420, NQN, options=options) == (
        f"nqn={NQN},transport=mptcp,traddr=10.1.1.1,trsvcid=4420,keep_alive_tmo=5,"
        f"nr_poll_queues=1,data_digest")
    with pytest.raises(UsageError, match="unknown connect option.*queue_depth"):
        fabrics.fabrics_options("tcp", "10.1.1.1", 4420, NQN, options={"queue_depth": 3})


def test_nvme_cli_carries_digests_for_tcp_only(monkeypatch):
    monkeypatch.setattr(initiator.shutil, "which", lambda name: f"/usr/sbin/{name}")
    nvme = initiator.NvmeHost()
    assert nvme.nvme_cli_carries("tcp", options={"hdr_digest": True})
    assert not nvme.nvme_cli_carries("mptcp", options={"hdr_digest": True})
    assert nvme.nvme_cli_carries("mptcp", options={"nr_io_queues": 1, "hdr_digest": False})


def test_fabrics_options_refuse_separators():
    with pytest.raises(UsageError, match="cannot hold ','"):
        fabrics.fabrics_options("tcp", "10.1.1.1,traddr=10.9.9.9", 4420, NQN)


def test_fabrics_reply():
    assert fabrics.parse_fabrics_reply("instance=3,cntlid=1\n") == "nvme3"
    with pytest.raises(SetupError, match="no instance in the reply"):
        fabrics.parse_fabrics_reply("")


def test_hostid_for():
    assert fabrics.hostid_for(HOSTNQN) == HOSTID
    derived = fabrics.hostid_for("nqn.2014-08.org.nvmexpress:host-a")
    assert derived == fabrics.hostid_for("nqn.2014-08.org.nvmexpress:host-a")
    assert derived != fabrics.hostid_for("nqn.2014-08.org.nvmexpress:host-b")
    assert initiator.NvmeHost(hostnqn=HOSTNQN).hostid == HOSTID


# --- connecting through /dev/nvme-fabrics -----------------------------------


@pytest.mark.parametrize("trtype", ["tcp", "mptcp"])
def test_connect_writes_the_option_string_to_the_fabrics_device(tmp_path, sysfs, trtype):
    expected = (f"nqn={NQN},transport={trtype},traddr=10.1.1.1,trsvcid=4420,"
                f"hostnqn={HOSTNQN},hostid={HOSTID}")
    device = fake_fabrics(tmp_path / "nvme-fabrics", "instance=3,cntlid=1\n")(len(expected))
    nvme = initiator.NvmeHost(sysfs=sysfs.root, fabrics_device=device, hostnqn=HOSTNQN,
                     nvme=NOT_INSTALLED)
    assert nvme.connect(trtype, "10.1.1.1", 4420, NQN) == "nvme3"
    assert device.read_text() == expected + "instance=3,cntlid=1\n"


def test_mptcp_tls_connect_goes_through_the_fabrics_device(tmp_path, sysfs, monkeypatch):
    monkeypatch.setattr(initiator.shutil, "which", lambda name: f"/usr/sbin/{name}")
    sub = sysfs.subsystem("nvme-subsys0", NQN)
    sysfs.controller(sub, "nvme5", "mptcp", "traddr=10.1.1.1,trsvcid=4420", tls_key="0e2c81d4")
    expected = f"nqn={NQN},transport=mptcp,traddr=10.1.1.1,trsvcid=4420,tls"
    device = fake_fabrics(tmp_path / "nvme-fabrics", "instance=5,cntlid=2\n")(len(expected))
    nvme = initiator.NvmeHost(sysfs=sysfs.root, fabrics_device=device)
    assert not nvme.nvme_cli_carries("mptcp", tls=True)
    assert nvme.connect("mptcp", "10.1.1.1", 4420, NQN, tls=True) == "nvme5"
    assert device.read_text() == expected + "instance=5,cntlid=2\n"


def test_tls_connect_without_a_tls_key_fails(tmp_path, sysfs):
    sub = sysfs.subsystem("nvme-subsys0", NQN)
    sysfs.controller(sub, "nvme5", "mptcp", "traddr=10.1.1.1,trsvcid=4420")
    expected = f"nqn={NQN},transport=mptcp,traddr=10.1.1.1,trsvcid=4420,tls"
    device = fake_fabrics(tmp_path / "nvme-fabrics", "instance=5,cntlid=2\n")(len(expected))
    nvme = initiator.NvmeHost(sysfs=sysfs.root, fabrics_device=device, nvme=NOT_INSTALLED)
    with pytest.raises(SetupError, match="nvme5 to 10.1.1.1:4420 is up without TLS"):
        nvme.connect("mptcp", "10.1.1.1", 4420, NQN, tls=True)


def test_a_refused_fabrics_write_names_the_options(tmp_path):
    nvme = initiator.NvmeHost(fabrics_device=tmp_path, nvme=NOT_INSTALLED)  # a directory: EISDIR
    with pytest.raises(SetupError, match=r"writing 'nqn=.*transport=mptcp.*' to .* failed"):
        nvme.connect("mptcp", "10.1.1.1", 4420, NQN)


def test_the_fabrics_writer_runs_behind_the_prefix(tmp_path, monkeypatch):
    commands = []

    def run(argv, **kwargs):
        commands.append(argv)
        return subprocess.CompletedProcess(argv, 0, "instance=0,cntlid=1\n", "")

    monkeypatch.setattr(proc.subprocess, "run", run)
    nvme = initiator.NvmeHost(PREFIX, fabrics_device="/dev/nvme-fabrics", nvme=NOT_INSTALLED)
    assert nvme.connect("mptcp", "10.1.1.1", 4420, NQN) == "nvme0"
    argv = commands[0]
    assert argv[:2] == PREFIX and argv[3] == "-c"
    assert argv[-2:] == ["/dev/nvme-fabrics",
                         f"nqn={NQN},transport=mptcp,traddr=10.1.1.1,trsvcid=4420"]


# --- nvme-cli ------------------------------------------------------------------


def test_nvme_cli_carries_a_transport_unless_it_would_drop_tls(monkeypatch):
    nvme = initiator.NvmeHost()
    monkeypatch.setattr(initiator.shutil, "which", lambda name: None)
    assert not nvme.nvme_cli_carries("tcp")
    monkeypatch.setattr(initiator.shutil, "which", lambda name: f"/usr/sbin/{name}")
    assert nvme.nvme_cli_carries("tcp")
    assert nvme.nvme_cli_carries("tcp", tls=True)
    assert nvme.nvme_cli_carries("mptcp")
    assert not nvme.nvme_cli_carries("mptcp", tls=True)


def test_discover_argv_and_records(nvme_cli):
    nvme_cli.answers["discover"] = DISCOVERY_TCP
    records = initiator.NvmeHost(PREFIX).discover("tcp", "10.1.1.1", 4420)
    assert nvme_cli.calls == [[*PREFIX, "nvme", "discover", "-t", "tcp", "-a", "10.1.1.1",
                               "-s", "4420", "-o", "json"]]
    assert records == [
        fabrics.DiscoveryRecord(
            subtype="current discovery subsystem",
            subnqn="nqn.2014-08.org.nvmexpress.discovery", traddr="10.1.1.1",
            trsvcid="4420", adrfam="ipv4",
            treq="not specified, sq flow control disable supported", portid=20001),
        fabrics.DiscoveryRecord(
            subtype="nvme subsystem", subnqn="nqn.2014-08.org.nvmexpress.tcpdev.4242.7",
            traddr="10.1.1.1", trsvcid="4420", adrfam="ipv4",
            treq="not specified, sq flow control disable supported", portid=20001),
    ]


def test_discover_tls_with_host_identity(nvme_cli):
    nvme_cli.answers["discover"] = DISCOVERY_TCP
    initiator.NvmeHost(hostnqn=HOSTNQN).discover("tcp", "10.1.1.1", 4420, tls=True)
    assert nvme_cli.calls == [["nvme", "discover", "-t", "tcp", "-a", "10.1.1.1", "-s", "4420",
                               "--hostnqn", HOSTNQN, "--hostid", HOSTID, "--tls", "-o", "json"]]


def test_discover_over_mptcp_ignores_the_unrecognized_trtype(nvme_cli):
    nvme_cli.answers["discover"] = DISCOVERY_MPTCP
    [record] = initiator.NvmeHost().discover("mptcp", "10.1.2.1", 31337)
    assert (record.subnqn, record.traddr, record.trsvcid, record.portid) == (
        NQN, "10.1.2.1", "31337", 23456)
    assert not hasattr(record, "trtype")


def test_discover_refuses_what_nvme_cli_would_do_without_tls(nvme_cli):
    with pytest.raises(SetupError, match="cannot discover over mptcp with TLS"):
        initiator.NvmeHost().discover("mptcp", "10.1.1.1", 4420, tls=True)
    assert nvme_cli.calls == []


def test_bad_discover_output_is_reported():
    with pytest.raises(SetupError, match="unexpected nvme discover output"):
        fabrics.parse_discovery("Failed to write to /dev/nvme-fabrics: Invalid argument")


def test_connect_argv(nvme_cli, sysfs):
    nvme_cli.answers["connect"] = '{\n  "device":"nvme2"\n}\n'
    nvme = initiator.NvmeHost(PREFIX, sysfs=sysfs.root)
    assert nvme.connect("mptcp", "10.1.3.1", 31337, NQN, host_iface="ns2eth3") == "nvme2"
    assert nvme_cli.calls == [[*PREFIX, "nvme", "connect", "-t", "mptcp", "-a", "10.1.3.1",
                               "-s", "31337", "-n", NQN, "--host-iface", "ns2eth3",
                               "-o", "json"]]


def test_connect_tcp_tls_argv(nvme_cli, sysfs):
    sub = sysfs.subsystem("nvme-subsys1", NQN)
    sysfs.controller(sub, "nvme2", "tcp", "traddr=10.1.1.1,trsvcid=4420", tls_key="1a2b3c4d")
    nvme_cli.answers["connect"] = '{\n  "device":"nvme2"\n}\n'
    initiator.NvmeHost(sysfs=sysfs.root, hostnqn=HOSTNQN).connect("tcp", "10.1.1.1", 4420, NQN,
                                                         tls=True)
    assert nvme_cli.calls == [["nvme", "connect", "-t", "tcp", "-a", "10.1.1.1", "-s", "4420",
                               "-n", NQN, "--hostnqn", HOSTNQN, "--hostid", HOSTID, "--tls",
                               "-o", "json"]]


def test_connect_tcp_tls_with_a_given_key_argv(nvme_cli, sysfs):
    sub = sysfs.subsystem("nvme-subsys1", NQN)
    sysfs.controller(sub, "nvme2", "tcp", "traddr=10.1.1.1,trsvcid=4420", tls_key="0e0e8cf4")
    nvme_cli.answers["connect"] = '{\n  "device":"nvme2"\n}\n'
    initiator.NvmeHost(sysfs=sysfs.root).connect("tcp", "10.1.1.1", 4420, NQN, tls=True,
                                        tls_key=235832308)
    assert nvme_cli.calls == [["nvme", "connect", "-t", "tcp", "-a", "10.1.1.1", "-s", "4420",
                               "-n", NQN, "--tls", "--tls-key", "235832308", "-o", "json"]]


def test_a_failing_command_is_a_setup_error(monkeypatch):
    monkeypatch.setattr(initiator.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(proc.subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, 1, "", "could not add new controller: invalid arguments/configuration\n"))
    with pytest.raises(SetupError, match=r"nvme connect .* failed \(1\): could not add new"):
        initiator.NvmeHost().connect("tcp", "10.1.1.1", 4420, NQN)


# --- sysfs ---------------------------------------------------------------------


def two_path_subsystem(sysfs, multipath=True):
    sub = sysfs.subsystem("nvme-subsys2", NQN)
    first = sysfs.controller(sub, "nvme2", "mptcp", "traddr=10.1.1.1,trsvcid=4420,"
                             "src_addr=10.1.1.2")
    second = sysfs.controller(sub, "nvme3", "mptcp", "traddr=10.1.2.1,trsvcid=4420,"
                              "src_addr=10.1.2.2", state="connecting")
    if multipath:
        sysfs.disk(sub, "nvme2n1", nsid=1)
        sysfs.disk(first, "nvme2c2n1", nsid=1)
        sysfs.disk(second, "nvme2c3n1", nsid=1)
    else:
        sysfs.disk(first, "nvme2n2", nsid=1)  # /dev numbering does not follow nsid
        sysfs.disk(second, "nvme3n1", nsid=2)
    return sub


def test_namespace_head_device_under_the_subsystem(sysfs):
    sysfs.subsystem("nvme-subsys0", "nqn.2014-08.org.nvmexpress:some-other-subsystem")
    two_path_subsystem(sysfs)
    nvme = initiator.NvmeHost(sysfs=sysfs.root)
    assert nvme.subsystem(NQN) == "nvme-subsys2"
    assert nvme.namespace_device(NQN) == "/dev/nvme2n1"


def test_namespace_device_without_multipath_is_found_by_nsid(sysfs):
    two_path_subsystem(sysfs, multipath=False)
    nvme = initiator.NvmeHost(sysfs=sysfs.root)
    assert nvme.namespace_device(NQN, nsid=1) == "/dev/nvme2n2"
    assert nvme.namespace_device(NQN, nsid=2) == "/dev/nvme3n1"


def test_namespace_poll_times_out_naming_what_it_waited_for(sysfs):
    sub = sysfs.subsystem("nvme-subsys2", NQN)
    sysfs.disk(sub, "nvme2n1", nsid=2)
    nvme = initiator.NvmeHost(sysfs=sysfs.root)
    started = time.monotonic()
    with pytest.raises(PollTimeout, match=f"waiting for namespace 1 of {NQN} in {sysfs.root}"):
        nvme.namespace_device(NQN, nsid=1, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2


def test_subsystem_poll_times_out_naming_the_nqn(sysfs):
    with pytest.raises(PollTimeout, match=f"subsystem {NQN} under"):
        initiator.NvmeHost(sysfs=sysfs.root).subsystem(NQN, timeout=0.1)


def test_controllers_of_a_subsystem(sysfs):
    sub = two_path_subsystem(sysfs)
    (sysfs.root / "class/nvme/nvme2/tls_key").write_text("0e2c81d4\n")
    (sub / "nvme-subsys-not-a-controller").mkdir()
    controllers = initiator.NvmeHost(sysfs=sysfs.root).controllers(NQN)
    assert controllers == [
        initiator.Controller(name="nvme2", transport="mptcp",
                        address={"traddr": "10.1.1.1", "trsvcid": "4420",
                                 "src_addr": "10.1.1.2"},
                        state="live", tls_key="0e2c81d4"),
        initiator.Controller(name="nvme3", transport="mptcp",
                        address={"traddr": "10.1.2.1", "trsvcid": "4420",
                                 "src_addr": "10.1.2.2"},
                        state="connecting", tls_key=None),
    ]


def test_set_iopolicy_reads_it_back(sysfs):
    sub = two_path_subsystem(sysfs)
    nvme = initiator.NvmeHost(sysfs=sysfs.root)
    for policy in ("numa", "round-robin", "queue-depth"):
        assert nvme.set_iopolicy(NQN, policy) == policy
        assert (sub / "iopolicy").read_text() == policy
        assert nvme.iopolicy(NQN) == policy


def test_iopolicy_refused_by_the_kernel(sysfs, monkeypatch):
    two_path_subsystem(sysfs)
    write_text = pathlib.Path.write_text

    def kernel_without_queue_depth(path, text, *args, **kwargs):
        if path.name == "iopolicy" and text == "queue-depth":
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(path))
        return write_text(path, text, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", kernel_without_queue_depth)
    with pytest.raises(initiator.IopolicyUnsupported, match="refused iopolicy 'queue-depth'") as err:
        initiator.NvmeHost(sysfs=sysfs.root).set_iopolicy(NQN, "queue-depth")
    assert err.value.policy == "queue-depth"


# --- disconnect and the connect-all context ------------------------------------


def test_disconnect_uses_nvme_cli_and_waits_for_the_controllers_to_go(nvme_cli, sysfs):
    sub = two_path_subsystem(sysfs)
    nvme_cli.answers["disconnect"] = lambda argv: shutil.rmtree(sub) or ""
    initiator.NvmeHost(PREFIX, sysfs=sysfs.root).disconnect(NQN)
    assert nvme_cli.calls == [[*PREFIX, "nvme", "disconnect", "-n", NQN]]


def test_disconnect_without_nvme_cli_deletes_through_sysfs(sysfs):
    two_path_subsystem(sysfs)
    nvme = initiator.NvmeHost(sysfs=sysfs.root, nvme=NOT_INSTALLED)
    with pytest.raises(PollTimeout, match=f"the controllers of {NQN} to go away"):
        nvme.disconnect(NQN, timeout=0.1)  # a fake kernel does not remove them
    for name in ("nvme2", "nvme3"):
        assert (sysfs.root / "class/nvme" / name / "delete_controller").read_text() == "1"


def test_connected_connects_every_path_and_disconnects(nvme_cli, sysfs):
    devices = iter(["nvme2", "nvme3"])
    nvme_cli.answers["connect"] = lambda argv: json.dumps({"device": next(devices)})
    nvme_cli.answers["disconnect"] = lambda argv: shutil.rmtree(sub) or ""
    sub = two_path_subsystem(sysfs)
    nvme = initiator.NvmeHost(sysfs=sysfs.root)
    with pytest.raises(RuntimeError, match="test body failed"):
        with nvme.connected("mptcp", ["10.1.1.1", "10.1.2.1"], 4420, NQN) as connection:
            assert connection == initiator.Connection(NQN, ("nvme2", "nvme3"), "/dev/nvme2n1")
            raise RuntimeError("test body failed")
    assert [argv[5] for argv in nvme_cli.calls if argv[1] == "connect"] == ["10.1.1.1",
                                                                            "10.1.2.1"]
    assert nvme_cli.calls[-2:] == [["udevadm", "settle", "--timeout=30"],
                                   ["nvme", "disconnect", "-n", NQN]]


def test_connected_disconnects_after_a_failed_path(nvme_cli, sysfs):
    def connect(argv):
        if argv[5] == "10.1.2.1":
            raise OSError(errno.ETIMEDOUT, "timed out")  # as subprocess would surface it
        return json.dumps({"device": "nvme2"})

    nvme_cli.answers["connect"] = connect
    nvme_cli.answers["disconnect"] = ""
    with pytest.raises(SetupError, match="timed out"):
        with initiator.NvmeHost(sysfs=sysfs.root).connected("tcp", ["10.1.1.1", "10.1.2.1"], 4420, NQN):
            pytest.fail("must not get here")
    assert nvme_cli.calls[-1] == ["nvme", "disconnect", "-n", NQN]


def test_load_host_modules_loads_nvme_tcp_explicitly(monkeypatch):
    loaded = []
    monkeypatch.setattr(initiator.requirements, "load_module",
                        lambda name: loaded.append(name) or name == "nvme-fabrics")
    with pytest.raises(SetupError, match="kernel modules not available: nvme-tcp"):
        initiator.load_host_modules()
    assert loaded == ["nvme-fabrics", "nvme-tcp"]

"""nvmet configfs setup and teardown against a plain directory standing in for configfs."""

import contextlib
import errno
import os
import random
import re
from pathlib import Path

import pytest

from mptcp_nvme import vocabulary
from mptcp_nvme.guest.nvmet import target as nvmet
from mptcp_nvme.errors import SetupError, UsageError

NQN = "nqn.2014-08.org.nvmexpress.tcpdev.4242.7"
DEVICE = "/dev/loop7"

# Default groups the kernel makes inside a new subsystem or port directory.
DEFAULT_GROUPS = {
    "subsystems": ("namespaces", "allowed_hosts"),
    "ports": ("subsystems", "referrals", "ana_groups"),
}


class FakeConfigfs(nvmet.Configfs):
    """A directory tree that behaves like configfs where the code relies on it:
    mkdir of a subsystem or port makes its default groups, rmdir drops the
    item's attribute files and (empty) default groups. Records every operation."""

    def __init__(self, root):
        super().__init__(root)
        self.ops = []
        for group in ("subsystems", "ports", "hosts"):
            (self.nvmet / group).mkdir(parents=True)

    def _rel(self, path):
        return str(Path(path).relative_to(self.nvmet))

    def mkdir(self, path):
        super().mkdir(path)
        self.ops.append(("mkdir", self._rel(path)))
        if path.parent.parent == self.nvmet:
            for group in DEFAULT_GROUPS.get(path.parent.name, ()):
                (path / group).mkdir()

    def rmdir(self, path):
        self.ops.append(("rmdir", self._rel(path)))
        for child in path.iterdir():
            if child.is_symlink():
                continue  # the kernel refuses too: rmdir below fails
            if child.is_dir():
                child.rmdir()  # a default group; ENOTEMPTY if items remain
            else:
                child.unlink()  # an attribute
        super().rmdir(path)

    def symlink(self, target, link):
        super().symlink(target, link)
        self.ops.append(("symlink", self._rel(link), self._rel(target)))

    def unlink(self, link):
        super().unlink(link)
        self.ops.append(("unlink", self._rel(link)))

    def write_file(self, path, value):
        super().write_file(path, value)
        self.ops.append(("write", self._rel(path), value))


class KernelWithoutMptcp(FakeConfigfs):
    """addr_trtype refuses "mptcp" with EINVAL, as a kernel without the series does."""

    def write_file(self, path, value):
        if path.name == "addr_trtype" and value not in ("tcp", "rdma", "fc", "loop"):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(path))
        super().write_file(path, value)


def snapshot(root):
    """Every path under root with its kind and content."""
    tree = {}
    for path in sorted(Path(root).rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            tree[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            tree[rel] = ("dir",)
        else:
            tree[rel] = ("file", path.read_text())
    return tree


def subsystem_setup(nqn=NQN, device=DEVICE):
    return [
        ("mkdir", f"subsystems/{nqn}"),
        ("write", f"subsystems/{nqn}/attr_allow_any_host", "1"),
        ("mkdir", f"subsystems/{nqn}/namespaces/1"),
        ("write", f"subsystems/{nqn}/namespaces/1/device_path", device),
        ("write", f"subsystems/{nqn}/namespaces/1/enable", "1"),
    ]


def subsystem_teardown(nqn=NQN):
    return [
        ("write", f"subsystems/{nqn}/namespaces/1/enable", "0"),
        ("rmdir", f"subsystems/{nqn}/namespaces/1"),
        ("rmdir", f"subsystems/{nqn}"),
    ]


def port_setup(port_id, trtype, traddr, trsvcid, nqn=NQN, extra=()):
    return [
        ("mkdir", f"ports/{port_id}"),
        ("write", f"ports/{port_id}/addr_trtype", trtype),
        ("write", f"ports/{port_id}/addr_adrfam", "ipv4"),
        ("write", f"ports/{port_id}/addr_traddr", traddr),
        ("write", f"ports/{port_id}/addr_trsvcid", str(trsvcid)),
        *[("write", f"ports/{port_id}/{name}", value) for name, value in extra],
        ("symlink", f"ports/{port_id}/subsystems/{nqn}", f"subsystems/{nqn}"),
    ]


def port_teardown(port_id, nqn=NQN):
    return [
        ("unlink", f"ports/{port_id}/subsystems/{nqn}"),
        ("rmdir", f"ports/{port_id}"),
    ]


@pytest.fixture
def configfs(tmp_path):
    return FakeConfigfs(tmp_path)


def test_tcp_one_path_listens_on_the_wildcard(configfs, tmp_path):
    before = snapshot(tmp_path)
    with nvmet.Target(DEVICE, "tcp", ["10.1.1.1"], nqn=NQN, trsvcid=4420, port_ids=[20001],
                      configfs=configfs) as target:
        assert configfs.ops == subsystem_setup() + port_setup(20001, "tcp", "0.0.0.0", 4420)
        port = configfs.nvmet / "ports/20001"
        assert (port / "addr_traddr").read_text() == "0.0.0.0"
        assert (port / "addr_trsvcid").read_text() == "4420"
        assert os.readlink(port / "subsystems" / NQN) == str(configfs.nvmet / "subsystems" / NQN)
        assert target.nqn == NQN and target.trsvcid == 4420
        configfs.ops.clear()
    assert configfs.ops == port_teardown(20001) + subsystem_teardown()
    assert snapshot(tmp_path) == before


def test_tcp_four_paths_listen_on_each_path_address(configfs, tmp_path):
    before = snapshot(tmp_path)
    addresses = [f"10.1.{i}.1" for i in range(1, 5)]
    port_ids = [20001, 20002, 20003, 20004]
    with nvmet.Target(DEVICE, "tcp", addresses, nqn=NQN, trsvcid=4420, port_ids=port_ids,
                      configfs=configfs):
        expected = subsystem_setup()
        for port_id, address in zip(port_ids, addresses):
            expected += port_setup(port_id, "tcp", address, 4420)
        assert configfs.ops == expected
        configfs.ops.clear()
    expected = []
    for port_id in reversed(port_ids):
        expected += port_teardown(port_id)
    assert configfs.ops == expected + subsystem_teardown()
    assert snapshot(tmp_path) == before


def test_mptcp_writes_mptcp_to_addr_trtype(configfs, tmp_path):
    before = snapshot(tmp_path)
    nqn = "nqn.2014-08.org.nvmexpress.mptcpdev.4242.7"
    with nvmet.Target(DEVICE, "mptcp", ["10.1.1.1", "10.1.2.1"], nqn=nqn, trsvcid=30000,
                      port_ids=[25000, 25001], configfs=configfs):
        assert configfs.ops == (subsystem_setup(nqn)
                                + port_setup(25000, "mptcp", "10.1.1.1", 30000, nqn)
                                + port_setup(25001, "mptcp", "10.1.2.1", 30000, nqn))
        assert (configfs.nvmet / "ports/25001/addr_trtype").read_text() == "mptcp"
    assert snapshot(tmp_path) == before


def test_tls_port_attributes_follow_the_address(configfs, tmp_path):
    before = snapshot(tmp_path)
    with nvmet.Target(DEVICE, "tcp", ["10.1.1.1"], nqn=NQN, trsvcid=4420, port_ids=[20001],
                      tls=True, treq="not required", configfs=configfs):
        tls = [("addr_tsas", "tls1.3"), ("addr_treq", "not required")]
        assert configfs.ops == subsystem_setup() + port_setup(20001, "tcp", "0.0.0.0", 4420,
                                                              extra=tls)
    assert snapshot(tmp_path) == before


def test_tls_alone_leaves_treq_to_the_kernel(configfs):
    with nvmet.Port(configfs, 20001, "tcp", "0.0.0.0", 4420, tls=True):
        writes = [op[1] for op in configfs.ops if op[0] == "write"]
    assert "ports/20001/addr_tsas" in writes
    assert "ports/20001/addr_treq" not in writes


def test_allowed_hosts_replace_allow_any_host(configfs, tmp_path):
    before = snapshot(tmp_path)
    host = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001"
    with nvmet.Subsystem(configfs, NQN, DEVICE, allowed_hosts=[host]):
        assert configfs.ops[:4] == [
            ("mkdir", f"subsystems/{NQN}"),
            ("write", f"subsystems/{NQN}/attr_allow_any_host", "0"),
            ("mkdir", f"hosts/{host}"),
            ("symlink", f"subsystems/{NQN}/allowed_hosts/{host}", f"hosts/{host}"),
        ]
        configfs.ops.clear()
    assert configfs.ops == [
        ("write", f"subsystems/{NQN}/namespaces/1/enable", "0"),
        ("rmdir", f"subsystems/{NQN}/namespaces/1"),
        ("unlink", f"subsystems/{NQN}/allowed_hosts/{host}"),
        ("rmdir", f"hosts/{host}"),
        ("rmdir", f"subsystems/{NQN}"),
    ]
    assert snapshot(tmp_path) == before


def test_the_link_is_made_inside_the_target_netns(configfs):
    @contextlib.contextmanager
    def in_target_netns():
        configfs.ops.append(("enter netns",))
        yield
        configfs.ops.append(("leave netns",))

    with nvmet.Target(DEVICE, "tcp", ["10.1.1.1"], nqn=NQN, trsvcid=4420, port_ids=[20001],
                      in_target_netns=in_target_netns, configfs=configfs):
        assert configfs.ops[-3:] == [
            ("enter netns",),
            ("symlink", f"ports/20001/subsystems/{NQN}", f"subsystems/{NQN}"),
            ("leave netns",),
        ]


def test_einval_on_addr_trtype_names_the_transport_and_undoes_setup(tmp_path):
    configfs = KernelWithoutMptcp(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(nvmet.TransportUnsupported) as raised:
        with nvmet.Target(DEVICE, "mptcp", ["10.1.1.1"], nqn=NQN, trsvcid=4420,
                          port_ids=[20001], configfs=configfs):
            pytest.fail("setup must not succeed")
    assert raised.value.trtype == "mptcp"
    assert raised.value.errno == errno.EINVAL
    assert "ports/20001/addr_trtype" in str(raised.value)
    assert "EINVAL" in str(raised.value)
    assert isinstance(raised.value, SetupError)
    assert configfs.ops[-5:] == [
        ("mkdir", "ports/20001"),
        ("rmdir", "ports/20001"),
        *subsystem_teardown(),
    ]
    assert snapshot(tmp_path) == before


def test_einval_on_addr_tsas_is_tls_unsupported(tmp_path):
    class KernelWithoutTls(FakeConfigfs):
        def write_file(self, path, value):
            if path.name == "addr_tsas":
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(path))
            super().write_file(path, value)

    configfs = KernelWithoutTls(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(nvmet.TlsUnsupported, match="addr_tsas <- 'tls1.3'"):
        with nvmet.Port(configfs, 20001, "mptcp", "0.0.0.0", 4420, tls=True):
            pass
    assert snapshot(tmp_path) == before


def test_einval_on_other_attributes_is_a_plain_rejection(tmp_path):
    class KernelRefusingTheDevice(FakeConfigfs):
        def write_file(self, path, value):
            if path.name == "enable" and value == "1":
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
            super().write_file(path, value)

    configfs = KernelRefusingTheDevice(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(nvmet.ConfigfsRejected, match="enable <- '1': ENOENT") as raised:
        with nvmet.Subsystem(configfs, NQN, "/dev/missing"):
            pass
    assert type(raised.value) is nvmet.ConfigfsRejected
    assert snapshot(tmp_path) == before


def test_a_failed_link_undoes_everything(tmp_path):
    class PortInUse(FakeConfigfs):
        def symlink(self, target, link):
            if "20002" in str(link):
                raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE), str(link))
            super().symlink(target, link)

    configfs = PortInUse(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(nvmet.ConfigfsRejected, match="EADDRINUSE"):
        with nvmet.Target(DEVICE, "tcp", ["10.1.1.1", "10.1.2.1"], nqn=NQN, trsvcid=4420,
                          port_ids=[20001, 20002], configfs=configfs):
            pass
    assert ("unlink", f"ports/20001/subsystems/{NQN}") in configfs.ops
    assert snapshot(tmp_path) == before


def test_unset_port_ids_avoid_ports_in_use(configfs):
    ports = configfs.nvmet / "ports"
    for port_id in range(20000, 29998):
        (ports / str(port_id)).mkdir()
    target = nvmet.Target(DEVICE, "tcp", ["10.1.1.1", "10.1.2.1"], configfs=configfs)
    assert sorted(port.port_id for port in target.ports) == [29998, 29999]


@pytest.mark.parametrize("kwargs, message", [
    ({"trtype": "rdma"}, "trtype must be one of tcp, mptcp"),
    ({"adrfam": "ib"}, "adrfam must be one of ipv4, ipv6"),
    ({"treq": "required"}, "treq needs tls"),
    ({"tls": True, "treq": "not specified"}, "treq needs tls and one of"),
    ({"trsvcid": 70000}, "trsvcid must be a TCP port"),
])
def test_bad_port_settings_are_usage_errors(configfs, kwargs, message):
    settings = {"trtype": "tcp", "trsvcid": 4420, **kwargs}
    with pytest.raises(UsageError, match=message):
        nvmet.Port(configfs, 20001, settings.pop("trtype"), "0.0.0.0", settings.pop("trsvcid"),
                   **settings)


def test_a_target_needs_addresses_and_matching_port_ids(configfs):
    with pytest.raises(UsageError, match="at least one path"):
        nvmet.Target(DEVICE, "tcp", [], configfs=configfs)
    with pytest.raises(UsageError, match="2 paths but 1 port ids"):
        nvmet.Target(DEVICE, "tcp", ["10.1.1.1", "10.1.2.1"], port_ids=[20001],
                     configfs=configfs)


def test_nqn_has_the_script_form():
    assert re.fullmatch(r"nqn\.2014-08\.org\.nvmexpress\.mptcpdev\.\d+\.\d+",
                        nvmet.make_nqn("mptcp"))
    assert nvmet.make_nqn("tcp").split(".")[-2] == str(os.getpid())
    assert nvmet.make_nqn("tcp", pid=12, rng=random.Random(1)).startswith(
        "nqn.2014-08.org.nvmexpress.tcpdev.12.")
    assert 0 <= int(nvmet.make_nqn("tcp").split(".")[-1]) < 32768


def test_port_ids_are_distinct_in_range_and_free():
    rng = random.Random(5)
    for _ in range(50):
        ids = nvmet.pick_port_ids(4, taken={20000, 25000}, rng=rng)
        assert len(set(ids)) == 4
        assert all(20000 <= i <= 29999 and i not in (20000, 25000) for i in ids)
    assert sorted(nvmet.pick_port_ids(2, taken=range(20000, 29998))) == [29998, 29999]
    with pytest.raises(SetupError, match="only 2 free"):
        nvmet.pick_port_ids(3, taken=range(20000, 29998))


def test_trsvcid_is_one_port_in_range_shared_by_all_paths(configfs):
    rng = random.Random(7)
    assert all(1024 <= nvmet.pick_trsvcid(rng) <= 65535 for _ in range(1000))
    target = nvmet.Target(DEVICE, "tcp", [f"10.1.{i}.1" for i in range(1, 5)],
                          configfs=configfs)
    assert 1024 <= target.trsvcid <= 65535
    assert {port.trsvcid for port in target.ports} == {target.trsvcid}


def test_listen_addresses():
    assert nvmet.listen_addresses(["10.1.1.1"]) == ["0.0.0.0"]
    assert nvmet.listen_addresses(["dead:beef:1::1"], "ipv6") == ["::"]
    assert nvmet.listen_addresses(["10.1.1.1", "10.1.2.1"]) == ["10.1.1.1", "10.1.2.1"]
    # by default the address's own family: a first link that is IPv6 or v4-mapped
    assert nvmet.listen_addresses(["dead:beef:1::1"]) == ["::"]
    assert nvmet.listen_addresses(["::ffff:10.1.1.1"]) == ["::"]


def test_each_port_takes_its_address_family(configfs):
    target = nvmet.Target(DEVICE, "tcp", ["dead:beef:1::1", "10.1.2.1", "::ffff:10.1.3.1"],
                          configfs=configfs)
    assert [port.adrfam for port in target.ports] == ["ipv6", "ipv4", "ipv6"]
    single = nvmet.Target(DEVICE, "tcp", ["dead:beef:1::1"], configfs=configfs)
    assert [(port.traddr, port.adrfam) for port in single.ports] == [("::", "ipv6")]


def test_constants():
    assert nvmet.TRTYPES == ("tcp", "mptcp")
    assert vocabulary.NVMF_TRTYPE_MPTCP == 4
    assert nvmet.DISCOVERY_NQN == "nqn.2014-08.org.nvmexpress.discovery"


def test_load_target_modules_loads_nvmet_tcp_explicitly(monkeypatch):
    loaded = []
    monkeypatch.setattr(nvmet.requirements, "load_module",
                        lambda name: loaded.append(name) or name != "nvmet-tcp")
    monkeypatch.setattr(nvmet.requirements, "mount_configfs", lambda: True)
    with pytest.raises(SetupError, match="kernel modules not available: nvmet-tcp"):
        nvmet.load_target_modules()
    assert loaded == ["nvmet", "nvmet-tcp"]


def test_load_target_modules_needs_configfs(monkeypatch):
    monkeypatch.setattr(nvmet.requirements, "load_module", lambda name: True)
    monkeypatch.setattr(nvmet.requirements, "mount_configfs", lambda: False)
    with pytest.raises(SetupError, match="cannot mount configfs on /sys/kernel/config"):
        nvmet.load_target_modules()


KEY_1 = "DHHC-1:01:wB7GPs5o/h10xV07fwq581sDpz6njPWazYnscpCLZwueW/s2:"
KEY_2 = "DHHC-1:02:5E5FIp6260CUxisGZTl4wCbs8VT3++9AUaFiC4HsZiE/DwjGtpJMokZZUMVrjLLpj0H8vw==:"


def test_allowed_hosts_with_attributes_write_them_before_the_link(configfs, tmp_path):
    before = snapshot(tmp_path)
    host = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000002"
    old, new = KEY_1, KEY_2              # made by nvme gen-dhchap-key (tests/data/dhchap)
    keys = {"dhchap_key": old, "dhchap_hash": "hmac(sha384)"}
    with nvmet.Subsystem(configfs, NQN, DEVICE, allowed_hosts={host: keys}) as subsystem:
        assert configfs.ops[2:5] == [
            ("mkdir", f"hosts/{host}"),
            ("write", f"hosts/{host}/dhchap_key", old),
            ("write", f"hosts/{host}/dhchap_hash", "hmac(sha384)"),
        ]
        assert configfs.ops[5][0] == "symlink"
        subsystem.set_host_attribute(host, "dhchap_key", new)
        assert configfs.ops[-1] == ("write", f"hosts/{host}/dhchap_key", new)
        assert subsystem.allowed_hosts == (host,)
    assert snapshot(tmp_path) == before


def test_ana_state_is_written_per_port_and_group(configfs):
    with nvmet.Target(DEVICE, "tcp", ["10.1.1.1", "10.1.2.1"], nqn=NQN, trsvcid=4420,
                      port_ids=[20001, 20002], configfs=configfs) as target:
        (target.ports[1].path / "ana_groups/1").mkdir(parents=True)
        target.ports[1].set_ana_state("inaccessible")
        assert configfs.ops[-1] == ("write", "ports/20002/ana_groups/1/ana_state", "inaccessible")
        with pytest.raises(UsageError, match="ANA state must be one of"):
            target.ports[1].set_ana_state("asleep")
        (target.ports[1].path / "ana_groups/1/ana_state").unlink()
        (target.ports[1].path / "ana_groups/1").rmdir()
        (target.ports[1].path / "ana_groups").rmdir()


def test_a_port_unexports_its_subsystem_for_a_block_and_exports_it_again(configfs):
    with nvmet.Target(DEVICE, "tcp", ["10.1.1.1"], nqn=NQN, trsvcid=4420, port_ids=[20001],
                      configfs=configfs) as target:
        link = target.ports[0].path / "subsystems" / NQN
        with target.ports[0].unexported(target.subsystem):
            assert not link.exists()
        assert link.is_symlink()
        with pytest.raises(RuntimeError):
            with target.ports[0].unexported(target.subsystem):
                raise RuntimeError("the fault's test failed meanwhile")
        assert link.is_symlink()


def test_device_size_of_a_file(tmp_path):
    backing = tmp_path / "backing.img"
    backing.write_bytes(bytes(4096))
    assert nvmet.device_size(backing) == 4096

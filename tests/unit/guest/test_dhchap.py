"""dhchap.py on keys made by nvme-cli's gen-dhchap-key (tests/data/dhchap, from the rootfs)."""


import pytest

from mptcp_nvme.errors import UsageError
from mptcp_nvme.guest.security import dhchap
from mptcp_nvme.guest.nvmet import target as nvmet
from mptcp_nvme.guest.nvme import fabrics
from tests import DATA

KEYS = (DATA / "dhchap/gen-dhchap-key.txt").read_text().split()


def test_keys_from_nvme_cli_pass():
    assert len(KEYS) == 3
    for key in KEYS:
        assert dhchap.check_key(key) == key


@pytest.mark.parametrize("bad, why", [
    ("secret", "must look like DHHC-1:0N:<base64>:"),
    ("DHHC-1:04:AAAA:", "must look like"),
    ("DHHC-1:00:AAAAAAAA:", "a 2-byte key"),
])
def test_malformed_keys_say_why(bad, why):
    with pytest.raises(UsageError, match=why.replace("(", r"\(").replace(")", r"\)")):
        dhchap.check_key(bad)


def test_a_mistyped_key_fails_its_crc():
    key = KEYS[0]
    body = key.split(":")[2]
    flipped = body[:5] + ("A" if body[5] != "A" else "B") + body[6:]
    with pytest.raises(UsageError, match="CRC-32 does not match"):
        dhchap.check_key(f"DHHC-1:01:{flipped}:")


def test_unknown_hash_and_group_are_usage_errors_before_configfs():
    with pytest.raises(UsageError, match="dhchap_hash must be one of hmac"):
        nvmet.Subsystem(nvmet.Configfs("/nonexistent"), "nqn.x", "/dev/null",
                        allowed_hosts={"nqn.h": {"dhchap_key": KEYS[0], "dhchap_hash": "sha1"}})
    with pytest.raises(UsageError, match="dhchap_dhgroup must be one of null"):
        dhchap.check_host_attributes({"dhchap_dhgroup": "ffdhe1024"})
    with pytest.raises(UsageError, match="dhchap_secret must look like"):
        fabrics.checked_options({"dhchap_secret": "oops"})
    assert fabrics.checked_options({"dhchap_secret": KEYS[1]}) == {"dhchap_secret": KEYS[1]}

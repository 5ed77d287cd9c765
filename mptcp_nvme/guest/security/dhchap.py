"""DH-HMAC-CHAP parameters as nvmet and the fabrics options take them, checked before
they reach the kernel: a malformed key, an unknown hash or DH group is a UsageError
naming it, not an EINVAL from configfs or /dev/nvme-fabrics."""

import base64
import binascii
import re
import zlib

from mptcp_nvme.errors import UsageError

HASHES = ("hmac(sha256)", "hmac(sha384)", "hmac(sha512)")
DH_GROUPS = ("null", "ffdhe2048", "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192")
# The secret representation of NVMe 2.0 8.13.5.8: DHHC-1:<transform>:<base64 of the key
# and its CRC-32, little endian>: with a 32, 48 or 64 byte key (nvme gen-dhchap-key).
_KEY = re.compile(r"DHHC-1:(0[0-3]):([A-Za-z0-9+/]+={0,2}):")
KEY_SIZES = (32, 48, 64)
KEY_ATTRIBUTES = ("dhchap_key", "dhchap_ctrl_key", "dhchap_secret", "dhchap_ctrl_secret")


def check_key(text, what="DH-HMAC-CHAP key"):
    """``text`` if it is a well-formed secret, else UsageError saying what is wrong."""
    match = _KEY.fullmatch(str(text).strip())
    if not match:
        raise UsageError(f"{what} must look like DHHC-1:0N:<base64>: (nvme gen-dhchap-key), "
                         f"not {str(text)[:40]!r}")
    try:
        raw = base64.b64decode(match[2], validate=True)
    except binascii.Error:
        raise UsageError(f"{what}: bad base64 in {text!r}") from None
    key, crc = raw[:-4], raw[-4:]
    if len(key) not in KEY_SIZES:
        raise UsageError(f"{what}: a {len(key)}-byte key, not one of {KEY_SIZES}")
    if zlib.crc32(key).to_bytes(4, "little") != crc:
        raise UsageError(f"{what}: its CRC-32 does not match (a mistyped key?)")
    return text


def check_host_attributes(attributes):
    """nvmet host entry attributes: keys well formed, hash and DH group known."""
    for name, value in attributes.items():
        if name in KEY_ATTRIBUTES:
            check_key(value, name)
        elif name == "dhchap_hash" and value not in HASHES:
            raise UsageError(f"dhchap_hash must be one of {', '.join(HASHES)}, not {value!r}")
        elif name == "dhchap_dhgroup" and value not in DH_GROUPS:
            raise UsageError(f"dhchap_dhgroup must be one of {', '.join(DH_GROUPS)}, "
                             f"not {value!r}")
    return attributes

"""'mptcp-nvme blktests' before any VM: the checkout, its tests and the transport checked,
the copy made (a checkout-shaped folder here: no blktests code in this repository)."""

import pytest

from mptcp_nvme.errors import UsageError
from mptcp_nvme.guest.blktests import LIST_NAME
from mptcp_nvme.host import blktests


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "blktests"
    for path in ("check", "common/rc", "tests/nvme/003", "tests/nvme/018", "tests/nvme/rc",
                 "tests/nvme/003.out", "tests/block/001", "results/old/nvme/003", ".git/HEAD"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("x\n")
    return root


def test_a_folder_that_is_not_a_checkout_is_refused(tmp_path, checkout):
    assert blktests.check_checkout(checkout) == checkout.resolve()
    with pytest.raises(UsageError, match="not a blktests checkout"):
        blktests.check_checkout(tmp_path)
    with pytest.raises(UsageError, match="--blktests DIR"):
        blktests.check_checkout(None)


def test_tests_are_groups_or_numbers_of_the_checkout(checkout):
    assert blktests.resolve(checkout, []) == ["nvme/003", "nvme/018"]
    assert blktests.resolve(checkout, ["nvme/018", "nvme", "block"]) == [
        "nvme/018", "nvme/003", "block/001"]
    with pytest.raises(UsageError, match=r"no such test in tests/nvme \(it has 003..018\)"):
        blktests.resolve(checkout, ["nvme/999"])
    with pytest.raises(UsageError, match="no such group"):
        blktests.resolve(checkout, ["scsi"])
    with pytest.raises(UsageError, match="no such group"):
        blktests.resolve(checkout, ["../etc"])


@pytest.mark.parametrize("trtype, accepted", [("tcp", True), ("loop", True), ("mptcp", False),
                                              ("rdma", False)])
def test_the_transport_is_tcp_or_loop_and_mptcp_says_why_not(trtype, accepted):
    if accepted:
        assert blktests.check_trtype(trtype) == trtype
    else:
        with pytest.raises(UsageError, match="MPTCP" if trtype == "mptcp" else "tcp, loop"):
            blktests.check_trtype(trtype)


def test_the_copy_leaves_out_git_and_old_results_and_lists_the_tests(tmp_path, checkout):
    args = blktests.install(checkout, ["nvme/003"], tmp_path / "run")
    copy = tmp_path / "run" / "blktests"
    assert args == [f"{copy / LIST_NAME}::nvme/003"]
    assert (copy / LIST_NAME).read_text() == "nvme/003\n"
    assert (copy / "tests/nvme/003").is_file() and (copy / "check").is_file()
    assert not (copy / ".git").exists() and not (copy / "results").exists()

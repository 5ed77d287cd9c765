"""The unit tests' own cache: none of them reads or writes the user's (durations, kernels,
rootfs), so a warm cache cannot change what they see; one marked user_cache needs a
built artefact from it (and skips without)."""

import pytest


@pytest.fixture(autouse=True)
def own_cache(request, tmp_path_factory, monkeypatch):
    if request.node.get_closest_marker("user_cache"):
        return
    monkeypatch.setenv("MPTCP_NVME_CACHE", str(tmp_path_factory.mktemp("cache")))

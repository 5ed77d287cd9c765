"""In-guest selftests: requirements and kernel health checks come from mptcp_nvme.plugin
(enabled here too, so that a plain ``sudo pytest selftests`` applies them)."""

from mptcp_nvme.plugin import enable_selftest_checks


def pytest_configure(config):
    enable_selftest_checks(config)

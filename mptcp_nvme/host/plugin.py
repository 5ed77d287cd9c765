"""The host side's pytest plugin, registered by mptcp_nvme.plugin: the VM runner
(--vm), sharding and the time budget, and the reporters (KTAP, results.json, the fault
table) of any run that writes KTAP."""

from mptcp_nvme.channel import results_dir


def register(config):
    if config.getoption("vm") and not hasattr(config, "workerinput"):
        from mptcp_nvme.host.vm.pytest_run import VmReaper
        config.pluginmanager.register(VmReaper(), "mptcp_nvme_vm_reaper")
    if config.getoption("vm") and not is_xdist_controller(config):
        from mptcp_nvme.host.vm.pytest_run import VmRunner
        config.pluginmanager.register(VmRunner(config), "mptcp_nvme_vm")
    if config.getoption("vm") or config.getoption("ktap"):
        from mptcp_nvme.host import budget, order, shard
        shard.register(config)
        order.register(config)
        budget.register(config)            # after VmRunner: its protocol hook goes first
    if config.getoption("ktap") and not hasattr(config, "workerinput"):
        from mptcp_nvme.host.results.faults_report import FaultsReport
        from mptcp_nvme.host.results.reporters import KtapReporter, ResultsJson
        config.pluginmanager.register(KtapReporter(config), "mptcp_nvme_ktap")
        if config.getoption("results_dir"):
            folder = results_dir(config)
            config.pluginmanager.register(ResultsJson(folder / "results.json", folder),
                                          "mptcp_nvme_results_json")
            config.pluginmanager.register(FaultsReport(folder), "mptcp_nvme_faults")


def is_xdist_controller(config):
    return (not hasattr(config, "workerinput")
            and getattr(config.option, "numprocesses", None) not in (None, 0))

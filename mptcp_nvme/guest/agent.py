"""Guest side: the agent that runs the tests the host asks for, one at a time, and
answers with pytest's own serialized reports (protocol in host/vm/guest_session.py)."""

import json
import os
import queue
import threading

import pytest

from mptcp_nvme.channel import MARK, REPLY_FD, REQUEST_FD


class GuestAgent:
    """pytest plugin for the guest: runs the tests the host asks for, one at a time."""

    def __init__(self, config):
        self.config = config
        self.reports = []
        config.option.tbstyle = "short"      # failure text travels to the host's KTAP
        self.requests = os.fdopen(REQUEST_FD, "r")
        self.channel = os.fdopen(REPLY_FD, "w", buffering=1)
        self.lock = threading.Lock()
        self.runs = queue.Queue()             # run requests for the main thread; None: EOF
        threading.Thread(target=self._read_requests, daemon=True).start()

    def send(self, **message):
        with self.lock:
            self.channel.write(MARK + json.dumps(message) + "\n")
            self.channel.flush()

    def _read_requests(self):
        """Requests from the host: runs queue up, sysrq is served at once (the main
        thread may be stuck in the test that the host wants the backtraces of)."""
        for line in self.requests:
            request = json.loads(line)
            if request.get("op") == "sysrq":
                with open("/proc/sys/kernel/sysrq", "w") as sysrq:
                    sysrq.write("1")
                for key in request.get("keys", "wl"):
                    with open("/proc/sysrq-trigger", "w") as trigger:
                        trigger.write(key)
                self.send(event="sysrq-done")
            else:
                self.runs.put(request)
        self.runs.put(None)

    def pytest_runtest_logreport(self, report):
        self.reports.append(report)

    def pytest_collectreport(self, report):
        if report.failed:
            self.send(event="collect-error", nodeid=report.nodeid, text=str(report.longrepr))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        items = {item.nodeid: item for item in session.items}
        self.send(event="ready", collected=len(items))
        hook = self.config.hook
        for request in iter(self.runs.get, None):
            item = items.get(request["nodeid"])
            self.reports = []
            if item is None:
                self.send(event="result", nodeid=request["nodeid"], reports=[],
                          error=f"{request['nodeid']} was not collected in the guest")
                continue
            hook.pytest_runtest_protocol(item=item, nextitem=items.get(request.get("next")))
            self.send(event="result", nodeid=item.nodeid, reports=[
                hook.pytest_report_to_serializable(config=self.config, report=report)
                for report in self.reports])
        return True

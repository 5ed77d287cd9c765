"""matrix.json's one writer and one reader (host/matrix/document.py) agree."""

import dataclasses
import json

import pytest

from mptcp_nvme.errors import UsageError
from mptcp_nvme.host.matrix import document


def settings():
    return document.Settings(rate_mbit=30.0, runtime_s=10, repeat=3, loss={"note": "x"},
                             topology=None, tls=False, append=["nvme_core.io_timeout=60"])


def cell(**changes):
    values = dict(kernel="main", kind="fabric", trtype="mptcp", paths=4, multipath="native",
                  iopolicy="numa", loss=0, tls=False, label="mptcp 4-path numa", links=4,
                  usable_links=4, link_rate_mbit=[30.0] * 4, runs=[])
    return document.Cell(**{**values, **changes})


def run(nodeid="bench_matrix.py::test_cell[r0]", **changes):
    values = dict(nodeid=nodeid, repeat=0, status="passed", read_mib=21.5, write_mib=20.0,
                  duration_s=31.2, reason=None)
    return document.Run(**{**values, **changes})


def test_what_the_writer_saves_the_reader_loads_as_the_dataclasses(tmp_path):
    doc = document.new(settings())
    doc["kernels"]["main"] = {"release": "7.3.4", "origin": "tree", "config_sha": None}
    entry = document.add_cell(doc, cell())
    document.add_run(entry, run())
    document.add_run(entry, run(status="failed", read_mib=None, write_mib=None, reason="boom"))
    document.add_run(entry, run("bench_matrix.py::test_cell[r1]", repeat=1))
    path = tmp_path / "matrix.json"
    document.save(doc, path)
    loaded = document.load(path)
    assert loaded == json.loads(json.dumps(doc))
    assert document.Settings(**loaded["settings"]) == settings()
    (back,) = loaded["cells"]
    runs = [document.Run(**r) for r in back["runs"]]
    assert [r.repeat for r in runs] == [0, 1] and runs[0].reason == "boom"   # r0 replaced
    assert document.Cell(**{**back, "runs": []}) == cell()


@pytest.mark.parametrize("kind, field", [(kind, field) for kind, fields in document.REQUIRED.items()
                                         for field in fields])
def test_the_reader_names_each_missing_field(tmp_path, kind, field):
    doc = document.new(settings())
    doc["kernels"]["main"] = {}
    entry = document.add_cell(doc, cell())
    document.add_run(entry, run())
    target = {"settings": doc["settings"], "cell": entry, "run": entry["runs"][0]}[kind]
    del target[field]
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match=f"lacks '{field}'"):
        document.load(path)


def test_required_fields_are_the_dataclasses_less_what_older_files_lack():
    assert set(document.REQUIRED["cell"]) == {f.name for f in dataclasses.fields(document.Cell)} - {
        "multipath", "sampled"}
    assert set(document.REQUIRED["run"]) == {"status", "read_mib", "write_mib"}

"""fio job command lines, JSON parsing, and a smoke run of the real fio when installed."""

import copy
import json
import shutil
import subprocess

import pytest

from mptcp_nvme import proc
from mptcp_nvme.guest.io import fio
from mptcp_nvme.errors import SetupError, UsageError

DEVICE = "/dev/nvme2n1"
PREFIX = ["nsenter", "--net=/run/netns/ns2"]

SCRIPT_OPTIONS = ["--direct=1", "--norandommap", "--randrepeat=0", "--ioengine=libaio",
                  "--thread", "--bs=128k", "--runtime=10", "--time_based", "--numjobs=4",
                  "--iodepth=256", "--group_reporting", "--size=100%"]

# fio 3.x --output-format=json of the script's randread over 4 MPTCP paths
# (445 MiB/s), trimmed of the latency histograms. fio printed a warning on
# stdout first, as it does.
RANDREAD_OUTPUT = """\
fio: file hash not empty on exit
{
  "fio version" : "fio-3.39",
  "timestamp" : 1767225600,
  "timestamp_ms" : 1767225600123,
  "time" : "Thu Jan  1 00:00:00 2026",
  "jobs" : [
    {
      "jobname" : "randread",
      "groupid" : 0,
      "job_start" : 1767225590101,
      "error" : 0,
      "eta" : 0,
      "elapsed" : 11,
      "job options" : {
        "name" : "randread",
        "filename" : "/dev/nvme2n1",
        "rw" : "randread",
        "direct" : "1",
        "randrepeat" : "0",
        "ioengine" : "libaio",
        "bs" : "128k",
        "runtime" : "10",
        "numjobs" : "4",
        "iodepth" : "256",
        "size" : "100%"
      },
      "read" : {
        "io_bytes" : 4667080704,
        "io_kbytes" : 4557696,
        "bw_bytes" : 466661408,
        "bw" : 455724,
        "iops" : 3560.343965,
        "runtime" : 10001,
        "total_ios" : 35607,
        "short_ios" : 0,
        "drop_ios" : 0,
        "slat_ns" : {"min" : 2154, "max" : 181544, "mean" : 9122.9, "stddev" : 4187.1,
                     "N" : 35607},
        "clat_ns" : {
          "min" : 3203072,
          "max" : 1149239296,
          "mean" : 287449837.4,
          "stddev" : 98132450.1,
          "N" : 35607,
          "percentile" : {
            "1.000000" : 96993280,
            "5.000000" : 141557760,
            "10.000000" : 166723584,
            "20.000000" : 210763776,
            "30.000000" : 240123904,
            "40.000000" : 263192576,
            "50.000000" : 287309824,
            "60.000000" : 308281344,
            "70.000000" : 329252864,
            "80.000000" : 358612992,
            "90.000000" : 408944640,
            "95.000000" : 455081984,
            "99.000000" : 566231040,
            "99.500000" : 608174080,
            "99.900000" : 725614592,
            "99.950000" : 792723456,
            "99.990000" : 1082130432
          }
        },
        "lat_ns" : {"min" : 3215360, "max" : 1149251584, "mean" : 287458960.3,
                    "stddev" : 98132001.8, "N" : 35607},
        "bw_min" : 372736,
        "bw_max" : 538624,
        "bw_agg" : 100.0,
        "bw_mean" : 455812.2,
        "bw_dev" : 7316.2,
        "bw_samples" : 76,
        "iops_min" : 2912,
        "iops_max" : 4208,
        "iops_mean" : 3561.0,
        "iops_stddev" : 57.1,
        "iops_samples" : 76
      },
      "write" : {
        "io_bytes" : 0,
        "io_kbytes" : 0,
        "bw_bytes" : 0,
        "bw" : 0,
        "iops" : 0.000000,
        "runtime" : 0,
        "total_ios" : 0,
        "short_ios" : 0,
        "drop_ios" : 0,
        "slat_ns" : {"min" : 0, "max" : 0, "mean" : 0.0, "stddev" : 0.0, "N" : 0},
        "clat_ns" : {"min" : 0, "max" : 0, "mean" : 0.0, "stddev" : 0.0, "N" : 0},
        "lat_ns" : {"min" : 0, "max" : 0, "mean" : 0.0, "stddev" : 0.0, "N" : 0},
        "bw_min" : 0,
        "bw_max" : 0,
        "bw_agg" : 0.0,
        "bw_mean" : 0.0,
        "bw_dev" : 0.0,
        "bw_samples" : 0,
        "iops_min" : 0,
        "iops_max" : 0,
        "iops_mean" : 0.0,
        "iops_stddev" : 0.0,
        "iops_samples" : 0
      },
      "job_runtime" : 40004,
      "usr_cpu" : 0.41,
      "sys_cpu" : 2.87,
      "ctx" : 36133,
      "majf" : 0,
      "minf" : 1064,
      "latency_depth" : 256,
      "latency_target" : 0,
      "latency_percentile" : 100.000000,
      "latency_window" : 0
    }
  ],
  "disk_util" : []
}
"""


def sample(**changes):
    """The randread sample as a dict, with top-level job fields changed."""
    text = RANDREAD_OUTPUT[RANDREAD_OUTPUT.index("{"):]
    document = json.loads(text)
    document["jobs"][0].update(changes)
    return document


def test_default_argv_is_the_scripts_randread():
    assert fio.FioJob().argv(DEVICE) == [
        "fio", "--output-format=json", "--name=randread", f"--filename={DEVICE}",
        "--rw=randread", *SCRIPT_OPTIONS]


def test_overrides():
    job = fio.FioJob().replace(rw="randwrite", bs="4k", iodepth=32, numjobs=1, runtime=30,
                               ioengine="io_uring")
    assert job.argv(DEVICE) == [
        "fio", "--output-format=json", "--name=randwrite", f"--filename={DEVICE}",
        "--rw=randwrite", "--direct=1", "--norandommap", "--randrepeat=0",
        "--ioengine=io_uring", "--thread", "--bs=4k", "--runtime=30", "--time_based",
        "--numjobs=1", "--iodepth=32", "--group_reporting", "--size=100%"]
    assert fio.FioJob() == fio.FioJob(rw="randread")  # replace() left the default alone


def test_false_and_none_leave_options_out():
    job = fio.FioJob(direct=False, norandommap=False, thread=False, time_based=False,
                     runtime=None, group_reporting=False, randrepeat=True)
    assert job.argv("f") == [
        "fio", "--output-format=json", "--name=randread", "--filename=f", "--rw=randread",
        "--direct=0", "--randrepeat=1", "--ioengine=libaio", "--bs=128k", "--numjobs=4",
        "--iodepth=256", "--size=100%"]


def test_verify_job_writes_disjoint_slices_then_reads_back():
    job = fio.FioJob().verifying()
    assert job.argv(DEVICE) == [
        "fio", "--output-format=json", "--name=randwrite", f"--filename={DEVICE}",
        "--rw=randwrite", "--direct=1", "--randrepeat=0", "--ioengine=libaio", "--thread",
        "--bs=128k", "--numjobs=4", "--iodepth=256", "--group_reporting", "--size=25%",
        "--offset_increment=25%", "--verify=crc32c", "--do_verify=1", "--verify_state_save=0"]
    assert fio.FioJob(rw="write", numjobs=1, size="64M").verifying().argv("f")[-4:] == [
        "--size=64M", "--verify=crc32c", "--do_verify=1", "--verify_state_save=0"]
    sliced = fio.FioJob(numjobs=2, size=fio.VERIFY_SIZE).verifying().argv("f")
    assert {"--size=8192k", "--offset_increment=8192k"} <= set(sliced), sliced


@pytest.mark.parametrize("job, message", [
    (fio.FioJob(verify="crc32c"), "must write"),
    (fio.FioJob().verifying().replace(time_based=True), "not be time_based"),
    (fio.FioJob().verifying().replace(norandommap=True), "no norandommap"),
    (fio.FioJob(size="1T").verifying(), "whole percentage or a size like 16m, not '1T'"),
    (fio.FioJob(size="3k", numjobs=4).verifying(), "leaves nothing to each of its 4 jobs"),
])
def test_impossible_verify_jobs_are_usage_errors(job, message):
    with pytest.raises(UsageError, match=message):
        job.argv(DEVICE)


def test_parse_randread():
    result = fio.parse(RANDREAD_OUTPUT)
    assert result.read == fio.Direction(io_bytes=4667080704, bw_bytes=466661408,
                                        iops=3560.343965, clat_p50_us=287309.824,
                                        clat_p99_us=566231.04, clat_p999_us=725614.592)
    assert round(result.read.mib_per_s) == 445
    assert result.write == fio.Direction(io_bytes=0, bw_bytes=0, iops=0.0, clat_p50_us=None,
                                         clat_p99_us=None, clat_p999_us=None)
    assert (result.error, result.error_count) == (0, 0)


def test_parse_errors():
    result = fio.parse(json.dumps(sample(error=84)))
    assert (result.error, result.error_count) == (84, 1)
    result = fio.parse(json.dumps(sample(error=5, total_err=17)))  # continue_on_error
    assert (result.error, result.error_count) == (5, 18)


def test_parse_sums_jobs_without_group_reporting():
    document = sample()
    slower = copy.deepcopy(document["jobs"][0])
    slower["read"]["clat_ns"]["percentile"]["99.000000"] = 900000000
    document["jobs"].append(slower)
    result = fio.parse(json.dumps(document))
    assert result.read.bw_bytes == 2 * 466661408
    assert result.read.io_bytes == 2 * 4667080704
    assert result.read.clat_p99_us == 900000.0  # the worst job's


def test_parse_rejects_non_json():
    with pytest.raises(SetupError, match="unexpected fio output"):
        fio.parse("fio: failed parsing rw=sideways\n")


class FakeRun:
    """subprocess.run standing in for fio (the sample) and nvme flush."""

    def __init__(self, output=RANDREAD_OUTPUT, returncode=0, stderr=""):
        self.calls = []
        self.output, self.returncode, self.stderr = output, returncode, stderr

    def __call__(self, argv, **kwargs):
        self.calls.append(argv)
        if "fio" in argv:
            return subprocess.CompletedProcess(argv, self.returncode, self.output, self.stderr)
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_write_jobs_are_flushed_behind_the_prefix(monkeypatch):
    runs = FakeRun()
    monkeypatch.setattr(proc.subprocess, "run", runs)
    results = fio.run_script_sequence(DEVICE, prefix=PREFIX)
    assert list(results) == ["randread", "randwrite"]
    assert runs.calls == [
        [*PREFIX, *fio.FioJob().argv(DEVICE)],
        [*PREFIX, *fio.FioJob(rw="randwrite").argv(DEVICE)],
        [*PREFIX, "nvme", "flush", DEVICE],
    ]


def test_a_job_error_raises_with_the_result(monkeypatch):
    stderr = ("verify: bad magic header 0, wanted acca at file /dev/nvme2n1 offset 655360\n"
              "fio: pid=1234, err=84/file:io_u.c:2190, func=io_u_queued_complete, "
              "error=Invalid or incomplete multibyte or wide character\n")
    monkeypatch.setattr(proc.subprocess, "run",
                        FakeRun(json.dumps(sample(error=84)), returncode=1, stderr=stderr))
    with pytest.raises(fio.FioFailed, match="error EILSEQ .*bad magic header") as raised:
        fio.run(fio.FioJob().verifying(), DEVICE)
    assert raised.value.result.error == 84


def test_no_json_is_a_failure(monkeypatch):
    monkeypatch.setattr(proc.subprocess, "run",
                        FakeRun("", returncode=1, stderr="fio: failed to open /dev/nvme9n1"))
    with pytest.raises(fio.FioFailed, match="exit 1, no JSON result: fio: failed to open"):
        fio.run(fio.FioJob(), "/dev/nvme9n1")


requires_fio = pytest.mark.skipif(shutil.which("fio") is None,
                                  reason="the fio binary is not installed on this host")


@pytest.fixture
def target_file(tmp_path):
    """A 16 MiB file; page-cache I/O, since tmpfs refuses O_DIRECT."""
    path = tmp_path / "target.img"
    path.write_bytes(b"\0" * 16 * 2**20)
    return str(path)


SMOKE = fio.FioJob(direct=False, runtime=1, numjobs=2, iodepth=8)


@requires_fio
def test_smoke_real_fio_randread_behind_a_prefix(target_file):
    result = fio.run(SMOKE, target_file, prefix=["env", "LC_ALL=C"], flush=False)
    assert result.read.io_bytes > 0 and result.read.bw_bytes > 0 and result.read.iops > 0
    assert 0 < result.read.clat_p50_us <= result.read.clat_p99_us <= result.read.clat_p999_us
    assert result.write.io_bytes == 0
    assert (result.error, result.error_count) == (0, 0)


@requires_fio
def test_smoke_real_fio_verify_reads_back_everything(target_file):
    result = fio.run(SMOKE.verifying(), target_file, flush=False)
    assert result.write.io_bytes == 16 * 2**20
    assert result.read.io_bytes == result.write.io_bytes
    assert (result.error, result.error_count) == (0, 0)


@requires_fio
def test_smoke_real_fio_verify_that_reads_nothing_back_fails():
    job = fio.FioJob(direct=False, numjobs=1, iodepth=1, bs="4k", size="4k").verifying()
    with pytest.raises(fio.FioFailed, match="read back 0 of the 4096 bytes it wrote"):
        fio.run(job, "/dev/null", flush=False)  # /dev/null swallows the writes


def test_sectors_moved_reads_the_block_stat(tmp_path):
    stat = tmp_path / "block/nvme1n1/stat"
    stat.parent.mkdir(parents=True)
    stat.write_text("    1523        0   389888      912     1524        0   390144     2233"
                    "        0     1840     3146        0        0        0        0        0        0\n")
    assert fio.sectors_moved("/dev/nvme1n1", sysfs=tmp_path) == (389888, 390144)


class _Config:
    def __init__(self, quick):
        self.quick = quick

    def getoption(self, name, default=None):
        return {"quick": self.quick}.get(name, default)


def test_quick_cuts_every_time_based_phase_and_only_those():
    from mptcp_nvme.guest import quick
    from mptcp_nvme.options import QUICK_S
    job = fio.FioJob(runtime=10)
    assert quick.fio_job(_Config(True), job).runtime == QUICK_S
    assert quick.fio_job(_Config(False), job) == job
    sized = fio.FioJob(runtime=None, time_based=False, size="10%").verifying()
    assert quick.fio_job(_Config(True), sized) == sized          # bounded by bytes already
    assert quick.seconds(_Config(True), 1) == 1 and quick.seconds(_Config(True), 8) == QUICK_S
    assert "--runtime=2" in quick.fio_job(_Config(True), job).argv("/dev/nvme0n1")


def test_an_interrupted_job_reports_and_is_no_failure_only_when_interrupted_on_purpose():
    from types import SimpleNamespace
    done = SimpleNamespace(ret=fio.INTERRUPTED, stdout=RANDREAD_OUTPUT,
                           stderr="fio: terminating on signal 2\n")
    result = fio.checked(done, fio.FioJob(), DEVICE, flush=False, interrupted=True)
    assert result.read.io_bytes > 0
    with pytest.raises(fio.FioFailed, match="exit 128"):
        fio.checked(done, fio.FioJob(), DEVICE, flush=False)
    errored = SimpleNamespace(ret=fio.INTERRUPTED, stdout=json.dumps(sample(error=5)), stderr="")
    with pytest.raises(fio.FioFailed, match="error EIO"):
        fio.checked(errored, fio.FioJob(), DEVICE, flush=False, interrupted=True)

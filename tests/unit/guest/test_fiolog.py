"""fio interval logs (mptcp_nvme.guest.io.fiolog) and their chart, on logs in fio 3.39's format
(tests/data/fio/, 100 ms windows, 128k blocks, the helper thread a few ms late):

- write-gap_bw.log: a 10 s write at ~13 MiB/s (13312 KiB/s median), a fault from 4 s to
  6 s: half a window at 4.1 s, no line for 4.2-5.3 s, 512 KiB/s at 5.4 s, a ramp back that
  dips under 90 % at 6.6-6.8 s and holds from 6.8 s; fio's final flush repeats window 10.0 s.
- write-zeros_bw.log: the same fault logged with zeros (older fio), then back to ~68 % only.
- randwrite_bw.1.log, randwrite_bw.2.log: two jobs (per_job_logs=1) at ~6.5 MiB/s for 3 s;
  job 2 has no line at 1.5 s and logs 1.3 s 1 ms early (fio flushes up to 2 ms early).
  randwrite_bw.log: the same two jobs appended to one file, as per_job_logs=0 has fio do.
- verify-offset_bw.log: log_offset=1 (6 columns), a verify job: writes, then reads back.
"""

import re
import struct
from pathlib import Path

import pytest

from mptcp_nvme.guest.io import fiolog
from mptcp_nvme.guest.io.fiolog import Sample, Timeline
from mptcp_nvme.host.results import timeline_chart
import tests

DATA = tests.DATA / "fio"
GAP, ZEROS = DATA / "write-gap_bw.log", DATA / "write-zeros_bw.log"
JOBS = [DATA / "randwrite_bw.1.log", DATA / "randwrite_bw.2.log"]
WRITE = 1


def gap_timeline(until_ms=None):
    samples = fiolog.read_log(GAP)
    return fiolog.timeline([s for s in samples if until_ms is None or s.time_ms <= until_ms],
                           direction=WRITE)


def test_log_options_write_one_averaged_file_per_type():
    assert fiolog.log_options("/tmp/run/fault") == [
        "--write_bw_log=/tmp/run/fault", "--write_iops_log=/tmp/run/fault",
        "--log_avg_msec=100", "--per_job_logs=0", "--log_alternate_epoch=1",
        "--log_alternate_epoch_clock_id=1"]
    assert "--log_avg_msec=50" in fiolog.log_options("x", interval_ms=50)
    assert fiolog.log_files("/tmp/run/fault") == {"bw": "/tmp/run/fault_bw.log",
                                                  "iops": "/tmp/run/fault_iops.log"}


def test_read_five_columns():
    samples = fiolog.read_log(GAP)
    assert len(samples) == 89
    assert samples[:3] == [Sample(101, 3136.0, 1), Sample(200, 9792.0, 1), Sample(302, 12480.0, 1)]
    assert samples[40:42] == [Sample(4103, 6400.0, 1), Sample(5401, 512.0, 1)]
    assert samples[-1] == Sample(10002, 13056.0, 1)


def test_read_six_columns_of_a_verify_job():
    samples = fiolog.read_log(DATA / "verify-offset_bw.log")
    assert [s.direction for s in samples] == [1] * 5 + [0] * 4
    assert samples[2] == Sample(302, 13120.0, 1)
    assert samples[-1] == Sample(900, 27776.0, 0)


def test_read_tolerates_spaces_blank_lines_and_other_fio_versions(tmp_path):
    path = tmp_path / "job_bw.log"
    path.write_text("100, 13312, 1, 131072, 0   \n\n"       # fio 3.20+, trailing spaces
                    "200,13184,1,131072\n"                   # fio < 3.20
                    "300, 13440, 1, 131072, 0, 0x0000, 12345\n")  # offset, log_prio, issue time
    assert fiolog.read_log(path) == [Sample(100, 13312.0, 1), Sample(200, 13184.0, 1),
                                     Sample(300, 13440.0, 1)]


@pytest.mark.parametrize("line", ["300, fast, 1, 131072, 0", "300, 13440", "300 13440 1 131072 0",
                                  "300, 13440, 1, 131072, 0, 0, 0, 0", "3.5, 13440, 1, 131072, 0"])
def test_a_malformed_line_names_the_file_and_line(tmp_path, line):
    path = tmp_path / "job_bw.log"
    path.write_text(f"100, 13312, 1, 131072, 0\n\n{line}\n400, 13312, 1, 131072, 0\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:3: not a fio log line "
                                         rf".*{re.escape(repr(line))}$"):
        fiolog.read_log(path)


def test_merge_sums_the_jobs_per_window():
    merged = fiolog.merge(JOBS)
    assert [s.time_ms for s in merged] == list(range(100, 3100, 100))
    by_time = {s.time_ms: s.value for s in merged}
    assert by_time[100] == 6720 + 6624
    assert by_time[1300] == 6720 + 6624          # job 2 logged it at 1299 ms
    assert by_time[1500] == 6656                  # job 2 logged nothing in that window
    assert {s.direction for s in merged} == {WRITE}


def test_merge_of_the_shared_log_splits_it_into_its_jobs():
    shared = DATA / "randwrite_bw.log"
    assert fiolog.merge([shared]) == fiolog.merge(JOBS)
    assert fiolog.timeline(fiolog.read_log(shared)) == fiolog.timeline(fiolog.merge(JOBS))


def test_timeline_counts_missing_windows_as_zero():
    timeline = gap_timeline()
    assert (timeline.start_ms, timeline.interval_ms, len(timeline.values)) == (100, 100, 100)
    assert timeline.values[40] == 6400                       # 4.1 s
    assert timeline.values[41:53] == (0.0,) * 12             # 4.2 s to 5.3 s: no line
    assert timeline.values[53] == 512                        # 5.4 s
    assert timeline.values[-1] == (13184 + 13056) / 2        # the final flush's repeat
    assert timeline.times_s[:2] == (0.1, 0.2) and timeline.times_s[-1] == 10.0


def test_timeline_keeps_one_direction():
    samples = fiolog.read_log(DATA / "verify-offset_bw.log")
    writes, reads = fiolog.timeline(samples, direction=1), fiolog.timeline(samples, direction=0)
    assert (writes.start_ms, len(writes.values)) == (100, 5)
    assert (reads.start_ms, reads.values) == (600, (27392.0, 27520.0, 27648.0, 27776.0))
    assert len(fiolog.timeline(samples).values) == 9
    assert fiolog.timeline([]) == Timeline(0, 100, ())


def test_a_gap_stall_and_the_recovery():
    impact = fiolog.analyse(gap_timeline(), 4.0, 6.0)
    assert impact.baseline == pytest.approx(13303.47, abs=0.01)     # the samples' mean
    assert impact.longest_stall_s == pytest.approx(1.3, abs=0.01)
    assert impact.stall_start_s == pytest.approx(4.1, abs=0.01)
    assert not impact.stall_at_end
    assert impact.during == 0                      # stalled for 13 of the 20 windows
    # the 6.6-6.8 s dip under 90 % is inside a second whose mean is above it
    assert impact.recovery_s == pytest.approx(0.1, abs=0.01)
    assert impact.recovered and impact.reason is None


def test_uneven_samples_recover_at_their_mean():
    # verify's writes and reads alternate: the 100 ms samples are uneven, their median
    # above their mean; back at the mean is back (as the run's live check sees it)
    uneven = (5000.0, 5000.0, 5000.0, 500.0) * 5
    timeline = Timeline(100, 100, uneven + (0.0,) * 10 + uneven)
    impact = fiolog.analyse(timeline, 2.0, 3.0, 0.8)
    assert impact.baseline == pytest.approx(3650.0)      # the median would be 5000
    assert impact.recovered and impact.reason is None


def test_zeros_stall_like_gaps_and_no_recovery():
    impact = fiolog.analyse(fiolog.timeline(fiolog.read_log(ZEROS)), 4.0, 6.0)
    assert (impact.longest_stall_s, impact.stall_start_s) == pytest.approx((1.3, 4.1), abs=0.01)
    assert not impact.recovered and impact.recovery_s is None
    assert impact.reason == "not back to 90% for 1 s before the log ends"
    assert fiolog.analyse(fiolog.timeline(fiolog.read_log(ZEROS)), 4.0, 6.0, 0.6).recovery_s == 0


def test_the_first_second_is_left_out_of_the_baseline_when_a_second_remains():
    timeline = Timeline(100, 100, (1000.0,) * 10 + (2000.0,) * 10 + (0.0,) * 5 + (2000.0,) * 10)
    assert fiolog.analyse(timeline, 2.0, 2.5).baseline == 2000
    assert fiolog.analyse(timeline, 1.9, 2.5).baseline == pytest.approx(28000 / 19)   # all 19
    assert fiolog.analyse(timeline, 2.0, 2.5).longest_stall_s == pytest.approx(0.5)


def test_bounds_a_window_at_5_percent_stalls_one_ending_at_the_fault_start_is_before():
    timeline = Timeline(100, 100, (2000.0,) * 20 + (100.0,) + (101.0,) + (2000.0,) * 20)
    impact = fiolog.analyse(timeline, 2.0, 2.1)
    assert (impact.longest_stall_s, impact.stall_start_s) == (0.1, 2.0)
    assert impact.during == 100


def test_no_stall_and_no_drop_recover_at_once():
    impact = fiolog.analyse(Timeline(100, 100, (2000.0,) * 50), 2.0, 3.0)
    assert (impact.longest_stall_s, impact.stall_start_s, impact.recovery_s) == (0, None, 0)
    assert impact.during == 2000


def test_no_samples_before_the_fault():
    impact = fiolog.analyse(gap_timeline(), 0.0, 2.0)
    assert impact.baseline is None
    assert (impact.longest_stall_s, impact.stall_start_s, impact.recovery_s) == (None, None, None)
    assert not impact.recovered and impact.reason == "no samples before the fault"
    assert fiolog.analyse(Timeline(0, 100, ()), 1.0, 2.0).reason == "no samples before the fault"


def test_no_io_before_the_fault():
    impact = fiolog.analyse(Timeline(100, 100, (0.0,) * 20 + (2000.0,) * 20), 1.5, 2.0)
    assert impact.baseline == 0 and impact.longest_stall_s is None
    assert impact.reason == "no I/O before the fault"


def test_a_log_that_ends_during_the_fault():
    impact = fiolog.analyse(gap_timeline(until_ms=5401), 4.0, 6.0)
    assert (impact.longest_stall_s, impact.stall_start_s) == pytest.approx((1.3, 4.1), abs=0.01)
    assert impact.stall_at_end
    assert not impact.recovered and impact.reason == "the log ends during the fault"


def test_fault_times_must_be_in_order():
    with pytest.raises(ValueError, match="ends"):
        fiolog.analyse(gap_timeline(), 6.0, 4.0)


def test_describe():
    zeros = fiolog.timeline(fiolog.read_log(ZEROS))
    assert [fiolog.describe(fiolog.analyse(timeline, *fault)) for timeline, fault in [
        (gap_timeline(), (4.0, 6.0)), (zeros, (4.0, 6.0)), (zeros, (2.0, 2.5)),
        (gap_timeline(until_ms=5401), (4.0, 6.0)), (gap_timeline(), (0.0, 0.4))]] == [
        "stall 1.3 s (from 4.1 s), during fault 0% of baseline 13.0 MiB/s, "
        "back to 90% 0.1 s after the fault ended",
        "stall 1.3 s (from 4.1 s), during fault 0% of baseline 13.0 MiB/s, "
        "not back to 90% for 1 s before the log ends",
        "stall 1.3 s (from 4.1 s), during fault 100% of baseline 13.0 MiB/s, "
        "back to 90% 0.0 s after the fault ended",
        "stall 1.3 s (from 4.1 s, until the log ends), during fault 0% of baseline 13.0 MiB/s, "
        "the log ends during the fault",
        "no baseline (no samples before the fault), during fault 10.9 MiB/s",  # ramp-up
    ]


def test_describe_a_partial_drop_and_a_fault_between_windows():
    timeline = Timeline(100, 100, (13414.4,) * 40 + (6036.5,) * 20 + (13414.4,) * 40)
    assert fiolog.describe(fiolog.analyse(timeline, 4.0, 6.0)) == (
        "no stall, during fault 45% of baseline 13.1 MiB/s, back to 90% 0.0 s after the fault ended")
    assert fiolog.describe(fiolog.analyse(timeline, 7.94, 7.96)) == (
        "no stall, no window within the fault, back to 90% 0.0 s after the fault ended")


def png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_chart_writes_a_png(tmp_path):
    series = {name: (timeline.times_s, [v / 1024 for v in timeline.values])
              for name, timeline in (("tcp 4 paths", gap_timeline()),
                                     ("mptcp", fiolog.timeline(fiolog.read_log(ZEROS))))}
    path = timeline_chart.chart(series, (4.0, 6.0), tmp_path / "fault.png", "link down 4-6 s")
    assert path == tmp_path / "fault.png"
    assert png_size(path) == (9 * 120, 4 * 120)

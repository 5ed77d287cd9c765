"""A series judged end to end: applied, both kernels built (cached), the same selection
run on each, compared, and the verdict written. 'mptcp-nvme series' and the patchwork
bot both call judge()."""

from mptcp_nvme.errors import SeriesRejected
from mptcp_nvme.host.series import build, compare, patches, verdict


def judge(series, out, selection, jobs=None, matrix=None):
    """Judge ``series`` (patches.Series, resolved into ``out``/input) with the selection
    (``mptcp-nvme run`` arguments); writes the verdict folder ``out`` and returns its
    results.json document (verdict.document() or verdict.rejected()'s). ``matrix``
    (``mptcp-nvme matrix`` arguments) also measures base+series against the base, into
    ``out``/matrix, when the selection found nothing new broken."""
    try:
        patches.check_applies(series, out / "input")
        base, _ = build.build_base(series, out / "build-base.log", jobs)
        patched, _ = build.build_series(series, base, out / "build-series.log", jobs)
    except SeriesRejected as err:
        return verdict.rejected(out, series, str(err))
    runs = {"base": compare.run_selection(base, out / "base", selection),
            "series": compare.run_selection(patched, out / "series", selection)}
    changes = compare.compare(runs["base"], runs["series"])
    code = compare.exit_code(changes)
    measured = None
    if matrix is not None and not code:
        ran = compare.run_matrix(patched, base, out / verdict.MATRIX, matrix)
        measured = verdict.matrix_summary(out, ran)
    return verdict.write(out, series, runs, changes, code, measured)

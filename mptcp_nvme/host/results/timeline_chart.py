"""A chart of fio bandwidth timelines around a fault, one line per run."""

from matplotlib.figure import Figure


def chart(series, fault_window, path, title):
    """A PNG at ``path`` of ``series`` ({label: (times in s, MiB/s)}) over seconds, the
    fault window (start_s, end_s) shaded: ``path``.

    Each value is drawn over the window it averages (it is logged at the window's end).
    """
    fig = Figure(figsize=(9, 4))
    ax = fig.add_subplot()
    start_s, end_s = fault_window
    ax.axvspan(start_s, end_s, color="tab:red", alpha=0.15, label="fault")
    for label, (times, values) in series.items():
        ax.plot(times, values, label=label, drawstyle="steps-pre", linewidth=1.2)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("MiB/s")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    return path

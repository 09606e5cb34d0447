"""The SLO panel of bench/slo_plot.py, drawn with matplotlib: requests by status class, the two
SLIs on a "nines" axis, their burn rates against the page thresholds, and the alert timeline,
with the outage and overload phases shaded on every row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the records of a run; bench.slo_plot imports this module, not the reverse
    from bench.slo_plot import Alert, Series, Span

# The objectives of deploy/prometheus/rules/slo-alerts.yml: the burn rate is error ratio / budget.
BUDGET = {"availability": 0.001, "latency": 0.01}
OBJECTIVE_LABEL = {"availability": "99.9 % without a 5xx", "latency": "99 % under 300 ms"}
# The page thresholds of the two fast-burn pairs (1h+5m and 6h+30m).
THRESHOLDS = ((14.4, "14.4x: page (1h and 5m)"), (6.0, "6x: page (6h and 30m)"))


def _nines(values: Any) -> Any:
    import numpy as np

    return -np.log10(np.clip(1 - np.asarray(values, dtype=float), 1e-5, 1))


def _from_nines(values: Any) -> Any:
    import numpy as np

    return 1 - 10 ** -np.asarray(values, dtype=float)


def draw(
    path: Path,
    spans: Sequence[Span],
    series: dict[str, Series],
    found: Sequence[Alert],
    title: str,
    caption: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = spans[0].start
    fig = plt.figure(figsize=(14, 13.5))
    grid = fig.add_gridspec(
        4, 2, height_ratios=[1, 1.5, 1.5, 1.7], hspace=0.45, wspace=0.2, top=0.885, bottom=0.1
    )
    traffic = fig.add_subplot(grid[0, :])
    sli = [fig.add_subplot(grid[1, i], sharex=traffic) for i in range(2)]
    burn = [fig.add_subplot(grid[2, i], sharex=traffic) for i in range(2)]
    timeline = fig.add_subplot(grid[3, :], sharex=traffic)
    _traffic(traffic, series, t0)
    for axis, slo in zip(sli, BUDGET, strict=True):
        _sli(axis, slo, series, t0)
    for axis, slo in zip(burn, BUDGET, strict=True):
        _burn(axis, slo, series, t0)
    _timeline(timeline, found, t0)
    for axis in (traffic, *sli, *burn, timeline):
        for span in spans:
            if span.phase.kind != "healthy":
                colour = "#d62728" if span.phase.kind == "outage" else "#ff7f0e"
                axis.axvspan(span.start - t0, span.end - t0, color=colour, alpha=0.10, lw=0)
        axis.grid(alpha=0.3)
    for span in spans:
        mid = (span.start + span.end) / 2 - t0
        traffic.annotate(
            span.phase.name, (mid, 1.03), xycoords=("data", "axes fraction"),
            ha="center", va="bottom", fontsize=9, style="italic",
        )  # fmt: skip
    traffic.set_xlim(0, spans[-1].end - t0 + 5)
    timeline.set_xlabel("seconds since the load started")
    fig.suptitle(title, fontsize=13, y=0.985)
    fig.text(0.5, 0.035, caption, ha="center", va="top", fontsize=9, wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _rel(series: Series, t0: float) -> tuple[list[float], list[float]]:
    times, values = series
    return [t - t0 for t in times], values


def _traffic(axis: Any, series: dict[str, Series], t0: float) -> None:
    colours = {"2xx": "#2e8b57", "4xx": "#888888", "5xx": "#d62728"}
    for cls, colour in colours.items():
        if f"requests {cls}" in series:
            axis.plot(*_rel(series[f"requests {cls}"], t0), color=colour, lw=1.2, label=cls)
    axis.set_ylabel("requests/s")
    axis.set_title("Requests per second by status class (health routes excluded; 5 s rate)", pad=22)
    axis.legend(loc="upper left", fontsize=8, ncol=3)


NINES = {0.0: "0 %", 0.9: "90 %", 0.99: "99 %", 0.999: "99.9 %", 0.9999: "99.99 %"}


def _sli(axis: Any, slo: str, series: dict[str, Series], t0: float) -> None:
    """A "nines" axis: 90 %, 99 %, 99.9 % equally apart, 100 % drawn at 99.999 %."""
    from matplotlib.ticker import FixedFormatter, FixedLocator

    axis.set_yscale("function", functions=(_nines, _from_nines))
    axis.yaxis.set_major_locator(FixedLocator([*NINES, 0.99999]))
    axis.yaxis.set_major_formatter(FixedFormatter([*NINES.values(), "100 %"]))
    axis.set_ylim(0, 0.99999)
    for window, lw, alpha in (("10s", 0.8, 0.5), ("5m", 2.0, 1.0)):
        if f"{slo} {window}" in series:
            times, values = _rel(series[f"{slo} {window}"], t0)
            axis.plot(times, values, color="#1f77b4", lw=lw, alpha=alpha, label=f"{window} window")
    objective = 1 - BUDGET[slo]
    axis.axhline(objective, color="#d62728", ls="--", lw=1.2, label=f"objective {NINES[objective]}")
    axis.set_title(f"{slo.capitalize()} SLI ({OBJECTIVE_LABEL[slo]})")
    axis.legend(loc="lower left", fontsize=8)


def _burn(axis: Any, slo: str, series: dict[str, Series], t0: float) -> None:
    """The 5m window; 30m and 1h too when they differ from it (runs longer than 5 minutes)."""
    short = series.get(f"{slo} burn 5m")
    same = []
    for window, dash in (("5m", "-"), ("30m", "--"), ("1h", ":")):
        line = series.get(f"{slo} burn {window}")
        if line is None:
            continue
        if window != "5m" and short is not None and _same(line, short):
            same.append(window)
            continue
        lw = 2.0 if window == "5m" else 1.2
        axis.plot(*_rel(line, t0), ls=dash, lw=lw, label=f"{window} window")
    for value, label in THRESHOLDS:
        colour = "#d62728" if value > 10 else "#ff7f0e"
        axis.axhline(value, color=colour, lw=1, ls="--", label=label)
    axis.set_yscale("symlog", linthresh=1)
    peak = max((v for v in (short[1] if short else []) if math.isfinite(v)), default=0.0)
    axis.set_ylim(0, max(peak, THRESHOLDS[0][0]) * 2)
    note = f"\n{' and '.join(same)} windows: the same line (all hold the whole run)" if same else ""
    axis.set_title(f"{slo.capitalize()} burn rate (error ratio / {BUDGET[slo]}){note}")
    axis.legend(loc="lower right", fontsize=8)


def _same(a: Series, b: Series) -> bool:
    """Within 1 %: the same line on the plot's log scale."""
    pairs = dict(zip(*b, strict=True))
    return all(
        abs(v - pairs[t]) <= 0.01 * max(1.0, abs(v))
        for t, v in zip(*a, strict=True)
        if t in pairs and math.isfinite(v) and math.isfinite(pairs[t])
    )


def _timeline(axis: Any, found: Sequence[Alert], t0: float) -> None:
    labels = []
    for row, alert in enumerate(reversed(found)):
        name = " ".join(filter(None, [alert.name.removeprefix("Conduit"), alert.detail]))
        labels.append(f"{name} ({alert.severity})")
        colour = "#d62728" if alert.severity == "page" else "#ff7f0e"
        for state, alpha in (("pending", 0.35), ("firing", 0.9)):
            bars = [(a - t0, b - a) for a, b in alert.intervals.get(state, [])]
            hatch = "//" if state == "pending" else None
            axis.broken_barh(bars, (row - 0.35, 0.7), color=colour, alpha=alpha, hatch=hatch)
    axis.set_yticks(range(len(labels)), labels, fontsize=8)
    axis.set_ylim(-0.6, len(labels) - 0.4)
    axis.set_title("Alerts (ALERTS series): hatched pending, solid firing; red page, amber ticket")

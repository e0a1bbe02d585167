"""The benchmarks' pictures: SVG files next to benchmarks/README.md, drawn with matplotlib.

matplotlib is a benchmarks-only dependency (``pip install 'lbclient[bench]'``); it is imported
when a chart is drawn, so the benchmarks still run and print their tables without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            "drawing the benchmark charts needs matplotlib: pip install 'lbclient[bench]'"
        ) from None
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "lbclient"  # stable ids: diffs show data changes only
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text (small, searchable files)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, name: str) -> Path:
    path = HERE / name
    fig.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None})
    return path


def latency_distributions(name: str, runs: Mapping[str, Sequence[float]], title: str) -> Path:
    """Per run, the share of requests slower than each latency (log-log), so that the tail
    (p99, p99.9), where schedulers differ, is as visible as the median."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(8, 4.5))
    # About 400 points per curve, denser in the tail; every sample would make a megabyte of SVG.
    levels = [i / 200 * 0.9 for i in range(200)] + [
        0.9 + 0.1 * (1 - 10 ** (-i / 50)) for i in range(201)
    ]
    for label, latencies in runs.items():
        ordered = sorted(x * 1000 for x in latencies)
        last = len(ordered) - 1
        points = sorted(
            {(ordered[round(q * last)], 1 - q) for q in levels if 1 - q >= 1 / len(ordered)},
            key=lambda point: (point[0], -point[1]),  # a run of equal latencies drops vertically
        )
        ax.plot([x for x, _ in points], [y for _, y in points], label=label, linewidth=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value * 100:g}%"))
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("share of requests slower (log scale)")
    for share, name_ in ((0.5, "p50"), (0.01, "p99"), (0.001, "p99.9")):
        ax.axhline(share, color="grey", linewidth=0.6, linestyle=":")
        ax.annotate(name_, (1.0, share), xycoords=("axes fraction", "data"),
                    xytext=(3, -3), textcoords="offset points", fontsize=8)  # fmt: skip
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(True, which="both", linewidth=0.3)
    return _save(fig, name)


def failover_timelines(
    name: str,
    runs: Sequence[tuple[str, Mapping[str, Sequence[float]], Sequence[float]]],
    kill_at: float,
    restart_at: float,
    *,
    bin_seconds: float = 0.25,
) -> Path:
    """Per configuration: attempts per second on each backend over time, failed requests,
    and the kill and restart marked. ``runs``: (label, {backend: attempt times}, failure
    times), times in seconds since the start of the run."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.3 * len(runs)), sharex=True)
    end = max([max(t, default=0.0) for _, backends, _ in runs for t in backends.values()] + [1.0])
    edges = [i * bin_seconds for i in range(int(end / bin_seconds) + 2)]
    for ax, (label, backends, failures) in zip(axes, runs, strict=True):
        # Each run ends when it has seen what it waits for: draw only up to its own end.
        mine = edges[: int(max([max(t, default=0.0) for t in backends.values()]) / bin_seconds)]
        for backend, times in sorted(backends.items()):
            counts, _ = _histogram(times, edges)
            ax.plot(mine, [c / bin_seconds for c in counts[: len(mine)]], label=backend,
                    linewidth=1)  # fmt: skip
        counts, _ = _histogram(failures, edges)
        if any(counts):
            ax.bar(edges[:-1], [c / bin_seconds for c in counts], width=bin_seconds,
                   align="edge", color="red", alpha=0.5, label="failed requests")  # fmt: skip
        ax.axvspan(kill_at, restart_at, color="grey", alpha=0.15)
        ax.axvline(kill_at, color="black", linewidth=0.8)
        ax.axvline(restart_at, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(label, fontsize=9, loc="left")
        ax.set_ylim(bottom=0)
        ax.set_ylabel("per s", fontsize=8)
        ax.grid(True, linewidth=0.3)
    axes[0].legend(loc="upper right", fontsize=7, ncol=3)
    axes[0].annotate("kill", (kill_at, 1.0), xycoords=("data", "axes fraction"),
                     xytext=(2, -10), textcoords="offset points", fontsize=8)  # fmt: skip
    axes[0].annotate("restart", (restart_at, 1.0), xycoords=("data", "axes fraction"),
                     xytext=(2, -10), textcoords="offset points", fontsize=8)  # fmt: skip
    axes[-1].set_xlabel("seconds since the start of the run")
    fig.suptitle("Attempts per backend around a crash (backend b0 down in the grey band)")
    return _save(fig, name)


def _histogram(values: Sequence[float], edges: Sequence[float]) -> tuple[list[int], list[float]]:
    counts = [0] * (len(edges) - 1)
    width = edges[1] - edges[0]
    for value in values:
        index = int(value / width)
        if 0 <= index < len(counts):
            counts[index] += 1
    return counts, list(edges)


def pick_cost(name: str, sizes: Sequence[int], nanoseconds: Mapping[str, Sequence[float]]) -> Path:
    """Nanoseconds per pick against the number of instances, one line per scheduler."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    styles = ["-", "--", ":", "-."]
    for index, (label, values) in enumerate(sorted(nanoseconds.items())):
        ax.plot(sizes, values, marker="o", markersize=3, linewidth=1,
                linestyle=styles[index // 10 % len(styles)], label=label)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(sizes), [f"{s:,}" for s in sizes])
    ax.set_xlabel("instances in the usable list (log scale)")
    ax.set_ylabel("CPU time per pick (ns, log scale)")
    ax.set_title("Pick cost per scheduler")
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, name)

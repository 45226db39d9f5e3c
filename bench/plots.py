"""PNG plots of a run, drawn with matplotlib (Agg) from the figures each benchmark describes:

- "throughput": panels {title: {series: [(clients, median, min, max), ...]}}, optional
  "refs" {label: value} drawn as horizontal lines (the machine's limits);
- "latency": panels {title: {series: {clients: (p50, p90, p99)}}}, log scale;
- "distribution": panels {title: {series: [values]}}, every value and the median;
- "bars": panels {title: {series: {category: (median, min, max)}}}, grouped bars with min–max
  whiskers, optional "refs" as for "throughput";
- "timeline": panels {title: {series: [(t, value), ...]}} drawn as lines over time, optional
  "refs" as for "throughput", optional "xlabel".
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

COLORS = {"gfs": "tab:blue", "etcd": "tab:orange"}
PALETTE = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
           "tab:pink", "tab:gray", "tab:olive", "tab:cyan"]


def _color(series: str, i: int) -> str:
    return COLORS.get(series, PALETTE[i % len(PALETTE)])


def _grid(plt, n: int, title: str):
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    fig.suptitle(title)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _clients_axis(ax, xs: list[int]) -> None:
    if len(set(xs)) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(xs)))
    ax.set_xticklabels([str(x) for x in sorted(set(xs))])
    ax.set_xlabel("clients")


def _refs(ax, fig_spec: dict, title: str) -> None:
    """The panel's reference values as dashed horizontal lines."""
    for j, (label, value) in enumerate(fig_spec.get("refs", {}).get(title, {}).items()):
        ax.axhline(value, linestyle="--", linewidth=1, color=PALETTE[-1 - j], label=label)


def _category_axis(ax, labels: list[str]) -> None:
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)


def _labels(ax, ylabel: str, title: str, **grid) -> None:
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, **grid)


def _each_panel(plt, fig_spec: dict, path: Path) -> Iterator[tuple[Any, str, dict]]:
    """(axes, title, series) of every panel of a figure; saved to `path` after the last."""
    panels = fig_spec["panels"]
    fig, axes = _grid(plt, len(panels), fig_spec["title"])
    for ax, (title, series) in zip(axes, panels.items()):
        yield ax, title, series
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def throughput(plt, fig_spec: dict, path: Path) -> None:
    for ax, title, series in _each_panel(plt, fig_spec, path):
        xs = []
        for i, (name, pts) in enumerate(series.items()):
            pts = sorted(pts)
            x = [p[0] for p in pts]
            xs += x
            med = [p[1] for p in pts]
            err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
            ax.errorbar(x, med, yerr=err, marker="o", capsize=3, label=name, color=_color(name, i))
        _refs(ax, fig_spec, title)
        _clients_axis(ax, xs)
        ax.set_ylim(bottom=0)
        _labels(ax, fig_spec["ylabel"], title)
        ax.legend(fontsize="small")


def latency(plt, fig_spec: dict, path: Path) -> None:
    styles = {"p50": "-", "p90": "--", "p99": ":"}
    for ax, title, series in _each_panel(plt, fig_spec, path):
        xs = []
        for i, (name, by_clients) in enumerate(series.items()):
            x = sorted(by_clients)
            xs += x
            for k, (label, style) in enumerate(styles.items()):
                ax.plot(x, [by_clients[c][k] for c in x], style, marker="o", markersize=3,
                        color=_color(name, i), label=f"{name} {label}")
        _clients_axis(ax, xs)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(plt.NullFormatter())
        _labels(ax, "ms", title, which="both")
        ax.legend(fontsize="x-small")


def distribution(plt, fig_spec: dict, path: Path) -> None:
    for ax, title, series in _each_panel(plt, fig_spec, path):
        for i, (name, values) in enumerate(series.items()):
            ax.scatter([i] * len(values), values, color=_color(name, i), alpha=0.7)
            if values:
                med = statistics.median(values)
                ax.hlines(med, i - 0.25, i + 0.25, color=_color(name, i))
        _category_axis(ax, list(series))
        ax.set_xlim(-0.6, len(series) - 0.4)
        ax.set_ylim(bottom=0)
        _labels(ax, fig_spec.get("ylabel", "s"), title, axis="y")


def bars(plt, fig_spec: dict, path: Path) -> None:
    for ax, title, series in _each_panel(plt, fig_spec, path):
        categories = list(dict.fromkeys(c for values in series.values() for c in values))
        width = 0.8 / max(1, len(series))
        for i, (name, values) in enumerate(series.items()):
            x = [categories.index(c) + (i - (len(series) - 1) / 2) * width for c in values]
            med = [v[0] for v in values.values()]
            err = [[v[0] - v[1] for v in values.values()], [v[2] - v[0] for v in values.values()]]
            ax.bar(x, med, width, yerr=err, capsize=3, label=name, color=_color(name, i))
        _refs(ax, fig_spec, title)
        _category_axis(ax, categories)
        _labels(ax, fig_spec["ylabel"], title, axis="y")
        ax.legend(fontsize="small")


def timeline(plt, fig_spec: dict, path: Path) -> None:
    for ax, title, series in _each_panel(plt, fig_spec, path):
        for i, (name, points) in enumerate(series.items()):
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name,
                    color=_color(name, i))
        _refs(ax, fig_spec, title)
        ax.set_xlabel(fig_spec.get("xlabel", "s"))
        ax.set_ylim(bottom=0)
        _labels(ax, fig_spec["ylabel"], title)
        ax.legend(fontsize="small")


KINDS = {"throughput": throughput, "latency": latency, "distribution": distribution,
         "bars": bars, "timeline": timeline}


def render(payload: dict, out: Path, stem: str) -> dict[str, list[str]]:
    """Draw every figure of every benchmark that ran; {benchmark: [file names]}."""
    from bench import suite
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        note = "plots skipped: matplotlib is not installed (./run.sh setup installs it)"
        print(f"bench: {note}")
        payload["notes"].append(note)
        return {}
    images: dict[str, list[str]] = {}
    for name, res in payload["suites"].items():
        if "error" in res:
            continue
        for fig_spec in suite.module(name).figures(res, payload["refs"]):
            if not any(fig_spec["panels"].values()):
                continue
            path = out / f"{stem}-{fig_spec['name']}.png"
            KINDS[fig_spec["kind"]](plt, fig_spec, path)
            images.setdefault(name, []).append(path.name)
    return images

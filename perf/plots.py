"""Speedup bar charts in the style of the SySTeC paper: one panel per kernel, bars per data set,
one bar colour per peer, a dashed line at 1x (above it the symmetric kernel wins)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and the Docker image have no display

import matplotlib.pyplot as plt  # noqa: E402


def speedup_plots(rows: list[dict], out: Path, title: str = "") -> dict[str, Path]:
    """Write speedups.png (all kernels) and speedup-<kernel>.png; returns name -> path."""
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    peers = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "systec symmetric"))
    colours = {p: plt.cm.tab10(i % 10) for i, p in enumerate(peers)}
    paths: dict[str, Path] = {}

    def panel(ax, kernel: str) -> None:
        sub = [r for r in rows if r["kernel"] == kernel and r["method"] != "systec symmetric"]
        data = list(dict.fromkeys(r["data"] for r in sub))
        methods = [p for p in peers if any(r["method"] == p for r in sub)]
        width = 0.8 / max(len(methods), 1)
        for j, m in enumerate(methods):
            xs, ys = [], []
            for i, d in enumerate(data):
                r = next((r for r in sub if r["data"] == d and r["method"] == m), None)
                if r is not None and r["speedup"] is not None and math.isfinite(r["speedup"]):
                    xs.append(i + (j - (len(methods) - 1) / 2) * width)
                    ys.append(r["speedup"])
            ax.bar(xs, ys, width, color=colours[m], label=m)
        ax.axhline(1.0, color="k", linestyle="--", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(data)))
        ax.set_xticklabels(data, rotation=30, ha="right", fontsize=7)
        ax.set_title(kernel)
        ax.set_ylabel("speedup of symmetric kernel")

    for k in kernels:
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len({r['data'] for r in rows if r['kernel'] == k})), 3.5))
        panel(ax, k)
        ax.legend(fontsize=6)
        fig.suptitle(title, fontsize=8)
        fig.tight_layout()
        paths[f"plot-{k}"] = out / f"speedup-{k}.png"
        fig.savefig(paths[f"plot-{k}"], dpi=110)
        plt.close(fig)

    cols = min(3, len(kernels))
    nrows = math.ceil(len(kernels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.6 * nrows), squeeze=False)
    for ax, k in zip(axes.flat, kernels, strict=False):
        panel(ax, k)
    for ax in list(axes.flat)[len(kernels):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[p]) for p in peers]
    fig.legend(handles, peers, loc="lower center", ncol=min(4, len(peers)), fontsize=7)
    fig.suptitle(f"systec_gpu: symmetric kernel speedup over peers — {title}", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    paths["plot"] = out / "speedups.png"
    fig.savefig(paths["plot"], dpi=110)
    plt.close(fig)
    return paths

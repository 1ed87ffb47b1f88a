#!/usr/bin/env python3
"""Plots `cargo xtask perf`'s JSON: IOPS against queue depth for our driver
and libblkio's on vblk-fastdev (one line per queue count, the median of the
runs with the min-max range as error bars), and, beside it, the one-queue
rate while the pipeline ran (iodepth / median p50, Little's law), each with
the idealised ring between two threads (threaded/limit). Log-log axes.

    scripts/plot-perf.py target/perf/perf.json docs/perf_iops_vs_qd.png

matplotlib is installed into target/plot-venv on first use (as results.py does).
"""

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import depth_axes, ensure_matplotlib  # noqa: E402

STYLES = {"ours": ("virtio-blk-mq", "o-"), "libblkio": ("libblkio", "s--")}


def series(points, side, queues):
    rows = sorted((p["iodepth"], [r["iops"] for r in p[side]]) for p in points if p["queues"] == queues)
    depths = [d for d, _ in rows]
    medians = [statistics.median(v) / 1e6 for _, v in rows]
    low = [m - min(v) / 1e6 for m, (_, v) in zip(medians, rows)]
    high = [max(v) / 1e6 - m for m, (_, v) in zip(medians, rows)]
    return depths, medians, [low, high]


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot-perf.py PERF.json OUT.png")
    ensure_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(Path(sys.argv[1]).read_text())
    points = report["compare"]["points"]
    fig, (ax, rates) = plt.subplots(1, 2, figsize=(13, 4.8))
    for queues in sorted({p["queues"] for p in points}):
        for side, (name, style) in STYLES.items():
            depths, medians, errors = series(points, side, queues)
            ax.errorbar(depths, medians, yerr=errors, fmt=style, capsize=3,
                        label=f"{name}, {queues} queue{'s' if queues > 1 else ''}")
    limit = sorted((p["iodepth"], p["iops"] / 1e6) for p in report.get("ring_limit", []))
    if limit:
        ax.plot([d for d, _ in limit], [v for _, v in limit], "k:", marker="x",
                label="idealised ring, 1 queue (threaded/limit)")
    # Little's law: qd / p50 is the rate while the pipeline ran, which
    # preemption on a busy machine barely moves (one queue only).
    for side, (name, style) in STYLES.items():
        rows = sorted((p["iodepth"], statistics.median(r["p50_ns"] for r in p[side]))
                      for p in points if p["queues"] == 1)
        if rows:
            rates.plot([d for d, _ in rows], [d / ns * 1e3 for d, ns in rows], style,
                       label=f"{name}, 1 queue")
    if limit:
        rates.plot([d for d, _ in limit], [v for _, v in limit], "k:", marker="x",
                   label="idealised ring, 1 queue (threaded/limit)")
    ax.set_title("IOPS (median of runs, min-max bars)")
    rates.set_title("rate while running: iodepth / p50 latency")
    for axis in (ax, rates):
        axis.set_yscale("log")
    depth_axes((ax, rates), grid_which="both", legend_size=8)
    fig.suptitle("vhost-user on vblk-fastdev: ours vs libblkio, and the ring limit")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()

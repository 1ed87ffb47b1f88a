#!/usr/bin/env python3
"""Turns benchmark output into the README's results: a table and a PNG plot.

Reads criterion's estimates (target/criterion/**/new/{benchmark,estimates}.json)
for the inline benches (rings/*, peers/*) and the threaded benches, and runs
the bench CLI over a queue-depth sweep against the threaded sim. Writes
docs/results.md (markdown tables) and docs/iops_vs_qd.png.

    scripts/results.py              # run the benches and the sweep, then plot
    scripts/results.py --no-bench   # plot from criterion output already there

matplotlib is installed into target/plot-venv on first use.
"""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CRITERION = ROOT / "target" / "criterion"
VENV = ROOT / "target" / "plot-venv"
SWEEP_DEPTHS = [1, 2, 4, 8, 16, 32, 64, 128]


def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401

        return
    except ImportError:
        pass
    python = VENV / "bin" / "python3"
    if os.environ.get("RESULTS_IN_VENV") != "1":
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "matplotlib"], check=True)
        env = dict(os.environ, RESULTS_IN_VENV="1")
        os.execve(str(python), [str(python), *sys.argv], env)
    sys.exit("matplotlib is missing and could not be installed")


def run(cmd):
    print("+", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout


def criterion_estimates():
    """Maps a criterion id (e.g. rings/split/qd32) to nanoseconds per request."""
    out = {}
    for bench in CRITERION.glob("**/new/benchmark.json"):
        full_id = json.loads(bench.read_text())["full_id"]
        estimates = json.loads((bench.parent / "estimates.json").read_text())
        out[full_id] = estimates["mean"]["point_estimate"]
    return out


def depth_of(bench_id):
    match = re.search(r"qd(\d+)$", bench_id)
    return int(match.group(1)) if match else None


def cli_sweep(runtime):
    """IOPS and kicks/IO of the CLI per (ring, depth), threaded sim, one queue."""
    binary = ROOT / "target" / "release" / "vblk-bench"
    run(["cargo", "build", "--release", "-q", "-p", "vblk-bench"])
    rows = {}
    for ring in ["split", "packed"]:
        for depth in SWEEP_DEPTHS:
            report = json.loads(
                run([str(binary), "--ring", ring, "--iodepth", str(depth), "--runtime",
                     str(runtime), "--output-format", "json"])
            )
            rows[(ring, depth)] = (
                report["jobs"][0]["read"]["iops"],
                report["jobs"][0]["read"]["clat_ns"]["percentile"]["50.000000"],
                report["jobs"][0]["read"]["clat_ns"]["percentile"]["99.000000"],
                report["vblk"]["kicks_per_io"],
            )
    return rows


def series(estimates, prefix):
    points = sorted(
        (depth_of(i), 1e9 / ns) for i, ns in estimates.items() if i.startswith(prefix) and depth_of(i)
    )
    return [d for d, _ in points], [v for _, v in points]


def depth_axes(axes, grid_which="major", legend_size=None):
    """Log2 queue-depth x axes in millions of 4 KiB reads/s, gridded, with legends."""
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("queue depth")
        ax.set_ylabel("million 4 KiB reads / s")
        ax.grid(True, which=grid_which, alpha=0.3)
        ax.legend(fontsize=legend_size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-bench", action="store_true", help="use criterion output already there")
    parser.add_argument("--runtime", type=float, default=2.0, help="seconds per CLI sweep point")
    args = parser.parse_args()
    ensure_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not args.no_bench:
        run(["cargo", "bench", "--bench", "rings", "--bench", "peers", "--bench", "threaded"])
    estimates = criterion_estimates()
    if not estimates:
        sys.exit("no criterion output under target/criterion: run without --no-bench")
    sweep = cli_sweep(args.runtime)

    DOCS.mkdir(exist_ok=True)
    lines = ["| bench | ns/request | IOPS |", "| --- | ---: | ---: |"]
    for bench_id in sorted(estimates, key=lambda i: (i.rsplit("/", 1)[0], depth_of(i) or 0)):
        ns = estimates[bench_id]
        lines.append(f"| `{bench_id}` | {ns:.1f} | {1e9 / ns / 1e6:.2f} M |")
    lines += ["", "| CLI, threaded sim, 1 queue | iodepth | IOPS | clat p50 (ns) | clat p99 (ns) | kicks/IO |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for (ring, depth), (iops, p50, p99, kicks) in sorted(sweep.items()):
        lines.append(f"| {ring} | {depth} | {iops / 1e6:.2f} M | {p50} | {p99} | {kicks:.4f} |")
    (DOCS / "results.md").write_text("\n".join(lines) + "\n")

    fig, (inline, threaded) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, prefix, style in [
        ("ours, split", "rings/split/", "o-"),
        ("ours, packed", "rings/packed/", "s-"),
        ("ours, split, 16 entries (peers rig)", "peers/ours/", "v--"),
        ("virtio-drivers, split, 16 entries", "peers/virtio-drivers/", "^--"),
    ]:
        depths, iops = series(estimates, prefix)
        if depths:
            inline.plot(depths, [v / 1e6 for v in iops], style, label=label)
    inline.set_title("Inline sim, one thread (criterion)")
    for ring, style in [("split", "o-"), ("packed", "s-")]:
        depths = [d for (r, d) in sorted(sweep) if r == ring]
        threaded.plot(depths, [sweep[(ring, d)][0] / 1e6 for d in depths], style, label=f"ours, {ring}")
    limit_depths, limit_iops = series(estimates, "threaded/limit/")
    if limit_depths:
        threaded.plot(limit_depths, [v / 1e6 for v in limit_iops], "k:", marker="x",
                      label="idealised ring (threaded/limit)")
    threaded.set_title("Device on its own thread (vblk-bench)")
    threaded.set_yscale("log")
    depth_axes((inline, threaded))
    fig.tight_layout()
    fig.savefig(DOCS / "iops_vs_qd.png", dpi=110)
    print((DOCS / "results.md").read_text())


if __name__ == "__main__":
    main()

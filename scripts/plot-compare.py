#!/usr/bin/env python3
"""Plots `cargo xtask compare --json-out FILE`: IOPS of our guest and of
Linux's virtio_blk for every job, side by side on a log scale, as an SVG.
No dependencies beyond Python 3.

    scripts/plot-compare.py compare.json compare.svg
"""

import json
import math
import sys
from xml.sax.saxutils import escape

OURS = "#1f77b4"
LINUX = "#ff7f0e"


def label(job):
    return "{} {}iothread\nj{} qd{}".format(
        job["mode"], "" if job["iothread"] else "no ", job["numjobs"], job["iodepth"]
    )


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot-compare.py COMPARE.json OUT.svg")
    with open(sys.argv[1]) as f:
        report = json.load(f)
    jobs = report["jobs"]
    values = [
        j[side]["iops"] for j in jobs for side in ("ours", "linux") if j[side]
    ]
    if not values:
        sys.exit("no figures in " + sys.argv[1])
    low = 10 ** math.floor(math.log10(min(values)))
    high = 10 ** math.ceil(math.log10(max(values)))

    width, height = 90 + 70 * len(jobs), 420
    left, top, bottom = 70, 50, 340
    bar = 24

    def y(v):
        span = math.log10(high) - math.log10(low)
        return bottom - (math.log10(v) - math.log10(low)) / span * (bottom - top)

    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" '
        'font-family="sans-serif" font-size="11">'.format(width, height),
        '<rect width="100%" height="100%" fill="white"/>',
        '<text x="{}" y="20" font-size="14">IOPS, ours vs Linux virtio_blk + fio '
        "(log scale; {}, {} {})</text>".format(
            left, escape(report["accel"]), report["job"]["rw"], report["job"]["bs"]
        ),
    ]
    decade = low
    while decade <= high:
        out.append(
            '<line x1="{l}" x2="{r}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            '<text x="{t}" y="{y:.1f}" text-anchor="end" dy="4">{v:g}</text>'.format(
                l=left, r=width - 10, y=y(decade), t=left - 6, v=decade
            )
        )
        decade *= 10
    for i, job in enumerate(jobs):
        x = left + 15 + i * 70
        for k, (side, colour) in enumerate((("ours", OURS), ("linux", LINUX))):
            figures = job[side]
            if not figures:
                continue
            top_y = y(figures["iops"])
            out.append(
                '<rect x="{}" y="{:.1f}" width="{}" height="{:.1f}" fill="{}"/>'.format(
                    x + k * bar, top_y, bar, bottom - top_y, colour
                )
            )
        ratio = job["ratio"]["iops"]
        if ratio:
            out.append(
                '<text x="{}" y="{}" text-anchor="middle">{:.1f}x</text>'.format(
                    x + bar, top - 8, ratio
                )
            )
        for n, text in enumerate(label(job).split("\n")):
            out.append(
                '<text x="{}" y="{}" text-anchor="middle">{}</text>'.format(
                    x + bar, bottom + 16 + 13 * n, escape(text)
                )
            )
    legend_y = height - 20
    for k, (name, colour) in enumerate((("ours", OURS), ("Linux", LINUX))):
        out.append(
            '<rect x="{x}" y="{y}" width="12" height="12" fill="{c}"/>'
            '<text x="{tx}" y="{ty}">{n}</text>'.format(
                x=left + k * 90, y=legend_y - 10, c=colour, tx=left + k * 90 + 16,
                ty=legend_y, n=name,
            )
        )
    out.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Plots the granularity benchmark's JSON (`bench --json FILE`) into one PNG.

    scripts/bench-plot.py bench/results.json bench/bench.png

Three panels, one line per configuration (ours, gpusvm-like, test_hmm-like):
  1. fault throughput (4 KiB read faults/s, median) with 1 and 2 faulting threads on
     disjoint ranges;
  2. retries per 1000 faults vs the mutator's storm rate (invalidating ops/s on other ranges);
  3. the faulting thread's throughput under that storm vs the storm rate.
Panels 2 and 3 need a sweep (`bench --sweep-rates A,B,..`); without one they show the single
storm rate of the table. Needs matplotlib (`pip install matplotlib`).
"""

import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "ours": ("tab:green", "o"),
    "gpusvm": ("tab:blue", "s"),
    "test_hmm": ("tab:red", "^"),
}


def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else float("nan")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        d = json.load(f)
    configs = d["configs"]
    names = {c["key"]: c["name"] for c in configs}
    sweep = d.get("sweep") or [
        {
            "key": c["key"],
            "rate": d["params"]["storm_rate"],
            "retries": med(c["storm_retries"]),
            "tput": med(c["storm_tput"]),
        }
        for c in configs
    ]

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    for c in configs:
        color, marker = STYLE.get(c["key"], ("black", "x"))
        ax[0].plot(
            [1, 2],
            [med(c["tput_1"]) / 1e3, med(c["tput_2"]) / 1e3],
            color=color,
            marker=marker,
            label=c["name"],
        )
        pts = sorted((p["rate"], p["retries"], p["tput"]) for p in sweep if p["key"] == c["key"])
        if pts:
            ax[1].plot([p[0] for p in pts], [p[1] for p in pts], color=color, marker=marker, label=c["name"])
            ax[2].plot([p[0] for p in pts], [p[2] / 1e3 for p in pts], color=color, marker=marker, label=c["name"])
    ax[0].set_xticks([1, 2])
    ax[0].set_xlabel("faulting threads (disjoint ranges)")
    ax[0].set_ylabel("4 KiB faults/s (thousands, median)")
    ax[0].set_title("fault throughput")
    ax[0].set_ylim(bottom=0)
    for a in ax[1:]:
        a.set_xscale("log")
        a.set_xlabel("storm: invalidating ops/s on other ranges")
    ax[1].set_ylabel("retries per 1000 faults (median)")
    ax[1].set_title("retries under an invalidation storm")
    ax[2].set_ylabel("faulting thread's faults/s (thousands, median)")
    ax[2].set_title("throughput under an invalidation storm")
    ax[2].set_ylim(bottom=0)
    for a in ax:
        a.grid(True, alpha=0.3)
        a.legend()
    m = d["machine"]
    fig.suptitle(
        f"svm granularity benchmark (userspace model) - {m['nproc']} CPUs, {m['cpu']}, "
        f"commit {d['commit']}, {d['params']['trials']} trials"
    )
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)
    print(f"wrote {sys.argv[2]} ({', '.join(names.values())})")


if __name__ == "__main__":
    main()

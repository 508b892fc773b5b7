#!/usr/bin/env python3
"""Plots the device-memory rows of a dmbench run (`scripts/vm-bench.sh`) into one PNG.

    scripts/devmem-plot.py ~/.cache/svm/vm-logs/vm-bench-<stamp>.log bench/devmem.png

Reads the serial log's `DMBENCH driver=... metric=... value=... unit=...` lines, takes the
median of each (driver, metric) over the run's rounds, and draws one bar per device-memory
metric: the engine's advantage over test_hmm (test_hmm time / engine time, or engine MiB/s /
test_hmm MiB/s; above 1, the engine is faster), with each round's ratio as a dot. Needs
matplotlib.
"""

import re
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRICS = [
    ("migrate_to_dev_4k", "to device"),
    ("migrate_to_sys_4k", "to system"),
    ("read_resident_4k", "read resident"),
    ("reread_4k", "read mirrored"),
    ("cpu_fault_back_4k", "CPU fault back"),
    ("migrate_to_dev_32mib_2x", "2x oversubscribed\n(not like for like)"),
]
LINE = re.compile(r"DMBENCH driver=(\S+) metric=(\S+) value=([0-9.]+) unit=(\S+)")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    vals, units = {}, {}
    with open(sys.argv[1], errors="replace") as f:
        for line in f:
            m = LINE.search(line)
            if m:
                d, k, v, u = m.group(1), m.group(2), float(m.group(3)), m.group(4)
                vals.setdefault((d, k), []).append(v)
                units[k] = u
    labels, ratios, rounds = [], [], []
    for k, label in METRICS:
        a, b = vals.get(("test_hmm", k)), vals.get(("svm", k))
        if not a or not b:
            continue
        faster_is_more = "MiB/s" in units[k]

        def ratio(x, y):
            return y / x if faster_is_more else x / y

        labels.append(label)
        ratios.append(ratio(statistics.median(a), statistics.median(b)))
        rounds.append([ratio(x, y) for x, y in zip(a, b)])
    if not labels:
        sys.exit("no device-memory DMBENCH lines in " + sys.argv[1])
    fig, ax = plt.subplots(figsize=(9, 4.5))
    xs = range(len(labels))
    colors = ["tab:green" if r >= 1 else "tab:red" for r in ratios]
    ax.bar(xs, ratios, color=colors, alpha=0.7)
    for x, rs in zip(xs, rounds):
        ax.plot([x] * len(rs), rs, "k.", markersize=5)
    for x, r in zip(xs, ratios):
        ax.annotate(f"{r:.2f}x", (x, r), ha="center", va="bottom", fontsize=9)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("engine advantage over test_hmm (x)")
    ax.set_title("Device memory through the dmirror uAPI (medians; dots: rounds)")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()

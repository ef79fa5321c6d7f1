#!/usr/bin/env python3
"""The live pair's margin CUSUM (learn::pair::MarginWatch), replayed on the margin table
(docs/bench/margins.csv): false alarms on an unchanged scenery, and how soon day to night
is caught. The figures behind CUSUM_BASELINE, CUSUM_SHIFT and CUSUM_H.

A baseline of --base margins drawn from the old scenery sets the median; then each
answer adds log(s/0.5) to the "fell" statistic when its margin is under the median and
log((1-s)/0.5) when not (s = the share under the median it is tuned to detect), and the
mirror image to "rose"; an alarm when either passes h.

  python3 scripts/margin_cusum.py docs/bench/margins.csv
"""
import argparse
import csv
import math
import random
import statistics


def margins(rows, pair, dep):
    return [float(r["score1"]) - float(r["score2"]) for r in rows
            if r["pair"] == pair and r["deployment"] == dep]


def replay(base, new, h, shift, n_base, n, seed):
    """(images until an alarm, "fell"/"rose"), or (None, None)."""
    rng = random.Random(seed)
    median = sorted(rng.choice(base) for _ in range(n_base))[n_base // 2]
    more, fewer = math.log(shift / 0.5), math.log((1 - shift) / 0.5)
    fell = rose = 0.0
    for t in range(n):
        under = rng.choice(new) < median
        fell = max(0.0, fell + (more if under else fewer))
        rose = max(0.0, rose + (fewer if under else more))
        if fell > h:
            return t, "fell"
        if rose > h:
            return t, "rose"
    return None, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("table")
    ap.add_argument("--pair", default="q95@1280")
    ap.add_argument("--seeds", type=int, default=200)
    a = ap.parse_args()
    rows = list(csv.DictReader(open(a.table)))
    day, night = margins(rows, a.pair, "day-samples"), margins(rows, a.pair, "night")
    print(f"{a.pair}, {a.seeds} replays each: false alarms within 6,000 images of an unchanged "
          "scenery (day-samples, night), and day-samples to night caught within 1,500.\n")
    print("| baseline | shift | h | false alarms / 6,000 | night caught | median images to catch |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n_base in (300, 600):
        for shift in (0.6, 0.62, 0.65):
            for h in (8, 11):
                fa = [replay(d, d, h, shift, n_base, 6000, s)[0] for d in (day, night)
                      for s in range(a.seeds)]
                got = [replay(day, night, h, shift, n_base, 1500, s) for s in range(a.seeds)]
                t = [x for x, k in got if k == "fell"]
                print(f"| {n_base} | {shift} | {h} | "
                      f"{100 * sum(x is not None for x in fa) / len(fa):.0f} % | "
                      f"{100 * len(t) / a.seeds:.0f} % | {statistics.median(t) if t else '–'} |")


if __name__ == "__main__":
    main()

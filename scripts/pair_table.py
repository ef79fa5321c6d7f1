#!/usr/bin/env python3
"""Merges answer tables from scripts/margin_table.py into the table `adacompress replay`
reads: one row per (upload, pair) of the stream traffic, with the upload's size from
data/stream/manifest.csv and the answer's top-1 margin.

  python3 scripts/pair_table.py docs/bench/margins.csv more.csv ... --out docs/bench/pair-table.csv

Columns: deployment, index, width, height, original_bytes, pair, bytes, agree, margin.
A later input wins where two give the same (upload, pair). Rows are in stream order.
"""
import argparse
import csv
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--manifest", default=os.path.join(ROOT, "data/stream/manifest.csv"))
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    man = {(r["deployment"], r["index"]): r for r in csv.DictReader(open(a.manifest))}
    rows = {}
    for path in a.inputs:
        for r in csv.DictReader(open(path)):
            rows[(r["deployment"], r["index"], r["pair"])] = r
    pairs = sorted({k[2] for k in rows})
    out = []
    for (dep, idx, pair), r in rows.items():
        m = man[(dep, idx)]
        margin = float(r["score1"]) - float(r["score2"])
        out.append(dict(order=int(m["order"]), deployment=dep, index=int(idx), width=m["width"],
                        height=m["height"], original_bytes=r["original_bytes"], pair=pair,
                        bytes=r["bytes"], agree=r["agree"], margin=f"{margin:.5f}"))
    out.sort(key=lambda x: (x["order"], pairs.index(x["pair"])))
    cols = ["deployment", "index", "width", "height", "original_bytes", "pair", "bytes", "agree", "margin"]
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(out)
    complete = {}
    for (dep, idx, _pair) in rows:
        complete[(dep, idx)] = complete.get((dep, idx), 0) + 1
    full = sum(1 for v in complete.values() if v == len(pairs))
    print(f"{len(out)} rows, {len(pairs)} pairs ({', '.join(pairs)}), "
          f"{full} of {len(complete)} uploads answered at every pair -> {a.out}")


if __name__ == "__main__":
    main()

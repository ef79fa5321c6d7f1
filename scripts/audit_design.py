#!/usr/bin/env python3
"""What choosing audits by the served answer's margin, or prediction-powered inference,
would buy the live pair's certification: measured on the margin table
(docs/bench/margins.csv, scripts/margin_table.py), no new requests.

For each deployment, served pair S and candidate pair C of the table, over every upload
750+ (one row per upload with the answers at every pair):

  y_i  = 1 when C's answer on upload i agrees with the original's (with --reask R: or C's
         margin is among the lowest R of C's margins, i.e. the client would get the
         original's answer);
  m_i  = the top-1 margin of S's answer on upload i: free at audit time, as the client
         already got that answer.

A certification needs the variance of the agreement estimate small enough for a one-sided
bound at z to clear the target t; audits needed ~ z^2 * V / (p - t)^2, where V is the
variance per audit of the estimator:

  uniform     V = p (1 - p)                       (what the learner does now)
  PPI         V = sum_h W_h p_h (1 - p_h)         (prediction-powered inference with the
              best predictor of y from m's stratum, fitted on the same rows: optimistic;
              with many more free answers than audits this is its variance)
  stratified  V = (sum_h W_h sqrt(p_h (1 - p_h)))^2 (audits drawn per margin stratum with
              Neyman allocation, weighted back by 1/probability: unbiased; oracle rates)
  fixed 8:4:2:1  a fixed design (no rates needed): the four strata audited at relative
              rates 8, 4, 2 and 1, the estimate post-stratified (sum_h W_h p_h, W_h known
              as the strata are quantiles): V = sum_h W_h^2 p_h (1 - p_h) / a_h, a_h the
              stratum's share of the audits

Strata: S's margin quantiles (0-5, 5-20, 20-50, 50-100 %). Output: a markdown table on
stdout and --csv rows.

  python3 scripts/audit_design.py docs/bench/margins.csv [--reask 0 0.05] [--csv out.csv]
"""
import argparse
import csv
import math

EDGES = (0.05, 0.20, 0.50)


def quantile_cut(values, share):
    s = sorted(values)
    return s[min(len(s) - 1, int(share * len(s)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("table")
    ap.add_argument("--reask", type=float, nargs="+", default=[0.0, 0.05])
    ap.add_argument("--target", type=float, default=0.97)
    ap.add_argument("--z", type=float, default=1.645)
    ap.add_argument("--csv")
    a = ap.parse_args()
    rows = list(csv.DictReader(open(a.table)))
    by = {}
    for r in rows:
        by.setdefault(r["deployment"], {}).setdefault(r["pair"], {})[int(r["index"])] = r
    out = []
    for reask in a.reask:
        print(f"\nRe-asks counted: {100 * reask:.0f} %; target {100 * a.target:.0f} %, z {a.z}.\n")
        print("| deployment | served S | candidate C | C's agreement | uniform: audits to certify | "
              "PPI (optimistic) | stratified (Neyman, oracle) | stratified 8:4:2:1 |")
        print("|---|---|---|---:|---:|---:|---:|---:|")
        for dep in sorted(by):
            pairs = by[dep]
            common = sorted(set.intersection(*(set(v) for v in pairs.values())))
            margin = {p: [float(pairs[p][i]["score1"]) - float(pairs[p][i]["score2"]) for i in common]
                      for p in pairs}
            agree = {}
            for p in pairs:
                thr = quantile_cut(margin[p], reask) if reask > 0 else -1.0
                agree[p] = [1 if (pairs[p][i]["agree"] == "1" or m < thr) else 0
                            for i, m in zip(common, margin[p])]
            n = len(common)
            for s in sorted(pairs):
                cuts = [quantile_cut(margin[s], e) for e in EDGES]
                stratum = [sum(m >= c for c in cuts) for m in margin[s]]
                for c in sorted(pairs):
                    y = agree[c]
                    p = sum(y) / n
                    w, ph = [], []
                    for h in range(len(EDGES) + 1):
                        ys = [yy for yy, st in zip(y, stratum) if st == h]
                        w.append(len(ys) / n)
                        ph.append(sum(ys) / len(ys) if ys else 1.0)
                    v_uni = p * (1 - p)
                    v_ppi = sum(wh * q * (1 - q) for wh, q in zip(w, ph))
                    v_str = sum(wh * math.sqrt(q * (1 - q)) for wh, q in zip(w, ph)) ** 2
                    rel = (8.0, 4.0, 2.0, 1.0)
                    norm = sum(wh * r for wh, r in zip(w, rel))
                    v_fix = sum(wh * wh * q * (1 - q) / (wh * r / norm) for wh, q, r in zip(w, ph, rel))

                    def need(v):
                        gap = p - a.target
                        return math.ceil(a.z ** 2 * v / gap ** 2) if gap > 0 else None

                    cells = [need(v) for v in (v_uni, v_ppi, v_str, v_fix)]

                    def fmt(k, v):
                        if k is None:
                            return "never"
                        return f"{k}" if v is v_uni else f"{k} ({v_uni / v:.2f}x)" if v > 0 else f"{k}"
                    print(f"| {dep} | {s} | {c} | {100 * p:.1f} % | "
                          + " | ".join(fmt(k, v) for k, v in zip(cells, (v_uni, v_ppi, v_str, v_fix))) + " |")
                    out.append(dict(deployment=dep, served=s, candidate=c, reask=reask, n=n,
                                    agreement=round(p, 4), v_uniform=v_uni, v_ppi=v_ppi,
                                    v_stratified=v_str, v_fixed8421=v_fix,
                                    audits_uniform=cells[0], audits_ppi=cells[1],
                                    audits_stratified=cells[2], audits_fixed8421=cells[3]))
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=list(out[0]))
            wr.writeheader()
            wr.writerows(out)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Replays two ways of choosing which uploads to audit on the margin table
(docs/bench/margins.csv: every upload 750+ of each stream deployment, answered at
q95@1280, q95@960 and q85@960) and prints, per pair, its true agreement and the mean
agreement its audits would measure.

- "credit": the learner before session 23. An image is audited when the estimation credit
  covers *its* audit (orig + candidates), so small, cheap photos are audited first.
- "rate": a uniform draw against a rate set from the images before this one (running
  averages of served and audit bytes, times the credit banked), as `learn::pair` does now.

The served pair is q95@1280, the candidates q95@960 and q85@960, the budget 8 % of the
served bytes; 300 replays of 3,000 uploads (the deployment's 750 shuffled, four times).
Usage: python3 scripts/audit_bias.py   (about 20 s)
"""
import csv
import random
import statistics as st
from collections import defaultdict

PAIRS = ["q95@1280", "q95@960", "q85@960"]
SHARE, REPLAYS, RATE = 0.08, 300, 0.02


def main():
    table = defaultdict(dict)
    for r in csv.DictReader(open("docs/bench/margins.csv")):
        table[(r["deployment"], int(r["index"]))][r["pair"]] = (
            int(r["original_bytes"]), int(r["bytes"]), int(r["agree"]))
    print("deployment,mode,audits_per_replay,median_original_audited,median_original_all,"
          + ",".join(f"{p}_truth,{p}_audited" for p in PAIRS))
    for dep in ["day-uploads", "day-samples", "night"]:
        imgs = [v for (d, _), v in sorted(table.items()) if d == dep and len(v) == len(PAIRS)]
        truth = {p: sum(im[p][2] for im in imgs) / len(imgs) for p in PAIRS}
        for mode in ["credit", "rate"]:
            est, sizes = defaultdict(list), []
            for rep in range(REPLAYS):
                rng = random.Random(rep)
                credit, avs, avo = 0.0, None, None
                got = defaultdict(list)
                order = imgs[:]
                rng.shuffle(order)
                for im in order * 4:
                    orig, served, _ = im[PAIRS[0]]
                    cost = orig + sum(im[p][1] for p in PAIRS[1:])
                    xi = rng.random()
                    if mode == "credit":
                        credit = min(credit + SHARE * served, 8 * orig)
                        audit = xi < 0.5 and credit >= cost
                    else:
                        if avs is None:
                            avs, avo = served, cost
                        bank = credit / avo
                        audit = xi < min(0.5, SHARE * avs / avo * max(0.0, min(bank, 3.0)))
                        avs += RATE * (served - avs)
                        avo += RATE * (cost - avo)
                        credit = min(credit + SHARE * served, 8 * avo)
                    if audit:
                        credit -= cost
                        sizes.append(orig)
                        for p in PAIRS:
                            got[p].append(im[p][2])
                for p in PAIRS:
                    est[p].append(sum(got[p]) / max(1, len(got[p])))
            print(f"{dep},{mode},{len(sizes) // REPLAYS},{st.median(sizes):.0f},"
                  f"{st.median(im[PAIRS[0]][0] for im in imgs):.0f},"
                  + ",".join(f"{truth[p]:.3f},{st.mean(est[p]):.3f}" for p in PAIRS))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The cloud's top-1 margin on served uploads, per fixed pair: the table behind the
re-ask (cascade) analysis in docs/bench/notes.md.

For each pair, every stream upload with index >= --from goes through a real `serve`
fixed to that pair, to the local backend running Lite2, through the byte-counting hop of
scripts/stream_bench.py. One CSV row per (pair, upload): bytes at the upstream, the
answer's top-1 and top-2 scores, and whether its top-1 matches the original's (the
original's answer comes from the stream bench's cache, .cache/stream-answers.json).

  .cache/venv-stream/bin/python scripts/margin_table.py --pairs q95@1280 q85@960 q95@960 \
      --lite2 $(bash scripts/lite2.sh) --out docs/bench/margins.csv
  python3 scripts/margin_table.py --analyze docs/bench/margins.csv

--analyze prints, per pair and deployment, the AUC of the margin for agreement and what
re-asking the lowest-margin share of uploads as sent would give (agreement, and bytes
against the deployment's `q95` from the stream bench's cache), the margin threshold being
that share's quantile over the same uploads.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))
import stream_bench as sb  # noqa: E402


def scores(data):
    try:
        ann = json.loads(data)["responses"][0].get("labelAnnotations") or []
    except Exception:
        return None, 0.0, 0.0
    ann = sorted(ann, key=lambda a: -a.get("score", 0))
    s = [a.get("score", 0.0) for a in ann] + [0.0, 0.0]
    return (ann[0].get("description") if ann else ""), s[0], s[1]


def analyze(path, cache_path, rates=(0.02, 0.05, 0.10, 0.15, 0.20)):
    rows = list(csv.DictReader(open(path)))
    cache = json.load(open(cache_path))
    man = {(r["deployment"], r["index"]): r["sha256"]
           for r in csv.DictReader(open(os.path.join(sb.ROOT, "data/stream/manifest.csv")))}
    groups = {}
    for r in rows:
        groups.setdefault((r["pair"], r["deployment"]), []).append(r)
    print("| pair | deployment | n | agreement | AUC | bytes vs q95 | "
          + " | ".join(f"{100*x:.0f} % re-asked" for x in rates) + " |")
    print("|---|---|---:|---:|---:|---:|" + "---:|" * len(rates))
    for (pair, dep), rs in sorted(groups.items()):
        margin = [float(r["score1"]) - float(r["score2"]) for r in rs]
        agree = [r["agree"] == "1" for r in rs]
        q95 = sum((cache.get(man[(dep, r["index"])] + "|q95") or {}).get("bytes", 0) for r in rs)
        pos = [m for m, a in zip(margin, agree) if a]
        neg = [m for m, a in zip(margin, agree) if not a]
        auc = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / max(1, len(pos) * len(neg))
        base = sum(int(r["bytes"]) for r in rs)
        cells = []
        for rate in rates:
            thr = sorted(margin)[int(rate * len(rs))]
            ok = sum(1 if m < thr else int(a) for m, a in zip(margin, agree))
            b = base + sum(int(r["original_bytes"]) for r, m in zip(rs, margin) if m < thr)
            cells.append(f"{100*ok/len(rs):.1f} % / {b/q95:.2f}" if q95 else f"{100*ok/len(rs):.1f} %")
        print(f"| {pair} | {dep} | {len(rs)} | {100*sum(agree)/len(rs):.1f} % | {auc:.2f} | "
              f"{base/q95:.2f} | " + " | ".join(cells) + " |")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "--analyze":
        analyze(sys.argv[2], os.path.join(sb.ROOT, ".cache/stream-answers.json"))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="/work/target/release/adacompress")
    ap.add_argument("--lite2", default=".cache/models/efficientnet-lite2.onnx")
    ap.add_argument("--traffic", default="data/stream")
    ap.add_argument("--pairs", nargs="+", required=True)
    ap.add_argument("--from", dest="start", type=int, default=750)
    ap.add_argument("--to", dest="end", type=int, default=None, help="uploads with index < this only")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cache", default=".cache/stream-answers.json")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.chdir(sb.ROOT)
    with open(os.path.join(a.traffic, "manifest.csv")) as f:
        rows = [r for r in csv.DictReader(f) if int(r["index"]) >= a.start and int(r["index"]) % a.every == 0
                and (a.end is None or int(r["index"]) < a.end)]
    cache = sb.Cache(a.cache)
    tmp = tempfile.mkdtemp(prefix="margins-")
    bport = sb.free_port()
    blog = open(os.path.join(tmp, "backend.log"), "ab")
    backend = subprocess.Popen([a.bin, "backend", "--model", a.lite2, "--classes", "models/imagenet_classes.txt",
                                "--listen", f"127.0.0.1:{bport}"], cwd=sb.ROOT, stdout=blog, stderr=blog)
    out = []
    try:
        sb.wait_http(bport, "/metrics", proc=backend)
        hop = sb.Hop(bport)
        sb.references(rows, a.traffic, bport, cache, a.jobs)
        for pair in a.pairs:
            t0 = time.time()
            serve = sb.Serve(a.bin, hop.port, tmp, fixed=pair, estimator=False)
            try:
                def one(r):
                    tag = f"m{pair}/{r['order']}"
                    s, hd, data = sb.post(serve.port, sb.annotate_body(sb.read_blob(a.traffic, r)), {sb.TAG: tag})
                    if s != 200:
                        raise SystemExit(f"serve ({pair}) answered {s} for {r['file']}")
                    label, s1, s2 = scores(data)
                    ref = cache.get(r["sha256"])
                    return dict(pair=pair, deployment=r["deployment"], index=r["index"],
                                original_bytes=r["bytes"], bytes=sum(x[3] for x in hop.by_tag(tag)),
                                top1=label, reference=ref, agree=int(label == ref),
                                score1=f"{s1:.5f}", score2=f"{s2:.5f}",
                                action=hd.get("x-adacompress-action", ""))
                with ThreadPoolExecutor(a.jobs) as ex:
                    for n, rec in enumerate(ex.map(one, rows), 1):
                        out.append(rec)
                        if n % 250 == 0:
                            sb.log(f"  {pair}: {n}/{len(rows)} ({time.time() - t0:.0f} s)")
            finally:
                serve.stop()
            sb.log(f"pair {pair}: {len(rows)} uploads in {time.time() - t0:.0f} s")
    finally:
        backend.terminate()
        backend.wait(30)
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(out[0]))
        w.writeheader()
        w.writerows(out)
    sb.log(f"wrote {len(out)} rows to {a.out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Traffic for the stream benchmark (issue 15, section 4): three "deployments" of distinct
phone-like uploads, written as JPEG files plus a manifest.

    .cache/venv-stream/bin/python scripts/stream_traffic.py [--per-deployment 1500] [--out data/stream]

Deployments, in this order:
  day-uploads   variants of data/uploads/*  (scripts/fetch_uploads.sh)
  day-samples   variants of data/photos/*   (scripts/fetch_photos.sh)
  night         a scenery change: darkened (exposure and gamma down), bluish, noisy
                variants of both sets

Every upload is a fresh random crop (55-100 % of the area, mild aspect change), a rescale to a
phone-like long side (mostly 1024-3000 px; the small ai-benchmark photos are upscaled to get
there, at most 2.5x, so part of day-samples stays below 1024), a mild exposure/contrast change
and a camera-like JPEG re-encode (quality 80-95, 4:2:0 mostly). Everything is drawn from
random.Random(f"{SEED}/{deployment}/{index}"), so upload i of a deployment is the same file
whatever --per-deployment is (the short CI traffic is a prefix of the full one) and the
output is reproducible byte for byte with the pinned Pillow and numpy. Uploads are checked
to be distinct (sha256) within and across deployments.

Output: <out>/<deployment>/NNNNN.jpg and <out>/manifest.csv
(order, deployment, index, file, source, transform, width, height, quality, bytes, sha256).
"""
import argparse
import csv
import glob
import hashlib
import io
import json
import multiprocessing
import os
import random
import sys
import time

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

SEED = "adacompress-stream-v1"
DEPLOYMENTS = ("day-uploads", "day-samples", "night")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def sources(folder):
    files = sorted(glob.glob(os.path.join(ROOT, folder, "*", "*.jpg")))
    return [os.path.relpath(f, ROOT) for f in files]


def plan(per_dep):
    """(deployment, index, source) for every upload; the sources of a deployment are dealt
    from a seeded shuffle, round after round, so each is used about equally often."""
    ups, phs = sources("data/uploads"), sources("data/photos")
    if not ups or not phs:
        sys.exit("stream_traffic: data/uploads or data/photos is empty "
                 "(run scripts/fetch_uploads.sh and scripts/fetch_photos.sh)")
    pools = {"day-uploads": ups, "day-samples": phs, "night": ups + phs}
    tasks = []
    for dep in DEPLOYMENTS:
        pool = pools[dep]
        deck = []
        rnd = 0
        for i in range(per_dep):
            if not deck:
                deck = list(pool)
                random.Random(f"{SEED}/{dep}/deck/{rnd}").shuffle(deck)
                rnd += 1
            tasks.append((dep, i, deck.pop()))
    return tasks


_cache = {}


def load(src):
    im = _cache.get(src)
    if im is None:
        im = Image.open(os.path.join(ROOT, src))
        im = ImageOps.exif_transpose(im).convert("RGB")
        _cache.clear()  # one source at a time per worker (tasks come grouped by source)
        _cache[src] = im
    return im


def make(task):
    dep, i, src, out = task
    rng = random.Random(f"{SEED}/{dep}/{i}")
    im = load(src)
    W, H = im.size
    # crop: 55-100 % of the area, aspect changed by up to +-15 %
    area = rng.uniform(0.55, 1.0)
    aspect = rng.uniform(0.87, 1.15)
    cw = min(W, max(64, round(W * (area * aspect) ** 0.5)))
    ch = min(H, max(64, round(H * (area / aspect) ** 0.5)))
    x0 = rng.randint(0, W - cw)
    y0 = rng.randint(0, H - ch)
    img = im.crop((x0, y0, x0 + cw, y0 + ch))
    # rescale to a phone-like long side
    r = rng.random()
    if r < 0.8:
        side = rng.randint(1024, 3000)
    elif r < 0.9:
        side = rng.randint(3000, 4032)
    else:
        side = rng.randint(720, 1024)
    longest = max(cw, ch)
    side = min(side, round(longest * 2.5))  # the small sample photos: at most 2.5x up
    if rng.random() < 0.5:
        # half the time never upscale: the crop's own pixels (a lower-resolution phone)
        side = min(side, longest) if longest >= 1024 else side
    s = side / longest
    size = (max(16, round(cw * s)), max(16, round(ch * s)))
    if size != img.size:
        img = img.resize(size, Image.Resampling.LANCZOS if s < 1 else Image.Resampling.BICUBIC)
    # mild exposure / contrast change
    exposure = rng.uniform(0.88, 1.12)
    contrast = rng.uniform(0.92, 1.08)
    img = ImageEnhance.Brightness(img).enhance(exposure)
    img = ImageEnhance.Contrast(img).enhance(contrast)
    t = dict(crop=[x0, y0, cw, ch], side=max(size), exposure=round(exposure, 3),
             contrast=round(contrast, 3))
    if dep == "night":
        gamma = rng.uniform(1.6, 2.4)        # darker midtones
        gain = rng.uniform(0.45, 0.75)       # exposure down
        blue = rng.uniform(1.05, 1.25)       # bluish cast
        red = rng.uniform(0.70, 0.88)
        sigma = rng.uniform(4.0, 10.0)       # sensor noise at high ISO
        a = np.asarray(img, dtype=np.float32) / 255.0
        a = np.power(a, gamma) * gain
        a[..., 0] *= red
        a[..., 2] *= blue
        nrng = np.random.default_rng(int(hashlib.sha256(f"{SEED}/{dep}/{i}/noise".encode()).hexdigest()[:16], 16))
        a = a * 255.0 + nrng.normal(0.0, sigma, a.shape).astype(np.float32)
        # luminance noise too (coarser grain)
        a += nrng.normal(0.0, sigma / 2, a.shape[:2]).astype(np.float32)[..., None]
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        t.update(gamma=round(gamma, 3), gain=round(gain, 3), blue=round(blue, 3),
                 red=round(red, 3), noise_sigma=round(sigma, 2))
    quality = rng.randint(80, 95)
    subsampling = "4:2:0" if rng.random() < 0.8 else "4:4:4"
    optimize = rng.random() < 0.5
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, subsampling=subsampling, optimize=optimize)
    blob = buf.getvalue()
    rel = f"{dep}/{i:05d}.jpg"
    with open(os.path.join(out, rel), "wb") as f:
        f.write(blob)
    t.update(quality=quality, subsampling=subsampling, optimize=optimize)
    return dict(deployment=dep, index=i, file=rel, source=src,
                transform=json.dumps(t, separators=(",", ":"), sort_keys=True),
                width=img.size[0], height=img.size[1], quality=quality, bytes=len(blob),
                sha256=hashlib.sha256(blob).hexdigest())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-deployment", type=int, default=1500)
    ap.add_argument("--out", default=os.path.join(ROOT, "data", "stream"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    t0 = time.time()
    out = os.path.abspath(a.out)
    for dep in DEPLOYMENTS:
        os.makedirs(os.path.join(out, dep), exist_ok=True)
    tasks = plan(a.per_deployment)
    order = {(d, i): k for k, (d, i, _s) in enumerate(tasks)}
    jobs = sorted((t + (out,) for t in tasks), key=lambda t: (t[2], t[0], t[1]))  # by source
    rows = []
    with multiprocessing.get_context("fork").Pool(a.jobs) as pool:
        for n, r in enumerate(pool.imap_unordered(make, jobs, chunksize=4), 1):
            rows.append(r)
            if n % 250 == 0 or n == len(jobs):
                print(f"stream_traffic: {n}/{len(jobs)} uploads written ({time.time() - t0:.0f} s)", flush=True)
    for r in rows:
        r["order"] = order[(r["deployment"], r["index"])]
    rows.sort(key=lambda r: r["order"])
    shas = [r["sha256"] for r in rows]
    if len(set(shas)) != len(shas):
        sys.exit("stream_traffic: duplicate uploads (same sha256) -- change the recipe")
    cols = ["order", "deployment", "index", "file", "source", "transform", "width", "height",
            "quality", "bytes", "sha256"]
    with open(os.path.join(out, "manifest.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    for dep in DEPLOYMENTS:
        rs = [r for r in rows if r["deployment"] == dep]
        sides = sorted(max(r["width"], r["height"]) for r in rs)
        in_band = sum(1024 <= s <= 3000 for s in sides) / len(sides)
        print(f"stream_traffic: {dep:12s} {len(rs)} distinct uploads from "
              f"{len({r['source'] for r in rs})} photos, long side median {sides[len(sides)//2]} px, "
              f"{100*in_band:.0f} % in 1024-3000, {sum(r['bytes'] for r in rs)/1e6:.0f} MB")
    print(f"stream_traffic: wrote {out}/manifest.csv in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

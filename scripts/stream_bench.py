#!/usr/bin/env python3
"""The stream benchmark of issue 15 (section 4). Run it through scripts/stream_bench.sh.

Setup, all on 127.0.0.1:
  client (this script) -> adacompress serve -> recording hop (this script, a threaded HTTP
  pass-through) -> adacompress backend (EfficientNet-Lite2, the "cloud")

The uploads of data/stream/manifest.csv go to serve one at a time, in order, as Google
Vision REST requests (POST /v1/images:annotate, base64 content, LABEL_DETECTION), each with
a header X-Stream-Upload: <order> that serve forwards upstream (estimation uploads copy the
client's headers too), so the hop attributes every upstream byte to the upload that caused it.

Per upload: the original's bytes, the image bytes (and request-body bytes) the hop saw for
it, the estimation bytes (delta of serve's adacompress_estimation_bytes_total, scraped after
each upload once the hop is idle), the served bytes (hop minus estimation), the
X-AdaCompress-Action header, serve's top-1 label and the reference top-1 (the backend asked
directly with the original; cached in .cache/stream-answers.json by sha256).

Fixed pairs in hindsight: on a deterministic subsample (every --subsample-th upload of each
deployment) a `serve` with `agent.fixed = PAIR` and the estimator off is run for each
candidate pair, through the same hop; answers and bytes cached by (sha256, pair).
"""
import argparse
import base64
import csv
import gzip
import hashlib
import http.client
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def deployments(rows):
    """The deployments of a manifest in the order they start (data/stream: day-uploads, day-samples, night)."""
    seen = []
    for r in rows:
        if r["deployment"] not in seen:
            seen.append(r["deployment"])
    return seen


# The 41 actions of the `uploads` action set (src/action.rs: keep + 8 sides x 5 qualities),
# most faithful first, so that a pair's dominators are measured before it (see subsample_pairs).
SIDES = (None, 1280, 960, 768, 640, 512, 384, 288)
QUALITIES = (95, 85, 70, 50, 30)
CANDIDATES = ["keep"] + [f"q{q}" + (f"@{s}" if s else "") for s in SIDES for q in QUALITIES]
# A pair is not measured on a deployment's subsample when a pair at least as faithful (side and
# quality both >= its own) already agreed below PRUNE_BELOW there: monotonicity as a prior
# (it fails on a few % of single photos, not on 150-photo averages 7 points apart).
PRUNE_BELOW = 0.90
# Uploads 750+ of each deployment: every pair whose subsample agreement is at least LATE_BAND is
# measured on every upload, cheapest first, until one is certified (Wilson 95 % >= TARGET).
LATE_BAND = 0.93
TARGET = 0.97
TAG = "X-Stream-Upload"
# agent.checkpoint of every serve this script starts (set from --agent in main()).
AGENT = "models/agent-calibrated.json"


def log(msg):
    print(f"stream_bench: {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wilson_lower(k, n, z=1.959964):
    if n == 0:
        return 0.0
    p = k / n
    d = 1 + z * z / n
    c = p + z * z / (2 * n)
    r = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (c - r) / d


# ------------------------------------------------------------------ recording hop
class Hop:
    """Threaded HTTP pass-through; logs every request's body and image bytes with a timestamp."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        self.records = []         # (t, tag, body_bytes, image_bytes, status)
        self.inflight = 0
        hop = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                with hop.lock:
                    hop.inflight += 1
                try:
                    if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                        parts = []
                        while True:
                            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                            if size == 0:
                                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                    pass
                                break
                            parts.append(self.rfile.read(size))
                            self.rfile.readline()
                        body = b"".join(parts)
                    else:
                        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                    img = 0
                    try:
                        for r in json.loads(body).get("requests", []):
                            c = r.get("image", {}).get("content")
                            if c:
                                img += len(base64.b64decode(c))
                    except Exception:
                        img = -1
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("host", "connection", "keep-alive", "transfer-encoding")}
                    conn = http.client.HTTPConnection("127.0.0.1", hop.upstream_port, timeout=120)
                    conn.request("POST", self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    with hop.lock:
                        hop.records.append((time.time(), self.headers.get(TAG), len(body), img, resp.status))
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    conn.close()
                finally:
                    with hop.lock:
                        hop.inflight -= 1

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_idle(self, grace=0.03, timeout=60):
        time.sleep(grace)
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                if self.inflight == 0:
                    return
            time.sleep(0.005)

    def by_tag(self, tag):
        with self.lock:
            return [r for r in self.records if r[1] == tag]


# ------------------------------------------------------------------ HTTP helpers
def annotate_body(blob):
    return json.dumps({"requests": [{"image": {"content": base64.b64encode(blob).decode()},
                                     "features": [{"type": "LABEL_DETECTION", "maxResults": 5}]}]}).encode()


def post(port, body, headers=None, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.request("POST", "/v1/images:annotate", body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    hd = {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    return r.status, hd, data


def top1(data):
    try:
        ann = json.loads(data)["responses"][0].get("labelAnnotations") or []
    except Exception:
        return None
    if not ann:
        return ""
    best = max(ann, key=lambda a: a.get("score", 0))
    return best.get("description") or best.get("mid")


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data.decode(errors="replace")


def scrape(port):
    _s, text = get(port, "/metrics")
    m = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        k, _, v = line.rpartition(" ")
        try:
            m[k] = float(v)
        except ValueError:
            pass
    return m


def metric(m, name):
    return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))


def wait_http(port, path, timeout=120, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode} before {path} answered")
        try:
            s, _ = get(port, path)
            if s == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"127.0.0.1:{port}{path} not ready after {timeout} s")


# ------------------------------------------------------------------ processes
class Serve:
    def __init__(self, bin_, hop_port, tmp, fixed=None, estimator=True, log_path=None):
        self.port, self.admin = free_port(), free_port()
        state_dir = tempfile.mkdtemp(prefix="serve-", dir=tmp)
        cfg = os.path.join(state_dir, "serve.toml")
        lines = ["[proxy]", f'listen = "127.0.0.1:{self.port}"', f'admin_listen = "127.0.0.1:{self.admin}"',
                 "[upstreams]", f'google = "http://127.0.0.1:{hop_port}"', "[agent]",
                 f'checkpoint = "{AGENT}"']
        if fixed:
            lines.append(f'fixed = "{fixed}"')
        lines += ["[estimator]", f"enabled = {'true' if estimator else 'false'}",
                  "[state]", f'dir = "{os.path.join(state_dir, "state")}"',
                  "[log]", 'level = "warn"']
        with open(cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.cfg = cfg
        self.logf = open(log_path or os.devnull, "ab")
        self.proc = subprocess.Popen([bin_, "serve", "--config", cfg], cwd=ROOT,
                                     stdout=self.logf, stderr=self.logf)
        wait_http(self.admin, "/readyz", proc=self.proc)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.logf.close()


# ------------------------------------------------------------------ caches
class Cache:
    def __init__(self, path, seed=None):
        self.path = path
        self.lock = threading.Lock()
        try:
            with open(path) as f:
                self.d = json.load(f)
        except (OSError, ValueError):
            self.d = {}
        self.dirty = 0
        if seed and os.path.exists(seed):
            # The committed answers (docs/bench/stream-answers.json.gz): Lite2's top-1 for
            # each upload's original and, per fixed pair, the pair's bytes and top-1, keyed by
            # the upload's sha256. Only keys this machine has not cached are taken, and an
            # upload whose bytes differ here has another sha256, so it is asked afresh.
            with gzip.open(seed, "rt") as f:
                seeded = json.load(f)
            fresh = {k: v for k, v in seeded.items() if k not in self.d}
            self.d.update(fresh)
            log(f"answer cache: {len(fresh)} answers from {seed} ({len(self.d)} in all)")

    def get(self, k):
        return self.d.get(k)

    def put(self, k, v):
        with self.lock:
            self.d[k] = v
            self.dirty += 1
            if self.dirty >= 200:
                self.save_locked()

    def refresh(self):
        """Takes in what other runs saved since this one loaded (two runs side by side share
        the file; each would otherwise ask again for every answer the other cached)."""
        with self.lock:
            self.d = {**self._on_disk(), **self.d}

    def _on_disk(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def save_locked(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        # Merge: another run may have saved answers this one has not seen.
        self.d = {**self._on_disk(), **self.d}
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.d, f)
        os.replace(tmp, self.path)
        self.dirty = 0

    def save(self):
        with self.lock:
            self.save_locked()


def read_blob(traffic, row):
    with open(os.path.join(traffic, row["file"]), "rb") as f:
        return f.read()


def references(rows, traffic, backend_port, cache, jobs):
    todo = [r for r in rows if cache.get(r["sha256"]) is None]
    log(f"reference answers: {len(rows) - len(todo)} cached, {len(todo)} to ask the backend directly")
    t0 = time.time()

    def one(r):
        s, _h, data = post(backend_port, annotate_body(read_blob(traffic, r)))
        if s != 200:
            raise SystemExit(f"backend answered {s} for {r['file']}: {data[:200]!r}")
        cache.put(r["sha256"], top1(data))

    with ThreadPoolExecutor(jobs) as ex:
        for n, _ in enumerate(ex.map(one, todo), 1):
            if n % 200 == 0:
                log(f"  {n}/{len(todo)} ({time.time() - t0:.0f} s)")
    cache.save()
    return time.time() - t0


# ------------------------------------------------------------------ the stream
def run_stream(rows, traffic, bin_, hop, cache, tmp, fixed, progress_every=100, progress=None, agent_log=None):
    serve = Serve(bin_, hop.port, tmp, fixed=fixed, estimator=True, log_path=os.path.join(tmp, "serve-stream.log"))
    out = []
    t0 = time.time()
    try:
        m_prev = scrape(serve.admin)
        for k, r in enumerate(rows):
            blob = read_blob(traffic, r)
            body = annotate_body(blob)
            tag = f"s{r['order']}"
            ts = time.time()
            s, hd, data = post(serve.port, body, {TAG: tag})
            t_ans = time.time()
            hop.wait_idle()
            m = scrape(serve.admin)
            recs = hop.by_tag(tag)
            est = metric(m, "adacompress_estimation_bytes_total") - metric(m_prev, "adacompress_estimation_bytes_total")
            est_n = metric(m, "adacompress_estimation_uploads_total") - metric(m_prev, "adacompress_estimation_uploads_total")
            out_b = metric(m, "adacompress_image_bytes_out_total") - metric(m_prev, "adacompress_image_bytes_out_total")
            hop_img = sum(x[3] for x in recs)
            hop_body = sum(x[2] for x in recs)
            states = {k2: v for k2, v in m.items() if k2.startswith("adacompress_agent_state{") and v > 0}
            state = re.sub(r'.*state="([^"]+)".*', r"\1", next(iter(states), "")) if states else ""
            out.append(dict(
                order=int(r["order"]), deployment=r["deployment"], index=int(r["index"]), file=r["file"],
                status=s, original_bytes=int(r["bytes"]), client_body_bytes=len(body),
                hop_image_bytes=hop_img, hop_body_bytes=hop_body, hop_requests=len(recs),
                served_bytes=hop_img - int(est), estimation_bytes=int(est), estimation_uploads=int(est_n),
                serve_bytes_out=int(out_b), action=hd.get("x-adacompress-action", ""),
                top1=top1(data), reference=cache.get(r["sha256"]),
                agent_state=state,
                deviated=int(metric(m, "adacompress_pair_deviations_total") - metric(m_prev, "adacompress_pair_deviations_total")),
                reasked=int(metric(m, "adacompress_reasks_total") - metric(m_prev, "adacompress_reasks_total")),
                reask_bytes=int(metric(m, "adacompress_reask_bytes_total") - metric(m_prev, "adacompress_reask_bytes_total")),
                deviation_threshold=metric(m, "adacompress_pair_deviation_threshold"),
                latency_ms=round(1000 * (t_ans - ts), 1), request_id=hd.get("x-request-id", "")))
            m_prev = m
            if progress is not None:
                if k == 0:
                    pw = csv.DictWriter(progress, fieldnames=list(out[-1].keys()), lineterminator="\n")
                    pw.writeheader()
                pw.writerow(out[-1])
                progress.flush()
            if (k + 1) % progress_every == 0 or k + 1 == len(rows):
                if agent_log is not None:
                    # The live pair's state (`GET /agent`): which pairs the audits back, and why.
                    _s, snap = get(serve.admin, "/agent")
                    agent_log.write(json.dumps(dict(upload=k + 1, agent=json.loads(snap))) + "\n")
                    agent_log.flush()
                done = out[-progress_every:]
                agree = sum(d["top1"] == d["reference"] for d in done) / len(done)
                ratio = sum(d["hop_image_bytes"] for d in done) / sum(d["original_bytes"] for d in done)
                log(f"  stream {k + 1}/{len(rows)} ({time.time() - t0:.0f} s): last {len(done)}: "
                    f"agreement {100*agree:.1f} %, bytes {100*ratio:.1f} % of original, state {state}")
        hop.wait_idle(grace=1.0)
        m = scrape(serve.admin)
        totals = dict(estimation_bytes_total=metric(m, "adacompress_estimation_bytes_total"),
                      image_bytes_out_total=metric(m, "adacompress_image_bytes_out_total"),
                      image_bytes_in_total=metric(m, "adacompress_image_bytes_in_total"),
                      deviations_total=metric(m, "adacompress_pair_deviations_total"),
                      reasks_total=metric(m, "adacompress_reasks_total"),
                      reask_bytes_total=metric(m, "adacompress_reask_bytes_total"))
        _s, agent = get(serve.admin, "/agent")
        try:
            totals["deviation_gate"] = json.loads(agent)["pair"]["deviation"]
        except (ValueError, KeyError, TypeError):
            totals["deviation_gate"] = None
    finally:
        serve.stop()
    # late estimation bytes (after the last scrape) would break the per-upload split
    # Attribution, now that every upstream request has finished: the hop's bytes per tag are
    # everything upload i caused; serve's bytes_out delta (counted before the answer is sent)
    # is what was served; the rest is estimation.
    per_img, per_body, per_n = {}, {}, {}
    with hop.lock:
        for x in hop.records:
            per_img[x[1]] = per_img.get(x[1], 0) + x[3]
            per_body[x[1]] = per_body.get(x[1], 0) + x[2]
            per_n[x[1]] = per_n.get(x[1], 0) + 1
    drift = 0
    for d in out:
        tag = f"s{d['order']}"
        d["hop_image_bytes"] = per_img.get(tag, 0)
        d["hop_body_bytes"] = per_body.get(tag, 0)
        d["hop_requests"] = per_n.get(tag, 0)
        d["served_bytes"] = d["serve_bytes_out"]
        est = d["hop_image_bytes"] - d["served_bytes"]
        drift += est != d["estimation_bytes"]
        d["estimation_bytes_metric_delta"] = d["estimation_bytes"]
        d["estimation_bytes"] = est
    hop_total_img = sum(d["hop_image_bytes"] for d in out)
    hop_total_body = sum(d["hop_body_bytes"] for d in out)
    totals["uploads_where_metric_delta_differs"] = drift
    totals.update(hop_image_bytes=hop_total_img, hop_body_bytes=hop_total_body,
                  served_plus_estimation=totals["image_bytes_out_total"] + totals["estimation_bytes_total"],
                  seconds=time.time() - t0, agent=agent)
    totals["hop_equals_served_plus_estimation"] = int(totals["hop_image_bytes"]) == int(totals["served_plus_estimation"])
    return out, totals


# ------------------------------------------------------------------ fixed pairs
def run_pairs(rows, traffic, bin_, hop, cache, tmp, pairs, jobs):
    results = {}
    t0 = time.time()
    for pair in pairs:
        if pair == "keep":
            results[pair] = {r["sha256"]: dict(bytes=int(r["bytes"]), top1=cache.get(r["sha256"])) for r in rows}
            continue
        todo = [r for r in rows if cache.get(f"{r['sha256']}|{pair}") is None]
        if todo:
            serve = Serve(bin_, hop.port, tmp, fixed=pair, estimator=False,
                          log_path=os.path.join(tmp, f"serve-{pair}.log"))
            try:
                def one(r):
                    tag = f"p{pair}/{r['order']}"
                    s, hd, data = post(serve.port, annotate_body(read_blob(traffic, r)), {TAG: tag})
                    if s != 200:
                        raise SystemExit(f"serve ({pair}) answered {s} for {r['file']}")
                    recs = hop.by_tag(tag)
                    cache.put(f"{r['sha256']}|{pair}", dict(bytes=sum(x[3] for x in recs), top1=top1(data),
                                                          action=hd.get("x-adacompress-action", "")))
                with ThreadPoolExecutor(jobs) as ex:
                    list(ex.map(one, todo))
            finally:
                serve.stop()
            cache.save()
        results[pair] = {r["sha256"]: cache.get(f"{r['sha256']}|{pair}") for r in rows}
        log(f"  pair {pair}: {len(todo)} asked, {len(rows) - len(todo)} cached ({time.time() - t0:.0f} s)")
    return results, time.time() - t0


def parse_pair(pair):
    """(quality, side) of a candidate; keep = (101, inf), full size = side inf."""
    if pair == "keep":
        return 101, math.inf
    m = re.fullmatch(r"q(\d+)(?:@(\d+))?", pair)
    return int(m.group(1)), (int(m.group(2)) if m.group(2) else math.inf)


def subsample_pairs(dsub, traffic, bin_, hop, cache, tmp, jobs):
    """Every candidate on one deployment's subsample, except those pruned by a dominating pair
    that already agreed below PRUNE_BELOW. Returns ({pair: results}, {pair: dominator})."""
    results, pruned = {}, {}
    for pair in CANDIDATES:
        q, s = parse_pair(pair)
        dom = None
        for other, res in results.items():
            q2, s2 = parse_pair(other)
            if other != "keep" and q2 >= q and s2 >= s:
                t = pair_table(dsub, {other: res}, cache)[0][0]
                if t["agree"] < PRUNE_BELOW:
                    dom = other
                    break
        if dom:
            pruned[pair] = dom
            continue
        r, _ = run_pairs(dsub, traffic, bin_, hop, cache, tmp, [pair], jobs)
        results.update(r)
    return results, pruned


def late_search(late, sub_table, traffic, bin_, hop, cache, tmp, jobs):
    """The best and the certified pair over every upload in `late`: the pairs whose subsample
    agreement is >= LATE_BAND, cheapest (on the subsample) first, each on every upload, until one
    is certified. `keep` (the original: agreement 100 % by definition) closes the list."""
    order = sorted((t for t in sub_table if t["pair"] != "keep" and t["agree"] >= LATE_BAND),
                   key=lambda t: t["bytes_vs_original"])
    evaluated, cert = [], None
    for t in order:
        res, _ = run_pairs(late, traffic, bin_, hop, cache, tmp, [t["pair"]], jobs)
        row = pair_table(late, res, cache)[0][0]
        evaluated.append(row)
        if row["wilson_lower"] >= TARGET:
            cert = row
            break
    if cert is None:
        res, _ = run_pairs(late, traffic, bin_, hop, cache, tmp, ["keep"], jobs)
        cert = pair_table(late, res, cache)[0][0]
        evaluated.append(cert)
    best = min((t for t in evaluated if t["agree"] >= TARGET), key=lambda t: t["bytes"], default=cert)
    return evaluated, best, cert


def load_stream(out):
    """The per-upload records and totals of a previous run (--rescore)."""
    ints = {"order", "index", "status", "original_bytes", "client_body_bytes", "hop_image_bytes", "hop_body_bytes",
            "hop_requests", "served_bytes", "estimation_bytes", "estimation_uploads", "serve_bytes_out", "retrains",
            "estimation_bytes_metric_delta", "deviated", "reasked", "reask_bytes"}
    floats = {"p_est", "latency_ms", "deviation_threshold"}
    with open(out + ".csv") as f:
        recs = [{k: (int(v) if k in ints else float(v) if k in floats else v) for k, v in r.items()}
                for r in csv.DictReader(f)]
    with open(out + ".json") as f:
        prev = json.load(f)
    return recs, prev["totals"], prev["seconds"], prev.get("when")


def pair_table(rows, results, cache):
    table = []
    for pair, res in results.items():
        n = len(rows)
        k = sum(res[r["sha256"]]["top1"] == cache.get(r["sha256"]) for r in rows)
        b = sum(res[r["sha256"]]["bytes"] for r in rows)
        o = sum(int(r["bytes"]) for r in rows)
        table.append(dict(pair=pair, n=n, agree=k / n if n else 0, wilson_lower=wilson_lower(k, n),
                          bytes=b, bytes_vs_original=b / o if o else 0))
    table.sort(key=lambda t: t["bytes"])
    best = next((t for t in table if t["agree"] >= TARGET), None)
    cert = next((t for t in table if t["wilson_lower"] >= TARGET), None)
    return table, best, cert


# ------------------------------------------------------------------ report
def summarize(recs, best, cert):
    n = len(recs)
    if n == 0:
        return None
    orig = sum(d["original_bytes"] for d in recs)
    hop = sum(d["hop_image_bytes"] for d in recs)
    est = sum(d["estimation_bytes"] for d in recs)
    k = sum(d["top1"] == d["reference"] for d in recs)
    pairs = {}
    for d in recs:
        a = d["action"] or "?"
        pairs[a] = pairs.get(a, 0) + 1
    s = dict(uploads=n, original_bytes=orig, upstream_bytes=hop, estimation_bytes=est,
             bytes_vs_original=hop / orig, agreement=k / n, agreement_wilson_lower=wilson_lower(k, n),
             estimation_share=est / hop if hop else 0.0,
             pairs_served=dict(sorted(pairs.items(), key=lambda x: -x[1])[:8]), distinct_pairs=len(pairs),
             deviated=sum(int(d.get("deviated") or 0) for d in recs),
             reasked=sum(int(d.get("reasked") or 0) for d in recs),
             reask_share=sum(int(d.get("reask_bytes") or 0) for d in recs) / hop if hop else 0.0)
    for name, ref in (("best", best), ("certified", cert)):
        if ref:
            s[f"bytes_vs_{name}_pair"] = (hop / orig) / ref["bytes_vs_original"] if ref["bytes_vs_original"] else None
    return s


def windows(recs, w=100):
    """Windows of w uploads, restarting at each deployment's first upload."""
    out = []
    cuts = []
    i = 0
    while i < len(recs):
        j = i
        while j < len(recs) and j - i < w and recs[j]["deployment"] == recs[i]["deployment"]:
            j += 1
        cuts.append((i, j))
        i = j
    for i, j in cuts:
        c = recs[i:j]
        orig = sum(d["original_bytes"] for d in c)
        hop = sum(d["hop_image_bytes"] for d in c)
        est = sum(d["estimation_bytes"] for d in c)
        out.append(dict(start=i, end=i + len(c), deployment=c[0]["deployment"],
                        bytes_vs_original=hop / orig, agreement=sum(d["top1"] == d["reference"] for d in c) / len(c),
                        estimation_share=est / hop if hop else 0))
    return out


def svg(wins, bounds, path, title):
    W, H, L, R, T, B = 900, 560, 60, 20, 40, 40
    panels = [("bytes vs original", "bytes_vs_original", 0, 1.0, "#1f77b4"),
              ("top-1 agreement", "agreement", 0.8, 1.0, "#2ca02c"),
              ("estimation share of the upstream bytes", "estimation_share", 0, 0.5, "#d62728")]
    n = max((x["end"] for x in wins), default=1)
    wsize = max((x["end"] - x["start"] for x in wins), default=0)
    ph = (H - T - B) / len(panels)
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W/2}" y="18" text-anchor="middle" font-size="13">{title}</text>']
    for pi, (label, key, lo, hi, col) in enumerate(panels):
        y0 = T + pi * ph + 8
        h = ph - 24
        vals = [x[key] for x in wins]
        if vals:
            hi = max(hi, max(vals))
            lo = min(lo, min(vals))
        X = lambda i: L + (W - L - R) * i / n
        Y = lambda v: y0 + h - h * (v - lo) / ((hi - lo) or 1)
        o.append(f'<rect x="{L}" y="{y0}" width="{W-L-R}" height="{h}" fill="none" stroke="#999"/>')
        o.append(f'<text x="{L+4}" y="{y0+12}">{label} (windows of {wsize} uploads)</text>')
        for v in (lo, (lo + hi) / 2, hi):
            o.append(f'<text x="{L-4}" y="{Y(v)+4}" text-anchor="end">{v:.2f}</text>')
        if key == "agreement":
            o.append(f'<line x1="{L}" x2="{W-R}" y1="{Y(TARGET)}" y2="{Y(TARGET)}" stroke="#888" stroke-dasharray="4 3"/>')
        for b, name in bounds:
            o.append(f'<line x1="{X(b)}" x2="{X(b)}" y1="{y0}" y2="{y0+h}" stroke="#bbb"/>')
            if pi == 0:
                o.append(f'<text x="{X(b)+3}" y="{y0-2}" fill="#555">{name}</text>')
        pts = " ".join(f"{X((x['start']+x['end'])/2):.1f},{Y(x[key]):.1f}" for x in wins)
        o.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="2"/>')
        for x in wins:
            o.append(f'<circle cx="{X((x["start"]+x["end"])/2):.1f}" cy="{Y(x[key]):.1f}" r="2.5" fill="{col}"/>')
    o.append(f'<text x="{W/2}" y="{H-8}" text-anchor="middle">upload (order in the stream)</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def pct(x):
    return "–" if x is None else f"{100*x:.1f} %"


def ratio(x):
    return "–" if x is None else f"{x:.2f}×"


def render_md(res, path):
    L = [f"# {res['title']} — {res['mode']}", "",
         f"Generated by `{res['command']}` on {res['when']} ({res['machine']}); one run. "
         f"Uploads: {res['uploads']} in {len(res['deployments'])} deployments, sent one at a time "
         "through `adacompress serve` → recording hop → `adacompress backend` (EfficientNet-Lite2). "
         "Bytes are JPEG bytes in the upstream requests counted at the hop (estimation included); "
         "agreement is top-1 against the backend asked directly with the original.", "",
         f"Hop total {res['totals']['hop_image_bytes']:,} B; serve's served + estimation bytes "
         f"{int(res['totals']['served_plus_estimation']):,} B: "
         f"**{'equal' if res['totals']['hop_equals_served_plus_estimation'] else 'NOT equal'}**.", "",
         f"Fixed pairs: {len(res['candidates'])} candidates ({', '.join(res['candidates'])}) on the subsample "
         f"every {res['subsample']}th upload of each deployment (index % {res['subsample']} == 0); "
         "\"best\" = cheapest reaching 97 % top-1 there, \"certified\" = cheapest whose 95 % Wilson lower "
         "bound clears 97 %. A pair is not measured where a pair at least as faithful (side and quality) "
         f"agreed below {100*PRUNE_BELOW:.0f} % (\"–\" below). Rows \"all\" compare with the subsample's pairs. "
         "Rows \"750+\" compare with the pairs measured on **every** upload 750+ of the deployment: every "
         f"pair whose subsample agreement is at least {100*LATE_BAND:.0f} %, cheapest first, until one is "
         "certified (next section). Bytes vs a pair = (stream's bytes / original) ÷ (pair's bytes / original "
         "on the same uploads).", ""]
    L += ["| deployment | part | uploads | bytes vs original | vs best pair | vs certified pair | top-1 agreement (95 % lower) | estimation share | re-asked (bytes share) | pairs served (top 3) |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for dep, d in res["deployments"].items():
        for part in ("all", "750+"):
            s = d["stream"].get(part)
            if not s:
                continue
            top = ", ".join(f"{k} {v}" for k, v in list(s["pairs_served"].items())[:3])
            L.append(f"| {dep} | {part} | {s['uploads']} | {pct(s['bytes_vs_original'])} | {ratio(s.get('bytes_vs_best_pair'))} "
                     f"| {ratio(s.get('bytes_vs_certified_pair'))} | {pct(s['agreement'])} ({pct(s['agreement_wilson_lower'])}) "
                     f"| {pct(s['estimation_share'])} | {s.get('reasked', 0)} ({pct(s.get('reask_share', 0.0))}) | {top} ({s['distinct_pairs']} distinct) |")
    s = res["whole_run"]
    L.append(f"| **whole run** | all | {s['uploads']} | {pct(s['bytes_vs_original'])} | | | {pct(s['agreement'])} "
             f"({pct(s['agreement_wilson_lower'])}) | {pct(s['estimation_share'])} | {s.get('reasked', 0)} ({pct(s.get('reask_share', 0.0))}) | {s['distinct_pairs']} distinct |")
    late = {dep: d for dep, d in res["deployments"].items() if d.get("late_pairs")}
    if late:
        L += ["", "## Fixed pairs in hindsight over every upload 750+", "",
              "| deployment | best pair (97 %) | its agreement | its bytes vs original | certified pair | its lower bound "
              "| its bytes vs original | pairs measured (agreement / bytes vs original) |",
              "|---|---|---:|---:|---|---:|---:|---|"]
        for dep, d in late.items():
            b, c = d["best_750"], d["certified_750"]
            tried = ", ".join(f"{t['pair']} {pct(t['agree'])} / {pct(t['bytes_vs_original'])}" for t in d["late_pairs"])
            L.append(f"| {dep} (n={d['late_n']}) | {b['pair']} | {pct(b['agree'])} | {pct(b['bytes_vs_original'])} "
                     f"| {c['pair']} | {pct(c['wilson_lower'])} | {pct(c['bytes_vs_original'])} | {tried} |")
    gate = res["totals"].get("deviation_gate")
    if gate is not None or "deviations_total" in res["totals"]:
        per = ", ".join(f"{dep} {d['stream']['all'].get('deviated', 0)}" for dep, d in res["deployments"].items()
                        if d["stream"].get("all"))
        L += ["", f"Per-image deviations (`pair.deviation_floor`): images sent at their candidate below the live pair: "
                  f"{per}. The gate at the end: {json.dumps(gate)}."]
    L += ["", "## Fixed pairs in hindsight (subsample)", "",
          "| deployment | best pair (97 %) | its agreement | its bytes vs original | certified pair (lower bound ≥ 97 %) | its lower bound | its bytes vs original |",
          "|---|---|---:|---:|---|---:|---:|"]
    for dep, d in res["deployments"].items():
        b, c = d.get("best"), d.get("certified")
        L.append(f"| {dep} (n={d['subsample_n']}) | {b['pair'] if b else 'none'} | {pct(b and b['agree'])} | {pct(b and b['bytes_vs_original'])} "
                 f"| {c['pair'] if c else 'none'} | {pct(c and c['wilson_lower'])} | {pct(c and c['bytes_vs_original'])} |")
    L += ["", "All candidates, per deployment (agreement / bytes vs original):", "",
          "| pair | " + " | ".join(res["deployments"]) + " |", "|---|" + "---:|" * len(res["deployments"])]
    for pair in res["candidates"]:
        cells = []
        for dep, d in res["deployments"].items():
            t = next((t for t in d["pairs"] if t["pair"] == pair), None)
            cells.append(f"{pct(t['agree'])} / {pct(t['bytes_vs_original'])}" if t else "–")
        L.append(f"| {pair} | " + " | ".join(cells) + " |")
    L += ["", f"![stream]({res['svg']})", "",
          f"Runtime: traffic {res['seconds'].get('traffic', 0):.0f} s (if built in this run), reference answers "
          f"{res['seconds']['references']:.0f} s, stream {res['seconds']['stream']:.0f} s, fixed pairs "
          f"{res['seconds']['pairs']:.0f} s, total {res['seconds']['total']:.0f} s.", ""]
    with open(path, "w") as f:
        f.write("\n".join(L))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "adacompress"))
    ap.add_argument("--lite2", default=".cache/models/efficientnet-lite2.onnx")
    ap.add_argument("--traffic", default="data/stream")
    ap.add_argument("--short", type=int, default=0, help="only the first N uploads of each deployment")
    ap.add_argument("--subsample", type=int, default=5)
    ap.add_argument("--agent", default="models/agent-calibrated.json", help="agent.checkpoint of the serve under test")
    ap.add_argument("--fixed", default=None, help="run the stream with agent.fixed = PAIR instead of the agent")
    ap.add_argument("--out", default="docs/bench/stream")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cache", default=".cache/stream-answers.json")
    ap.add_argument("--answers", default="docs/bench/stream-answers.json.gz",
                    help="committed answers that seed the cache (originals and fixed pairs); '' to ask the backend for every one")
    ap.add_argument("--no-pairs", action="store_true")
    ap.add_argument("--rescore", action="store_true",
                    help="do not run the stream: reload OUT.csv/json of the last run and redo the fixed pairs")
    ap.add_argument("--command", default="scripts/stream_bench.sh", help="the script named as the way to reproduce")
    ap.add_argument("--title", default="Stream benchmark (issue 15)")
    ap.add_argument("--traffic-seconds", type=float, default=0)
    a = ap.parse_args()
    global AGENT
    AGENT = a.agent
    os.chdir(ROOT)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    t_start = time.time()
    with open(os.path.join(a.traffic, "manifest.csv")) as f:
        rows = list(csv.DictReader(f))
    if a.short:
        rows = [r for r in rows if int(r["index"]) < a.short]
    rows.sort(key=lambda r: int(r["order"]))
    log(f"{len(rows)} uploads from {a.traffic}/manifest.csv")
    cache = Cache(a.cache, a.answers or None)
    tmp = tempfile.mkdtemp(prefix="stream-bench-")
    bport = free_port()
    blog = open(os.path.join(tmp, "backend.log"), "ab")
    backend = subprocess.Popen([a.bin, "backend", "--model", a.lite2, "--classes", "models/imagenet_classes.txt",
                                "--listen", f"127.0.0.1:{bport}"], cwd=ROOT, stdout=blog, stderr=blog)
    try:
        wait_http(bport, "/metrics", proc=backend)
        hop = Hop(bport)
        secs = dict(traffic=a.traffic_seconds)
        secs["references"] = references(rows, a.traffic, bport, cache, a.jobs)
        if a.rescore:
            recs, totals, prev_secs, prev_when = load_stream(a.out)
            secs["stream"] = prev_secs["stream"]
            log(f"rescoring the stream of {prev_when} ({len(recs)} uploads from {a.out}.csv)")
        else:
            log(f"stream through serve ({'agent.fixed = ' + a.fixed if a.fixed else 'the default agent'}) ...")
            # one row per upload as it happens (numbers as seen then), for a run cut short
            # and the live pair's state every progress step (`GET /agent`, one JSON a line)
            with open(a.out + ".progress.csv", "w", newline="") as progress, \
                    open(a.out + ".agent.jsonl", "w") as agent_log:
                recs, totals = run_stream(rows, a.traffic, a.bin, hop, cache, tmp, a.fixed,
                                          progress_every=20 if a.short else 100, progress=progress,
                                          agent_log=agent_log)
            secs["stream"] = totals.pop("seconds")
        log(f"hop {totals['hop_image_bytes']:,} B, serve out+estimation {int(totals['served_plus_estimation']):,} B: "
            f"{'equal' if totals['hop_equals_served_plus_estimation'] else 'NOT EQUAL'}")
        sub = [r for r in rows if int(r["index"]) % a.subsample == 0]
        pairs = [] if a.no_pairs else CANDIDATES
        cache.refresh()
        t_pairs = time.time()
        deps = {}
        bounds = []
        for dep in deployments(rows):
            drecs = [d for d in recs if d["deployment"] == dep]
            if not drecs:
                continue
            bounds.append((recs.index(drecs[0]), dep))
            dsub = [r for r in sub if r["deployment"] == dep]
            table, best, cert, pruned = [], None, None, {}
            if pairs:
                log(f"fixed pairs, {dep}: up to {len(pairs)} candidates on {len(dsub)} subsampled uploads ...")
                results, pruned = subsample_pairs(dsub, a.traffic, a.bin, hop, cache, tmp, a.jobs)
                table, best, cert = pair_table(dsub, results, cache)
            late = [d for d in drecs if d["index"] >= 750]
            deps[dep] = dict(subsample_n=len(dsub), pairs=table, pruned=pruned, best=best, certified=cert)
            lbest, lcert = best, cert
            if late and table and not a.short:
                lrows = [r for r in rows if r["deployment"] == dep and int(r["index"]) >= 750]
                log(f"fixed pairs, {dep}: searching every one of {len(lrows)} uploads 750+ ...")
                evaluated, lbest, lcert = late_search(lrows, table, a.traffic, a.bin, hop, cache, tmp, a.jobs)
                deps[dep].update(late_n=len(lrows), late_pairs=evaluated, best_750=lbest, certified_750=lcert)
                log(f"  {dep} 750+: best {lbest['pair']} ({100*lbest['agree']:.1f} %), "
                    f"certified {lcert['pair']} (lower {100*lcert['wilson_lower']:.1f} %)")
            deps[dep]["stream"] = {"all": summarize(drecs, best, cert), "750+": summarize(late, lbest, lcert)}
        secs["pairs"] = time.time() - t_pairs
    finally:
        backend.terminate()
        backend.wait(30)
        cache.save()
    wins = windows(recs, 20 if a.short and a.short < 200 else 100)
    secs["total"] = time.time() - t_start + a.traffic_seconds
    overrides = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("ADACOMPRESS_"))
    settings = "config overrides " + ", ".join(overrides) if overrides else "default [pair] settings"
    mode = f"agent.fixed = {a.fixed}" if a.fixed else f"serve's agent {a.agent} (the live pair, {settings})"
    cmd = a.command + (f" --short {a.short}" if a.short else "") + (f" --fixed {a.fixed}" if a.fixed else "")
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except Exception:
        cpu = platform.processor()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if a.rescore:
        cmd += " --rescore"
        when = f"{prev_when} (fixed pairs rescored {when})"
    res = dict(title=a.title, mode=mode, command=cmd, when=when,
               machine=f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}",
               uploads=len(recs), subsample=a.subsample, candidates=pairs, totals=totals, seconds=secs,
               whole_run=summarize(recs, None, None), deployments=deps, windows=wins,
               svg=os.path.basename(a.out) + ".svg")
    with open(a.out + ".json", "w") as f:
        json.dump(res, f, indent=1)
    with open(a.out + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(recs[0].keys()), lineterminator="\n")
        w.writeheader()
        w.writerows(recs)
    svg(wins, bounds, a.out + ".svg", f"Stream benchmark: {len(recs)} uploads, {mode}")
    render_md(res, a.out + ".md")
    log(f"wrote {a.out}.{{md,csv,json,svg}} in {secs['total']:.0f} s")
    if os.environ.get("STREAM_BENCH_KEEP_LOGS") and os.path.exists(os.path.join(tmp, "serve-stream.log")):
        shutil.copy(os.path.join(tmp, "serve-stream.log"), a.out + ".serve-stream.log")
    shutil.rmtree(tmp, ignore_errors=True)
    if not totals["hop_equals_served_plus_estimation"]:
        log("WARNING: hop bytes != served + estimation bytes")


if __name__ == "__main__":
    main()

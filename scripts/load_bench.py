#!/usr/bin/env python3
"""Helper of scripts/load_bench.sh (standard library only).

  load_bench.py body PHOTO OUT.json       the Google Vision images:annotate body for PHOTO
  load_bench.py ports N                   N free loopback ports, one a line
  load_bench.py mem PID                   VmRSS / VmHWM of PID (KiB) as JSON
  load_bench.py run ...                   one wrk run; appends a record to --out (JSONL)
  load_bench.py report ...                docs/bench/load.{csv,json,md,svg} from the records

`run` reads the CPU time (utime + stime, all threads) of the proxy and backend processes
from /proc/PID/stat before and after wrk, and a few counters from both /metrics pages, so
each record holds the proxy's CPU per completed request and what the proxy did meanwhile.
"""
import argparse
import base64
import csv
import json
import math
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count()

# The configurations, in the order the report lists them.
CONFIGS = {
    "backend": "(a) straight to the backend",
    "agent": "(b) proxy, agent",
    "fixed": "(e) proxy, agent.fixed = the agent's pair",
    "q75": "(c) proxy, forced Q75 (floor)",
    "bypass": "(d) proxy, bypass",
}


# ---------------------------------------------------------------- small commands

def jpeg_size(data):
    """(width, height) from a JPEG's SOF marker."""
    i = 2
    while i < len(data) - 9:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        seg = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + seg
    return None


def cmd_body(args):
    with open(args.photo, "rb") as f:
        data = f.read()
    body = {"requests": [{
        "image": {"content": base64.b64encode(data).decode()},
        "features": [{"type": "LABEL_DETECTION", "maxResults": 5}],
    }]}
    with open(args.out, "w") as f:
        json.dump(body, f)
    w, h = jpeg_size(data) or (0, 0)
    print(json.dumps({"photo": args.photo, "photo_bytes": len(data), "width": w, "height": h,
                      "body_bytes": os.path.getsize(args.out)}))


def cmd_ports(args):
    socks = []
    for _ in range(args.n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    for s in socks:
        print(s.getsockname()[1])
        s.close()


def mem(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1])
    return out


def cmd_mem(args):
    print(json.dumps(mem(args.pid)))


# ---------------------------------------------------------------- one run

def cpu_seconds(pid):
    """utime + stime of every thread of PID, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the ")" the fields start at 3 (state): utime is field 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds():
    """CPU seconds spent busy by the whole machine (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest is already in user)
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK


def children_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


WATCHED = ("adacompress_passthrough_total", "adacompress_estimation_uploads_total",
           "adacompress_estimation_skipped_total", "adacompress_retrains_total",
           "adacompress_requests_total", "adacompress_backend_requests_total",
           "adacompress_backend_throttled_total", "adacompress_upstream_errors_total")


def scrape(url):
    """The counters in WATCHED from a Prometheus text page; {} if it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        if name.split("{", 1)[0] in WATCHED:
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def diff(after, before):
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def agent_state(admin):
    try:
        with urllib.request.urlopen(f"{admin}/agent", timeout=5) as r:
            a = json.load(r)
        out = {k: a.get(k) for k in ("state", "version", "p_est", "retrains", "memory", "estimates")}
        pair = a.get("pair") or {}
        out["pair"] = {k: pair.get(k) for k in ("served", "certified", "learning", "audits", "drifts",
                                                 "default_stepups", "estimation_share")}
        return out
    except (OSError, ValueError):
        return {}


def cmd_run(args):
    env = dict(os.environ, LOAD_BODY=args.body, LOAD_HEADER=args.header or "")
    wrk = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s",
           "--timeout", f"{args.timeout}s", "--latency", "-s", args.script, args.url]
    pids = {"proxy": args.proxy_pid, "backend": args.backend_pid}
    m_before = {**scrape(f"{args.admin}/metrics"), **scrape(f"{args.backend}/metrics")}
    cpu_before = {k: cpu_seconds(p) for k, p in pids.items()}
    busy_before, wrk_before = machine_busy_seconds(), children_cpu_seconds()
    t0 = time.monotonic()
    # Bounded: wrk stops itself after --duration; `timeout` is the backstop.
    proc = subprocess.run(["timeout", "-k", "5", str(args.duration + args.timeout + 15)] + wrk,
                          env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    cpu_after = {k: cpu_seconds(p) for k, p in pids.items()}
    busy = machine_busy_seconds() - busy_before
    wrk_cpu = children_cpu_seconds() - wrk_before
    m_after = {**scrape(f"{args.admin}/metrics"), **scrape(f"{args.backend}/metrics")}
    if args.log:
        with open(args.log, "a") as f:
            f.write(f"### {args.phase} {args.config} round {args.round}: {' '.join(wrk)}\n")
            f.write(proc.stdout)
            f.write(proc.stderr)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("LOADJSON ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"load_bench: wrk failed ({proc.returncode}) for {args.config}:\n"
                 f"{proc.stdout}\n{proc.stderr}")
    w = json.loads(line[len("LOADJSON "):])
    n = w["requests"]
    rec = {
        "phase": args.phase, "config": args.config, "round": args.round, "url": args.url,
        "header": args.header or "", "connections": args.connections, "threads": args.threads,
        "duration_s": w["duration_us"] / 1e6, "wall_s": wall,
        "requests": n, "rps": n / (w["duration_us"] / 1e6),
        "p50_ms": w["latency_us"]["percentiles"]["50"] / 1000,
        "p90_ms": w["latency_us"]["percentiles"]["90"] / 1000,
        "p99_ms": w["latency_us"]["percentiles"]["99"] / 1000,
        "max_ms": w["latency_us"]["max"] / 1000,
        "mean_ms": w["latency_us"]["mean"] / 1000,
        "socket_errors": w["errors"],
        "statuses": w["statuses"],
        "non200": sum(v for k, v in w["statuses"].items() if k != "200"),
        "status_429": w["statuses"].get("429", 0),
        "bad_bodies": w["bad_bodies"],
        "actions": w["actions"], "top1": w["top1"],
        "proxy_cpu_s": cpu_after["proxy"] - cpu_before["proxy"],
        "backend_cpu_s": cpu_after["backend"] - cpu_before["backend"],
        "proxy_cpu_ms_per_req": 1000 * (cpu_after["proxy"] - cpu_before["proxy"]) / n if n else None,
        "backend_cpu_ms_per_req": 1000 * (cpu_after["backend"] - cpu_before["backend"]) / n if n else None,
        "wrk_cpu_s": wrk_cpu,
        # Busy CPU of the whole machine not spent by the proxy, the backend or wrk: other
        # work that would skew the run (should be near 0).
        "other_cpu_s": busy - wrk_cpu - sum(cpu_after[k] - cpu_before[k] for k in pids),
        "machine_busy_pct": 100 * busy / (wall * os.cpu_count()),
        "metrics_delta": diff(m_after, m_before),
        "agent": agent_state(args.admin),
    }
    rec["errors"] = (rec["non200"] + rec["bad_bodies"] + sum(w["errors"].values()))
    # wrk's Requests/sec line counts responses; the records add what was wrong with them.
    with open(args.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"load_bench: {args.phase:8} {args.config:8} r{args.round}  {n:5} req  "
          f"{rec['rps']:6.2f} req/s  p50 {rec['p50_ms']:7.1f} ms  p99 {rec['p99_ms']:7.1f} ms  "
          f"errors {rec['errors']}  proxy CPU {rec['proxy_cpu_ms_per_req'] or 0:.2f} ms/req  "
          f"actions {w['actions']}", flush=True)


# ---------------------------------------------------------------- report

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(runs):
    """Per configuration: medians over its rounds, totals of counts."""
    out = {}
    for c in CONFIGS:
        rs = [r for r in runs if r["config"] == c]
        if not rs:
            continue
        actions, top1 = {}, {}
        for r in rs:
            for k, v in r["actions"].items():
                actions[k] = actions.get(k, 0) + v
            for k, v in r["top1"].items():
                top1[k] = top1.get(k, 0) + v
        out[c] = {
            "config": c, "label": CONFIGS[c], "rounds": len(rs),
            "requests": sum(r["requests"] for r in rs),
            "rps": med(r["rps"] for r in rs),
            "p50_ms": med(r["p50_ms"] for r in rs),
            "p99_ms": med(r["p99_ms"] for r in rs),
            "max_ms": max(r["max_ms"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "non200": sum(r["non200"] for r in rs),
            "status_429": sum(r["status_429"] for r in rs),
            "bad_bodies": sum(r["bad_bodies"] for r in rs),
            "socket_errors": sum(sum(r["socket_errors"].values()) for r in rs),
            "proxy_cpu_ms_per_req": med(r["proxy_cpu_ms_per_req"] for r in rs),
            "backend_cpu_ms_per_req": med(r["backend_cpu_ms_per_req"] for r in rs),
            "other_cpu_pct": med(100 * r["other_cpu_s"] / (r["wall_s"] * CORES) for r in rs),
            "machine_busy_pct": med(r["machine_busy_pct"] for r in rs),
            "rps_runs": [round(r["rps"], 2) for r in rs],
            "proxy_cpu_runs": [round(r["proxy_cpu_ms_per_req"], 2) for r in rs],
            "actions": actions, "top1": top1,
        }
    return out


def fmt(x, nd=1):
    return "–" if x is None else f"{x:.{nd}f}"


def targets(loaded):
    """The issue's two targets, computed from the loaded medians."""
    a, b, c, d = (loaded.get(k) for k in ("backend", "agent", "q75", "bypass"))
    t = {}
    if b and c and d:
        added = b["proxy_cpu_ms_per_req"] - d["proxy_cpu_ms_per_req"]
        floor = c["proxy_cpu_ms_per_req"] - d["proxy_cpu_ms_per_req"]
        ratio = added / floor if floor > 0 else None
        t["cpu"] = {"agent_added_ms": added, "floor_ms": floor, "ratio": ratio, "target": 1.5,
                    "met": ratio is not None and ratio <= 1.5}
    if b and c:
        ratio = b["rps"] / c["rps"] if c["rps"] else None
        t["throughput"] = {"agent_rps": b["rps"], "floor_rps": c["rps"], "ratio": ratio,
                           "target": 0.6, "met": ratio is not None and ratio >= 0.6}
    e = loaded.get("fixed")
    if b and e and d:
        added = b["proxy_cpu_ms_per_req"] - d["proxy_cpu_ms_per_req"]
        fixed = e["proxy_cpu_ms_per_req"] - d["proxy_cpu_ms_per_req"]
        ratio = added / fixed if fixed > 0 else None
        t["cpu_vs_fixed"] = {"agent_added_ms": added, "fixed_added_ms": fixed, "ratio": ratio,
                             "target": 1.5, "met": ratio is not None and ratio <= 1.5}
    if b and e:
        ratio = b["rps"] / e["rps"] if e["rps"] else None
        t["throughput_vs_fixed"] = {"agent_rps": b["rps"], "fixed_rps": e["rps"], "ratio": ratio,
                                    "target": 0.6, "met": ratio is not None and ratio >= 0.6}
    total = sum(x["errors"] for x in loaded.values())
    t["errors"] = {"total": total, "met": total == 0}
    if a:
        t["added_latency_ms"] = {
            k: {"p50": loaded[k]["p50_ms"] - a["p50_ms"], "p99": loaded[k]["p99_ms"] - a["p99_ms"]}
            for k in ("agent", "fixed", "q75", "bypass") if k in loaded}
    return t


def verdict_cpu(t):
    if t["met"]:
        return f"**met** ({t['ratio']:.2f}× ≤ 1.5×)"
    return (f"**missed by {t['ratio'] - 1.5:.2f}×** ({t['ratio']:.2f}× against ≤ 1.5×: the agent path "
            f"costs {t['ratio'] / 1.5:.1f}× the allowed CPU)")


def verdict_rps(t):
    if t["met"]:
        return f"**met** ({t['ratio']:.2f}× ≥ 0.6×)"
    return (f"**missed by {0.6 - t['ratio']:.2f}×** ({t['ratio']:.2f}× against ≥ 0.6×: "
            f"{100 * (1 - t['ratio'] / 0.6):.0f} % short)")


def nice_step(x):
    """The smallest 1, 2 or 5 × 10^k at least x."""
    e = 10 ** math.floor(math.log10(x)) if x > 0 else 1
    for m in (1, 2, 5, 10):
        if m * e >= x:
            return m * e
    return 10 * e


def svg(loaded, unloaded, path):
    """Two bar panels by hand: latency p50/p99 (loaded and 1 connection) and throughput."""
    keys = [k for k in CONFIGS if k in loaded]
    W, H = 900, 420
    colors = {"p50": "#4c78a8", "p99": "#9ecae9", "u50": "#f58518", "rps": "#54a24b"}
    out = [f'<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg" '
           'font-family="sans-serif">',
           f'<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="16">Load: one 1024×682 photo, '
           f'{loaded[keys[0]].get("connections", "")} wrk connections (medians over rounds)</text>']

    def panel(x0, width, title, unit, series):
        top, bottom = 60, H - 70
        vmax = max(v for _, vals, _ in series for v in vals if v is not None) or 1
        step = nice_step(vmax * 1.05 / 5)
        ticks = math.ceil(vmax * 1.05 / step)
        vmax = step * ticks
        out.append(f'<text x="{x0 + width / 2}" y="{top - 14}" text-anchor="middle" font-size="13">'
                   f'{title}</text>')
        out.append(f'<line x1="{x0}" y1="{bottom}" x2="{x0 + width}" y2="{bottom}" stroke="#000"/>')
        out.append(f'<line x1="{x0}" y1="{top}" x2="{x0}" y2="{bottom}" stroke="#000"/>')
        for i in range(ticks + 1):
            v = step * i
            y = bottom - (bottom - top) * i / ticks
            out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + width}" y2="{y:.1f}" stroke="#000" '
                       'stroke-opacity="0.1"/>')
            out.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{v:g}</text>')
        out.append(f'<text x="{x0 - 36}" y="{(top + bottom) / 2}" font-size="11" text-anchor="middle" '
                   f'transform="rotate(-90 {x0 - 36} {(top + bottom) / 2})">{unit}</text>')
        group = width / len(keys)
        bw = group * 0.7 / len(series)
        for gi, k in enumerate(keys):
            gx = x0 + gi * group + group * 0.15
            for si, (name, vals, color) in enumerate(series):
                v = vals[gi]
                if v is None:
                    continue
                h = (bottom - top) * v / vmax
                x = gx + si * bw
                out.append(f'<rect x="{x:.1f}" y="{bottom - h:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
                           f'fill="{color}"><title>{CONFIGS[k]} {name}: {v:.1f}</title></rect>')
                out.append(f'<text x="{x + (bw - 2) / 2:.1f}" y="{bottom - h - 3:.1f}" text-anchor="middle" '
                           f'font-size="9">{v:.0f}</text>')
            for li, text in enumerate((CONFIGS[k].split(" ", 1)[0], k)):
                out.append(f'<text x="{x0 + gi * group + group / 2:.1f}" y="{bottom + 14 + 12 * li}" '
                           f'text-anchor="middle" font-size="11">{text}</text>')
        lx = x0
        for name, _, color in series:
            out.append(f'<rect x="{lx}" y="{bottom + 40}" width="10" height="10" fill="{color}"/>')
            out.append(f'<text x="{lx + 14}" y="{bottom + 49}" font-size="11">{name}</text>')
            lx += 14 + 7 * len(name) + 14

    lat = [("p50 loaded", [loaded[k]["p50_ms"] for k in keys], colors["p50"]),
           ("p99 loaded", [loaded[k]["p99_ms"] for k in keys], colors["p99"])]
    if unloaded:
        lat.append(("p50, 1 connection", [unloaded.get(k, {}).get("p50_ms") for k in keys], colors["u50"]))
    panel(80, 480, "Latency (ms)", "ms", lat)
    panel(640, 240, "Throughput (req/s)", "req/s",
          [("req/s", [loaded[k]["rps"] for k in keys], colors["rps"])])
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def cmd_report(args):
    with open(args.runs) as f:
        runs = [json.loads(l) for l in f if l.strip()]
    with open(args.meta) as f:
        meta = json.load(f)
    loaded = summarize([r for r in runs if r["phase"] == "loaded"])
    unloaded = summarize([r for r in runs if r["phase"] == "unloaded"])
    for v in loaded.values():
        v["connections"] = meta["connections"]
    t = targets(loaded)
    if unloaded:
        tu = targets(unloaded)
        t["unloaded"] = {k: tu[k] for k in ("cpu", "throughput", "added_latency_ms", "cpu_vs_fixed",
                                            "throughput_vs_fixed") if k in tu}
    os.makedirs(args.out_dir, exist_ok=True)
    base = os.path.join(args.out_dir, "load")

    cols = ["phase", "config", "round", "connections", "requests", "rps", "p50_ms", "p90_ms", "p99_ms",
            "max_ms", "errors", "non200", "status_429", "bad_bodies", "proxy_cpu_ms_per_req",
            "backend_cpu_ms_per_req", "wrk_cpu_s", "other_cpu_s", "machine_busy_pct", "actions"]
    with open(base + ".csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(cols)
        for r in runs:
            wr.writerow([json.dumps(r[c], sort_keys=True) if isinstance(r[c], dict)
                         else (f"{r[c]:.3f}" if isinstance(r[c], float) else r[c]) for c in cols])
    with open(base + ".json", "w") as f:
        json.dump({"meta": meta, "loaded": loaded, "unloaded": unloaded, "targets": t, "runs": runs},
                  f, indent=1)
    svg(loaded, unloaded, base + ".svg")

    m = meta
    L = []
    w = L.append
    w("# Load run\n")
    w(f"Generated by `scripts/load_bench.sh` on {m['date']} (commit `{m['commit']}`). "
      f"{m['cpu']}, {m['cores']} cores; {m['wrk']}; the proxy, the backend and wrk share the machine.\n")
    w(f"- Photo: `{m['photo']}` ({m['width']}×{m['height']}, {m['photo_bytes']} bytes) in one Google "
      f"Vision `images:annotate` body ({m['body_bytes']} bytes, base64, LABEL_DETECTION), every request.")
    w(f"- wrk: {m['connections']} connections, {m['threads']} threads, {m['duration']} s per run, "
      f"`--timeout {m['timeout']}s`; {m['rounds']} rounds in the order {m['order']} (medians over the "
      f"rounds; requests and errors are totals).")
    w(f"- Backend: `adacompress backend --model models/efficientnet-lite0.onnx` (224 px), "
      f"concurrency = cores, `--queue {m['backend_queue']}`. Proxy: `adacompress serve --config "
      "config/adacompress.toml`, fresh state dir, log level warn.")
    w("- An error is a socket error or timeout, a status other than 200, or a 200 whose body is not a "
      "whole answer with `labelAnnotations`. Proxy CPU = utime + stime of the serve process over the "
      "run (/proc/PID/stat) ÷ completed requests. Machine busy = all cores' busy time over the run "
      "(/proc/stat); other = the part of it spent by neither proxy, backend nor wrk (other work on "
      "the machine; near 0 when the run was clean).\n")
    w("| config | requests | req/s (runs) | p50 ms | p99 ms | errors | 429s | proxy CPU ms/req (runs) | backend CPU ms/req | machine busy / other | proxy's action |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for k, v in loaded.items():
        acts = ", ".join(f"{a} {n}" for a, n in sorted(v["actions"].items(), key=lambda x: -x[1]))
        w(f"| {v['label']} | {v['requests']} | {fmt(v['rps'], 2)} ({', '.join(map(str, v['rps_runs']))}) | "
          f"{fmt(v['p50_ms'])} | {fmt(v['p99_ms'])} | {v['errors']} | {v['status_429']} | "
          f"{fmt(v['proxy_cpu_ms_per_req'], 2)} ({', '.join(map(str, v['proxy_cpu_runs']))}) | "
          f"{fmt(v['backend_cpu_ms_per_req'], 1)} | {fmt(v['machine_busy_pct'], 0)} % / "
          f"{fmt(v['other_cpu_pct'], 1)} % | {acts if k != 'backend' else '–'} |")
    w("")
    if unloaded:
        w(f"Unloaded latency, 1 connection, 1 thread, {m['unloaded_duration']} s each (no queueing: "
          "what one request pays):\n")
        w("| config | requests | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors | proxy CPU ms/req |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        ua = unloaded.get("backend")
        for k, v in unloaded.items():
            add50 = v["p50_ms"] - ua["p50_ms"] if ua and k != "backend" else None
            add99 = v["p99_ms"] - ua["p99_ms"] if ua and k != "backend" else None
            w(f"| {v['label']} | {v['requests']} | {fmt(v['rps'], 2)} | {fmt(v['p50_ms'])} | "
              f"{fmt(v['p99_ms'])} | {fmt(add50)} | {fmt(add99)} | {v['errors']} | "
              f"{fmt(v['proxy_cpu_ms_per_req'], 2)} |")
        w("")
    w("![latency and throughput per configuration](load.svg)\n")
    w("## Targets\n")
    e = t["errors"]
    w(f"- No lost or corrupted responses: {'**met**' if e['met'] else '**missed**'} "
      f"({e['total']} errors over {sum(v['requests'] for v in loaded.values())} loaded requests"
      + (f", {sum(v['requests'] for v in unloaded.values())} unloaded" if unloaded else "") + ").")
    if "added_latency_ms" in t:
        parts = [f"{CONFIGS[k]}: p50 {fmt(x['p50'], 0)} ms, p99 {fmt(x['p99'], 0)} ms"
                 for k, x in t["added_latency_ms"].items()]
        w(f"- Added latency against straight to the backend, under load: {'; '.join(parts)}. wrk is a "
          "closed loop and the backend is saturated, so loaded latency ≈ connections ÷ throughput: "
          "this mirrors the throughput lost.")
    if "added_latency_ms" in t.get("unloaded", {}):
        parts = [f"{CONFIGS[k]}: p50 {fmt(x['p50'], 1)} ms, p99 {fmt(x['p99'], 1)} ms"
                 for k, x in t["unloaded"]["added_latency_ms"].items()]
        w(f"- Added latency with 1 connection (what one request pays): {'; '.join(parts)}.")
    if "cpu" in t:
        c = t["cpu"]
        w(f"- Added CPU per {m['width']}×{m['height']} photo ≤ 1.5× the decode+encode floor: agent path "
          f"(b) − (d) = {c['agent_added_ms']:.1f} ms; floor (c) − (d) = {c['floor_ms']:.1f} ms; ratio "
          f"{verdict_cpu(c)}.")
        cu = t.get("unloaded", {}).get("cpu")
        if cu and cu["ratio"] is not None:
            w(f"  With 1 connection (less contention for the 2 cores): {cu['agent_added_ms']:.1f} ms against "
              f"{cu['floor_ms']:.1f} ms = {cu['ratio']:.2f}×.")
    if "throughput" in t:
        r = t["throughput"]
        w(f"- Throughput ≥ 0.6× the fixed-quality proxy: {r['agent_rps']:.2f} / {r['floor_rps']:.2f} req/s "
          f"= {verdict_rps(r)}.")
    if "throughput_vs_fixed" in t:
        r = t["throughput_vs_fixed"]
        w(f"- Throughput ≥ 0.6× a proxy fixed to the agent's pair (`{m.get('fixed_pair')}`, issue 15): "
          f"{r['agent_rps']:.2f} / {r['fixed_rps']:.2f} req/s = {verdict_rps(r)}.")
    if "cpu_vs_fixed" in t:
        c = t["cpu_vs_fixed"]
        ratio = "–" if c["ratio"] is None else f"{c['ratio']:.2f}×"
        w(f"- Added CPU of the agent path against the proxy fixed to its pair (target ≤ 1.5×): "
          f"{c['agent_added_ms']:.1f} ms against {c['fixed_added_ms']:.1f} ms = {ratio} "
          f"({'**met**' if c['met'] else '**missed**'}); the agent path pays for its audits "
          "(encoding the candidate pairs) and bookkeeping.")
    if m.get("fixed_mem_end"):
        w(f"- Peak memory of the fixed-pair proxy: VmHWM {m['fixed_mem_end']['VmHWM'] / 1024:.0f} MiB "
          f"(VmRSS {m['fixed_mem_idle']['VmRSS'] / 1024:.0f} MiB idle after start).")
    w(f"- Peak memory of the proxy: VmHWM {m['proxy_mem_end']['VmHWM'] / 1024:.0f} MiB at the end "
      f"(VmRSS {m['proxy_mem_idle']['VmRSS'] / 1024:.0f} MiB idle after start, "
      f"{m['proxy_mem_end']['VmRSS'] / 1024:.0f} MiB at the end); backend VmHWM "
      f"{m['backend_mem_end']['VmHWM'] / 1024:.0f} MiB.")
    st = m.get("agent_end") or {}
    if st:
        pair = st.get("pair") or {}
        if pair.get("served"):
            share = pair.get("estimation_share")
            w(f"- Agent at the end: live pair `{pair['served']}` (certified: {pair.get('certified')}, "
              f"learning: {pair.get('learning')}), {pair.get('audits')} audits, {pair.get('drifts')} drifts, "
              f"{pair.get('default_stepups')} default step-ups, estimation share "
              f"{fmt(None if share is None else 100 * share, 1)} % of the served bytes.")
        else:
            w(f"- Agent at the end: state `{st.get('state')}`, version {st.get('version')}, "
              f"p_est {fmt(st.get('p_est'), 3)}, {st.get('retrains')} retrains, {st.get('estimates')} estimates.")
    w("")
    with open(base + ".md", "w") as f:
        f.write("\n".join(L))
    print("\n".join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("body")
    p.add_argument("photo")
    p.add_argument("out")
    p = sub.add_parser("ports")
    p.add_argument("n", type=int)
    p = sub.add_parser("mem")
    p.add_argument("pid", type=int)
    p = sub.add_parser("run")
    p.add_argument("--phase", default="loaded")
    p.add_argument("--config", required=True, choices=list(CONFIGS))
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--url", required=True)
    p.add_argument("--header", default="")
    p.add_argument("--body", required=True)
    p.add_argument("--script", required=True)
    p.add_argument("--duration", type=int, default=30)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=int, default=30)
    p.add_argument("--proxy-pid", type=int, required=True)
    p.add_argument("--backend-pid", type=int, required=True)
    p.add_argument("--admin", required=True)
    p.add_argument("--backend", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--log")
    p = sub.add_parser("report")
    p.add_argument("--runs", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--out-dir", default="docs/bench")
    a = ap.parse_args()
    {"body": cmd_body, "ports": cmd_ports, "mem": cmd_mem, "run": cmd_run, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()

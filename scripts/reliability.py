#!/usr/bin/env python3
"""Hostile-input and failure measurements of `adacompress serve` (issue 8).

Run through scripts/reliability.sh (which builds the release binary), or directly:

    ADACOMPRESS_BIN=target/debug/adacompress python3 scripts/reliability.py

Standard library only. Starts the proxy on loopback ports with a config in a temporary
directory (upstream google = "local", the built-in backend), runs each attack while
sampling the proxy's RSS every 50 ms and sending one ordinary Google Vision request, and
writes docs/reliability.md and docs/reliability.json. Every loop is bounded in count and
time; an attack that kills the proxy is recorded and the proxy is restarted.
"""

import base64
import glob
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
import http.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("ADACOMPRESS_BIN") or os.path.join(ROOT, "target", "release", "adacompress")
HOST = "127.0.0.1"
GOOGLE_PATH = "/v1/images:annotate"
RSS_LIMIT_MIB = 512
ORDINARY_LIMIT_S = 2.0
HEADER_TIMEOUT = 10.0   # proxy.header_read_timeout_secs (default)
BODY_TIMEOUT = 30.0     # proxy.body_read_timeout_secs (default)
MAX_BODY = 20971520     # proxy.max_body_bytes (default)


def log(*a):
    print("[reliability]", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Images (stdlib only).

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def zero_png(w, h):
    """A valid black RGB PNG of w×h; the IDAT is zlib of all-zero rows (a deflate bomb)."""
    row = b"\0" * (1 + 3 * w)
    comp = zlib.compressobj(9)
    parts = []
    # Stream the rows so a 1x1,000,000 PNG does not need 4 MB at once in one string op.
    chunk_rows = max(1, (1 << 20) // len(row))
    left = h
    while left > 0:
        n = min(chunk_rows, left)
        parts.append(comp.compress(row * n))
        left -= n
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b"")


def png_with_size(png, w, h):
    """The PNG with IHDR declaring w×h (CRC fixed); the image data stays the small one's."""
    out = bytearray(png)
    out[16:24] = struct.pack(">II", w, h)
    out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])) & 0xFFFFFFFF)
    return bytes(out)


class BitWriter:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value, count):
        for k in range(count - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> k) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)  # byte stuffing
                self.acc = 0
                self.n = 0

    def flush(self):
        while self.n:
            self.put(1, 1)
        return bytes(self.out)


def huff_codes(bits, vals):
    """Canonical Huffman codes: {symbol: (code, length)} from DHT counts."""
    codes, code, k = {}, 0, 0
    for length in range(1, 17):
        for _ in range(bits[length - 1]):
            codes[vals[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return codes


# DC table: categories 0..11 (the standard luminance DC counts).
DC_BITS = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
DC_VALS = list(range(12))
# AC table: only end-of-band symbols, EOB0..EOB14 (0x00, 0x10, …, 0xE0), 15 codes of 4 bits.
AC_BITS = [0, 0, 0, 15] + [0] * 12
AC_VALS = [r << 4 for r in range(15)]
DC_CODES = huff_codes(DC_BITS, DC_VALS)
AC_CODES = huff_codes(AC_BITS, AC_VALS)


def segment(marker, payload):
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def put_dc(bw, diff):
    s = abs(diff).bit_length()
    code, length = DC_CODES[s]
    bw.put(code, length)
    if s:
        bw.put(diff if diff > 0 else diff + (1 << s) - 1, s)


def put_eobrun(bw, run):
    while run > 0:
        r = min(run, 32767)
        k = r.bit_length() - 1
        code, length = AC_CODES[k << 4]
        bw.put(code, length)
        if k:
            bw.put(r - (1 << k), k)
        run -= r


def flat_jpeg(w, h, ycc=(120, 128, 128), progressive=False, repeat_last_scan=0):
    """A flat-colour 3-component 4:4:4 JPEG encoded by hand (DC only, AC all zero).

    progressive=True writes SOF2 with a DC scan and one AC scan per component; with
    repeat_last_scan=N the last scan is repeated N more times (a scan bomb: each scan visits
    every block again; libjpeg warns of a bogus progression and goes on).
    """
    q = 16
    dqt = segment(0xDB, bytes([0]) + bytes([q] * 64))
    sof = segment(0xC2 if progressive else 0xC0,
                  struct.pack(">BHHB", 8, h, w, 3) + b"".join(bytes([c, 0x11, 0]) for c in (1, 2, 3)))
    dht = segment(0xC4, bytes([0x00]) + bytes(DC_BITS) + bytes(DC_VALS)
                  + bytes([0x10]) + bytes(AC_BITS) + bytes(AC_VALS))
    blocks = ((w + 7) // 8) * ((h + 7) // 8)
    dcs = [round((v - 128) * 8 / q) for v in ycc]
    out = [b"\xff\xd8", segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"), dqt, sof, dht]
    if not progressive:
        out.append(segment(0xDA, bytes([3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0])))
        bw = BitWriter()
        eob = AC_CODES[0x00]
        for b in range(blocks):
            for c in range(3):
                put_dc(bw, dcs[c] if b == 0 else 0)
                bw.put(*eob)
        out.append(bw.flush())
    else:
        out.append(segment(0xDA, bytes([3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 0, 0])))
        bw = BitWriter()
        for b in range(blocks):
            for c in range(3):
                put_dc(bw, dcs[c] if b == 0 else 0)
        out.append(bw.flush())
        last = b""
        for c in (1, 2, 3):
            bw = BitWriter()
            put_eobrun(bw, blocks)
            last = segment(0xDA, bytes([1, c, 0x00, 1, 63, 0])) + bw.flush()
            out.append(last)
        out.append(last * repeat_last_scan)
    out.append(b"\xff\xd9")
    return b"".join(out)


def google_body(images):
    return json.dumps({"requests": [
        {"image": {"content": base64.b64encode(img).decode()},
         "features": [{"type": "LABEL_DETECTION", "maxResults": 5}]} for img in images]}).encode()


def find_photo():
    """A small real JPEG from data/photos (scripts/fetch_photos.sh), else a generated one."""
    for base in (os.path.join(ROOT, "data", "photos"), "/work/main/data/photos"):
        files = sorted(glob.glob(os.path.join(base, "*", "*.jpg")))
        if files:
            files.sort(key=os.path.getsize)
            pick = files[len(files) // 4]
            return open(pick, "rb").read(), os.path.relpath(pick, ROOT) if pick.startswith(ROOT) else pick
    return flat_jpeg(256, 256, ycc=(150, 110, 140)), "generated 256x256 flat JPEG (data/photos absent)"


def find_photos(n=120):
    """Up to n real JPEGs from data/photos, taken evenly across the sorted list (attack 11's
    stream); [] when the folder is absent (generated images are sent instead)."""
    for base in (os.path.join(ROOT, "data", "photos"), "/work/main/data/photos"):
        files = sorted(glob.glob(os.path.join(base, "*", "*.jpg")))
        if files:
            step = max(1, len(files) // n)
            return [open(f, "rb").read() for f in files[::step][:n]]
    return []


def action_name(a):
    """An action as serve names it (`keep`, `q85`, `q85@768`), from its JSON."""
    if a.get("quality") is None:
        return "keep"
    return f"q{a['quality']}" + (f"@{a['max_side']}" if a.get("max_side") else "")


def status_summary(statuses):
    return ", ".join(f"{k} x{v}" for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0])))


def db_integrity(state_dir):
    try:
        con = sqlite3.connect(f"file:{os.path.join(state_dir, 'state.sqlite')}?mode=ro", uri=True)
        res = con.execute("PRAGMA integrity_check").fetchone()[0]
        con.close()
        return res
    except Exception as e:  # noqa: BLE001
        return f"error: {e}"


# ---------------------------------------------------------------------------------------
# Proxy process.

def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Proxy:
    def __init__(self, workdir, extra_proxy=None, tag="main", extra_sections=None, state=None):
        self.workdir = workdir
        self.state = state or os.path.join(workdir, "state")
        self.port = free_port()
        self.admin = free_port()
        self.proc = None
        self.tag = tag
        self.extra_proxy = extra_proxy or {}
        # Further config sections, {"pair": {"learn_share": 10.0}}.
        self.extra_sections = extra_sections or {}
        self.cfg = os.path.join(workdir, f"adacompress-{tag}.toml")
        self.write_config()

    def write_config(self):
        proxy = {
            "listen": f'"{HOST}:{self.port}"',
            "admin_listen": f'"{HOST}:{self.admin}"',
            "header_read_timeout_secs": HEADER_TIMEOUT,
            "body_read_timeout_secs": BODY_TIMEOUT,
            "max_body_bytes": MAX_BODY,
        }
        proxy.update(self.extra_proxy)
        lines = ["[proxy]"] + [f"{k} = {v}" for k, v in proxy.items()]
        lines += ["", "[upstreams]", 'google = "local"', 'baidu = "local"', 'kserve = "local"', "",
                  "[agent]", f'checkpoint = "{os.path.join(ROOT, "models", "agent-calibrated.json")}"', "",
                  "[state]", f'dir = "{self.state}"', ""]
        for section, keys in self.extra_sections.items():
            lines += [f"[{section}]"] + [f"{k} = {v}" for k, v in keys.items()] + [""]
        lines += ["[log]", 'format = "text"', 'level = "warn"', ""]
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines))

    def start(self, ready_timeout=120.0):
        self.logf = open(os.path.join(self.workdir, f"proxy-{self.tag}.log"), "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen([BIN, "serve", "--config", self.cfg], cwd=ROOT,
                                     stdout=self.logf, stderr=self.logf)
        while time.monotonic() - t0 < ready_timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode} at start; see {self.logf.name}")
            st, _, _ = http_get(self.admin, "/readyz", timeout=1.0)
            if st == 200:
                return time.monotonic() - t0
            time.sleep(0.1)
        raise RuntimeError("proxy not ready within %.0f s" % ready_timeout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def proc_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop_ev = pid, 0, threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            v = proc_kib(self.pid, "VmRSS")
            if v is not None:
                self.peak = max(self.peak, v)
            self.stop_ev.wait(0.05)

    def finish(self):
        self.stop_ev.set()
        self.join()
        return round(self.peak / 1024, 1)


# ---------------------------------------------------------------------------------------
# HTTP helpers.

LAST_ACTION = threading.local()


def http_req(port, method, path, body=None, headers=None, timeout=60.0):
    """(status or error text, seconds, body); X-AdaCompress-Action lands in LAST_ACTION.v."""
    t0 = time.monotonic()
    LAST_ACTION.v = None
    try:
        c = http.client.HTTPConnection(HOST, port, timeout=timeout)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        LAST_ACTION.v = r.getheader("X-AdaCompress-Action")
        c.close()
        return r.status, time.monotonic() - t0, data
    except Exception as e:  # noqa: BLE001 - the error is the measurement
        return f"error: {type(e).__name__}: {e}"[:120], time.monotonic() - t0, b""


def http_get(port, path, timeout=5.0):
    return http_req(port, "GET", path, timeout=timeout)


def post_google(port, body, timeout=60.0):
    return http_req(port, "POST", GOOGLE_PATH, body=body,
                    headers={"Content-Type": "application/json"}, timeout=timeout)


def agent_json(admin):
    st, _, data = http_get(admin, "/agent")
    try:
        return json.loads(data) if st == 200 else {}
    except ValueError:
        return {}


def metric(port, name):
    st, _, data = http_get(port, "/metrics")
    if st != 200:
        return None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


# ---------------------------------------------------------------------------------------
# Running one attack.

class Runner:
    def __init__(self, proxy, photo):
        self.proxy, self.photo = proxy, photo
        self.ordinary_body = google_body([photo])
        self.rows = []
        self.tally = []

    def ordinary(self):
        st, dt, _ = post_google(self.proxy.port, self.ordinary_body, timeout=10.0)
        self.tally.append((st, dt))
        return st, round(dt * 1000)

    def run(self, num, name, sent, nbytes, attack, ordinary_delay=0.3, rss_target=True):
        """attack() -> dict(client_status, client_s, notes, ok (bool|None)) runs in a thread."""
        log(f"attack {num}: {name}")
        p = self.proxy
        if not p.alive():
            p.start()
        sampler = RssSampler(p.proc.pid)
        sampler.start()
        result = {}

        def go():
            try:
                result.update(attack())
            except Exception as e:  # noqa: BLE001
                result.update(client_status=f"script error: {e}"[:120], client_s=None, ok=False)

        t = threading.Thread(target=go, daemon=True)
        t.start()
        ord_status, ord_ms = (None, None)
        if ordinary_delay is not None:
            time.sleep(ordinary_delay)
        if ordinary_delay is not None and t.is_alive():
            ord_status, ord_ms = self.ordinary()
            ord_during = True
        else:
            ord_during = False
        t.join(timeout=120)
        if not ord_during:
            ord_status, ord_ms = self.ordinary()
        peak = sampler.finish()
        alive = p.alive()
        exit_note = ""
        if not alive:
            exit_note = f"proxy EXITED (code {p.proc.returncode}); restarted"
        verdicts = []
        if not alive:
            verdicts.append("MISS: process exited")
        if rss_target and peak > RSS_LIMIT_MIB:
            verdicts.append(f"MISS: RSS {peak} MiB > {RSS_LIMIT_MIB}")
        ord_ok = ord_status == 200 and ord_ms is not None and ord_ms <= ORDINARY_LIMIT_S * 1000
        if result.get("ordinary_exempt"):
            pass
        elif not ord_ok:
            verdicts.append("MISS: ordinary request not 200 within 2 s")
        if result.get("ok") is False:
            verdicts.append("MISS: " + result.get("why", "attack target"))
        row = {
            "num": num, "attack": name, "sent": sent, "bytes": nbytes,
            "client_status": result.get("client_status"),
            "client_s": result.get("client_s"),
            "peak_rss_mib": peak,
            "vmhwm_mib": round((proc_kib(p.proc.pid, "VmHWM") or 0) / 1024, 1) if alive else None,
            "ordinary_status": ord_status, "ordinary_ms": ord_ms,
            "ordinary_during_attack": ord_during,
            "alive": alive,
            "notes": "; ".join(x for x in [result.get("notes", ""), exit_note] if x),
            "verdict": "; ".join(verdicts) if verdicts else "met",
        }
        self.rows.append(row)
        log(json.dumps(row))
        if not alive:
            p.start()
        return row


def single_post(body, timeout=60.0, duration=3.0, clients=2, max_sends=3000, poster=None):
    """`clients` threads send `body` back to back for `duration` s (at most `max_sends` in all),
    so that the ordinary request meets bombs in flight."""
    def attack():
        t0 = time.monotonic()
        lock = threading.Lock()
        results = []

        def loop():
            while time.monotonic() - t0 < duration:
                with lock:
                    if len(results) >= max_sends:
                        return
                    results.append(None)
                    i = len(results) - 1
                st, dt, data = (poster or post_google_any)(body, timeout)
                with lock:
                    results[i] = (st, dt, data, getattr(LAST_ACTION, "v", None))
        ths = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(duration + timeout + 5)
        done = [r for r in results if r is not None]
        statuses = {}
        for st, *_ in done:
            statuses[st] = statuses.get(st, 0) + 1
        times = sorted(r[1] for r in done)
        note = f"{len(done)} sends by {clients} client{'s' if clients > 1 else ''} in {duration:.0f} s"
        first = done[0] if done else None
        if first and first[3]:
            note += "; X-AdaCompress-Action: " + first[3][:160]
        if first and isinstance(first[0], int) and first[0] != 200:
            note += "; body: " + first[2][:160].decode(errors="replace")
        lost = sum(v for k, v in statuses.items() if not isinstance(k, int))
        return {"client_status": ", ".join(f"{k} x{v}" for k, v in statuses.items()),
                "client_s": (f"median {times[len(times)//2]:.3f}, max {times[-1]:.3f}" if times else None),
                "notes": note, "ok": lost == 0, "why": f"{lost} attack requests got no HTTP answer",
                "lost": lost}
    return attack


POST_PORT = [0]


def post_google_any(body, timeout):
    return post_google(POST_PORT[0], body, timeout)


def post_baidu_any(body, timeout):
    return http_req(POST_PORT[0], "POST", "/rest/2.0/image-classify/v2/advanced_general?access_token=x",
                    body=body, headers={"Content-Type": "application/x-www-form-urlencoded"},
                    timeout=timeout)


def kserve_poster(header_len):
    def post(body, timeout):
        return http_req(POST_PORT[0], "POST", "/v2/models/classifier/infer", body=body,
                        headers={"Content-Type": "application/octet-stream",
                                 "Inference-Header-Content-Length": str(header_len)},
                        timeout=timeout)
    return post


# ---------------------------------------------------------------------------------------
# Socket attacks.

def slow_headers(port, n=200, bound=HEADER_TIMEOUT + 5.0):
    """n sockets dribbling a request header at 1 byte/s; when did the proxy close each?"""
    header = b"POST /v1/images:annotate HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
    socks, opened = [], time.monotonic()
    for _ in range(n):
        try:
            s = socket.create_connection((HOST, port), timeout=2)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            pass
    state = {s: {"pos": 0, "closed_at": None, "got": b""} for s in socks}
    last_send = 0.0
    while time.monotonic() - opened < bound:
        live = [s for s in socks if state[s]["closed_at"] is None]
        if not live:
            break
        now = time.monotonic()
        if now - last_send >= 1.0:
            last_send = now
            for s in live:
                st = state[s]
                try:
                    s.send(header[st["pos"] % len(header):st["pos"] % len(header) + 1])
                    st["pos"] += 1
                except OSError:
                    st["closed_at"] = time.monotonic() - opened
        r, _, _ = select.select(live, [], [], 0.2)
        for s in r:
            st = state[s]
            try:
                d = s.recv(4096)
            except OSError:
                d = b""
            if d:
                st["got"] += d
            if not d and st["closed_at"] is None:
                st["closed_at"] = time.monotonic() - opened
    closed = sorted(v["closed_at"] for v in state.values() if v["closed_at"] is not None)
    answered = {}
    for v in state.values():
        if v["got"]:
            code = v["got"][9:12].decode(errors="replace")
            answered[code] = answered.get(code, 0) + 1
    sent = sum(v["pos"] for v in state.values())
    for s in socks:
        s.close()
    SLOW_SENT[0] = sent
    return len(socks), closed, answered


SLOW_SENT = [0]


def stalled_bodies(port, n=20, declared=10 << 20, bound=BODY_TIMEOUT + 10.0):
    """n clients send a header declaring `declared` bytes, 1 KB of body, then stall."""
    t0 = time.monotonic()
    socks = []
    head = (f"POST {GOOGLE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode() + b'{"requests":[' + b" " * 1000
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=2)
        s.sendall(head)
        s.setblocking(False)
        socks.append(s)
    got = {s: b"" for s in socks}
    done = {}
    while time.monotonic() - t0 < bound and len(done) < len(socks):
        live = [s for s in socks if s not in done]
        r, _, _ = select.select(live, [], [], 0.5)
        for s in r:
            try:
                d = s.recv(65536)
            except OSError:
                d = b""
            got[s] += d
            if not d or b"\r\n\r\n" in got[s]:
                done[s] = time.monotonic() - t0
    statuses = {}
    for s in socks:
        code = got[s][9:12].decode(errors="replace") if got[s] else ("closed" if s in done else "no answer")
        statuses[code] = statuses.get(code, 0) + 1
        s.close()
    return statuses, sorted(done.values())


def flood(port, admin, n=100, cap=64):
    """Open n connections at once and hold them; count 503s; probe admin /healthz meanwhile."""
    socks = []
    for _ in range(n):
        try:
            s = socket.create_connection((HOST, port), timeout=2)
            socks.append(s)
        except OSError:
            pass
    time.sleep(0.5)
    got = {}
    for s in socks:
        s.setblocking(False)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        r, _, _ = select.select([s for s in socks if s not in got], [], [], 0.2)
        for s in r:
            try:
                got[s] = s.recv(4096)
            except OSError:
                got[s] = b""
        if len(got) >= n - cap:
            break
    codes = {}
    for s in socks:
        d = got.get(s)
        code = "held open" if d is None else (d[9:12].decode(errors="replace") if d else "closed")
        codes[code] = codes.get(code, 0) + 1
    hz = http_get(admin, "/healthz", timeout=2.0)
    return socks, codes, hz


# ---------------------------------------------------------------------------------------
# Main.

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=ROOT, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""


def machine():
    model = ""
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version()}


def main():
    if not os.access(BIN, os.X_OK):
        sys.exit(f"no binary at {BIN}: run scripts/reliability.sh or set ADACOMPRESS_BIN")
    started = time.time()
    t_start = time.monotonic()
    profile = "release" if "/release/" in BIN else ("debug" if "/debug/" in BIN else "unknown")
    photo, photo_name = find_photo()
    log(f"binary {BIN} ({profile}); ordinary photo {photo_name} ({len(photo)} B)")
    workdir = tempfile.mkdtemp(prefix="adacompress-reliability-")
    proxy = Proxy(workdir)
    first_ready = proxy.start()
    log(f"ready in {first_ready:.1f} s on {proxy.port}/{proxy.admin}")
    POST_PORT[0] = proxy.port
    R = Runner(proxy, photo)
    base_status, base_ms = R.ordinary()
    base_rss = round((proc_kib(proxy.proc.pid, "VmRSS") or 0) / 1024, 1)
    cores = os.cpu_count() or 1

    # 1, 2: thin PNGs.
    for num, h in ((1, 1_000_000), (2, 100_000)):
        png = zero_png(1, h)
        body = google_body([png])
        R.run(num, f"thin PNG 1x{h:,}", f"1x{h:,} black PNG ({len(png):,} B) in Google JSON",
              len(body), single_post(body), ordinary_delay=1.0)

    # 3: progressive scan bomb.
    bomb = flat_jpeg(2048, 2048, progressive=True, repeat_last_scan=5000)
    body = google_body([bomb])
    R.run(3, "JPEG scan bomb", f"progressive 2048x2048 JPEG, 5,004 scans ({len(bomb):,} B)",
          len(body), single_post(body), ordinary_delay=1.0)

    # 4: PNG header bomb.
    small = zero_png(16, 16)
    hb = png_with_size(small, 60000, 60000)
    body = google_body([hb])
    R.run(4, "PNG header bomb", f"16x16 PNG whose IHDR claims 60000x60000 ({len(hb)} B)",
          len(body), single_post(body), ordinary_delay=1.0)

    # 5: 2,000 tiny JPEGs.
    tiny = [flat_jpeg(16, 16, ycc=(40 + i % 170, 128, 128)) for i in range(2000)]
    body = google_body(tiny)
    R.run(5, "2,000 images in one request", f"2,000 16x16 JPEGs (~{len(tiny[0])} B each) in one Google request",
          len(body), single_post(body), ordinary_delay=1.0)

    # 6: ~20 MB of {}.
    n = (MAX_BODY - 64) // 3
    body = b'{"requests":[' + b"{}," * (n - 1) + b"{}]}"
    R.run(6, "20 MB of {}", f'{{"requests":[{{}},...]}} with {n:,} empty objects (just under max_body_bytes)',
          len(body), single_post(body, timeout=120, clients=2), ordinary_delay=1.0)

    # 13: ~20 MB of `a&` as a Baidu form (10M empty fields).
    n = (MAX_BODY - 64) // 2
    body = b"a&" * n
    R.run(13, "20 MB of a& (Baidu form)", f"Baidu form body with {n:,} empty fields (just under max_body_bytes)",
          len(body), single_post(body, timeout=120, clients=2, poster=post_baidu_any), ordinary_delay=1.0)

    # 14: KServe v2 binary data with 5M zero-length BYTES elements.
    n = 5_000_000
    header = json.dumps({"inputs": [{"name": "image", "shape": [n], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 4 * n}}]}).encode()
    body = header + b"\0\0\0\0" * n
    R.run(14, "5M empty KServe elements", f"KServe binary-data request, {n:,} zero-length BYTES elements",
          len(body), single_post(body, timeout=120, clients=2, poster=kserve_poster(len(header))),
          ordinary_delay=1.0)

    # 7: slow headers.
    def a7():
        opened, closed, answered = slow_headers(proxy.port)
        ok = len(closed) == opened and (not closed or closed[-1] <= HEADER_TIMEOUT + 1.5)
        return {"client_status": f"{len(closed)}/{opened} closed by proxy" + (f", answers {answered}" if answered else ""),
                "client_s": round(closed[-1], 2) if closed else None,
                "notes": (f"closed between {closed[0]:.2f} s and {closed[-1]:.2f} s (median {closed[len(closed)//2]:.2f} s); "
                          f"header_read_timeout_secs = {HEADER_TIMEOUT}") if closed else "none closed",
                "ok": ok, "why": f"not every slow client cut within {HEADER_TIMEOUT} s (+1.5 s slack)"}
    R.run(7, "200 slow-header clients", "200 sockets sending a request header at 1 byte/s", 0, a7, ordinary_delay=2.0)
    R.rows[-1]["bytes"] = SLOW_SENT[0]

    # 8: stalled bodies.
    def a8():
        statuses, times = stalled_bodies(proxy.port)
        ok = statuses.get("408", 0) == 20 and times and times[-1] <= BODY_TIMEOUT + HEADER_TIMEOUT + 2
        return {"client_status": ", ".join(f"{k} x{v}" for k, v in sorted(statuses.items())),
                "client_s": round(times[-1], 2) if times else None,
                "notes": (f"answered between {times[0]:.2f} s and {times[-1]:.2f} s; "
                          f"body_read_timeout_secs = {BODY_TIMEOUT}") if times else "no answers",
                "ok": bool(ok), "why": f"not all 20 got 408 within body_read_timeout ({BODY_TIMEOUT} s) + slack"}
    R.run(8, "20 stalled 10 MB bodies", "20 clients declaring Content-Length 10 MiB, sending 1 KB, then stalling",
          20 * 1100, a8, ordinary_delay=2.0)

    # 10: hang-ups during scan bombs (real decodes: 99 scans, under max_scans; and 5,000 scans).
    under = flat_jpeg(2048, 2048, progressive=True, repeat_last_scan=95)
    bodies = [google_body([under])] * 4 + [google_body([bomb])] * 4

    def a10():
        busy_during = []
        t0 = time.monotonic()

        def hangup(b):
            s = socket.create_connection((HOST, proxy.port), timeout=5)
            s.sendall((f"POST {GOOGLE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(b)}\r\n\r\n").encode() + b)
            time.sleep(1.0)
            s.close()
        ths = [threading.Thread(target=hangup, args=(b,)) for b in bodies]
        for t in ths:
            t.start()
        time.sleep(0.8)
        busy_during.append(metric(proxy.admin, "adacompress_busy_workers"))
        for t in ths:
            t.join(10)
        settle = None
        after = None
        while time.monotonic() - t0 < 15:
            after = metric(proxy.admin, "adacompress_busy_workers")
            if after == 0:
                settle = time.monotonic() - t0
                break
            time.sleep(0.2)
        ok = after == 0
        return {"client_status": "hung up after 1 s (no answer read)",
                "client_s": 1.0,
                "notes": f"busy_workers during {busy_during[0]}, after hang-ups {after}"
                         + (f" (0 at {settle:.1f} s)" if settle is not None else " (not 0 within 15 s)")
                         + f"; cpu_workers = {cores} (0 = one per core; the metric is not exported)",
                "ok": ok, "why": "busy workers did not return to 0 (leaked permits)"}
    R.run(10, "hang-ups during scan bombs", "8 clients: 4x 99-scan and 4x 5,004-scan 2048px JPEGs, closing after 1 s",
          sum(len(b) for b in bodies), a10, ordinary_delay=0.5)

    # 9: connection flood (its own proxy with max_connections = 64).
    proxy.stop()
    fproxy = Proxy(workdir, extra_proxy={"max_connections": 64}, tag="flood")
    fproxy.start()
    R.proxy = fproxy
    POST_PORT[0] = fproxy.port
    def a9():
        socks, codes, hz = flood(fproxy.port, fproxy.admin)
        # A client over the cap gets the 503 before it sends anything (writing a body then
        # fails with a broken pipe), so this probe only reads.
        t1 = time.monotonic()
        try:
            p_ = socket.create_connection((HOST, fproxy.port), timeout=2)
            first = p_.recv(4096)
            p_.close()
            ord_st = first[9:12].decode(errors="replace") if first else "closed"
        except OSError as e:
            ord_st = f"error: {e}"
        ord_ms = round((time.monotonic() - t1) * 1000)
        for s_ in socks:
            s_.close()
        time.sleep(0.5)
        ok = codes.get("503", 0) >= 100 - 64 and hz[0] == 200
        return {"client_status": ", ".join(f"{k} x{v}" for k, v in sorted(codes.items())),
                "client_s": None,
                "notes": f"admin /healthz during the flood: {hz[0]} in {hz[1]*1000:.0f} ms; an ordinary request while "
                         f"64 were held: {ord_st} in {ord_ms} ms (over the cap a 503 is the designed answer); "
                         "the ordinary-request column is after the flood's sockets closed; max_connections = 64",
                "ok": ok, "why": "fewer than 36 refused with 503, or admin /healthz did not answer"}
    R.run(9, "connection flood", "100 connections held open against max_connections = 64", 0, a9, ordinary_delay=None)
    fproxy.stop()

    # 11 and 12: the live pair's state (state.sqlite kv `live_pair`, written after every
    # audit), on a proxy of their own whose credit audits every image.
    pair_cfg = {"learn_share": 10.0, "max_audit_rate": 1.0}
    KILL_AFTER_AUDITS = 20  # >= 3 asked; 20 so that the restored state has something to lose
    pproxy = Proxy(workdir, tag="pair", extra_sections={"pair": pair_cfg},
                   state=os.path.join(workdir, "state-pair"))
    pproxy.start()
    R.proxy = pproxy
    POST_PORT[0] = pproxy.port
    prior = agent_json(pproxy.admin).get("pair", {})
    photos = find_photos()

    def a11():
        statuses, lock, stop = {}, threading.Lock(), threading.Event()

        def traffic(k):
            i = k
            while not stop.is_set() and i < 4000:
                img = photos[i % len(photos)] if photos else flat_jpeg(
                    320 + 8 * (i % 16), 240, ycc=(30 + (7 * i) % 200, 100 + i % 50, 150 - i % 50))
                s2, _, _ = post_google(pproxy.port, google_body([img]), timeout=10)
                with lock:
                    statuses[s2] = statuses.get(s2, 0) + 1
                i += 2
        ths = [threading.Thread(target=traffic, args=(k,), daemon=True) for k in range(2)]
        for t in ths:
            t.start()
        before, t1 = {}, time.monotonic()
        while time.monotonic() - t1 < 60:
            before = agent_json(pproxy.admin)
            if before.get("pair", {}).get("audits", 0) >= KILL_AFTER_AUDITS and before.get("state") == "estimate":
                break
            time.sleep(0.05)
        proxy_pid = pproxy.proc.pid
        stop.set()  # no new requests; those in flight meet the kill
        pproxy.kill9()
        t_kill = time.monotonic()
        for t in ths:
            t.join(15)
        bp = before.get("pair", {})
        # What the kill left on disk: a copy of state.sqlite and its WAL, opened here so that
        # the restarted proxy recovers the WAL itself.
        snap = os.path.join(workdir, "state-pair-at-kill")
        os.makedirs(snap, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            src = os.path.join(pproxy.state, "state.sqlite" + suffix)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(snap, "state.sqlite" + suffix))
        saved, integrity_kill = {}, None
        try:
            con = sqlite3.connect(os.path.join(snap, "state.sqlite"))
            integrity_kill = con.execute("PRAGMA integrity_check").fetchone()[0]
            row = con.execute("SELECT value FROM kv WHERE key = 'live_pair'").fetchone()
            con.close()
            saved = json.loads(row[0]) if row else {}
        except Exception as e:  # noqa: BLE001
            integrity_kill = f"error: {e}"
        saved_served = action_name(saved["actions"][saved["served"]]) if saved.get("actions") else None
        try:
            ready = pproxy.start()
            restart_wall = time.monotonic() - t_kill
        except RuntimeError as e:
            return {"client_status": f"did not restart: {e}"[:120], "client_s": None, "ok": False,
                    "why": "the proxy did not restart on the killed state", "ordinary_exempt": True}
        after = agent_json(pproxy.admin)
        ap = after.get("pair", {})
        integrity = db_integrity(pproxy.state)
        workers = os.cpu_count() or 1
        a_obs, a_saved, a_after = bp.get("audits", 0), saved.get("audits"), ap.get("audits")
        checks = {
            "state.sqlite intact": integrity == "ok" and integrity_kill == "ok",
            "restored = saved": a_after == a_saved and ap.get("served") == saved_served,
            f"saved audits >= observed - {workers}": a_saved is not None and a_saved >= a_obs - workers,
            "served kept": ap.get("served") == bp.get("served") or a_saved != a_obs,
        }
        lost = sum(v for k, v in statuses.items() if not isinstance(k, int))
        failed = [k for k, v in checks.items() if not v]
        return {"client_status": f"traffic {status_summary(statuses)}; /agent audits {a_obs} -> {a_after}, "
                                 f"served {bp.get('served')} -> {ap.get('served')}",
                "client_s": round(restart_wall, 2),
                "notes": f"[pair] learn_share = {pair_cfg['learn_share']}, max_audit_rate = {pair_cfg['max_audit_rate']}; "
                         f"last GET /agent before the kill (pid {proxy_pid}): state {before.get('state')}, "
                         f"pair.audits {a_obs}, images {bp.get('images')}, served {bp.get('served')} (the shipped prior: {prior.get('served')}); "
                         f"live_pair in state.sqlite as the kill left it: audits {a_saved}, images {saved.get('images')}, "
                         f"served {saved_served} (integrity_check {integrity_kill}); after restart: state {after.get('state')}, "
                         f"pair.audits {a_after}, images {ap.get('images')}, served {ap.get('served')}, "
                         f"ready {ready:.2f} s after start; state.sqlite integrity_check: {integrity}; "
                         f"{lost} client request(s) got no answer (in flight at the kill: inherent to kill -9, not counted "
                         "against the zero-lost target); the live pair is written after every audit, from a snapshot taken "
                         "under its lock but written after it is released, so at the kill at most one counted audit per "
                         f"runtime worker thread ({workers}) can be unwritten: saved audits >= observed - {workers}; "
                         "served kept: the restored pair serves what it served before the kill unless the saved audit "
                         "count differs from the observed one (an audit after the look moved it); checks: "
                         + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in checks.items()),
                "ok": not failed, "why": "; ".join(failed) or "", "ordinary_exempt": False}
    R.run(11, "kill -9 while audits are in flight",
          f"2 clients sending photos, every image audited; kill -9 once /agent shows pair.audits >= {KILL_AFTER_AUDITS} and state = estimate; restart on the same state",
          0, a11, ordinary_delay=None)
    R.rows[-1]["notes"] += "; client time = kill to /readyz 200"

    # 12: the live pair's saved state corrupted while the proxy is down: (a) the JSON cut to
    # half, (b) text that is not the live pair's JSON, (c) one byte of the JSON set to 0xFF
    # (bit rot: the value is no longer UTF-8). Each time serve should start with a fresh
    # learner at the shipped prior and say that the saved state was not usable.
    def a12():
        results = []
        db = os.path.join(pproxy.state, "state.sqlite")
        for kind in ("truncated", "garbage", "not UTF-8"):
            pproxy.stop()
            con = sqlite3.connect(db)
            row = con.execute("SELECT value FROM kv WHERE key = 'live_pair'").fetchone()
            old = row[0] if row else ""
            if kind == "truncated":
                new = old[:len(old) // 2]
            elif kind == "garbage":
                new = '{"actions": 7, "served": "q95@960", \x01\x02 not json'
            else:
                raw = bytearray((old or "{}").encode())
                raw[len(raw) // 2] = 0xFF
                new = bytes(raw)
            con.execute("INSERT INTO kv (key, value) VALUES ('live_pair', CAST(? AS TEXT)) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (new,))
            con.commit()
            con.close()
            log_at = os.path.getsize(pproxy.logf.name)
            r = {"kind": kind, "old_len": len(old), "new_len": len(new)}
            t0 = time.monotonic()
            try:
                pproxy.start(ready_timeout=60)
                r["started"] = True
                r["ready_s"] = round(time.monotonic() - t0, 2)
            except RuntimeError as e:
                r["started"] = False
                r["error"] = str(e)
            if r["started"]:
                ag = agent_json(pproxy.admin).get("pair", {})
                st, dt, _ = post_google(pproxy.port, google_body([photo]), timeout=10)
                r.update(served=ag.get("served"), audits=ag.get("audits"), learning=ag.get("learning"),
                         request=st, request_ms=round(dt * 1000))
                time.sleep(0.2)
            with open(pproxy.logf.name, errors="replace") as f:
                f.seek(log_at)
                lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in f.read().splitlines()]
            said = [ln for ln in lines if "live pair" in ln or "error" in ln.lower()]
            r["log"] = said[0] if said else ""
            r["log"] = r["log"][r["log"].find("WARN"):] if "WARN" in r["log"] else r["log"]
            r["ok"] = (r["started"] and r.get("served") == prior.get("served") and r.get("audits") == 0
                       and r.get("request") == 200 and "stored live pair unreadable; starting fresh" in r["log"])
            results.append(r)
        repaired = None
        if not pproxy.alive():
            # What an operator would do: drop the unreadable row, start again.
            con = sqlite3.connect(db)
            con.execute("DELETE FROM kv WHERE key = 'live_pair'")
            con.commit()
            con.close()
            try:
                pproxy.start(ready_timeout=60)
                repaired = f"after DELETE of the kv row: ready, serves {agent_json(pproxy.admin).get('pair', {}).get('served')}"
            except RuntimeError as e:
                repaired = f"after DELETE of the kv row: still does not start ({e})"
        notes = []
        for r in results:
            head = f"{r['kind']} ({r['old_len']:,} -> {r['new_len']:,} B)"
            if not r["started"]:
                notes.append(f"{head}: serve did NOT start ({r['error'].split('; see')[0]}); its log: {r['log'][:220]}")
                continue
            notes.append(f"{head}: ready {r['ready_s']} s, pair.served {r['served']} (the shipped prior: "
                         f"{prior.get('served')}), audits {r['audits']}, learning {r['learning']}; a photo request "
                         f"{r['request']} in {r['request_ms']} ms; log: {r['log'][:200] or '(no line on the live pair)'}")
        if repaired:
            notes.append(repaired)
        failed = [r["kind"] for r in results if not r["ok"]]
        return {"client_status": "; ".join(
                    f"{r['kind']}: " + (f"ready, serves {r['served']}, audits {r['audits']}, request {r['request']}"
                                        if r["started"] else "exit 1 at start") for r in results),
                "client_s": max((r.get("ready_s") or 0) for r in results) if results else None,
                "notes": "; ".join(notes),
                "ok": bool(results) and not failed,
                "why": "serve did not start as a fresh learner at the shipped prior (a 200 and a log line saying the "
                       "saved state was unusable) on: " + ", ".join(failed)}
    R.run(12, "corrupt live-pair state",
          "proxy stopped; kv live_pair in state.sqlite overwritten: (a) cut to half, (b) garbage text, "
          "(c) one byte set to 0xFF (not UTF-8); restart after each",
          0, a12, ordinary_delay=None)
    R.rows[-1]["notes"] += "; client time = start to /readyz 200 (the slowest start that got there)"
    pproxy.stop()

    proxy.stop()
    total = time.monotonic() - t_start
    commit = sh("git rev-parse --short HEAD") + (" (dirty)" if sh("git status --porcelain --untracked-files=no") else "")
    bin_dir = os.path.dirname(os.path.realpath(BIN))
    bin_commit = sh(f"git -C '{bin_dir}' rev-parse --short HEAD")
    if bin_commit and not os.path.realpath(BIN).startswith(ROOT + os.sep):
        bin_dirty = sh(f"git -C '{bin_dir}' status --porcelain --untracked-files=no")
        commit += f"; binary built in another checkout at {bin_commit}" + (" (dirty)" if bin_dirty else "")
    report = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "machine": machine(), "binary": BIN, "profile": profile, "commit": commit,
        "ordinary_photo": photo_name, "ordinary_photo_bytes": len(photo),
        "baseline": {"ready_s": round(first_ready, 2), "ordinary_status": base_status,
                     "ordinary_ms": base_ms, "rss_mib": base_rss},
        "config": {"cpu_workers": "0 (one per core = %d)" % cores, "header_read_timeout_secs": HEADER_TIMEOUT,
                   "body_read_timeout_secs": BODY_TIMEOUT, "max_body_bytes": MAX_BODY,
                   "max_connections": "512 (64 for attack 9)", "limits": "defaults",
                   "pair": "defaults; learn_share = 10.0, max_audit_rate = 1.0 for attacks 11 and 12 (every image audited)"},
        "targets": {"rss_mib": RSS_LIMIT_MIB, "ordinary_s": ORDINARY_LIMIT_S},
        "runtime_s": round(total, 1),
        "ordinary_requests": {"sent": len(R.tally),
                              "answered_200_within_2s": sum(1 for st, dt in R.tally if st == 200 and dt <= ORDINARY_LIMIT_S),
                              "no_http_answer": sum(1 for st, _ in R.tally if not isinstance(st, int)),
                              "statuses": {str(k): sum(1 for st, _ in R.tally if st == k) for k in {st for st, _ in R.tally}}},
        "attacks": R.rows,
    }
    fuzz = []
    for p in sorted(glob.glob(os.path.join(ROOT, "docs", "fuzz.json"))):
        try:
            fuzz.append({"file": os.path.relpath(p, ROOT), "summary": json.load(open(p))})
        except Exception:  # noqa: BLE001
            pass
    report["fuzz"] = fuzz
    os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
    with open(os.path.join(ROOT, "docs", "reliability.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)
        f.write("\n")
    with open(os.path.join(ROOT, "docs", "reliability.md"), "w") as f:
        f.write(render(report))
    log(f"wrote docs/reliability.md and docs/reliability.json in {total:.0f} s; work dir {workdir}")


def cell(v):
    s = "" if v is None else str(v)
    return s.replace("|", "\\|").replace("\n", " ")


def render(r):
    m = r["machine"]
    out = ["# Reliability: hostile inputs and failures (issue 8)", "",
           "Regenerate with `scripts/reliability.sh` (builds the release binary; "
           "`ADACOMPRESS_BIN=path` uses another binary). Standard-library Python; about 3–5 minutes.", ""]
    if r["profile"] != "release":
        out += [f"**This run used a {r['profile']} build** (`{r['binary']}`); a release build "
                "is faster, so the times below are pessimistic and RSS may differ.", ""]
    out += [f"- date: {r['date_utc']}", f"- machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}",
            f"- binary: {r['profile']} (`{os.path.relpath(r['binary'], ROOT) if r['binary'].startswith(ROOT) else r['binary']}`)",
            f"- git commit: {r['commit']}",
            f"- ordinary request: `POST /v1/images:annotate`, one image ({r['ordinary_photo']}, {r['ordinary_photo_bytes']:,} B, base64 in JSON); "
            f"before the attacks: {r['baseline']['ordinary_status']} in {r['baseline']['ordinary_ms']} ms, "
            f"RSS {r['baseline']['rss_mib']} MiB, ready {r['baseline']['ready_s']} s after start",
            f"- config: upstream google = \"local\"; " + "; ".join(f"{k} = {v}" for k, v in r["config"].items()),
            f"- total runtime: {r['runtime_s']} s",
            f"- ordinary requests over the whole run: {r['ordinary_requests']['sent']} sent, "
            f"{r['ordinary_requests']['answered_200_within_2s']} answered 200 within 2 s, "
            f"{r['ordinary_requests']['no_http_answer']} without an HTTP answer; statuses {r['ordinary_requests']['statuses']}", "",
            "Verdict `met` means every target that applies to the row held: the process stayed up, peak RSS "
            f"<= {r['targets']['rss_mib']} MiB, the ordinary request got 200 within 2 s (not judged while attack 9 "
            "holds every connection, where 503 is the design), and the row's own target (slow clients cut in time, "
            "408s, 503s beyond the cap, no leaked workers, the live pair's state intact and restored after kill -9, "
            "a fresh learner at the shipped prior on a corrupt saved state); "
            "`MISS: …` names what failed.", "",
            "Targets: no input under max_body_bytes makes the process exit or exceed "
            f"{r['targets']['rss_mib']} MiB RSS at default cpu_workers; an ordinary request is answered 200 "
            f"within {r['targets']['ordinary_s']:.0f} s while bombs are in flight; every slow client is cut within "
            "the configured timeouts; zero lost client requests.", "",
            "Peak RSS is the maximum of VmRSS sampled every 50 ms during the attack (VmHWM is monotonic). "
            "The ordinary request is sent while the attack is in flight (column says `after` when the attack had "
            "already finished).", "",
            "| # | attack | what was sent | bytes | client status | client time (s) | peak RSS (MiB) | ordinary request (status, ms) | verdict |",
            "|---|---|---|---|---|---|---|---|---|"]
    for a in sorted(r["attacks"], key=lambda a: a["num"]):
        ordinary = f"{a['ordinary_status']}, {a['ordinary_ms']}" + ("" if a["ordinary_during_attack"] else " (after)")
        out.append("| " + " | ".join(cell(x) for x in [
            a["num"], a["attack"], a["sent"], f"{a['bytes']:,}" if a["bytes"] else "", a["client_status"],
            a["client_s"], a["peak_rss_mib"], ordinary, a["verdict"]]) + " |")
    out += ["", "## Notes per attack", ""]
    for a in sorted(r["attacks"], key=lambda a: a["num"]):
        if a["notes"]:
            out.append(f"- **{a['num']}. {a['attack']}**: {cell(a['notes'])}")
    out += ["", "## Not covered by this run", "",
            "- Only the Google Vision protocol is attacked; the other six protocols share the limits but are not exercised here.",
            "- Attack 6 uses 2 concurrent clients; proxy.max_inflight_body_bytes (256 MiB) admits about 12 such 20 MB bodies at once, "
            "which this script does not try.",
            "- Bombs are flat synthetic images written by this script (stdlib only), not photos; when data/photos is absent "
            "the ordinary request also uses a generated flat JPEG.",
            "- The in-flight requests at the kill -9 in attack 11 are lost by nature; the zero-lost target is judged on the other attacks.",
            "- Attack 11 kills at one moment of a short learning phase (the served pair is still the shipped prior); "
            "kill -9 is a process crash: the WAL's committed writes are in the page cache, so a power loss "
            "(synchronous = NORMAL) is not what this tests.",
            "- Attack 12 edits the kv row with SQLite itself; damage to the database file's pages (integrity_check "
            "failing) is not tried."]
    out += ["", "## Fuzz", ""]
    if r["fuzz"]:
        for fz in r["fuzz"]:
            f = fz["summary"]
            out.append(f"From `{fz['file']}` (written by `scripts/fuzz.sh`; full page `docs/fuzz.md`): "
                       f"{f.get('inputs', 0):,} inputs, seed `{f.get('seed')}`, {f.get('profile')} build, "
                       f"{f.get('wall_secs')} s on {f.get('threads')} threads, commit `{f.get('git_commit')}`: "
                       f"**{f.get('failures', 0)} failures**.")
            out += ["", "| target | inputs | failures | findings |", "|---|---:|---:|---|"]
            for t in f.get("targets", []):
                finds = "; ".join(f"{x.get('kind')}: {str(x.get('message'))[:80]} ({x.get('count')}x)"
                                  for x in t.get("findings", [])) or "none"
                out.append(f"| {t.get('target')} | {t.get('inputs', 0):,} | {t.get('failures', 0)} | {finds} |")
    else:
        out.append("fuzz: see docs/fuzz.md (no fuzz summary JSON was found in docs/ when this page was "
                   "generated; `ADACOMPRESS_FUZZ_SUMMARY=docs/fuzz cargo test --release --test fuzz` writes one, "
                   "see the top of tests/fuzz.rs; this script does not run cargo test).")
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    main()

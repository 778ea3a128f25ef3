#!/usr/bin/env python3
"""Must-reach delivery benchmark: notifications per second through a real Kannel
(SMPP simulator, delivery receipts on), and the latency Tocsin adds between an
alert and its sendsms request. See bench/README.md, "must_reach".

    python3 bench/must_reach.py [--build build] [--n 2000] [--concurrency 16]
                                [--ticks default,5ms] [--paced-n 200 --paced-rate 50]

1. `tocsin broker` and a real Kannel (tests/integration/kannel_stack.py: machine-wide
   lock, fixed ports) whose SMPP simulator answers with a receipt after --smsc-delay s.
2. Kannel alone: N sendsms requests (keep-alive connections, --concurrency of them,
   smsc=smpp1, numbers ending in 1, dlr-mask 3, dlr-url to a local counting listener
   in its own process) -> accepted/s and final receipts/s.
3. For each tick in --ticks: a fresh broker and `tocsin run` (fresh state) with one
   policy that sends one SMS per alert; a warm-up alert; then N raised alerts produced
   with one kcat in one go ("burst"), and optionally --paced-n more at --paced-rate/s
   ("paced": latency without a backlog). From each notification's timeline: submits/s
   (first to last "submitted"), delivered/s (first "submitted" to last "delivered"),
   desk latency (submitted - raised_at, the desk's receipt of the alert) and
   end-to-end latency (submitted - emitted_at, the producer's clock).
4. Prints a table and the ratio Tocsin submits/s / Kannel accepted/s.

Everything listens on 127.0.0.1; every wait polls a condition until a deadline;
every process started here is stopped on exit (Kannel by its process groups).
"""
import argparse
import http.client
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "integration"))


# ---------------------------------------------------------------- helpers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def now_ms():
    return int(time.time() * 1000)


def rfc3339_ms(ms):
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_ms(text):
    """RFC 3339 with milliseconds (as Tocsin writes it) -> epoch ms."""
    dt = datetime.strptime(text.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")
    return int(round(dt.timestamp() * 1000))


def pct(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))
    return v[k]


def cpu_seconds(pid):
    """utime + stime of a process so far, in seconds (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- DLR listener (own process)

def run_dlr_listener(port):
    """Serves GET /dlr?id=..&type=%d (counts, with arrival time) and GET /stats
    (JSON: per type, count, first and last arrival in epoch ms). Runs until killed."""
    lock = threading.Lock()
    stats = {}  # type -> [count, first_ms, last_ms]

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            u = urllib.parse.urlsplit(self.path)
            if u.path == "/stats":
                with lock:
                    body = json.dumps(stats).encode()
            else:
                t = urllib.parse.parse_qs(u.query).get("type", ["?"])[0]
                at = now_ms()
                with lock:
                    s = stats.setdefault(t, [0, at, at])
                    s[0] += 1
                    s[2] = at
                body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    class S(http.server.ThreadingHTTPServer):
        request_queue_size = 1024  # smsbox opens many connections at once (Kannel README, gotcha 2)
        daemon_threads = True

    S(("127.0.0.1", port), H).serve_forever()


# ---------------------------------------------------------------- Kannel alone

def kannel_alone(k, n, conc, listener_url, number_base):
    """N sendsms straight to smsbox; returns figures, after waiting for every final DLR."""
    host, port = "127.0.0.1", k.SENDSMS_PORT
    lock, idx, codes, lat = threading.Lock(), [0], {}, []
    first_final_wait = 60 + n / 50

    def worker():
        c = http.client.HTTPConnection(host, port, timeout=30)
        while True:
            with lock:
                if idx[0] >= n:
                    break
                i = idx[0]
                idx[0] += 1
            q = {"username": k.username, "password": k.password, "from": k.sender,
                 "to": "%d%07d1" % (number_base, i), "text": "Bench %d: do not transfer money. Reply 1." % i,
                 "smsc": "smpp1", "dlr-mask": "3",
                 "dlr-url": listener_url + "/dlr?id=L%d&type=%%d&status=%%A" % i}
            t0 = time.perf_counter()
            try:
                c.request("GET", "/cgi-bin/sendsms?" + urllib.parse.urlencode(q))
                r = c.getresponse()
                r.read()
                code = r.status
            except Exception as e:  # noqa: BLE001 - counted and reported
                code = type(e).__name__
                c.close()
                c = http.client.HTTPConnection(host, port, timeout=30)
            dt = time.perf_counter() - t0
            with lock:
                codes[code] = codes.get(code, 0) + 1
                lat.append(dt)
        c.close()

    def stats():
        with urllib.request.urlopen(listener_url + "/stats", timeout=5) as r:
            return json.loads(r.read())

    base = stats()
    cpu0 = {name: cpu_seconds(d.pgid) for name, d in k.daemons.items()}
    start_ms = now_ms()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    from harness import wait_for
    s = wait_for(f"{n} final (type 1) DLR callbacks at the listener",
                 lambda: (lambda s: s if s.get("1", [0])[0] - base.get("1", [0])[0] >= n else None)(stats()),
                 timeout=first_final_wait, interval=0.05)
    cpu1 = {name: cpu_seconds(d.pgid) for name, d in k.daemons.items()}
    last_final = s["1"][2]
    return {
        "n": n, "conc": conc, "codes": codes, "elapsed_s": elapsed, "accepted_per_s": codes.get(202, 0) / elapsed,
        "req_p50_ms": pct(lat, 50) * 1000, "req_p99_ms": pct(lat, 99) * 1000,
        "final_dlr_per_s": n / ((last_final - start_ms) / 1000), "last_final_after_s": (last_final - start_ms) / 1000,
        "callbacks": {t: v[0] - base.get(t, [0])[0] for t, v in s.items()},
        "cpu_s": {name: (cpu1[name] - cpu0[name]) if cpu0.get(name) is not None and cpu1.get(name) is not None else None
                  for name in cpu0},
    }


# ---------------------------------------------------------------- Tocsin

RULES = """rules:
  - id: bench.never
    stream: calls
    where: duration_s < 0
    alert: {type: bench.never, severity: info, title: "never"}
"""


def alerting_yaml(a):
    return f"""channels:
  sms: {{kind: sms, rate: {a.rate}, max_in_flight: {a.max_in_flight}, max_attempts: 3, backoff: 1s, backoff_max: 5s,
        receipt_timeout: 60s, expire_after: 10m}}
language: en
templates:
  warn:
    en: "[Bench] {{title}}: do not transfer money. Reply 1."
policies:
  - name: bench
    match: ['type=bench.must_reach']
    stop_when: reached
    steps:
      - notify: [{{channel: sms, to: subject, as: victim, template: warn}}]
        wait: 5m
"""


class Tocsin:
    """`tocsin run` with the alert desk; metrics and alerts API over HTTP."""

    def __init__(self, binary, workdir, bootstrap, k, a, tick):
        self.port = free_port()
        with open(os.path.join(workdir, "rules.yaml"), "w") as f:
            f.write(RULES)
        with open(os.path.join(workdir, "alerting.yaml"), "w") as f:
            f.write(alerting_yaml(a))
        self.config = os.path.join(workdir, "tocsin.yaml")
        tick_line = f"  tick: {tick}\n" if tick != "default" else ""
        with open(self.config, "w") as f:
            f.write(f"""kafka:
  bootstrap.servers: "{bootstrap}"
  group.id: bench
  consumer: {{fetch.wait.max.ms: "5", session.timeout.ms: "6000", heartbeat.interval.ms: "500"}}
  producer: {{linger.ms: "5"}}
pipeline:
  workers: 1
rules:
  files: [{os.path.join(workdir, "rules.yaml")}]
http:
  listen: 127.0.0.1:{self.port}
log:
  level: warn
alerting:
  file: {os.path.join(workdir, "alerting.yaml")}
  state_dir: {os.path.join(workdir, "state")}
  sms: {{sendsms_url: "{k.sendsms_url}", username: {k.username}, password: {k.password}, from: "{k.sender}",
        smsc: smpp1, dlr_mask: 3, timeout: 5s}}
{tick_line}""")
        self.stderr_path = os.path.join(workdir, "tocsin.stderr")
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([binary, "run", "-c", self.config], stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True)
        banner = []
        deadline = time.monotonic() + 60
        for line in self.proc.stdout:  # the banner ends with the "stop:" line
            banner.append(line)
            if "stop:" in line or time.monotonic() > deadline:
                break
        m = re.search(r"metrics:\s+(http://\S+)", "".join(banner))
        if not m:
            self.stop()
            raise RuntimeError("no metrics URL in tocsin's banner:\n" + "".join(banner) + self.stderr_tail())
        self.metrics_url = m.group(1)
        self.base_url = self.metrics_url[:-len("/metrics")]
        # Drain stdout so that the daemon never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def stderr_tail(self, lines=30):
        with open(self.stderr_path) as f:
            return "".join(f.readlines()[-lines:])

    def metric(self, name, **labels):
        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total

    def counts(self):
        return (self.metric("tocsin_notification_submits_total", channel="sms"),
                self.metric("tocsin_notifications_total", channel="sms", outcome="delivered"))

    def alert(self, alert_id):
        try:
            with urllib.request.urlopen(f"{self.base_url}/api/v1/alerts/{alert_id}", timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def raised_alert(alert_id, number, emitted_ms):
    return {"id": alert_id, "rule": "bench.must_reach", "rule_set_version": "bench", "type": "bench.must_reach",
            "severity": "critical", "title": "bench alert " + alert_id, "stream": "calls", "key": {"callee": number},
            "window": {"start": "2026-11-26T08:00:00.000Z", "end": "2026-11-26T08:00:00.000Z", "size_ms": 0},
            "evidence": {"count": 1, "first_event_id": "c", "first_event_time": "2026-11-26T08:00:00.000Z"},
            "emitted_at": rfc3339_ms(emitted_ms)}


def kcat_producer(bootstrap):
    return subprocess.Popen(["kcat", "-b", bootstrap, "-P", "-t", "alerts", "-K", "\t", "-X", "linger.ms=0"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)


def produce(bootstrap, ids_numbers, pace=0.0):
    """Produces raised alerts with kcat. pace = 0: one kcat, every line written at once
    (each emitted_at = the time the batch was built). pace > 0: one kcat per alert, one
    every 1/pace s, emitted_at = just before that kcat starts (so it includes kcat's start
    and bootstrap: kcat -P reading a pipe holds lines until its read buffer fills or the
    pipe closes, so one long-lived kcat cannot pace). Returns {id: emitted_ms}."""
    emitted = {}
    procs = []
    try:
        if pace <= 0:
            at = now_ms()
            data = []
            for aid, num in ids_numbers:
                emitted[aid] = at
                data.append(aid + "\t" + json.dumps(raised_alert(aid, num, at)) + "\n")
            p = kcat_producer(bootstrap)
            procs.append(p)
            p.stdin.write("".join(data).encode())
            p.stdin.close()
        else:
            t0 = time.monotonic()
            for i, (aid, num) in enumerate(ids_numbers):
                delay = t0 + i / pace - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                at = now_ms()
                emitted[aid] = at
                p = kcat_producer(bootstrap)
                procs.append(p)
                p.stdin.write((aid + "\t" + json.dumps(raised_alert(aid, num, at)) + "\n").encode())
                p.stdin.close()
        for p in procs:
            if p.wait(timeout=120) != 0:
                raise RuntimeError(f"kcat exited with {p.returncode}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return emitted


def wait_counts(d, want_submits, want_delivered, timeout, what):
    """Polls /metrics until both counters reach their targets; returns the poll log
    [(epoch ms, submits, delivered)]."""
    log = []
    deadline = time.monotonic() + timeout
    while True:
        s, dl = d.counts()
        log.append((now_ms(), s, dl))
        if s >= want_submits and dl >= want_delivered:
            return log
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}: submits {s:.0f}/{want_submits}, "
                               f"delivered {dl:.0f}/{want_delivered}\n" + d.stderr_tail())
        if d.proc.poll() is not None:
            raise RuntimeError(f"tocsin exited with {d.proc.returncode}\n" + d.stderr_tail())
        time.sleep(0.02)


def timelines(d, emitted):
    """Per alert: (emitted, raised_at, submitted, delivered) in epoch ms, from the alerts API."""
    out = {}
    for aid, em in emitted.items():
        a = d.alert(aid)
        notes = a["notifications"] if a else []
        if len(notes) != 1:
            raise RuntimeError(f"alert {aid}: {len(notes)} notifications, want 1")
        tl = {}
        for e in notes[0]["timeline"]:
            tl.setdefault(e["action"], parse_ms(e["at"]))
        if "submitted" not in tl or "delivered" not in tl:
            raise RuntimeError(f"alert {aid}: timeline {[e['action'] for e in notes[0]['timeline']]}")
        out[aid] = (em, parse_ms(a["raised_at"]), tl["submitted"], tl["delivered"], tl.get("gateway_accepted"))
    return out


def summarize(rows, n):
    em = [r[0] for r in rows.values()]
    raised = [r[1] for r in rows.values()]
    sub = [r[2] for r in rows.values()]
    dlv = [r[3] for r in rows.values()]
    desk = [r[2] - r[1] for r in rows.values()]
    e2e = [r[2] - r[0] for r in rows.values()]
    acc = [r[4] - r[2] for r in rows.values() if r[4]]
    span_sub = max(max(sub) - min(sub), 1) / 1000
    span_dlv = max(max(dlv) - min(sub), 1) / 1000
    return {
        "n": n,
        "submits_per_s": n / span_sub, "submit_span_s": span_sub,
        "delivered_per_s": n / span_dlv, "delivered_span_s": span_dlv,
        "desk_p50": pct(desk, 50), "desk_p99": pct(desk, 99), "desk_max": max(desk),
        "e2e_p50": pct(e2e, 50), "e2e_p99": pct(e2e, 99), "e2e_max": max(e2e),
        "intake_p50": pct([r - e for r, e in zip(raised, em)], 50), "intake_p99": pct([r - e for r, e in zip(raised, em)], 99),
        "raise_span_s": (max(raised) - min(raised)) / 1000,
        "sendsms_p50": pct(acc, 50) if acc else None, "sendsms_p99": pct(acc, 99) if acc else None,
    }


def tocsin_phase(binary, k, a, tick, number_base, log):
    from harness import Broker
    work = tempfile.mkdtemp(prefix="tocsin-bench-")
    broker = Broker(work, ["calls:4", "faults:1", "complaints:1", "alerts:4", "tocsin.dlq:1", "tocsin.late:1"])
    d = None
    try:
        d = Tocsin(binary, work, broker.bootstrap, k, a, tick)
        # Warm-up: the desk's consumer has its partitions and the gateway connections are open.
        produce(broker.bootstrap, [("warm000000000000", "%d00000001" % number_base)])
        wait_counts(d, 1, 1, 60, "the warm-up alert's receipt")
        s0, d0 = d.counts()
        results = {"tick": tick}
        cpu0 = cpu_seconds(d.proc.pid)
        ids = [(f"burst{i:011d}", "%d%07d1" % (number_base, i + 1)) for i in range(a.n)]
        log(f"  tick {tick}: producing {a.n} alerts in one go ...")
        t_prod = time.monotonic()
        emitted = produce(broker.bootstrap, ids)
        prod_s = time.monotonic() - t_prod
        polls = wait_counts(d, s0 + a.n, d0 + a.n, 60 + a.n / 20, f"{a.n} submits and receipts")
        cpu1 = cpu_seconds(d.proc.pid)
        retries = d.metric("tocsin_notification_retries_total", channel="sms")
        rows = timelines(d, emitted)
        b = summarize(rows, a.n)
        b["produce_s"] = prod_s
        b["tocsin_cpu_s"] = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
        b["retries"] = retries
        # The polled view (20 ms resolution), as a cross-check of the timeline figures.
        first = next((t for t, s, _ in polls if s > s0), None)
        last_s = next((t for t, s, _ in polls if s >= s0 + a.n), None)
        b["polled_submits_per_s"] = a.n / ((last_s - first) / 1000) if first and last_s and last_s > first else None
        results["burst"] = b
        if a.rows:
            results["burst_rows"] = rows
        if a.paced_n > 0 and a.paced_rate > 0:
            s1, d1 = d.counts()
            pids = [(f"paced{i:011d}", "%d%07d1" % (number_base + 1, i + 1)) for i in range(a.paced_n)]
            log(f"  tick {tick}: producing {a.paced_n} alerts at {a.paced_rate}/s ...")
            emitted = produce(broker.bootstrap, pids, pace=a.paced_rate)
            wait_counts(d, s1 + a.paced_n, d1 + a.paced_n, 60 + a.paced_n / 20, f"{a.paced_n} paced submits and receipts")
            prow = timelines(d, emitted)
            results["paced"] = summarize(prow, a.paced_n)
            if a.rows:
                results["paced_rows"] = prow
        results["unmatched_receipts"] = d.metric("tocsin_sms_callbacks_unmatched_total", kind="receipt")
        return results
    finally:
        if d:
            d.stop()
        broker.stop()
        import shutil
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(SOURCE_DIR, "build"), help="build dir with app/tocsin")
    p.add_argument("--n", type=int, default=2000, help="notifications per measurement (default 2000)")
    p.add_argument("--concurrency", type=int, default=16, help="sendsms connections for Kannel alone (default 16)")
    p.add_argument("--ticks", default="default,5ms",
                   help="alerting.tick values to run Tocsin with, comma-separated; 'default' leaves it unset (100 ms)")
    p.add_argument("--rate", type=int, default=5000, help="sms channel rate (default 5000/s)")
    p.add_argument("--max-in-flight", type=int, default=16, help="sms channel max_in_flight (default 16)")
    p.add_argument("--smsc-delay", type=float, default=0.2, help="SMPP simulator receipt delay, s (default 0.2)")
    p.add_argument("--paced-n", type=int, default=200, help="alerts of the paced latency probe (0: none)")
    p.add_argument("--paced-rate", type=float, default=50, help="alerts/s of the paced probe (default 50)")
    p.add_argument("--json", help="also write every figure to this file")
    p.add_argument("--rows", action="store_true",
                   help="with --json: also every alert's (emitted, raised, submitted, delivered, accepted) epoch ms")
    a = p.parse_args()

    binary = os.environ.get("TOCSIN_BIN", os.path.join(a.build, "app", "tocsin"))
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} not found: build first (cmake --build build)")
    from kannel_stack import KannelStack, kannel_missing
    missing = kannel_missing()
    if missing:
        print("SKIP: " + missing)
        sys.exit(77)
    for tool in ("kcat",):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            sys.exit(f"{tool} is missing")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    ticks = [t.strip() for t in a.ticks.split(",") if t.strip()]
    lport = free_port()
    listener = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--dlr-listener", str(lport)])
    k = None
    out = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "load_before": loadavg(), "args": vars(a)}
    try:
        from harness import wait_for
        wait_for("the DLR listener", lambda: _answers(f"http://127.0.0.1:{lport}/stats"), timeout=10)
        log(f"waiting for the Kannel stack (lock /tmp/tocsin-kannel-stack.lock) ...")
        k = KannelStack(mo_url=f"http://127.0.0.1:{lport}/mo", smsc_delay=a.smsc_delay)
        k.start()
        # Kannel alone before every Tocsin variant and once more at the end: the machine is
        # shared, so each variant is compared with the Kannel runs on either side of it.
        out["kannel_runs"], out["tocsin"] = [], []
        for i, tick in enumerate(ticks + [None]):
            log(f"Kannel alone ({i + 1}/{len(ticks) + 1}): {a.n} sendsms, concurrency {a.concurrency} ...")
            out["kannel_runs"].append(kannel_alone(k, a.n, a.concurrency, f"http://127.0.0.1:{lport}", 1390 + i))
            if tick is not None:
                out["tocsin"].append(tocsin_phase(binary, k, a, tick, 1370 + 2 * i, log))
    finally:
        if k:
            k.stop()
        listener.terminate()
        listener.wait(timeout=10)
    out["load_after"] = loadavg()
    report(out, a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


def _answers(url):
    try:
        urllib.request.urlopen(url, timeout=1).read()
        return True
    except OSError:
        return False


def report(out, a):
    kr = out["kannel_runs"]
    print(f"\nmust_reach bench  {out['started']}  N={a.n}  kannel concurrency={a.concurrency}  "
          f"smsc delay={a.smsc_delay}s  sms rate={a.rate}/s max_in_flight={a.max_in_flight}  "
          f"load {out['load_before']} -> {out['load_after']}")
    print("\nKannel alone (sendsms -> smsbox -> bearerbox -> SMPP simulator; DLR callbacks to a local listener)")
    print("| run | accepted sendsms/s | request p50 / p99 | final DLRs/s (first request to last DLR 1) | codes | CPU s smsbox / bearerbox / smsc |")
    print("|---|---:|---:|---:|---|---|")
    for i, kx in enumerate(kr):
        c = kx["cpu_s"]
        cpu = " / ".join(f"{c[n]:.1f}" if c.get(n) is not None else "-" for n in ("smsbox", "bearerbox", "smsc"))
        print(f"| {i + 1} | {kx['accepted_per_s']:.0f} | {kx['req_p50_ms']:.1f} / {kx['req_p99_ms']:.1f} ms | "
              f"{kx['final_dlr_per_s']:.0f} ({kx['last_final_after_s']:.1f} s) | {kx['codes']} | {cpu} |")
    print("\nTocsin (alerts topic -> desk -> sendsms -> Kannel; DLRs back to Tocsin). Ratios: against the mean of the")
    print("Kannel runs just before and just after that variant (accepted/s for submits, final DLRs/s for delivered).")
    print("| tick | load | submits/s | delivered/s | submits ÷ Kannel accepted | delivered ÷ Kannel DLRs | "
          "desk p50 / p99 (max) ms | end-to-end p50 / p99 ms | intake p50 / p99 ms | sendsms answer p50 / p99 ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, t in enumerate(out["tocsin"]):
        acc = (kr[i]["accepted_per_s"] + kr[i + 1]["accepted_per_s"]) / 2
        dlr = (kr[i]["final_dlr_per_s"] + kr[i + 1]["final_dlr_per_s"]) / 2
        t["kannel_accepted_ref"], t["kannel_dlr_ref"] = acc, dlr
        for kind in ("burst", "paced"):
            b = t.get(kind)
            if not b:
                continue
            label = "default (100ms)" if t["tick"] == "default" else t["tick"]
            if kind == "burst":
                what = f"burst of {b['n']}"
                rates = f"{b['submits_per_s']:.0f} | {b['delivered_per_s']:.0f}"
                ratios = f"**{b['submits_per_s'] / acc:.2f}** | {b['delivered_per_s'] / dlr:.2f}"
            else:
                what = f"paced {b['n']} at {a.paced_rate:g}/s"
                rates, ratios = "– | –", "– | –"
            print(f"| {label} | {what} | {rates} | {ratios} | {b['desk_p50']} / {b['desk_p99']} ({b['desk_max']}) | "
                  f"{b['e2e_p50']} / {b['e2e_p99']} | {b['intake_p50']} / {b['intake_p99']} | "
                  f"{b['sendsms_p50']} / {b['sendsms_p99']} |")
    for t in out["tocsin"]:
        b = t["burst"]
        pol = f"{b['polled_submits_per_s']:.0f}" if b["polled_submits_per_s"] else "-"
        print(f"tick {t['tick']}: burst produced in {b['produce_s']:.2f} s; desk took the alerts in over "
              f"{b['raise_span_s']:.2f} s; submits over {b['submit_span_s']:.2f} s (polled /metrics: {pol}/s); "
              f"last receipt {b['delivered_span_s']:.2f} s after the first submit; tocsin CPU {b['tocsin_cpu_s']:.1f} s; "
              f"retries {b['retries']:.0f}; unmatched receipts {t['unmatched_receipts']:.0f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--dlr-listener":
        run_dlr_listener(int(sys.argv[2]))
    else:
        main()

"""Dashboards and self-monitoring rules against a real Prometheus server.

`tocsin run` on its embedded broker with demo traffic, plus events injected with kcat
so that every alert type the dashboards show is raised (fraud must-reach, heating
outages and restorations, hotline SLA breaches by category, the escalation ladder,
hotspots). The alert desk sends SMS through a real Kannel 1.4.5 on loopback
(kannel_stack.py: bearerbox, smsbox and the SMPP simulator, route smpp1) whose
answer depends on the destination's last digit: 1 delivered (a real DLR callback),
9 accepted but never a receipt (no receipt, escalation, unreached victim). So the
delivery panels show real gateway outcomes.
Prometheus (Debian `prometheus`, 127.0.0.1, a free port, 1 s scrape interval, a
temporary TSDB) scrapes it and loads monitoring/prometheus/tocsin-rules.yml.

Then every query of every panel of every dashboard (Grafana macros and template
variables substituted) must be valid PromQL and return at least one finite value;
a dashboard that names a metric Tocsin does not export fails. Every wait polls a
condition until a deadline. Exit 77 (skipped) when Kannel is not installed.
"""
import glob
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SOURCE_DIR, Daemon, kcat_produce, wait_for  # noqa: E402
from kannel_stack import KannelStack, kannel_missing  # noqa: E402

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
DASHBOARDS = os.path.join(SOURCE_DIR, "monitoring", "dashboards")
RULES_FILE = os.path.join(SOURCE_DIR, "monitoring", "prometheus", "tocsin-rules.yml")

# Grafana's macros as they would be substituted. The rate window spans the whole
# test, so every counter increase the fixture causes is inside it.
MACROS = {"__rate_interval": "5m", "__interval": "15s", "__range": "5m"}

# Rules of this test, next to examples/rules (whose fraud.spoofed_official_number,
# heating.fault_opened and heating.complaint_cluster_2h fire too). Ids follow the
# packs where a dashboard selects by rule id; clocks run in seconds, not hours.
# Like the hotline pack's, the SLA titles name {category}: an absence rule keeps only
# the start event's fields its alert names, and the category label comes from those.
RULES = """rules:
  - id: fraud.victim_call
    stream: calls
    where: caller == "10690000000" and duration_s >= 180
    window: {group_by: [callee], size: 1h}
    aggregates: {calls: count()}
    having: calls >= 1
    alert: {type: fraud.must_reach, severity: critical, title: "Victim {callee} on a long call with a scam number"}
  - id: heating.outage.restored
    stream: faults
    on: [restored]
    where: starts_with(network_id, "MON-")
    alert: {type: heating.restored, severity: info, title: "Heating restored on {network_id}"}
  - id: hotline.contact_1h
    stream: complaints
    absence:
      key: [ticket_id]
      start: {on: [signed], where: 'starts_with(ticket_id, "MON-")'}
      deadlines:
        - {name: contact, after: 2s, until: {on: [contacted]}}
      cancel: {on: [closed]}
    alert: {type: hotline.sla.contact, severity: high, title: "Ticket {ticket_id} ({category}) not contacted", unmasked: [ticket_id]}
  - id: hotline.contact_ladder
    stream: complaints
    absence:
      key: [ticket_id]
      start: {on: [signed], where: 'starts_with(ticket_id, "MON-")'}
      deadlines:
        - {name: community, after: 2s, until: {on: [contacted]}, severity: medium}
        - {name: street, after: 3s, until: {on: [contacted]}, severity: high}
        - {name: district, after: 4s, until: {on: [contacted]}, severity: critical}
      cancel: {on: [closed]}
    alert: {type: hotline.escalation, severity: medium, title: "Ticket {ticket_id} ({category}) escalated to {deadline}",
            unmasked: [ticket_id]}
  - id: hotline.hotspot_weekly
    stream: complaints
    on: [received]
    where: starts_with(ticket_id, "MON-") and category != null and grid != null
    window: {type: tumbling, group_by: [category, grid], size: 1w}
    aggregates: {complaints: count()}
    having: complaints >= 2
    alert: {type: hotline.hotspot, severity: medium, title: "Grid {grid}: {complaints} complaints about {category}"}
"""

# Victims are warned by SMS; not reached within 2 s the operators get a console task
# (an escalation), and nobody reached within 4 s raises fraud.unreached_victim.
ALERTING = """channels:
  sms: {kind: sms, rate: 100, max_in_flight: 8, max_attempts: 3, backoff: 200ms, backoff_max: 1s,
        receipt_timeout: 3s, expire_after: 1m}
  console: {kind: console}
contacts:
  duty: {phone: "13900000001"}
groups:
  operators: [duty]
language: en
templates:
  warn: {en: "[Anti-fraud] {title}. Reply 1."}
policies:
  - name: victim
    match: ['type=fraud.must_reach']
    stop_when: reached
    steps:
      - notify: [{channel: sms, to: subject, as: victim, template: warn}]
        wait: 2s
      - notify: [{channel: console, to: group:operators, as: operator}]
        wait: 1m
    unreached: {after: 4s, type: fraud.unreached_victim, severity: critical}
  - name: unreached
    match: ['type=fraud.unreached_victim']
    stop_when: acknowledged
    steps:
      - notify: [{channel: console, to: group:operators}]
        wait: 10m
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url, timeout=10):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # Prometheus answers 400/422 with a JSON error body
        return json.loads(e.read())


class Prometheus:
    """A throwaway Prometheus server scraping `target` every second."""

    def __init__(self, workdir, target):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = os.path.join(workdir, "prometheus.yml")
        with open(config, "w") as f:
            f.write(f"""global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{RULES_FILE}"]
scrape_configs:
  - job_name: tocsin
    static_configs: [{{targets: ["{target}"]}}]
""")
        self.log_path = os.path.join(workdir, "prometheus.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={os.path.join(workdir, 'tsdb')}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for("Prometheus ready", self._ready, timeout=60, interval=0.2)

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            return urllib.request.urlopen(self.url + "/-/ready", timeout=2).status == 200
        except OSError:
            return False

    def query(self, expr):
        return http_json(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))

    def values(self, expr):
        """Sample values of an instant query; raises on an invalid query."""
        r = self.query(expr)
        if r.get("status") != "success":
            raise AssertionError(f"query failed: {expr}\n{r.get('errorType')}: {r.get('error')}")
        res = r["data"]["result"]
        if r["data"]["resultType"] == "scalar":
            return [float(res[1])]
        return [float(s["value"][1]) for s in res]

    def log_tail(self, n=30):
        with open(self.log_path) as f:
            return "".join(f.readlines()[-n:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def panel_queries():
    """(dashboard file, panel title, refId, expr, variables) for every target of every panel."""
    out = []
    for path in sorted(glob.glob(os.path.join(DASHBOARDS, "*.json"))):
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
        panels = []
        for p in d.get("panels", []):
            panels.append(p)
            panels.extend(p.get("panels", []))
        for p in panels:
            for t in p.get("targets", []):
                out.append((os.path.basename(path), p.get("title"), t.get("refId"), t["expr"], variables))
    return out


def substitute(expr, variables):
    """Grafana's interpolation for a query: macros, then template variables (All = allValue)."""
    def repl(m):
        name = m.group(1) or m.group(2)
        if name in MACROS:
            return MACROS[name]
        v = variables.get(name)
        if v is None:
            raise AssertionError(f"undefined template variable ${name} in {expr}")
        if v.get("includeAll"):
            return v.get("allValue") or ".*"
        raise AssertionError(f"no substitution for template variable ${name}")
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


def iso_now(offset_ms=0):
    ms = int(time.time() * 1000) + offset_ms
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


class MonitoringTest(unittest.TestCase):
    """One Tocsin + one Prometheus for every test of the class (started once)."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        work = cls.dir.name
        cls.daemon = cls.prom = cls.kannel = None
        try:
            with open(os.path.join(work, "monitoring.yaml"), "w") as f:
                f.write(RULES)
            with open(os.path.join(work, "alerting.yaml"), "w") as f:
                f.write(ALERTING)
            port = free_port()  # alerting's DLR URL and Kannel's MO URL need the real port
            cls.kannel = KannelStack(mo_url=f"http://127.0.0.1:{port}/sms/mo", smsc_delay=0.5)
            cls.kannel.start()
            k = cls.kannel
            extra = f"""embedded: {{brokers: 1, partitions: 2}}
demo: {{enabled: true, rate: 100, seed: 7}}
alerting:
  file: {work}/alerting.yaml
  state_dir: {work}/state
  sms: {{sendsms_url: "{k.sendsms_url}", username: {k.username}, password: {k.password}, from: "{k.sender}",
        smsc: smpp1, timeout: 3s}}
  tick: 50ms
"""
            # Empty bootstrap servers: the daemon starts its embedded broker.
            cls.daemon = Daemon(work, "", workers=1, rules_dir=f"{SOURCE_DIR}/examples/rules, {work}/monitoring.yaml",
                                rules_options={"watch": "false"}, http_listen=f"127.0.0.1:{port}",
                                extra_config=extra)
            cls.bootstrap = re.search(r"bootstrap servers:\s+(\S+)", cls.daemon.banner).group(1)
            cls.prom = Prometheus(work, f"127.0.0.1:{port}")
            # A labelled series is born at its first value, which rate() cannot see: every
            # alert type is raised in two rounds, each scraped before the next.
            wait_for("two scrapes of Tocsin", lambda: cls.prom.values(
                'count_over_time(tocsin_build_info{job="tocsin"}[1m]) >= 2'), timeout=60, interval=0.5)
            for n in (1, 2):
                cls.inject(n)
                cls.wait_for_fixture(n)
        except BaseException:
            cls.print_logs()
            cls.tearDownClass()
            raise

    @classmethod
    def inject(cls, n):
        """Round n of events; each raises every alert type the dashboards select."""
        now = iso_now()
        victims = [f"131000{n:02d}001", f"131000{n:02d}009"]  # last digit: the SMPP simulator's answer
        calls = [("10690000000", {"call_id": f"MON-C{n}-{i}", "start_time": now, "caller": "10690000000",
                                  "callee": callee, "duration_s": 300, "answered": True})
                 for i, callee in enumerate(victims)]
        calls.append(("0044201234567", {"call_id": f"MON-S{n}", "start_time": now, "caller": "0044201234567",
                                        "callee": "13912345678", "duration_s": 300, "answered": True,
                                        "origin": "international", "display_number": "95588"}))
        faults = [(f"MON-N{n}", {"fault_id": f"MON-F{n}", "time": now, "kind": kind, "network_id": f"MON-N{n}",
                                 "asset_id": "HS-1", "households": 120})
                  for kind in ("opened", "restored")]
        complaints = [(f"MON-B{n}", {"ticket_id": f"MON-T{n}-{i}", "time": now, "status": "received",
                                     "category": "heating.no_heat", "complainant": f"135111{n:02d}00{i}",
                                     "building": f"MON-B{n}", "grid": f"MON-G{n}"}) for i in range(3)]
        complaints += [(f"MON-T{n}-9", {"ticket_id": f"MON-T{n}-9", "time": now, "status": s,
                                        "category": "water.outage", "building": "MON-X"})
                       for s in ("dispatched", "signed")]
        for topic, records in (("calls", calls), ("faults", faults), ("complaints", complaints)):
            kcat_produce(cls.bootstrap, topic, [(k, json.dumps(v).encode()) for k, v in records])

    @classmethod
    def tearDownClass(cls):
        if cls.prom:
            cls.prom.stop()
        if cls.daemon:
            cls.daemon.stop(signal.SIGTERM)
        if cls.kannel:
            cls.kannel.stop()
        cls.dir.cleanup()

    @classmethod
    def print_logs(cls):
        if cls.daemon:
            with open(cls.daemon.stderr_path) as f:
                print("--- tocsin stderr (last 40 lines)\n" + "".join(f.readlines()[-40:]))
        if cls.prom:
            print("--- prometheus log\n" + cls.prom.log_tail())
        if cls.kannel and os.path.isdir(cls.kannel.run_dir):
            print(cls.kannel.log_tails(15))

    def run(self, result=None):
        failures = len(result.failures) + len(result.errors) if result else 0
        out = super().run(result)
        if result and len(result.failures) + len(result.errors) > failures:
            self.print_logs()
        return out

    @classmethod
    def wait_for_fixture(cls, n):
        """Until Prometheus has scraped the outcome of n rounds of injected events."""
        ready = {
            "handset receipts (time to reach)": "tocsin_alert_time_to_reach_seconds_count",
            "unreached victims": 'tocsin_alerts_unreached_total{type="fraud.must_reach"}',
            "escalations": 'tocsin_escalations_total{level="1"}',
            "notifications without receipt": 'tocsin_notifications_total{outcome="no-receipt"}',
            "the ladder's district level": 'tocsin_alerts_raised_total{type="hotline.escalation", severity="critical"}',
            "contact breaches": 'tocsin_alerts_raised_total{type="hotline.sla.contact"}',
            "hotspots": 'tocsin_alerts_raised_total{type="hotline.hotspot"}',
            "inferred outages": 'tocsin_alerts_raised_total{type="heating.suspected_outage"}',
            "restorations": 'tocsin_alerts_raised_total{type="heating.restored"}',
        }
        for what, expr in ready.items():
            wait_for(f"{n} round(s) of {what} in Prometheus",
                     lambda: cls.prom.values(f"sum({expr}) >= {n}"), timeout=60, interval=0.5)

    def test_every_dashboard_query_is_valid_and_returns_data(self):
        queries = panel_queries()
        self.assertGreater(len(queries), 40)
        pending, invalid = {}, []
        for name, title, ref, expr, variables in queries:
            q = substitute(expr, variables)
            self.assertNotIn("$", q, f"{name}: {title}: unsubstituted variable")
            try:
                self.prom.values(q)
            except AssertionError as e:
                invalid.append(f"  {name} / {title} / {ref}: {e}")
            pending[(name, title, ref)] = q
        self.assertEqual(invalid, [], "invalid panel queries:\n" + "\n".join(invalid))

        def finite_data():  # rates need two scrapes after a series appears: poll
            for key, q in list(pending.items()):
                if any(math.isfinite(v) for v in self.prom.values(q)):
                    del pending[key]
            return not pending

        try:
            wait_for("every panel query to return data", finite_data, timeout=30, interval=1.0)
        except AssertionError:
            self.fail("panel queries without data (a metric or label value Tocsin does not export?):\n" +
                      "\n".join(f"  {n} / {t} / {r}: {q}" for (n, t, r), q in pending.items()))

    def test_a_query_on_a_missing_metric_has_no_data(self):
        # The check above is meaningful: a misspelt metric is valid PromQL but has no data.
        self.assertEqual(self.prom.values("sum(rate(tocsin_events_consumd_total[5m]))"), [])

    def test_template_variable_query_has_values(self):
        # label_values(tocsin_build_info, instance) is Grafana's, not PromQL: check its series.
        r = http_json(self.prom.url + "/api/v1/label/instance/values?" +
                      urllib.parse.urlencode({"match[]": "tocsin_build_info"}))
        self.assertEqual(r["status"], "success")
        self.assertTrue(r["data"])

    def test_self_monitoring_rules_load_and_evaluate(self):

        def evaluated():
            groups = http_json(self.prom.url + "/api/v1/rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return rules if rules and all(r.get("health") == "ok" for r in rules) else None
        rules = wait_for("every rule evaluated", evaluated, timeout=30, interval=0.5)
        with open(RULES_FILE) as f:
            self.assertEqual(len(rules), len(re.findall(r"(?m)^\s*- alert:", f.read())))
        # Every tocsin_* metric the rules use is in Prometheus.
        with open(RULES_FILE) as f:
            names = set(re.findall(r"\b(tocsin_[a-z0-9_]+)", "\n".join(
                line for line in f if not line.lstrip().startswith(("#", "summary", "description")))))
        missing = [n for n in sorted(names) if not self.prom.values(f"count({{__name__=\"{n}\"}})")]
        self.assertEqual(missing, [])

    def test_deliveries_went_through_the_real_gateway(self):
        # The SMPP simulator behind Kannel saw the victims' SMS and sent receipts for the ...1 ones.
        log = self.kannel.smsc_log()
        dsts = [r["submit"]["dst"] for r in log if "submit" in r]
        for n in (1, 2):
            for last in ("001", "009"):
                self.assertTrue(any(d.endswith(f"131000{n:02d}{last}") for d in dsts), f"no SMS to ...{n:02d}{last}: {dsts}")
        self.assertTrue(any(r.get("receipt") == "DELIVRD" for r in log))
        # ... and Tocsin counted those outcomes from Kannel's DLR callbacks.
        outcomes = {s["metric"]["outcome"]: float(s["value"][1]) for s in self.prom.query(
            'sum by (outcome) (tocsin_notifications_total{channel="sms"})')["data"]["result"]}
        self.assertGreaterEqual(outcomes.get("delivered", 0), 2, outcomes)
        self.assertGreaterEqual(outcomes.get("no-receipt", 0), 2, outcomes)
        self.assertTrue(self.prom.values('sum(tocsin_sms_callbacks_total{kind="receipt"}) > 0'))

    def test_stage_durations_event_ages_and_breach_categories_are_exported(self):
        stages = {s["metric"]["stage"] for s in self.prom.query(
            "sum by (stage) (tocsin_stage_duration_seconds_count) > 0")["data"]["result"]}
        self.assertEqual(stages, {"decode", "evaluate", "produce"})
        topics = {s["metric"]["topic"] for s in self.prom.query(
            "sum by (topic) (tocsin_event_age_seconds_count) > 0")["data"]["result"]}
        self.assertLessEqual({"calls", "faults", "complaints"}, topics)
        # The injected contact breaches are water.outage tickets: category "water", never the ticket id.
        self.assertTrue(self.prom.values(
            'sum(tocsin_alerts_raised_total{type="hotline.sla.contact", category="water"}) >= 2'),
            self.prom.query('tocsin_alerts_raised_total{type=~"hotline.*"}')["data"]["result"])
        categories = {s["metric"].get("category") for s in self.prom.query(
            "count by (category) (tocsin_alerts_raised_total)")["data"]["result"]}
        self.assertLessEqual(categories, {"gas", "heating", "housing", "noise", "power", "property", "road",
                                          "sanitation", "traffic", "water", "other", "none"}, categories)

    def test_metrics_pass_promtool_check_metrics(self):
        # Every family has samples by now (setUpClass waited for the fixture).
        text = urllib.request.urlopen(self.daemon.metrics_url, timeout=5).read()
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=30)
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, b""))
        for name in (b"tocsin_rules_active_info", b"tocsin_alert_time_to_reach_seconds_bucket",
                     b"tocsin_escalations_total"):
            self.assertIn(name, text)


if __name__ == "__main__":
    if not (os.path.exists(PROMETHEUS) and os.path.exists(PROMTOOL)):
        print("prometheus/promtool missing: install the Debian package `prometheus` (scripts/deps.sh)")
        sys.exit(1)
    if kannel_missing():
        print("SKIP: " + kannel_missing())
        sys.exit(77)
    unittest.main(verbosity=2)

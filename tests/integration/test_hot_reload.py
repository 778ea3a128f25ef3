"""Hot reload of the rules in a running daemon, over the real Kafka protocol:
a changed rule file goes live (new rules alert, unchanged rules keep their
window state), a broken one never does (the old rules keep alerting, the
failure is counted and shown on GET /-/rules and by POST /-/reload), and
SIGHUP reloads when the watcher is off."""
import json
import os
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from harness import TOCSIN, PipelineTestCase, kcat_consume, kcat_produce, wait_for

TOPICS = ["calls:4", "faults:4", "complaints:4", "alerts:4", "tocsin.dlq:4"]

RULE_A = """rules:
  - id: hot.repeat_caller
    stream: calls
    where: starts_with(caller, "1380")
    window: {group_by: [caller], size: 1h}
    aggregates: {n: count()}
    having: n >= 3
    alert: {type: hot.repeat, severity: high, title: "{caller} called {n} times"}
"""

RULE_B = """  - id: hot.long_call
    stream: calls
    where: duration_s > 3600
    alert: {type: hot.long, severity: medium, title: "long call {call_id}"}
"""

BROKEN = """  - id: hot.broken
    stream: calls
    where: caller > 5
    alert: {type: hot.broken, severity: low, title: "never"}
"""


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def call(call_id, caller, duration, t=None):
    t = t if t is not None else int(time.time() * 1000) - 60_000
    return (caller, json.dumps({"call_id": call_id, "start_time": iso(t), "caller": caller, "callee": "13900001111",
                                "duration_s": duration, "answered": True}).encode())


def http(method, url):
    """(status, body) of a request; 4xx/5xx are returned, not raised."""
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


class HotReloadTest(PipelineTestCase):
    TOPICS = TOPICS

    def setUp(self):
        super().setUp()
        self.rules_dir = os.path.join(self.dir.name, "rules")
        os.mkdir(self.rules_dir)
        self.rule_file = os.path.join(self.rules_dir, "hot.yaml")
        write(self.rule_file, RULE_A)

    def start(self, **rules_options):
        d = super().start(workers=1, rules_dir=self.rules_dir, rules_options=rules_options)
        self.assertIn("reload rules:", d.banner)
        self.assertIn(f"kill -HUP {d.proc.pid}", d.banner)
        return d

    def expected_version(self):
        """The version `tocsin rules check` gives the same directory: what must go live."""
        out = subprocess.run([TOCSIN, "rules", "check", self.rules_dir], capture_output=True, text=True, check=True).stdout
        return out.split("version ")[1].split()[0]

    def rules(self, d):
        status, body = http("GET", d.base_url + "/-/rules")
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def live_version(self, d):
        """The version the workers run, as /metrics reports it."""
        for (name, labels), _ in d.metrics().items():
            if name == "tocsin_rules_loaded":
                return dict(labels)["rule_set_version"]
        return None

    def alerts(self):
        return [json.loads(v) for _, _, v in kcat_consume(self.broker.bootstrap, "alerts")]

    def wait_alert(self, rule, last_event_id, count=1):
        """The alert `rule` raised on event `last_event_id` after `count` matching events."""
        return wait_for(f"an alert of {rule} on {last_event_id}", lambda: next(
            (a for a in self.alerts() if a["rule"] == rule and a["evidence"]["last_event_id"] == last_event_id
             and a["evidence"]["count"] == count), None), timeout=30)

    def test_file_change_goes_live_and_a_broken_file_never_does(self):
        d = self.start(watch_interval="100ms")
        v1 = self.expected_version()
        self.assertEqual(self.rules(d)["version"], v1)
        self.assertEqual(self.rules(d)["last_reload"]["trigger"], "startup")

        # Two of the three calls rule A needs, before the reload.
        kcat_produce(self.broker.bootstrap, "calls", [call("a1", "13800000001", 10), call("a2", "13800000001", 10)])
        wait_for("rule A saw two calls",
                 lambda: d.total("tocsin_rule_matches_total", rule="hot.repeat_caller") == 2, timeout=60)

        # Rule B is added; rule A is unchanged.
        write(self.rule_file, RULE_A + RULE_B)
        v2 = self.expected_version()
        self.assertNotEqual(v2, v1)
        wait_for("the new version live in the workers", lambda: self.live_version(d) == v2)
        r = self.rules(d)
        self.assertEqual(r["rules"], ["hot.repeat_caller", "hot.long_call"])
        self.assertEqual(r["version"], v2)
        self.assertEqual(r["last_reload"]["trigger"], "watch")
        self.assertTrue(r["last_reload"]["ok"])
        self.assertEqual(d.total("tocsin_rules_reload_total", result="success"), 1)

        # The third call completes rule A's window only if its state survived the swap.
        kcat_produce(self.broker.bootstrap, "calls", [call("a3", "13800000001", 10), call("b1", "13700000002", 4000)])
        self.wait_alert("hot.long_call", "b1")
        a = self.wait_alert("hot.repeat_caller", "a3", count=3)
        self.assertEqual(a["evidence"]["first_event_id"], "a1", "the window kept the events before the reload")
        if "rule_set_version" in a:
            self.assertEqual(a["rule_set_version"], v2)

        # A broken file never goes live.
        write(self.rule_file, RULE_A + RULE_B + BROKEN)
        broken_line = (RULE_A + RULE_B + BROKEN).splitlines().index("    where: caller > 5") + 1
        wait_for("the failed reload counted", lambda: d.total("tocsin_rules_reload_failures_total") == 1)
        self.assertEqual(d.total("tocsin_rules_reload_total", result="failure"), 1)
        r = self.rules(d)
        self.assertEqual(r["version"], v2)
        self.assertEqual(r["rules"], ["hot.repeat_caller", "hot.long_call"])
        last = r["last_reload"]
        self.assertFalse(last["ok"])
        self.assertEqual(last["trigger"], "watch")
        diag = last["diagnostics"][0]
        self.assertEqual(diag["file"], self.rule_file)
        self.assertEqual(diag["line"], broken_line)
        self.assertGreater(diag["column"], 0)
        self.assertEqual(diag["code"], "E201")
        with open(d.stderr.name) as f:
            self.assertIn(f"{self.rule_file}:{broken_line}:{diag['column']}: error E201", f.read())

        # The admin endpoint says the same while the file is broken.
        status, body = http("POST", d.base_url + "/-/reload")
        self.assertEqual(status, 422, body)
        res = json.loads(body)
        self.assertFalse(res["ok"])
        self.assertEqual(res["version"], v2)
        self.assertEqual([(x["file"], x["line"]) for x in res["diagnostics"]], [(self.rule_file, broken_line)])
        self.assertEqual(d.total("tocsin_rules_reload_failures_total"), 2)
        self.assertEqual(http("GET", d.base_url + "/-/reload")[0], 405)
        self.assertEqual(http("POST", d.base_url + "/-/rules")[0], 405)

        # The old rules keep alerting.
        kcat_produce(self.broker.bootstrap, "calls", [call("b2", "13700000003", 5000)])
        self.wait_alert("hot.long_call", "b2")
        self.assertEqual(self.live_version(d), v2)

        # Fixed (rule B removed): the admin endpoint puts it live.
        write(self.rule_file, RULE_A)
        status, body = http("POST", d.base_url + "/-/reload")
        self.assertEqual(status, 200, body)
        res = json.loads(body)
        self.assertTrue(res["ok"])
        self.assertEqual(res["version"], v1)
        wait_for("rule B gone from the workers", lambda: self.live_version(d) == v1)
        self.assertEqual(self.rules(d)["rules"], ["hot.repeat_caller"])
        self.assertGreater(d.total("tocsin_rules_last_reload_success_timestamp_seconds"), time.time() - 600)
        self.assertEqual(d.stop(), 0)

    def test_sighup_reloads_with_the_watcher_off(self):
        d = self.start(watch="false")
        v1 = self.expected_version()
        write(self.rule_file, RULE_A + RULE_B)
        v2 = self.expected_version()
        d.proc.send_signal(signal.SIGHUP)
        wait_for("the SIGHUP reload", lambda: self.rules(d)["version"] == v2)
        last = self.rules(d)["last_reload"]
        self.assertEqual(last["trigger"], "sighup")
        self.assertTrue(last["changed"], "the signal, not a watcher, applied the change")
        wait_for("the new version live in the workers", lambda: self.live_version(d) == v2)
        kcat_produce(self.broker.bootstrap, "calls", [call("b1", "13700000002", 4000)])
        self.wait_alert("hot.long_call", "b1")

        # A broken file on SIGHUP: counted, the daemon keeps running the old set.
        write(self.rule_file, RULE_A + RULE_B + BROKEN)
        d.proc.send_signal(signal.SIGHUP)
        wait_for("the failed reload counted", lambda: d.total("tocsin_rules_reload_failures_total") == 1)
        self.assertIsNone(d.proc.poll(), "SIGHUP does not stop the daemon")
        self.assertEqual(self.rules(d)["version"], v2)
        self.assertNotEqual(v1, v2)
        self.assertEqual(d.total("tocsin_rules_reload_total", result="success"), 1)
        self.assertEqual(d.stop(signal.SIGTERM), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)

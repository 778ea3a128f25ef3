"""Must-reach delivery end to end: the real Kafka protocol (`tocsin broker`, kcat),
`tocsin run` with the alert desk, and a real Kannel 1.4.5 (bearerbox, smsbox,
fakesmsc and the SMPP simulator, whose answer depends on the destination's last
digit: 1 delivered, 2 undeliverable, 9 accepted but never a receipt).

Every wait polls a condition until a deadline. Exit 77 when Kannel is missing.
"""
import json
import os
import signal
import socket
import sys
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import PipelineTestCase, kcat_consume, kcat_produce, wait_for  # noqa: E402
from kannel_stack import KannelStack, kannel_missing  # noqa: E402

TOPICS = ["calls:2", "faults:1", "complaints:1", "alerts:2", "tocsin.dlq:1", "tocsin.late:1"]

RULES = """rules:
  - id: fraud.victim_long_call
    stream: calls
    where: duration_s >= 180 and in_table("vulnerable_residents", callee)
    window: {group_by: [callee], size: 1h}
    aggregates: {calls: count()}
    having: calls >= 1
    alert:
      type: fraud.must_reach
      severity: critical
      title: "必达预警：{callee} 与高风险号码通话 {duration_s} 秒"
"""

RESIDENTS = [  # victims' last digit picks the SMPP simulator's answer
    {"phone": "13100000001", "family_contacts": "13200000001"},
    {"phone": "13100000002", "family_contacts": "13200000011;13200000022"},
    {"phone": "13100000009", "family_contacts": ""},
]

ALERTING = """channels:
  sms: {kind: sms, rate: 200, max_in_flight: 16, max_attempts: 40, backoff: 500ms, backoff_max: 2s,
        receipt_timeout: 8s, expire_after: 5m}
  console: {kind: console}
contacts:
  duty: {phone: "13900000001"}
groups:
  operators: [duty]
templates:
  warn:
    zh: "【反诈预警】{title}。请勿转账。回复1确认。"
    en: "[Anti-fraud] {title}. Reply 1."
policies:
  - name: victim
    match: ['type=fraud.must_reach']
    stop_when: reached
    steps:
      - notify: [{channel: sms, to: subject, as: victim, template: warn}]
        wait: 30s
      - notify: [{channel: sms, to: lookup:vulnerable_residents.family_contacts, as: family, template: warn}]
        wait: 30s
      - notify: [{channel: console, to: group:operators, as: operator}]
        wait: 1m
    unreached: {after: 20s, type: fraud.unreached_victim, severity: critical}
  - name: unreached
    match: ['type=fraud.unreached_victim']
    stop_when: acknowledged
    steps:
      - notify: [{channel: sms, to: group:operators}]
        wait: 10m
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(call_id, caller, callee, duration_s=300):
    return {"call_id": call_id, "start_time": "2026-11-26T08:00:00.000Z", "caller": caller, "callee": callee,
            "duration_s": duration_s, "answered": True}


def raised_alert(alert_id, callee, title="必达预警"):
    return {"id": alert_id, "rule": "fraud.victim_long_call", "rule_set_version": "test", "type": "fraud.must_reach",
            "severity": "critical", "title": title, "stream": "calls", "key": {"callee": callee},
            "window": {"start": "2026-11-26T08:00:00.000Z", "end": "2026-11-26T08:00:00.000Z", "size_ms": 0},
            "evidence": {"count": 1, "first_event_id": "c", "first_event_time": "2026-11-26T08:00:00.000Z"},
            "emitted_at": "2026-11-26T08:00:00.000Z"}


class MustReachTest(PipelineTestCase):
    TOPICS = TOPICS

    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.kannel = KannelStack(mo_url=f"http://127.0.0.1:{self.port}/sms/mo", smsc_delay=1.0)
        self.kannel.start()
        work = self.dir.name
        with open(os.path.join(work, "rules.yaml"), "w") as f:
            f.write(RULES)
        with open(os.path.join(work, "residents.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in RESIDENTS)
        with open(os.path.join(work, "alerting.yaml"), "w") as f:
            f.write(ALERTING)
        self.state_dir = os.path.join(work, "state")

    def tearDown(self):
        result = self._outcome.result
        if any(t is self for t, _ in result.errors + result.failures):
            print(self.kannel.log_tails())
        self.kannel.stop()
        super().tearDown()

    def start_tocsin(self):
        k = self.kannel
        extra = f"""tables:
  - name: vulnerable_residents
    key_normalization: phone
    columns: [{{name: phone, type: string}}, {{name: family_contacts, type: string}}]
    file: residents.jsonl
alerting:
  file: alerting.yaml
  state_dir: {self.state_dir}
  sms: {{sendsms_url: "{k.sendsms_url}", username: {k.username}, password: {k.password}, from: "{k.sender}",
        smsc: smpp1, timeout: 3s}}
  tick: 50ms
"""
        d = self.start(workers=1, rules_dir=os.path.join(self.dir.name, "rules.yaml"),
                       http_listen=f"127.0.0.1:{self.port}", extra_config=extra)
        return d

    # ------------------------------------------------------------ helpers

    def api(self, d, path, body=None):
        req = urllib.request.Request(d.base_url + path, data=None if body is None else json.dumps(body).encode(),
                                     method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 404 and body is None:
                return {"notifications": []}  # not there yet
            raise

    def alerts(self, d, all_states=True):
        return self.api(d, "/api/v1/alerts" + ("?state=all" if all_states else ""))["alerts"]

    def submits_to(self, number):
        return [r for r in self.kannel.smsc_log() if "submit" in r and r["submit"]["dst"].endswith(number[-10:])]

    def produce_alert(self, alert):
        kcat_produce(self.broker.bootstrap, "alerts", [(alert["id"], json.dumps(alert, ensure_ascii=False).encode())])

    def notifications(self, d, alert_id):
        return self.api(d, f"/api/v1/alerts/{alert_id}")["notifications"]

    # ------------------------------------------------------------ tests

    def test_delivered_on_first_try_with_chinese_text_intact(self):
        d = self.start_tocsin()
        kcat_produce(self.broker.bootstrap, "calls",
                     [("17000000001", json.dumps(call("c1", "17000000001", "13100000001")).encode())])
        a = wait_for("the must-reach alert", lambda: next((x for x in self.alerts(d) if x["type"] == "fraud.must_reach"), None))
        delivered = wait_for("a delivery receipt", lambda: self.api(d, "/api/v1/alerts/" + a["id"]).get("reached_at"), timeout=30)
        self.assertTrue(delivered)
        detail = self.api(d, "/api/v1/alerts/" + a["id"])
        notes = detail["notifications"]
        self.assertEqual(len(notes), 1, "reached on the first try: no fallback")
        self.assertEqual(notes[0]["state"], "delivered")
        self.assertEqual(notes[0]["address"], "+86131****0001", "numbers are masked in the API")
        actions = [e["action"] for e in notes[0]["timeline"]]
        self.assertIn("submitted", actions)
        # The gateway's answer: "gateway_accepted", or "gateway_answer" when the handset's
        # receipt overtook it (a final state wins whatever the order).
        self.assertTrue({"gateway_accepted", "gateway_answer"} & set(actions), actions)
        self.assertIn("delivered", actions)
        submits = self.submits_to("13100000001")
        self.assertEqual(len(submits), 1)
        self.assertEqual(submits[0]["submit"]["data_coding"], 8, "UCS-2 for Chinese")
        self.assertIn("【反诈预警】必达预警：131****0001 与高风险号码通话 300 秒。请勿转账。回复1确认。", submits[0]["submit"]["text"])
        # Every lifecycle change is on the alerts topic, keyed by the alert id.
        records = wait_for("lifecycle records", lambda: [json.loads(v) for k, h, v in kcat_consume(self.broker.bootstrap, "alerts")
                                                         if h.get("tocsin-record") == "lifecycle" and k == a["id"]
                                                         and b'"reached"' in v])
        self.assertEqual(records[-1]["state"], "firing")
        self.assertNotIn("13100000001", json.dumps(records, ensure_ascii=False))
        self.assertEqual(d.total("tocsin_alerts_reached_total", type="fraud.must_reach"), 1)

    def test_undeliverable_victim_reaches_family_instead(self):
        d = self.start_tocsin()
        self.produce_alert(raised_alert("a000000000000002", "13100000002"))
        wait_for("a family member reached",
                 lambda: self.api(d, "/api/v1/alerts/a000000000000002").get("reached_at"), timeout=40)
        notes = wait_for("every notification final", lambda: (lambda ns: ns if all(
            n["state"] in ("delivered", "failed", "expired", "no-receipt", "cancelled") for n in ns) else None)(
            self.notifications(d, "a000000000000002")), timeout=20)
        by = {n["recipient"] + ":" + n["address"]: n["state"] for n in notes}
        self.assertEqual(by["victim:+86131****0002"], "failed")
        self.assertEqual(by["family:+86132****0011"], "delivered")
        self.assertEqual(by["family:+86132****0022"], "failed", "22 ends in 2: undeliverable too")
        self.assertEqual(len(notes), 3, "no operator step once a family member was reached")

    def test_no_receipt_ever_escalates_to_the_operator_and_raises_unreached(self):
        d = self.start_tocsin()
        self.produce_alert(raised_alert("a000000000000009", "13100000009"))
        u = wait_for("the unreached-victim alert",
                     lambda: next((x for x in self.alerts(d) if x["type"] == "fraud.unreached_victim"), None), timeout=40)
        self.assertEqual(u["severity"], "critical")
        notes = self.notifications(d, "a000000000000009")
        self.assertEqual([n["state"] for n in notes if n["recipient"] == "victim"], ["no-receipt"])
        self.assertTrue(any(n["channel"] == "console" for n in notes), "an operator task on the console")
        wait_for("the duty officer's SMS delivered",
                 lambda: self.api(d, "/api/v1/alerts/" + u["id"]).get("reached_at"), timeout=30)

    def test_sms_reply_acknowledges_and_stops_the_chain(self):
        d = self.start_tocsin()
        self.produce_alert(raised_alert("a000000000000019", "13100000009"))
        wait_for("the victim's SMS accepted", lambda: any(
            n["state"] == "gateway-accepted" for n in self.notifications(d, "a000000000000019")), timeout=20)
        self.kannel.send_mo("13100000009", "12110", "1 收到")
        a = wait_for("acknowledged by the reply", lambda: (lambda x: x if x["state"] == "acknowledged" else None)(
            self.api(d, "/api/v1/alerts/a000000000000019")), timeout=20)
        ack = [e for e in a["audit"] if e["action"] == "acknowledged"][0]
        self.assertTrue(ack["by"].startswith("sms:"))
        self.assertIn("1 收到", ack["detail"])
        # The chain stopped: past the receipt timeout and the unreached deadline nothing more is sent.
        wait_for("the victim's notification to settle", lambda: all(
            n["state"] != "gateway-accepted" for n in self.notifications(d, "a000000000000019")), timeout=20)
        self.assertEqual(len(self.notifications(d, "a000000000000019")), 1)
        self.assertFalse(any(x["type"] == "fraud.unreached_victim" for x in self.alerts(d)))

    def test_bearerbox_down_queues_retries_and_delivers_each_once(self):
        d = self.start_tocsin()
        self.kannel.crash_bearerbox()
        numbers = [f"1310000{i:03d}1" for i in range(5)]
        for i, n in enumerate(numbers):
            self.produce_alert(raised_alert(f"b00000000000000{i}", n))
        wait_for("retries while the gateway is down",
                 lambda: d.total("tocsin_notification_retries_total", channel="sms") >= 5, timeout=30)
        self.kannel.start_bearerbox()
        for i in range(5):
            wait_for(f"alert {i} reached", lambda i=i: self.api(d, f"/api/v1/alerts/b00000000000000{i}").get("reached_at"),
                     timeout=60)
        for n in numbers:
            self.assertEqual(len(self.submits_to(n)), 1, f"{n} got exactly one SMS")

    def submit_eight_with_receipts_4s_away(self, prefix):
        """Restarts Kannel with receipts 4 s after each submit, starts Tocsin, raises eight
        alerts `{prefix}00000000000000{i}` and returns (daemon, numbers) once every SMS is at the SMSC."""
        self.kannel.stop()
        self.kannel = KannelStack(mo_url=f"http://127.0.0.1:{self.port}/sms/mo", smsc_delay=4.0).start()
        d = self.start_tocsin()
        numbers = [f"1330000{i:03d}1" for i in range(8)]
        for i, n in enumerate(numbers):
            self.produce_alert(raised_alert(f"{prefix}00000000000000{i}", n))
        wait_for("every SMS at the SMSC", lambda: all(self.submits_to(n) for n in numbers), timeout=30)
        return d, numbers

    def assert_each_delivered_once(self, d, prefix, numbers):
        for i in range(len(numbers)):
            wait_for(f"alert {i} reached", lambda i=i: self.api(d, f"/api/v1/alerts/{prefix}00000000000000{i}").get("reached_at"),
                     timeout=60)
        for n in numbers:
            self.assertEqual(len(self.submits_to(n)), 1, f"{n} got exactly one SMS")
        for i in range(len(numbers)):
            notes = self.notifications(d, f"{prefix}00000000000000{i}")
            self.assertEqual([n["state"] for n in notes], ["delivered"])

    def test_kill_9_mid_delivery_completes_every_notification_exactly_once(self):
        d, numbers = self.submit_eight_with_receipts_4s_away("c")
        d.stop(signal.SIGKILL)  # submitted, receipts still 4 s away
        self.daemons.remove(d)
        self.assert_each_delivered_once(self.start_tocsin(), "c", numbers)

    def test_smsbox_crash_mid_delivery_completes_every_notification_exactly_once(self):
        # Kannel 1.4.5's smsbox panics when a receipt's receiver resets the connection
        # (see kannel_stack.py); bearerbox holds the receipts until smsbox is back.
        d, numbers = self.submit_eight_with_receipts_4s_away("e")
        self.kannel.daemons["smsbox"].stop(signal.SIGKILL)
        self.assert_each_delivered_once(d, "e", numbers)
        self.assertEqual(self.kannel.smsbox_starts, 2, "the stack's supervisor started smsbox again")

if __name__ == "__main__":
    missing = kannel_missing()
    if missing:
        print("SKIP: " + missing)
        sys.exit(77)
    unittest.main()

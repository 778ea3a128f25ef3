"""KannelSmsChannel and the DLR/MO routes against a real Kannel 1.4.5 (kannel_stack.py),
driven through tests/connectors/kannel_probe. Exit code 77 (ctest: skipped) when
Kannel is not installed."""
import json
import os
import subprocess
import sys
import threading
import unittest

from harness import wait_for
from kannel_stack import KannelStack, kannel_missing

PROBE = os.environ.get("KANNEL_PROBE", "")


class Probe:
    """kannel_probe in a child process; its JSON lines are collected by a reader thread."""

    def __init__(self, stack_args):
        self.proc = subprocess.Popen([PROBE, *stack_args, "--deadline-s", "280"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")
        self.events, self.lock = [], threading.Lock()
        self.stderr = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.events), daemon=True).start()
        threading.Thread(target=self._read_text, args=(self.proc.stderr, self.stderr), daemon=True).start()
        ready = wait_for("the probe's ready line", lambda: self.find(event="ready"), timeout=10)
        self.port = ready["port"]

    def _read(self, stream, into):
        for line in stream:
            with self.lock:
                into.append(json.loads(line))

    def _read_text(self, stream, into):
        for line in stream:
            with self.lock:
                into.append(line)

    def find_all(self, **want):
        with self.lock:
            return [e for e in self.events if all(e.get(k) == v for k, v in want.items())]

    def find(self, **want):
        found = self.find_all(**want)
        return found[0] if found else None

    def send(self, route, nid, to, text):
        self.proc.stdin.write(f"send\t{route}\t{nid}\t{to}\t{text}\n")
        self.proc.stdin.flush()

    def submit(self, route, nid, to, text, timeout=20):
        """Sends and returns the submit result event."""
        self.send(route, nid, to, text)
        return wait_for(f"the submit result of {nid}", lambda: self.find(event="submit", id=nid), timeout=timeout)

    def receipt(self, nid, state, timeout=20):
        return wait_for(f"a '{state}' receipt for {nid}", lambda: self.find(event="receipt", id=nid, state=state),
                        timeout=timeout)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)


class KannelChannelTest(unittest.TestCase):
    """One Kannel stack and one probe for the whole class; every test uses its own ids and numbers."""

    @classmethod
    def setUpClass(cls):
        cls.ids = iter(range(1, 1 << 30))
        cls.probe = None
        cls.stack = None
        try:
            # The probe first: Kannel's MO post-url needs its port.
            cls.probe = Probe(["--sendsms", "http://127.0.0.1:13013/cgi-bin/sendsms", "--user", "tester",
                               "--password", "foobar", "--from", "12110", "--timeout-ms", "3000"])
            cls.stack = KannelStack(mo_url=f"http://127.0.0.1:{cls.probe.port}/sms/mo", smsc_delay=0.5)
            cls.stack.start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.stack:
            cls.stack.stop()
        if cls.probe:
            cls.probe.stop()

    def tearDown(self):
        result = self._outcome.result
        if any(t is self for t, _ in result.errors + result.failures):
            print("--- probe events\n" + "\n".join(map(str, self.probe.events[-40:])))
            print("--- probe stderr\n" + "".join(self.probe.stderr[-20:]))
            print(self.stack.log_tails())

    def nid(self):
        return f"{next(self.ids) + os.getpid() * 1000:016x}"

    def test_delivered_on_first_try_via_smpp(self):
        nid = self.nid()
        r = self.probe.submit("smpp1", nid, "13800138011", "Fraud warning: do not transfer money")
        self.assertEqual((r["outcome"], r["http_status"]), ("accepted", 202), r)
        self.assertEqual(r["detail"], "HTTP 202 0: Accepted for delivery")
        d = self.probe.receipt(nid, "delivered")
        self.assertTrue(d["final"])
        self.assertIn("stat:DELIVRD", d["detail"])
        self.probe.receipt(nid, "smsc_accepted")
        submits = [x["submit"] for x in self.stack.smsc_log() if "submit" in x and x["submit"]["dst"] == "13800138011"]
        self.assertEqual(len(submits), 1, "delivered on the first try")
        self.assertEqual(submits[0]["text"], "Fraud warning: do not transfer money")

    def test_undeliverable(self):
        nid = self.nid()
        self.assertEqual(self.probe.submit("smpp1", nid, "13800138012", "x")["outcome"], "accepted")
        r = self.probe.receipt(nid, "undeliverable")
        self.assertTrue(r["final"])
        self.assertIn("stat:UNDELIV", r["detail"])

    def test_no_final_receipt_for_a_lost_one(self):
        lost, control = self.nid(), self.nid()
        self.assertEqual(self.probe.submit("smpp1", lost, "13800138019", "x")["outcome"], "accepted")
        self.probe.receipt(lost, "smsc_accepted")
        # A message submitted after it gets its final receipt: by then the lost one would have had its own.
        self.assertEqual(self.probe.submit("smpp1", control, "13800138021", "x")["outcome"], "accepted")
        self.probe.receipt(control, "delivered")
        states = [e["state"] for e in self.probe.find_all(event="receipt", id=lost)]
        self.assertEqual(states, ["smsc_accepted"])

    def test_chinese_arrives_intact_as_ucs2(self):
        text = "【反诈中心】您的账户存在风险，请勿转账。收到请回复1"
        nid = self.nid()
        self.assertEqual(self.probe.submit("-", nid, "13800138030", text)["outcome"], "accepted")
        got = wait_for("the message at fakesmsc",
                       lambda: [m for m in self.stack.fakesmsc_messages() if m["to"] == "13800138030"])
        self.assertEqual(got[0]["type"], "ucs-2", "coding=2 with charset=UTF-8")
        self.assertEqual(got[0]["text"], text)
        self.probe.receipt(nid, "delivered")  # fakesmsc: DLR 8 then 1
        # The same over SMPP: data_coding 8 (UCS-2).
        nid = self.nid()
        self.assertEqual(self.probe.submit("smpp1", nid, "13800138031", text)["outcome"], "accepted")
        sub = wait_for("the SMPP submit", lambda: [x["submit"] for x in self.stack.smsc_log()
                                                   if "submit" in x and x["submit"]["dst"] == "13800138031"])
        self.assertEqual((sub[0]["data_coding"], sub[0]["text"]), (8, text))

    def test_long_chinese_is_truncated_by_us_not_by_kannel(self):
        nid = self.nid()
        r = self.probe.submit("-", nid, "13800138040", "收" * 700)
        self.assertEqual(r["outcome"], "accepted")
        self.assertIn("text truncated to 670 UCS-2 characters in 10 parts", r["detail"])
        got = wait_for("all 10 parts at fakesmsc",
                       lambda: [m for m in self.stack.fakesmsc_texts() if m["to"] == "13800138040" and m["complete"]])
        self.assertEqual(got[0]["parts"], 10)
        self.assertEqual(got[0]["text"], "收" * 669 + "…")

    def test_mo_reply(self):
        self.stack.send_mo("13800138050", "12110", "1 收到")
        r = wait_for("the reply", lambda: self.probe.find(event="reply", **{"from": "13800138050"}))
        self.assertEqual(r["text"], "1 收到")

    def test_zz_bearerbox_down_then_back(self):  # last: it restarts the stack's core
        self.stack.crash_bearerbox()
        nid = self.nid()
        r = self.probe.submit("smpp1", nid, "13800138061", "x")
        self.assertEqual((r["outcome"], r["http_status"]), ("retry", 0), r)
        self.assertIn("refused", r["detail"])
        self.stack.start_bearerbox()
        nid = self.nid()
        r = self.probe.submit("smpp1", nid, "13800138061", "x")
        self.assertEqual((r["outcome"], r["http_status"]), ("accepted", 202), r)
        self.probe.receipt(nid, "delivered")


if __name__ == "__main__":
    missing = kannel_missing() or (None if os.access(PROBE, os.X_OK) else "KANNEL_PROBE is not set to kannel_probe")
    if missing:
        print("SKIPPED:", missing)
        sys.exit(77)
    unittest.main(verbosity=2)

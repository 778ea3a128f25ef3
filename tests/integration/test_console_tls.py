"""The console over HTTPS (http.tls) with users from the config: the banner names an
https:// URL, the certificate in the config is the one served, login sets a session
cookie, anything but the page, login, /metrics and /healthz needs that session, and
plain HTTP is not spoken on the port. Real processes: `tocsin broker`, `tocsin run`.
"""
import http.cookiejar
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import TOCSIN, Broker  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CERT = os.path.join(HERE, "fixtures", "tls-cert.pem")
KEY = os.path.join(HERE, "fixtures", "tls-key.pem")


class ConsoleTlsTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.broker = Broker(self.dir.name, ["calls:1", "faults:1", "complaints:1", "alerts:1", "tocsin.dlq:1", "tocsin.late:1"])
        pw = subprocess.run([TOCSIN, "hash-password", "s3cret"], check=True, capture_output=True, text=True).stdout.strip()
        token = subprocess.run([TOCSIN, "hash-password", "--token", "tok-123"], check=True, capture_output=True, text=True).stdout.strip()
        cfg = os.path.join(self.dir.name, "tocsin.yaml")
        with open(cfg, "w") as f:
            f.write(f"""kafka:
  bootstrap.servers: "{self.broker.bootstrap}"
  consumer: {{fetch.wait.max.ms: "5"}}
rules:
  files: [{os.path.dirname(HERE)}/../examples/rules]
http:
  listen: 127.0.0.1:0
  tls: {{cert: {CERT}, key: {KEY}}}
console:
  users: [{{name: ana, role: operator, password_hash: "{pw}"}}]
  tokens: [{{name: grafana, role: viewer, token_hash: "{token}"}}]
""")
        self.stderr = open(os.path.join(self.dir.name, "stderr"), "w")
        # The page from a development copy (`--web-root`) instead of the built-in one.
        self.web_root = os.path.join(self.dir.name, "web")
        os.mkdir(self.web_root)
        with open(os.path.join(self.web_root, "index.html"), "w") as f:
            f.write("<!doctype html><title>dev copy</title>web-root-marker")
        self.proc = subprocess.Popen([TOCSIN, "run", "-c", cfg, "--web-root", self.web_root], stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True)
        banner = ""
        for line in self.proc.stdout:
            banner += line
            if "stop:" in line:
                break
        m = re.search(r"console:\s+(https://\S+)/", banner)
        self.assertTrue(m, banner)
        self.base = m.group(1)
        self.ctx = ssl.create_default_context(cafile=CERT)

    def tearDown(self):
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self.stderr.close()
        self.broker.stop()
        self.dir.cleanup()

    def request(self, path, body=None, headers=None, opener=None):
        req = urllib.request.Request(self.base + path, data=None if body is None else json.dumps(body).encode(),
                                     headers=headers or {}, method="GET" if body is None else "POST")
        try:
            r = (opener.open(req, timeout=10) if opener else urllib.request.urlopen(req, timeout=10, context=self.ctx))
            return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def test_https_sessions_and_tokens(self):
        self.assertEqual(self.request("/healthz")[0], 200)
        self.assertEqual(self.request("/metrics")[0], 200)
        self.assertEqual(self.request("/api/v1/alerts")[0], 401)
        self.assertEqual(self.request("/-/rules")[0], 401)
        self.assertEqual(self.request("/api/v1/nothing")[0], 401)
        self.assertEqual(self.request("/api/v1/login", {"user": "ana", "password": "wrong"})[0], 401)
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=self.ctx),
                                             urllib.request.HTTPCookieProcessor(jar))
        status, body = self.request("/api/v1/login", {"user": "ana", "password": "s3cret"}, opener=opener)
        self.assertEqual(status, 200)
        me = json.loads(body)
        self.assertEqual((me["user"], me["role"]), ("ana", "operator"))
        cookie = next(c for c in jar if c.name == "tocsin_session")
        self.assertTrue(cookie.has_nonstandard_attr("HttpOnly"))
        self.assertEqual(self.request("/api/v1/me", opener=opener)[0], 200)
        # A state change needs the session's CSRF token; reloading rules needs an admin.
        self.assertEqual(self.request("/api/v1/logout", {}, opener=opener)[0], 403)
        self.assertEqual(self.request("/-/reload", {}, headers={"X-CSRF-Token": me["csrf"]}, opener=opener)[0], 403)
        # An API token works without cookies or CSRF, within its role.
        bearer = {"Authorization": "Bearer tok-123"}
        self.assertEqual(self.request("/-/rules", headers=bearer)[0], 200)
        self.assertEqual(self.request("/-/reload", {}, headers=bearer)[0], 403)
        self.assertEqual(self.request("/-/rules", headers={"Authorization": "Bearer nope"})[0], 401)
        # After logout the cookie is worthless.
        self.assertEqual(self.request("/api/v1/logout", {}, headers={"X-CSRF-Token": me["csrf"]}, opener=opener)[0], 200)
        self.assertEqual(self.request("/api/v1/me", opener=opener)[0], 401)

    def test_web_root_overrides_the_built_in_page(self):
        status, body = self.request("/")
        self.assertEqual(status, 200)
        self.assertIn(b"web-root-marker", body)

    def test_plain_http_is_not_served(self):
        with self.assertRaises(Exception):
            urllib.request.urlopen(self.base.replace("https://", "http://") + "/healthz", timeout=5).read()


if __name__ == "__main__":
    unittest.main()

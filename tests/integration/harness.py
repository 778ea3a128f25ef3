"""Process harness for integration tests: the embedded broker (`tocsin broker`),
kcat as the independent Kafka client, and the daemon (`tocsin run`).

Every wait is a condition polled until a deadline; nothing sleeps as a means of
synchronisation. Processes are killed on teardown.
"""
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.request

SOURCE_DIR = os.environ.get("TOCSIN_SOURCE_DIR",
                            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TOCSIN = os.environ.get("TOCSIN_BIN", os.path.join(SOURCE_DIR, "build", "app", "tocsin"))


def wait_for(what, predicate, timeout=30.0, interval=0.05):
    """Polls predicate() until it returns a truthy value; fails with `what` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Broker:
    """`tocsin broker` in a child process, with fault-injection commands on stdin."""

    def __init__(self, workdir, topics, brokers=1):
        self.bootstrap_file = os.path.join(workdir, "bootstrap")
        args = [TOCSIN, "broker", "--brokers", str(brokers), "--bootstrap-file", self.bootstrap_file]
        for t in topics:
            args += ["--topic", t]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.bootstrap = wait_for("the broker's bootstrap file", self._read_bootstrap)
        # The banner: "bootstrap.servers=..." and the command help line.
        assert self.proc.stdout.readline().strip() == "bootstrap.servers=" + self.bootstrap
        self.proc.stdout.readline()

    def _read_bootstrap(self):
        if not os.path.exists(self.bootstrap_file):
            return None
        with open(self.bootstrap_file) as f:
            return f.read().strip()

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc.stdin.close()
        self.proc.stdout.close()


def kcat_produce(bootstrap, topic, records):
    """Produces (key, value-bytes) records with kcat; returns when all are acknowledged."""
    data = b"".join(k.encode() + b"\t" + v + b"\n" for k, v in records)
    subprocess.run(["kcat", "-b", bootstrap, "-P", "-t", topic, "-K", "\t", "-z", "lz4"],
                   input=data, check=True, timeout=60)


SEP = b"\x1e|\x1e"


def kcat_consume(bootstrap, topic):
    """Everything currently in `topic`: list of (key, headers dict, value bytes)."""
    out = subprocess.run(["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
                          "-f", "%k" + SEP.decode() + "%h" + SEP.decode() + "%s" + SEP.decode() + "\n"],
                         check=True, capture_output=True, timeout=60).stdout
    records = []
    for chunk in out.split(SEP + b"\n"):
        if not chunk:
            continue
        key, headers, value = chunk.split(SEP)
        h = {}
        if headers:
            for kv in headers.decode().split(","):
                name, _, val = kv.partition("=")
                h[name] = val
        records.append((key.decode(), h, value))
    return records


class Daemon:
    """`tocsin run -c CONFIG` in a child process; parses the banner for the metrics URL."""

    def __init__(self, workdir, bootstrap, workers=2, name="tocsin", rules_dir=None, rules_options=None,
                 http_listen="127.0.0.1:0", extra_config="", producer_options=None):
        """rules_dir: rule files or directory (default: examples/rules); rules_options: more keys
        under `rules:`, e.g. {"watch": "false"}; extra_config: more top-level YAML (tables:,
        alerting:); producer_options: more librdkafka producer properties."""
        rules_files = rules_dir or f"{SOURCE_DIR}/examples/rules"
        rules_more = "".join(f"  {k}: {v}\n" for k, v in (rules_options or {}).items())
        producer = "".join(f', {k}: "{v}"' for k, v in (producer_options or {}).items())
        self.config = os.path.join(workdir, name + ".yaml")
        with open(self.config, "w") as f:
            f.write(f"""kafka:
  bootstrap.servers: "{bootstrap}"
  group.id: itest
  consumer: {{fetch.wait.max.ms: "5", session.timeout.ms: "6000", heartbeat.interval.ms: "500"}}
  producer: {{linger.ms: "5"{producer}}}
pipeline:
  workers: {workers}
  max_event_bytes: 2048
rules:
  files: [{rules_files}]
{rules_more}http:
  listen: {http_listen}
{extra_config}""")
        self.stderr_path = os.path.join(workdir, name + ".stderr")
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([TOCSIN, "run", "-c", self.config], stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True)
        banner = []
        for line in self.proc.stdout:
            banner.append(line)
            if "stop:" in line:
                break
        self.banner = "".join(banner)
        m = re.search(r"metrics:\s+(http://\S+)", self.banner)
        assert m, "no metrics URL in the banner:\n" + self.banner
        self.metrics_url = m.group(1)
        self.base_url = self.metrics_url[:-len("/metrics")]  # for other endpoints, e.g. /-/rules

    def metrics(self):
        """Parses /metrics into {(name, frozenset(labels)): value}."""
        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        samples = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            samples[(m.group(1), labels)] = float(m.group(3))
        return samples

    def total(self, name, **labels):
        want = set(labels.items())
        return sum(v for (n, l), v in self.metrics().items() if n == name and want <= set(l))

    def tocsin_samples(self):
        """The daemon's own non-zero samples, for a failure report; never raises."""
        try:
            text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        except OSError as e:
            return f"(metrics unavailable: {e})\n"
        keep = [l for l in text.splitlines() if l.startswith("tocsin_") and "_bucket" not in l
                and not l.endswith(" 0")]
        return "\n".join(keep) + "\n"

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self.stderr.close()
        return code


class PipelineTestCase(unittest.TestCase):
    """A broker per test in a temporary directory; daemons started with start()
    are killed afterwards, and on a failure their log tails are printed."""

    TOPICS = []

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.broker = Broker(self.dir.name, self.TOPICS)
        self.daemons = []

    def start(self, **kw):
        d = Daemon(self.dir.name, self.broker.bootstrap, **kw)
        self.daemons.append(d)
        return d

    def tearDown(self):
        result = self._outcome.result
        failed = any(t is self for t, _ in result.errors + result.failures)
        for d in self.daemons:
            if failed and d.proc.poll() is None:
                print(f"--- {d.metrics_url} (tocsin_* samples)\n" + d.tocsin_samples())
            d.stop(signal.SIGKILL)
            if failed:
                with open(d.stderr_path) as f:
                    print(f"--- {d.stderr_path} (last 40 lines)\n" + "".join(f.readlines()[-40:]))
        self.broker.stop()
        self.dir.cleanup()

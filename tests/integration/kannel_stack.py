"""A real Kannel 1.4.5 SMS gateway on loopback for integration tests.

KannelStack starts, in a temporary run directory, bearerbox, smsbox, Kannel's
fakesmsc client (route `fake1`, interactive: MO lines are written to mo.fifo)
and the SMPP simulator tests/integration/kannel/fake_smpp_smsc.py (route
`smpp1`; the outcome depends on the destination's last digit, see that file).
Every daemon runs in its own session (setsid), so it is stopped by process
group: smsbox re-execs itself with a new PID when bearerbox crashes.

smsbox is supervised, as run_kannel_box supervises it in production: a thread
starts it again within a fraction of a second whenever it has died while
bearerbox is up. Kannel 1.4.5's smsbox panics (gwlib/conn.c:859
conn_unregister: Assertion `conn != NULL') when a DLR-URL receiver resets the
connection, e.g. a Tocsin killed with SIGKILL mid-request; bearerbox keeps the
receipts that arrive meanwhile until an smsbox is back. (run_kannel_box itself
daemonizes into a session of its own, and smsbox's --parachute waits 30 s after
a crash within 10 s of a start, so neither fits a test.)

The ports are fixed (13000 admin, 13001 box, 13013 sendsms, 10000 fakesmsc,
2775 SMPP): tests using this must not run concurrently. Within one ctest run
RESOURCE_LOCK kannel serialises them; across processes (two ctest runs, two
build dirs) start() waits for the machine-wide lock file LOCK_PATH. Every wait
polls a condition until a deadline.

    with KannelStack(mo_url="http://127.0.0.1:PORT/sms/mo") as k:
        k.sendsms_url, k.username, k.password, k.sender
        k.send_mo("13800138000", "12110", "1 收到")
        k.fakesmsc_messages()  # every MT line fakesmsc got, UCS-2 decoded
        k.fakesmsc_texts()     # the same with concatenated parts joined
"""
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from harness import wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
KANNEL_DIR = os.path.join(HERE, "kannel")
BEARERBOX = "/usr/sbin/bearerbox"
SMSBOX = "/usr/sbin/smsbox"
FAKESMSC = "/usr/lib/kannel/test/fakesmsc"
LOCK_PATH = "/tmp/tocsin-kannel-stack.lock"  # held (flock) from start() to stop()


def kannel_missing():
    """None when Kannel is installed, else why not (for skipTest)."""
    for path in (BEARERBOX, SMSBOX, FAKESMSC):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: install kannel and kannel-extras (scripts/deps.sh)"
    return None


def _listening(port):
    """True when something LISTENs on 127.0.0.1:port or 0.0.0.0:port (from /proc/net/tcp,
    so that probing never opens a connection, which bearerbox would take as an SMSC)."""
    want = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] in want and fields[3] == "0A":
                return True
    return False


def _group_alive(pgid):
    """True while the process group has a member that is not a zombie (an orphaned
    smsbox is reparented to init, which may not reap it in a container)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


class _Daemon:
    """One child in its own session; its PID is its process-group id."""

    def __init__(self, name, args, run_dir, stdin=subprocess.DEVNULL):
        self.name = name
        self.out_path = os.path.join(run_dir, name + ".out")
        out = open(self.out_path, "ab")
        self.proc = subprocess.Popen(args, cwd=run_dir, stdin=stdin, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        self.pgid = self.proc.pid

    def alive(self):
        self.proc.poll()  # reap our own child, so that it does not linger as a zombie
        return _group_alive(self.pgid)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signals the whole group; SIGKILL when it is still there after `timeout`."""
        for s in (sig, signal.SIGKILL):
            try:
                os.killpg(self.pgid, s)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.alive():
                break
        self.proc.poll()


class KannelStack:
    ADMIN_PORT, BOX_PORT, SENDSMS_PORT, FAKE_PORT, SMPP_PORT = 13000, 13001, 13013, 10000, 2775
    username, password, sender = "tester", "foobar", "12110"
    admin_password, status_password = "adminpw", "statuspw"

    def __init__(self, mo_url="http://127.0.0.1:18080/mo", smsc_delay=1.0, run_dir=None, keep_run_dir=False):
        """mo_url: where smsbox POSTs MO (`?from=%p&to=%P&smsc=%i` is appended).
        smsc_delay: seconds before the SMPP simulator sends a receipt.
        run_dir: default a new temporary directory, removed by stop() unless keep_run_dir."""
        missing = kannel_missing()
        if missing:
            raise RuntimeError(missing)
        self.mo_url = mo_url
        self.smsc_delay = smsc_delay
        self._own_dir = run_dir is None
        self.run_dir = run_dir or tempfile.mkdtemp(prefix="kannel-")
        self.keep_run_dir = keep_run_dir
        self.sendsms_url = f"http://127.0.0.1:{self.SENDSMS_PORT}/cgi-bin/sendsms"
        self.admin_url = f"http://127.0.0.1:{self.ADMIN_PORT}"
        self.conf = os.path.join(self.run_dir, "kannel.conf")
        self.fifo = os.path.join(self.run_dir, "mo.fifo")
        self.smsc_jsonl = os.path.join(self.run_dir, "smsc.jsonl")
        self.fakesmsc_out = os.path.join(self.run_dir, "fakesmsc.out")
        self.daemons = {}
        self._lock = None
        self._daemons_lock = threading.Lock()  # self.daemons: the test's thread and the supervisor
        self._stopping = threading.Event()
        self._supervisor = None
        self.smsbox_starts = 0  # how often smsbox was (re)started: 1 unless it died

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout=60.0, lock_timeout=240.0):
        """Starts everything; returns when sendsms answers and both SMSC links are online.
        First waits up to lock_timeout for another process's stack to stop."""
        self._lock = open(LOCK_PATH, "a")
        def locked():
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
        wait_for(f"the Kannel stack lock {LOCK_PATH} (another test's stack is running)", locked,
                 timeout=lock_timeout, interval=0.2)
        for port in (self.ADMIN_PORT, self.BOX_PORT, self.SENDSMS_PORT, self.FAKE_PORT, self.SMPP_PORT):
            if _listening(port):
                raise RuntimeError(f"127.0.0.1:{port} is already in use (a leftover Kannel stack? "
                                   "Kannel tests must not run concurrently)")
        with open(os.path.join(KANNEL_DIR, "kannel.conf.template")) as f:
            conf = f.read()
        for key, value in {"RUN": self.run_dir, "MO_URL": self.mo_url, "ADMIN_PORT": self.ADMIN_PORT,
                           "BOX_PORT": self.BOX_PORT, "SENDSMS_PORT": self.SENDSMS_PORT,
                           "FAKE_PORT": self.FAKE_PORT, "SMPP_PORT": self.SMPP_PORT}.items():
            conf = conf.replace(f"@{key}@", str(value))
        assert not re.search(r"@[A-Z_]+@", conf), "unsubstituted placeholder in kannel.conf"
        with open(self.conf, "w") as f:
            f.write(conf)
        os.mkfifo(self.fifo)
        self.daemons["smsc"] = _Daemon("smsc", ["python3", os.path.join(KANNEL_DIR, "fake_smpp_smsc.py"),
                                                str(self.SMPP_PORT), str(self.smsc_delay), self.smsc_jsonl],
                                       self.run_dir)
        wait_for("the SMPP simulator's port", lambda: _listening(self.SMPP_PORT), timeout=10)
        self.start_bearerbox(timeout=timeout)
        self._stopping.clear()
        self._supervisor = threading.Thread(target=self._supervise_smsbox, name="smsbox-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def stop(self):
        """Stops the supervisor, then every daemon by process group (smsbox first); idempotent."""
        self._stopping.set()
        if self._supervisor:
            self._supervisor.join()
            self._supervisor = None
        for name in ("smsbox", "fakesmsc", "bearerbox", "smsc"):
            with self._daemons_lock:
                d = self.daemons.pop(name, None)
            if d:
                d.stop()
        if os.path.exists(self.fifo):
            os.unlink(self.fifo)
        if self._own_dir and not self.keep_run_dir and os.path.isdir(self.run_dir):
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._lock:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()

    def crash_bearerbox(self, timeout=15.0):
        """SIGKILLs bearerbox; returns once sendsms refuses connections. smsbox then
        closes the sendsms port and re-execs itself (new PID, same process group) after
        10 s; if bearerbox is still down then, it exits, and the supervisor starts it
        again once bearerbox is back. fakesmsc loses its connection and is stopped."""
        with self._daemons_lock:
            bearerbox = self.daemons.pop("bearerbox")
            fake = self.daemons.pop("fakesmsc", None)
        bearerbox.stop(signal.SIGKILL)
        if fake:
            fake.stop()
        wait_for("smsbox to close the sendsms port", lambda: not _listening(self.SENDSMS_PORT), timeout=timeout)

    def start_bearerbox(self, timeout=60.0):
        """(Re)starts bearerbox and fakesmsc, and smsbox's supervisor unless it is alive;
        returns when sendsms answers and both SMSC links are online. Also used by start()."""
        bearerbox = _Daemon("bearerbox", [BEARERBOX, "-v", "1", self.conf], self.run_dir)
        with self._daemons_lock:
            self.daemons["bearerbox"] = bearerbox
        wait_for("bearerbox's box and fake-SMSC ports",
                 lambda: _listening(self.BOX_PORT) and _listening(self.FAKE_PORT), timeout=15)
        fd = os.open(self.fifo, os.O_RDWR)  # read-write: fakesmsc never sees EOF on it
        try:
            self.daemons["fakesmsc"] = _Daemon("fakesmsc", [FAKESMSC, "-H", "127.0.0.1", "-r", str(self.FAKE_PORT),
                                                            "-i", "0", "-v", "0"], self.run_dir, stdin=fd)
        finally:
            os.close(fd)
        self._ensure_smsbox()

        def ready():
            self._ensure_smsbox()  # a restarting smsbox that found no bearerbox has exited
            return self._sendsms_answers() and self.status().count("(online") >= 2
        wait_for("sendsms to answer and both SMSC links to be online", ready, timeout=timeout, interval=0.2)

    def _ensure_smsbox(self):
        """Starts smsbox unless its process group is alive."""
        with self._daemons_lock:
            d = self.daemons.get("smsbox")
            if d is None or not d.alive():
                self.daemons["smsbox"] = _Daemon("smsbox", [SMSBOX, "-v", "1", self.conf], self.run_dir)
                self.smsbox_starts += 1

    def _supervise_smsbox(self):
        """Until stop(): every 0.2 s, starts smsbox again if it has died while bearerbox
        listens for boxes (without bearerbox a new smsbox would exit at once)."""
        while not self._stopping.wait(0.2):
            if _listening(self.BOX_PORT):
                self._ensure_smsbox()

    def _sendsms_answers(self):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.SENDSMS_PORT}/", timeout=2).read()
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    # ------------------------------------------------------------ observation and control

    def status(self):
        """bearerbox's /status.txt ("" when it does not answer)."""
        try:
            q = urllib.parse.urlencode({"password": self.status_password})
            return urllib.request.urlopen(f"{self.admin_url}/status.txt?{q}", timeout=2).read().decode()
        except OSError:
            return ""

    def admin(self, command, **params):
        """An admin command, e.g. admin("stop-smsc", smsc="fake1"); returns (status, body)."""
        q = urllib.parse.urlencode({"password": self.admin_password, **params})
        try:
            with urllib.request.urlopen(f"{self.admin_url}/{command}?{q}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def sendsms(self, to, text, **params):
        """A sendsms GET with this stack's credentials; returns (status, body); status 0
        with the error text when there was no HTTP answer."""
        q = urllib.parse.urlencode({"username": self.username, "password": self.password, "from": self.sender,
                                    "to": to, "text": text, **params})
        try:
            with urllib.request.urlopen(f"{self.sendsms_url}?{q}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def send_mo(self, sender, to, text):
        """A handset message from `sender` to `to` (UTF-8 text, one line) through fakesmsc."""
        if "\n" in text:
            raise ValueError("one line only")
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            raise RuntimeError(f"fakesmsc is not reading {self.fifo}: {e}") from e
        try:
            os.write(fd, f"{sender} {to} text {text}\n".encode())
        finally:
            os.close(fd)

    _GOT = re.compile(r"Got message (\d+): <(\S+) (\S+) (\S+) ?(.*)>$")

    def fakesmsc_messages(self, udh_coding="ucs-2"):
        """Every MT line that reached fakesmsc, in order: {"n", "from", "to", "type"
        ("text" | "ucs-2" | "data" | "udh"), "udh" (hex or None), "data" (bytes), "text"}.
        "ucs-2" lines are decoded from URL-encoded UTF-16BE. A concatenated part
        ("udh") does not say its coding: its data is decoded as `udh_coding`
        ("ucs-2" or "latin-1"); use fakesmsc_texts() to join the parts."""
        out = []
        if not os.path.exists(self.fakesmsc_out):
            return out
        with open(self.fakesmsc_out, encoding="latin-1") as f:
            for line in f:
                m = self._GOT.search(line.rstrip("\n"))
                if not m:
                    continue
                n, frm, to, kind, rest = m.groups()
                udh = None
                if kind == "udh":  # "udh <URL-encoded UDH> data <URL-encoded data>"
                    head, _, rest = rest.partition(" data ")
                    udh = self._unquote(head).hex()
                data = rest.encode("latin-1") if kind == "text" else self._unquote(rest)
                if kind == "ucs-2" or (kind == "udh" and udh_coding == "ucs-2"):
                    text = data.decode("utf-16-be", "replace")
                else:
                    text = data.decode("latin-1")
                out.append({"n": int(n), "from": frm, "to": to, "type": kind, "udh": udh, "data": data,
                            "text": text})
        return out

    @staticmethod
    def _unquote(s):
        """Kannel's octstr_url_encode: %XX, and '+' for a space byte."""
        return urllib.parse.unquote_to_bytes(s.replace("+", "%20"))

    def fakesmsc_texts(self, udh_coding="ucs-2"):
        """fakesmsc_messages() with concatenated parts joined (UDH IEI 0 or 8):
        [{"from", "to", "type", "parts", "text"}] in order of each message's first part."""
        out, partial = [], {}
        for m in self.fakesmsc_messages(udh_coding):
            u = bytes.fromhex(m["udh"]) if m["udh"] else b""
            if len(u) >= 6 and u[1] == 0x00:    # 05 00 03 ref total seq
                ref, total, seq = u[3], u[4], u[5]
            elif len(u) >= 7 and u[1] == 0x08:  # 06 08 04 ref ref total seq
                ref, total, seq = u[3] << 8 | u[4], u[5], u[6]
            else:
                out.append({"from": m["from"], "to": m["to"], "type": m["type"], "parts": 1, "text": m["text"]})
                continue
            key = (m["from"], m["to"], ref)
            if key not in partial:
                partial[key] = {"from": m["from"], "to": m["to"], "type": m["type"], "parts": total, "seen": {}}
                out.append(partial[key])
            partial[key]["seen"][seq] = m["data"]
        for msg in out:
            seen = msg.pop("seen", None)
            if seen is not None:
                data = b"".join(seen[k] for k in sorted(seen))
                msg["text"] = data.decode("utf-16-be" if udh_coding == "ucs-2" else "latin-1", "replace")
                msg["complete"] = len(seen) == msg["parts"]
        return out

    def smsc_log(self):
        """The SMPP simulator's records ({"bind"}, {"submit": {...}, "resp", "msgid"}, {"receipt"}), in order."""
        if not os.path.exists(self.smsc_jsonl):
            return []
        with open(self.smsc_jsonl, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def log_tails(self, lines=30):
        """The last lines of every log in the run directory, for a failing test's output."""
        chunks = []
        for name in sorted(os.listdir(self.run_dir)):
            if name.endswith((".log", ".out", ".jsonl")):
                with open(os.path.join(self.run_dir, name), encoding="utf-8", errors="replace") as f:
                    chunks.append(f"--- {name}\n" + "".join(f.readlines()[-lines:]))
        return "\n".join(chunks)

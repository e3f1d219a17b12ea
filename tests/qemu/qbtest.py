"""Shared helpers for the qbranch integration tests against a real QEMU.

Each test file is a small TAP program:

    import qbtest
    from qbtest import ok, eq

    def main(env):
        qemu = env.start_qemu()
        proxy = env.start_proxy()
        c = proxy.client(negotiate=True)
        r = c.cmd("query-status", id=1)
        eq(r.get("id"), 1, "reply carries the id")

    qbtest.run(main)

Environment:
    QBRANCHD       path of the qbranchd binary (required)
    QBRANCH_QEMU   qemu-system-x86_64 to use (default "qemu-system-x86_64")
    QBTEST_TIMEOUT hard per-file timeout in seconds (default 60)
    QBTEST_KEEP    if set, keep the temporary directory

Only the Python standard library is used.
"""

import atexit
import errno
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback

QEMU = os.environ.get("QBRANCH_QEMU") or "qemu-system-x86_64"
QBRANCHD = os.environ.get("QBRANCHD") or ""
DEFAULT_TIMEOUT = 5.0
HARD_TIMEOUT = int(os.environ.get("QBTEST_TIMEOUT") or "60")


# --------------------------------------------------------------------------
# TAP


class _Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0
        self.finished = False


_tap = _Tap()


def diag(*lines):
    """Print diagnostics as TAP comments."""
    for text in lines:
        for line in str(text).splitlines() or [""]:
            sys.stdout.write("# %s\n" % line)
    sys.stdout.flush()


def _clean(text):
    return " ".join(str(text).split()).replace("#", "\\#")


def ok(cond, text, *diags):
    """Record one test point. Returns bool(cond)."""
    _tap.n += 1
    cond = bool(cond)
    sys.stdout.write("%s %d - %s\n" % ("ok" if cond else "not ok", _tap.n,
                                        _clean(text)))
    if not cond:
        _tap.failed += 1
        if diags:
            diag(*diags)
    sys.stdout.flush()
    return cond


def eq(got, expected, text):
    """ok(got == expected) with a diagnostic showing both on failure."""
    return ok(got == expected, text, "expected: %r" % (expected,),
              "     got: %r" % (got,))


def fail(text, *diags):
    return ok(False, text, *diags)


# --------------------------------------------------------------------------
# Errors


class QBTestError(Exception):
    pass


class Timeout(QBTestError):
    pass


class Closed(QBTestError):
    """The peer closed the connection."""


class ProtocolError(QBTestError):
    pass


class HardTimeout(BaseException):
    pass


# --------------------------------------------------------------------------
# Process bookkeeping and cleanup


_envs = []


def _cleanup_all():
    for env in list(_envs):
        env.cleanup()


atexit.register(_cleanup_all)


def _on_term(signum, frame):
    _cleanup_all()
    os._exit(1)


def _tmpbase():
    # sun_path is limited to 108 bytes: keep the directory short.
    base = tempfile.gettempdir()
    if len(base) > 40:
        base = "/tmp"
    return base


def _proc_alive(proc):
    return proc.poll() is None


class _Proc:
    def __init__(self, env, label, argv, log):
        self.env = env
        self.label = label
        self.argv = argv
        self.log = log
        self._logf = open(log, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self._logf,
                                     stderr=subprocess.STDOUT,
                                     close_fds=True)
        self.pid = self.proc.pid
        env._procs.append(self)

    def alive(self):
        return self.proc.poll() is None

    def send_signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def kill(self, sig=signal.SIGKILL):
        self.send_signal(sig)

    def wait(self, timeout=DEFAULT_TIMEOUT):
        """Wait for exit; return exit status or None on timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        if self.alive():
            self.proc.terminate()
            if self.wait(2) is None:
                self.proc.kill()
                self.wait(2)
        self._logf.close()

    def log_text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


class Qemu(_Proc):
    def __init__(self, env, sock, direct, more, extra, name):
        self.sock = sock
        self.direct = direct
        self.more = list(more)
        argv = [QEMU, "-accel", "kvm", "-accel", "tcg", "-nodefaults",
                "-display", "none", "-m", "64", "-S"]
        for p in [sock, direct] + self.more:
            if p:
                argv += ["-qmp", "unix:%s,server=on,wait=off" % p]
        argv += list(extra)
        _Proc.__init__(self, env, name, argv, env.path(name + ".log"))

    def wait_ready(self, timeout=10.0):
        paths = [p for p in [self.sock, self.direct] + self.more if p]
        deadline = time.monotonic() + timeout
        while True:
            if all(_is_socket(p) for p in paths):
                return
            if not self.alive():
                raise QBTestError("QEMU exited early (status %s):\n%s"
                                  % (self.proc.returncode, self.log_text()))
            if time.monotonic() > deadline:
                raise QBTestError("QEMU sockets did not appear")
            time.sleep(0.01)

    def direct_client(self, negotiate=True, timeout=DEFAULT_TIMEOUT):
        """A QMP client on QEMU's second monitor, bypassing the proxy."""
        c = QMP(self.direct, timeout=timeout)
        c.greeting = c.recv()
        if negotiate:
            c.negotiate()
        return c


class Proxy(_Proc):
    def __init__(self, env, qemu_sock, listen, args, name):
        self.qemu_sock = qemu_sock
        self.listen = listen
        self._old_ino = {p: _ino(p) for p in listen}
        argv = [QBRANCHD, "--qemu", qemu_sock]
        for p in listen:
            argv += ["--listen", p]
        argv += list(args)
        _Proc.__init__(self, env, name, argv, env.path(name + ".log"))

    def wait_ready(self, timeout=10.0):
        """Wait until every listening socket exists (a new one, if a file
        was there before the start). Connects are retried on ECONNREFUSED
        by QMP(), so a socket between bind() and listen() is fine."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise QBTestError("qbranchd exited early (status %s)"
                                  % self.proc.returncode)
            if all(_is_socket(p) and _ino(p) != self._old_ino.get(p)
                   for p in self.listen):
                return
            if time.monotonic() > deadline:
                raise QBTestError("qbranchd sockets did not appear")
            time.sleep(0.01)

    def client(self, index=0, greeting=True, negotiate=False, oob=False,
               timeout=DEFAULT_TIMEOUT):
        """Connect to listening socket #index; read the greeting (by
        default) and optionally negotiate."""
        c = QMP(self.listen[index], timeout=timeout)
        if greeting or negotiate:
            c.greeting = c.recv()
            if "QMP" not in c.greeting:
                raise ProtocolError("expected greeting, got %r"
                                    % c.greeting.raw)
        if negotiate:
            c.negotiate(oob=oob)
        return c


def _ino(path):
    try:
        st = os.stat(path)
        return (st.st_ino, st.st_ctime_ns)
    except OSError:
        return None


def _is_socket(path):
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


class Env:
    """Per-test temporary directory plus processes started in it."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="qbt-", dir=_tmpbase())
        self._procs = []
        self._clients = []
        self._cleaned = False
        _envs.append(self)

    def path(self, name):
        return os.path.join(self.dir, name)

    def start_qemu(self, sock="qemu.sock", direct="direct.sock", more=(),
                   extra=(), wait=True, name=None):
        """Start QEMU with QMP monitors on sock (for the proxy), direct
        (for the test itself) and each of `more` (for further proxies)."""
        if name is None:
            name = "qemu%d" % sum(isinstance(p, Qemu) for p in self._procs)
        q = Qemu(self, self.path(sock),
                 self.path(direct) if direct else None,
                 [self.path(m) for m in more], extra, name)
        if wait:
            q.wait_ready()
        return q

    def start_proxy(self, qemu_sock="qemu.sock", listen=("proxy.sock",),
                    args=(), wait=True, name=None):
        if not QBRANCHD:
            raise QBTestError("QBRANCHD is not set")
        if name is None:
            name = "qbranchd%d" % sum(isinstance(p, Proxy)
                                      for p in self._procs)
        p = Proxy(self, self.path(qemu_sock), [self.path(l) for l in listen],
                  ["-v"] + list(args), name)
        if wait:
            p.wait_ready()
        return p

    def run_proxy(self, args, timeout=DEFAULT_TIMEOUT):
        """Run qbranchd with exactly these args to completion (e.g. -n).
        Returns (status, output)."""
        r = subprocess.run([QBRANCHD] + list(args), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        return r.returncode, r.stdout.decode("utf-8", "replace")

    def dump_logs(self):
        for p in self._procs:
            diag("---- %s log (%s) ----" % (p.label, " ".join(p.argv)))
            lines = p.log_text().splitlines()
            if len(lines) > 300:
                diag("[... %d lines omitted ...]" % (len(lines) - 300))
                lines = lines[-300:]
            diag(*lines)

    def cleanup(self):
        if self._cleaned:
            return
        self._cleaned = True
        for c in self._clients:
            c.close()
        for p in reversed(self._procs):
            try:
                p.stop()
            except Exception:
                pass
        if not os.environ.get("QBTEST_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        if self in _envs:
            _envs.remove(self)


# --------------------------------------------------------------------------
# QMP client over a raw unix socket


class Msg(dict):
    """A parsed QMP message (always a JSON object) plus its raw bytes."""

    raw = b""

    @property
    def is_event(self):
        return "event" in self

    @property
    def is_reply(self):
        return "return" in self or "error" in self

    @property
    def err_class(self):
        e = self.get("error")
        return e.get("class") if isinstance(e, dict) else None

    @property
    def err_desc(self):
        e = self.get("error")
        return e.get("desc") if isinstance(e, dict) else None


def parse_msg(raw):
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError("unparsable message %r: %s" % (raw, e))
    if not isinstance(obj, dict):
        raise ProtocolError("message is not an object: %r" % raw)
    m = Msg(obj)
    m.raw = bytes(raw)
    return m


class QMP:
    def __init__(self, path, timeout=DEFAULT_TIMEOUT, connect_timeout=5.0,
                 strict_crlf=True):
        self.path = path
        self.timeout = timeout
        self.strict_crlf = strict_crlf
        self.buf = bytearray()
        self.events = []     # events read while looking for something else
        self.replies = []    # replies read while looking for an event
        self.greeting = None
        self.eof = False
        self._sync = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ECONNREFUSED) or \
                        time.monotonic() > deadline:
                    self.sock.close()
                    raise
                time.sleep(0.02)
        for env in _envs:
            env._clients.append(self)

    # -- output --------------------------------------------------------
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def send_json(self, obj):
        self.send(json.dumps(obj))

    def send_fds(self, data, fds):
        if isinstance(data, str):
            data = data.encode("utf-8")
        n = socket.send_fds(self.sock, [data], list(fds))
        if n < len(data):
            self.send(data[n:])

    # -- input ---------------------------------------------------------
    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout("no message from %s within the timeout (buffered: %r)"
                          % (self.path, bytes(self.buf[:200])))
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise Timeout("no message from %s within the timeout (buffered: %r)"
                          % (self.path, bytes(self.buf[:200])))
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise Closed("connection %s closed (buffered: %r)"
                         % (self.path, bytes(self.buf[:200])))
        self.buf += data

    def recv_raw(self, timeout=None):
        """Return the next raw output line, including its terminator."""
        deadline = time.monotonic() + (self.timeout if timeout is None
                                       else timeout)
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                if self.strict_crlf and not line.endswith(b"\r\n"):
                    raise ProtocolError("line not terminated by CRLF: %r"
                                        % line)
                return line
            if self.eof:
                raise Closed("connection %s closed (buffered: %r)"
                             % (self.path, bytes(self.buf[:200])))
            self._fill(deadline)

    def recv(self, timeout=None):
        """Next message of any kind."""
        return parse_msg(self.recv_raw(timeout))

    def recv_reply(self, timeout=None):
        """Next reply (return/error); events seen meanwhile are kept."""
        if self.replies:
            return self.replies.pop(0)
        deadline = time.monotonic() + (self.timeout if timeout is None
                                       else timeout)
        while True:
            m = self.recv(max(0.0, deadline - time.monotonic()))
            if m.is_event:
                self.events.append(m)
                continue
            return m

    def recv_event(self, name, timeout=None):
        """Next event called name; other messages seen meanwhile are kept."""
        for i, e in enumerate(self.events):
            if e.get("event") == name:
                return self.events.pop(i)
        deadline = time.monotonic() + (self.timeout if timeout is None
                                       else timeout)
        while True:
            m = self.recv(max(0.0, deadline - time.monotonic()))
            if m.is_event:
                if m.get("event") == name:
                    return m
                self.events.append(m)
            else:
                self.replies.append(m)

    def recv_until_eof(self, timeout=None):
        """Read messages until the peer closes; return them. Raises
        Timeout if the connection stays open."""
        deadline = time.monotonic() + (self.timeout if timeout is None
                                       else timeout)
        msgs = []
        while True:
            try:
                msgs.append(self.recv(max(0.0, deadline - time.monotonic())))
            except Closed:
                return msgs

    def nothing_pending(self, wait=0.3):
        """True if no output arrives within `wait` seconds."""
        if self.buf or self.replies or self.events:
            return False
        try:
            self.recv_raw(wait)
        except Timeout:
            return True
        except Closed:
            return False
        return False

    # -- commands ------------------------------------------------------
    @staticmethod
    def command(name, args=None, id=None, oob=False):
        m = {("exec-oob" if oob else "execute"): name}
        if args is not None:
            m["arguments"] = args
        if id is not None:
            m["id"] = id
        return m

    def cmd(self, name, args=None, id=None, oob=False, timeout=None):
        """Send a command and return its reply (events are kept aside)."""
        self.send_json(self.command(name, args, id, oob))
        return self.recv_reply(timeout)

    def negotiate(self, oob=False):
        r = self.cmd("qmp_capabilities", {"enable": ["oob"]} if oob else None)
        if r.get("return") != {}:
            raise ProtocolError("qmp_capabilities failed: %r" % r.raw)
        return r

    def probe(self, raw, negotiated=True, timeout=None):
        """Send raw bytes, then a newline and a harmless sync command;
        return (replies that came before the sync reply, sync reply)."""
        self._sync += 1
        sid = "qbtest-sync-%d" % self._sync
        if negotiated:
            sync = {"execute": "query-status", "id": sid}
        else:
            # fails without completing negotiation
            sync = {"execute": "qmp_capabilities",
                    "arguments": {"enable": ["qbtest-sync"]}, "id": sid}
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        self.send(raw + b"\n" + json.dumps(sync).encode())
        out = []
        while True:
            m = self.recv_reply(timeout)
            if m.get("id") == sid:
                return out, m
            out.append(m)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def drop_timestamps(v):
    if isinstance(v, dict):
        return {k: drop_timestamps(x) for k, x in v.items()
                if k != "timestamp"}
    if isinstance(v, list):
        return [drop_timestamps(x) for x in v]
    return v


def wait_for(pred, timeout=DEFAULT_TIMEOUT, step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            return v
        time.sleep(step)


# --------------------------------------------------------------------------
# Runner


def _alarm(signum, frame):
    raise HardTimeout("hard timeout of %d s reached" % HARD_TIMEOUT)


def run(main):
    """Run main(env) with a hard timeout, report exceptions as failures,
    print the plan, dump logs if anything failed, clean up, exit 0."""
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HARD_TIMEOUT)
    diag("QEMU=%s QBRANCHD=%s" % (QEMU, QBRANCHD))
    env = None
    try:
        env = Env()
        main(env)
    except (Exception, HardTimeout) as e:
        fail("no unexpected exception (%s: %s)" % (type(e).__name__, e),
             traceback.format_exc())
    finally:
        signal.alarm(0)
    if _tap.n == 0:
        fail("at least one test point ran")
    sys.stdout.write("1..%d\n" % _tap.n)
    if _tap.failed and env is not None:
        env.dump_logs()
    sys.stdout.flush()
    _cleanup_all()
    sys.exit(0)

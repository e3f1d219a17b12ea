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
    QBRANCH        path of the qbranch client (the test-cli* files)
    QBRANCH_QEMU   qemu-system-x86_64 to use (default "qemu-system-x86_64")
    QBTEST_TIMEOUT hard per-file timeout in seconds (default 60)
    QBTEST_KEEP    if set, keep the temporary directory
    QBTEST_WRAPPER a command (split as by a shell) put before every qbranchd
                   the helpers start, e.g. "valgrind -q --log-file=
                   %q{QBTEST_REPORT_DIR}/valgrind.%p ..." (scripts/test
                   --valgrind); the hard timeout is then tripled

Sanitizer and memory-checker reports are failures. Each test file gets a
report directory, $QBTEST_REPORT_DIR, and every program it runs inherits
ASAN_OPTIONS and UBSAN_OPTIONS with log_path pointing there. When main()
returns, every process is stopped (so that LeakSanitizer and valgrind
report at exit); then each non-empty file in that directory, and each
sanitizer report in the output of a process the helpers started (gcc's
UBSan writes to stderr whatever log_path says), is one failed test point
with the report as its diagnostics.

Only the Python standard library is used.
"""

import atexit
import errno
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback

QEMU = os.environ.get("QBRANCH_QEMU") or "qemu-system-x86_64"
QBRANCHD = os.environ.get("QBRANCHD") or ""
QBRANCH = os.environ.get("QBRANCH") or ""
DEFAULT_TIMEOUT = 5.0
CMD_TIMEOUT = 10.0      # snapshot operations and data checks (slow TCG)
QEMU_IO = os.environ.get("QBRANCH_QEMU_IO") or "qemu-io"
QEMU_IMG = os.environ.get("QBRANCH_QEMU_IMG") or "qemu-img"
REGION = 64 * 1024      # the unit the data helpers write and check
MiB = 1024 * 1024
HARD_TIMEOUT = int(os.environ.get("QBTEST_TIMEOUT") or "60")
WRAPPER = shlex.split(os.environ.get("QBTEST_WRAPPER") or "")
# How long a process may take to exit after SIGTERM before it is killed:
# long enough for LeakSanitizer, or valgrind's leak check, at exit.
STOP_TIMEOUT = 60.0 if WRAPPER else 10.0
# Every qbranchd a test starts checks each tree line it keeps against the
# model at every write (a change without snap_touch() aborts it).
os.environ.setdefault("QBRANCHD_CHECK_TREE", "1")


# --------------------------------------------------------------------------
# TAP


class _Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0
        self.finished = False
        self.skip_reason = None


_tap = _Tap()


def skip_all(reason):
    """The whole file is skipped (TAP "1..0 # SKIP"), when nothing ran."""
    _tap.skip_reason = reason


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


def skip(text, reason):
    """Record one test point as skipped (TAP "ok N - text # SKIP reason")."""
    _tap.n += 1
    sys.stdout.write("ok %d - %s # SKIP %s\n" % (_tap.n, _clean(text),
                                                 _clean(reason)))
    sys.stdout.flush()


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
    if _report_dir and not os.environ.get("QBTEST_KEEP"):
        shutil.rmtree(_report_dir, ignore_errors=True)


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


# --------------------------------------------------------------------------
# Sanitizer and memory-checker reports


_report_dir = None
_reports = []           # (what, text) found in the output of processes
# The first line of an ASan/LSan report, of a UBSan one, or their summary.
_SANITIZER_RE = re.compile(r"^(?:==\d+==ERROR: \w*Sanitizer"
                           r"|\S+:\d+:\d+: runtime error: "
                           r"|SUMMARY: \w*Sanitizer)", re.M)


def _reports_start():
    """Make this file's report directory and point the sanitizers of every
    program started from now on at it (QBTEST_WRAPPER may use it too)."""
    global _report_dir
    _report_dir = tempfile.mkdtemp(prefix="qbt-reports-", dir=_tmpbase())
    os.environ["QBTEST_REPORT_DIR"] = _report_dir
    # Files DIR/sanitizer.PROGRAM.PID, whichever sanitizer reports.
    opts = "log_path=%s/sanitizer:log_exe_name=1" % _report_dir
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        old = os.environ.get(var)
        # Later options win: this log_path overrides any given before.
        os.environ[var] = "%s:%s" % (old, opts) if old else opts


def _reports_scan_log(proc):
    """Keep any sanitizer report in the output of a stopped process."""
    text = proc.log_text()
    m = _SANITIZER_RE.search(text)
    if m:
        _reports.append(("%s output" % proc.label, text[m.start():]))


def _reports_check():
    """One failed test point per report: each non-empty file in the report
    directory, each report found in a process's output."""
    found = list(_reports)
    try:
        names = sorted(os.listdir(_report_dir)) if _report_dir else []
    except OSError as e:
        fail("the report directory can be read", str(e))
        names = []
    for name in names:
        try:
            with open(os.path.join(_report_dir, name), "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        if text.strip():
            found.append((name, text))
    for what, text in found[:10]:
        lines = text.splitlines()
        if len(lines) > 200:
            lines = lines[:200] + ["[... %d more lines ...]"
                                   % (len(lines) - 200)]
        fail("no sanitizer or memory-checker report (%s)" % what, *lines)
    if found[10:]:
        fail("no sanitizer or memory-checker report (%d more)"
             % len(found[10:]), *[what for what, text in found[10:]])


def _proc_alive(proc):
    return proc.poll() is None


class _Proc:
    def __init__(self, env, label, argv, log, pass_fds=(), environ=None):
        self.env = env
        self.label = label
        self.argv = argv
        self.log = log
        self._logf = open(log, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self._logf,
                                     stderr=subprocess.STDOUT,
                                     close_fds=True, pass_fds=pass_fds,
                                     env=environ)
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
            if self.wait(STOP_TIMEOUT) is None:
                # Nothing it would report at exit is known then.
                diag("%s did not exit within %g s of SIGTERM: killed"
                     % (self.label, STOP_TIMEOUT))
                self.proc.kill()
                self.wait(2)
        if not self._logf.closed:
            self._logf.close()
            _reports_scan_log(self)

    def log_text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


class Qemu(_Proc):
    def __init__(self, env, sock, direct, more, extra, name,
                 accel=("kvm", "tcg")):
        self.sock = sock
        self.direct = direct
        self.more = list(more)
        argv = [QEMU]
        for a in accel:
            argv += ["-accel", a]
        argv += ["-nodefaults", "-display", "none", "-m", "64", "-S"]
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
    def __init__(self, env, qemu_sock, listen, args, name, pass_fds=(),
                 environ=None, qemu_argv=None):
        """qemu_sock None: no --qemu (args say where QEMU is);
        qemu_argv: launch mode, qbranchd ... -- qemu_argv."""
        self.qemu_sock = qemu_sock
        # "PATH,rules=FILE" listens on PATH with those rules.
        self.listen = [l.split(",rules=")[0] for l in listen]
        self._old_ino = {p: _ino(p) for p in self.listen}
        argv = WRAPPER + [QBRANCHD]
        if qemu_sock:
            argv += ["--qemu", qemu_sock]
        for p in listen:
            argv += ["--listen", p]
        argv += list(args)
        if qemu_argv is not None:
            argv += ["--"] + list(qemu_argv)
        _Proc.__init__(self, env, name, argv, env.path(name + ".log"),
                       pass_fds=pass_fds, environ=environ)

    def children(self):
        """Pids of its child processes (QEMU, in launch mode)."""
        try:
            with open("/proc/%d/task/%d/children" % (self.pid,
                                                     self.pid)) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

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
        self.disks = {}
        _envs.append(self)

    def path(self, name):
        return os.path.join(self.dir, name)

    def _attach_disks(self, disks):
        """Disk objects (or device ids) become self.disks; returns their
        QEMU arguments."""
        args = []
        if disks:
            self.disks = {}
        for i, d in enumerate(disks):
            if not isinstance(d, Disk):
                d = Disk(d)
            d.attach(self, i)
            self.disks[d.id] = d
            args += d.args()
        return args

    def start_qemu(self, sock="qemu.sock", direct="direct.sock", more=(),
                   extra=(), wait=True, name=None, disks=(),
                   accel=("kvm", "tcg")):
        """Start QEMU with QMP monitors on sock (for the proxy), direct
        (for the test itself) and each of `more` (for further proxies).
        disks: Disk objects (or device ids, meaning Disk(id)) to attach;
        their images are created in the test directory unless they exist.
        They are remembered in self.disks for write()/check().
        accel: the accelerators to try, in order."""
        if name is None:
            name = "qemu%d" % sum(isinstance(p, Qemu) for p in self._procs)
        disk_args = self._attach_disks(disks)
        q = Qemu(self, self.path(sock),
                 self.path(direct) if direct else None,
                 [self.path(m) for m in more], disk_args + list(extra), name,
                 accel)
        q.disks = [self.disks[d if isinstance(d, str) else d.id]
                   for d in disks]
        if wait:
            q.wait_ready()
        return q

    def start_proxy(self, qemu_sock="qemu.sock", listen=("proxy.sock",),
                    args=(), wait=True, name=None, environ=None):
        if not QBRANCHD:
            raise QBTestError("QBRANCHD is not set")
        if name is None:
            name = "qbranchd%d" % sum(isinstance(p, Proxy)
                                      for p in self._procs)
        p = Proxy(self, self.path(qemu_sock), [self.path(l) for l in listen],
                  ["-v"] + list(args), name, environ=environ)
        if wait:
            p.wait_ready()
        return p

    def start_launch(self, listen=("proxy.sock",), args=(), qemu_args=(),
                     disks=(), paused=False, qemu=None, wait=True,
                     name=None):
        """qbranchd in launch mode: it starts QEMU itself, on the usual
        test command line (-S only if paused) with disks and qemu_args.
        Its private monitor directory goes under DIR/tmp-NAME (its
        TMPDIR), remembered as p.tmpdir."""
        if not QBRANCHD:
            raise QBTestError("QBRANCHD is not set")
        if name is None:
            name = "qbranchd%d" % sum(isinstance(p, Proxy)
                                      for p in self._procs)
        disk_args = self._attach_disks(disks)
        qemu_argv = [qemu or QEMU, "-accel", "kvm", "-accel", "tcg",
                     "-nodefaults", "-display", "none", "-m", "64"]
        if paused:
            qemu_argv.append("-S")
        qemu_argv += disk_args + list(qemu_args)
        tmpdir = self.path("tmp-" + name)
        os.makedirs(tmpdir, exist_ok=True)
        environ = dict(os.environ, TMPDIR=tmpdir)
        p = Proxy(self, None, [self.path(l) for l in listen],
                  ["-v"] + list(args), name, environ=environ,
                  qemu_argv=qemu_argv)
        p.tmpdir = tmpdir
        p.disks = [self.disks[d if isinstance(d, str) else d.id]
                   for d in disks]
        if wait:
            p.wait_ready()
        return p

    def run_proxy(self, args, timeout=DEFAULT_TIMEOUT):
        """Run qbranchd with exactly these args to completion (e.g. -n).
        Returns (status, output)."""
        r = subprocess.run(WRAPPER + [QBRANCHD] + list(args),
                           stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        return r.returncode, r.stdout.decode("utf-8", "replace")

    # -- guest data, without a guest OS (see DESIGN.md) --------------------
    #
    # Write through HMP qemu-io on the device's backend; read back what the
    # guest sees through a read-only NBD export of the device's current root
    # node. Every command goes through the client c it is given (a proxy
    # client normally), so it works whatever the proxy did to the graph.

    def disk(self, dev):
        try:
            return self.disks[dev]
        except KeyError:
            raise QBTestError("unknown disk %r (known: %s)"
                              % (dev, ", ".join(sorted(self.disks))))

    def hmp(self, c, line, timeout=CMD_TIMEOUT):
        """Run an HMP command; return its text. A QMP error raises."""
        r = c.cmd("human-monitor-command", {"command-line": line},
                  timeout=timeout)
        if "return" not in r:
            raise QBTestError("HMP %r failed: %r" % (line, r.raw))
        return r["return"]

    def write(self, c, dev, pattern, off, length=REGION):
        """Write `length` bytes of `pattern` at `off` into disk dev, as the
        guest would. Raises QBTestError if QEMU reports an error (qemu-io's
        own output goes to QEMU's stdout, i.e. its log)."""
        d = self.disk(dev)
        target = d.drive_id if d.drive else "-d " + d.qdev
        line = 'qemu-io %s "write -P 0x%02x %s %s"' % (target, pattern, off,
                                                       length)
        out = self.hmp(c, line)
        if "error" in out.lower():
            raise QBTestError("HMP %r: %r" % (line, out))
        return True

    def nbd_start(self, c):
        """Make sure QEMU's NBD server listens on DIR/nbd.sock."""
        path = self.path("nbd.sock")
        # nbd-server-start takes the legacy SocketAddress form ("data")
        # in QEMU 7.2 and 10.0; try the flat form only if that is refused.
        for addr in ({"type": "unix", "data": {"path": path}},
                     {"type": "unix", "path": path}):
            r = c.cmd("nbd-server-start", {"addr": addr},
                      timeout=CMD_TIMEOUT)
            if "return" in r or "already" in (r.err_desc or "").lower():
                return path
        raise QBTestError("nbd-server-start failed: %r" % r.raw)

    def root_node(self, c, dev):
        """Node name of the device's current root (top) node."""
        d = self.disk(dev)
        r = c.cmd("query-block", timeout=CMD_TIMEOUT)
        for b in r.get("return", []):
            if b.get("qdev") == d.qdev or \
                    (d.drive and b.get("device") == d.drive_id):
                ins = b.get("inserted")
                if not ins:
                    raise QBTestError("device %s has no medium" % dev)
                return ins["node-name"]
        raise QBTestError("device %s not in query-block: %r" % (dev, r.raw))

    def exports(self, c):
        r = c.cmd("query-block-exports", timeout=CMD_TIMEOUT)
        return [e.get("id") for e in r.get("return", [])]

    def export_add(self, c, node, name="chk"):
        r = c.cmd("block-export-add", {"type": "nbd", "id": name,
                                       "node-name": node, "writable": False,
                                       "name": name}, timeout=CMD_TIMEOUT)
        if "return" not in r:
            raise QBTestError("block-export-add %s failed: %r"
                              % (node, r.raw))

    def export_del(self, c, name="chk"):
        """Remove an export and wait until QEMU no longer lists it."""
        deadline = time.monotonic() + CMD_TIMEOUT
        while True:
            r = c.cmd("block-export-del", {"id": name}, timeout=CMD_TIMEOUT)
            if "return" in r or name not in self.exports(c):
                break
            if time.monotonic() > deadline:
                raise QBTestError("block-export-del %s: %r" % (name, r.raw))
            time.sleep(0.05)
        if not wait_for(lambda: name not in self.exports(c),
                        timeout=CMD_TIMEOUT, step=0.02):
            raise QBTestError("export %s still listed after block-export-del"
                              % name)

    def nbd_uri(self, name="chk"):
        return "nbd+unix:///%s?socket=%s" % (name, self.path("nbd.sock"))

    def check_regions(self, c, dev, regions):
        """Read back what the guest sees on dev. regions: [(pattern, off,
        length)]; pattern 0 means zeroes (unwritten). Returns a list of
        (pattern, off, length, what was found) that did not match: empty
        means all matched."""
        self.nbd_start(c)
        node = self.root_node(c, dev)
        self.export_add(c, node)
        try:
            argv = [QEMU_IO, "-r", "-f", "raw", self.nbd_uri()]
            for pat, off, ln in regions:
                argv += ["-c", "read -P %d %s %s" % (pat, off, ln)]
            r = subprocess.run(argv, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=CMD_TIMEOUT)
            out = r.stdout.decode("utf-8", "replace")
            bad = []
            if r.returncode != 0:
                failed = set()
                for line in out.splitlines():
                    if line.startswith("Pattern verification failed at "
                                       "offset "):
                        failed.add(int(line.split()[5].rstrip(",")))
                for pat, off, ln in regions:
                    if int(off) in failed:
                        bad.append((pat, off, ln, self._peek(off)))
                if not bad:     # qemu-io failed for another reason
                    bad.append((None, None, None, out.strip()))
            return bad
        finally:
            self.export_del(c)

    def _peek(self, off, n=16):
        """The first n bytes at off on the current export, as hex."""
        r = subprocess.run([QEMU_IO, "-r", "-f", "raw", self.nbd_uri(),
                            "-c", "read -v %s %d" % (off, n)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=CMD_TIMEOUT)
        out = r.stdout.decode("utf-8", "replace").splitlines()
        return " ".join(out[:1]) if out else "(no output)"

    def check(self, c, dev, pattern, off, length=REGION):
        """True if dev reads `pattern` over [off, off+length)."""
        return not self.check_regions(c, dev, [(pattern, off, length)])

    def expect_data(self, c, dev, regions, text):
        """One test point: every region of dev reads its pattern."""
        bad = self.check_regions(c, dev, regions)
        return ok(not bad, text,
                  *["%s @%s+%s: expected 0x%02x, found %s"
                    % (dev, off, ln, pat, found) if pat is not None
                    else "qemu-io: %s" % found
                    for pat, off, ln, found in bad])

    def dump_logs(self):
        for p in self._procs:
            diag("---- %s log (%s) ----" % (p.label, " ".join(p.argv)))
            lines = p.log_text().splitlines()
            if len(lines) > 300:
                diag("[... %d lines omitted ...]" % (len(lines) - 300))
                lines = lines[-300:]
            diag(*lines)

    def stop(self):
        """Close the clients and stop every process, newest first."""
        for c in self._clients:
            c.close()
        for p in reversed(self._procs):
            try:
                p.stop()
            except Exception:
                pass

    def cleanup(self):
        if self._cleaned:
            return
        self._cleaned = True
        self.stop()
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


class CliResult:
    """What a run of the qbranch client did: rc, out, err (text)."""

    def __init__(self, argv, rc, out, err):
        self.argv = argv
        self.rc = rc
        self.out = out
        self.err = err

    def json(self):
        """stdout as one JSON document; raises QBTestError if it is not."""
        try:
            return json.loads(self.out)
        except ValueError as e:
            raise QBTestError("%s: stdout is not JSON (%s): %r"
                              % (" ".join(self.argv), e, self.out))

    def __repr__(self):
        return "qbranch %s -> exit %s\nstdout: %s\nstderr: %s" % (
            " ".join(self.argv[1:]), self.rc, self.out.rstrip(),
            self.err.rstrip())


def qbranch(*args, sock=None, cwd=None, env=None, timeout=CMD_TIMEOUT):
    """Run the qbranch client (QBRANCH) with args, and -c sock first if
    given, in the C locale (ASCII tree lines) unless env says otherwise;
    env entries are added to the environment (None removes one).
    Returns a CliResult."""
    if not QBRANCH:
        raise QBTestError("QBRANCH is not set")
    argv = [QBRANCH] + (["-c", sock] if sock else []) + list(args)
    e = dict(os.environ)
    e["LC_ALL"] = "C"
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, cwd=cwd, env=e, timeout=timeout)
    return CliResult(argv, r.returncode, r.stdout.decode("utf-8", "replace"),
                     r.stderr.decode("utf-8", "replace"))


class FakeProxy:
    """A stand-in for qbranchd on a unix socket, for client tests: it
    greets, negotiates, and answers each command from answers (name ->
    return value, or bytes sent as they are, the line terminator added,
    or None: close the connection); anything else gets CommandNotFound.
    Serves connections one at a time until close()."""

    GREETING = (b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, '
                b'"major": 10}, "package": ""}, "capabilities": []}}\r\n')

    def __init__(self, path, answers):
        self.answers = answers
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            try:
                self._session(conn)
            except (OSError, ValueError):
                pass
            conn.close()

    def _session(self, conn):
        conn.sendall(self.GREETING)
        buf = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                cmd = json.loads(line)
                name = cmd.get("execute")
                ans = self.answers.get(name)
                if name in self.answers and ans is None:
                    return
                if isinstance(ans, bytes):
                    conn.sendall(ans + b"\r\n")
                    continue
                if name == "qmp_capabilities":
                    r = {"return": {}}
                elif name in self.answers:
                    r = {"return": ans}
                else:
                    r = {"error": {"class": "CommandNotFound",
                                   "desc": "The command %s has not been "
                                   "found" % name}}
                if "id" in cmd:
                    r["id"] = cmd["id"]
                conn.sendall(json.dumps(r).encode() + b"\r\n")

    def close(self):
        self.srv.close()


def drop_timestamps(v):
    if isinstance(v, dict):
        return {k: drop_timestamps(x) for k, x in v.items()
                if k != "timestamp"}
    if isinstance(v, list):
        return [drop_timestamps(x) for x in v]
    return v


def drop_qbranch_commands(v):
    """A query-commands reply without the proxy's own qbranch-* entries,
    which qbranchd adds to QEMU's list."""
    if isinstance(v, dict) and isinstance(v.get("return"), list):
        r = [x for x in v["return"] if not (isinstance(x, dict) and
             str(x.get("name", "")).startswith("qbranch-"))]
        v = dict(v)
        v["return"] = r
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
# Disks and the snapshot tree (qbranch-* commands)


class Disk:
    """A guest disk for Env.start_qemu(disks=[...]).

    id        the -device id (vda); write()/check() address the disk by it
    fmt       "qcow2" or "raw", the format of the base image
    image     file name in the test directory (default <id>.qcow2 or
              <id>.img) or an absolute path
    size      size given to qemu-img create
    drive     True: legacy -drive if=none,id=<drive_id>; False: -blockdev
              with node names <id>-file and <id>-fmt
    create    create the image unless it exists
    readonly  attach it read-only (qbranch must leave it alone)
    """

    def __init__(self, id="vda", fmt="qcow2", image=None, size="64M",
                 drive=False, drive_id=None, create=True, readonly=False):
        self.id = id
        self.fmt = fmt
        self.image = image or "%s.%s" % (id, "qcow2" if fmt == "qcow2"
                                         else "img")
        self.size = size
        self.drive = drive
        self.drive_id = drive_id or "drive-" + id
        self.create = create
        self.readonly = readonly
        self.path = None

    def attach(self, env, index):
        self.path = self.image if os.path.isabs(self.image) \
            else env.path(self.image)
        if self.create and not os.path.exists(self.path):
            subprocess.run([QEMU_IMG, "create", "-q", "-f", self.fmt,
                            self.path, self.size], check=True,
                           stdin=subprocess.DEVNULL, timeout=CMD_TIMEOUT)

    @property
    def qdev(self):
        return "/machine/peripheral/%s/virtio-backend" % self.id

    @property
    def stem(self):
        """Image path without its last extension: overlays are
        <stem>.<snapshot> and <stem>.<snapshot>-<N>."""
        return os.path.splitext(self.path)[0]

    @property
    def node(self):
        """The format node name given on the command line (-blockdev)."""
        return None if self.drive else "%s-fmt" % self.id

    def args(self):
        ro = ",read-only=on" if self.readonly else ""
        if self.drive:
            return ["-drive", "file=%s,format=%s,if=none,id=%s%s"
                    % (self.path, self.fmt, self.drive_id, ro),
                    "-device", "virtio-blk-pci,drive=%s,id=%s"
                    % (self.drive_id, self.id)]
        return ["-blockdev", "driver=file,filename=%s,node-name=%s-file%s"
                % (self.path, self.id, ro),
                "-blockdev", "driver=%s,file=%s-file,node-name=%s-fmt%s"
                % (self.fmt, self.id, self.id, ro),
                "-device", "virtio-blk-pci,drive=%s-fmt,id=%s"
                % (self.id, self.id)]


def pick(obj, keys=("name", "base", "attached", "disks")):
    """obj restricted to keys (a list of objects: each of them)."""
    if isinstance(obj, list):
        return [pick(x, keys) for x in obj]
    if not isinstance(obj, dict):
        return obj
    return {k: obj.get(k) for k in keys}


def sha256(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_tree(state_dir):
    """The tree as the state directory holds it: tree.json with the
    records of tree.journal replayed on it, as README.md documents them
    (written apart from qbranchd's code, so that each checks the other).
    A last record cut short is left out."""
    with open(os.path.join(state_dir, "tree.json")) as f:
        tree = json.load(f)
    try:
        with open(os.path.join(state_dir, "tree.journal"), "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        lines = []
    seq = tree.get("seq", 0)
    for line in lines:
        if not line.strip(b" "):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            break
        if rec["seq"] <= seq:
            continue
        assert rec["seq"] == seq + 1, "journal out of order"
        for key in ("snapshots", "branches"):
            entries = tree[key]
            for op in rec.get(key, []):
                if op[0] == "del":
                    del entries[op[1]]
                elif op[0] == "set":
                    entries[op[1]] = op[2]
                else:
                    assert op[0] == "add" and len(op) == 2
                    entries.append(op[1])
        if "bases" in rec:
            tree["bases"] = rec["bases"]
        seq = tree["seq"] = rec["seq"]
    return tree


def backing_chain(path):
    """Files of path's backing chain, path first (qemu-img info -U)."""
    r = subprocess.run([QEMU_IMG, "info", "-U", "--backing-chain",
                        "--output=json", path], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=CMD_TIMEOUT)
    if r.returncode != 0:
        raise QBTestError("qemu-img info %s: %s"
                          % (path, r.stderr.decode("utf-8", "replace")))
    info = json.loads(r.stdout.decode("utf-8"))
    if isinstance(info, dict):
        info = [info]
    return [os.path.realpath(i["filename"]) for i in info]


QB_COMMANDS = ["qbranch-snapshot-create", "qbranch-snapshot-revert",
               "qbranch-branch-switch", "qbranch-snapshot-delete",
               "qbranch-branch-delete", "qbranch-snapshot-edit",
               "qbranch-query-snapshots", "qbranch-query-branches",
               "qbranch-query-disks", "qbranch-query-orphans",
               "qbranch-orphans-delete"]


class QBFailed(QBTestError):
    """A qbranch command that had to succeed failed."""


class SnapVM:
    """A QEMU with disks, a qbranchd with a state directory in front of it,
    a client of the proxy (self.c), and a model of what the snapshot tree
    should look like and of what every snapshot and branch should read.

    Guest data is written in REGION-sized blocks at REGION-aligned offsets
    (write()); the model remembers, per branch and per snapshot, the
    pattern each written block should read (unwritten: zeroes). The
    operations (create, revert, switch, delete, ...) call the proxy, raise
    QBFailed when it answers an error, and update the model from the
    answer. The check_* methods compare the proxy's answers and the guest
    data with the model, each as one test point."""

    def __init__(self, env, disks=("vda",), cont=True, proxy_args=(),
                 state_dir="state", qemu_extra=(), launch=False):
        """launch: qbranchd starts QEMU itself (launch mode); self.qemu
        is None then, and qemu_extra may hold -S."""
        self.env = env
        self.disk_specs = [d if isinstance(d, Disk) else Disk(d)
                           for d in disks]
        self.devs = [d.id for d in self.disk_specs]
        self.qemu_extra = list(qemu_extra)
        self.state_dir = env.path(state_dir)
        self.proxy_args = ["--state-dir", self.state_dir] + list(proxy_args)
        if launch:
            self.qemu = None
            self.proxy = env.start_launch(disks=self.disk_specs,
                                          args=self.proxy_args,
                                          qemu_args=self.qemu_extra)
        else:
            self.qemu = env.start_qemu(disks=self.disk_specs,
                                       extra=self.qemu_extra)
            self.proxy = env.start_proxy(args=self.proxy_args)
        self.c = self.proxy.client(negotiate=True, timeout=CMD_TIMEOUT)
        self.originals = {d.id: d.path for d in self.disk_specs}
        self.orig_hash = {}          # dev -> sha256 once frozen
        self.frozen_hash = {}        # path -> sha256 when it was frozen
        self.snaps = {}              # name -> {"parent", "data"}
        self.branches = {"main": {"base": None, "data": self._empty()}}
        self.attached = "main"
        self.offsets = set()
        # Disks left out of the tree: one set of data whatever the branch.
        self.excluded = {}           # dev -> {offset: pattern}
        if cont:
            self.ret("cont")

    # -- plumbing ------------------------------------------------------
    def _empty(self):
        return {dev: {} for dev in self.devs}

    @staticmethod
    def _copy(data):
        return {dev: dict(blocks) for dev, blocks in data.items()}

    def cmd(self, name, args=None, timeout=CMD_TIMEOUT):
        """Send a command through the proxy; return the reply."""
        return self.c.cmd(name, args, timeout=timeout)

    def ret(self, name, args=None, timeout=CMD_TIMEOUT):
        """Send a command that must succeed; return its "return"."""
        r = self.cmd(name, args, timeout)
        if "return" not in r:
            raise QBFailed("%s %s -> %s" % (name, json.dumps(args),
                                            r.raw.decode("utf-8",
                                                         "replace").strip()))
        return r["return"]

    def disk(self, dev=None):
        return self.env.disk(dev or self.devs[0])

    def status(self):
        return self.ret("query-status")

    def running(self):
        return self.status().get("running")

    def restart_proxy(self, kill=False):
        """SIGTERM (kill: SIGKILL) qbranchd and start it again with the
        same arguments."""
        self.c.close()
        if kill:
            self.proxy.kill()
        self.proxy.stop()
        self.proxy = self.env.start_proxy(args=self.proxy_args)
        self.c = self.proxy.client(negotiate=True, timeout=CMD_TIMEOUT)

    # -- guest data ----------------------------------------------------
    def write(self, pattern, off, dev=None):
        """Write one REGION of pattern at off (REGION-aligned) on the
        attached branch."""
        dev = dev or self.devs[0]
        assert off % REGION == 0 and pattern != 0
        self.env.write(self.c, dev, pattern, off, REGION)
        if dev in self.excluded:
            self.excluded[dev][off] = pattern
        else:
            self.branches[self.attached]["data"][dev][off] = pattern
        self.offsets.add(off)

    def regions(self, data, dev):
        d = self.excluded.get(dev, data[dev])
        return [(d.get(off, 0), off, REGION)
                for off in sorted(self.offsets | {0})]

    def check_data(self, text, data=None):
        """The attached branch (or the given expected data) reads as the
        model says, on every disk: one test point."""
        if data is None:
            data = self.branches[self.attached]["data"]
        bad = []
        for dev in self.devs:
            for pat, off, ln, found in self.env.check_regions(
                    self.c, dev, self.regions(data, dev)):
                if pat is None:
                    bad.append("%s: qemu-io: %s" % (dev, found))
                else:
                    bad.append("%s @%d (%dM%+dk): expected 0x%02x, "
                               "found %s" % (dev, off, off // MiB,
                                             (off % MiB) // 1024, pat,
                                             found))
        return ok(not bad, text, *bad)

    # -- operations (raise QBFailed on an error reply) -------------------
    def create(self, name=None, **kw):
        args = dict(kw)
        if name is not None:
            args["name"] = name
        before = {dev: self.top_file(dev) for dev in self.devs
                  if dev not in self.excluded}
        snap = self.ret("qbranch-snapshot-create", args)
        for d in args.get("disks", []):
            if d.get("exclude") and d["device"] not in self.excluded:
                self.excluded[d["device"]] = dict(
                    self.branches[self.attached]["data"][d["device"]])
        self._created(snap, before)
        return snap

    def _created(self, snap, before):
        name = snap["name"]
        parent = self.current()
        self.snaps[name] = {"parent": parent, "data": self._copy(
            self.branches[self.attached]["data"])}
        self.branches[self.attached]["base"] = name
        for dev in self.devs:
            if dev in self.excluded:
                continue    # written on, whatever the branch
            if dev not in self.orig_hash and \
                    os.path.exists(self.originals[dev]):
                self.orig_hash[dev] = sha256(self.originals[dev])
            f = before.get(dev)
            if f and os.path.exists(f) and f not in self.frozen_hash:
                self.frozen_hash[f] = sha256(f)

    def revert(self, name, **kw):
        args = dict(kw)
        args["name"] = name
        br = self.ret("qbranch-snapshot-revert", args)
        self._reverted(name, br, kw.get("discard"))
        return br

    def _reverted(self, name, br, discard):
        if discard:
            del self.branches[self.attached]
        self.branches[br["name"]] = {"base": name, "data": self._copy(
            self.snaps[name]["data"])}
        self.attached = br["name"]

    def switch(self, branch, **kw):
        args = dict(kw)
        args["branch"] = branch
        br = self.ret("qbranch-branch-switch", args)
        self.attached = branch
        return br

    def branch_delete(self, branch):
        r = self.ret("qbranch-branch-delete", {"branch": branch})
        del self.branches[branch]
        return r

    def edit(self, name, **kw):
        args = dict(kw)
        args["name"] = name
        snap = self.ret("qbranch-snapshot-edit", args)
        self._edited(name, kw.get("new-name"))
        return snap

    def _edited(self, name, new):
        if new and new != name:
            self.snaps[new] = self.snaps.pop(name)
            for s in self.snaps.values():
                if s["parent"] == name:
                    s["parent"] = new
            for b in self.branches.values():
                if b["base"] == name:
                    b["base"] = new

    def descendants(self, name):
        out = []
        todo = [name]
        while todo:
            n = todo.pop()
            kids = [s for s, v in self.snaps.items() if v["parent"] == n]
            out += kids
            todo += kids
        return out

    def delete(self, name, mode=None):
        args = {"name": name}
        if mode is not None:
            args["mode"] = mode
        r = self.ret("qbranch-snapshot-delete", args)
        self._deleted(name, mode)
        return r

    def _deleted(self, name, mode):
        mode = mode or "merge"
        if mode in ("merge", "metadata-only"):
            parent = self.snaps[name]["parent"]
            for s in self.snaps.values():
                if s["parent"] == name:
                    s["parent"] = parent
            for b in self.branches.values():
                if b["base"] == name:
                    b["base"] = parent
            del self.snaps[name]
        else:
            gone = self.descendants(name)
            if mode == "children":
                gone.append(name)
            for s in gone:
                del self.snaps[s]
            for b in [b for b, v in self.branches.items()
                      if v["base"] in gone]:
                del self.branches[b]

    def current(self):
        return self.branches[self.attached]["base"]

    def _absorb(self, name, args, ret, tops):
        """A command expected to fail succeeded: bring the model along,
        so that later checks do not fail only because of it."""
        args = args or {}
        try:
            if name == "qbranch-snapshot-create":
                self._created(ret, tops)
            elif name == "qbranch-snapshot-revert":
                self._reverted(args["name"], ret, args.get("discard"))
            elif name == "qbranch-branch-switch":
                self.attached = args["branch"]
            elif name == "qbranch-snapshot-delete":
                self._deleted(args["name"], args.get("mode"))
            elif name == "qbranch-branch-delete":
                self.branches.pop(args["branch"], None)
            elif name == "qbranch-snapshot-edit":
                self._edited(args["name"], args.get("new-name"))
            else:
                return
            diag("(the model now follows the unexpected success of %s)"
                 % name)
        except Exception as e:
            diag("could not follow the unexpected success of %s: %r"
                 % (name, e))

    # -- what the proxy says -------------------------------------------
    def query_snapshots(self):
        return self.ret("qbranch-query-snapshots")

    def query_branches(self):
        return self.ret("qbranch-query-branches")

    def query_disks(self):
        return self.ret("qbranch-query-disks")

    def chain(self, dev=None):
        """Files of dev's chain per qbranch-query-disks, top first."""
        dev = dev or self.devs[0]
        for d in self.query_disks():
            if d.get("device") == dev:
                return [x.get("file") for x in d.get("chain", [])]
        raise QBTestError("%s not in qbranch-query-disks" % dev)

    def node_of(self, path, dev=None):
        """Node name of the image path in QEMU: from qbranch-query-disks
        if it says, else the format node QEMU reports for that file
        (query-named-block-nodes, flat)."""
        dev = dev or self.devs[0]
        for d in self.query_disks():
            for x in d.get("chain", []):
                if x.get("file") == path and x.get("node-name"):
                    return x["node-name"]
        nodes = self.ret("query-named-block-nodes", {"flat": True})
        for n in nodes:
            if n.get("drv") in ("qcow2", "raw") and \
                    path in (n.get("file"),
                             n.get("image", {}).get("filename")):
                return n["node-name"]
        raise QBTestError("no node for %s" % path)

    def top_file(self, dev):
        """The attached branch's file for dev, per qbranch-query-branches
        (None if the proxy cannot say)."""
        try:
            for b in self.query_branches():
                if b.get("attached"):
                    for d in b.get("disks", []):
                        if d.get("device") == dev:
                            return d.get("file")
        except QBTestError:
            pass
        return None

    def state(self):
        """Everything an error must leave unchanged: the proxy's tree,
        branches and chains (node names aside), and the image files."""
        snaps = self.query_snapshots()
        disks = [{"device": d.get("device"),
                  "chain": [(x.get("file"), x.get("format"))
                            for x in d.get("chain", [])]}
                 for d in self.query_disks()]
        return {"snapshots": snaps, "branches": self.query_branches(),
                "disks": disks, "files": sorted(self.image_files())}

    # -- checks (one test point each) ------------------------------------
    def model_tree(self):
        snaps = {n: {"parent": v["parent"],
                     "children": sorted(k for k, w in self.snaps.items()
                                        if w["parent"] == n)}
                 for n, v in self.snaps.items()}
        branches = {n: {"base": v["base"], "attached": n == self.attached}
                    for n, v in self.branches.items()}
        return {"snapshots": snaps, "current": self.current(),
                "branches": branches}

    def proxy_tree(self):
        q = self.query_snapshots()
        snaps = {s.get("name"): {"parent": s.get("parent"),
                                 "children": sorted(s.get("children") or [])}
                 for s in q.get("snapshots", [])}
        branches = {b.get("name"): {"base": b.get("base"),
                                    "attached": b.get("attached")}
                    for b in self.query_branches()}
        return {"snapshots": snaps, "current": q.get("current"),
                "branches": branches}

    def check_tree(self, text):
        """Snapshots (parents, children), current and branches (base,
        attached) are as the model says."""
        return eq(self.proxy_tree(), self.model_tree(), text)

    def check_everything(self, text):
        """The tree matches the model; every detached branch (switched
        to) and every snapshot (reverted to, then the temporary branch
        deleted) reads its own data; back on the branch attached before,
        which reads its data too. One test point per step."""
        self.check_tree("%s: tree as expected" % text)
        home = self.attached
        for b in sorted(self.branches):
            if b == home:
                continue
            self.switch(b)
            self.check_data("%s: branch %s reads its data" % (text, b))
        for s in sorted(self.snaps):
            br = self.revert(s)
            self.check_data("%s: snapshot %s reads its data" % (text, s))
            self.switch(home)
            self.branch_delete(br["name"])
        if self.attached != home:
            self.switch(home)
        self.check_data("%s: branch %s (attached) reads its data"
                        % (text, home))
        self.check_tree("%s: tree unchanged by the checks" % text)

    def image_files(self):
        """Image files in the disks' directories and --image-dir:
        <stem>.* of each disk."""
        out = set()
        args = self.proxy_args
        image_dir = (args[args.index("--image-dir") + 1]
                     if "--image-dir" in args else None)
        for d in self.disk_specs:
            dirname, base = os.path.split(d.stem)
            for f, dirname in [(f, dirname) for f in os.listdir(dirname)] + \
                    [(f, image_dir) for f in (os.listdir(image_dir)
                                              if image_dir else [])]:
                p = os.path.join(dirname, f)
                if f.startswith(base + ".") and os.path.isfile(p) and \
                        not f.endswith((".log", ".sock")):
                    out.add(p)
        return out

    def check_files(self, text):
        """Every file a snapshot or branch needs (their files and their
        backing chains) exists; no other image file is left over; the
        original images exist."""
        refs = set()
        for s in self.query_snapshots().get("snapshots", []):
            refs |= {d.get("file") for d in s.get("disks", [])}
        for b in self.query_branches():
            refs |= {d.get("file") for d in b.get("disks", [])}
        needed = set()
        missing = set()
        for f in refs:
            if not f or not os.path.exists(f):
                missing.add(f)
                continue
            try:
                needed |= set(backing_chain(f))
            except QBTestError as e:
                needed.add(os.path.realpath(f))
                missing.add("%s (chain: %s)" % (f, str(e).strip()))
        have = {os.path.realpath(p) for p in self.image_files()}
        originals = {os.path.realpath(p) for p in self.originals.values()}
        extra = have - needed - originals
        missing |= (needed | originals) - have
        return ok(not extra and not missing, text,
                  "left over: %s" % sorted(extra),
                  "missing: %s" % sorted(missing, key=str))

    def file_hashes(self):
        """sha256 of every image file in the disks' directories."""
        return {p: sha256(p) for p in sorted(self.image_files())}

    def check_originals(self, text):
        """The original images exist and are as they were when the first
        snapshot froze them."""
        got = {dev: sha256(p) if os.path.exists(p) else None
               for dev, p in self.originals.items() if dev in self.orig_hash}
        return eq(got, self.orig_hash, text)

    def check_frozen(self, text):
        """No frozen image changed since it was frozen."""
        got = {p: sha256(p) if os.path.exists(p) else None
               for p in self.frozen_hash}
        return eq(got, self.frozen_hash, text)

    def expect_error(self, name, args, text, desc_re=None):
        """name(args) fails with a GenericError (whose desc matches
        desc_re, if given); the tree, branches, chains, image files and
        guest data are exactly as before. Three test points."""
        import re
        before = self.state()
        tops = {dev: self.top_file(dev) for dev in self.devs}
        r = self.cmd(name, args)
        if "return" in r:
            self._absorb(name, args, r["return"], tops)
        good = r.err_class == "GenericError" and bool(r.err_desc)
        if good and desc_re:
            good = re.search(desc_re, r.err_desc, re.I) is not None
        ok(good, "%s: GenericError%s" % (text, " matching /%s/" % desc_re
                                         if desc_re else ""),
           "%s %s -> %s" % (name, json.dumps(args),
                            r.raw.decode("utf-8", "replace").strip()))
        after = self.state()
        ok(after == before, "%s: tree, branches, chains and files "
           "unchanged" % text,
           *["%s before: %s\n%s  after: %s" % (k, json.dumps(before[k]), k,
                                              json.dumps(after[k]))
             for k in before if before[k] != after.get(k)])
        self.check_data("%s: guest data unchanged" % text)
        return r


def seed001_tree(vm):
    """Build seed 001's tree on vm's first disk:

        A -> B -> D      branch main grows from D (detached)
        A -> C -> E      branch A-1 grows from E (attached)

    Every snapshot writes its own pattern at 0 and in a block of its own
    (A 1M, B 2M, D 3M, C 4M, E 5M); main writes 0x1d at 0 and 6M after D,
    A-1 writes 0x1e at 0 and 7M after E. So each point reads a different
    combination, and a wrong merge shows. Frozen images: A vm.qcow2 (the
    original), B <stem>.A, D <stem>.B, C <stem>.A-1, E <stem>.C; overlays:
    main <stem>.D, A-1 <stem>.E."""
    for name, pat, off in (("A", 0xa0, 1), ("B", 0xb0, 2), ("D", 0xd0, 3)):
        vm.write(pat, 0)
        vm.write(pat, off * MiB)
        vm.create(name)
    vm.write(0x1d, 0)
    vm.write(0x1d, 6 * MiB)
    br = vm.revert("A")
    if br.get("name") != "A-1":
        raise QBTestError("revert A made branch %r, not A-1" % br.get("name"))
    for name, pat, off in (("C", 0xc0, 4), ("E", 0xe0, 5)):
        vm.write(pat, 0)
        vm.write(pat, off * MiB)
        vm.create(name)
    vm.write(0x1e, 0)
    vm.write(0x1e, 7 * MiB)


# --------------------------------------------------------------------------
# Runner


def _alarm(signum, frame):
    raise HardTimeout("hard timeout of %d s reached" % HARD_TIMEOUT)


def run(main, timeout=None):
    """Run main(env) with a hard timeout, report exceptions as failures,
    print the plan, dump logs if anything failed, clean up, exit 0.
    timeout: this file's hard timeout when QBTEST_TIMEOUT is not set."""
    global HARD_TIMEOUT
    if timeout and not os.environ.get("QBTEST_TIMEOUT"):
        HARD_TIMEOUT = int(timeout)
    if WRAPPER:
        HARD_TIMEOUT *= 3
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HARD_TIMEOUT)
    _reports_start()
    diag("QEMU=%s QBRANCHD=%s%s" % (QEMU, QBRANCHD,
                                    " QBTEST_WRAPPER=%s" % " ".join(WRAPPER)
                                    if WRAPPER else ""))
    env = None
    try:
        env = Env()
        main(env)
    except (Exception, HardTimeout) as e:
        fail("no unexpected exception (%s: %s)" % (type(e).__name__, e),
             traceback.format_exc())
    finally:
        signal.alarm(0)
    # Stopped before the plan: what they report at exit is a test point.
    for e in list(_envs):
        e.stop()
    _reports_check()
    if _tap.n == 0 and _tap.skip_reason:
        sys.stdout.write("1..0 # SKIP %s\n" % _tap.skip_reason)
        sys.stdout.flush()
        _cleanup_all()
        sys.exit(0)
    if _tap.n == 0:
        fail("at least one test point ran")
    sys.stdout.write("1..%d\n" % _tap.n)
    if _tap.failed:
        for e in list(_envs):   # the test's own further Envs too
            e.dump_logs()
    sys.stdout.flush()
    _cleanup_all()
    sys.exit(0)

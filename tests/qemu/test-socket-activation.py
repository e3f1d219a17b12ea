#!/usr/bin/env python3
# Sockets handed over as descriptors: systemd's socket activation
# (LISTEN_FDS, through systemd-socket-activate), --listen-fd, --qemu-fd
# (a connection to QEMU's monitor, or a socketpair end), what happens when
# that connection ends, and clear errors for descriptors that are wrong.

import os
import shutil
import signal
import socket
import subprocess

import qbtest
from qbtest import ok, eq, skip, QMP, Proxy, _Proc

EXIT_TIMEOUT = 10


def proxy_fds(env, args, fds, name, clients=()):
    """qbranchd with exactly args (no --qemu, no --listen added), passing
    fds; clients: socket paths its client() connects to."""
    p = Proxy(env, None, [], ["-v"] + list(args), name, pass_fds=fds)
    p.listen = list(clients)
    return p


def talk(path, text, qid):
    """Greeting, negotiation and one query-status through path: one test
    point. Returns the client (or None)."""
    try:
        c = QMP(path, timeout=EXIT_TIMEOUT)
        g = c.recv()
        c.negotiate()
        r = c.cmd("query-status", id=qid)
    except (OSError, qbtest.QBTestError) as e:
        return ok(False, text, str(e)) and None
    ok("QMP" in g and r.get("id") == qid and
       r.get("return", {}).get("status") == "prelaunch", text, repr(r.raw))
    return c


def environ_of(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return [x.decode("utf-8", "replace") for x in f.read().split(b"\0")]
    except OSError:
        return None


def check_systemd(env, qemu):
    sa = shutil.which("systemd-socket-activate")
    if not sa:
        for text in ("systemd-socket-activate: clients talk QMP through "
                     "the activated socket", "a second activated socket",
                     "the socket's name from LISTEN_FDNAMES is used",
                     "SIGTERM: exit 0", "the inherited sockets are not "
                     "unlinked", "launch mode under socket activation",
                     "QEMU does not see LISTEN_FDS",
                     "and qbranchd exits with QEMU's status"):
            skip(text, "systemd-socket-activate is not installed")
        return
    a, b = env.path("act-a.sock"), env.path("act-b.sock")
    # systemd-socket-activate passes on only the environment it is told.
    p = _Proc(env, "activate", [sa, "-E", "QBRANCHD_RULES_DIR", "-l", a,
                                "-l", b, "--fdname=qmp:other",
                                qbtest.QBRANCHD, "-v", "--qemu", qemu.sock],
              env.path("activate.log"))
    ca = talk(a, "systemd-socket-activate: clients talk QMP through the "
              "activated socket", 1)
    cb = talk(b, "a second activated socket", 2)
    ok("\"qmp\"" in p.log_text() and "\"other\"" in p.log_text(),
       "the socket's name from LISTEN_FDNAMES is used", p.log_text())
    p.send_signal(signal.SIGTERM)
    eq(p.wait(EXIT_TIMEOUT), 0, "SIGTERM: exit 0")
    ok(os.path.exists(a) and os.path.exists(b),
       "the inherited sockets are not unlinked")
    for c in (ca, cb):
        if c:
            c.close()

    # Launch mode, activated: QEMU gets no LISTEN_* and no listener.
    la = env.path("act-l.sock")
    tmp = env.path("tmp-act")
    os.makedirs(tmp, exist_ok=True)
    p = _Proc(env, "activate-launch",
              [sa, "-E", "QBRANCHD_RULES_DIR", "-l", la,
               qbtest.QBRANCHD, "-v", "--",
               qbtest.QEMU, "-accel", "kvm", "-accel", "tcg", "-nodefaults",
               "-display", "none", "-m", "64", "-S"],
              env.path("activate-launch.log"),
              environ=dict(os.environ, TMPDIR=tmp))
    c = talk(la, "launch mode under socket activation", 3)
    kids = Proxy.children(p)
    envs = environ_of(kids[0]) if kids else None
    ok(envs is not None and not any(e.startswith("LISTEN_") for e in envs),
       "QEMU does not see LISTEN_FDS", repr(envs))
    if c:
        c.cmd("quit")
        c.close()
    eq(p.wait(EXIT_TIMEOUT), 0, "and qbranchd exits with QEMU's status")


def check_listen_fd(env, qemu):
    path = env.path("lfd.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(8)
    abstract = "qbtest-%d-lfd" % os.getpid()
    t = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    t.bind("\0" + abstract)
    t.listen(8)
    p = proxy_fds(env, ["--qemu", qemu.sock, "--listen-fd", str(s.fileno()),
                        "--listen-fd", str(t.fileno())],
                  [s.fileno(), t.fileno()], "listenfd", [path])
    s.close()
    c = talk(path, "--listen-fd: clients talk QMP through the socket the "
             "test made", 4)
    talk("\0" + abstract, "a second --listen-fd, an abstract socket", 41)
    ok("listening on @%s (fd %d)" % (abstract, t.fileno()) in p.log_text(),
       "the log names each inherited socket", p.log_text())
    t.close()
    p.send_signal(signal.SIGTERM)
    eq(p.wait(EXIT_TIMEOUT), 0, "--listen-fd: SIGTERM, exit 0")
    ok(os.path.exists(path), "--listen-fd: the socket file is left alone")
    if c:
        c.close()

    # Descriptors that are wrong: a clear message, never a crash.
    r, w = os.pipe()
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(env.path("bound.sock"))
    lsn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsn.bind(env.path("lsn.sock"))
    lsn.listen(1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cases = [
        ("--listen-fd 250 (not open)", ["--qemu", qemu.sock,
                                        "--listen-fd", "250"], [],
         "not an open descriptor"),
        ("--listen-fd on a pipe", ["--qemu", qemu.sock, "--listen-fd",
                                   str(r)], [r], "not a socket"),
        ("--listen-fd on a socket that does not listen",
         ["--qemu", qemu.sock, "--listen-fd", str(bound.fileno())],
         [bound.fileno()], "not a listening"),
        ("--listen-fd on an inet socket", ["--qemu", qemu.sock,
                                           "--listen-fd",
                                           str(udp.fileno())],
         [udp.fileno()], "not a unix stream socket"),
        ("--listen-fd abc", ["--qemu", qemu.sock, "--listen-fd", "abc"],
         [], "invalid value"),
        ("--listen-fd 99999999999", ["--qemu", qemu.sock, "--listen-fd",
                                     "99999999999"], [], "invalid value"),
        ("--qemu-fd 250 (not open)", ["--qemu-fd", "250", "--listen",
                                      env.path("x.sock")], [],
         "not an open descriptor"),
        ("--qemu-fd on a listening socket", ["--qemu-fd",
                                             str(lsn.fileno()), "--listen",
                                             env.path("x.sock")],
         [lsn.fileno()], "listening socket"),
        ("--qemu-fd on a socket that is not connected",
         ["--qemu-fd", str(bound.fileno()), "--listen", env.path("x.sock")],
         [bound.fileno()], "not connected"),
        ("the same fd twice", ["--qemu", qemu.sock, "--listen-fd",
                               str(lsn.fileno()), "--listen-fd",
                               str(lsn.fileno())], [lsn.fileno()],
         "given twice"),
    ]
    for i, (text, args, fds, want) in enumerate(cases):
        for check in ([], ["-n"]):
            p = proxy_fds(env, check + args, fds, "bad%d%s" % (i, check and
                                                              "n" or ""))
            st = p.wait(EXIT_TIMEOUT)
            log = p.log_text()
            ok(st not in (None, 0) and want in log,
               "%s%s: non-zero exit, \"%s\"" % (" ".join(check + [""]),
                                                 text, want),
               "status %r, log %r" % (st, log))
    ok(not os.path.exists(env.path("x.sock")),
       "no listening socket is made when a descriptor is wrong")
    p = proxy_fds(env, ["-n", "--qemu", qemu.sock, "--listen-fd",
                        str(lsn.fileno())], [lsn.fileno()], "good")
    eq(p.wait(EXIT_TIMEOUT), 0, "-n with a good --listen-fd: exit 0")
    for x in (bound, lsn, udp):
        x.close()
    os.close(r)
    os.close(w)

    # LISTEN_FDS by hand: for another process, or not a socket.
    sh = ["sh", "-c", 'export LISTEN_PID=$$ LISTEN_FDS=1 '
          'LISTEN_FDNAMES=x; exec "$@" 3</dev/null', "sh", qbtest.QBRANCHD,
          "--qemu", qemu.sock]
    r = subprocess.run(sh, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=EXIT_TIMEOUT)
    out = r.stdout.decode("utf-8", "replace")
    ok(r.returncode == 1 and "fd 3: not a socket" in out,
       "LISTEN_FDS=1 with fd 3 not a socket: exit 1 with a message",
       "status %r, %r" % (r.returncode, out))
    r = subprocess.run([qbtest.QBRANCHD, "--qemu", qemu.sock],
                       env=dict(os.environ, LISTEN_PID="1", LISTEN_FDS="1"),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=EXIT_TIMEOUT)
    out = r.stdout.decode("utf-8", "replace")
    ok(r.returncode == 2 and "socket activation is required" in out,
       "LISTEN_FDS for another process (LISTEN_PID) is ignored",
       "status %r, %r" % (r.returncode, out))


def check_qemu_fd(env, qemu):
    """--qemu-fd: a connection to QEMU's monitor the test made."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(qemu.more[0])
    lp = env.path("qfd.sock")
    p = proxy_fds(env, ["--qemu-fd", str(s.fileno()), "--listen", lp],
                  [s.fileno()], "qemufd", [lp])
    s.close()
    p.wait_ready()
    c = talk(lp, "--qemu-fd: a connected socket to QEMU's monitor works", 5)
    c2 = talk(lp, "a second client shares it", 6)
    # QEMU quits: no way to reconnect, so qbranchd ends, cleanly.
    if c:
        c.send_json({"execute": "quit", "id": "q"})
        try:
            msgs = c.recv_until_eof(timeout=EXIT_TIMEOUT)
        except qbtest.QBTestError as e:
            msgs = []
            qbtest.diag(str(e))
        ok(any(m.get("id") == "q" for m in msgs), "quit is answered")
    eq(qemu.wait(EXIT_TIMEOUT), 0, "QEMU quit")
    eq(p.wait(EXIT_TIMEOUT), 0, "--qemu-fd: when QEMU's connection ends, "
       "qbranchd exits 0")
    ok("cannot be reopened" in p.log_text(), "with a log line saying why",
       p.log_text()[-600:])
    ok(not os.path.exists(lp), "and removes its listening socket")
    for x in (c, c2):
        if x:
            x.close()


def check_socketpair(env):
    """--qemu-fd with one end of a socketpair whose other end QEMU has
    (-chardev socket,fd=N: a connected socket, client mode)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    argv = [qbtest.QEMU, "-accel", "kvm", "-accel", "tcg", "-nodefaults",
            "-display", "none", "-m", "64", "-S",
            "-chardev", "socket,id=sp,fd=%d" % a.fileno(),
            "-mon", "chardev=sp,mode=control"]
    q = _Proc(env, "qemu-sp", argv, env.path("qemu-sp.log"),
              pass_fds=[a.fileno()])
    a.close()
    lp = env.path("sp.sock")
    p = proxy_fds(env, ["--qemu-fd", str(b.fileno()), "--listen", lp],
                  [b.fileno()], "socketpair", [lp])
    b.close()
    p.wait_ready()
    c = talk(lp, "--qemu-fd with a socketpair end: QMP works", 7)
    q.kill(signal.SIGKILL)
    q.wait(EXIT_TIMEOUT)
    if c:
        try:
            c.recv_until_eof(timeout=EXIT_TIMEOUT)
            ok(True, "QEMU killed: the client is disconnected")
        except qbtest.QBTestError as e:
            ok(False, "QEMU killed: the client is disconnected", str(e))
        c.close()
    eq(p.wait(EXIT_TIMEOUT), 0, "and qbranchd exits 0")

    # A connection that ends before QEMU greeted: exit 1.
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.close()
    p = proxy_fds(env, ["--qemu-fd", str(b.fileno()), "--listen",
                        env.path("dead.sock")], [b.fileno()], "dead")
    b.close()
    eq(p.wait(EXIT_TIMEOUT), 1, "--qemu-fd closed before the greeting: "
       "exit 1")
    ok("before it was ready" in p.log_text(), "with a message",
       p.log_text())


def main(env):
    qemu = env.start_qemu(more=["fd.sock"])
    check_systemd(env, qemu)
    check_listen_fd(env, qemu)
    check_qemu_fd(env, qemu)
    check_socketpair(env)


qbtest.run(main, timeout=90)

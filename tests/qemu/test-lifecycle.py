#!/usr/bin/env python3
# Start order, QEMU quit/crash and reconnect, socket files, signals, -n.

import os
import signal
import socket
import stat

import qbtest
from qbtest import ok, eq

RECONNECT = 15.0   # generous bound for the reconnect backoff


def mode(path):
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def check_options(env):
    q, l = env.path("nq.sock"), env.path("nl.sock")
    st, out = env.run_proxy(["-n", "--qemu", q, "--listen", l])
    eq(st, 0, "-n with valid options exits 0")
    ok(not os.path.exists(q), "-n does not need QEMU")
    st, out = env.run_proxy(
        ["-n", "--qemu", q, "--listen", l, "--listen", env.path("nl2.sock"),
         "--state-dir", env.dir, "--socket-mode", "0660",
         "--max-clients", "5", "--max-message", "65536",
         "--max-inflight", "4", "--max-output", "1048576", "-v"])
    eq(st, 0, "-n with every option exits 0")
    bad = [
        ("missing --qemu", ["-n", "--listen", l]),
        ("missing --listen", ["-n", "--qemu", q]),
        ("unknown option", ["-n", "--qemu", q, "--listen", l, "--bogus"]),
        ("bad --socket-mode", ["-n", "--qemu", q, "--listen", l,
                               "--socket-mode", "999"]),
        ("non-numeric --max-clients", ["-n", "--qemu", q, "--listen", l,
                                       "--max-clients", "abc"]),
        ("negative --max-message", ["-n", "--qemu", q, "--listen", l,
                                    "--max-message", "-5"]),
        ("trailing junk in --max-output", ["-n", "--qemu", q, "--listen", l,
                                           "--max-output", "12x"]),
    ]
    for text, args in bad:
        st, out = env.run_proxy(args)
        ok(st != 0 and out.strip(), "-n, %s: non-zero exit with a message"
           % text, "status %s, output %r" % (st, out))


def main(env):
    check_options(env)

    # ---- proxy first, QEMU later -------------------------------------
    p = env.start_proxy(qemu_sock="qa.sock", listen=("la.sock", "lb.sock"))
    eq([mode(x) for x in p.listen], [0o600, 0o600],
       "listening sockets have mode 0600 by default")
    early = p.client(1, greeting=False)
    ok(early.nothing_pending(0.5), "client connected before QEMU gets no "
       "greeting yet")
    qemu = env.start_qemu(sock="qa.sock")
    g = early.recv(timeout=RECONNECT)
    ok("QMP" in g, "it gets the greeting once QEMU is up", repr(g.raw))
    early.negotiate()
    r = early.cmd("query-status", id=1)
    eq(r.get("return", {}).get("status"), "prelaunch", "and it works")

    # ---- QEMU quits: everybody disconnected after QEMU's last words ----
    a = p.client(0, negotiate=True)
    b = p.client(1, negotiate=True)
    u = p.client(0)
    a.send(b'{"execute": "quit", "id": "bye"}')
    try:
        ma = a.recv_until_eof()
        mb = b.recv_until_eof()
        mu = u.recv_until_eof()
        mearly = early.recv_until_eof()
        closed = True
    except qbtest.QBTestError as e:
        qbtest.diag(str(e))
        closed, ma, mb, mu, mearly = False, [], [], [], []
    ok(closed, "all clients disconnected when QEMU quit")
    ok(any(m.get("id") == "bye" and m.get("return") == {} for m in ma),
       "quitting client got the reply to quit",
       *[repr(m.raw) for m in ma])
    ok(any(m.get("event") == "SHUTDOWN" for m in ma) and
       any(m.get("event") == "SHUTDOWN" for m in mb) and
       any(m.get("event") == "SHUTDOWN" for m in mearly),
       "negotiated clients got the SHUTDOWN event")
    ok(not mu, "un-negotiated client got nothing", *[repr(m.raw) for m in mu])
    eq(qemu.wait(5), 0, "QEMU exited")
    ok(p.alive() and all(os.path.exists(x) for x in p.listen),
       "proxy still running and listening")

    waiting = p.client(0, greeting=False)
    ok(waiting.nothing_pending(0.5), "new client waits while QEMU is gone")
    qemu = env.start_qemu(sock="qa.sock")
    try:
        g = waiting.recv(timeout=RECONNECT)
    except qbtest.QBTestError as e:
        g = {}
        qbtest.diag(str(e))
    ok("QMP" in g, "proxy reconnected to the new QEMU: greeting")
    waiting.negotiate()
    r = waiting.cmd("query-status", id=2)
    eq(r.get("return", {}).get("status"), "prelaunch",
       "commands go to the new QEMU")

    # ---- QEMU crashes ---------------------------------------------------
    c = p.client(1, negotiate=True)
    qemu.kill(signal.SIGKILL)
    try:
        waiting.recv_until_eof()
        c.recv_until_eof()
        closed = True
    except qbtest.QBTestError as e:
        closed = False
        qbtest.diag(str(e))
    ok(closed, "clients disconnected when QEMU was killed")
    ok(p.alive(), "proxy survived the crash")
    qemu.wait(5)
    qemu = env.start_qemu(sock="qa.sock")
    try:
        d = p.client(0, timeout=RECONNECT, negotiate=True)
        r = d.cmd("query-status", id=3)
    except qbtest.QBTestError as e:
        r = {}
        qbtest.diag(str(e))
    eq(r.get("id"), 3, "proxy reconnected after the crash")

    # ---- SIGTERM --------------------------------------------------------
    p.send_signal(signal.SIGTERM)
    eq(p.wait(5), 0, "SIGTERM: exit status 0")
    ok(not any(os.path.exists(x) for x in p.listen),
       "SIGTERM: listening sockets unlinked")
    try:
        d.recv_until_eof()
        ok(True, "SIGTERM: clients disconnected")
    except qbtest.QBTestError as e:
        ok(False, "SIGTERM: clients disconnected", str(e))
    ok(qemu.alive(), "QEMU unaffected by the proxy's exit")

    # ---- QEMU first, --socket-mode, SIGINT -------------------------------
    p = env.start_proxy(qemu_sock="qa.sock", listen=("lc.sock",),
                        args=["--socket-mode", "0660"])
    eq(mode(p.listen[0]), 0o660, "--socket-mode 0660 honoured")
    c = p.client(negotiate=True)
    r = c.cmd("query-status", id=4)
    eq(r.get("id"), 4, "QEMU started before the proxy: works "
       "(and QEMU accepted a new connection after the old proxy left)")
    p.send_signal(signal.SIGINT)
    eq(p.wait(5), 0, "SIGINT: exit status 0")
    ok(not os.path.exists(p.listen[0]), "SIGINT: socket unlinked")

    # ---- stale socket file is replaced ----------------------------------
    stale = env.path("stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()
    ok(os.path.exists(stale), "stale socket file prepared")
    p = env.start_proxy(qemu_sock="qa.sock", listen=("stale.sock",),
                        wait=False)
    try:
        c = p.client(negotiate=True)
        r = c.cmd("query-status", id=5)
    except (OSError, qbtest.QBTestError) as e:
        r = {}
        qbtest.diag(str(e))
    eq(r.get("id"), 5, "stale socket replaced, proxy serves on it")
    p.send_signal(signal.SIGTERM)
    eq(p.wait(5), 0, "and exits cleanly")

    # ---- live socket: refuse to start, leave it alone --------------------
    live = env.path("live.sock")
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(live)
    ls.listen(5)
    ino = os.stat(live).st_ino
    p = env.start_proxy(qemu_sock="qa.sock", listen=("live.sock",),
                        wait=False)
    st = p.wait(5)
    ok(st is not None and st != 0, "live socket: proxy exits non-zero",
       "status %r" % st)
    ok(p.log_text().strip(), "with a message", p.log_text())
    ok(os.path.exists(live) and os.stat(live).st_ino == ino,
       "the other process's socket file is left alone")
    t = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    t.settimeout(2)
    try:
        t.connect(live)
        ls.settimeout(2)
        conn, _ = ls.accept()
        conn.close()
        alive = True
    except OSError:
        alive = False
    t.close()
    ls.close()
    ok(alive, "and still reaches the other process")


qbtest.run(main)

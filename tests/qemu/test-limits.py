#!/usr/bin/env python3
# --max-message, --max-clients, --max-output, --max-inflight.

import socket

import qbtest
from qbtest import ok, eq


def still_works(c, text, timeout=None):
    try:
        r = c.cmd("query-status", id=text, timeout=timeout)
        return r.get("id") == text and "return" in r
    except qbtest.QBTestError:
        return False


def test_max_message(env):
    p = env.start_proxy(qemu_sock="q1.sock", listen=("l1.sock",),
                        args=["--max-message", "4096", "--max-inflight", "2"])
    a = p.client(negotiate=True)
    b = p.client(negotiate=True)
    r = a.cmd("query-status", id="x" * 3000)
    eq(r.get("id"), "x" * 3000, "3 KB message under a 4 KB limit works")

    big = b'{"execute": "query-status", "id": "' + b"y" * 20000 + b'"}'
    errs, sync = [], None
    closed = False
    try:
        errs, sync = a.probe(big)
    except (qbtest.Closed, BrokenPipeError, ConnectionResetError):
        closed = True
    except qbtest.QBTestError as e:
        qbtest.diag(str(e))
    ok(closed or (errs and all(m.err_class == "GenericError" for m in errs)),
       "20 KB message over the limit: GenericError (or disconnect)",
       *[repr(m.raw[:200]) for m in errs])
    if not closed:
        ok(sync is not None and "return" in sync,
           "the client still works afterwards")
        ok(still_works(a, "after-big"), "and keeps working")
    else:
        ok(True, "client was disconnected")
    ok(still_works(b, "other"), "another client is unaffected")

    # --max-inflight 2 must not lose pipelined commands.
    n = 50
    b.send(b"".join(b'{"execute": "query-status", "id": %d}' % i
                    for i in range(n)))
    ids = []
    try:
        for _ in range(n):
            ids.append(b.recv_reply().get("id"))
    except qbtest.QBTestError as e:
        qbtest.diag(str(e))
    eq(ids, list(range(n)), "--max-inflight 2: %d pipelined commands all "
       "answered in order" % n)


def test_max_clients(env):
    p = env.start_proxy(qemu_sock="q2.sock", listen=("l2.sock",),
                        args=["--max-clients", "2"])
    a = p.client(negotiate=True)
    b = p.client(negotiate=True)
    x = qbtest.QMP(p.listen[0])
    try:
        msgs = x.recv_until_eof()
        closed = True
    except qbtest.QBTestError as e:
        msgs, closed = [], False
        qbtest.diag(str(e))
    ok(closed and msgs and msgs[-1].err_class == "GenericError",
       "third client over --max-clients 2: GenericError, closed",
       *[repr(m.raw) for m in msgs])
    ok(still_works(a, "a") and still_works(b, "b"),
       "the two admitted clients still work")

    # Default --max-message (64 MiB): a 1 MiB message passes.
    big = "z" * (1 << 20)
    r = a.cmd("query-status", id=big, timeout=10)
    ok(r.get("id") == big and "return" in r, "1 MiB message works by default")

    # A slot frees up when a client leaves.
    b.close()

    def try_connect():
        c = qbtest.QMP(p.listen[0])
        try:
            m = c.recv(timeout=2)
        except qbtest.QBTestError:
            return None
        if "QMP" in m:
            return c
        c.close()
        return None
    c = qbtest.wait_for(try_connect, timeout=5, step=0.1)
    ok(c is not None and c.negotiate() and still_works(c, "c"),
       "after one leaves, a new client is admitted")


def test_max_output(env, qemu):
    p = env.start_proxy(qemu_sock="q3.sock", listen=("l3.sock",),
                        args=["--max-output", "65536"])
    slow = p.client(negotiate=True)      # never reads
    obs = p.client(negotiate=True)       # reads
    direct = qemu.direct_client()
    direct.cmd("cont")
    direct.recv_event("RESUME")
    obs.recv_event("RESUME")

    pairs, chunk = 2000, 50
    obs_events = 0
    obs_ok = True
    for i in range(pairs // chunk):
        direct.send(b'{"execute":"stop"}{"execute":"cont"}' * chunk)
        for _ in range(chunk * 2):
            direct.recv_reply()
        try:
            for _ in range(chunk * 2):
                obs.recv(timeout=5)
                obs_events += 1
        except qbtest.QBTestError as e:
            obs_ok = False
            qbtest.diag(str(e))
            break
    ok(obs_ok and obs_events == pairs * 2,
       "reading client got all %d events" % (pairs * 2),
       "got %d" % obs_events)
    ok(still_works(obs, "obs"), "reading client still works")

    try:
        msgs = slow.recv_until_eof(timeout=5)
        closed = True
    except qbtest.QBTestError as e:
        closed, msgs = False, []
        qbtest.diag(str(e))
    ok(closed, "client that never read was disconnected (--max-output)")
    ok(len(msgs) < pairs * 2,
       "... before all %d events were queued for it" % (pairs * 2),
       "it received %d" % len(msgs))

    # A client that pipelines big requests without reading harms nobody.
    hog = p.client(negotiate=True)
    hog.send(b'{"execute": "query-qmp-schema"}' * 12)
    ok(still_works(obs, "obs2", timeout=30), "others unaffected by a client that "
       "pipelines large replies without reading")
    hog.close()
    ok(p.alive() and still_works(obs, "obs3", timeout=30), "proxy fine after it leaves")


def main(env):
    qemu = env.start_qemu(sock="q1.sock", more=("q2.sock", "q3.sock"))
    test_max_message(env)
    test_max_clients(env)
    test_max_output(env, qemu)


qbtest.run(main)

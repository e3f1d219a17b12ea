#!/usr/bin/env python3
# Events go unchanged to every negotiated client.

import qbtest
from qbtest import ok, eq


def main(env):
    qemu = env.start_qemu()
    proxy = env.start_proxy(listen=("p1.sock", "p2.sock"))
    direct = qemu.direct_client()

    a = proxy.client(0, negotiate=True)
    b = proxy.client(0, negotiate=True, oob=True)
    c = proxy.client(1, negotiate=True)      # second listening socket
    u = proxy.client(0)                      # never negotiates
    clients = {"a": a, "b": b, "c": c}

    # cont from a proxy client -> RESUME on all clients, identical to what
    # QEMU sent to its other monitor (timestamp included).
    r = a.cmd("cont", id="cont")
    eq(r.get("return"), {}, "cont")
    want = direct.recv_event("RESUME")
    for name, cl in clients.items():
        ev = cl.recv_event("RESUME")
        ok(ev.raw == want.raw, "client %s gets RESUME byte-identical to "
           "QEMU's" % name, "direct: %r" % want.raw, "  proxy: %r" % ev.raw)

    # stop from outside the proxy (QEMU's other monitor) -> STOP on all.
    r = direct.cmd("stop")
    want = direct.recv_event("STOP")
    for name, cl in clients.items():
        ev = cl.recv_event("STOP")
        ok(ev.raw == want.raw and "timestamp" in ev,
           "client %s gets STOP caused elsewhere, byte-identical" % name,
           "direct: %r" % want.raw, "  proxy: %r" % ev.raw)
    ok(u.nothing_pending(0.3), "un-negotiated client got no events")

    # A client leaving does not disturb event delivery to the others.
    c.close()

    # A burst of events: all arrive, in QEMU's order, unchanged.
    n = 150
    direct.send(b'{"execute":"cont"}{"execute":"stop"}' * n)
    want = []
    while len(want) < 2 * n:
        want.append(direct.recv_event("RESUME" if len(want) % 2 == 0
                                      else "STOP").raw)
    for name, cl in (("a", a), ("b", b)):
        got = []
        try:
            while len(got) < 2 * n:
                m = cl.recv()
                if m.is_event:
                    got.append(m.raw)
        except qbtest.QBTestError as e:
            qbtest.diag(str(e))
        ok(got == want, "client %s: %d events in order, unchanged"
           % (name, 2 * n), "got %d events" % len(got))
        ok(cl.nothing_pending(0.2), "client %s: nothing extra" % name)

    # Events interleave correctly with replies on a client busy with
    # commands.
    a.send(b'{"execute":"cont","id":1}{"execute":"query-status","id":2}')
    msgs = [a.recv(), a.recv(), a.recv()]
    kinds = [m.get("event") or m.get("id") for m in msgs]
    ok(sorted(map(str, kinds)) == ["1", "2", "RESUME"] and
       kinds.index(1) < kinds.index(2), "reply, reply and event all "
       "delivered, replies in order", repr(kinds))
    r = [m for m in msgs if m.get("id") == 2][0]
    eq(r.get("return", {}).get("running"), True,
       "query-status after cont sees the VM running")

    # The late negotiator only gets events from then on.
    u.negotiate()
    direct.cmd("stop")
    ev = u.recv_event("STOP")
    ok(ev.get("event") == "STOP" and not u.events,
       "late negotiator gets the new STOP and no old events")


qbtest.run(main)

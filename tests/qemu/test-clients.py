#!/usr/bin/env python3
# Many clients at once; clients leaving with commands in flight harm
# nobody; replies never go to the wrong client.

import os
import time

import qbtest
from qbtest import ok, eq


def main(env):
    qemu = env.start_qemu()
    proxy = env.start_proxy(listen=("p1.sock", "p2.sock"))

    # 20 clients, each pipelining 25 commands, all interleaved.
    clients = [proxy.client(i % 2, negotiate=True) for i in range(20)]
    for rnd in range(25):
        for k, cl in enumerate(clients):
            name = "query-status" if (k + rnd) % 2 else "query-name"
            cl.send(b'{"execute": "%s", "id": [%d, %d]}'
                    % (name.encode(), k, rnd))
    bad = []
    for k, cl in enumerate(clients):
        for rnd in range(25):
            r = cl.recv_reply()
            want_status = (k + rnd) % 2 == 1
            if r.get("id") != [k, rnd] or \
                    ("status" in r.get("return", {})) != want_status:
                bad.append((k, rnd, r.raw))
    ok(not bad, "20 clients x 25 pipelined commands: every reply to its "
       "sender, in order", *map(repr, bad[:5]))
    for cl in clients[2:]:
        cl.close()

    a, b = clients[0], clients[1]

    # A client leaves with many commands in flight.
    x = proxy.client(negotiate=True)
    x.send(b'{"execute": "query-qmp-schema", "id": "x"}' * 8)
    x.close()
    r = a.cmd("query-status", id="a1", timeout=30)
    ok(r.get("id") == "a1" and "status" in r.get("return", {}),
       "after a client left with 8 commands in flight, others get their "
       "own replies", repr(r.raw[:200]))
    ok(a.nothing_pending(0.3), "and nothing else (no stray replies)")

    # A client leaves while its command blocks QEMU; others queued behind
    # it get their own replies, not the dead client's.
    fifo = env.path("fifo")
    os.mkfifo(fifo)
    y = proxy.client(negotiate=True)
    y.send_json({"execute": "blockdev-add",
                 "arguments": {"driver": "blkdebug", "node-name": "n",
                               "config": fifo,
                               "image": {"driver": "null-co"}},
                 "id": "a1"})
    time.sleep(0.3)
    a.send(b'{"execute": "query-name", "id": "a1"}')
    b.send(b'{"execute": "query-status", "id": "b1"}')
    time.sleep(0.1)
    y.close()
    time.sleep(0.1)
    fd = os.open(fifo, os.O_WRONLY)
    os.close(fd)
    ra, rb = a.recv_reply(), b.recv_reply()
    ok(ra.get("id") == "a1" and ra.get("return") == {},
       "queued client gets its own reply (query-name {}), not the dead "
       "client's blockdev-add reply with the same id", repr(ra.raw))
    ok(rb.get("id") == "b1" and "status" in rb.get("return", {}),
       "other queued client gets its reply", repr(rb.raw))
    ok(a.nothing_pending(0.3) and b.nothing_pending(0.1),
       "the dead client's reply went nowhere")
    r = a.cmd("query-named-block-nodes", id="nodes")
    ok(any(n.get("node-name") == "n" for n in r.get("return", [])),
       "the dead client's command still ran")

    # Clients that connect and leave at once, before or after negotiating,
    # or in the middle of a message.
    for i in range(30):
        z = qbtest.QMP(proxy.listen[i % 2])
        if i % 3 == 1:
            z.recv()
            z.send(b'{"execute": "qmp_capabilities"}{"execute": "query-st')
        elif i % 3 == 2:
            z.send(b'{"execute": "query-status", "id": 1}')
        z.close()
    ok(proxy.alive(), "proxy survived 30 short-lived clients")
    r = b.cmd("query-status", id="b2")
    eq(r.get("id"), "b2", "existing clients still served")
    ok(b.nothing_pending(0.2), "with nothing unexpected")
    n = proxy.client(1, negotiate=True)
    r = n.cmd("query-status", id="n")
    eq(r.get("id"), "n", "new clients still served")


qbtest.run(main)

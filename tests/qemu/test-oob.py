#!/usr/bin/env python3
# Out-of-band commands overtake a blocked in-band command (as in QEMU's
# own qmp-test: blockdev-add of blkdebug reading its config from a FIFO).

import os
import time

import qbtest
from qbtest import ok, eq


def main(env):
    qemu = env.start_qemu()
    proxy = env.start_proxy()
    a = proxy.client(negotiate=True, oob=True)
    b = proxy.client(negotiate=True)

    # Without oob: exec-oob is refused the QEMU way.
    r = b.cmd("migrate-pause", oob=True, id="no-oob")
    eq((r.err_class, r.err_desc, r.get("id")),
       ("GenericError", "QMP input member 'exec-oob' is unexpected", "no-oob"),
       "exec-oob without oob enabled: GenericError")

    # With oob, a command that does not support it: QEMU's error.
    r = a.cmd("query-status", oob=True, id="qs")
    eq((r.err_class, r.err_desc),
       ("GenericError", "The command query-status does not support OOB"),
       "exec-oob query-status: QEMU says it does not support OOB")

    # An oob command when nothing is blocked.
    r = a.cmd("migrate-pause", oob=True, id=["o", 1.0])
    ok(r.err_class == "GenericError" and "migrate-pause" in str(r.err_desc)
       and b'[\"o\", 1.0]' in r.raw, "exec-oob migrate-pause reaches QEMU, "
       "id echoed", repr(r.raw))

    # Block the main loop.
    fifo = env.path("fifo")
    os.mkfifo(fifo)
    a.send_json({"execute": "blockdev-add",
                 "arguments": {"driver": "blkdebug", "node-name": "n",
                               "config": fifo,
                               "image": {"driver": "null-co"}},
                 "id": "blocked"})
    time.sleep(0.3)
    b.send_json({"execute": "query-status", "id": "b-inband"})
    time.sleep(0.1)
    a.send_json({"exec-oob": "migrate-pause", "id": "oob"})
    first = None
    try:
        first = a.recv_reply()
    except qbtest.QBTestError as e:
        qbtest.diag(str(e))
    ok(first is not None and first.get("id") == "oob" and
       first.err_class == "GenericError" and
       "migrate-pause" in str(first.err_desc),
       "oob reply overtakes the blocked in-band command",
       repr(first.raw if first else None))
    ok(a.nothing_pending(0.2), "blocked command is still blocked")

    # Unblock.
    fd = os.open(fifo, os.O_WRONLY)
    os.close(fd)
    r = a.recv_reply()
    eq((r.get("id"), r.get("return")), ("blocked", {}),
       "blocked command completes after unblocking")
    r = b.recv_reply()
    eq(r.get("id"), "b-inband", "other client's in-band command answered")
    r = a.cmd("query-named-block-nodes", id="nodes")
    ok(any(n.get("node-name") == "n" for n in r.get("return", [])),
       "the blockdev-add really happened in QEMU")

    # Several oob commands while blocked, each answered with its id.
    fifo2 = env.path("fifo2")
    os.mkfifo(fifo2)
    a.send_json({"execute": "blockdev-add",
                 "arguments": {"driver": "blkdebug", "node-name": "n2",
                               "config": fifo2,
                               "image": {"driver": "null-co"}},
                 "id": "blocked2"})
    time.sleep(0.3)
    a.send(b'{"exec-oob": "migrate-pause", "id": 1}'
           b'{"exec-oob": "migrate-pause", "id": 2}'
           b'{"exec-oob": "migrate-pause", "id": 3}')
    got = []
    try:
        for _ in range(3):
            got.append(a.recv_reply().get("id"))
    except qbtest.QBTestError as e:
        qbtest.diag(str(e))
    eq(sorted(got), [1, 2, 3], "three oob commands answered while blocked")
    fd = os.open(fifo2, os.O_WRONLY)
    os.close(fd)
    r = a.recv_reply()
    eq(r.get("id"), "blocked2", "then the in-band one")


qbtest.run(main)

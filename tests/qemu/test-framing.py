#!/usr/bin/env python3
# Input framing by parsing (not lines); output one message per CRLF line.

import time

import qbtest
from qbtest import ok, eq


def main(env):
    qemu = env.start_qemu()
    proxy = env.start_proxy()
    c = proxy.client(negotiate=True)

    # One byte at a time, no newline at all.
    cmd = b'{"execute": "query-status", "id": ["\\u00e9", 12345, 1.5e1]}'
    for i in range(len(cmd)):
        c.send(cmd[i:i + 1])
        time.sleep(0.002)
    r = c.recv_reply()
    eq((r.get("id"), r.get("return", {}).get("status")),
       (["\u00e9", 12345, 15.0], "prelaunch"),
       "command sent one byte at a time")

    # Split in two at every position, including inside escapes and numbers.
    bad = []
    for i in range(1, len(cmd)):
        c.send(cmd[:i])
        time.sleep(0.001)
        c.send(cmd[i:])
        r = c.recv_reply()
        if r.get("id") != ["\u00e9", 12345, 15.0] or "return" not in r:
            bad.append((i, r.raw))
    ok(not bad, "command split at each of %d positions" % (len(cmd) - 1),
       *map(repr, bad[:5]))

    # Several commands in one write, no separators.
    c.send(b'{"execute":"query-status","id":1}{"execute":"query-name","id":2}'
           b'{"execute":"query-version","id":3}')
    rs = [c.recv_reply() for _ in range(3)]
    ok([r.get("id") for r in rs] == [1, 2, 3] and
       "status" in rs[0].get("return", {}) and
       "qemu" in rs[2].get("return", {}),
       "three commands in one write, replies in order",
       *[repr(r.raw) for r in rs])

    # Assorted whitespace between and inside messages.
    c.send(b' \r\n\t{ "execute" :\n"query-status" ,\r\n "id"\t: 4 }\n\n'
           b'  {"execute":"query-name","id":5}\r\n')
    r1, r2 = c.recv_reply(), c.recv_reply()
    ok(r1.get("id") == 4 and "status" in r1.get("return", {}) and
       r2.get("id") == 5, "whitespace and newlines between tokens")

    # Message boundary and the next message's start in the same read,
    # the rest later.
    c.send(b'{"execute":"query-name","id":6}{"execute":"query-st')
    r = c.recv_reply()
    eq(r.get("id"), 6, "first of two messages answered before the second "
       "is complete")
    c.send(b'atus","id":7}')
    r = c.recv_reply()
    ok(r.get("id") == 7 and "status" in r.get("return", {}),
       "second message completed later")

    # Braces and quotes inside strings do not confuse framing.
    c.send(b'{"execute":"query-status","id":"}{\\"]["}')
    r = c.recv_reply()
    eq(r.get("id"), '}{"][', "braces and quotes inside a string id")

    # Many pipelined commands in one write.
    n = 300
    c.send(b"".join(b'{"execute":"query-status","id":%d}' % i
                    for i in range(n)))
    ids = [c.recv_reply().get("id") for _ in range(n)]
    eq(ids, list(range(n)), "%d pipelined commands answered in order" % n)

    # Output: each message is one CRLF-terminated line (the client checks
    # CRLF on every line in strict mode; here a large reply).
    direct = qemu.direct_client()
    c.send(b'{"execute":"query-qmp-schema","id":"s"}')
    raw = c.recv_raw(timeout=10)
    want = direct.cmd("query-qmp-schema", id="s")
    ok(raw.endswith(b"}\r\n") and raw.count(b"\n") == 1 and
       qbtest.parse_msg(raw) == want,
       "large reply (%d bytes) is one CRLF line, equal to QEMU's" % len(raw))

    # Replies and events interleaved: every line is one message.
    c.send(b'{"execute":"cont","id":"c"}{"execute":"stop","id":"s"}'
           b'{"execute":"query-status","id":"q"}')
    lines = []
    try:
        while True:
            lines.append(c.recv_raw(timeout=1.0))
    except qbtest.Timeout:
        pass
    msgs = [qbtest.parse_msg(l) for l in lines]
    ok(all(l.endswith(b"\r\n") and l.count(b"\n") == 1 for l in lines) and
       [m.get("id") for m in msgs if m.is_reply] == ["c", "s", "q"] and
       sorted(m.get("event") for m in msgs if m.is_event) ==
       ["RESUME", "STOP"],
       "replies and events: one CRLF-terminated message per line",
       *map(repr, lines))


qbtest.run(main)

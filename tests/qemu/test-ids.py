#!/usr/bin/env python3
# Replies carry the sender's own id, echoed byte-for-byte.

import re

import qbtest
from qbtest import ok, eq

# (raw id as sent, bytes expected in the reply, parsed value expected)
IDS = [
    (b'"abc"', None, "abc"),
    (b'""', None, ""),
    (b'0', None, 0),
    (b'-1', None, -1),
    (b'42', None, 42),
    (b'1.5', None, 1.5),
    (b'1.0', None, 1.0),
    (b'2.50e+3', None, 2500.0),
    (b'9223372036854775807', None, 9223372036854775807),
    (b'-9223372036854775808', None, -9223372036854775808),
    (b'18446744073709551615', None, 18446744073709551615),
    (b'123456789012345678901234567890', None,
     123456789012345678901234567890),
    (b'null', None, None),
    (b'true', None, True),
    (b'false', None, False),
    (b'{}', None, {}),
    (b'[]', None, []),
    (b'{"b":1,"a":[1,{"c":null}]}', None, {"b": 1, "a": [1, {"c": None}]}),
    (b'[1,"two",3.0,[true]]', None, [1, "two", 3.0, [True]]),
    (b'"\\u00e9\\ud83d\\ude00"', None, "\u00e9\U0001F600"),
    (b'"\xc3\xa9\xf0\x9f\x98\x80"', None, "\u00e9\U0001F600"),
    (b'"q\\"b\\\\s\\/t\\tn\\n"', None, 'q"b\\s/t\tn\n'),
    (b"'abc'", b'"abc"', "abc"),
    (b"'a\"b'", None, 'a"b'),
    (b"'it\\'s'", None, "it's"),
]


def id_bytes_in(raw, idb):
    return re.search(rb'"id"\s*:\s*' + re.escape(idb) + rb'\s*[,}]', raw)


def main(env):
    qemu = env.start_qemu()
    proxy = env.start_proxy()
    c = proxy.client(negotiate=True)

    for raw_id, want_raw, want in IDS:
        c.send(b'{"execute": "query-status", "id": ' + raw_id + b'}')
        r = c.recv_reply()
        ok(r.get("return", {}).get("status") == "prelaunch" and
           type(r.get("id")) is type(want) and r.get("id") == want,
           "id %r: real reply, id parsed back equal" % raw_id, repr(r.raw))
        if want_raw is not None:
            ok(id_bytes_in(r.raw, want_raw),
               "id %r comes back as %r" % (raw_id, want_raw), repr(r.raw))
        elif raw_id.startswith(b"'"):
            pass  # single-quoted: only the value is defined
        else:
            ok(id_bytes_in(r.raw, raw_id),
               "id %r echoed byte-for-byte" % raw_id, repr(r.raw))

    # Whitespace inside a structured id is part of the bytes written.
    spaced = b'[ 1 , { "k" : 2 } ]'
    c.send(b'{"id": ' + spaced + b', "execute": "query-name"}')
    r = c.recv_reply()
    ok(id_bytes_in(r.raw, spaced) and r.get("id") == [1, {"k": 2}],
       "id with inner whitespace echoed byte-for-byte", repr(r.raw))

    # No id -> no id.
    r = c.cmd("query-status")
    ok("return" in r and "id" not in r, "no id in -> no id out", repr(r.raw))

    # Errors carry the id too.
    c.send(b'{"execute": "no-such-command", "id": {"x": [1.25]}}')
    r = c.recv_reply()
    ok(r.err_class == "CommandNotFound" and
       id_bytes_in(r.raw, b'{"x": [1.25]}'),
       "error reply from QEMU carries the id byte-for-byte", repr(r.raw))
    c.send(b'{"execute": "query-name", "arguments": {"bad": 1}, "id": 1.0}')
    r = c.recv_reply()
    ok(r.err_class == "GenericError" and id_bytes_in(r.raw, b'1.0'),
       "argument error carries the id byte-for-byte", repr(r.raw))

    # Pre-negotiation error replies come from the proxy: same rule.
    u = proxy.client()
    u.send(b'{"execute": "query-status", "id": 18446744073709551615}')
    r = u.recv_reply()
    ok(r.err_class == "CommandNotFound" and
       id_bytes_in(r.raw, b"18446744073709551615"),
       "pre-negotiation error carries uint64 id byte-for-byte", repr(r.raw))
    u.send(b'{"execute": "qmp_capabilities", "id": [1.0, "\\u00e9"]}')
    r = u.recv_reply()
    ok(r.get("return") == {} and id_bytes_in(r.raw, b'[1.0, "\\u00e9"]'),
       "qmp_capabilities reply carries the id byte-for-byte", repr(r.raw))

    # Pipelined commands with assorted ids in one write: all answered, in
    # order, each with its own id.
    batch = b""
    expect = []
    for i in range(60):
        raw_id, _, want = IDS[i % len(IDS)]
        name = ["query-status", "query-name", "query-version"][i % 3]
        batch += b'{"execute": "%s", "id": [%d, %s]}' % (name.encode(), i,
                                                          raw_id)
        expect.append((i, want, name))
    c.send(batch)
    good = True
    bad = []
    for i, want, name in expect:
        r = c.recv_reply()
        key = {"query-status": "status", "query-name": None,
               "query-version": "qemu"}[name]
        ret = r.get("return")
        if r.get("id") != [i, want] or not isinstance(ret, dict) or \
                (key and key not in ret):
            good = False
            bad.append(r.raw)
    ok(good, "60 pipelined commands: replies in order, own ids",
       *[repr(b) for b in bad[:5]])

    # Two clients using the same ids at the same time each get their own
    # reply.
    d = proxy.client(negotiate=True)
    for i in range(20):
        c.send(b'{"execute": "query-status", "id": %d}' % i)
        d.send(b'{"execute": "query-name", "id": %d}' % i)
    good = True
    for i in range(20):
        rc, rd = c.recv_reply(), d.recv_reply()
        if rc.get("id") != i or "status" not in rc.get("return", {}) or \
           rd.get("id") != i or "status" in rd.get("return", {"status": 0}):
            good = False
            qbtest.diag("c: %r" % rc.raw, "d: %r" % rd.raw)
            break
    ok(good, "same ids from two clients: each gets its own replies")

    # The same id twice in a row from one client.
    c.send(b'{"execute": "query-status", "id": "dup"}'
           b'{"execute": "query-name", "id": "dup"}')
    r1, r2 = c.recv_reply(), c.recv_reply()
    ok(r1.get("id") == "dup" and "status" in r1.get("return", {}) and
       r2.get("id") == "dup" and "status" not in r2.get("return", {}),
       "duplicate ids from one client: both answered, in order")


qbtest.run(main)

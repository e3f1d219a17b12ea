#!/usr/bin/env python3
# Bad input gets GenericError, never reaches QEMU, and the connection
# stays usable.

import qbtest
from qbtest import ok, eq

# (raw, id required in the error reply, or NOID if none can be required)
NOID = object()
BAD = [
    (b'{"execute": "query-status", "id": 1 ,, }', NOID),
    (b'[1]', NOID),
    (b'[]', NOID),
    (b'1 ', NOID),
    (b'"x"', NOID),
    (b'null ', NOID),
    (b'{}', NOID),
    (b'{"id": 11}', 11),
    (b'{"arguments": {}, "id": 12}', 12),
    (b'{"execute": "query-status", "arguments": [], "id": 13}', 13),
    (b'{"execute": "query-status", "arguments": "x", "id": 14}', 14),
    (b'{"execute": "query-status", "arguments": null, "id": 15}', 15),
    (b'{"execute": "query-status", "foo": 1, "id": 16}', 16),
    (b'{"execute": "query-status", "control": {}, "id": 17}', 17),
    (b'{"execute": 1, "id": 18}', 18),
    (b'{"execute": null, "id": 19}', 19),
    (b'{"execute": ["query-status"], "id": 20}', 20),
    (b'{"execute": "query-status", "exec-oob": "query-name", "id": 21}', 21),
    (b'{"execute": "query-status", "execute": "query-name"}', NOID),
    (b'{"execute": "query-status", "id": 1, "id": 2}', NOID),
    (b'{"execute": "query-status", "id": "\xff"}', NOID),
    (b'{"execute": "query-status", "id": "\xc3"}', NOID),
    (b'{"execute": "query-status", "id": "\xc0\xaf"}', NOID),
    (b'{"execute": "query-status", "id": "\xed\xa0\x80"}', NOID),
    (b'{"execute": "query-status", "id": "\xf8\x88\x80\x80\x80"}', NOID),
    (b'{"execute": "query-status", "\xfe": 1}', NOID),
    (b'{"execute": "query-status", "id": "\\x"}', NOID),
    (b'{"execute": "query-status", "id": "\\u12"}', NOID),
    (b'{"execute": "query-status", "id": "\\ud800"}', NOID),
    (b'{"execute": "query-status", "id": "\\udc00"}', NOID),
    (b'{"execute": "query-status", "id": "a\x01b"}', NOID),
    (b'{"execute": x}', NOID),
    (b'{"execute": "query-status",}', NOID),
    (b'{"execute" "query-status"}', NOID),
    (b'{"execute": "query-status" "id": 1}', NOID),
    (b'{"execute": "query-status", "id": 01}', NOID),
    (b'{"execute": "query-status", "id": 1.}', NOID),
    (b'{"execute": "query-status", "id": tru}', NOID),
    (b'{"execute": "query-status", "id": [1,]}', NOID),
    (b'}', NOID),
    (b']', NOID),
    (b'{"execute": "query-status", "id": ' + b'[' * 2000 + b']' * 2000 + b'}',
     NOID),
]


def main(env):
    qemu = env.start_qemu()
    proxy = env.start_proxy()
    c = proxy.client(negotiate=True)

    for item in BAD:
        raw, want_id = item[0], item[1]
        try:
            errs, sync = c.probe(raw)
        except qbtest.QBTestError as e:
            ok(False, "bad input %r: answered, connection usable"
               % raw[:70], str(e))
            # Start over on a fresh client.
            c.close()
            c = proxy.client(negotiate=True)
            continue
        good = errs and all(m.err_class == "GenericError" for m in errs) and \
            "return" in sync and sync.get("return", {}).get("status")
        if want_id is not NOID:
            good = good and all(m.get("id") == want_id for m in errs)
        ok(good, "bad input %r: GenericError%s, then query-status works"
           % (raw[:70], "" if want_id is NOID else " with id"),
           *[repr(m.raw) for m in errs])

    # Errors go only to the sender.
    d = proxy.client(negotiate=True)
    c.send(b'[1]')
    r = c.recv_reply()
    eq(r.err_class, "GenericError", "error for [1]")
    ok(d.nothing_pending(0.3), "other client sees nothing of it")

    # Bad input must not be executed: run the VM, send broken `stop`
    # commands, check it still runs and QEMU emitted no STOP.
    direct = qemu.direct_client()
    r = c.cmd("cont", id="cont")
    direct.recv_event("RESUME")
    bad_stops = [
        b'{"execute": "stop", "foo": 1}',
        b'{"execute": "stop", "arguments": []}',
        b'{"execute": "stop", "arguments": 1}',
        b'{"execute": "stop", "control": {"run-oob": false}}',
        b'{"execute": "query-status", "execute": "stop"}',
        b'{"execute": "stop", "execute": "stop"}',
        b'{"execute": "stop", "id": "\xff"}',
        b'{"execute": "stop", "id": "\\q"}',
        b'{"execute": "stop", "id": 1 2}',
        b'["execute", "stop"]',
        b'{"exec-oob": "stop"}',
    ]
    all_err = True
    for raw in bad_stops:
        errs, sync = c.probe(raw)
        if not errs or any(m.err_class != "GenericError" for m in errs):
            all_err = False
            qbtest.diag("%r -> %r" % (raw, [m.raw for m in errs]))
    ok(all_err, "malformed stop commands all get GenericError")
    r = direct.cmd("query-status")
    eq(r.get("return", {}).get("running"), True,
       "VM still running: none of them was executed")
    ok(direct.nothing_pending(0.3) and not direct.events,
       "QEMU emitted no STOP event")

    # A good command still works and executes.
    r = c.cmd("stop", id="ok")
    eq(r.get("return"), {}, "well-formed stop works")
    ev = direct.recv_event("STOP")
    ok(ev.get("event") == "STOP", "and QEMU executed it")

    # Invalid bytes before negotiation: same rules.
    u = proxy.client()
    errs, sync = u.probe(b'{"execute": "qmp_capabilities", "id": "\xff"}',
                         negotiated=False)
    ok(errs and all(m.err_class == "GenericError" for m in errs),
       "invalid UTF-8 before negotiation: GenericError",
       *[repr(m.raw) for m in errs])
    r = u.cmd("query-status")
    eq(r.err_class, "CommandNotFound", "and the client is still not "
       "negotiated")
    u.negotiate()
    r = u.cmd("query-status", id=1)
    ok("return" in r, "negotiation works afterwards")


if __name__ == "__main__":
    qbtest.run(main)

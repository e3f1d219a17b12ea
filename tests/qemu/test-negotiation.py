#!/usr/bin/env python3
# Greeting and per-client capabilities negotiation.

import qbtest
from qbtest import ok, eq

EXPECTING = "Expecting capabilities negotiation with 'qmp_capabilities'"
COMPLETE = "Capabilities negotiation is already complete, command ignored"


def main(env):
    qemu = env.start_qemu()
    proxy = env.start_proxy()
    direct = qemu.direct_client(negotiate=False)

    a = proxy.client()
    g = a.greeting
    eq(g, direct.greeting, "greeting equals QEMU's own greeting")
    ok(isinstance(g.get("QMP"), dict) and
       isinstance(g["QMP"].get("version", {}).get("qemu", {}).get("major"), int),
       "greeting carries QEMU's version")
    eq(g.get("QMP", {}).get("capabilities"), ["oob"],
       "greeting advertises capabilities [\"oob\"]")
    ok(g.raw.endswith(b"}\r\n") and g.raw.count(b"\n") == 1,
       "greeting is one line terminated by CRLF", repr(g.raw))

    # Before negotiation: every other command is refused, with the id.
    r = a.cmd("query-status", id="pre")
    eq((r.err_class, r.err_desc, r.get("id")),
       ("CommandNotFound", EXPECTING, "pre"),
       "query-status before negotiation: CommandNotFound, with id")
    r = a.cmd("query-status")
    eq((r.err_class, r.err_desc, "id" in r),
       ("CommandNotFound", EXPECTING, False),
       "... and without id: no id in the reply")
    r = a.cmd("quit", id=2)
    eq(r.err_class, "CommandNotFound", "quit before negotiation is refused")
    ok(qemu.alive(), "QEMU did not quit")
    r = a.cmd("migrate-pause", oob=True, id=3)
    eq((r.err_class, r.err_desc, r.get("id")),
       ("GenericError", "QMP input member 'exec-oob' is unexpected", 3),
       "exec-oob before negotiation: GenericError")

    # Bad negotiation attempts leave the client un-negotiated.
    r = a.cmd("qmp_capabilities", {"enable": ["foo"]}, id=4)
    eq((r.err_class, r.get("id")), ("GenericError", 4),
       "qmp_capabilities {enable: [foo]}: GenericError")
    eq(r.err_desc, "Parameter 'null' does not accept value 'foo'",
       "... with QEMU's exact message")
    r = a.cmd("qmp_capabilities", {"enable": "oob"}, id=5)
    eq((r.err_class, r.err_desc),
       ("GenericError", "Invalid parameter type for 'enable', expected: array"),
       "qmp_capabilities {enable: \"oob\"}: GenericError")
    r = a.cmd("qmp_capabilities", {"foo": 1}, id=6)
    eq((r.err_class, r.err_desc),
       ("GenericError", "Parameter 'foo' is unexpected"),
       "qmp_capabilities {foo: 1}: GenericError")
    r = a.cmd("query-status", id=7)
    eq(r.err_desc, EXPECTING, "still not negotiated after failed attempts")

    # A second client, not negotiated, must see no events while the first
    # one (once negotiated) makes QEMU emit some.
    b = proxy.client()
    r = a.cmd("qmp_capabilities", id="neg")
    eq((r.get("return"), r.get("id")), ({}, "neg"), "qmp_capabilities works")
    r = a.cmd("qmp_capabilities", id="again")
    eq((r.err_class, r.err_desc, r.get("id")),
       ("CommandNotFound", COMPLETE, "again"),
       "second qmp_capabilities: CommandNotFound, already complete")
    r = a.cmd("query-status", id=8)
    eq(r.get("return", {}).get("status"), "prelaunch",
       "query-status works after negotiation (real QEMU state)")
    r = a.cmd("migrate-pause", oob=True, id=9)
    eq(r.err_desc, "QMP input member 'exec-oob' is unexpected",
       "exec-oob refused when oob was not enabled")

    r = a.cmd("cont", id="cont")
    eq(r.get("return"), {}, "cont")
    ev = a.recv_event("RESUME")
    ok(ev.get("event") == "RESUME", "negotiated client gets RESUME")
    ok(b.nothing_pending(0.5), "un-negotiated client gets no event")
    r = b.cmd("query-status", id="b")
    eq(r.err_desc, EXPECTING, "other client is still not negotiated")
    b.negotiate()
    r = a.cmd("stop")
    ev = b.recv_event("STOP")
    ok(ev.get("event") == "STOP", "after negotiating, it gets STOP")
    ok(not [e for e in b.events if e.get("event") == "RESUME"],
       "... but not the RESUME from before its negotiation")

    # oob negotiation on a third client; enable may repeat "oob".
    c = proxy.client()
    r = c.cmd("qmp_capabilities", {"enable": ["oob", "oob"]}, id="o")
    eq(r.get("return"), {}, "qmp_capabilities {enable: [oob, oob]} works")
    r = c.cmd("migrate-pause", oob=True, id="oob")
    ok(r.err_class == "GenericError" and
       "migrate-pause" in str(r.err_desc) and r.get("id") == "oob",
       "exec-oob reaches QEMU once oob is enabled", r.raw)

    # Empty enable list is a plain negotiation.
    d = proxy.client()
    r = d.cmd("qmp_capabilities", {"enable": []}, id="e")
    eq(r.get("return"), {}, "qmp_capabilities {enable: []} works")
    r = d.cmd("migrate-pause", oob=True, id="x")
    eq(r.err_desc, "QMP input member 'exec-oob' is unexpected",
       "... without enabling oob")


qbtest.run(main)

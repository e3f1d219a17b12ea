#!/usr/bin/env python3
# Messages are forwarded as raw bytes: values beyond int64, big replies,
# query-commands and friends come through intact.

import re

import qbtest
from qbtest import ok, eq


def main(env):
    qemu = env.start_qemu()
    proxy = env.start_proxy()
    c = proxy.client(negotiate=True)
    direct = qemu.direct_client()

    # uint64 beyond int64 in both directions.
    big = b"9223372036854775808"
    c.send(b'{"execute": "migrate-set-parameters", '
           b'"arguments": {"max-bandwidth": ' + big + b'}, "id": "set"}')
    r = c.recv_reply()
    eq((r.get("return"), r.get("id")), ({}, "set"),
       "migrate-set-parameters max-bandwidth 2^63 accepted")
    r = c.cmd("query-migrate-parameters", id="get")
    m = re.search(rb'"max-bandwidth"\s*:\s*(-?[0-9.eE+]+)', r.raw)
    eq(m and m.group(1), big, "query-migrate-parameters returns "
       "max-bandwidth 9223372036854775808, digits intact")
    rd = direct.cmd("query-migrate-parameters")
    eq(rd.get("return", {}).get("max-bandwidth"), 9223372036854775808,
       "QEMU really has that value")

    big = b"18446744073709551615"
    c.send(b'{"execute": "migrate-set-parameters", '
           b'"arguments": {"max-bandwidth": ' + big + b'}, "id": "set2"}')
    r = c.recv_reply()
    r = c.cmd("query-migrate-parameters", id="get2")
    m = re.search(rb'"max-bandwidth"\s*:\s*(-?[0-9.eE+]+)', r.raw)
    eq(m and m.group(1), big, "max-bandwidth 2^64-1 intact")

    # Same answers as QEMU gives directly, for big and typical commands.
    for name, args in [("query-commands", None),
                       ("query-qmp-schema", None),
                       ("query-version", None),
                       ("query-status", None),
                       ("query-migrate-parameters", None),
                       ("query-cpus-fast", None),
                       ("qom-list", {"path": "/machine"}),
                       ("query-command-line-options", {"option": "machine"}),
                       ("human-monitor-command",
                        {"command-line": "info registers"})]:
        want = direct.cmd(name, args, id="x", timeout=10)
        got = c.cmd(name, args, id="x", timeout=10)
        if name == "query-commands":
            own = [x["name"] for x in got.get("return", [])
                   if x.get("name", "").startswith("qbranch-")]
            ok(sorted(own) == sorted(qbtest.QB_COMMANDS),
               "query-commands adds the proxy's own commands", repr(own))
        cmp = qbtest.drop_qbranch_commands(got)
        ok(cmp == want and "return" in got,
           "%s: same reply as direct (%d bytes)" % (name, len(got.raw)),
           "direct: %r" % want.raw[:300], " proxy: %r" % got.raw[:300])
        if name == "query-commands":
            names = {x.get("name") for x in got.get("return", [])}
            ok({"qmp_capabilities", "query-status", "getfd", "add-fd",
                "migrate-pause", "quit"} <= names,
               "query-commands lists QEMU's commands (%d)" % len(names))

    # Strings with escapes and non-ASCII content go through both ways.
    text = "\u00e9\u4e2d\U0001F600\"q\"\\b\tt\x01c"
    args = {"command-line": "nosuch" + text}
    want = direct.cmd("human-monitor-command", args, id=text)
    got = c.cmd("human-monitor-command", args, id=text)
    ok(got == want and got.get("id") == text,
       "HMP command with escaped unicode arguments: same as direct",
       repr(want.raw), repr(got.raw))

    # A command whose reply is large and an event at the same time.
    c.send(b'{"execute": "query-qmp-schema", "id": "s"}'
           b'{"execute": "cont", "id": "c"}')
    msgs = [c.recv(timeout=10) for _ in range(3)]
    ids = [m.get("id") for m in msgs if m.is_reply]
    ok(ids == ["s", "c"] and any(m.get("event") == "RESUME" for m in msgs),
       "large reply then cont: both replies in order plus RESUME")


qbtest.run(main)

#!/usr/bin/env python3
# The proxy answers like QEMU: one probe list goes to QEMU directly (its
# second monitor, fresh connection) and through qbranchd (fresh client);
# the answers must be the same.
#
# Compared: parsed JSON, "timestamp" members dropped, numbers by value
# (qbranchd echoes ids byte-for-byte, QEMU re-serialises them). For
# QEMU's "JSON parse error" answers only the class is compared (the
# proxy's parser may split the garbage differently and may add the id).

import qbtest
from qbtest import ok, diag

# (stage, raw bytes). stage: "pre" = before negotiation, "post" = after a
# plain qmp_capabilities, "oob" = after qmp_capabilities with oob.
PRE = [
    b'{"execute": "query-status", "id": 1}',
    b'{"execute": "query-status"}',
    b'{"execute": "nope", "id": "x"}',
    b'{"execute": "quit", "id": "q"}',
    b'{"exec-oob": "migrate-pause", "id": 3}',
    b'[1]',
    b'"x"',
    b'1 ',
    b'{"id": 5}',
    b'{"execute": 1, "id": 6}',
    b'{"execute": "query-status", "arguments": [], "id": 7}',
    b'{"execute": "query-status", "foo": 1, "id": 8}',
    b'{"execute": "query-status", "id": {"a": [1, 2.5, null]}}',
    b'{"execute": "query-status", "id": 18446744073709551615}',
    b"{'execute': 'query-status', 'id': 'sq'}",
    b'{"execute": x}',
    b'{"execute": "query-status", "id": 1, "id": 2}',
    b'{"execute": "query-status", "id": "\xff"}',
    b'{"execute": "query-status", "id": "\\x"}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": ["foo"]}, "id": 9}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}, "id": 10}',
    b'{"execute": "qmp_capabilities", "arguments": {"foo": 1}, "id": 11}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": [1]}, "id": 12}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": null}, "id": 13}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": ["foo", "oob"]}}',
    b'{"execute": "qmp_capabilities", "arguments": [], "id": 14}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"], "x": 1}}',
    b'{"execute": "qmp_capabilities", "control": {}, "id": 15}',
    b'{"exec-oob": "qmp_capabilities", "id": 16}',
    b'{"execute": "qmp_capabilities", "exec-oob": "qmp_capabilities"}',
]

NEGOTIATE = b'{"execute": "qmp_capabilities", "id": "neg"}'
NEGOTIATE_OOB = b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": "neg"}'

IDS = [b'"s"', b'""', b'0', b'-1', b'42', b'1.5', b'1.0', b'-0', b'1e3',
       b'9223372036854775807', b'-9223372036854775808',
       b'18446744073709551615', b'18446744073709551616',
       b'123456789012345678901234567890', b'null', b'true', b'false',
       b'{}', b'[]', b'{"x": "y", "n": [1, {"a": []}]}', b'[1, [2, [3]]]',
       b'"\\u00e9\\ud83d\\ude00"', b'"\xc3\xa9\xf0\x9f\x98\x80"',
       b'"tab\\tquote\\"back\\\\slash\\/"', b"'single'", b"'a\"b'",
       b"'it\\'s'"]

POST = [b'{"execute": "query-status", "id": %s}' % i for i in IDS] + [
    b'{"execute": "query-status"}',
    b'{"execute": "query-name", "id": 1}',
    b'{"execute": "query-version", "id": 1}',
    b'{"execute": "query-kvm", "id": 1}',
    b'{"execute": "query-uuid", "id": 1}',
    b'{"execute": "query-commands", "id": 1}',
    b'{"execute": "query-qmp-schema", "id": 1}',
    b'{"execute": "query-migrate-parameters", "id": 1}',
    b'{"execute": "query-block", "id": 1}',
    b'{"execute": "query-cpus-fast", "id": 1}',
    b'{"execute": "query-hotpluggable-cpus", "id": 1}',
    b'{"execute": "query-balloon", "id": 1}',
    b'{"execute": "query-fdsets", "id": 1}',
    b'{"execute": "human-monitor-command", "arguments": {"command-line": "info version"}, "id": 1}',
    b'{"execute": "query-name", "arguments": {"x": 1}, "id": 1}',
    b'{"execute": "query-name", "arguments": {}, "id": 1}',
    b'{"execute": "device_add", "arguments": {"driver": "no-such-device"}, "id": 1}',
    b'{"execute": "migrate-set-parameters", "arguments": {"downtime-limit": 2000001}, "id": 1}',
    b'{"execute": "nope", "id": [1]}',
    b'{"execute": "nope"}',
    b'{"exec-oob": "migrate-pause", "id": 3}',
    b'{"execute": "query-status", "exec-oob": "query-name", "id": 4}',
    b'[1]',
    b'"x"',
    b'{"id": 5}',
    b'{"execute": 1, "id": 6}',
    b'{"execute": "query-status", "arguments": [], "id": 7}',
    b'{"execute": "query-status", "arguments": null, "id": 7}',
    b'{"execute": "query-status", "foo": 1, "id": 8}',
    b'{"execute": "query-status", "control": {}, "id": 8}',
    b'{"execute": x}',
    b'{"execute": "query-status",}',
    b'{"execute": "query-status", "id": 1, "id": 2}',
    b'{"execute": "query-status", "id": "\xff"}',
    b'{"execute": "query-status", "id": "\xc0\xaf"}',
    b'{"execute": "query-status", "id": "\xed\xa0\x80"}',
    b'{"execute": "query-status", "id": "\\x"}',
    b'{"execute": "query-status", "id": "\\ud800"}',
    b'{"execute": "query-status", "id": 01}',
    b'{"execute": "qmp_capabilities", "id": 20}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": 21}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": ["foo"]}, "id": 22}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}, "id": 23}',
    b'{"execute": "qmp_capabilities", "arguments": {"foo": 1}, "id": 24}',
]

OOB = [
    b'{"exec-oob": "migrate-pause", "id": "o1"}',
    b'{"exec-oob": "migrate-pause"}',
    b'{"exec-oob": "query-status", "id": "o2"}',
    b'{"exec-oob": "nope", "id": "o3"}',
    b'{"exec-oob": "qmp_capabilities", "id": "o4"}',
    b'{"exec-oob": 1, "id": "o5"}',
    b'{"exec-oob": "migrate-pause", "control": {"run-oob": true}, "id": "o6"}',
    b'{"execute": "query-status", "exec-oob": "query-name", "id": "o7"}',
    b'{"execute": "query-status", "id": 1.0}',
    b'{"execute": "migrate-pause", "id": "o8"}',
]


def same(a, b):
    """JSON equality with numbers compared by value, bool != number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, float) or isinstance(b, float):
            return float(a) == float(b)
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def is_parse_error(m):
    return m.err_class == "GenericError" and \
        str(m.err_desc).startswith("JSON parse error")


def run_side(connect):
    """Run all stages; return (greeting, [(stage, probe, replies)])."""
    results = []
    c = connect()
    greeting = c.greeting
    for p in PRE:
        out, _ = c.probe(p, negotiated=False)
        results.append(("pre", p, out))
    out, _ = c.probe(NEGOTIATE, negotiated=True)
    results.append(("pre", NEGOTIATE, out))
    for p in POST:
        out, _ = c.probe(p)
        results.append(("post", p, out))
    c.close()
    c = connect()
    out, _ = c.probe(NEGOTIATE_OOB, negotiated=True)
    results.append(("pre", NEGOTIATE_OOB, out))
    for p in OOB:
        out, _ = c.probe(p)
        results.append(("oob", p, out))
    c.close()
    return greeting, results


def short(b, n=90):
    r = repr(b)
    return r if len(r) <= n else r[:n] + "..."


def main(env):
    qemu = env.start_qemu()
    proxy = env.start_proxy()

    g_direct, direct = run_side(lambda: qemu.direct_client(negotiate=False))
    g_proxy, proxied = run_side(lambda: proxy.client())

    ok(same(g_proxy, g_direct), "greeting is QEMU's greeting",
       "direct: %r" % g_direct.raw, " proxy: %r" % g_proxy.raw)

    for (stage, probe, want), (_, _, got) in zip(direct, proxied):
        text = "%s %s" % (stage, short(probe))
        dump = ["direct: %r" % [m.raw for m in want],
                " proxy: %r" % [m.raw for m in got]]
        if want and all(is_parse_error(m) for m in want):
            ok(got and all(m.err_class == "GenericError" and
                           set(m.keys()) <= {"error", "id"} for m in got),
               text + " (parse error: class only)", *dump)
            continue
        want_n = [qbtest.drop_timestamps(m) for m in want]
        # The proxy's own commands join query-commands; the rest agrees.
        got_n = [qbtest.drop_qbranch_commands(qbtest.drop_timestamps(m))
                 for m in got]
        ok(len(want_n) == len(got_n) and
           all(same(a, b) for a, b in zip(want_n, got_n)), text, *dump)

    ok(len(direct) == len(proxied), "same number of probes answered")


qbtest.run(main)

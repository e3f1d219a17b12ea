#!/usr/bin/env python3
# qbranch, the command-line client, against a real QEMU behind qbranchd:
# every verb; --json output compared with the proxy's own answers; exit
# statuses 0 (success), 1 (QMP error), 2 (usage), 3 (unreachable) and
# their messages and hints; guest data after create, revert, switch and
# delete done by the client; the socket rules; bash completion.

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import qbtest
from qbtest import ok, eq, Disk, MiB, SnapVM, FakeProxy, qbranch, \
    CMD_TIMEOUT

A, B, C, D, E = 0xa1, 0xb2, 0xc3, 0xd4, 0xe5
HERE = os.path.dirname(os.path.abspath(__file__))
COMPLETION = os.path.join(HERE, "..", "..", "contrib", "bash-completion",
                          "qbranch")


def failed_with(r, rc, text, *patterns):
    """One test point: exit status rc, each pattern found in stderr, a
    hint line for exit statuses 1 and 3, nothing on stdout."""
    good = r.rc == rc and not r.out
    missing = [p for p in patterns if not re.search(p, r.err)]
    if rc in (1, 3) and not re.search(r"^hint: \S", r.err, re.M):
        missing.append("hint: line")
    if rc == 2 and "usage: qbranch" not in r.err and \
            "hint: see 'qbranch help'" not in r.err:
        missing.append("usage or hint")
    return ok(good and not missing, "%s: exit %d%s" % (
        text, rc, "" if not patterns else ", says " + " / ".join(patterns)),
        repr(r), "missing: %s" % missing if missing else "")


def one_line_json(r, text):
    """stdout is exactly one JSON document on one line; returns it."""
    ok(r.rc == 0 and r.out.endswith("\n") and r.out.count("\n") == 1,
       "%s: exit 0, one line of JSON" % text, repr(r))
    try:
        return json.loads(r.out)
    except ValueError:
        return None


def fake_server(path, reply):
    """A unix socket that accepts one connection and writes reply (bytes),
    or closes at once when reply is None. Returns the thread."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        if reply is not None:
            conn.sendall(reply)
            time.sleep(0.5)
        conn.close()
        srv.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def complete(words, env=None):
    """COMPREPLY of the bash completion for COMP_WORDS = words (the last
    one being completed)."""
    script = ('source "$1"; shift; COMP_WORDS=("$@"); '
              'COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _qbranch; '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    r = subprocess.run(["bash", "-c", script, "bash", COMPLETION] + words,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=CMD_TIMEOUT, env=env)
    return [w for w in r.stdout.decode().splitlines() if w]


def unreachable(env, sock):
    """Exit status 3 and its messages, and where the socket is looked for."""
    missing = env.path("none.sock")
    r = qbranch("list", sock=missing)
    failed_with(r, 3, "no socket", re.escape(missing),
                "No such file", "-c SOCKET", "QBRANCH_SOCKET")

    name = "qbt-no-such-vm-%d" % os.getpid()
    r = qbranch("status", sock=name)
    failed_with(r, 3, "-c NAME without '/'",
                re.escape("/run/qbranchd/%s.sock" % name))
    r = qbranch("status", env={"QBRANCH_SOCKET": name})
    failed_with(r, 3, "QBRANCH_SOCKET=NAME",
                re.escape("/run/qbranchd/%s.sock" % name))
    if not os.path.exists("/run/qbranchd/qbranchd.sock"):
        r = qbranch("status", env={"QBRANCH_SOCKET": None})
        failed_with(r, 3, "no -c, no QBRANCH_SOCKET: the default socket",
                    re.escape("/run/qbranchd/qbranchd.sock"))

    r = qbranch("status", "--json", env={"QBRANCH_SOCKET": sock})
    ok(r.rc == 0 and r.json().get("socket") == sock,
       "QBRANCH_SOCKET=PATH is used", repr(r))
    r = qbranch("status", "--json", sock=sock,
                env={"QBRANCH_SOCKET": missing})
    ok(r.rc == 0, "-c wins over QBRANCH_SOCKET", repr(r))
    r = qbranch("status", "--json", "-c", sock,
                env={"QBRANCH_SOCKET": missing})
    ok(r.rc == 0, "-c after the verb works too", repr(r))

    # A socket file nobody listens on (bound, never listening).
    stale = env.path("stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    r = qbranch("list", sock=stale)
    s.close()
    failed_with(r, 3, "nobody listens", "refused", re.escape(stale))

    # Something that is not qbranchd.
    other = env.path("other.sock")
    t = fake_server(other, b'{"hello": "world"}\r\n')
    r = qbranch("list", sock=other)
    t.join(5)
    failed_with(r, 3, "a server that does not greet with QMP",
                "does not speak QMP")
    closer = env.path("closer.sock")
    t = fake_server(closer, None)
    r = qbranch("list", sock=closer)
    t.join(5)
    failed_with(r, 3, "a server that closes at once", "no greeting",
                "closed the connection")
    r = qbranch("list", sock="/" + "x" * 120)
    failed_with(r, 3, "a socket path too long for sun_path", "too long")


def usage(q):
    """Exit status 2: nothing reaches the proxy."""
    r = qbranch()
    failed_with(r, 2, "no verb", "no verb given")
    r = qbranch("frobnicate")
    failed_with(r, 2, "unknown verb", "unknown verb 'frobnicate'",
                "qbranch help")
    r = qbranch("--bogus")
    failed_with(r, 2, "unknown global option", "bogus")
    cases = [
        (["create", "--bogus"], "unrecognized option"),
        (["create", "a", "b"], "unexpected argument 'b'"),
        (["create", "--disk", "novalue"], "DEVICE=FILE"),
        (["create", "--disk", "=x"], "DEVICE=FILE"),
        (["create", "--description"], "requires an argument"),
        (["revert"], "missing the snapshot NAME"),
        (["revert", "s", "--running", "--paused"], "exclude each other"),
        (["switch"], "missing the BRANCH"),
        (["switch", "a", "b"], "unexpected argument 'b'"),
        (["delete"], "missing the snapshot NAME"),
        (["delete", "s", "--children", "--metadata"], "exclude each other"),
        (["branch-delete"], "missing the BRANCH"),
        (["edit", "s"], "nothing to change"),
        (["edit"], "missing"),
        (["info"], "missing the snapshot NAME"),
        (["parent", "a", "b"], "unexpected argument"),
        (["list", "--tree", "--roots"], "--tree goes with --from only"),
        (["list", "--roots", "--from", "x"], "exclude each other"),
        (["list", "extra"], "unexpected argument"),
        (["tree", "--dot", "--svg", "x.svg"], "exclude each other"),
        (["tree", "--from", "x", "--dot"], "text view only"),
        (["status", "--tree"], "unrecognized option"),
        (["qmp"], "missing the command"),
        (["qmp", "{bad"], "not valid JSON"),
        (["qmp", "[1, 2]"], "must be a JSON object"),
        (["qmp", '"query-status"'], "must be a JSON object"),
        (["qmp", "query-status", "[]"], "must be a JSON object"),
        (["qmp", "query-status", "{", "x"], "unexpected argument"),
        (["qmp", '{"execute": "query-status"}', "{}"], "no arguments"),
        (["events", "x"], "unexpected argument"),
        (["create", "--description", "caf\udce9"], "not valid UTF-8"),
        (["revert", "x\udcff"], "not valid UTF-8"),
        (["qmp", "query-\udcff"], "not valid UTF-8"),
    ]
    for args, pattern in cases:
        r = q(*args)
        failed_with(r, 2, "usage: qbranch %s" % " ".join(args).encode(
            "utf-8", "backslashreplace").decode(), re.escape(pattern))

    r = qbranch("--help")
    verbs = ["create", "revert", "switch", "delete", "branch-delete", "edit",
             "list", "tree", "branches", "info", "current", "parent",
             "disks", "status", "orphans", "qmp", "events"]
    ok(r.rc == 0 and all(re.search(r"^  %s " % v, r.out, re.M)
                         for v in verbs) and "__complete" not in r.out,
       "--help lists every verb (not the hidden one)", repr(r))
    eq(qbranch("help").out, r.out, "'qbranch help' is --help")
    helps = [(v, qbranch(v, "--help")) for v in verbs]
    bad = [repr(h) for v, h in helps
           if h.rc != 0 or not h.out.startswith("usage: qbranch [-c SOCKET] "
                                                + v)]
    ok(not bad, "every verb takes --help: usage on stdout, exit 0", *bad)
    r = qbranch("help", "revert")
    ok(r.rc == 0 and "--discard" in r.out, "help VERB", repr(r))
    r = qbranch("--version")
    ok(r.rc == 0 and re.match(r"^qbranch \d", r.out), "--version", repr(r))


def robustness(env):
    """Odd answers from a fake qbranchd: exact big integers, events and
    foreign replies skipped, garbage and lost connections reported (exit
    3), mistyped and looping query results shown without a crash."""
    path = env.path("odd.sock")
    loop = {"snapshots": [
        {"name": "r", "parent": None, "children": ["r", "x", 7]},
        {"name": "a", "parent": "b", "children": ["b"]},
        {"name": "b", "parent": "a", "children": ["a"], "created": "x",
         "size": -1, "memory": "yes", "disks": "none"}],
        "current": 5}
    fp = FakeProxy(path, {
        "big": b'{"return": {"n": 18446744073709551615, "m": -1}}',
        "evented": b'{"event": "X", "data": {}, "timestamp": {"seconds": 1,'
                   b' "microseconds": 2}}\r\n{"return": 1, "id": "other"}'
                   b'\r\n{"return": [2]}',
        "garbage": b"this is not json",
        "array": b"[1, 2]",
        "badid": b'{"error": "boom"}',
        "gone": None,
        "qbranch-query-snapshots": loop,
        "qbranch-query-branches": {"not": "an array"},
        "qbranch-query-disks": [{"device": 1, "chain": [{"file": None}]}],
        "query-status": [],
    })
    try:
        r = qbranch("qmp", "big", sock=path)
        eq((r.rc, r.out), (0, '{"n": 18446744073709551615, "m": -1}\n'),
           "qmp: an integer past INT64_MAX is printed exactly as sent")
        r = qbranch("qmp", "evented", sock=path)
        eq((r.rc, r.out), (0, "[2]\n"), "events and replies to other ids "
           "are skipped while waiting for the reply")
        failed_with(qbranch("qmp", "garbage", sock=path), 3,
                    "a reply that is not JSON", "unreadable")
        failed_with(qbranch("qmp", "array", sock=path), 3,
                    "a reply that is not an object", "not a JSON object")
        failed_with(qbranch("qmp", "badid", sock=path), 1,
                    "an error that is not an object", "qbranch: ")
        failed_with(qbranch("qmp", "gone", sock=path), 3,
                    "the connection lost while waiting", "closed the "
                    "connection", "qbranch status")
        for args in (["tree"], ["tree", "--dot"], ["list"],
                     ["list", "--from", "a"], ["list", "--leaves"],
                     ["list", "--tree"], ["info", "b"], ["info", "r"],
                     ["branches"], ["current"], ["parent", "a"],
                     ["disks"], ["status"], ["status", "--json"]):
            r = qbranch(*args, sock=path)
            ok(r.rc in (0, 1), "mistyped or looping answers: %s exits "
               "%s, no crash" % (" ".join(args), r.rc), repr(r))
        r = qbranch("tree", sock=path)
        lines = r.out.splitlines()
        ok(r.rc == 0 and 1 <= len(lines) <= 5 and lines[0].startswith("r "),
           "a snapshot that is its own child: the tree stops (depth "
           "bounded by the number of snapshots)", repr(r))
    finally:
        fp.close()


def main(env):
    if not qbtest.QBRANCH:
        qbtest.skip_all("QBRANCH is not set")
        return
    vm = SnapVM(env, disks=[Disk("vda", image="vm.qcow2")], cont=True)
    sock = env.path("proxy.sock")
    stem = env.path("vm")

    def q(*args, **kw):
        return qbranch(*args, sock=sock, **kw)

    unreachable(env, sock)
    usage(q)
    robustness(env)

    # ---- the empty tree --------------------------------------------------
    eq(one_line_json(q("list", "--json"), "list --json"),
       vm.query_snapshots(), "list --json is qbranch-query-snapshots")
    eq(one_line_json(q("branches", "--json"), "branches --json"),
       vm.query_branches(), "branches --json is qbranch-query-branches")
    eq(one_line_json(q("disks", "--json"), "disks --json"),
       vm.query_disks(), "disks --json is qbranch-query-disks")
    r = q("current")
    failed_with(r, 1, "current before any snapshot", "no current snapshot",
                "qbranch create")
    r = q("current", "--json")
    ok(r.rc == 0 and r.out == "null\n", "current --json: null", repr(r))
    r = q("list")
    ok(r.rc == 0 and r.out == "", "list with no snapshots prints nothing",
       repr(r))
    r = q("tree")
    eq((r.rc, r.out), (0, "[main] *\n"),
       "tree with no snapshots: main, attached, on the original disks")
    st = vm.status()
    r = q("status", "--json")
    eq(r.json() if r.rc == 0 else r,
       {"status": st["status"], "running": st["running"], "branch": "main",
        "current": None, "snapshots": 0, "socket": sock},
       "status --json before any snapshot")

    # ---- create ------------------------------------------------------------
    vm.write(A, 0)
    before = {dev: vm.top_file(dev) for dev in vm.devs}
    r = q("create", "s1", "--description", "first one", "--json")
    s1 = one_line_json(r, "create s1 --json")
    if s1:
        vm._created(s1, before)
    q1 = {s["name"]: s for s in vm.query_snapshots()["snapshots"]}
    eq(s1, q1.get("s1"), "create --json prints the snapshot as the query "
       "shows it")
    eq((s1 or {}).get("description"), "first one", "--description is sent")
    vm.check_data("after create s1: reads A")
    vm.check_tree("after create s1: tree as expected")

    vm.write(B, 0)
    vm.write(B, MiB)
    before = {dev: vm.top_file(dev) for dev in vm.devs}
    r = q("create", "s2")
    eq((r.rc, r.out), (0, "snapshot s2 created (child of s1)\n"),
       "create s2: one line says what happened")
    vm._created(q("info", "s2", "--json").json(), before)
    vm.check_tree("after create s2")

    before = {dev: vm.top_file(dev) for dev in vm.devs}
    r = q("create", "--json")
    dflt = r.json() if r.rc == 0 else {}
    ok(re.match(r"^vm-\d{14}(-\d+)?$", dflt.get("name", "")),
       "create without a name: the proxy's default name", repr(r))
    if dflt:
        vm._created(dflt, before)

    # --disk DEV=FILE, FILE relative to the caller's directory
    before = {dev: vm.top_file(dev) for dev in vm.devs}
    r = q("create", "s3", "--disk", "vda=vm.mine", "--json", cwd=env.dir)
    if r.rc == 0:
        vm._created(r.json(), before)
    eq((r.rc, vm.chain()[0]), (0, stem + ".mine"),
       "create --disk vda=vm.mine (relative): the overlay is DIR/vm.mine")

    state = vm.state()
    r = q("create", "s1", "--memory")
    failed_with(r, 1, "create --memory is passed on (and s1 is taken)",
                "a snapshot named s1 exists already")
    r = q("create", "s9", "--exclude", "vda")
    failed_with(r, 1, "create --exclude", "before its first snapshot")
    r = q("create", "s9", "--disk", "vdz=" + env.path("x.img"))
    failed_with(r, 1, "create --disk of an unknown device",
                "no managed disk vdz", "qbranch disks")
    r = q("create", "s1")
    failed_with(r, 1, "create with a name in use",
                "a snapshot named s1 exists already", "qbranch list")
    r = q("create", "bad name")
    failed_with(r, 1, "create with an invalid name", "invalid snapshot name")
    eq(vm.state(), state, "failed creates changed nothing")

    # ---- reading verbs against the queries ---------------------------------
    qs = vm.query_snapshots()
    names = [s["name"] for s in qs["snapshots"]]
    eq(one_line_json(q("list", "--json"), "list --json"), qs,
       "list --json is qbranch-query-snapshots, unchanged")
    r = q("list", "--roots", "--json")
    eq(r.json() if r.rc == 0 else r,
       {"snapshots": [s for s in qs["snapshots"] if s["parent"] is None],
        "current": qs["current"]}, "list --roots --json: parentless ones")
    r = q("list", "--leaves", "--json")
    eq(r.json() if r.rc == 0 else r,
       {"snapshots": [s for s in qs["snapshots"] if not s["children"]],
        "current": qs["current"]}, "list --leaves --json: childless ones")
    r = q("list", "--from", "s1", "--json")
    eq([s["name"] for s in r.json()["snapshots"]] if r.rc == 0 else r,
       [n for n in names if n != "s1"],
       "list --from s1 --json: the descendants of s1")
    r = q("list", "--from", "nope")
    failed_with(r, 1, "list --from an unknown snapshot",
                "no snapshot named nope", "qbranch list")
    r = q("list")
    rows = r.out.splitlines()
    ok(r.rc == 0 and rows[0].split()[:2] == ["NAME", "CREATED"] and
       [l.split()[1] if l.startswith("*") else l.split()[0]
        for l in rows[1:]] == names,
       "list: a header, then one row per snapshot in the proxy's order",
       repr(r))
    cur = [l for l in rows[1:] if l.startswith("*")]
    ok(len(cur) == 1 and cur[0].split()[1] == qs["current"],
       "list marks the current snapshot with *", repr(r))
    r = q("list", "--parent")
    ok(r.rc == 0 and "PARENT" in r.out.splitlines()[0] and
       re.search(r"^\s+s2\s+s1\s", r.out, re.M),
       "list --parent adds the parent column", repr(r))

    r = q("info", "s1", "--json")
    eq(r.json() if r.rc == 0 else r, qs["snapshots"][0],
       "info s1 --json is the query's entry")
    r = q("info", "s1")
    ok(r.rc == 0 and re.search(r"^description:\s+first one$", r.out, re.M)
       and re.search(r"^children:\s+s2$", r.out, re.M) and
       re.search(r"^disk vda:\s+%s$" % re.escape(env.path("vm.qcow2")),
                 r.out, re.M), "info s1: description, children, disk",
       repr(r))
    r = q("info", "nope")
    failed_with(r, 1, "info of an unknown snapshot", "no snapshot named nope",
                "see 'qbranch list'")
    eq((q("parent", "s2").out, q("parent", "s2").rc), ("s1\n", 0),
       "parent s2 is s1")
    r = q("parent", "s2", "--json")
    eq(r.json() if r.rc == 0 else r, qs["snapshots"][0],
       "parent s2 --json is s1's entry")
    failed_with(q("parent", "s1"), 1, "parent of a root", "no parent")
    eq(q("parent", "s1", "--json").out, "null\n", "parent s1 --json: null")
    failed_with(q("parent", "nope"), 1, "parent of an unknown snapshot",
                "no snapshot named nope")
    r = q("current")
    eq((r.rc, r.out), (0, qs["current"] + "\n"), "current names the "
       "snapshot the attached branch grows from")
    r = q("current", "--json")
    eq(r.json() if r.rc == 0 else r,
       [s for s in qs["snapshots"] if s["name"] == qs["current"]][0],
       "current --json is the current snapshot's entry")
    eq(one_line_json(q("branches", "--json"), "branches --json"),
       vm.query_branches(), "branches --json is qbranch-query-branches")
    eq(one_line_json(q("disks", "--json"), "disks --json"),
       vm.query_disks(), "disks --json is qbranch-query-disks")
    r = q("disks")
    ok(r.rc == 0 and r.out.splitlines()[1].split()[:2] ==
       ["vda", stem + ".mine"] and env.path("vm.qcow2") in r.out,
       "disks: vda's chain, top first", repr(r))

    # ---- revert -------------------------------------------------------------
    vm.write(C, 2 * MiB)
    r = q("revert", "s1", "--json")
    br = one_line_json(r, "revert s1 --json")
    if br:
        vm._reverted("s1", br, False)
    eq(br, [b for b in vm.query_branches() if b["name"] == "s1-1"][0],
       "revert --json prints the new branch as the query shows it")
    eq(vm.running(), True, "revert keeps the VM running")
    vm.check_data("after revert s1: reads s1's data (A at 0, no B, no C)")

    vm.write(D, 3 * MiB)
    r = q("revert", "s2", "--branch", "work", "--paused")
    eq((r.rc, r.out), (0, "reverted to s2: branch work attached\n"),
       "revert s2 --branch work --paused: says what happened")
    if r.rc == 0:
        vm._reverted("s2", {"name": "work"}, False)
    eq(vm.running(), False, "--paused: the VM is paused after the revert")
    vm.check_data("after revert s2 on work: B at 0 and 1M")

    state = vm.state()
    failed_with(q("revert", "nope"), 1, "revert to an unknown snapshot",
                "no snapshot named nope", "see 'qbranch list'")
    failed_with(q("revert", "s1", "--save-memory", "--discard"), 1,
                "revert --save-memory --discard: contradictory",
                "save-memory", "choose one")
    failed_with(q("revert", "s1", "--branch", "main"), 1,
                "revert --branch with a name in use",
                "a branch named main exists already", "qbranch branches")
    eq(vm.state(), state, "failed reverts changed nothing")

    vm.write(E, 4 * MiB)
    r = q("revert", "s2", "--discard", "--running")
    ok(r.rc == 0 and re.match(r"^reverted to s2: branch (\S+) attached, "
                              r"the branch left discarded$", r.out),
       "revert --discard: says so", repr(r))
    if r.rc == 0:
        vm._reverted("s2", {"name": r.out.split()[4]}, True)
    eq(vm.running(), True, "--running: the VM runs after the revert")
    ok("work" not in [b["name"] for b in vm.query_branches()],
       "--discard removed the branch left (work)")
    vm.check_data("after revert s2 --discard: B at 0 and 1M")

    # ---- switch -------------------------------------------------------------
    r = q("switch", "s1-1", "--paused", "--json")
    sw = one_line_json(r, "switch s1-1 --paused --json")
    if sw:
        vm.attached = "s1-1"
    eq(sw, [b for b in vm.query_branches() if b["name"] == "s1-1"][0],
       "switch --json prints the branch as the query shows it")
    eq(vm.running(), False, "switch --paused: paused")
    vm.check_data("after switch s1-1: A at 0 and D at 3M, as left")
    r = q("switch", "main", "--running")
    last = vm.query_snapshots()["snapshots"][-1]["name"]
    eq((r.rc, r.out), (0, "switched to branch main (on snapshot %s)\n"
                       % last), "switch main --running: says what happened")
    if r.rc == 0:
        vm.attached = "main"
    eq(vm.running(), True, "switch --running: running")
    vm.check_data("after switch main: main's data as left (C at 2M)")
    failed_with(q("switch", "nope"), 1, "switch to an unknown branch",
                "no branch named nope", "see 'qbranch branches'")
    failed_with(q("switch", "main"), 1, "switch to the attached branch",
                "attached already")

    # ---- edit ---------------------------------------------------------------
    r = q("edit", "s3", "--rename", "s3b", "--description", "renamed",
          "--json")
    ed = one_line_json(r, "edit s3 --rename s3b --description --json")
    if ed:
        vm._edited("s3", "s3b")
    eq((ed or {}).get("name"), "s3b", "edit --rename: the new name")
    eq(ed, [s for s in vm.query_snapshots()["snapshots"]
            if s["name"] == "s3b"][0],
       "edit --json prints the snapshot as the query shows it")
    r = q("edit", "s2", "--description", "second")
    eq((r.rc, r.out), (0, "snapshot s2 edited\n"), "edit --description")
    r = q("info", "s2", "--json")
    eq(r.json().get("description") if r.rc == 0 else r, "second",
       "the description was set")
    failed_with(q("edit", "nope", "--rename", "x"), 1,
                "edit an unknown snapshot", "no snapshot named nope")
    failed_with(q("edit", "s2", "--rename", "s1"), 1,
                "rename onto a name in use", "exists already")
    vm.check_tree("after the edits")

    # ---- branch-delete ------------------------------------------------------
    r = q("branch-delete", "s1-1")
    eq((r.rc, r.out), (0, "branch s1-1 deleted\n"), "branch-delete s1-1")
    if r.rc == 0:
        del vm.branches["s1-1"]
    ok(not os.path.exists(stem + ".s1-1"), "its overlay is gone")
    failed_with(q("branch-delete", "main"), 1,
                "branch-delete of the attached branch", "attached",
                "qbranch switch")
    failed_with(q("branch-delete", "nope"), 1,
                "branch-delete of an unknown branch", "no branch named nope")
    vm.check_tree("after branch-delete")

    # ---- delete -------------------------------------------------------------
    r = q("delete", "s2")
    eq((r.rc, r.out), (0, "snapshot s2 deleted, its data merged into its "
                       "children\n"), "delete s2 (merge)")
    if r.rc == 0:
        vm._deleted("s2", None)
    vm.check_data("after delete s2: main still reads its data")
    failed_with(q("delete", "s2"), 1, "delete an unknown snapshot",
                "no snapshot named s2", "qbranch list")
    state = vm.state()
    failed_with(q("delete", "s1", "--children"), 1,
                "delete --children under the attached branch",
                "grows from", "qbranch switch")
    eq(vm.state(), state, "the refused delete changed nothing")

    # a side tree to delete with the other modes
    br = vm.revert("s1", branch="side")
    vm.write(0x5a, 5 * MiB)
    vm.create("x1")
    vm.write(0x5b, 6 * MiB)
    vm.create("x2")
    vm.switch("main")
    r = q("delete", "x1", "--children-only", "--json")
    ok(r.rc == 0 and r.json() == {}, "delete --children-only --json: {}",
       repr(r))
    if r.rc == 0:
        vm._deleted("x1", "children-only")
    x1_image = [s for s in vm.query_snapshots()["snapshots"]
                if s["name"] == "x1"][0]["disks"][0]["file"]
    r = q("delete", "x1", "--metadata")
    eq((r.rc, r.out), (0, "snapshot x1 forgotten, its images left as they "
                       "are\n"), "delete --metadata")
    if r.rc == 0:
        vm._deleted("x1", "metadata-only")
    ok(os.path.exists(x1_image), "--metadata left x1's image in place")
    os.unlink(x1_image)     # nothing needs it: keep check_files exact
    vm.check_tree("after delete --children-only and --metadata")
    vm.check_data("main reads its data after the deletes")

    # ---- qmp ----------------------------------------------------------------
    st = vm.status()
    r = q("qmp", "query-status")
    eq(one_line_json(r, "qmp query-status"), st,
       "qmp query-status prints the return value")
    r = q("qmp", '{"execute": "query-status", "id": "mine"}')
    eq(r.json() if r.rc == 0 else r, st, "qmp with a whole command object")
    r = q("qmp", "query-named-block-nodes", '{"flat": true}')
    ok(r.rc == 0 and isinstance(r.json(), list),
       "qmp COMMAND ARGS passes the arguments", repr(r))
    r = q("qmp", "qbranch-query-snapshots")
    eq(r.json() if r.rc == 0 else r, vm.query_snapshots(),
       "qmp reaches the proxy's own commands")
    failed_with(q("qmp", "no-such-command"), 1, "qmp unknown command",
                "has not been found", "query-commands")
    failed_with(q("qmp", "qbranch-snapshot-revert", "{}"), 1,
                "qmp with a missing argument", "Parameter 'name' is missing")
    failed_with(q("qmp", '{"arguments": {}}'), 1, "qmp without execute",
                "execute")
    r = q("qmp", "query-status", '{"bogus": 1}')
    failed_with(r, 1, "qmp with an unexpected argument", "bogus")

    # ---- status -------------------------------------------------------------
    qs = vm.query_snapshots()
    r = q("status", "--json")
    eq(r.json() if r.rc == 0 else r,
       {"status": "running", "running": True, "branch": "main",
        "current": qs["current"], "snapshots": len(qs["snapshots"]),
        "socket": sock}, "status --json")
    r = q("status")
    ok(r.rc == 0 and re.search(r"^vm:\s+running$", r.out, re.M) and
       re.search(r"^branch:\s+main$", r.out, re.M) and
       re.search(r"^current:\s+%s$" % qs["current"], r.out, re.M) and
       re.search(r"^snapshots:\s+%d$" % len(qs["snapshots"]), r.out, re.M),
       "status: run state, branch, current, count", repr(r))

    # ---- tree ---------------------------------------------------------------
    r = q("tree")
    lines = r.out.splitlines()
    detached = [b for b in vm.branches if b != vm.attached]
    ok(r.rc == 0 and detached and
       any(re.match(r"^s1(\s|$)", l) for l in lines) and
       any(re.search(r"[`|]-- \[main\] \*$", l) for l in lines) and
       all(any(re.search(r"[`|]-- \[%s\]$" % b, l) for l in lines)
           for b in detached) and
       any(re.search(r"-- %s \*\s" % qs["current"], l) for l in lines) and
       len(lines) == len(qs["snapshots"]) + len(vm.branches),
       "tree: s1 at the top, [main] * attached, the detached branches, "
       "current marked, one line each", repr(r))
    r = q("list", "--tree")
    ok(r.rc == 0 and r.out == q("tree").out, "list --tree is the tree view",
       repr(r))
    r = q("tree", "--json")
    eq(r.json() if r.rc == 0 else r,
       {"snapshots": vm.query_snapshots(), "branches": vm.query_branches()},
       "tree --json: both queries, unchanged")
    r = q("tree", "--dot")
    ok(r.rc == 0 and r.out.startswith("digraph qbranch {") and
       all('"snapshot:%s"' % s["name"] in r.out for s in qs["snapshots"])
       and re.search(r'"branch:main" \[label="main \*".*fillcolor', r.out)
       and all('"branch:%s" [label="%s", shape=ellipse, style=dashed]'
               % (b, b) in r.out for b in detached)
       and r.out.rstrip().endswith("}"),
       "tree --dot: every snapshot, branches, attached one filled", repr(r))
    nodot = env.path("nodot")
    os.mkdir(nodot)
    r = q("tree", "--svg", env.path("t.svg"),
          env={"PATH": nodot})
    failed_with(r, 1, "tree --svg without dot", "Graphviz", "--dot")
    # a stand-in for Graphviz's dot: the plumbing of --svg, checked
    fakedot = env.path("fakedot")
    os.mkdir(fakedot)
    with open(os.path.join(fakedot, "dot"), "w") as f:
        f.write('#!/bin/sh\n'
                '[ "$1" = -Tsvg ] || exit 9\n'
                'in=$(cat)\n'
                'case $in in "digraph qbranch {"*) ;; *) exit 8 ;; esac\n'
                '[ -z "$QBT_DOT_FAIL" ] || exit "$QBT_DOT_FAIL"\n'
                'if [ "$2" = -o ]; then\n'
                '    printf "<svg>%s</svg>\\n" "$in" > "$3"\n'
                'else\n'
                '    printf "<svg>%s</svg>\\n" "$in"\n'
                'fi\n')
    os.chmod(os.path.join(fakedot, "dot"), 0o755)
    path = fakedot + ":" + os.environ.get("PATH", "/usr/bin:/bin")
    # The graph shows ages ("1s"): a second may pass between the runs.
    def ageless(text):
        return re.sub(r"\\n\d+[smhdw] ", r"\\nAGE ", text)
    dot = ageless(q("tree", "--dot").out)
    r = q("tree", "--svg", env.path("f.svg"), env={"PATH": path})
    with open(env.path("f.svg")) as f:
        got = ageless(f.read())
    eq((r.rc, r.out, got), (0, "", "<svg>%s</svg>\n" % dot.rstrip("\n")),
       "tree --svg FILE pipes the --dot graph to dot -Tsvg -o FILE")
    r = q("tree", "--svg", "-", env={"PATH": path})
    eq((r.rc, ageless(r.out)), (0, "<svg>%s</svg>\n" % dot.rstrip("\n")),
       "tree --svg - writes the SVG to stdout")
    r = q("tree", "--svg", env.path("g.svg"),
          env={"PATH": path, "QBT_DOT_FAIL": "3"})
    failed_with(r, 1, "tree --svg when dot fails", "dot failed \\(exit 3\\)")
    if shutil.which("dot"):
        r = q("tree", "--svg", env.path("t.svg"))
        with open(env.path("t.svg")) as f:
            svg = f.read()
        ok(r.rc == 0 and "<svg" in svg and "main" in svg,
           "tree --svg FILE writes SVG through dot", repr(r))
    else:
        qbtest.diag("Graphviz is not installed: tree --svg was checked "
                    "with a stand-in dot only")

    # ---- events -------------------------------------------------------------
    p = subprocess.Popen([qbtest.QBRANCH, "-c", sock, "events"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(
        iter(p.stdout.readline, b"")), daemon=True)
    reader.start()
    deadline = time.monotonic() + CMD_TIMEOUT
    while time.monotonic() < deadline and \
            not any(b'"STOP"' in l for l in lines):
        vm.ret("stop")
        vm.ret("cont")
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    try:
        rc = p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = None
    reader.join(5)
    evs = []
    for l in lines:
        try:
            evs.append(json.loads(l))
        except ValueError:
            evs.append({"unparsable": l.decode("utf-8", "replace")})
    ok(any(e.get("event") == "STOP" for e in evs) and
       all("event" in e and "timestamp" in e for e in evs),
       "events: one JSON event a line (STOP seen)", repr(lines[:5]))
    eq(rc, 0, "events ends with exit 0 on SIGINT")
    p.stdout.close()
    p.stderr.close()

    # ---- bash completion ----------------------------------------------------
    if shutil.which("bash"):
        qb = qbtest.QBRANCH
        eq(complete([qb, ""]), verbs_expected(),
           "completion: the verbs")
        eq(complete([qb, "-c", sock, "revert", ""]),
           [s["name"] for s in vm.query_snapshots()["snapshots"]],
           "completion: revert NAME -> snapshot names from the proxy")
        eq(complete([qb, "-c", sock, "switch", "s"]),
           [b["name"] for b in vm.query_branches()
            if b["name"].startswith("s")],
           "completion: switch s -> branch names starting with s")
        eq(complete([qb, "-c", sock, "delete", "--ch"]),
           ["--children", "--children-only"],
           "completion: options of delete")
        eq(complete([qb, "-c", sock, "list", "--from", ""]),
           [s["name"] for s in vm.query_snapshots()["snapshots"]],
           "completion: list --from -> snapshot names")
        eq(complete([qb, "-c", sock, "create", "--disk", ""]), ["vda="],
           "completion: --disk -> DEVICE=")
        eq(complete([qb, "revert", ""], env=dict(os.environ,
                                                  QBRANCH_SOCKET=sock)),
           [s["name"] for s in vm.query_snapshots()["snapshots"]],
           "completion asks the socket of QBRANCH_SOCKET")
        eq(complete([qb, "-c", env.path("none.sock"), "revert", ""]), [],
           "completion without a proxy: no words, no noise")

    # ---- everything still holds ---------------------------------------------
    vm.check_everything("end")
    vm.check_files("no stray image files")


def verbs_expected():
    return ["create", "revert", "switch", "delete", "branch-delete", "edit",
            "list", "tree", "branches", "info", "current", "parent",
            "disks", "status", "orphans", "qmp", "events", "help"]


qbtest.run(main, timeout=120)

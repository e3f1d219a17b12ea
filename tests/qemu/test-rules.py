#!/usr/bin/env python3
# Rules: each listening socket's own rule set on one VM, the side doors
# (transaction, HMP) closed, uid rules, rewrite, log and the audit log,
# SIGHUP reloads that keep the old rules when the new ones are wrong, and
# qbranchd -n reporting mistakes as file:line:column.

import json
import os
import signal
import subprocess
import sys
import time

import qbtest
from qbtest import ok, eq, wait_for


def write_rules(env, name, obj_or_text):
    path = env.path(name)
    with open(path, "w") as f:
        if isinstance(obj_or_text, str):
            f.write(obj_or_text)
        else:
            json.dump(obj_or_text, f, indent=2)
    return path


def audit_lines(path):
    try:
        with open(path) as f:
            return [json.loads(l) for l in f if l.strip()]
    except FileNotFoundError:
        return []


def chain(c, dev="vda"):
    """The file each node of dev's chain opens, top first."""
    r = c.cmd("query-block")
    for b in r.get("return", []):
        if b.get("qdev") == dev:
            files, img = [], b["inserted"]["image"]
            while img:
                files.append(img["filename"])
                img = img.get("backing-image")
            return files
    return None


def client_as(path, uid, gid, commands):
    """Runs commands on a new connection as another user (a child process
    that drops to uid/gid); returns their replies."""
    prog = r'''
import json, os, socket, sys
os.setgroups([]); os.setgid(%d); os.setuid(%d)
s = socket.socket(socket.AF_UNIX); s.connect(%r)
f = s.makefile("rw")
f.readline()
out = []
for c in [{"execute": "qmp_capabilities"}] + %r:
    f.write(json.dumps(c) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "event" not in r:
            break
    out.append(r)
print(json.dumps(out[1:]))
''' % (gid, uid, path, commands)
    r = subprocess.run([sys.executable, "-c", prog], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    if r.returncode != 0:
        raise qbtest.QBTestError("client as uid %d: %s" % (uid, r.stderr))
    return json.loads(r.stdout)


def main(env):
    me = os.getuid()
    custom = write_rules(env, "custom.json", {
        "default": "allow",
        "rules": [
            {"command": "query-name", "uid": me, "action": "log",
             "name": "watch-names"},
            {"command": "query-kvm", "uid": me, "action": "deny",
             "class": "CommandNotFound", "message": "not for this user"},
            {"command": "query-kvm", "uid": me + 1, "action": "allow"},
            {"command": "hmp/info",
             "arguments": {"command-line": "info name"},
             "action": "rewrite", "merge": {"command-line": "info version"}},
            {"command": "qom-get", "arguments": {"property": "secret"},
             "action": "rewrite",
             "replace": {"path": "/machine", "property": "type"}},
            {"command": "query-uuid", "listener": "*/admin.sock",
             "action": "deny", "message": "not on the admin socket"},
            {"include": "default.json"},
        ]})
    audit = env.path("audit.jsonl")
    qemu = env.start_qemu(disks=["vda"])
    proxy = env.start_proxy(
        listen=("admin.sock,rules=%s" % custom, "ro.sock,rules=read-only",
                "plain.sock"),
        args=["--state-dir", env.path("state"), "--audit", audit,
              "--socket-mode", "0666"])
    admin = proxy.client(0, negotiate=True)
    ro = proxy.client(1, negotiate=True)
    plain = proxy.client(2, negotiate=True)
    direct = qemu.direct_client()
    direct.cmd("cont")

    # --- two listeners, two rule sets, one VM ------------------------------
    r = ro.cmd("stop", id="s1")
    eq((r.err_class, r.get("id")), ("GenericError", "s1"),
       "read-only socket: stop is refused, with the request's id")
    ok("read-only" in (r.err_desc or ""),
       "read-only socket: the rule set's own message", r.raw)
    eq(direct.cmd("query-status")["return"]["status"], "running",
       "read-only socket: the VM still runs")
    for cmd, args in (("query-status", None), ("qom-get",
                      {"path": "/machine", "property": "type"}),
                      ("qbranch-query-snapshots", None)):
        r = ro.cmd(cmd, args)
        ok("return" in r, "read-only socket: %s answered" % cmd, r.raw)
    for cmd, args in (("human-monitor-command", {"command-line": "stop"}),
                      ("qbranch-snapshot-create", {"name": "x"}),
                      ("cont", None)):
        r = ro.cmd(cmd, args)
        eq(r.err_class, "GenericError", "read-only socket: %s refused" % cmd)
    r = admin.cmd("stop", id="s2")
    eq((r.get("return"), r.get("id")), ({}, "s2"), "admin socket: stop runs")
    eq(direct.cmd("query-status")["return"]["status"], "paused",
       "admin socket: the VM is paused")
    eq(admin.cmd("cont").get("return"), {}, "admin socket: cont runs")

    # --- side doors, under the default rules -------------------------------
    env.write(plain, "vda", 0x11, "0")
    before = chain(direct)
    node = env.root_node(plain, "vda")
    r = plain.cmd("blockdev-snapshot-sync", {
        "node-name": node, "snapshot-file": env.path("sneak.qcow2"),
        "format": "qcow2"})
    eq(r.err_class, "GenericError", "default rules: blockdev-snapshot-sync "
       "is refused")
    ok("qbranch-" in (r.err_desc or ""),
       "default rules: the refusal points to the qbranch- commands",
       r.raw)
    r = plain.cmd("transaction", {"actions": [
        {"type": "block-dirty-bitmap-add",
         "data": {"node": node, "name": "bm"}},
        {"type": "blockdev-snapshot-sync",
         "data": {"node-name": node, "format": "qcow2",
                  "snapshot-file": env.path("sneak.qcow2")}}]}, id=7)
    eq((r.err_class, r.get("id")), ("GenericError", 7),
       "default rules: a blockdev-snapshot-sync inside a transaction "
       "refuses the whole transaction")
    r = direct.cmd("query-named-block-nodes")
    ok(all(not n.get("dirty-bitmaps") for n in r.get("return", [])),
       "and none of its actions ran (no bitmap added)", r.raw)
    r = plain.cmd("human-monitor-command", {
        "command-line": "snapshot_blkdev -n %s %s" % (node,
                                                      env.path("x.qcow2"))})
    eq(r.err_class, "GenericError", "default rules: HMP snapshot_blkdev "
       "is refused")
    r = plain.cmd("blockdev-del", {"node-name": node})
    eq(r.err_class, "GenericError", "default rules: blockdev-del refused")
    eq(chain(direct), before, "the disk's chain is what it was")
    ok(not os.path.exists(env.path("sneak.qcow2")) and
       not os.path.exists(env.path("x.qcow2")), "no image was made")
    env.expect_data(plain, "vda", [(0x11, "0", qbtest.REGION)],
                    "the guest's data is intact")
    r = plain.cmd("query-status")
    ok("return" in r, "default rules: ordinary commands pass")

    # --- uid rules ----------------------------------------------------------
    r = admin.cmd("query-kvm")
    eq((r.err_class, r.err_desc), ("CommandNotFound", "not for this user"),
       "a uid rule denies this user, with its class and message")
    if me == 0:
        os.chmod(env.dir, 0o755)
        got = client_as(env.path("admin.sock"), 65534, 65534,
                        [{"execute": "query-kvm"},
                         {"execute": "query-status"}])
        ok("return" in got[0], "another user (nobody) is not denied by "
           "that rule", repr(got))
        ok("return" in got[1], "and talks QMP through the proxy",
           repr(got))
    else:
        qbtest.skip("another user (nobody) is not denied by that rule",
                    "not root: cannot become another user")
        qbtest.skip("and talks QMP through the proxy", "not root")

    # --- the listener condition --------------------------------------------
    r = admin.cmd("query-uuid")
    eq(r.err_desc, "not on the admin socket", "a listener rule denies on "
       "its socket")

    # --- rewrite -------------------------------------------------------------
    version = env.hmp(direct, "info version")
    r = admin.cmd("human-monitor-command", {"command-line": "info name"},
                  id={"k": [1]})
    eq((r.get("return"), r.get("id")), (version, {"k": [1]}),
       "rewrite (merge): HMP 'info name' answered as 'info version', "
       "with the request's id")
    want = direct.cmd("qom-get", {"path": "/machine", "property": "type"})
    r = admin.cmd("qom-get", {"path": "/nowhere", "property": "secret"})
    eq(r.get("return"), want.get("return"),
       "rewrite (replace): the arguments are the rule's")
    admin.send(b'{"execute": "qom-get", "arguments": {"path": "/x", '
               b'"property": "secret"}}')
    r = admin.recv_reply()
    ok("id" not in r and r.get("return") == want.get("return"),
       "rewrite without an id: none in the reply", r.raw)

    # --- log, and the audit log --------------------------------------------
    admin.cmd("query-name", id="n1")
    ok(wait_for(lambda: "watch-names" in proxy.log_text() or
                "custom.json:" in proxy.log_text()),
       "a log rule writes to qbranchd's log")
    ok(wait_for(lambda: any(a.get("command") == "query-name"
                            for a in audit_lines(audit))),
       "the audit log records the request")
    lines = audit_lines(audit)
    qn = [a for a in lines if a.get("command") == "query-name"]
    a = qn[-1] if qn else {}
    ok(a.get("action") == "allow" and a.get("uid") == me and
       a.get("pid") == os.getpid() and a.get("listener", "").endswith(
           "admin.sock") and "time" in a and a.get("logged"),
       "an audit line: time, listener, peer uid and pid, command, rule, "
       "action, and the log rules met", repr(a))
    stops = [a for a in lines if a.get("command") == "stop"]
    ok(any(a.get("action") == "deny" and a.get("rule") ==
           "read-only.json:default" for a in stops) and
       any(a.get("action") == "allow" for a in stops),
       "the audit log has both stop decisions, with their rules",
       repr(stops))
    tx = [a for a in lines if a.get("command") == "transaction"]
    ok(tx and tx[-1].get("name") == "transaction/blockdev-snapshot-sync"
       and tx[-1].get("rule", "").startswith("default.json:"),
       "the audit log names the action that denied a transaction",
       repr(tx))

    # --- SIGHUP: a broken file keeps the old rules -------------------------
    hup = write_rules(env, "hup.json", {
        "default": "allow",
        "rules": [{"command": "stop", "action": "deny",
                   "message": "stop is off"}]})
    qemu2 = env.start_qemu(sock="qemu2.sock", direct="direct2.sock")
    p2 = env.start_proxy(qemu_sock="qemu2.sock",
                         listen=("hup.sock,rules=%s" % hup,),
                         args=["--audit", env.path("audit2.jsonl")])
    c2 = p2.client(negotiate=True)
    eq(c2.cmd("stop").err_desc, "stop is off", "before SIGHUP: stop denied")
    write_rules(env, "hup.json",
                '{"default": "allow",\n "rules": [\n'
                '  {"command": "stop", "action": "allow"}\n'
                '  {"command": "cont", "action": "allow"}]}\n')
    p2.send_signal(signal.SIGHUP)
    ok(wait_for(lambda: "hup.json:4:3:" in p2.log_text()),
       "SIGHUP with a broken file: the mistake is logged as "
       "file:line:column", p2.log_text()[-2000:])
    ok("old rules stay in force" in p2.log_text(), "and says the old rules "
       "stay")
    eq(c2.cmd("stop").err_desc, "stop is off",
       "the old rules are still in force")
    os.rename(env.path("audit2.jsonl"), env.path("audit2.old"))
    write_rules(env, "hup.json", {
        "default": "allow",
        "rules": [{"command": "stop", "action": "allow"}]})
    p2.send_signal(signal.SIGHUP)
    ok(wait_for(lambda: "rules reloaded" in p2.log_text()),
       "SIGHUP with a good file: reloaded")
    eq(c2.cmd("stop").get("return"), {},
       "the new rules apply to a client connected before")
    ok(wait_for(lambda: any(a.get("command") == "stop" and
                            a.get("action") == "allow"
                            for a in audit_lines(
                                env.path("audit2.jsonl")))),
       "SIGHUP opens the audit log again (rotation)")

    # --- qbranchd -n ---------------------------------------------------------
    bad = write_rules(env, "bad.json",
                      '{"default": "allow",\n "rules": [\n'
                      '  {"command": "stop", "action": "deny",\n'
                      '   "class": "NoSuchClass"}]}\n')
    st, out = env.run_proxy(["-n", "--qemu", env.path("qemu.sock"),
                             "--listen", env.path("n.sock,rules=%s" % bad)])
    ok(st != 0 and "bad.json:4:13: unknown error class 'NoSuchClass'"
       in out, "-n: a mistake is reported as file:line:column", out)
    st, out = env.run_proxy(["-n", "--qemu", env.path("qemu.sock"),
                             "--listen", env.path("n.sock,rules="
                                                  "transparent")])
    eq(st, 0, "-n: the shipped transparent.json is fine")
    st, out = env.run_proxy(["--qemu", env.path("qemu.sock"),
                             "--listen", env.path("n.sock,rules=%s" % bad)])
    ok(st != 0 and "nothing started" in out and
       not os.path.exists(env.path("n.sock")),
       "start with a broken rule file: refused, no socket made", out)
    st, out = env.run_proxy(["-n", "--qemu", env.path("qemu.sock"),
                             "--rules-dir", env.path("nowhere"),
                             "--listen", env.path("n.sock")])
    ok(st != 0 and "nowhere/default.json" in out,
       "-n: a missing default.json is named", out)


qbtest.run(main)

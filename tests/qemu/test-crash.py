#!/usr/bin/env python3
# Crash safety (README, "Reliability"). Every snapshot operation passes
# numbered fault points (proxy/fault.c): before each command it sends QEMU,
# when each reply comes, before and after each piece of file work. For each
# kind of operation, a first run with QBRANCHD_FAULT=trace counts its
# points; then, for every point, qbranchd is started with
# QBRANCHD_FAULT=<kind>#<n>, which makes it kill itself there (SIGKILL), and
# started again. After each, with the VM on two disks:
#   - qbranchd came back and runs snapshot commands (the tree is usable),
#     and the tree file as README documents it equals what it answers;
#   - the operation fully happened or fully did not (the model follows
#     whichever the tree says, and everything else is checked against it);
#   - the VM runs on the images of the branch the tree says is attached,
#     and runs;
#   - the attached branch reads its data, no frozen image changed, every
#     image file is one the tree needs (nothing left over, nothing
#     missing), and no intent is left behind.
# At the end of each kind every snapshot and branch is read back whole.
# Then :stop points: qbranchd stops at a point, QEMU is killed and started
# again on the same disks, and qbranchd goes on; the same checks follow.
# Then :fail points: the step fails, and nothing may have changed.
# The counts of points covered and recovered are printed; any gap fails.
#
# QBRANCH_CRASH_EVERY=N tries every Nth point only (default 1: all);
# QBRANCH_CRASH_STOP_EVERY=N kills QEMU at every Nth (default 4).

import json
import os
import re
import signal
import time

import qbtest
from qbtest import ok, eq, diag, SnapVM, MiB, CMD_TIMEOUT

EVERY = int(os.environ.get("QBRANCH_CRASH_EVERY", "1"))
STOP_EVERY = int(os.environ.get("QBRANCH_CRASH_STOP_EVERY", "4"))
DISKS = ("vda", "vdb")


class Crash:
    def __init__(self, env, kind, label, state):
        self.env = env
        self.kind = kind
        self.label = label
        os.makedirs(env.path(state + "-img"))
        self.vm = SnapVM(env, disks=[qbtest.Disk(d, image="%s-%s.qcow2" %
                                                 (state, d)) for d in DISKS],
                         state_dir=state,
                         proxy_args=["--image-dir", env.path(state + "-img")])
        self.covered = 0
        self.recovered = 0
        self.gaps = []
        self.pending = None     # brings the model along once recovered
        self.adopted = 0        # recoveries that adopted a block job

    # -- qbranchd with a fault armed --------------------------------------
    def start(self, fault=None):
        vm = self.vm
        vm.c.close()
        if vm.proxy.alive():
            vm.proxy.stop()
        environ = dict(os.environ)
        environ.pop("QBRANCHD_FAULT", None)
        if fault:
            environ["QBRANCHD_FAULT"] = fault
        vm.proxy = self.env.start_proxy(args=vm.proxy_args, environ=environ)
        vm.c = vm.proxy.client(negotiate=True, timeout=CMD_TIMEOUT)

    def trace(self, op):
        """Runs op once with every point logged; returns their names."""
        self.start("trace")
        log_from = len(self.vm.proxy.log_text())
        op(self, None)
        text = self.vm.proxy.log_text()[log_from:]
        pts = re.findall(r"fault point %s#(\d+): (.*)" % self.kind, text)
        self.start()
        return [p[1].strip() for p in pts]

    # -- the checks after a recovery ----------------------------------------
    def attached_files(self):
        for b in self.vm.query_branches():
            if b.get("attached"):
                return {d["device"]: d["file"] for d in b["disks"]}
        return {}

    def qemu_files(self):
        out = {}
        for b in self.vm.ret("query-block"):
            dev = (b.get("qdev") or "").split("/")
            name = dev[3] if len(dev) > 3 else b.get("device")
            img = (b.get("inserted") or {}).get("image") or {}
            if name in DISKS:
                out[name] = img.get("filename")
        return out

    def check(self, text):
        vm = self.vm
        r = vm.cmd("qbranch-query-snapshots")
        if not ok("return" in r, "%s: snapshot commands work" % text,
                  r.raw.decode("utf-8", "replace")):
            return False
        tree = qbtest.read_tree(vm.state_dir)
        good = [
            ok(sorted(s["name"] for s in tree["snapshots"]) ==
               sorted(s["name"] for s in r["return"]["snapshots"]) and
               sorted((b["name"], b["attached"]) for b in tree["branches"])
               == sorted((b["name"], b["attached"])
                         for b in vm.query_branches()),
               "%s: the tree file says what qbranchd answers" % text),
            vm.check_tree("%s: the tree is the model's" % text),
            eq(self.qemu_files(), self.attached_files(),
               "%s: QEMU runs on the attached branch's images" % text),
            ok(vm.running(), "%s: the VM runs" % text,
               json.dumps(vm.status())),
            vm.check_data("%s: the attached branch reads its data" % text),
            self.check_frozen(text),
            self.check_files(tree, "%s: every file is one the tree "
                             "names, and it is there" % text),
            ok(not os.path.exists(os.path.join(vm.state_dir,
                                               "intent.json")),
               "%s: no intent is left" % text),
            eq(vm.ret("qbranch-query-orphans")["orphans"], [],
               "%s: no orphan" % text),
        ]
        return all(good)

    def check_frozen(self, text):
        """No image of a snapshot in the tree changed since it was frozen
        (a merge writes into the images of the snapshot it deletes, and a
        branch may freeze such an image again later)."""
        vm = self.vm
        kept = {d["file"] for s in vm.query_snapshots()["snapshots"]
                for d in s["disks"]}
        vm.frozen_hash = {p: h for p, h in vm.frozen_hash.items()
                          if p in kept}
        return vm.check_frozen("%s: no frozen image changed" % text)

    def check_files(self, tree, text):
        """The image and saved-state files on disk are exactly those the
        tree file names, and the original images (qbtest's check_files()
        follows every backing chain with qemu-img: too slow here)."""
        vm = self.vm
        named = set(vm.originals.values())
        memory = set()
        for e in tree["snapshots"] + tree["branches"]:
            named |= {d["file"] for d in e["disks"]}
            m = e.get("memory")
            if m:
                memory |= {m["state"]} | {r["file"] for r in m["ram"]}
        named |= {b["file"] for b in tree.get("bases", [])}
        mdir = os.path.join(vm.state_dir, "memory")
        have = vm.image_files() | set(vm.originals.values())
        mhave = {os.path.join(mdir, f) for f in os.listdir(mdir)} \
            if os.path.isdir(mdir) else set()
        return eq((sorted(have), sorted(mhave)),
                  (sorted(named), sorted(memory)), text)

    # -- one point --------------------------------------------------------
    def kill_at(self, op, n, name):
        self.covered += 1
        text = "%s#%d (%s)" % (self.kind, n, name)
        self.start("%s#%d" % (self.kind, n))
        proxy = self.vm.proxy
        op(self, "kill")
        try:
            proxy.wait(CMD_TIMEOUT)
        except Exception:
            pass
        if proxy.alive() or proxy.proc.returncode != -signal.SIGKILL:
            self.gaps.append(text)
            try:
                reply = self.vm.c.recv_raw(timeout=1)
            except qbtest.QBTestError as e:
                reply = repr(e)
            ok(False, "%s: qbranchd was killed there" % text,
               "exit status %s" % proxy.proc.returncode,
               "reply: %s" % reply, *proxy.log_text().splitlines()[-40:])
            self.start()
            return
        self.start()
        self.follow()
        self.adopted += "recovery: adopting QEMU's job" in \
            self.vm.proxy.log_text()
        if self.check("%s killed" % text):
            self.recovered += 1
        else:
            self.gaps.append(text)

    def stop_at(self, op, n, name):
        """qbranchd stops at the point; QEMU is killed and started again
        on the same disks; qbranchd goes on."""
        vm = self.vm
        self.covered += 1
        text = "%s#%d (%s)" % (self.kind, n, name)
        self.start("%s#%d:stop" % (self.kind, n))
        proxy = vm.proxy
        op(self, "stop")
        if not qbtest.wait_for(lambda: stopped(proxy.pid), timeout=CMD_TIMEOUT):
            self.gaps.append(text)
            ok(False, "%s: qbranchd stopped there" % text)
            return
        vm.qemu.kill()
        vm.qemu.wait(CMD_TIMEOUT)
        vm.qemu = self.env.start_qemu(disks=vm.disk_specs, extra=["-S"])
        os.kill(proxy.pid, signal.SIGCONT)
        vm.c.close()
        # It closes the clients of the QEMU that went away: connect anew
        # until one is served by the new QEMU.
        deadline = time.monotonic() + CMD_TIMEOUT
        while True:
            try:
                vm.c = proxy.client(negotiate=True, timeout=CMD_TIMEOUT)
                vm.ret("query-status")
                break
            except (qbtest.QBTestError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        qbtest.wait_for(lambda: "error" not in vm.cmd("cont"),
                        timeout=CMD_TIMEOUT, step=0.1)
        self.follow()
        if self.check("%s, QEMU killed" % text):
            self.recovered += 1
        else:
            self.gaps.append(text)

    def fail_at(self, op, n, name):
        """QEMU refuses the step: the operation fails with nothing
        changed, or goes on where the step may fail (a cont, an undo)."""
        vm = self.vm
        text = "%s#%d:fail (%s)" % (self.kind, n, name)
        self.start("%s#%d:fail" % (self.kind, n))
        r = op(self, "fail")
        if r is None or "error" not in r:
            ok(r is not None, "%s: answered" % text)
            if name == "before cont" and not vm.running():
                vm.ret("cont")      # refused, so the VM stayed paused
            self.follow()
            self.check("%s, tolerated" % text)
            return
        self.pending = None
        ok("fault injected" in r.err_desc, "%s: the operation fails with "
           "the step's error" % text, r.raw.decode("utf-8", "replace"))
        eq(vm.state(), self.state_before, "%s: the tree, chains and files "
           "are as they were" % text)
        ok(vm.running(), "%s: the VM runs" % text)
        vm.check_data("%s: the attached branch reads its data" % text)
        ok(not os.path.exists(os.path.join(vm.state_dir, "intent.json")),
           "%s: no intent is left" % text)

    # -- after an operation cut short: the model follows the tree -----------
    def follow(self):
        pending, self.pending = self.pending, None
        if pending is not None:
            pending()


def stopped(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def freeze(vm, snap):
    """The images snap froze, as they are now (a file may be frozen again
    after a merge left a branch on it)."""
    for d in snap["disks"]:
        vm.frozen_hash[d["file"]] = qbtest.sha256(d["file"])
    return snap


def send(cr, mode, name, args):
    """Sends the operation. kill/stop: its reply may never come; the model
    follows once the tree says what happened (cr.pending). fail: returns
    the reply. None: must succeed."""
    vm = cr.vm
    if mode is None:
        return vm.ret(name, args)
    if mode == "fail":
        cr.state_before = vm.state()
    vm.c.send_json(qbtest.QMP.command(name, args, id="op"))
    if mode == "fail":
        return vm.c.recv_reply(timeout=CMD_TIMEOUT)
    return None


# -- the operations -------------------------------------------------------
def op_create(memory):
    def op(cr, mode):
        vm = cr.vm
        k = cr.serial = getattr(cr, "serial", 0) + 1
        vm.write(0x20 + k % 0xd0, MiB + (k % 4) * qbtest.REGION)
        name = "c%d" % k
        tops = {d: vm.top_file(d) for d in vm.devs}
        args = {"name": name}
        if memory:
            args["memory"] = True
        snap = send(cr, mode, "qbranch-snapshot-create", args)
        if mode is None:
            vm._created(snap, tops)
            freeze(vm, snap)
            return snap

        def follow():
            for s in vm.query_snapshots()["snapshots"]:
                if s["name"] == name:
                    vm._created(s, tops)
                    freeze(vm, s)
        cr.pending = follow
        return snap
    return op


def op_revert(target):
    def op(cr, mode):
        vm = cr.vm
        old = vm.attached
        args = {"name": target}
        br = send(cr, mode, "qbranch-snapshot-revert", args)
        if mode is None:
            vm._reverted(target, br, False)
            return br

        def follow():
            for b in vm.query_branches():
                if b["attached"] and b["name"] != old:
                    vm._reverted(target, b, False)
        cr.pending = follow
        return br
    return op


def op_switch(cr, mode):
    vm = cr.vm
    target = cr.other if vm.attached == cr.home else cr.home
    args = {"branch": target, "save-memory": True}
    r = send(cr, mode, "qbranch-branch-switch", args)
    if mode is None:
        vm.attached = target
        return r

    def follow():
        for b in vm.query_branches():
            if b["attached"]:
                vm.attached = b["name"]
    cr.pending = follow
    return r


def op_delete(big_before):
    def op(cr, mode):
        vm = cr.vm
        k = cr.serial = getattr(cr, "serial", 0) + 1
        name = "d%d" % k
        # A commit pushes the branch's few new blocks down into the large
        # frozen image; a stream pulls the frozen image's few blocks up.
        few, many = 1, 12
        for i in range(many if big_before else few):
            vm.write(0x30 + (k + i) % 0x40, 8 * MiB + i * qbtest.REGION)
        frozen = {d["file"] for d in freeze(vm, vm.create(name))["disks"]}
        # (the fault is armed for deletes only)
        for i in range(few if big_before else many):
            vm.write(0x70 + (k + i) % 0x40, 16 * MiB + i * qbtest.REGION)
        r = send(cr, mode, "qbranch-snapshot-delete", {"name": name})
        def deleted():
            # A merge writes into the images of the snapshot it deletes,
            # or streams them into the one image on them, which may be
            # another snapshot's: its content stays (check_everything()
            # reads it), its bytes do not.
            vm._deleted(name, None)
            for f in frozen:
                vm.frozen_hash.pop(f, None)
            for s in vm.query_snapshots()["snapshots"]:
                freeze(vm, s)
        if mode is None:
            deleted()
            return r

        def follow():
            if name not in {s["name"] for s in
                            vm.query_snapshots()["snapshots"]}:
                deleted()
        cr.pending = follow
        return r
    return op


def op_delete_children(cr, mode):
    """A snapshot with a child, the branch left on the child: the three go
    with mode children, from a branch reverted to base."""
    vm = cr.vm
    k = cr.serial = getattr(cr, "serial", 0) + 1
    x, y = "x%d" % k, "y%d" % k
    vm.write(0x40 + k % 0x30, 10 * MiB, dev="vda")
    freeze(vm, vm.create(x))
    vm.write(0x50 + k % 0x30, 11 * MiB, dev="vdb")
    freeze(vm, vm.create(y))
    vm.revert("base")
    r = send(cr, mode, "qbranch-snapshot-delete", {"name": x,
                                                    "mode": "children"})
    if mode is None:
        vm._deleted(x, "children")
        return r

    def follow():
        if x not in {s["name"] for s in vm.query_snapshots()["snapshots"]}:
            vm._deleted(x, "children")
    cr.pending = follow
    return r


# -- the kinds ---------------------------------------------------------------
def setup_base(cr):
    vm = cr.vm
    vm.write(0x11, 0, dev="vda")
    vm.write(0x12, 0, dev="vdb")
    vm.create("base")
    vm.write(0x13, 2 * MiB, dev="vda")


def setup_memory_base(cr):
    setup_base(cr)
    cr.vm.create("mbase", memory=True)
    cr.vm.write(0x14, 3 * MiB, dev="vdb")


def setup_switch(cr):
    vm = cr.vm
    setup_base(cr)
    cr.home = vm.attached
    br = vm.revert("base", **{"save-memory": True})
    cr.other = br["name"]
    vm.write(0x15, 4 * MiB, dev="vda")


KINDS_ALL = [
    # (kind, label, setup, operation)
    ("create", "create", setup_base, op_create(False)),
    ("create", "create with memory", setup_base, op_create(True)),
    ("revert", "revert", setup_base, op_revert("base")),
    ("revert", "revert to memory", setup_memory_base, op_revert("mbase")),
    ("switch", "switch keeping memory", setup_switch, op_switch),
    ("delete", "delete (commit)", setup_base, op_delete(True)),
    ("delete", "delete (stream)", setup_base, op_delete(False)),
    ("delete", "delete with children", setup_base, op_delete_children),
]


ONLY = os.environ.get("QBRANCH_CRASH_ONLY")
KINDS = [k for k in KINDS_ALL if not ONLY or k[1] == ONLY]


def run_kind(env, index, kind, label, setup, op):
    cr = Crash(env, kind, label, "state%d" % index)
    setup(cr)
    names = cr.trace(op)
    diag("%s: %d fault points: %s" % (label, len(names),
                                      "; ".join(names)))
    ok(len(names) > 0, "%s: its fault points are passed" % label)
    points = list(range(1, len(names) + 1))[::EVERY]
    for n in points:
        cr.kill_at(op, n, names[n - 1])
    for n in list(range(1, len(names) + 1))[::STOP_EVERY]:
        cr.stop_at(op, n, names[n - 1])
    for n in points:
        if names[n - 1].startswith("before ") and \
                names[n - 1] != "before file work":
            cr.fail_at(op, n, names[n - 1])
    if label.startswith("delete ("):
        ok(cr.adopted > 0, "%s: QEMU's merge jobs were adopted (%d times)"
           % (label, cr.adopted))
    cr.start()
    cr.vm.check_everything("%s: after every point" % label)
    cr.vm.c.close()
    cr.vm.proxy.stop()
    cr.vm.qemu.stop()
    return cr


def back_to_back(env):
    """An operation's intent is gone before its reply: another client may
    start the next one at once (the intent of one must not race with the
    removal of the other's)."""
    vm = SnapVM(env, disks=[qbtest.Disk("vda", image="b2b-vda.qcow2")],
                state_dir="b2b")
    other = vm.proxy.client(negotiate=True, timeout=CMD_TIMEOUT)
    refused = []
    for k in range(20):
        c = vm.c if k % 2 == 0 else other
        r = c.cmd("qbranch-snapshot-create", {"name": "b%d" % k})
        if "return" not in r:
            refused.append(r.raw.decode("utf-8", "replace"))
    ok(not refused, "20 creates from two clients in turn, each sent as soon "
       "as the last was answered: none refused", *refused)
    other.close()
    vm.c.close()
    vm.proxy.stop()
    vm.qemu.stop()


def main(env):
    back_to_back(env)
    covered = recovered = 0
    gaps = []
    for i, (kind, label, setup, op) in enumerate(KINDS):
        cr = run_kind(env, i, kind, label, setup, op)
        covered += cr.covered
        recovered += cr.recovered
        gaps += cr.gaps
    diag("fault points covered: %d, recovered: %d" % (covered, recovered))
    print("# crash: %d fault points covered, %d recovered" %
          (covered, recovered))
    ok(covered > 0 and covered == recovered and not gaps,
       "every fault point recovered (%d of %d)" % (recovered, covered),
       *gaps)


if __name__ == "__main__":
    qbtest.run(main, timeout=1200)

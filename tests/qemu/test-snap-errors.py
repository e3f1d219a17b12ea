#!/usr/bin/env python3
# Every error of the qbranch commands: a GenericError with a message, and
# afterwards the tree, the branches, the chains, the image files and the
# guest data are exactly as before. Includes an NBD export holding a node
# and a second operation while one runs.

import os
import time

import qbtest
from qbtest import ok, eq, Disk, MiB, SnapVM, CMD_TIMEOUT


def main(env):
    vm = SnapVM(env, disks=[Disk("vda", image="vm.qcow2")])
    p = env.path
    vm.write(0xa1, 0)
    vm.create("s1")
    vm.write(0xb2, 0)
    vm.write(0xb2, MiB)
    vm.create("s2")
    vm.write(0xc3, 2 * MiB)
    vm.revert("s1")                     # s1-1
    vm.write(0xd4, 3 * MiB)
    vm.switch("main")                   # main: vm.s2 -> vm.s1 -> vm.qcow2
    err = vm.expect_error

    # ---- unknown names ------------------------------------------------------
    err("qbranch-snapshot-revert", {"name": "nope"}, "revert unknown")
    err("qbranch-snapshot-delete", {"name": "nope"}, "delete unknown")
    err("qbranch-snapshot-delete", {"name": "nope", "mode": "children"},
        "delete unknown, children")
    err("qbranch-snapshot-edit", {"name": "nope", "description": "x"},
        "edit unknown")
    err("qbranch-branch-switch", {"branch": "nope"}, "switch unknown")
    err("qbranch-branch-delete", {"branch": "nope"}, "branch-delete unknown")

    # ---- duplicate names ----------------------------------------------------
    err("qbranch-snapshot-create", {"name": "s1"}, "create a duplicate")
    err("qbranch-snapshot-revert", {"name": "s1", "branch": "s1-1"},
        "revert into an existing branch name")
    err("qbranch-snapshot-revert", {"name": "s2", "branch": "main"},
        "revert into the attached branch's name")
    err("qbranch-snapshot-edit", {"name": "s2", "new-name": "s1"},
        "rename onto an existing snapshot")

    # ---- unsafe names -------------------------------------------------------
    for bad in ("../x", "a/b", "", "x y", "a" * 65, ".hidden", "-x", "x\n",
                "é"):
        err("qbranch-snapshot-create", {"name": bad},
            "create with unsafe name %r" % bad)
    for bad in ("../x", "a/b", "", "x y", "a" * 65):
        err("qbranch-snapshot-revert", {"name": "s1", "branch": bad},
            "revert with unsafe branch name %r" % bad)
        err("qbranch-snapshot-edit", {"name": "s1", "new-name": bad},
            "rename to unsafe name %r" % bad)
    err("qbranch-snapshot-revert", {"name": "s1", "state": "sleeping"},
        "revert with an unknown state")

    # ---- overlay paths --------------------------------------------------------
    outside = "/tmp/qbt-outside-%d" % os.getpid()
    os.makedirs(outside, exist_ok=True)
    try:
        for f, why in ((outside + "/x.qcow2", "outside the allowed dirs"),
                       (p("../x.qcow2"), "traversal out of the disk's dir"),
                       (p("vm.qcow2"), "the original image (exists)"),
                       (p("vm.s1"), "an existing overlay")):
            err("qbranch-snapshot-revert",
                {"name": "s1", "disks": [{"device": "vda", "file": f}]},
                "revert with overlay %s" % why)
            err("qbranch-snapshot-create",
                {"name": "s9", "disks": [{"device": "vda", "file": f}]},
                "create with overlay %s" % why)
        ok(not os.listdir(outside), "nothing created outside")
    finally:
        for f in os.listdir(outside):
            os.unlink(os.path.join(outside, f))
        os.rmdir(outside)
    with open(p("vm.s9"), "w") as f:
        f.write("someone else's file\n")
    err("qbranch-snapshot-create", {"name": "s9"},
        "create whose default overlay vm.s9 exists")
    eq(open(p("vm.s9")).read(), "someone else's file\n",
       "the existing vm.s9 is untouched")
    os.unlink(p("vm.s9"))
    err("qbranch-snapshot-create",
        {"name": "s9", "disks": [{"device": "vdz"}]}, "create, unknown disk")

    # ---- destructive deletes of what the attached branch needs -------------
    err("qbranch-snapshot-delete", {"name": "s2", "mode": "children"},
        "children-delete of the attached branch's base")
    err("qbranch-snapshot-delete", {"name": "s1", "mode": "children-only"},
        "children-only delete above the attached branch")
    err("qbranch-branch-delete", {"branch": "main"},
        "branch-delete of the attached branch")

    # ---- an NBD export holds a node ------------------------------------------
    env.nbd_start(vm.c)
    top = env.root_node(vm.c, "vda")
    env.export_add(vm.c, top, name="hold")
    err("qbranch-snapshot-create", {"name": "held"},
        "create while an NBD export holds the top node")
    err("qbranch-snapshot-revert", {"name": "s1"},
        "revert while an NBD export holds the top node")
    err("qbranch-branch-switch", {"branch": "s1-1"},
        "switch while an NBD export holds the top node")
    ok("hold" in env.exports(vm.c), "the client's export is still there")
    env.export_del(vm.c, "hold")
    env.export_add(vm.c, vm.node_of(p("vm.s1")), name="hold")
    err("qbranch-snapshot-delete", {"name": "s2"},
        "merge-delete while an NBD export holds the frozen node it merges")
    env.export_del(vm.c, "hold")

    # ---- after all that, everything still works ------------------------------
    vm.check_everything("after the errors")
    vm.create("a" * 64)
    vm.create("Z9._+-x")
    vm.check_tree("64 characters and the whole safe set are accepted")

    # ---- a second operation while one runs ----------------------------------
    # bigsnap's frozen image holds 48 MiB: deleting it merges (the small
    # overlay on it goes down into it), while a second operation comes.
    vm.revert("s1", branch="big")
    env.write(vm.c, "vda", 0x77, 8 * MiB, 48 * MiB)
    vm.create("bigsnap")
    vm.write(0x88, 4 * MiB)
    c2 = vm.proxy.client(negotiate=True, timeout=CMD_TIMEOUT)
    vm.c.send_json({"execute": "qbranch-snapshot-delete",
                    "arguments": {"name": "bigsnap"}, "id": "first"})
    time.sleep(0.005)
    c2.send_json({"execute": "qbranch-snapshot-create",
                   "arguments": {"name": "second"}, "id": "second"})
    r2 = c2.recv_reply(CMD_TIMEOUT)
    r1 = vm.c.recv_reply(CMD_TIMEOUT * 3)
    eq(r1.get("return"), {}, "the first operation (a merge) succeeds")
    progress = [e.get("data", {}) for e in vm.c.events
                if e.get("event") == "QBRANCH_PROGRESS"]
    ok(progress and all({"operation", "current", "total"} <= set(d)
                        for d in progress),
       "the merge reported QBRANCH_PROGRESS events (operation, current, "
       "total)", "events seen: %r" % [e.get("event") for e in vm.c.events])
    qbtest.diag("second operation's reply: %s" % r2.raw.decode().strip())
    ok(r2.err_class == "GenericError",
       "a second operation while one runs is refused",
       "reply: %r" % r2.raw)
    # The model: bigsnap merged away, no "second".
    vm.snaps.pop("bigsnap")
    vm.branches["big"]["base"] = "s1"
    vm.check_tree("tree after the concurrent pair: bigsnap gone, no second")
    ok(env.check(vm.c, "vda", 0x77, 8 * MiB, 48 * MiB),
       "the merged 48 MiB still read back")
    vm.check_data("branch big reads its data after the merge")


qbtest.run(main, timeout=120)

#!/usr/bin/env python3
# Revert to a snapshot that has children, keep every branch, switch back
# to each and read its data; guest reset and run state on revert/switch;
# branch-delete.

import os

import qbtest
from qbtest import ok, eq, pick, Disk, MiB, SnapVM

X, M, M2, P1, P2, Q, R = 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77


def resets(vm):
    """RESET events the client has seen so far (and forget them)."""
    while True:                     # take in what has arrived
        try:
            m = vm.c.recv(0.3)
        except qbtest.Timeout:
            break
        (vm.c.events if m.is_event else vm.c.replies).append(m)
    n = [e for e in vm.c.events if e.get("event") == "RESET"]
    vm.c.events = [e for e in vm.c.events if e.get("event") != "RESET"]
    return len(n)


def main(env):
    vm = SnapVM(env, disks=[Disk("vda", image="vm.qcow2")], cont=True)
    stem = env.path("vm")

    vm.write(X, 0)
    vm.create("s1")
    vm.write(M, 0)
    vm.write(M, 1 * MiB)
    vm.create("s2")                     # s1 -> s2 on main
    vm.write(M2, 0)                     # main after s2
    vm.check_data("main: M2 at 0, M at 1M")

    # ---- revert to s1, which has a child ---------------------------------
    resets(vm)
    b1 = vm.revert("s1")
    eq(b1.get("name"), "s1-1", "revert s1 -> branch s1-1")
    ok(resets(vm) >= 1, "the guest was reset by the revert (RESET event)")
    vm.check_data("s1-1 reads s1's data: X at 0, zeroes at 1M")
    vm.write(P1, 0)
    vm.write(P1, 2 * MiB)

    b2 = vm.revert("s1")
    eq(b2.get("name"), "s1-2", "second revert s1 -> branch s1-2")
    vm.check_data("s1-2 reads X at 0 only (nothing of s1-1)")
    vm.write(P2, 0)
    vm.write(P2, 3 * MiB)
    vm.create("s3")                     # s1 -> s3 on s1-2
    vm.write(Q, 0)                      # s1-2 after s3
    vm.check_tree("tree: s1 -> {s2, s3}; branches main, s1-1, s1-2")

    q = {s["name"]: s for s in vm.query_snapshots()["snapshots"]}
    eq(sorted(q["s1"]["children"]), ["s2", "s3"], "s1 has children s2, s3")
    eq({b["name"]: b["attached"] for b in vm.query_branches()},
       {"main": False, "s1-1": False, "s1-2": True},
       "exactly one branch attached: s1-2")

    # ---- switch back to each branch ---------------------------------------
    resets(vm)
    r = vm.switch("main")
    eq(pick(r), {"name": "main", "base": "s2", "attached": True,
                 "disks": [{"device": "vda", "file": stem + ".s2"}]},
       "switch main returns the branch object, on vm.s2 as left")
    ok(resets(vm) >= 1, "the guest was reset by the switch (RESET event)")
    eq(vm.running(), True, "running before switch -> running after")
    vm.check_data("main still reads M2 at 0, M at 1M (written before the "
                  "reverts)")
    eq(vm.query_snapshots().get("current"), "s2", "current follows: s2")
    eq(vm.chain(), [stem + ".s2", stem + ".s1", env.path("vm.qcow2")],
       "main's chain as it was left")

    vm.switch("s1-1", state="paused")
    eq(vm.running(), False, "switch with state paused -> paused")
    vm.check_data("s1-1 still reads P1 at 0 and 2M")
    eq(vm.query_snapshots().get("current"), "s1", "current follows: s1")
    vm.write(R, 4 * MiB)                # more work on s1-1 after switching

    vm.switch("s1-2")
    eq(vm.running(), False, "switch, default state -> as before (paused)")
    vm.check_data("s1-2 reads Q at 0, P2 at 3M")
    eq(vm.query_snapshots().get("current"), "s3", "current follows: s3")

    vm.switch("s1-1", state="running")
    eq(vm.running(), True, "switch with state running -> running")
    vm.check_data("s1-1 kept the write made after switching to it")

    # ---- the snapshots themselves, children of the reverted-to one -------
    vm.check_everything("after switching around")
    vm.check_frozen("frozen images untouched by reverts and switches")

    # ---- branch-delete ----------------------------------------------------
    eq(vm.attached, "s1-1", "(s1-1 attached)")
    ok(os.path.isfile(stem + ".s1-2") and os.path.isfile(stem + ".s3"),
       "s1-2's overlay vm.s3 and s3's frozen image vm.s1-2 exist")
    vm.switch("main")
    overlay = [d["file"] for b in vm.query_branches() if b["name"] == "s1-1"
               for d in b["disks"]]
    eq(overlay, [stem + ".s1-1"], "s1-1's overlay is vm.s1-1")
    r = vm.branch_delete("s1-1")
    eq(r, {}, "branch-delete s1-1 (detached) returns {}")
    ok(not os.path.exists(stem + ".s1-1"), "its overlay vm.s1-1 is gone")
    vm.check_tree("s1-1 no longer listed; snapshots untouched")
    vm.check_data("main still reads its data")
    vm.check_files("no stray files after branch-delete")

    vm.expect_error("qbranch-branch-delete", {"branch": "main"},
                    "branch-delete of the attached branch is refused")
    vm.expect_error("qbranch-branch-delete", {"branch": "s1-1"},
                    "branch-delete of a deleted branch: unknown")
    vm.expect_error("qbranch-branch-switch", {"branch": "nope"},
                    "switch to an unknown branch")

    # The name and file are free again: the next revert to s1 reuses N=1.
    b = vm.revert("s1")
    eq(pick(b, ("name", "disks")),
       {"name": "s1-1", "disks": [{"device": "vda",
                                   "file": stem + ".s1-1"}]},
       "revert s1 after deleting s1-1: first free N is 1 again")
    vm.check_data("the new s1-1 reads X only (not the deleted branch's data)")

    # Deleting the branch holding a snapshot's only child chain keeps the
    # snapshot: s3 still reads its data.
    vm.switch("main")
    vm.branch_delete("s1-2")
    ok(not os.path.exists(stem + ".s3") and os.path.isfile(stem + ".s1-2"),
       "branch-delete s1-2 removed its overlay vm.s3, kept s3's frozen "
       "image vm.s1-2")
    vm.check_everything("after deleting s1-2")

    # revert with discard: the branch left is deleted with its overlay.
    eq(vm.attached, "main", "(main attached)")
    vm.switch("s1-1")
    b = vm.revert("s2", discard=True)
    names = {x["name"] for x in vm.query_branches()}
    ok("s1-1" not in names and b.get("name") in names,
       "revert with discard: the branch left (s1-1) is gone", repr(names))
    ok(not os.path.exists(stem + ".s1-1"), "and so is its overlay vm.s1-1")
    vm.check_everything("after a discarding revert")
    vm.check_files("no stray files at the end")


qbtest.run(main, timeout=90)

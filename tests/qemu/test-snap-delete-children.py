#!/usr/bin/env python3
# Delete with mode "children" and "children-only" in seed 001's tree
# A->B->D, A->C->E: what the attached branch needs is refused (nothing
# changes); at a leaf, in the middle and where the attached branch grows
# from the snapshot itself, the snapshots and the branches growing from
# them go, with their files; everything else reads its own data.

import os

import qbtest
from qbtest import ok, eq, Disk, SnapVM, seed001_tree


def delete(vm, name, mode, text, gone_files=(), kept_files=()):
    r = vm.delete(name, mode)
    eq(r, {}, "%s: returns {}" % text)
    gone = [f for f in gone_files if os.path.exists(vm.env.path(f))]
    kept = [f for f in kept_files if not os.path.exists(vm.env.path(f))]
    ok(not gone and not kept, "%s: files removed and kept as expected"
       % text, "still there: %s" % gone, "missing: %s" % kept)
    vm.check_everything(text)
    vm.check_files("%s: no file left that nothing needs" % text)
    vm.check_originals("%s: original image exists, unchanged" % text)


def main(env):
    # ---- VM 1 --------------------------------------------------------------
    vm = SnapVM(env, disks=[Disk("vda", image="vm.qcow2")])
    seed001_tree(vm)
    # A-1 (attached) grows from E: A, C, E are needed.
    for name in ("A", "C", "E"):
        vm.expect_error("qbranch-snapshot-delete",
                        {"name": name, "mode": "children"},
                        "children %s while the attached branch needs it"
                        % name)
    for name in ("A", "C"):
        vm.expect_error("qbranch-snapshot-delete",
                        {"name": name, "mode": "children-only"},
                        "children-only %s while the attached branch grows "
                        "from a descendant" % name)
    vm.expect_error("qbranch-snapshot-delete",
                    {"name": "A", "mode": "bogus"}, "unknown delete mode")

    vm.switch("main")
    delete(vm, "E", "children", "children E (leaf; detached A-1 on it)",
           gone_files=("vm.C", "vm.E"), kept_files=("vm.A-1",))
    ok("A-1" not in {b["name"] for b in vm.query_branches()},
       "branch A-1 went with E")

    vm.expect_error("qbranch-snapshot-delete",
                    {"name": "B", "mode": "children-only"},
                    "children-only B while main (from D) is attached")
    vm.revert("A")
    delete(vm, "B", "children-only",
           "children-only B (middle; D and main go, B stays)",
           gone_files=("vm.B", "vm.D"), kept_files=("vm.A",))
    delete(vm, "B", "children", "children B (now a leaf, no branches)",
           gone_files=("vm.A",), kept_files=("vm.qcow2",))
    vm.qemu.stop()
    vm.proxy.stop()

    # ---- VM 2 --------------------------------------------------------------
    env2 = qbtest.Env()
    vm = SnapVM(env2, disks=[Disk("vda", image="vm.qcow2")])
    seed001_tree(vm)
    delete(vm, "B", "children", "children B (middle; B, D and main go)",
           gone_files=("vm.A", "vm.B", "vm.D"))
    eq(sorted(b["name"] for b in vm.query_branches()), ["A-1"],
       "only A-1 is left")
    vm.revert("C")                      # C-1, attached, grows from C itself
    delete(vm, "C", "children-only",
           "children-only C with the attached branch on C itself "
           "(E and A-1 go)", gone_files=("vm.C", "vm.E"),
           kept_files=("vm.A-1",))


qbtest.run(main, timeout=120)

#!/usr/bin/env python3
# Delete in the default mode (merge) in seed 001's tree A->B->D, A->C->E:
# in the middle, at a leaf (with a detached and with the attached branch
# growing from it), at the branch point (the root), and finally every
# snapshot. After each delete every remaining snapshot and branch reads
# its own data, no file is left that nothing needs, and the original image
# is neither modified nor deleted.

import os

import qbtest
from qbtest import ok, eq, Disk, SnapVM, seed001_tree


def delete(vm, name, text, mode=None):
    r = vm.delete(name, mode)
    eq(r, {}, "%s: delete %s returns {}" % (text, name))
    vm.check_everything(text)
    vm.check_files("%s: no file left that nothing needs" % text)
    vm.check_originals("%s: original image exists, unchanged" % text)


def main(env):
    # ---- VM 1: the branch point first ------------------------------------
    vm = SnapVM(env, disks=[Disk("vda", image="vm.qcow2")])
    seed001_tree(vm)
    vm.check_everything("seed 001 tree built")
    vm.check_files("seed 001 tree: files as expected")

    delete(vm, "A", "merge A (branch point, root)")
    q = {s["name"]: s for s in vm.query_snapshots()["snapshots"]}
    eq((q.get("B", {}).get("parent"), q.get("C", {}).get("parent")),
       (None, None), "B and C became roots")
    ok(os.path.isfile(env.path("vm.qcow2")),
       "vm.qcow2 stays as the unnamed base of B and C")
    delete(vm, "B", "then merge B (root with one child)")
    delete(vm, "D", "then merge D (leaf, detached branch main on it)")
    vm.qemu.stop()
    vm.proxy.stop()

    # ---- VM 2: middle, leaves, then everything ---------------------------
    env2 = qbtest.Env()
    vm = SnapVM(env2, disks=[Disk("vda", image="vm.qcow2")])
    seed001_tree(vm)
    delete(vm, "B", "merge B (middle: A->B->D)")
    q = {s["name"]: s for s in vm.query_snapshots()["snapshots"]}
    eq(q.get("D", {}).get("parent"), "A", "D's parent is now A")
    delete(vm, "E", "merge E (leaf, attached branch A-1 on it)")
    eq(vm.query_snapshots().get("current"), "C", "current is now C")
    vm.write(0x2e, 8 * qbtest.MiB)
    vm.check_data("the attached branch is still writable after the merge")
    delete(vm, "D", "merge D (leaf, detached branch main on it)")
    delete(vm, "A", "merge A (root)")
    delete(vm, "C", "merge C (the last snapshot)")
    eq(vm.query_snapshots(), {"snapshots": [], "current": None},
       "no snapshots left, no current")
    eq(sorted((b["name"], b["base"]) for b in vm.query_branches()),
       [("A-1", None), ("main", None)],
       "both branches remain, on the original image as unnamed base")
    ok(os.path.isfile(env2.path("vm.qcow2")), "vm.qcow2 still exists")


qbtest.run(main, timeout=120)

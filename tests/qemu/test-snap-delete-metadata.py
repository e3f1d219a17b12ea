#!/usr/bin/env python3
# Delete with mode "metadata-only" in seed 001's tree A->B->D, A->C->E: at
# the branch point (root), in the middle and at a leaf. The snapshot leaves
# the tree, its children move to its parent, no file is touched, and every
# remaining snapshot and branch reads its own data.

import qbtest
from qbtest import ok, eq, Disk, SnapVM, seed001_tree


def main(env):
    vm = SnapVM(env, disks=[Disk("vda", image="vm.qcow2")])
    seed001_tree(vm)
    for name, text in (("A", "A (branch point, root)"),
                       ("B", "B (root with a child now)"),
                       ("D", "D (leaf, detached branch main on it)"),
                       ("E", "E (leaf, attached branch A-1 on it)")):
        before = vm.file_hashes()
        eq(vm.delete(name, "metadata-only"), {},
           "metadata-only %s: returns {}" % text)
        eq(vm.file_hashes(), before,
           "metadata-only %s: no image file created, removed or changed"
           % text)
        names = {s["name"] for s in vm.query_snapshots()["snapshots"]}
        ok(name not in names, "metadata-only %s: forgotten" % text)
        vm.check_everything("after metadata-only %s" % text)
        vm.check_files("after metadata-only %s: every needed file is "
                       "there" % text)
        vm.check_originals("after metadata-only %s: original unchanged"
                           % text)
    q = {s["name"]: s for s in vm.query_snapshots()["snapshots"]}
    eq(q.get("C", {}).get("parent"), None, "C is a root")
    vm.expect_error("qbranch-snapshot-delete",
                    {"name": "A", "mode": "metadata-only"},
                    "metadata-only of a forgotten snapshot: unknown")


qbtest.run(main, timeout=90)

#!/usr/bin/env python3
# Two writable disks (vda, vdb) and a read-only one (vdc): create, revert
# and switch move both writable disks together, the read-only disk is left
# alone; a create whose second overlay cannot be made fails as a whole and
# leaves no overlay of the first disk behind.

import os

import qbtest
from qbtest import ok, eq, Disk, MiB, SnapVM, sha256


def files_of(obj):
    return sorted((d.get("device"), d.get("file"))
                  for d in obj.get("disks", []))


def main(env):
    vm = SnapVM(env, disks=[Disk("vda"), Disk("vdb"),
                            Disk("vdc", readonly=True)])
    p = env.path
    ro_hash = sha256(p("vdc.qcow2"))

    vm.write(0xa1, 0, "vda")
    vm.write(0xb1, 0, "vdb")
    vm.write(0xb1, MiB, "vdb")
    s1 = vm.create("s1")
    eq(files_of(s1), [("vda", p("vda.qcow2")), ("vdb", p("vdb.qcow2"))],
       "s1 froze vda.qcow2 and vdb.qcow2, not the read-only vdc")
    ok(os.path.isfile(p("vda.s1")) and os.path.isfile(p("vdb.s1")) and
       not os.path.exists(p("vdc.s1")), "overlays vda.s1 and vdb.s1, none "
       "for vdc")
    eq(sorted(d["device"] for d in vm.query_disks()), ["vda", "vdb"],
       "qbranch-query-disks lists the two writable disks")

    vm.write(0xa2, 0, "vda")
    vm.write(0xb2, 0, "vdb")
    vm.create("s2")
    vm.write(0xa3, 0, "vda")
    vm.write(0xb3, 2 * MiB, "vdb")
    vm.check_data("main: both disks read their latest data")

    br = vm.revert("s1")
    eq(files_of(br), [("vda", p("vda.s1-1")), ("vdb", p("vdb.s1-1"))],
       "revert s1: new overlays vda.s1-1 and vdb.s1-1")
    vm.check_data("after revert s1: both disks read s1's data")
    eq((len(vm.chain("vda")), len(vm.chain("vdb"))), (2, 2),
       "both chains have depth 2 after revert to s1")
    vm.write(0xa4, 3 * MiB, "vda")

    vm.switch("main")
    vm.check_data("switch main: both disks read main's data")
    vm.check_everything("two disks")

    # ---- atomicity: the second disk's overlay cannot be created ---------
    with open(p("vdb.s3"), "w") as f:
        f.write("not an image; must not be overwritten\n")
    squat = sha256(p("vdb.s3"))
    running = vm.running()
    vm.expect_error("qbranch-snapshot-create", {"name": "s3"},
                    "create s3 while vdb.s3 exists")
    ok(not os.path.exists(p("vda.s3")), "no leftover overlay vda.s3")
    eq(sha256(p("vdb.s3")), squat, "the existing vdb.s3 was not touched")
    eq(vm.running(), running, "run state unchanged by the failed create")
    eq([c[0] for c in (vm.chain("vda"), vm.chain("vdb"))],
       [p("vda.s2"), p("vdb.s2")], "both disks still on main's overlays")

    os.unlink(p("vdb.s3"))
    s3 = vm.create("s3")
    eq(files_of(s3), [("vda", p("vda.s2")), ("vdb", p("vdb.s2"))],
       "with the obstacle gone, s3 is created on both disks")
    vm.write(0xa5, 0, "vda")
    vm.write(0xb5, 0, "vdb")
    vm.revert("s2")
    vm.check_data("revert s2: both disks")
    vm.delete("s2")
    vm.check_everything("after merging s2 on both disks")
    vm.check_files("no stray files on either disk")
    eq(sha256(p("vdc.qcow2")), ro_hash, "read-only vdc.qcow2 untouched")
    vm.check_originals("originals unchanged since s1")


qbtest.run(main, timeout=90)

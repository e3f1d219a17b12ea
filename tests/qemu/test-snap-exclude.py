#!/usr/bin/env python3
# A disk left out of the tree (disks: [{device, exclude: true}]): it gets
# no overlay, no snapshot records it, and every branch shares it, so
# reverts and switches leave its data as it is, while the other disk moves.
# The exclusion holds for later snapshots; it is refused for a disk a
# snapshot holds already, for an unknown device, with a file, and when it
# would leave nothing to snapshot, each time with the tree unchanged.

import os

import qbtest
from qbtest import ok, eq, Disk, MiB


def main(env):
    vm = qbtest.SnapVM(env, disks=[Disk("vda"), Disk("vdb"), Disk("vdc")])
    p = env.path

    vm.write(0xa1, 0, "vda")
    vm.write(0xb1, 0, "vdb")
    vm.write(0xc1, 0, "vdc")

    # ---- refusals before anything is excluded ---------------------------
    vm.expect_error("qbranch-snapshot-create",
                    {"name": "x", "disks": [{"device": "vdz",
                                             "exclude": True}]},
                    "excluding an unknown device")
    vm.expect_error("qbranch-snapshot-create",
                    {"name": "x", "disks": [{"device": "vdb",
                                             "exclude": True,
                                             "file": p("vdb.x")}]},
                    "excluding a disk and naming its file")
    vm.expect_error("qbranch-snapshot-create",
                    {"name": "x", "disks": [{"device": d, "exclude": True}
                                            for d in ("vda", "vdb", "vdc")]},
                    "excluding every disk")
    ok(not any(os.path.exists(p(d + ".x")) for d in ("vda", "vdb", "vdc")),
       "and made no overlay")

    # ---- s1 without vdb -------------------------------------------------
    s1 = vm.create("s1", disks=[{"device": "vdb", "exclude": True}])
    eq(sorted(d["device"] for d in s1["disks"]), ["vda", "vdc"],
       "s1 records vda and vdc only")
    ok(os.path.isfile(p("vda.s1")) and os.path.isfile(p("vdc.s1")) and
       not os.path.exists(p("vdb.s1")), "overlays for vda and vdc, none for "
       "vdb")
    eq(vm.chain("vdb"), [p("vdb.qcow2")], "vdb still runs on its own image")
    disks = {d["device"]: d.get("managed") for d in vm.query_disks()}
    eq(disks, {"vda": True, "vdb": False, "vdc": True},
       "qbranch-query-disks: vdb is not managed")

    vm.write(0xa2, MiB, "vda")
    vm.write(0xb2, MiB, "vdb")
    s2 = vm.create("s2")
    eq(sorted(d["device"] for d in s2["disks"]), ["vda", "vdc"],
       "s2, asked for every disk, still leaves vdb out")
    vm.write(0xa3, 2 * MiB, "vda")
    vm.write(0xb3, 2 * MiB, "vdb")
    vm.check_data("main: all three disks read their latest data")

    br = vm.revert("s1")
    vm.check_data("revert s1: vda and vdc read s1's data, vdb keeps "
                  "everything written since")
    eq(vm.chain("vdb"), [p("vdb.qcow2")], "the revert left vdb alone")
    vm.write(0xb4, 3 * MiB, "vdb")
    vm.switch("main")
    vm.check_data("switch main: vdb reads the write made on the other "
                  "branch")
    vm.branch_delete(br["name"])
    ok(os.path.isfile(p("vdb.qcow2")), "deleting a branch keeps vdb's image")

    vm.delete("s2")
    vm.check_data("after merging s2")
    vm.check_everything("a tree without vdb")
    vm.check_files("no stray files")

    # ---- a disk already in a snapshot cannot leave ----------------------
    e = vm.expect_error("qbranch-snapshot-create",
                        {"name": "x", "disks": [{"device": "vda",
                                                 "exclude": True}]},
                        "excluding vda, which s1 holds")
    ok("s1" in (e.err_desc or ""), "the error names the snapshot: %s"
       % e.err_desc)

    # ---- persisted ------------------------------------------------------
    vm.restart_proxy()
    s3 = vm.create("s3")
    eq(sorted(d["device"] for d in s3["disks"]), ["vda", "vdc"],
       "after a restart of qbranchd, vdb is still left out")
    vm.check_everything("after the restart")


if __name__ == "__main__":
    qbtest.run(main)

#!/usr/bin/env python3
# A merge-delete moves the fewer bytes: when the branch overlay sitting on
# the snapshot's image holds less data than that image, its data goes down
# (block-commit, the branch then runs on the merged image, and the small
# overlay file goes); otherwise the image's data comes up (block-stream,
# the image's file goes). Checked by which file survives, for the attached
# branch, a detached branch, and an image a child snapshot sits on (always
# stream), with the guest data of every snapshot and branch each time.

import os

import qbtest
from qbtest import ok, eq, MiB, REGION


def big(vm, pattern, at):
    """Sixteen regions (1 MiB) of pattern from offset at."""
    for k in range(16):
        vm.write(pattern, at + k * REGION)


def overlay(vm, branch):
    for b in vm.query_branches():
        if b["name"] == branch:
            return b["disks"][0]["file"]
    return None


def main(env):
    vm = qbtest.SnapVM(env)
    p = env.path

    vm.write(0x01, 0)
    vm.create("root")

    # ---- the attached overlay is small: commit ------------------------------
    big(vm, 0x11, 1 * MiB)              # main's overlay vda.root: 1 MiB
    vm.create("a")                      # which a freezes
    vm.write(0x12, 0)                   # main's new overlay vda.a: 64 KiB
    eq(overlay(vm, "main"), p("vda.a"), "main runs on vda.a before")
    size = {s["name"]: s.get("size") for s in
            vm.query_snapshots()["snapshots"]}
    ok(isinstance(size.get("a"), int) and size["a"] >= MiB,
       "qbranch-query-snapshots: a's image takes at least 1 MiB (size %r)"
       % size.get("a"))
    main = [b for b in vm.query_branches() if b["name"] == "main"][0]
    ok(isinstance(main.get("size"), int) and 0 < main["size"] < MiB,
       "qbranch-query-branches: main's overlay takes less (size %r)"
       % main.get("size"))
    vm.delete("a")
    eq(overlay(vm, "main"), p("vda.root"),
       "commit: main now runs on vda.root, the image merged into")
    ok(not os.path.exists(p("vda.a")), "the small overlay vda.a is gone")
    eq(vm.chain(), [p("vda.root"), p("vda.qcow2")], "QEMU runs on vda.root")
    vm.check_data("main reads its data after the commit")
    vm.check_everything("after a commit into the attached branch")
    vm.check_files("no stray files after the commit")

    # ---- the overlay is big: stream ---------------------------------------
    vm.create("b")                      # b freezes vda.root: 1 MiB
    big(vm, 0x21, 2 * MiB)              # main's overlay vda.b: 2 MiB
    big(vm, 0x22, 3 * MiB)
    vm.delete("b")
    eq(overlay(vm, "main"), p("vda.b"),
       "stream: main still runs on its own overlay vda.b")
    ok(not os.path.exists(p("vda.root")), "the smaller frozen image is gone")
    vm.check_everything("after a stream into the attached branch")

    # ---- a detached branch's small overlay: commit -------------------------
    vm.create("c")                      # c freezes vda.b: 3 MiB
    vm.write(0x32, 0)                   # main's overlay vda.c: 64 KiB
    vm.revert("root")                   # main detached on vm.c
    vm.write(0x33, 4 * MiB)
    vm.delete("c")
    eq(overlay(vm, "main"), p("vda.b"),
       "commit: detached main now ends in vda.b")
    ok(not os.path.exists(p("vda.c")), "its small overlay vda.c is gone")
    vm.switch("main")
    vm.check_data("main, switched to, reads its data")
    vm.check_everything("after a commit into a detached branch")

    # ---- a child snapshot sits on it: stream, however small ----------------
    vm.create("d")                      # d freezes vda.b: 3 MiB
    vm.write(0x42, 0)                   # vda.d: 64 KiB
    vm.create("e")                      # e freezes vda.d, which sits on vm.b
    vm.delete("d")
    e = [s for s in vm.query_snapshots()["snapshots"] if s["name"] == "e"]
    eq(e[0]["disks"][0]["file"], p("vda.d"),
       "stream: e keeps its own image vda.d, though it is the smaller")
    ok(not os.path.exists(p("vda.b")), "d's image vda.b is gone")
    vm.check_everything("after a stream into a child snapshot's image")
    vm.check_files("no stray files at the end")
    vm.check_originals("the original image was never written")


if __name__ == "__main__":
    qbtest.run(main, timeout=180)

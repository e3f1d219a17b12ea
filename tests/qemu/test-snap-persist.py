#!/usr/bin/env python3
# The tree lives in --state-dir: after qbranchd restarts (SIGTERM, same
# arguments) every query answers the same and operations work on; after
# QEMU restarts on its original command line (-S, so on the original,
# now frozen, image), the device is put back on its branch before the
# guest runs.

import os

import qbtest
from qbtest import ok, eq, Disk, MiB, SnapVM, CMD_TIMEOUT


def everything(vm):
    return {"snapshots": vm.query_snapshots(),
            "branches": vm.query_branches(), "disks": vm.query_disks()}


def main(env):
    vm = SnapVM(env, disks=[Disk("vda", image="vm.qcow2")])
    vm.write(0xa1, 0)
    vm.create("s1", description="first")
    vm.write(0xb2, 0)
    vm.write(0xb2, MiB)
    vm.create("s2")
    vm.write(0xc3, 2 * MiB)
    vm.revert("s1")
    vm.write(0xd4, 3 * MiB)
    vm.create("s3")
    vm.write(0xe5, 0)
    vm.edit("s3", description="edited")
    before = everything(vm)
    ok(os.listdir(vm.state_dir), "the state directory is not empty",
       "contents: %r" % os.listdir(vm.state_dir))

    # ---- restart qbranchd ---------------------------------------------------
    vm.restart_proxy()
    eq(everything(vm), before, "after a qbranchd restart: snapshots, "
       "branches and disks answer exactly as before")
    vm.check_tree("after restart: tree as expected")
    vm.check_data("after restart: attached branch data intact")
    vm.switch("main")
    vm.check_data("after restart: switch to main works, main's data")
    vm.revert("s3")
    vm.write(0xf6, 4 * MiB)
    vm.create("s4")
    vm.delete("s1")
    vm.check_everything("after restart, create, revert, switch, delete")
    vm.check_files("after restart: no stray files")

    before = everything(vm)
    vm.restart_proxy()
    eq(everything(vm), before, "after a second restart: identical again")

    ok(len(before["snapshots"]["snapshots"]) == 3,
       "three snapshots survive (s2, s3, s4)",
       repr([s.get("name") for s in before["snapshots"]["snapshots"]]))

    # ---- restart QEMU on its original command line ---------------------------
    vm.write(0x17, 5 * MiB)
    want_top = vm.chain()[0]
    vm.ret("quit")
    vm.qemu.wait(CMD_TIMEOUT)
    vm.c.close()
    vm.qemu = env.start_qemu(disks=vm.disk_specs)
    vm.c = vm.proxy.client(negotiate=True, timeout=15)
    vm.c.timeout = CMD_TIMEOUT
    qbtest.wait_for(lambda: vm.chain()[0] == want_top,
                    timeout=CMD_TIMEOUT, step=0.2)
    eq(vm.chain()[0], want_top, "after QEMU restarts on the original "
       "image, vda is back on the attached branch's overlay")
    st = vm.status()
    ok(not st.get("running"), "the guest has not run meanwhile (-S)",
       repr(st))
    vm.check_data("after QEMU restart: the branch's data, last write "
                  "included")
    eq(everything(vm)["snapshots"], before["snapshots"],
       "after QEMU restart: snapshots unchanged")
    vm.ret("cont")
    vm.check_everything("after QEMU restart")
    vm.check_originals("original unchanged across restarts")


qbtest.run(main, timeout=90)

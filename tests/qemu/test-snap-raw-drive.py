#!/usr/bin/env python3
# A raw base image (-blockdev driver=raw), then legacy -drive disks (qcow2
# and raw, generated node names): create, revert, switch and delete work,
# data checks pass, and the raw original is never written after the first
# snapshot froze it, nor streamed whole into an overlay.

import json
import os
import subprocess

import qbtest
from qbtest import ok, eq, Disk, MiB, SnapVM, QEMU_IO, QEMU_IMG


def actual_size(path):
    r = subprocess.run([QEMU_IMG, "info", "-U", "--output=json", path],
                       stdout=subprocess.PIPE, check=True, timeout=10)
    return json.loads(r.stdout.decode()).get("actual-size", 0)


def raw_blockdev(env):
    img = env.path("vda.img")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "raw", img, "64M"],
                   check=True, timeout=10)
    # 32 MiB of data in the raw base, outside the blocks the model checks:
    # had it been streamed into an overlay, that overlay would be big.
    subprocess.run([QEMU_IO, "-f", "raw", "-c", "write -P 0x5a 16M 32M",
                    img], stdout=subprocess.DEVNULL, check=True, timeout=10)
    vm = SnapVM(env, disks=[Disk("vda", fmt="raw")])
    vm.write(0xa1, 0)
    s1 = vm.create("s1")
    eq(s1.get("disks"), [{"device": "vda", "file": img}],
       "raw: s1 froze the raw original vda.img")
    ok(os.path.isfile(env.path("vda.s1")), "raw: overlay vda.s1 (qcow2)")
    eq([x.get("format") for d in vm.query_disks() for x in d["chain"]],
       ["qcow2", "raw"], "raw: chain is qcow2 over raw")
    vm.write(0xb2, 0)
    vm.write(0xc3, MiB)
    vm.create("s2")
    vm.write(0xd4, 0)
    vm.revert("s1")
    vm.check_data("raw: revert s1 reads A, zeroes at 1M")
    ok(env.check(vm.c, "vda", 0x5a, 16 * MiB, MiB),
       "raw: base data at 16M shows through the overlay")
    vm.switch("main")
    vm.check_data("raw: switch main reads D at 0, C at 1M")
    vm.revert("s2", branch="b2")
    vm.write(0xe5, 2 * MiB)
    vm.check_everything("raw")
    vm.check_originals("raw: vda.img unchanged since s1")

    vm.delete("s1")                     # the root: vda.img stays as base
    vm.check_everything("raw: after deleting the root snapshot s1")
    vm.check_files("raw: no stray files")
    vm.check_originals("raw: vda.img exists and is unchanged")
    big = {f: actual_size(f) for f in vm.image_files()
           if f != img and actual_size(f) > 16 * MiB}
    ok(not big, "raw: the raw base was not streamed into any overlay",
       "overlays over 16 MiB: %s" % big)
    vm.qemu.stop()
    vm.proxy.stop()


def legacy_drive(env):
    # Never started (-S, no cont): prelaunch.
    vm = SnapVM(env, disks=[Disk("vda", drive=True),
                            Disk("vdb", fmt="raw", drive=True)], cont=False)
    vm.write(0x11, 0, "vda")
    vm.write(0x12, 0, "vdb")
    s1 = vm.create("s1")
    eq(s1.get("vm-state"), "prelaunch", "-drive: s1 taken in prelaunch")
    eq(vm.running(), False, "-drive: create leaves a prelaunch VM stopped")
    eq(sorted((d["device"], d["file"]) for d in s1.get("disks", [])),
       [("vda", env.path("vda.qcow2")), ("vdb", env.path("vdb.img"))],
       "-drive: s1 froze both drives' images")
    vm.write(0x21, 0, "vda")
    vm.write(0x22, MiB, "vdb")
    vm.create("s2")
    vm.write(0x31, 0, "vda")
    vm.write(0x32, 2 * MiB, "vdb")
    vm.revert("s1")
    eq(vm.running(), False, "-drive: revert of a stopped VM leaves it "
       "stopped")
    vm.check_data("-drive: revert s1 on both drives")
    vm.ret("cont")
    vm.write(0x41, 3 * MiB, "vda")
    vm.switch("main")
    vm.check_data("-drive: switch main on both drives")
    eq(vm.chain("vda"), [env.path("vda.s2"), env.path("vda.s1"),
                         env.path("vda.qcow2")], "-drive: vda's chain")
    vm.check_everything("-drive")
    vm.delete("s2")
    vm.check_everything("-drive: after merging s2")
    vm.check_files("-drive: no stray files")
    vm.check_originals("-drive: originals unchanged since s1")


def main(env):
    raw_blockdev(env)
    legacy_drive(qbtest.Env())


qbtest.run(main, timeout=90)

#!/usr/bin/env python3
# QEMU holds open only what the VM runs on: after creates, reverts (with
# and without discard), switches and a merge, the nodes qbranch opened are
# exactly the images of the attached branch's chain. Nothing leaks, so a
# long-lived VM with many snapshots keeps a small graph and few open files.

import qbtest
from qbtest import eq, MiB, SnapVM


def qb_files(vm):
    """Files of the format nodes qbranch opened (node names qb...)."""
    r = vm.c.cmd("query-named-block-nodes", {"flat": True})
    return sorted(n["file"] for n in r.get("return", [])
                  if n.get("node-name", "").startswith("qb") and
                  n.get("drv") != "file")


def chain_files(vm):
    return sorted(f for f in vm.chain() if f not in vm.originals.values())


def main(env):
    vm = SnapVM(env, disks=["vda", "vdb"])
    vm.write(0x41, 0)
    vm.create("base")
    for i in range(5):
        vm.write(0x50 + i, MiB)
        vm.create("x%d" % i)
        vm.revert("base", discard=True)
    eq(qb_files(vm), sorted(chain_files(vm) + [f for f in vm.chain("vdb")
                                               if f not in
                                               vm.originals.values()]),
       "after 5 create/revert-discard rounds: only the attached chains "
       "are open")
    vm.create("y")
    vm.revert("x3")
    vm.revert("x1", branch="b1")
    vm.write(0x77, 2 * MiB)
    vm.delete("x1")
    got = qb_files(vm)
    want = sorted(set(f for dev in ("vda", "vdb") for f in vm.chain(dev)
                      if f not in vm.originals.values()))
    eq(got, want, "after revert, switch and a merge: only the attached "
       "chains are open")
    vm.check_everything("nothing closed was needed")


qbtest.run(main, timeout=90)

#!/usr/bin/env python3
# QEMU restarted on its original command line, and the guest ran on the
# frozen image before qbranchd saw it: qbranchd stops the VM and refuses
# snapshot commands with an explanation, touching nothing. When QEMU is
# started again properly (-S), the disks go back on their branch and
# everything works, the branch's data intact.

import qbtest
from qbtest import ok, eq, MiB, SnapVM

CMD_TIMEOUT = 15


def main(env):
    vm = SnapVM(env)
    vm.write(0x31, 0)
    vm.create("s1")
    vm.write(0x32, MiB)
    want_top = vm.chain()[0]

    # qbranchd is away while QEMU restarts and its guest runs.
    vm.c.close()
    vm.proxy.stop()
    vm.qemu.direct_client().cmd("quit")
    vm.qemu.wait(CMD_TIMEOUT)
    vm.qemu = env.start_qemu(disks=vm.disk_specs)
    d = vm.qemu.direct_client()
    eq(d.cmd("cont").get("return"), {}, "the guest runs on the original "
       "image, behind qbranchd's back")
    vm.proxy = env.start_proxy(args=vm.proxy_args)
    vm.c = vm.proxy.client(negotiate=True, timeout=CMD_TIMEOUT)
    vm.c.timeout = CMD_TIMEOUT

    st = vm.c.cmd("query-status")
    ok(st.get("return", {}).get("running") is False,
       "qbranchd stopped the VM", repr(st.raw))
    for name, args in (("qbranch-snapshot-create", {"name": "s2"}),
                       ("qbranch-snapshot-revert", {"name": "s1"}),
                       ("qbranch-query-snapshots", None)):
        r = vm.c.cmd(name, args)
        ok(r.err_class == "GenericError" and "ran on the frozen image" in
           (r.err_desc or ""), "%s is refused with the reason" % name,
           repr(r.raw))
    ok(qbtest.sha256(vm.originals["vda"]) is not None,
       "the original image is still there")

    # Started again as it should be: back on the branch.
    vm.c.cmd("quit")
    vm.qemu.wait(CMD_TIMEOUT)
    vm.c.close()
    vm.qemu = env.start_qemu(disks=vm.disk_specs)
    vm.c = vm.proxy.client(negotiate=True, timeout=CMD_TIMEOUT)
    vm.c.timeout = CMD_TIMEOUT
    qbtest.wait_for(lambda: vm.chain()[0] == want_top,
                    timeout=CMD_TIMEOUT, step=0.2)
    eq(vm.chain()[0], want_top, "with -S again, vda is back on the branch")
    vm.ret("cont")
    vm.check_data("the branch's data, written before the restarts")
    vm.create("s2")
    vm.check_everything("snapshot commands work again")


qbtest.run(main, timeout=90)

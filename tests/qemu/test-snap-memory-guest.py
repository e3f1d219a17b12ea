#!/usr/bin/env python3
# Snapshots with memory, with a real guest (qbguest.Guest): its counter
# lives only in RAM and it keeps files on an ext2 disk. A revert to a
# snapshot with memory takes the guest back to that moment, in the same
# QEMU process, without a reset: the counter goes on from the snapshot's
# value, the boot ID stays, the files are the snapshot's. A branch left
# with save-memory resumes where it was. Both ways of keeping RAM: a shared
# RAM file (copied by qbranchd) and RAM that QEMU saves itself; then a UEFI
# VM, whose raw variable store QEMU's own savevm refuses, on its disks.
#
# The snapshot moment is exact: the test pauses the VM, reads the last
# counter on the console, takes the snapshot paused and continues. A
# restored guest then prints that value plus one (or plus two, if it was
# in the middle of a line).

import subprocess

import qbtest
import qbguest
from qbtest import ok, eq, diag, skip, Disk, QBTestError, CMD_TIMEOUT

OP_TIMEOUT = 60         # saving or loading 256 MiB of RAM under TCG
RUN_ON = 12             # counter ticks the guest runs before an operation
SLACK = 5               # ticks a restored guest may print before we look


class Flash(Disk):
    """The UEFI variable store, for Env.write() and Env.check_regions():
    a board device, addressed by its qdev path."""

    @property
    def qdev(self):
        return qbguest.PFLASH_VARS_QDEV


def store_image(env, c):
    """What the variable store's device reads now, through NBD."""
    out = env.path("vars-now.raw")
    env.nbd_start(c)
    env.export_add(c, env.root_node(c, "flash1"))
    try:
        r = subprocess.run([qbtest.QEMU_IMG, "convert", "-f", "raw", "-O",
                            "raw", env.nbd_uri(), out],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=CMD_TIMEOUT)
        if r.returncode != 0:
            raise QBTestError("qemu-img convert: %s" % r.stdout.decode(
                "utf-8", "replace"))
    finally:
        env.export_del(c)
    with open(out, "rb") as f:
        return f.read()


class VM:
    """A guest, and a qbranchd with a state directory in front of it."""

    def __init__(self, env, guest_dir, kind, ram_file, uefi=False):
        self.env = env
        self.kind = kind
        self.g = qbguest.Guest(env, guest_dir, name=kind, ram_file=ram_file,
                               uefi=uefi, disks=[Disk("vda", image=kind +
                                                      ".qcow2", size="32M")],
                               sock=kind + "-qemu.sock",
                               direct=kind + "-direct.sock")
        self.g.boot()
        diag("%s: ready %.1f s after cont (%s)" % (
            kind, self.g.boot_seconds, self.g.accel_name()))
        self.pid = self.g.qemu.pid
        self.proxy = env.start_proxy(
            qemu_sock=kind + "-qemu.sock", listen=(kind + "-proxy.sock",),
            args=["--state-dir", env.path("state-" + kind)],
            name="qbranchd-" + kind)
        self.c = self.proxy.client(negotiate=True,
                                   timeout=qbtest.CMD_TIMEOUT)

    def ret(self, name, args=None):
        r = self.c.cmd(name, args, timeout=OP_TIMEOUT)
        if "return" not in r:
            raise qbtest.QBFailed("%s %s -> %s" % (
                name, args, r.raw.decode("utf-8", "replace").strip()))
        return r["return"]

    def cmd(self, line):
        return self.g.command(line)

    def pause(self):
        """stop; the last counter the guest printed."""
        self.ret("stop")
        return self.g.last_counter()

    def run_on(self, since=0):
        """Let the guest count RUN_ON more; the last counter."""
        n = self.g.last_counter(since) or 0
        got = self.g.wait_counter_above(n + RUN_ON, timeout=15, since=since)
        if got is None:
            raise QBTestError("%s: the counter stays at %r" % (
                self.kind, self.g.last_counter(since)))
        return got

    def attached(self):
        for b in self.ret("qbranch-query-branches"):
            if b.get("attached"):
                return b
        raise QBTestError("no attached branch")

    def branch(self, name):
        for b in self.ret("qbranch-query-branches"):
            if b.get("name") == name:
                return b
        raise QBTestError("no branch %s" % name)

    def resumed(self, mark, at, text):
        """The guest went on from counter `at` after `mark`, without a
        reset, in the same QEMU: three test points."""
        got = self.g.wait_counter_above(0, timeout=10, since=mark)
        first = (self.g.counters(mark) or [None])[0]
        ok(first is not None and at < first <= at + SLACK,
           "%s: %s: the counter goes on from %d" % (self.kind, text, at),
           "first counter printed after: %r (last %r)" % (first, got))
        ok(not self.g.boot_ids(mark) and not self.g.ready_count(mark),
           "%s: %s: no reset (no new boot, no second 'ready')" % (
               self.kind, text), repr(self.g.lines(mark)[:10]))
        ok(self.g.qemu.alive() and self.g.qemu.pid == self.pid,
           "%s: %s: the same QEMU process (pid %d)" % (self.kind, text,
                                                        self.pid))
        return first

    def quit(self):
        self.c.close()
        self.g.quit()
        self.proxy.stop()


def memory_checks(env, guest_dir, ram_file):
    kind = "shared" if ram_file else "plain"
    vm = VM(env, guest_dir, kind, ram_file)
    g = vm.g
    eq(vm.cmd("mount"), "qbranch-mounted vda new", "%s: the guest makes "
       "and mounts a file system on vda" % kind)
    eq(vm.cmd("put before made before s1"), "qbranch-put before",
       "%s: put before" % kind)
    vm.run_on()

    c0 = vm.pause()
    s1 = vm.ret("qbranch-snapshot-create", {"name": "s1", "memory": True})
    vm.ret("cont")
    ok(s1.get("memory") is True and s1.get("memory-size", 0) > 0,
       "%s: s1 holds memory (%s bytes)" % (kind, s1.get("memory-size")),
       repr(s1))
    eq(s1.get("vm-state"), "paused", "%s: s1 was taken paused" % kind)
    diag("%s: s1 at counter %d" % (kind, c0))

    eq(vm.cmd("put after made after s1"), "qbranch-put after",
       "%s: put after" % kind)
    b1 = vm.attached()["name"]
    c1 = vm.run_on()
    ok(c1 > c0 + RUN_ON, "%s: the guest ran on on %s (%d)" % (kind, b1, c1))

    # Revert, keeping the memory of the branch left.
    c1 = vm.pause()
    mark = g.mark()
    br = vm.ret("qbranch-snapshot-revert", {"name": "s1", "state": "running",
                                            "save-memory": True})
    first = vm.resumed(mark, c0, "revert to s1")
    ok(first is not None and first < c1, "%s: revert to s1: well below the "
       "counter before the revert (%d)" % (kind, c1))
    ok(vm.ret("query-status").get("running"), "%s: running, as asked" %
       kind)
    eq(vm.cmd("get after"), "qbranch-missing after", "%s: revert to s1: "
       "the file put after s1 is gone" % kind)
    eq(vm.cmd("get before"), "qbranch-got before made before s1",
       "%s: revert to s1: the file put before s1 is there" % kind)
    left = vm.branch(b1)
    ok(left.get("memory") is True and left.get("memory-size", 0) > 0,
       "%s: %s keeps its memory (%s bytes)" % (kind, b1,
                                               left.get("memory-size")),
       repr(left))

    # On the new branch: a file of its own, the counter runs on.
    eq(vm.cmd("put onrevert made on %s" % br.get("name")),
       "qbranch-put onrevert", "%s: put onrevert on %s" % (kind,
                                                           br.get("name")))
    vm.run_on(since=mark)

    # Back to the branch left: it resumes where it was.
    vm.pause()
    mark = g.mark()
    back = vm.ret("qbranch-branch-switch", {"branch": b1, "state": "running"})
    vm.resumed(mark, c1, "switch back to %s" % b1)
    eq(vm.cmd("get after"), "qbranch-got after made after s1",
       "%s: on %s again: its file put after s1" % (kind, b1))
    eq(vm.cmd("get onrevert"), "qbranch-missing onrevert",
       "%s: and not the other branch's" % kind)
    eq(vm.cmd("ls"), "qbranch-ls after before", "%s: ls on %s" % (kind, b1))
    ok(back.get("memory") is not True, "%s: %s's saved memory is used up"
       % (kind, b1), repr(back))
    vm.quit()


def uefi_checks(env, guest_dir):
    """The variable store (pflash1) is a disk of the tree. The guest sets
    UEFI variables (OVMF writes them through the flash device onto the
    store's image); a revert with memory brings back the guest's view and
    the image both, and the frozen image stays as it was.

    Writes through HMP qemu-io reach the image but not the flash device's
    own copy in RAM, which QEMU writes back whole onto the image at the
    first run after a snapshot-load (pflash's post-load update, as loadvm
    would): after a revert with memory the store reads what the device
    held at the snapshot, after one without memory what the image held."""
    why = qbguest.uefi_missing()
    if why:
        skip("memory snapshots of a UEFI VM", why)
        return
    vm = VM(env, guest_dir, "uefi", ram_file=True, uefi=True)
    g = vm.g
    env.disks["flash1"] = Flash("flash1", fmt="raw", create=False)
    disks = [d.get("device") for d in vm.ret("qbranch-query-disks")]
    ok("system.flash1" in disks and "system.flash0" not in disks,
       "uefi: the variable store is a disk of the tree, the code is not",
       repr(disks))
    # A block of the variable store that OVMF leaves 0xff.
    off, ln = 128 * 1024, 64 * 1024

    eq(vm.cmd("efiset qbbefore made-before-u1"), "qbranch-efiset qbbefore",
       "uefi: the guest sets a variable before u1")
    vm.run_on()
    c0 = vm.pause()
    vm.ret("qbranch-snapshot-create", {"name": "u1", "memory": True})
    vm.ret("cont")
    eq(vm.cmd("efiset qbafter made-after-u1"), "qbranch-efiset qbafter",
       "uefi: and one after u1")
    ok(b"made-after-u1" in store_image(env, vm.c), "uefi: OVMF wrote it "
       "onto the store's image")
    env.write(vm.c, "flash1", 0x5a, off, ln)
    env.expect_data(vm.c, "flash1", [(0x5a, off, ln)],
                    "uefi: a qemu-io write after u1 reads back")
    c1 = vm.run_on()

    vm.pause()
    mark = g.mark()
    vm.ret("qbranch-snapshot-revert", {"name": "u1", "state": "running"})
    first = vm.resumed(mark, c0, "revert to u1")
    ok(first is not None and first < c1, "uefi: well below the counter "
       "before the revert (%d)" % c1)
    eq(vm.cmd("efiget qbafter"), "qbranch-missing qbafter",
       "uefi: revert to u1: the guest knows no variable set after u1")
    eq(vm.cmd("efiget qbbefore"), "qbranch-efigot qbbefore made-before-u1",
       "uefi: and has the one set before")
    img = store_image(env, vm.c)
    ok(b"made-before-u1" in img and b"made-after-u1" not in img,
       "uefi: revert to u1: the store's image is u1's")
    env.expect_data(vm.c, "flash1", [(0xff, off, ln)],
                    "uefi: revert to u1: the qemu-io write after u1 is gone")
    eq(vm.cmd("efiset qbnext made-on-the-new-branch"),
       "qbranch-efiset qbnext", "uefi: the guest sets a variable on the "
       "new branch")
    ok(b"made-on-the-new-branch" in store_image(env, vm.c),
       "uefi: onto the new branch's image")
    with open(g.vars_path, "rb") as f:
        frozen = f.read()
    ok(b"made-before-u1" in frozen and b"made-after-u1" not in frozen and
       b"made-on-the-new-branch" not in frozen, "uefi: the store's original "
       "image, frozen by u1, holds u1's variables and nothing later")

    # Without memory: the image's own data, the device's copy aside.
    env.write(vm.c, "flash1", 0xa5, off, ln)
    vm.ret("qbranch-snapshot-create", {"name": "u2"})
    env.write(vm.c, "flash1", 0x5a, off, ln)
    # Paused: OVMF would start on a store we scribbled on.
    vm.ret("qbranch-snapshot-revert", {"name": "u2", "state": "paused"})
    env.expect_data(vm.c, "flash1", [(0xa5, off, ln)],
                    "uefi: revert to u2 (no memory): the store's image is "
                    "u2's")
    vm.quit()


def main(env):
    guest_dir = qbguest.build()
    if guest_dir is None:
        return
    memory_checks(env, guest_dir, ram_file=True)
    memory_checks(env, guest_dir, ram_file=False)
    uefi_checks(env, guest_dir)


qbtest.run(main, timeout=200)

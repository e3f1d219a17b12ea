#!/usr/bin/env python3
# Snapshots with memory, without a guest OS. The firmware counts in RAM
# (a 32-bit counter at COUNTER, incremented in a loop), so the value read
# with pmemsave while the VM is paused says exactly which moment the guest
# is at. Checked on both paths: RAM as a shared file (copied by qbranchd)
# and RAM that QEMU saves itself, with a qcow2 disk and a raw data disk
# (QEMU's own savevm refuses the latter); then what must be refused or
# undone.

import os
import struct
import subprocess
import time

import qbtest
from qbtest import ok, eq, Disk, MiB, SnapVM, CMD_TIMEOUT

COUNTER = 0x1000
RAM_MIB = 64


def counting_firmware(path):
    """64 KiB BIOS: at reset, far jump to f000:0000, which runs
    xor ax,ax; mov ds,ax; l: inc dword [0x1000]; jmp l."""
    image = bytearray(64 * 1024)
    code = b"\x31\xc0\x8e\xd8\x66\xff\x06\x00\x10\xeb\xf9"
    image[:len(code)] = code
    image[-16:-11] = b"\xea\x00\x00\x00\xf0"
    with open(path, "wb") as f:
        f.write(image)
    return path


def ram_args(env, shared):
    if not shared:
        return []
    return ["-object", "memory-backend-file,id=ram0,size=%dM,mem-path=%s,"
            "share=on" % (RAM_MIB, env.path("guest.ram")),
            "-machine", "memory-backend=ram0"]


def counter(vm):
    out = vm.env.path("counter.bin")
    vm.ret("pmemsave", {"val": COUNTER, "size": 4, "filename": out})
    with open(out, "rb") as f:
        return struct.unpack("<I", f.read(4))[0]


def run_a_while(vm):
    """cont, until the counter moves; then stop. Returns the counter."""
    vm.ret("cont")
    start = counter(vm)
    qbtest.wait_for(lambda: counter(vm) > start + 1000, timeout=CMD_TIMEOUT)
    vm.ret("stop")
    return counter(vm)


def memory_files(vm):
    d = os.path.join(vm.state_dir, "memory")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def paths_checks(env, shared):
    label = "shared RAM file" if shared else "RAM saved by QEMU"
    fw = counting_firmware(env.path("count.bin"))
    kind = "shared" if shared else "plain"
    vm = SnapVM(env, disks=[Disk("vda", image="%s.qcow2" % kind),
                            Disk("vdb", fmt="raw", image="%s-data.img" % kind)],
                state_dir="state-" + kind,
                qemu_extra=["-bios", fw, "-m", "%d" % RAM_MIB] +
                ram_args(env, shared))
    pid = vm.qemu.proc.pid
    vm.write(0xa1, 0)
    vm.write(0xa2, 0, dev="vdb")
    c0 = run_a_while(vm)
    ok(c0 > 0, "%s: the firmware counts in RAM (%d)" % (label, c0))

    snap = vm.create("m1", memory=True)
    ok(snap.get("memory") is True and snap.get("memory-size", 0) > 0,
       "%s: m1 holds memory, %s bytes" % (label, snap.get("memory-size")),
       repr(snap))
    eq(snap.get("vm-state"), "paused", "%s: m1 was taken paused" % label)
    eq(vm.status().get("status"), "paused", "%s: the VM stays paused "
       "after a paused snapshot" % label)
    eq(counter(vm), c0, "%s: taking the snapshot did not run the guest"
       % label)
    disk_only = vm.create("d1")
    ok(disk_only.get("memory") is False and "memory-size" not in disk_only,
       "%s: a snapshot without memory says so" % label, repr(disk_only))

    vm.write(0xb2, 0)
    vm.write(0xb3, 0, dev="vdb")
    c1 = run_a_while(vm)
    ok(c1 > c0, "%s: the guest ran on (%d > %d)" % (label, c1, c0))
    vm.revert("m1")
    eq(counter(vm), c0, "%s: revert to m1: RAM is m1's, the counter where "
       "it stood" % label)
    eq(vm.status().get("status"), "paused", "%s: revert ends in m1's "
       "recorded state, paused" % label)
    vm.check_data("%s: revert to m1: m1's disk data, the raw data disk's "
                  "too" % label)
    ok(vm.qemu.alive() and vm.qemu.proc.pid == pid,
       "%s: the same QEMU process (pid %d)" % (label, pid))

    # A running snapshot reverts to running, unless state says otherwise.
    vm.ret("cont")
    snap = vm.create("m2", memory=True)
    eq(snap.get("vm-state"), "running", "%s: m2 was taken running" % label)
    ok(vm.running(), "%s: the VM runs on after a running snapshot" % label)
    vm.revert("m2")
    ok(vm.running(), "%s: revert to m2 ends running" % label)
    vm.revert("m2", state="paused")
    eq(vm.status().get("status"), "paused", "%s: state=paused wins" % label)

    # save-memory: the branch left goes on where it was, once.
    c2 = run_a_while(vm)
    left = vm.attached
    vm.write(0xc3, MiB)
    vm.revert("m1", **{"save-memory": True})
    eq(counter(vm), c0, "%s: revert with save-memory loads m1" % label)
    br = {b["name"]: b for b in vm.query_branches()}
    ok(br[left].get("memory") is True and br[left].get("memory-size", 0) > 0,
       "%s: branch %s keeps its memory (%s bytes)" % (
           label, left, br[left].get("memory-size")), repr(br[left]))
    run_a_while(vm)
    back = vm.switch(left)
    eq(counter(vm), c2, "%s: switching back to %s resumes its RAM" % (
        label, left))
    eq(vm.status().get("status"), "paused", "%s: in the state it was left "
       "in" % label)
    vm.check_data("%s: and its disk data" % label)
    ok(back.get("memory") is False, "%s: its saved memory is used up" %
       label, repr(back))
    vm.revert("m1")
    vm.switch(left, state="paused")
    ok(not vm.running(), "%s: a switch without saved memory resets, and "
       "keeps the state asked (paused)" % label, repr(vm.status()))

    # Deleting frees the saved state.
    files = memory_files(vm)
    vm.delete("m2")
    gone = set(files) - set(memory_files(vm))
    ok(gone and all(f.startswith("snapshot-m2") for f in gone),
       "%s: deleting m2 removes its saved state" % label, repr(gone))
    vm.revert("m1", **{"save-memory": True})
    before = memory_files(vm)
    vm.branch_delete(left)
    ok(len(memory_files(vm)) < len(before), "%s: deleting a branch removes "
       "its saved state" % label, repr(before), repr(memory_files(vm)))
    vm.check_everything("%s: after it all" % label)
    vm.restart_proxy()
    vm.revert("m1")
    eq(counter(vm), c0, "%s: after a qbranchd restart, m1 still loads" %
       label)

    # A rename keeps the saved state; every delete mode removes the saved
    # states of what leaves the tree (they are qbranch's own files).
    vm.edit("m1", **{"new-name": "m1r"})
    vm.revert("m1r")
    eq(counter(vm), c0, "%s: renamed m1r still loads m1's RAM" % label)
    vm.create("k1", memory=True)
    vm.create("k2", memory=True)
    vm.revert("m1r")
    vm.delete("k1", mode="children")
    eq([f for f in memory_files(vm) if f.startswith(("snapshot-k1.",
                                                      "snapshot-k2."))],
       [], "%s: delete with children removes their saved states" % label)
    vm.create("k3", memory=True)
    vm.delete("k3", mode="metadata-only")
    eq([f for f in memory_files(vm) if f.startswith("snapshot-k3.")], [],
       "%s: so does a metadata-only delete" % label)
    vm.check_everything("%s: after the deletes" % label)
    return vm


def fast_path_checks(env, vm):
    """RAM as a shared file: what the file holds is what is restored, holes
    included."""
    ram = env.path("guest.ram")
    pattern = bytes(range(256)) * 4096     # 1 MiB
    with open(ram, "r+b") as f:
        f.seek(32 * MiB)
        f.write(pattern)
    vm.create("r1", memory=True)
    with open(ram, "r+b") as f:
        f.seek(32 * MiB)
        f.write(b"\xee" * MiB)
        f.seek(48 * MiB)            # a page the snapshot never had
        f.write(b"\x77" * 4096)
    vm.revert("r1")
    with open(ram, "rb") as f:
        f.seek(32 * MiB)
        got = f.read(MiB)
        f.seek(48 * MiB)
        page = f.read(4096)
    ok(got == pattern, "shared RAM: guest RAM written after r1 is r1's again")
    ok(page == b"\0" * 4096, "shared RAM: a page that was a hole in r1 is "
       "zero again")
    out = env.path("dump.bin")
    vm.ret("pmemsave", {"val": 32 * MiB, "size": 4096, "filename": out})
    with open(out, "rb") as f:
        ok(f.read() == pattern[:4096], "shared RAM: the guest sees it too")

    # Another process that maps the RAM file: refused, nothing changed.
    import mmap
    before = vm.query_snapshots()
    with open(ram, "r+b") as f:
        m = mmap.mmap(f.fileno(), 4096)
        r = vm.cmd("qbranch-snapshot-create", {"name": "x", "memory": True})
        m.close()
    ok(r.err_class == "GenericError" and "mapped by process %d" %
       os.getpid() in r.err_desc, "a RAM file another process maps is "
       "refused", r.err_desc)
    eq(vm.query_snapshots(), before, "and the tree is unchanged")


def full_disk_checks(env):
    """The state directory fills up while RAM is saved: the VM goes on on
    its branch, the tree and the state directory are as before."""
    state = env.path("small-state")
    os.makedirs(state)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs",
                        state], capture_output=True)
    if r.returncode != 0:
        qbtest.skip("full state directory", "cannot mount tmpfs: %s" %
                    r.stderr.decode().strip())
        return
    try:
        fw = counting_firmware(env.path("count2.bin"))
        vm = SnapVM(env, disks=[Disk("vdb")], state_dir="small-state",
                    qemu_extra=["-bios", fw, "-m", "%d" % RAM_MIB,
                                "-object", "memory-backend-file,id=ram1,"
                                "size=%dM,mem-path=%s,share=on" % (
                                    RAM_MIB, env.path("guest2.ram")),
                                "-machine", "memory-backend=ram1"])
        with open(env.path("guest2.ram"), "r+b") as f:
            f.seek(16 * MiB)
            f.write(b"\x5a" * (32 * MiB))
        vm.create("ok1")
        before = vm.query_snapshots()
        tree = qbtest.read_tree(vm.state_dir)
        r = vm.cmd("qbranch-snapshot-create", {"name": "big",
                                               "memory": True})
        ok(r.err_class == "GenericError" and "No space" in r.err_desc,
           "full state directory: a clear error", r.err_desc)
        ok(vm.running(), "full state directory: the VM runs on")
        eq(vm.query_snapshots(), before, "full state directory: the tree "
           "is unchanged")
        eq(qbtest.read_tree(vm.state_dir), tree, "and so is its file")
        eq(memory_files(vm), [], "no saved state left behind")
        vm.check_everything("full state directory: data intact")
        vm.proxy.stop()
        vm.qemu.stop()
    finally:
        subprocess.run(["umount", "-l", state], capture_output=True)


def let_go_checks(env, vm):
    """QEMU quits: qbranchd keeps no hold on its RAM file (a removed
    one would stay allocated while qbranchd has it open)."""
    ram = env.path("guest.ram")
    held = "/proc/%d/maps" % vm.proxy.proc.pid
    vm.revert("r1")
    with open(held) as f:
        ok(ram in f.read(), "qbranchd maps the RAM file while QEMU runs")
    vm.ret("quit")
    vm.qemu.wait(CMD_TIMEOUT)
    qbtest.wait_for(lambda: ram not in open(held).read(),
                    timeout=CMD_TIMEOUT)
    with open(held) as f:
        ok(ram not in f.read(), "once QEMU is gone, qbranchd lets it go")


def qemu_dies_checks(env):
    """QEMU is killed while a snapshot with memory is being taken, at a few
    moments: qbranchd runs on, and once a QEMU is back on the same disks and
    RAM file, each snapshot is in the tree with its files or not at all,
    and memory checkpoints work again."""
    fw = counting_firmware(env.path("count3.bin"))
    ram = env.path("guest3.ram")
    extra = ["-bios", fw, "-m", "512", "-object", "memory-backend-file,"
             "id=ram2,size=512M,mem-path=%s,share=on" % ram,
             "-machine", "memory-backend=ram2"]
    vm = SnapVM(env, disks=[Disk("vdc")], state_dir="state-dies",
                qemu_extra=extra)
    with open(ram, "r+b") as f:
        f.seek(64 * MiB)
        f.write(os.urandom(MiB) * 384)
    for k, delay in enumerate((0.005, 0.02, 0.05, 0.1, 0.4, 1.0)):
        name = "gone%d" % k
        vm.c.send_json(qbtest.QMP.command("qbranch-snapshot-create",
                                          {"name": name, "memory": True},
                                          id="x"))
        time.sleep(delay)
        vm.qemu.kill()
        vm.qemu.wait(CMD_TIMEOUT)
        try:
            got = [m for m in vm.c.recv_until_eof(timeout=CMD_TIMEOUT)
                   if m.get("id") == "x"]
        except qbtest.QBTestError:
            got = []
        ok(vm.proxy.alive(), "QEMU killed %d ms into a save: qbranchd runs "
           "on" % (delay * 1000))
        vm.qemu = env.start_qemu(disks=vm.disk_specs, extra=extra)
        vm.c = vm.proxy.client(negotiate=True, timeout=15)
        vm.c.timeout = CMD_TIMEOUT
        # Once qbranchd has put the disk back on its branch, cont works.
        qbtest.wait_for(lambda: "error" not in vm.cmd("cont"),
                        timeout=CMD_TIMEOUT, step=0.1)
        top = [b for b in vm.query_branches() if b["attached"]][0]
        ok(vm.running() and vm.chain("vdc")[0] == top["disks"][0]["file"],
           "a QEMU started again runs on the tree's branch",
           repr(vm.chain("vdc")), repr(top))
        snap = {x["name"]: x for x in vm.query_snapshots().get(
            "snapshots", [])}.get(name)
        files = [f for f in state_files(vm) if "snapshot-%s." % name in f]
        qbtest.diag("%s: %s; the reply: %s" % (
            name, "taken" if snap else "not taken", got[0] if got else "none"))
        ok(snap is None or (snap.get("memory") and len(files) == 2),
           "%s is in the tree with its state files, or not at all" % name,
           repr(snap), repr(files))
    vm.create("again", memory=True)
    vm.revert("again")
    ok(vm.running(), "memory checkpoints work again")


def no_state_dir_checks(env):
    """Without --state-dir there is nowhere to keep a VM state: refused
    before anything happens."""
    q = env.start_qemu(sock="bare-qemu.sock", direct=None,
                       disks=[Disk("vde")], name="bare-qemu")
    p = env.start_proxy(qemu_sock="bare-qemu.sock", listen=("bare.sock",),
                        name="bare-proxy")
    c = p.client(negotiate=True)
    for cmd, args, key in (
            ("qbranch-snapshot-create", {"memory": True}, "memory"),
            ("qbranch-snapshot-revert", {"name": "x", "save-memory": True},
             "save-memory"),
            ("qbranch-branch-switch", {"branch": "x", "save-memory": True},
             "save-memory")):
        c.send_json(qbtest.QMP.command(cmd, args, id=1))
        r = c.recv_reply()
        ok(r.err_class == "GenericError" and "'%s' needs qbranchd's "
           "--state-dir" % key in r.err_desc, "no --state-dir: %s with %s "
           "is refused" % (cmd, key), r.err_desc)
    c.send_json(qbtest.QMP.command("qbranch-query-snapshots", id=2))
    eq(c.recv_reply().get("return", {}).get("snapshots"), [],
       "and nothing was taken")
    p.stop()
    q.stop()


def state_files(vm):
    return [os.path.join(vm.state_dir, "memory", f) for f in memory_files(vm)]


def main(env):
    vm = paths_checks(env, shared=True)
    fast_path_checks(env, vm)
    let_go_checks(env, vm)
    vm.proxy.stop()
    vm = paths_checks(env, shared=False)
    vm.proxy.stop()
    vm.qemu.stop()
    full_disk_checks(env)
    qemu_dies_checks(env)
    no_state_dir_checks(env)


qbtest.run(main, timeout=120)

#!/usr/bin/env python3
# The test guest (scripts/guest-build, booted by qbguest.Guest) keeps its
# serial protocol: a boot ID once a boot, "ready", a counter that runs,
# commands answered right after "ready", disk writes that reach the image,
# files on an ext2 file system it makes itself, RAM filled through a shared
# RAM file. Then the same guest under UEFI (OVMF on a pflash pair), which
# QEMU's own savevm refuses. The memory-snapshot tests rely on each of
# these.
#
# The guest comes from scripts/guest-build, in QBRANCH_GUEST_DIR if set; if
# it cannot be built (no Debian mirror), the file is skipped.

import os
import subprocess

import qbtest
import qbguest
from qbtest import ok, eq, diag, skip, Disk, MiB, CMD_TIMEOUT


def changed_mib(before, path):
    """MiB of 4 KiB pages of path that differ from the bytes before."""
    with open(path, "rb") as f:
        after = f.read()
    n = sum(1 for i in range(0, max(len(before), len(after)), 4096)
            if before[i:i + 4096] != after[i:i + 4096])
    return n * 4096 / MiB


def bios_checks(env, guest_dir):
    g = qbguest.Guest(env, guest_dir, name="bios",
                      disks=[Disk("vda"), Disk("vdb", size="32M")],
                      ram_file=True)
    g.boot()
    diag("ready %.1f s after cont (%s)" % (g.boot_seconds, g.accel_name()))
    # Right after "ready", with a disk that may still be appearing.
    eq(g.command("mount vdb"), "qbranch-mounted vdb new", "a command "
       "right after ready: mount vdb makes a file system and mounts it")
    ids = g.boot_ids()
    ok(len(ids) == 1 and len(ids[0]) == 16, "one boot ID, printed once",
       repr(ids))
    eq(g.command("boot"), "qbranch-boot %s" % (ids[0] if ids else "?"),
       "boot answers the same ID")

    first = g.last_counter()
    ok(g.wait_counter_above((first or 0) + 2, timeout=5),
       "the counter increases on ttyS0",
       "first %r, now %r" % (first, g.last_counter()))
    c = g.counters()
    ok(c and c == list(range(c[0], c[0] + len(c))),
       "the counter goes up by one a line", repr(c[:20]))

    eq(g.command("write 1 0xaa"), "qbranch-wrote 1 0xaa", "write 1 0xaa")
    eq(g.command("read 1"), "qbranch-read 1 0xaa", "read 1 gives 0xaa")
    eq(g.command("read 2"), "qbranch-read 2 0x00", "read 2 (never written) "
       "gives 0x00")
    answer = g.command("frobnicate 1")
    ok(answer.startswith("qbranch-error "), "an unknown command answers "
       "qbranch-error", answer)

    eq(g.command("put hello hello  world"), "qbranch-put hello",
       "put hello")
    eq(g.command("put b.2 second"), "qbranch-put b.2", "put b.2")
    eq(g.command("get hello"), "qbranch-got hello hello world",
       "get hello gives its text back, from the disk")
    eq(g.command("get nothing"), "qbranch-missing nothing",
       "get of a file never put: missing")
    eq(g.command("ls"), "qbranch-ls b.2 hello", "ls lists both, sorted")
    ok(g.command("put .hidden x").startswith("qbranch-error "),
       "a name with a leading dot is refused")
    eq(g.command("efiget x"), "qbranch-error not booted by UEFI",
       "no UEFI variables under SeaBIOS")
    eq(g.command("mount vdb"), "qbranch-mounted vdb existing",
       "mount again: already there")
    ok(g.command("mount vda").startswith("qbranch-error "),
       "a second disk on /data is refused")

    with open(g.ram_path, "rb") as f:
        before = f.read()
    eq(g.command("fill 32"), "qbranch-filled 32", "fill 32")
    changed = changed_mib(before, g.ram_path)
    del before
    ok(os.path.getsize(g.ram_path) == g.ram_mib * MiB and
       32 <= changed < 64, "the shared RAM file (%d MiB) is the guest's "
       "RAM: 32 MiB and a little more of it changed" % g.ram_mib,
       "%.1f MiB changed" % changed)
    now = g.last_counter()
    ok(g.wait_counter_above(now or 0, timeout=5),
       "the counter still runs after the commands")

    # A reset is a new boot, with a new ID.
    mark = g.mark()
    g.qmp.cmd("system_reset")
    ok(qbtest.wait_for(lambda: g.ready_count(mark) == 1,
                       timeout=qbguest.TCG_BOOT_TIMEOUT, step=0.1),
       "after system_reset the guest is ready again")
    new = g.boot_ids(mark)
    ok(len(new) == 1 and new[0] not in ids, "with a new boot ID",
       repr(ids), repr(new))
    ok((g.counters(mark) or [99])[0] <= 2, "and a counter from 1 again",
       repr(g.counters(mark)[:5]))

    eq(g.quit(), 0, "QEMU quits")
    r = subprocess.run([qbtest.QEMU_IO, "-f", "qcow2",
                        "-c", "read -P 0xaa 1M 64k",
                        "-c", "read -P 0 1088k 64k",
                        env.disk("vda").path],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=CMD_TIMEOUT)
    ok(r.returncode == 0, "the image holds 64 KiB of 0xaa at 1M and "
       "zeroes after it", r.stdout.decode("utf-8", "replace"))
    return [env.disk("vda"), env.disk("vdb")]


def uefi_checks(env, guest_dir, disks):
    why = qbguest.uefi_missing()
    if why:
        skip("the guest under UEFI", why)
        return
    g = qbguest.Guest(env, guest_dir, name="uefi", uefi=True, disks=disks)
    g.start()
    blocks = {b.get("qdev"): b for b in
              g.qmp.cmd("query-block")["return"]}
    code = blocks.get(qbguest.PFLASH_CODE_QDEV, {}).get("inserted", {})
    var = blocks.get(qbguest.PFLASH_VARS_QDEV, {}).get("inserted", {})
    ok(code.get("ro") is True and code.get("node-name") == "uefi-code" and
       var.get("ro") is False and var.get("node-name") == "uefi-vars" and
       var.get("file") == g.vars_path,
       "the pflash pair: CODE read-only and VARS writable, at %s and %s"
       % (qbguest.PFLASH_CODE_QDEV, qbguest.PFLASH_VARS_QDEV),
       repr(sorted(blocks)))
    g.boot()
    diag("ready %.1f s after cont under OVMF (%s)"
         % (g.boot_seconds, g.accel_name()))
    eq(g.command("mount vdb"), "qbranch-mounted vdb existing",
       "UEFI: the file system made by the first guest is found")
    eq(g.command("get hello"), "qbranch-got hello hello world",
       "UEFI: with the file the first guest put")
    ok(g.wait_counter_above((g.last_counter() or 0) + 2, timeout=5),
       "UEFI: the counter runs")
    eq(g.command("efiget qbvar"), "qbranch-missing qbvar",
       "UEFI: a variable never set is missing")
    eq(g.command("efiset qbvar some text"), "qbranch-efiset qbvar",
       "UEFI: efiset qbvar")
    eq(g.command("efiget qbvar"), "qbranch-efigot qbvar some text",
       "UEFI: efiget gives it back")
    ok(g.command("efiset qbvar again").startswith("qbranch-error "),
       "UEFI: a variable that exists is not set again")
    # The reason qbranch exists: QEMU's own savevm will not have this VM.
    out = g.qmp.cmd("human-monitor-command",
                    {"command-line": "savevm x"}).get("return", "")
    ok("uefi-vars" in out and "writable but does not support snapshots"
       in out, "UEFI: QEMU's savevm refuses the VM for its writable raw "
       "variable store", repr(out))
    ok(g.qemu.alive() and g.qmp.cmd("query-status")["return"].get(
        "running"), "UEFI: and the guest runs on")
    eq(g.quit(), 0, "UEFI: QEMU quits")
    with open(g.vars_path, "rb") as f:
        ok(b"some text" in f.read(), "UEFI: OVMF wrote the variable into "
           "the VARS image")


def main(env):
    guest_dir = qbguest.build()
    if guest_dir is None:
        return
    disks = bios_checks(env, guest_dir)
    uefi_checks(env, guest_dir, disks)


qbtest.run(main, timeout=150)

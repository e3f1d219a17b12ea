#!/usr/bin/env python3
# Orphans: files qbranch made that nothing uses (an operation cut short, a
# crash). qbranch-query-orphans lists them and only them: overlays named as
# qbranch names them over an image of the tree, and saved VM states in the
# state directory, that no snapshot or branch uses and QEMU does not have
# open; never a file of the tree, an original, or a file qbranch would not
# have made. qbranch-orphans-delete removes exactly what it is asked to,
# refuses anything that is not an orphan, and leaves the VM's data alone.
# The CLI's orphans verb; the list while the tree is refused for changes;
# nothing while the tree file cannot be read.

import json
import os
import shutil
import subprocess

import qbtest
from qbtest import ok, eq, Disk, MiB, SnapVM, QEMU_IMG, CMD_TIMEOUT, qbranch


def qcow2(path, backing=None, fmt="qcow2"):
    argv = [QEMU_IMG, "create", "-q", "-f", "qcow2"]
    if backing:
        argv += ["-b", backing, "-F", fmt]
    argv += [path] + ([] if backing else ["64M"])
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL,
                   timeout=CMD_TIMEOUT)
    return path


def text_file(path, data=b"not an image\n"):
    with open(path, "wb") as f:
        f.write(data)
    return path


def allocated(path):
    return os.stat(path).st_blocks * 512


def listed(vm, c=None):
    r = (c or vm.c).cmd("qbranch-query-orphans", timeout=CMD_TIMEOUT)
    if "return" not in r:
        raise qbtest.QBTestError("qbranch-query-orphans: %r" % r.raw)
    return r["return"]["orphans"]


def names(orphans):
    return sorted(o.get("file") for o in orphans)


def tree_files(vm):
    """Every path the tree file names (images, backings, saved states)."""
    out = set()

    def walk(v):
        if isinstance(v, str) and v.startswith("/"):
            out.add(v)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
    walk(qbtest.read_tree(vm.state_dir))
    return out


def main(env):
    imgdir = env.path("images")
    os.makedirs(imgdir)
    # The same directory by another name: a caller may name overlays there.
    alias = env.path("alias")
    os.symlink(imgdir, alias)
    ro_sock = env.path("ro.sock")
    vm = SnapVM(env, disks=[Disk("vda"), Disk("vdb")],
                proxy_args=["--image-dir", imgdir, "--allow-dir", alias,
                            "--listen", ro_sock + ",rules=read-only"])
    vda, vdb = vm.originals["vda"], vm.originals["vdb"]
    memdir = os.path.join(vm.state_dir, "memory")

    cmds = [x.get("name") for x in vm.ret("query-commands")]
    ok("qbranch-query-orphans" in cmds and "qbranch-orphans-delete" in cmds,
       "query-commands lists both orphan commands")
    eq(listed(vm), [], "a fresh tree has no orphans")
    r = vm.cmd("qbranch-query-orphans", {"all": True})
    eq(r.err_class, "GenericError", "an unknown argument is refused")
    r = vm.cmd("qbranch-orphans-delete", {"files": "x"})
    eq(r.err_class, "GenericError", "files must be an array")
    r = vm.cmd("qbranch-orphans-delete", {"files": [1]})
    eq(r.err_class, "GenericError", "files must hold strings")

    # A tree with snapshots, branches and saved memory.
    vm.write(0x11, 0)
    vm.write(0x12, MiB, dev="vdb")
    vm.create("s1")
    vm.write(0x21, 2 * MiB)
    vm.create("s2", memory=True)
    vm.write(0x31, 3 * MiB)
    vm.revert("s1", **{"save-memory": True})
    vm.write(0x41, 4 * MiB, dev="vdb")
    vm.create("s3")
    vm.write(0x51, 5 * MiB)
    ok(len(os.listdir(memdir)) >= 2, "saved states are in the state "
       "directory", *os.listdir(memdir))
    eq(listed(vm), [], "snapshots, branches and saved memory: no orphans")
    used = tree_files(vm)

    # What a crash could leave, and what qbranch would never have made.
    top = vm.top_file("vda")
    orphans = {
        qcow2(os.path.join(imgdir, "vda.ghost"), top): "image",
        qcow2(os.path.join(env.dir, "vdb.lost-1"), vdb): "image",
        text_file(os.path.join(memdir, "snapshot-ghost.state"),
                  os.urandom(256 * 1024)): "memory",
        text_file(os.path.join(memdir, "branch-lost.2.ram0.ram"),
                  os.urandom(64 * 1024)): "memory",
    }
    chained = qcow2(os.path.join(imgdir, "vda.ghost-2"),
                    os.path.join(imgdir, "vda.ghost"))
    orphans[chained] = "image"
    decoys = [
        text_file(os.path.join(env.dir, "foo.txt")),
        text_file(os.path.join(imgdir, "foo.txt")),
        qcow2(os.path.join(imgdir, "another-disk.qcow2"), vda),
        qcow2(os.path.join(env.dir, "another-disk.qcow2"), vda),
        text_file(os.path.join(imgdir, "vda.notes")),
        qcow2(os.path.join(imgdir, "vda.standalone")),
        qcow2(os.path.join(imgdir, "vda.bad name"), vda),
        qcow2(os.path.join(imgdir, "vdc.s1"), vda),
        text_file(os.path.join(memdir, "notes.txt")),
    ]
    os.symlink(os.path.join(imgdir, "vda.ghost"),
               os.path.join(imgdir, "vda.link"))
    decoys.append(os.path.join(imgdir, "vda.link"))

    # One more overlay, open in QEMU (a node of its own) under its other
    # name: not an orphan.
    opened = qcow2(os.path.join(imgdir, "vda.opened"), vda)
    d = vm.qemu.direct_client()
    r = d.cmd("blockdev-add", {"driver": "qcow2", "node-name": "extra",
                               "read-only": True,
                               "file": {"driver": "file",
                                        "filename": os.path.join(
                                            alias, "vda.opened")}})
    ok("return" in r, "an overlay opened in QEMU behind the tree's back",
       repr(r.raw))

    got = listed(vm)
    eq(names(got), sorted(orphans), "exactly the orphans are listed, each "
       "once (under --image-dir, not its other name)")
    bad = [o for o in got if o.get("kind") != orphans.get(o.get("file")) or
           o.get("size") != allocated(o["file"]) or not o.get("reason")]
    ok(not bad, "each with its kind, the bytes it takes and a reason",
       *[json.dumps(o) for o in bad])
    both = used & set(names(got))
    ok(not both, "no file of the tree is listed (%d checked)" % len(used),
       *sorted(both))
    ok(os.path.exists(vda) and os.path.exists(vdb) and
       vda not in names(got) and vdb not in names(got),
       "the originals are not listed")
    ok(opened not in names(got), "a file QEMU has open (by another name) is "
       "not listed")
    ro = qbtest.QMP(ro_sock, timeout=CMD_TIMEOUT)
    ro.recv()   # the greeting
    ro.negotiate()
    eq(names(listed(vm, ro)), sorted(orphans), "a read-only socket lists "
       "them too")
    r = ro.cmd("qbranch-orphans-delete")
    ok(r.err_class == "GenericError" and
       all(os.path.exists(p) for p in orphans),
       "a read-only socket may not delete them", repr(r.raw))
    ro.close()

    r = d.cmd("blockdev-del", {"node-name": "extra"})
    ok("return" in r, "the extra overlay closed again", repr(r.raw))
    d.close()
    orphans[opened] = "image"
    eq(names(listed(vm)), sorted(orphans), "closed, it is an orphan too")

    # The CLI's list.
    sock = env.path("proxy.sock")
    cr = qbranch("orphans", "--json", sock=sock)
    ok(cr.rc == 0 and names(cr.json().get("orphans", [])) == sorted(orphans),
       "qbranch orphans --json is qbranch-query-orphans", repr(cr))
    cr = qbranch("orphans", sock=sock)
    lines = cr.out.splitlines()
    ok(cr.rc == 0 and lines and lines[0].split()[:4] ==
       ["SIZE", "KIND", "FILE", "REASON"] and len(lines) == 1 + len(orphans)
       and all(any(p in l for l in lines) for p in orphans),
       "qbranch orphans: a table of them", repr(cr))
    cr = qbranch("__complete", "orphans", sock=sock)
    eq(sorted(cr.out.split("\n")[:-1]), sorted(orphans),
       "the shell's completion of orphans --delete: the orphans")
    cr = qbranch("orphans", vda, sock=sock)
    ok(cr.rc == 2, "qbranch orphans FILE without --delete: a usage error",
       repr(cr))

    # Refusals: nothing is removed.
    before = names(listed(vm))
    for files, what in (([vda], "an original"),
                        ([vm.top_file("vda")], "the attached overlay"),
                        ([os.path.join(alias, os.path.basename(
                            vm.top_file("vda")))],
                         "the attached overlay by another name"),
                        ([sorted(used)[0]], "a file of the tree"),
                        ([chained, vdb], "an orphan and an original"),
                        ([os.path.join(imgdir, "vda.notes")], "a decoy"),
                        ([os.path.join(imgdir, "vda.nothere")],
                         "a file that is not there"),
                        (["vda.ghost"], "a relative name")):
        r = vm.cmd("qbranch-orphans-delete", {"files": files})
        ok(r.err_class == "GenericError" and "not an orphan" in
           (r.err_desc or ""), "delete of %s is refused" % what,
           repr(r.raw))
        ok(names(listed(vm)) == before and
           all(os.path.lexists(p) for p in list(orphans) + decoys +
               sorted(used)), "... and nothing was removed")
    cr = qbranch("orphans", "--delete", vdb, sock=sock)
    ok(cr.rc == 1 and all(os.path.exists(p) for p in orphans) and
       os.path.exists(vdb), "qbranch orphans --delete ORIGINAL fails, "
       "nothing removed", repr(cr))

    # One at a time.
    one = os.path.join(memdir, "snapshot-ghost.state")
    size = allocated(one)
    r = vm.ret("qbranch-orphans-delete", {"files": [one, one]})
    eq(r, {"deleted": [one], "freed": size}, "deleting one orphan "
       "(named twice) removes it and says what it freed")
    del orphans[one]
    ok(not os.path.exists(one) and
       all(os.path.lexists(p) for p in list(orphans) + decoys),
       "that file alone is gone")
    eq(names(listed(vm)), sorted(orphans), "the others are still listed")

    cr = qbranch("orphans", "--delete", chained, sock=sock)
    ok(cr.rc == 0 and "removed %s" % chained in cr.out and
       not os.path.exists(chained), "qbranch orphans --delete FILE", repr(cr))
    del orphans[chained]
    cwd_file = qcow2(os.path.join(env.dir, "vdb.cwd"), vdb)
    cr = qbranch("orphans", "--delete", "--json", "vdb.cwd", sock=sock,
                 cwd=env.dir)
    ok(cr.rc == 0 and cr.json().get("deleted") == [cwd_file] and
       not os.path.exists(cwd_file), "a relative FILE is taken from the "
       "current directory", repr(cr))

    # Every one left.
    want = sorted(orphans)
    freed = sum(allocated(p) for p in want)
    r = vm.ret("qbranch-orphans-delete")
    eq((sorted(r.get("deleted", [])), r.get("freed")), (want, freed),
       "deleting without files removes every orphan")
    ok(not any(os.path.exists(p) for p in want), "they are gone")
    gone = [p for p in decoys + sorted(used) if not os.path.lexists(p)]
    ok(not gone, "decoys and the tree's files are all still there", *gone)
    eq(listed(vm), [], "no orphans left")
    eq(vm.ret("qbranch-orphans-delete"), {"deleted": [], "freed": 0},
       "deleting with none left removes nothing")
    late = qcow2(os.path.join(imgdir, "vda.late"), vda)
    cr = qbranch("orphans", "--delete", sock=sock)
    ok(cr.rc == 0 and "removed %s" % late in cr.out and
       "1 orphan removed" in cr.out and not os.path.exists(late),
       "qbranch orphans --delete removes every orphan", repr(cr))

    for p in decoys:
        os.remove(p)
    vm.check_files("the tree's files, and no other image, are left")
    vm.check_originals("the originals are unchanged")
    vm.check_frozen("no frozen image changed")
    vm.check_everything("after the deletes")

    # Queries while operations run: what an operation makes, or removes,
    # is never listed.
    q = vm.proxy.client(negotiate=True, timeout=CMD_TIMEOUT)
    seen = []
    for i in range(4):
        before = {dev: vm.top_file(dev) for dev in vm.devs}
        vm.c.send_json(vm.c.command("qbranch-snapshot-create",
                                    {"name": "c%d" % i,
                                     "memory": i % 2 == 1}))
        for k in range(3):
            seen += listed(vm, q)
        r = vm.c.recv_reply(CMD_TIMEOUT)
        if "return" not in r:
            raise qbtest.QBFailed("create c%d: %r" % (i, r.raw))
        vm._created(r["return"], before)
    eq(names(seen), [], "queries while snapshots are made list nothing")
    seen = []
    for i in range(4):
        vm.c.send_json(vm.c.command("qbranch-snapshot-delete",
                                    {"name": "c%d" % i}))
        for k in range(3):
            seen += listed(vm, q)
        r = vm.c.recv_reply(CMD_TIMEOUT)
        if "return" not in r:
            raise qbtest.QBFailed("delete c%d: %r" % (i, r.raw))
        vm._deleted("c%d" % i, None)
    q.close()
    # A file a delete was removing that moment may show; nothing else.
    live = [f for f in names(seen) if os.path.lexists(f)]
    eq(live, [], "queries while snapshots are deleted list no file that "
       "exists after them")
    eq(listed(vm), [], "and none is left after them")
    vm.check_data("the VM's data after them")

    # The tree refused for changes (the guest ran behind qbranchd's back):
    # the list still works, the delete is refused.
    ghost = qcow2(os.path.join(imgdir, "vda.after"), vm.top_file("vda"))
    vm.c.close()
    vm.proxy.stop()
    vm.qemu.direct_client().cmd("quit")
    vm.qemu.wait(CMD_TIMEOUT)
    vm.qemu = env.start_qemu(disks=vm.disk_specs)
    eq(vm.qemu.direct_client().cmd("cont").get("return"), {},
       "the guest runs on the original images, behind qbranchd's back")
    vm.proxy = env.start_proxy(args=vm.proxy_args)
    vm.c = vm.proxy.client(negotiate=True, timeout=CMD_TIMEOUT)
    r = vm.cmd("qbranch-query-snapshots")
    ok(r.err_class == "GenericError", "the tree is refused for changes",
       repr(r.raw))
    eq(names(listed(vm)), [ghost], "the orphans are still listed")
    r = vm.cmd("qbranch-orphans-delete")
    ok(r.err_class == "GenericError" and os.path.exists(ghost),
       "their delete is refused", repr(r.raw))
    vm.c.cmd("quit")
    vm.qemu.wait(CMD_TIMEOUT)
    vm.c.close()
    vm.qemu = env.start_qemu(disks=vm.disk_specs)
    vm.c = vm.proxy.client(negotiate=True, timeout=CMD_TIMEOUT)
    qbtest.wait_for(lambda: "return" in vm.cmd("qbranch-query-snapshots"),
                    timeout=CMD_TIMEOUT, step=0.2)
    vm.ret("cont")

    # A tree file that cannot be read: nothing can be judged.
    used = tree_files(vm)
    tree = os.path.join(vm.state_dir, "tree.json")
    shutil.copy(tree, tree + ".good")
    vm.c.close()
    vm.proxy.stop()
    text_file(tree, b"{ not json")
    vm.proxy = env.start_proxy(args=vm.proxy_args)
    vm.c = vm.proxy.client(negotiate=True, timeout=CMD_TIMEOUT)
    r = vm.cmd("qbranch-query-orphans")
    ok(r.err_class == "GenericError" and "unusable" in (r.err_desc or ""),
       "with the tree file unreadable, the list is refused", repr(r.raw))
    r = vm.cmd("qbranch-orphans-delete")
    ok(r.err_class == "GenericError" and os.path.exists(ghost) and
       all(os.path.exists(p) for p in used), "and so is the delete",
       repr(r.raw))
    vm.c.close()
    vm.proxy.stop()
    os.replace(tree + ".good", tree)
    vm.restart_proxy()
    eq(names(listed(vm)), [ghost], "the tree back, the orphan is listed")
    eq(vm.ret("qbranch-orphans-delete", {"files": [ghost]}).get("deleted"),
       [ghost], "and removed")
    vm.check_data("the VM's data is as it was")


qbtest.run(main, timeout=180)

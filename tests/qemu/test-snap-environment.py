#!/usr/bin/env python3
# A hostile environment around the tree (test-snap-fulldisk has the full
# disks). A state directory made read-only under a running qbranchd: every
# operation that would write the tree fails with a clear error and leaves
# the tree, the files, the guest data and the running VM as they were;
# writable again, they work; qbranchd does not start on it. An image
# directory qbranchd, run as an unprivileged user, may not write in:
# operations that need a new overlay fail the same way, one that needs
# none works; with the permission back, all work. A tree.json cut in half,
# with garbage or a NUL byte in the middle, zeroed or empty: snapshot
# commands and the tree's queries are refused, naming the file and what is
# wrong, other commands pass, and no file is touched; with the good copy
# put back, everything works. The first two need root (mounts, setpriv);
# they are skipped otherwise.

import hashlib
import os
import pwd
import grp
import re
import shutil
import subprocess

import qbtest
from qbtest import ok, eq, MiB, SnapVM, CMD_TIMEOUT

mounts = []


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700"
                        % size, "tmpfs", path], capture_output=True)
    if r.returncode == 0:
        mounts.append(path)
    return r.returncode == 0


def remount(path, mode):
    """mode "ro" or "rw"; raises if mount refuses."""
    r = subprocess.run(["mount", "-o", "remount,%s" % mode, path],
                       capture_output=True)
    if r.returncode != 0:
        raise qbtest.QBTestError("remount %s %s: %s" % (
            mode, path, r.stderr.decode("utf-8", "replace").strip()))


def umount_all():
    for m in reversed(mounts):
        subprocess.run(["umount", "-l", m], capture_output=True)
    del mounts[:]


def dir_files(top):
    """Every file under top (relative path -> sha256 of its bytes), and
    every directory (-> "dir")."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), top)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, top)] = \
                    hashlib.sha256(fh.read()).hexdigest()
    return out


def only_files(listing):
    return {k: v for k, v in listing.items() if v != "dir"}


def tops(vm):
    """The image each disk of the VM runs on, as QEMU says (query-block)."""
    out = {}
    for b in vm.ret("query-block"):
        for dev in vm.devs:
            if b.get("qdev") == vm.disk(dev).qdev:
                out[dev] = (b.get("inserted") or {}).get("file")
    return out


def check_runs_on(vm, want, text):
    """The VM runs, each disk on the file want says (dev -> file)."""
    st = vm.status()
    got = tops(vm)
    return ok(st.get("running") is True and st.get("status") == "running"
              and got == want, text, "query-status: %r" % (st,),
              "disks run on: %r" % (got,), "the tree says: %r" % (want,))


def branch_files(vm):
    """The attached branch's overlay per disk, per qbranch-query-branches."""
    return {dev: vm.top_file(dev) for dev in vm.devs}


def tree_answers(vm):
    return {"snapshots": vm.query_snapshots(),
            "branches": vm.query_branches()}


def snapshot_ops(vm, detached, snapshot):
    """Every kind of tree change: (command, arguments, label)."""
    return [("qbranch-snapshot-create", {"name": "n1"}, "create"),
            ("qbranch-snapshot-create", {"name": "n2", "memory": True},
             "create with memory"),
            ("qbranch-snapshot-revert", {"name": snapshot}, "revert"),
            ("qbranch-branch-switch", {"branch": detached}, "switch"),
            ("qbranch-snapshot-delete", {"name": snapshot}, "delete"),
            ("qbranch-snapshot-edit", {"name": snapshot, "new-name": "n3"},
             "rename"),
            ("qbranch-branch-delete", {"branch": detached},
             "branch-delete")]


def build_tree(vm):
    """s1 -> s2; main grows from s2 (attached), s1-1 from s1 (detached)."""
    vm.write(0xa1, 0)
    vm.create("s1")
    vm.write(0xa2, MiB)
    vm.create("s2")
    vm.write(0xa3, 0)
    vm.revert("s1")
    vm.write(0xb1, 2 * MiB)
    vm.switch("main")


# --------------------------------------------------------------------------
# 1. The state directory becomes read-only


def readonly_state(env):
    state = env.path("state")
    if not mount_tmpfs(state, "64m"):
        qbtest.skip("read-only state directory", "cannot mount tmpfs")
        return
    vm = SnapVM(env)
    build_tree(vm)
    want = branch_files(vm)
    tree = tree_answers(vm)

    remount(state, "ro")
    files = dir_files(state)
    images = vm.file_hashes()
    ok(files.get("tree.json"), "(the state directory holds tree.json)")
    status, out = env.run_proxy(["--qemu", vm.qemu.sock, "--listen",
                                 env.path("other.sock"), "--state-dir",
                                 state])
    ok(status != 0 and state in out and "writable" in out,
       "qbranchd does not start on a read-only state directory, and says "
       "why", "exit %s: %s" % (status, out.strip()))
    for name, args, label in snapshot_ops(vm, "s1-1", "s2"):
        vm.expect_error(name, args, "read-only state directory: %s" % label,
                        desc_re=re.escape(state) + ".*read-only file system")
    eq(dir_files(state), files,
       "read-only state directory: its files are as before")
    eq(vm.file_hashes(), images,
       "read-only state directory: every image byte for byte as before")
    eq(tree_answers(vm), tree,
       "read-only state directory: the queries answer the tree as before")
    check_runs_on(vm, want, "read-only state directory: the VM runs, on "
                  "the branch the tree says")

    remount(state, "rw")
    vm.write(0xa4, 3 * MiB)
    vm.create("n1")
    vm.create("n2", memory=True)
    ok(vm.query_snapshots()["snapshots"][-1].get("memory") is True,
       "writable again: a snapshot with memory is taken")
    vm.revert("s2")
    vm.switch("s1-1")
    vm.edit("s2", **{"new-name": "n3"})
    vm.delete("n3")
    vm.branch_delete("main")
    vm.check_everything("writable again")
    vm.restart_proxy()
    vm.check_tree("writable again: a restart reads the same tree")
    vm.check_files("writable again: no stray image files")


# --------------------------------------------------------------------------
# 2. qbranchd, as an unprivileged user, may not write in --image-dir


def image_dir_denied(env):
    try:
        uid = pwd.getpwnam("nobody").pw_uid
        gid = grp.getgrnam("nogroup").gr_gid
    except KeyError:
        qbtest.skip("image directory denied", "no user nobody or nogroup")
        return
    setpriv = shutil.which("setpriv")
    if not setpriv:
        qbtest.skip("image directory denied", "no setpriv")
        return
    # qbranchd runs as nobody, in a directory of nobody's. QEMU runs as
    # root (it may live where nobody cannot run it, as QEMU 10 does here);
    # its monitor socket is handed to nobody. It is qbranchd that makes
    # the overlays, so it is qbranchd that meets the permissions.
    os.chown(env.dir, uid, gid)
    images = env.path("images")
    os.mkdir(images, 0o755)
    os.chown(images, uid, gid)
    wrapper = env.path("as-nobody")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\nexec %s --reuid=%d --regid=%d --clear-groups '
                '-- %s "$@"\n' % (setpriv, uid, gid, qbtest.QBRANCHD))
    os.chmod(wrapper, 0o755)
    start_qemu = env.start_qemu

    def start_qemu_for_nobody(*args, **kw):
        qemu = start_qemu(*args, **kw)
        os.chown(qemu.sock, uid, gid)
        return qemu

    env.start_qemu = start_qemu_for_nobody
    real, qbtest.QBRANCHD = qbtest.QBRANCHD, wrapper
    try:
        vm = SnapVM(env, proxy_args=["--image-dir", images])
    finally:
        qbtest.QBRANCHD = real
    with open("/proc/%d/status" % vm.proxy.pid) as f:
        uids = [l.split()[1:] for l in f if l.startswith("Uid:")][0]
    eq(uids, [str(uid)] * 4, "qbranchd runs as nobody")

    build_tree(vm)
    ok(any(f.startswith(images + "/") for f in branch_files(vm).values()),
       "overlays go to --image-dir")
    os.chmod(images, 0o555)
    listing = sorted(os.listdir(images))
    files = vm.file_hashes()
    state = only_files(dir_files(vm.state_dir))
    want = branch_files(vm)
    r = subprocess.run([setpriv, "--reuid=%d" % uid,
                        "--regid=%d" % gid, "--clear-groups", "--",
                        "test", "-w", images])
    ok(r.returncode == 1, "(the image directory is not writable by nobody)")
    for name, args, label in (
            ("qbranch-snapshot-create", {"name": "n1"}, "create"),
            ("qbranch-snapshot-create", {"name": "n2", "memory": True},
             "create with memory"),
            ("qbranch-snapshot-revert", {"name": "s2"}, "revert")):
        vm.expect_error(name, args, "image directory denied: %s" % label,
                        desc_re=re.escape(images) + ".*permission denied")
    eq(sorted(os.listdir(images)), listing,
       "image directory denied: no file left in it")
    eq(vm.file_hashes(), files,
       "image directory denied: every image byte for byte as before")
    # The failed save with memory may leave memory/ made, empty.
    eq(only_files(dir_files(vm.state_dir)), state,
       "image directory denied: the state directory's files as before")
    check_runs_on(vm, want, "image directory denied: the VM runs, on the "
                  "branch the tree says")
    vm.switch("s1-1")
    vm.check_data("image directory denied: a switch, which needs no new "
                  "overlay, works")

    os.chmod(images, 0o755)
    vm.write(0xc1, 3 * MiB)
    vm.create("n1")
    vm.revert("s2")
    vm.check_everything("permission back")
    vm.check_files("permission back: no stray image files")


# --------------------------------------------------------------------------
# 3. tree.json cut short, damaged or empty


def damaged_tree(env):
    vm = SnapVM(env)
    build_tree(vm)
    state = vm.state_dir
    tree_json = os.path.join(state, "tree.json")
    want = branch_files(vm)
    answers = tree_answers(vm)
    images = vm.file_hashes()
    vm.c.close()
    vm.proxy.stop()
    good = open(tree_json, "rb").read()
    ok(os.path.getsize(os.path.join(state, "tree.journal")) > 0,
       "(tree.json has records in tree.journal after it)")
    half = len(good) // 2
    line = "line %d, column \\d+: " % (good[:half].count(b"\n") + 1)
    # (label, the file's bytes, what the refusal must say is wrong)
    cases = [("cut in half", good[:half], line + r"\S"),
             ("with garbage in the middle",
              good[:half] + b"\xff garbage" + good[half + 10:],
              line + r"\S"),
             ("with a NUL byte in the middle",
              good[:half] + b"\0" + good[half + 1:],
              "a NUL byte at offset %d" % half),
             ("zeroed", bytes(len(good)), "a NUL byte at offset 0"),
             ("empty", b"", "it is empty")]
    for label, bad, cause in cases:
        with open(tree_json, "wb") as f:
            f.write(bad)
        files = dir_files(state)
        vm.proxy = env.start_proxy(args=vm.proxy_args)
        vm.c = vm.proxy.client(negotiate=True, timeout=CMD_TIMEOUT)
        what = "tree.json %s" % label
        refused = []
        for name, args, _ in snapshot_ops(vm, "s1-1", "s2") + [
                ("qbranch-query-snapshots", None, ""),
                ("qbranch-query-branches", None, ""),
                ("qbranch-query-disks", None, "")]:
            r = vm.cmd(name, args)
            refused.append((name, r.err_class, r.err_desc))
        descs = {d for _, _, d in refused}
        desc = refused[0][2] or ""
        ok(all(c == "GenericError" for _, c, _ in refused) and
           len(descs) == 1 and tree_json in desc and "unusable" in desc,
           "%s: every snapshot command and tree query is refused, naming "
           "the file" % what, *["%s -> %s: %s" % x for x in refused])
        ok(re.search(r"unusable \(%s" % cause, desc),
           "%s: the refusal says what is wrong, and where" % what,
           "expected /%s/ in: %s" % (cause, desc))
        ok(desc in vm.proxy.log_text(), "%s: and qbranchd logs it" % what)
        check_runs_on(vm, want, "%s: ordinary commands pass; the VM runs "
                      "on its branch" % what)
        vm.check_data("%s: guest data intact" % what)
        vm.c.close()
        vm.proxy.stop()
        eq(dir_files(state), files,
           "%s: tree.json and tree.journal are left as they were" % what)
        eq(vm.file_hashes(), images, "%s: every image byte for byte as "
           "before" % what)

    with open(tree_json, "wb") as f:
        f.write(good)
    vm.proxy = env.start_proxy(args=vm.proxy_args)
    vm.c = vm.proxy.client(negotiate=True, timeout=CMD_TIMEOUT)
    eq(tree_answers(vm), answers, "the good copy put back: the same tree")
    vm.write(0xd1, 3 * MiB)
    vm.create("n1")
    vm.check_everything("the good copy put back")


def main(env):
    damaged_tree(env)
    if os.geteuid() != 0:
        qbtest.skip("read-only state directory", "needs root (mount)")
        qbtest.skip("image directory denied", "needs root (setpriv)")
        return
    try:
        readonly_state(qbtest.Env())
    finally:
        umount_all()
    image_dir_denied(qbtest.Env())


qbtest.run(main, timeout=120)

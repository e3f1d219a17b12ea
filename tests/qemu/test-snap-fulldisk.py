#!/usr/bin/env python3
# A full disk. Overlays go to --image-dir on a small tmpfs, and the tree
# file and its journal to a state directory on another one. With either full, create,
# revert and switch fail with a clear error and leave the tree, the files
# and the guest data as they were; with room again, the same operations
# work. A merge that runs out of room midway leaves the snapshot deleted,
# its image as an unnamed base, every byte readable and the tree file in
# step; the next merge-delete, with room, finishes it. Needs root (to
# mount tmpfs); skipped otherwise.

import os
import subprocess

import qbtest
from qbtest import ok, eq, SnapVM

mounts = []


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size,
                        "tmpfs", path], capture_output=True)
    if r.returncode == 0:
        mounts.append(path)
    return r.returncode == 0


def umount_all():
    for m in reversed(mounts):
        subprocess.run(["umount", "-l", m], capture_output=True)


def fill(path):
    """Fills the filesystem at path; returns the filler's path."""
    filler = os.path.join(path, "filler")
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\xff" * 4096)
                f.flush()
    except OSError:
        pass
    return filler


def state_files(state):
    """The tree file and its journal, as they are on disk."""
    out = {}
    for name in ("tree.json", "tree.journal"):
        p = os.path.join(state, name)
        if os.path.exists(p):
            out[name] = open(p, "rb").read()
    return out


def main(env):
    images, state = env.path("images"), env.path("state")
    if os.geteuid() != 0 or not (mount_tmpfs(images, "16m") and
                                 mount_tmpfs(state, "1m")):
        qbtest.skip_all("needs root to mount tmpfs")
        return
    try:
        run(env, images, state)
    finally:
        umount_all()


def run(env, images, state):
    vm = SnapVM(env, proxy_args=["--image-dir", images])
    vm.write(0xa1, 0)
    vm.create("s1")
    vm.write(0xa2, 0)
    ok(os.path.isfile(os.path.join(images, "vda.s1")),
       "overlays go to --image-dir")

    # ---- the image directory is full ----------------------------------
    filler = fill(images)
    listing = sorted(os.listdir(images))
    vm.expect_error("qbranch-snapshot-create", {"name": "s2"},
                    "create with the image directory full")
    vm.expect_error("qbranch-snapshot-revert", {"name": "s1"},
                    "revert with the image directory full")
    eq(sorted(os.listdir(images)), listing,
       "no partial overlay left in the full directory")
    if os.path.exists(filler):
        os.unlink(filler)
    vm.create("s2")
    vm.check_data("with room again, create works")

    # ---- the state directory is full ----------------------------------
    tree = state_files(state)
    filler = fill(state)
    vm.write(0xa3, 0)
    vm.expect_error("qbranch-snapshot-create", {"name": "s3"},
                    "create with the state directory full",
                    desc_re="cannot write")
    vm.expect_error("qbranch-snapshot-revert", {"name": "s1"},
                    "revert with the state directory full",
                    desc_re="cannot write")
    vm.expect_error("qbranch-snapshot-delete", {"name": "s2"},
                    "delete with the state directory full",
                    desc_re="cannot write")
    eq(state_files(state), tree,
       "the tree file and its journal are the last good ones")
    ok(not [f for f in os.listdir(state) if f.endswith(".tmp")],
       "no temporary tree file left behind")
    if os.path.exists(filler):
        os.unlink(filler)
    vm.create("s3")
    vm.revert("s1")
    vm.switch("main")
    vm.check_everything("with room again, everything works")

    # ---- the image directory fills during a merge ------------------------
    for k in range(48):                 # 3 MiB that s4 freezes
        vm.write(0x5a, (4 << 20) + k * qbtest.REGION)
    vm.create("s4")
    for k in range(64):                 # 4 MiB more on top: a stream then
        vm.write(0x6b, (8 << 20) + k * qbtest.REGION)
    filler = fill(images)
    r = vm.cmd("qbranch-snapshot-delete", {"name": "s4"})
    ok(r.err_class == "GenericError" and "was deleted, but merging" in
       (r.err_desc or "") and "space" in (r.err_desc or ""),
       "a merge out of room fails clearly", r.raw.decode().strip())
    vm._deleted("s4", None)
    vm.check_tree("s4 is gone from the tree")
    vm.check_data("the branch reads all its data")
    if os.path.exists(filler):
        os.unlink(filler)
    vm.restart_proxy()
    vm.check_tree("the tree file was in step: same tree after a restart")
    vm.check_files("the unmerged image is still there, as a base")
    bases = [b["file"] for b in qbtest.read_tree(state)["bases"]]
    ok(os.path.join(images, "vda.s3") in bases,
       "s4's image vda.s3 is an unnamed base", bases)
    vm.create("s5")
    vm.write(0x7c, 0)
    vm.delete("s5")
    ok(not os.path.exists(os.path.join(images, "vda.s3")),
       "with room again, the next merge-delete merged the base away")
    vm.check_everything("after the failed and the finished merge")
    vm.check_files("no stray files")


qbtest.run(main)

#!/usr/bin/env python3
# A full disk. Overlays go to --image-dir on a small tmpfs, and the tree
# file to a state directory on another one. With either full, create,
# revert and switch fail with a clear error and leave the tree, the files
# and the guest data as they were; with room again, the same operations
# work. Needs root (to mount tmpfs); skipped otherwise.

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


def main(env):
    images, state = env.path("images"), env.path("state")
    if os.geteuid() != 0 or not (mount_tmpfs(images, "16m") and
                                 mount_tmpfs(state, "64k")):
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
    tree = open(os.path.join(state, "tree.json")).read()
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
    eq(open(os.path.join(state, "tree.json")).read(), tree,
       "the tree file is the last good one")
    ok(not [f for f in os.listdir(state) if f.endswith(".tmp")],
       "no temporary tree file left behind")
    if os.path.exists(filler):
        os.unlink(filler)
    vm.create("s3")
    vm.revert("s1")
    vm.switch("main")
    vm.check_everything("with room again, everything works")


qbtest.run(main)

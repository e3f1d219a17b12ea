#!/usr/bin/env python3
# A linear chain of external snapshots on one qcow2 disk (-blockdev):
# create, revert, the data each point reads, chain depth, current-snapshot
# tracking, overlay names, run state, default names.

import calendar
import os
import re
import time

import qbtest
from qbtest import ok, eq, pick, Disk, MiB, SnapVM, QB_COMMANDS, sha256

A, B, C, D, E, F = 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6


def main(env):
    vm = SnapVM(env, disks=[Disk("vda", image="vm.qcow2")], cont=True)
    img = env.path("vm.qcow2")
    stem = env.path("vm")

    names = {x.get("name") for x in vm.ret("query-commands")}
    missing = [n for n in QB_COMMANDS if n not in names]
    ok(not missing, "query-commands lists the qbranch commands",
       "missing: %s" % missing)

    # ---- before any snapshot ---------------------------------------------
    eq(vm.query_snapshots(), {"snapshots": [], "current": None},
       "no snapshots, no current snapshot at first")
    eq(pick(vm.query_branches()),
       [{"name": "main", "base": None, "attached": True,
         "disks": [{"device": "vda", "file": img}]}],
       "one branch: main, base null, attached, on the original image")
    disks = vm.query_disks()
    eq([(d.get("device"), [(x.get("file"), x.get("format"),
                            x.get("node-name")) for x in d.get("chain", [])])
        for d in disks],
       [("vda", [(img, "qcow2", "vda-fmt")])],
       "qbranch-query-disks: vda on vm.qcow2, node vda-fmt")

    # ---- s1 -------------------------------------------------------------
    vm.write(A, 0)
    vm.check_data("A written at 0 reads back")
    t0 = int(time.time())
    s1 = vm.create("s1", description="first one")
    t1 = int(time.time())
    eq({k: s1.get(k) for k in ("name", "parent", "children", "description",
                               "vm-state", "disks", "memory")},
       {"name": "s1", "parent": None, "children": [],
        "description": "first one", "vm-state": "running",
        "disks": [{"device": "vda", "file": img}], "memory": False},
       "create s1 returns the snapshot object; frozen image is vm.qcow2")
    ok(isinstance(s1.get("created"), int) and
       t0 - 1 <= s1.get("created") <= t1 + 1,
       "s1.created is the creation time in unix seconds",
       "created %r, expected %d..%d" % (s1.get("created"), t0, t1))
    ok(os.path.isfile(stem + ".s1"), "overlay vm.s1 created")
    eq(vm.chain(), [stem + ".s1", img], "chain after s1: vm.s1 -> vm.qcow2")
    eq(vm.running(), True, "VM still running after create")
    vm.check_tree("after s1: tree and current (s1)")
    eq(vm.query_snapshots().get("current"), "s1", "current snapshot is s1")
    vm.check_data("after s1: still reads A")

    # ---- s2 -------------------------------------------------------------
    vm.write(B, 0)
    vm.write(C, MiB)
    vm.check_data("B at 0 and C at 1M on top of s1")
    s2 = vm.create("s2")
    eq((s2.get("parent"), s2.get("disks"), s2.get("description")),
       ("s1", [{"device": "vda", "file": stem + ".s1"}], ""),
       "s2: parent s1, frozen image vm.s1, empty description")
    q = {s["name"]: s for s in vm.query_snapshots().get("snapshots", [])}
    eq(q.get("s1", {}).get("children"), ["s2"], "s1.children = [s2]")
    ok(os.path.isfile(stem + ".s2"), "overlay vm.s2 created")
    eq(vm.chain(), [stem + ".s2", stem + ".s1", img],
       "chain after s2: vm.s2 -> vm.s1 -> vm.qcow2 (depth 3)")
    chain = vm.query_disks()[0].get("chain", [])
    ok(len(chain) == 3 and all(x.get("node-name") and x.get("format") ==
                               "qcow2" for x in chain),
       "every chain element has its format and node name", repr(chain))
    eq(vm.query_snapshots().get("current"), "s2", "current snapshot is s2")
    eq([(b["name"], b["base"], b["attached"], b["disks"])
        for b in vm.query_branches()],
       [("main", "s2", True, [{"device": "vda", "file": stem + ".s2"}])],
       "main now grows from s2 on vm.s2")

    vm.write(D, 0)
    vm.write(D, 2 * MiB)
    vm.check_data("D written on main after s2")

    # ---- revert s1 (running, default state) ----------------------------
    br = vm.revert("s1")
    eq(pick(br), {"name": "s1-1", "base": "s1", "attached": True,
            "disks": [{"device": "vda", "file": stem + ".s1-1"}]},
       "revert s1 returns the new branch s1-1 on vm.s1-1")
    ok(os.path.isfile(stem + ".s1-1"), "overlay vm.s1-1 created")
    eq(vm.running(), True, "running before revert -> running after")
    vm.check_data("after revert to s1: A at 0, zeroes at 1M and 2M")
    ok(env.check(vm.c, "vda", 0, MiB), "explicitly: 1M reads zeroes "
       "(C was written after s1)")
    eq(vm.chain(), [stem + ".s1-1", img],
       "chain depth after revert to s1 = depth(s1) + 1 = 2")
    eq(vm.query_snapshots().get("current"), "s1", "current snapshot is s1")
    vm.check_tree("after revert s1: main detached (base s2), s1-1 attached")

    vm.write(E, 0)
    vm.write(E, 3 * MiB)
    vm.check_data("E written on s1-1")

    # ---- revert s2, paused ----------------------------------------------
    br = vm.revert("s2", state="paused")
    eq((br.get("name"), br.get("base")), ("s2-1", "s2"),
       "revert s2 -> branch s2-1")
    st = vm.status()
    ok(st.get("running") is False and st.get("status") in
       ("paused", "prelaunch"), "state paused: VM is not running",
       "query-status: %r" % st)
    vm.check_data("after revert to s2: B at 0, C at 1M, zeroes at 2M, 3M")
    eq(vm.chain(), [stem + ".s2-1", stem + ".s1", img],
       "chain depth after revert to s2 = depth(s2) + 1 = 3")
    eq(vm.query_snapshots().get("current"), "s2", "current snapshot is s2")

    # ---- revert s1 again, default state = as before (paused) -------------
    br = vm.revert("s1")
    eq(br.get("name"), "s1-2", "second revert to s1 -> s1-2 (first free N)")
    eq(vm.running(), False, "paused before revert -> still paused")
    vm.check_data("s1-2 reads A only")
    eq(len(vm.chain()), 2, "chain depth still 2 after another revert")

    # ---- revert with explicit branch name and state running ---------------
    br = vm.revert("s2", branch="work", state="running")
    eq((br.get("name"), br.get("base"), br.get("disks")),
       ("work", "s2", [{"device": "vda", "file": stem + ".s2-2"}]),
       "revert s2 branch=work -> branch work on vm.s2-2")
    eq(vm.running(), True, "state running -> running")
    vm.check_data("work reads B at 0 and C at 1M")
    vm.write(F, 4 * MiB)

    # ---- snapshot on a reverted branch -----------------------------------
    s3 = vm.create("s3")
    eq((s3.get("parent"), s3.get("disks")),
       ("s2", [{"device": "vda", "file": stem + ".s2-2"}]),
       "s3 on branch work: parent s2, frozen image vm.s2-2")
    eq(vm.chain(), [stem + ".s3", stem + ".s2-2", stem + ".s1", img],
       "chain after s3: vm.s3 -> vm.s2-2 -> vm.s1 -> vm.qcow2")
    vm.check_tree("after s3: tree, branches and current")

    # ---- default names -------------------------------------------------
    d1 = vm.create()
    d2 = vm.create()
    pat = r"^vm-\d{14}(-\d+)?$"
    ok(re.match(pat, d1.get("name") or "") and
       re.match(pat, d2.get("name") or "") and d1["name"] != d2["name"],
       "default names vm-YYYYMMDDHHMMSS[-N], distinct",
       "%r %r" % (d1.get("name"), d2.get("name")))
    stamp = (d1.get("name") or "")[3:17]
    if re.match(r"^\d{14}$", stamp):
        created = d1.get("created", 0)
        t = time.strptime(stamp, "%Y%m%d%H%M%S")
        when = {"local": time.mktime(t), "UTC": calendar.timegm(t)}
        ok(any(abs(v - created) <= 2 for v in when.values()),
           "default name is the creation time (within 2 s, local or UTC)",
           "name %s, created %s" % (d1["name"], created))
    eq((d1.get("parent"), d2.get("parent")), ("s3", d1.get("name")),
       "default-named snapshots chain on the current snapshot")
    vm.check_data("data unchanged by creating snapshots")

    # ---- overlay files named by the caller (in the disk's own directory) --
    br = vm.revert("s1", branch="named",
                   disks=[{"device": "vda", "file": stem + ".custom"}])
    eq(pick(br, ("name", "disks")),
       {"name": "named", "disks": [{"device": "vda",
                                    "file": stem + ".custom"}]},
       "revert with disks[].file: the branch runs on the named file")
    eq(vm.chain(), [stem + ".custom", img], "chain: vm.custom -> vm.qcow2")
    vm.check_data("the named overlay reads s1's data")
    vm.write(0x5c, 5 * MiB)
    s = vm.create("s4", disks=[{"device": "vda", "file": stem + ".mine"}])
    eq(s.get("disks"), [{"device": "vda", "file": stem + ".custom"}],
       "create with disks[].file: s4 froze vm.custom")
    eq(vm.chain()[0], stem + ".mine", "and the device runs on vm.mine")

    # ---- every snapshot and branch still reads its own data ---------------
    vm.check_everything("end")
    vm.check_frozen("no frozen image changed after it was frozen")
    eq(sha256(img), vm.orig_hash.get("vda"),
       "vm.qcow2 unchanged since s1 froze it")
    vm.check_files("no stray image files")


qbtest.run(main, timeout=90)

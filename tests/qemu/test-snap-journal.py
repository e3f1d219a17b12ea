#!/usr/bin/env python3
# The tree's journal (README.md, "The tree file"). Once tree.json exists,
# each step of an operation appends a record to tree.journal instead of
# rewriting the whole file; read_tree() replays it as documented, apart
# from qbranchd's code, and must find the tree the proxy answers. After
# SIGKILL, qbranchd replays the journal; a record cut short by a crash is
# dropped; a damaged record before good ones makes the tree unusable with
# the reason, touching nothing; the journal is folded into tree.json once
# it outgrows it; a version 1 tree file still loads; a journal left
# without its tree file is emptied.

import json
import os

import qbtest
from qbtest import ok, eq, SnapVM, MiB

PAGE = 4096


def everything(vm):
    return {"snapshots": vm.query_snapshots(),
            "branches": vm.query_branches(), "disks": vm.query_disks()}


def as_files(vm):
    """The proxy's tree in the tree file's terms."""
    snaps = vm.query_snapshots()["snapshots"]
    branches = vm.query_branches()
    return ({s["name"]: (s["parent"], s["description"],
                         [(d["device"], d["file"]) for d in s["disks"]])
             for s in snaps},
            {b["name"]: (b["base"], b["attached"],
                         [(d["device"], d["file"]) for d in b["disks"]])
             for b in branches})


def from_file(tree):
    return ({s["name"]: (s["parent"], s["description"],
                         [(d["device"], d["file"]) for d in s["disks"]])
             for s in tree["snapshots"]},
            {b["name"]: (b["base"], b["attached"],
                         [(d["device"], d["file"]) for d in b["disks"]])
             for b in tree["branches"]})


def size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def main(env):
    vm = SnapVM(env, disks=("vda", "vdb"))
    state = vm.state_dir
    tree_json = os.path.join(state, "tree.json")
    journal = os.path.join(state, "tree.journal")

    vm.write(0xa1, 0)
    vm.create("s1", description="first")
    ok(os.path.exists(tree_json), "the first change writes tree.json")
    whole = open(tree_json, "rb").read()
    vm.write(0xa2, MiB)
    vm.create("s2")
    vm.revert("s1")
    vm.write(0xa3, 0, dev="vdb")
    vm.create("s3")
    vm.edit("s1", **{"new-name": "r1", "description": "renamed"})
    vm.switch("main")
    vm.delete("s2")
    eq(open(tree_json, "rb").read(), whole,
       "later steps leave tree.json as it was")
    ok(size(journal) > 0 and size(journal) % PAGE == 0,
       "they append records to tree.journal, in whole pages",
       "size %d" % size(journal))
    eq(from_file(qbtest.read_tree(state)), as_files(vm),
       "tree.json with the journal replayed is the proxy's tree")

    # ---- SIGKILL: nothing is written at exit, the journal has it all ----
    before = everything(vm)
    vm.restart_proxy(kill=True)
    eq(everything(vm), before, "after SIGKILL and a restart: the same tree")
    vm.check_everything("after SIGKILL and a restart")

    # ---- a record cut short by a crash ------------------------------------
    good = open(journal, "rb").read()
    seq = qbtest.read_tree(state)["seq"]
    vm.c.close()
    vm.proxy.stop()
    with open(journal, "ab") as f:
        f.write(b'{"seq": %d, "snapshots": [["del", 0' % (seq + 1))
    vm.restart_proxy()
    eq(everything(vm), before, "a record cut short is dropped: the tree "
       "as it was acknowledged")
    eq(open(journal, "rb").read(), good, "and cut off the journal")
    ok("cut short" in vm.proxy.log_text(), "qbranchd says so in its log")
    vm.create("s4")
    vm.check_everything("after the dropped record, operations go on")
    before = everything(vm)

    # ---- a damaged record before good ones ----------------------------------
    good = open(journal, "rb").read()
    vm.c.close()
    vm.proxy.stop()
    with open(journal, "r+b") as f:
        f.write(b"#")
    vm.proxy = env.start_proxy(args=vm.proxy_args)
    vm.c = vm.proxy.client(negotiate=True)
    r = vm.cmd("qbranch-snapshot-create", {"name": "no"})
    ok(r.err_class == "GenericError" and "unusable" in (r.err_desc or "")
       and "journal" in (r.err_desc or ""), "a damaged record before good "
       "ones: snapshot commands are refused, with the reason",
       r.raw.decode().strip())
    r = vm.cmd("query-status")
    ok("return" in r, "ordinary commands still pass")
    eq(open(journal, "rb").read()[1:], good[1:],
       "the journal is left as it is, for repair")
    with open(journal, "wb") as f:
        f.write(good)
    vm.restart_proxy()
    eq(everything(vm), before, "repaired, the same tree again")

    # ---- the journal is folded into tree.json when it outgrows it ---------
    first = qbtest.read_tree(state)["seq"]
    folded = False
    for k in range(120):
        vm.revert("s3", discard=True)
        if size(journal) < PAGE * 4:
            folded = True
            break
    ok(folded, "after enough records the journal starts again",
       "journal %d bytes" % size(journal))
    tree = json.load(open(tree_json))
    ok(tree["version"] == 2 and tree["seq"] > first,
       "tree.json was written whole, version 2, with the seq it holds",
       "version %s seq %s" % (tree["version"], tree["seq"]))
    eq(from_file(qbtest.read_tree(state)), as_files(vm),
       "after folding, file and journal still give the proxy's tree")
    before = everything(vm)
    vm.restart_proxy(kill=True)
    eq(everything(vm), before, "and a restart reads it back")

    # ---- a version 1 tree file, from before the journal -------------------
    v1 = qbtest.read_tree(state)
    del v1["seq"]
    v1["version"] = 1
    vm.c.close()
    vm.proxy.stop()
    with open(tree_json, "w") as f:
        json.dump(v1, f)
    os.unlink(journal)
    vm.restart_proxy()
    eq(everything(vm), before, "a version 1 tree file loads")
    vm.write(0xa4, 2 * MiB)
    vm.create("s5")
    vm.check_everything("and operations go on from it")
    eq(json.load(open(tree_json))["version"], 2,
       "the first change writes it whole as version 2")

    # ---- a journal without its tree file ----------------------------------
    vm.revert("r1")
    vm.c.close()
    vm.proxy.stop()
    os.unlink(tree_json)
    ok(size(journal) > 0, "(the journal has records)")
    vm.proxy = env.start_proxy(args=vm.proxy_args)
    vm.c = vm.proxy.client(negotiate=True)
    eq(vm.query_snapshots()["snapshots"], [],
       "tree.json removed by hand: a new tree")
    eq(size(journal), 0, "and the old tree's journal is emptied")


qbtest.run(main)

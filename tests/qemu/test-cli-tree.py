#!/usr/bin/env python3
# The human output of qbranch (tree, list, list --parent, branches, info,
# tree --dot) against golden files in tests/qemu/golden/:
#
#   *-real.*  seed 001's tree built on a real QEMU behind qbranchd; times,
#             ages and sizes are normalized (they change from run to run)
#   *-fake.*  a canned tree served by a fake qbranchd (QMP over a unix
#             socket, in this file) with what the real one may lack yet:
#             sizes, memory state, a branch on the original disks, several
#             roots, a description with control characters; ages are
#             relative to now, so only the creation times are normalized
#
# QBTEST_UPDATE_GOLDEN=1 rewrites the golden files from this run.

import os
import re
import time

import qbtest
from qbtest import ok, eq, Disk, SnapVM, FakeProxy, qbranch, seed001_tree

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
UPDATE = bool(os.environ.get("QBTEST_UPDATE_GOLDEN"))

TIME_RE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}")
# a tree line's age (4 columns) and size (5 columns), right-aligned
AGE_SIZE_RE = re.compile(r"  ([ \d]{3}[smhdy]|   -| old)  "
                         r"([ \d.]{4}[BKMGTPE]|    -)(?=  |$)")
LIST_SIZE_RE = re.compile(r"(yes|no)( +)([ \d.]{4}[BKMGTPE]|    -)(?=  |$)",
                          re.M)


def norm_times(text):
    return TIME_RE.sub("YYYY-MM-DD hh:mm:ss +zzzz", text)


def norm_tree(text):
    """Ages and sizes of a tree view, same widths."""
    return "\n".join(AGE_SIZE_RE.sub("   AGE   SIZE", l, count=1)
                     for l in text.split("\n"))


def norm_list(text):
    return LIST_SIZE_RE.sub(lambda m: m.group(1) + m.group(2) + " SIZE",
                            norm_times(text))


def words(text):
    """Each line's words."""
    return [l.split() for l in text.splitlines()]


def below(tree, root, end):
    """The words of what a tree view shows below its line root (up to
    line end), one level up: what --from shows. The widths differ."""
    return words("\n".join(l[4:] for l in tree.splitlines()[root + 1:end]))


def golden(name, got, text):
    """One test point: got equals the golden file name."""
    path = os.path.join(GOLDEN, name)
    if UPDATE:
        with open(path, "w") as f:
            f.write(got)
        qbtest.diag("wrote %s" % path)
    try:
        with open(path) as f:
            want = f.read()
    except OSError as e:
        want = "(cannot read %s: %s)" % (path, e)
    return ok(got == want, "%s matches golden/%s" % (text, name),
              "---- expected ----", want, "---- got ----", got)


# --------------------------------------------------------------------------
# A canned tree for a fake qbranchd.

def fake_tree(now):
    def snap(name, parent, children, age, desc, size=None, memory=None,
             state="running"):
        s = {"name": name, "parent": parent, "children": children,
             "created": now - age, "description": desc, "vm-state": state,
             "disks": [{"device": "vda", "file": "/img/vm.%s" % name}],
             "current": name == "web-tls"}
        if size is not None:
            s["size"] = size
        if memory is not None:
            s["memory"] = memory
        return s
    snaps = [
        snap("base", None, ["web", "db"], 3 * 86400 + 100,
             "Debian 12, fresh install", 1610612736, False, "paused"),
        snap("web", "base", ["web-tls"], 7200 + 30, "nginx configured",
             157286400, True),
        snap("web-tls", "web", [], 95,
             "certificates\tand \x1b[31mcolour", 1572864, True),
        snap("db", "base", [], 5 * 3600, ""),
        snap("imported", None, [], 400 * 86400, "from the old host", 0),
    ]
    branches = [
        {"name": "orig", "base": None, "attached": False,
         "disks": [{"device": "vda", "file": "/img/vm.qcow2"}]},
        {"name": "main", "base": "web-tls", "attached": True,
         "disks": [{"device": "vda", "file": "/img/vm.web-tls"}]},
        {"name": "try-1", "base": "web", "attached": False,
         "disks": [{"device": "vda", "file": "/img/vm.web-1"}]},
        {"name": "scratch", "base": "db", "attached": False,
         "disks": [{"device": "vda", "file": "/img/vm.db"},
                   {"device": "vdb", "file": "/img/data.db"}]},
    ]
    return {"snapshots": snaps, "current": "web-tls"}, branches


def fake(env):
    q, branches = fake_tree(int(time.time()))
    path = env.path("fake.sock")
    fp = FakeProxy(path, {"qbranch-query-snapshots": q,
                          "qbranch-query-branches": branches})
    tz = {"TZ": "UTC"}
    try:
        r = qbranch("tree", sock=path, env=tz)
        eq(r.rc, 0, "fake: tree exits 0")
        golden("tree-fake.txt", r.out, "fake: tree (sizes, +mem, roots, "
               "a branch on the original disks)")
        r = qbranch("list", "--parent", sock=path, env=tz)
        golden("list-fake.txt", norm_times(r.out), "fake: list --parent")
        r = qbranch("info", "web-tls", sock=path, env=tz)
        golden("info-fake.txt", norm_times(r.out), "fake: info web-tls")
        r = qbranch("tree", "--dot", sock=path, env=tz)
        golden("tree-fake.dot", r.out, "fake: tree --dot")
        r = qbranch("list", "--tree", "--from", "base", sock=path, env=tz)
        eq(words(r.out), below(qbranch("tree", sock=path).out, 1, 8),
           "fake: list --tree --from base: the subtrees below base")
        r = qbranch("list", "--leaves", "--json", sock=path)
        eq(r.json() if r.rc == 0 else r,
           {"snapshots": [s for s in q["snapshots"] if not s["children"]],
            "current": "web-tls"}, "fake: list --leaves --json")
        r = qbranch("tree", sock=path, env={"LC_ALL": "C.UTF-8"})
        ascii_ = qbranch("tree", sock=path).out
        utf8 = r.out.replace("\u251c\u2500\u2500", "|--").replace(
            "\u2514\u2500\u2500", "`--").replace("\u2502", "|")
        if "\u2500" in r.out or utf8 != ascii_:
            eq(utf8, ascii_, "fake: in a UTF-8 locale the tree is drawn "
               "with box characters, otherwise the same")
        else:
            qbtest.diag("no UTF-8 locale here (C.UTF-8): box drawing not "
                        "checked")
    finally:
        fp.close()


# --------------------------------------------------------------------------
# The real thing.

def real(env):
    vm = SnapVM(env, disks=[Disk("vda", image="vm.qcow2")], cont=True)
    sock = env.path("proxy.sock")
    seed001_tree(vm)
    vm.edit("A", description="the base install")
    vm.edit("E", description="on branch A-1")
    tz = {"TZ": "UTC"}

    def q(*args):
        r = qbranch(*args, sock=sock, env=tz)
        if r.rc != 0:
            qbtest.diag(repr(r))
        return r

    r = q("tree")
    golden("tree-real.txt", norm_tree(r.out), "real: tree of seed 001")
    r = q("list")
    golden("list-real.txt", norm_list(r.out), "real: list")
    r = q("list", "--parent")
    golden("list-parent-real.txt", norm_list(r.out), "real: list --parent")
    r = q("branches")
    golden("branches-real.txt", r.out.replace(env.dir, "DIR"),
           "real: branches")
    r = q("list", "--roots")
    eq([l.split()[0] for l in r.out.splitlines()], ["NAME", "A"],
       "real: list --roots: A")
    r = q("list", "--leaves")
    eq([w[0] for w in words(r.out.replace("*", ""))[1:]], ["D", "E"],
       "real: list --leaves: D and E")
    r = q("list", "--from", "C", "--parent")
    eq([w[:2] for w in words(r.out.replace("*", ""))[1:]], [["E", "C"]],
       "real: list --from C --parent: E, child of C")
    # Ages normalized: a second may tick between the two runs.
    r = q("tree", "--from", "A")
    eq(words(norm_tree(r.out)), below(norm_tree(q("tree").out), 0, None),
       "real: tree --from A: A's subtrees, one level up")

    # after a rename and a merge, the views follow
    vm.edit("C", **{"new-name": "C2"})
    vm.delete("B")
    r = q("tree")
    lines = norm_tree(r.out).splitlines()
    eq(lines, ["A             AGE   SIZE  the base install",
               "|-- D         AGE   SIZE",
               "|   `-- [main]",
               "`-- C2        AGE   SIZE",
               "    `-- E *   AGE   SIZE  on branch A-1",
               "        `-- [A-1] *"],
       "real: tree after renaming C and deleting B")


def main(env):
    if not qbtest.QBRANCH:
        qbtest.skip_all("QBRANCH is not set")
        return
    fake(env)
    real(env)


qbtest.run(main, timeout=90)

#!/usr/bin/env python3
# rules/transparent.json: QEMU's internal-snapshot commands run as the
# tree's operations. Each session is run twice on identical fresh VMs,
# directly against QEMU (its own internal snapshots, qcow2 disks) and
# through qbranchd (--listen ...,rules=transparent, --state-dir), and what
# the guest reads, the answers, the run state and the job events must
# agree at every step. Then the same, HMP and jobs, on a VM QEMU alone
# cannot snapshot (a raw data disk and UEFI variables on pflash), and the
# jobs' life while their client goes on or goes away.
#
# Known differences, not checked: the tree keeps no guest clock (VM CLOCK
# reads zero), VM SIZE is the size of the saved state files, and a failed
# load leaves the VM running on its branch (QEMU leaves it stopped).

import os
import re
import shutil

import qbtest
from qbtest import ok, eq, diag, Disk, MiB, CMD_TIMEOUT, REGION

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"

# Regions of the data disk and the pattern each may hold.
P0 = (0xa0, 0)
P1 = (0x11, 1 * MiB)
P2 = (0x22, 2 * MiB)
P3 = (0x33, 3 * MiB)
REGIONS = (P0, P1, P2, P3)

HEADER0 = "List of snapshots present on all disks:"
ROW = re.compile(r"^(--)\s+(\S+)\s+(\d+(?:\.\d+)? (?:[KMGTPE]i)?B) "
                 r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s+"
                 r"(\d+:\d\d:\d\d\.\d{3})\s*(\S*)$")
DONE = ["created", "running", "waiting", "pending", "concluded"]
FAILED = ["created", "running", "aborting", "concluded"]


class Run:
    """One VM, its own directory, and the client the session goes
    through: QEMU's own monitor (direct) or qbranchd's transparent
    listener."""

    def __init__(self, label, proxied, disks, extra=(), dev="vda"):
        self.label = label
        self.env = qbtest.Env()
        self.failed_before = qbtest._tap.failed
        self.dev = dev
        self.qemu = self.env.start_qemu(disks=disks, extra=extra)
        self.proxy = None
        if proxied:
            sock = self.env.path("xlate.sock")
            self.proxy = self.env.start_proxy(
                listen=(), wait=False,
                args=["--listen", sock + ",rules=transparent",
                      "--state-dir", self.env.path("state")])
            self.proxy.listen = [sock]
            self.proxy.wait_ready()
            self.c = self.client()
        else:
            self.c = self.qemu.direct_client(timeout=CMD_TIMEOUT)
        self.ret("cont")

    def client(self):
        c = self.proxy.client(negotiate=True, timeout=CMD_TIMEOUT)
        c.timeout = CMD_TIMEOUT
        return c

    def ret(self, name, args=None, c=None):
        r = (c or self.c).cmd(name, args)
        if "return" not in r:
            raise qbtest.QBTestError("%s: %s failed: %r" % (self.label, name,
                                                            r.raw))
        return r["return"]

    def hmp(self, line):
        return self.env.hmp(self.c, line)

    def write(self, region):
        self.env.write(self.c, self.dev, region[0], region[1])

    def sees(self):
        """Per region: the pattern it reads, 0 for zeroes, None for
        anything else. Two reads of every region through NBD."""
        zero = {off for _, off, _, _ in self.env.check_regions(
            self.c, self.dev, [(0, off, REGION) for _, off in REGIONS])}
        mine = {off for _, off, _, _ in self.env.check_regions(
            self.c, self.dev, [(pat, off, REGION) for pat, off in REGIONS])}
        if None in zero or None in mine:
            raise qbtest.QBTestError("%s: qemu-io could not read" %
                                     self.label)
        return tuple(pat if off not in mine else 0 if off not in zero
                     else None for pat, off in REGIONS)

    def status(self):
        return self.ret("query-status")["status"]

    def node(self):
        return self.env.root_node(self.c, self.dev)

    def finish(self):
        if qbtest._tap.failed > self.failed_before:
            self.env.dump_logs()
        self.env.cleanup()


def expect(*present):
    """What the regions read when exactly these were written."""
    return tuple(pat if (pat, off) in present else 0 for pat, off in REGIONS)


def answer(text):
    """An HMP answer as compared: "" or its first line."""
    return text.split("\r\n")[0] if text else text


# --------------------------------------------------------------------------
# 1, 2: the HMP session


SESSION = [
    # (step, HMP line or region to write, what the guest reads after)
    ("savevm a", "savevm a", expect(P0)),
    ("write P1", P1, expect(P0, P1)),
    ("savevm b", "savevm b", expect(P0, P1)),
    ("write P2", P2, expect(P0, P1, P2)),
    ("loadvm a", "loadvm a", expect(P0)),
    ("info snapshots (a, b)", "info snapshots", expect(P0)),
    ("delvm b", "delvm b", expect(P0)),
    ("loadvm b (deleted)", "loadvm b", expect(P0)),
    ("info snapshots (a)", "info snapshots", expect(P0)),
    # QEMU stops the VM when a load fails (a known difference): run on
    ("cont", None, expect(P0)),
    # savevm over a name replaces that snapshot, as QEMU's does
    ("write P3", P3, expect(P0, P3)),
    ("savevm a (again)", "savevm a", expect(P0, P3)),
    ("write P1 again", P1, expect(P0, P1, P3)),
    ("loadvm a (the new one)", "loadvm a", expect(P0, P3)),
    ("info snapshots (new a)", "info snapshots", expect(P0, P3)),
]


def hmp_session(run):
    """Runs SESSION; returns a record per step."""
    run.write(P0)
    out = []
    for step, what, _ in SESSION:
        rec = {"step": step}
        if what is None:
            run.ret(step)
        elif isinstance(what, str):
            rec["text"] = run.hmp(what)
            rec["answer"] = answer(rec["text"])
        else:
            run.write(what)
        rec["data"] = run.sees()
        rec["status"] = run.status()
        out.append(rec)
    return out


def table(text):
    """info snapshots: (first line, header line, rows)."""
    lines = text.split("\r\n")
    ok(text.endswith("\r\n") and lines[-1] == "", "info snapshots ends "
       "with CRLF", repr(text))
    lines = lines[:-1]
    return (lines[0] if lines else None, lines[1] if len(lines) > 1 else None,
            lines[2:])


def row_shape(row):
    """Where a row's fields start and end: QEMU's columns."""
    m = ROW.match(row)
    if m is None:
        return None
    return {"tag": m.start(2), "size-end": m.end(3), "date-end": m.end(4),
            "clock-end": m.end(5)}


def compare_tables(label, qemu_text, proxy_text, tags):
    q0, qh, qrows = table(qemu_text)
    p0, ph, prows = table(proxy_text)
    eq(q0, HEADER0, "%s: QEMU's first line" % label)
    eq(p0, q0, "%s: the proxy's first line is QEMU's" % label)
    ok(qh is not None and qh.split() == ["ID", "TAG", "VM", "SIZE", "DATE",
                                        "VM", "CLOCK", "ICOUNT"] or
       qh is not None and qh.split() == ["ID", "TAG", "VM_SIZE", "DATE",
                                        "VM_CLOCK", "ICOUNT"],
       "%s: QEMU's column header" % label, repr(qh))
    eq(ph, qh, "%s: the proxy's column header is QEMU's, byte for byte"
       % label)
    qtags = [ROW.match(r).group(2) if ROW.match(r) else r for r in qrows]
    ptags = [ROW.match(r).group(2) if ROW.match(r) else r for r in prows]
    eq(qtags, tags, "%s: QEMU lists %s" % (label, tags))
    eq(ptags, qtags, "%s: the proxy lists the same tags in the same order"
       % label)
    ok(all(ROW.match(r) for r in prows), "%s: the proxy's rows have QEMU's "
       "row format" % label, *[repr(r) for r in prows])
    ok([row_shape(r) for r in prows] == [row_shape(r) for r in qrows],
       "%s: in QEMU's columns" % label, "QEMU:  %r" % qrows,
       "proxy: %r" % prows)


def check_session(label, recs):
    """Each step of one run as expected."""
    for rec, (step, what, data) in zip(recs, SESSION):
        eq(rec["data"], data, "%s: %s: the guest reads %s" % (
            label, step, ", ".join("%s" % (("0x%02x" % p) if p else "zero")
                                   for p in data)))


def compare_sessions(label, direct, proxied):
    """Step by step, the proxy's run against QEMU's."""
    for q, p in zip(direct, proxied):
        step = q["step"]
        eq(p["data"], q["data"], "%s: %s: the guest reads what it reads "
           "under QEMU" % (label, step))
        if "answer" in q and not q["step"].startswith("info"):
            eq(p["answer"], q["answer"], "%s: %s: HMP answers %r as QEMU "
               "does" % (label, step, q["answer"]))
        if q["step"].startswith("loadvm") and "deleted" not in q["step"]:
            eq((p["status"], q["status"]), ("running", "running"),
               "%s: %s: the VM runs on, as under QEMU" % (label, step))
    infos = [(q, p) for q, p in zip(direct, proxied)
             if q["step"].startswith("info")]
    for (q, p), tags in zip(infos, (["a", "b"], ["a"], ["a"])):
        compare_tables("%s: %s" % (label, q["step"]), q["text"], p["text"],
                       tags)
    fail_q = [q for q in direct if q["step"] == "loadvm b (deleted)"][0]
    fail_p = [p for p in proxied if p["step"] == "loadvm b (deleted)"][0]
    eq(fail_q["answer"], "Error: Snapshot 'b' does not exist in one or more "
       "devices", "%s: QEMU's loadvm of a deleted tag" % label)
    eq(fail_p["status"], "running", "%s: a failed loadvm leaves the VM "
       "running on its branch (QEMU: %s)" % (label, fail_q["status"]))


def qcow2_sessions():
    direct = Run("direct", False, [Disk("vda")])
    d = hmp_session(direct)
    direct.finish()
    proxied = Run("proxied", True, [Disk("vda")])
    p = hmp_session(proxied)
    check_session("qcow2, QEMU alone", d)
    check_session("qcow2, through qbranchd", p)
    compare_sessions("qcow2", d, p)
    proxied.finish()
    return d


def uefi_disks(env):
    vars_path = env.path("vars.fd")
    shutil.copyfile(OVMF_VARS, vars_path)
    return ["-m", "128",
            "-blockdev", "driver=file,filename=%s,node-name=code-file,"
            "read-only=on" % OVMF_CODE,
            "-blockdev", "driver=raw,file=code-file,node-name=code,"
            "read-only=on",
            "-blockdev", "driver=file,filename=%s,node-name=vars-file"
            % vars_path,
            "-blockdev", "driver=raw,file=vars-file,node-name=vars",
            "-machine", "pflash0=code,pflash1=vars"]


def uefi_run(label, proxied):
    """A VM with a raw data disk and UEFI variables (OVMF's pflash pair,
    CODE read-only, a copy of VARS writable)."""
    env = qbtest.Env()
    run = Run.__new__(Run)
    run.label = label
    run.env = env
    run.failed_before = qbtest._tap.failed
    run.dev = "vdb"
    run.qemu = env.start_qemu(disks=[Disk("vdb", fmt="raw")],
                              extra=uefi_disks(env))
    run.proxy = None
    if proxied:
        sock = env.path("xlate.sock")
        run.proxy = env.start_proxy(
            listen=(), wait=False,
            args=["--listen", sock + ",rules=transparent",
                  "--state-dir", env.path("state")])
        run.proxy.listen = [sock]
        run.proxy.wait_ready()
        run.c = run.client()
    else:
        run.c = run.qemu.direct_client(timeout=CMD_TIMEOUT)
    run.ret("cont")
    return run


def uefi_sessions():
    for f in (OVMF_CODE, OVMF_VARS):
        if not os.path.exists(f):
            qbtest.skip("raw disk and UEFI variables", "no %s (Debian's "
                        "ovmf package)" % f)
            return
    direct = uefi_run("uefi direct", False)
    direct.write(P0)
    text = direct.hmp("savevm a")
    ok(re.match(r"^Error: Device '[^']+' is writable but does not support "
                r"snapshots\r\n$", text), "raw + UEFI, QEMU alone: savevm "
       "a fails: %s" % text.strip(), repr(text))
    text = direct.hmp("info snapshots")
    ok(HEADER0 not in text, "raw + UEFI, QEMU alone: and no snapshot to "
       "list (%s)" % text.strip(), repr(text))
    direct.finish()
    proxied = uefi_run("uefi proxied", True)
    recs = hmp_session(proxied)
    check_session("raw + UEFI, through qbranchd", recs)
    eq([r.get("answer") for r in recs if "answer" in r and
        not r["step"].startswith(("info", "loadvm b"))], [""] * 6,
       "raw + UEFI, through qbranchd: every savevm, loadvm and delvm "
       "answers \"\"")
    eq([r["status"] for r in recs if r["step"].startswith("loadvm")],
       ["running"] * 3, "raw + UEFI, through qbranchd: the VM runs on")
    infos = [r["text"] for r in recs if r["step"].startswith("info")]
    for text, tags in zip(infos, (["a", "b"], ["a"], ["a"])):
        first, head, rows = table(text)
        ok(first == HEADER0 and head is not None and
           [ROW.match(r).group(2) if ROW.match(r) else r for r in rows] ==
           tags, "raw + UEFI, through qbranchd: info snapshots lists %s"
           % tags, repr(text))
    blocks = {b.get("qdev"): b for b in proxied.ret("query-block")}
    ok(any("flash1" in (q or "") for q in blocks),
       "raw + UEFI: the variable store is one of the VM's disks",
       repr(sorted(blocks)))
    proxied.finish()


# --------------------------------------------------------------------------
# 3: the jobs


def job_run(run, name, job_id, tag, devices=True, vmstate=True):
    """Runs one job to its end; returns what a client sees of it."""
    node = run.node()
    args = {"job-id": job_id, "tag": tag}
    if vmstate and name != "snapshot-delete":
        args["vmstate"] = node
    if devices:
        args["devices"] = [node]
    r = run.c.cmd(name, args)
    rec = {"reply": r.get("return", r.get("error"))}
    if "return" not in r:
        return rec
    rec["statuses"] = job_statuses(run.c, job_id)
    rec["listed"] = job_listed(run, job_id)
    return rec


def job_statuses(c, job_id, until="concluded"):
    seq = []
    while not seq or seq[-1] != until:
        e = c.recv_event("JOB_STATUS_CHANGE")
        if e.get("data", {}).get("id") == job_id:
            seq.append(e["data"]["status"])
    return seq


def job_listed(run, job_id, c=None):
    """The job's query-jobs entry (None if not listed)."""
    for j in run.ret("query-jobs", c=c):
        if j.get("id") == job_id:
            return j
    return None


def dismiss(run, job_id):
    """job-dismiss: its reply, the event, whether it is still listed, and
    a second dismiss's reply."""
    r = run.c.cmd("job-dismiss", {"id": job_id})
    rec = {"reply": r.get("return", r.get("error"))}
    if "return" in r:
        rec["event"] = job_statuses(run.c, job_id, until="null")
    rec["listed after"] = job_listed(run, job_id)
    r = run.c.cmd("job-dismiss", {"id": job_id})
    rec["again"] = r.get("return", r.get("error"))
    return rec


def job_session(run):
    """The jobs' session; returns a record per step."""
    out = []

    def note(step, rec, data=True):
        rec = dict(rec)
        rec["step"] = step
        if data:
            rec["data"] = run.sees()
        rec["status"] = run.status()
        out.append(rec)

    run.write(P0)
    note("save s1", job_run(run, "snapshot-save", "j-save", "s1"))
    note("dismiss j-save", dismiss(run, "j-save"), data=False)
    run.write(P1)
    note("save s1 again", job_run(run, "snapshot-save", "j-again", "s1"))
    note("reuse j-again", job_run(run, "snapshot-save", "j-again", "s2"),
         data=False)
    note("dismiss j-again", dismiss(run, "j-again"), data=False)
    for name in ("snapshot-save", "snapshot-load", "snapshot-delete"):
        note("%s without devices" % name,
             job_run(run, name, "j-args", "s1", devices=False), data=False)
    r = run.c.cmd("snapshot-save", {"job-id": "j-type", "tag": "s3",
                                    "vmstate": run.node(), "devices": [1]})
    note("devices [1]", {"reply": r.get("return", r.get("error"))},
         data=False)
    note("load s1", job_run(run, "snapshot-load", "j-load", "s1"))
    note("dismiss j-load", dismiss(run, "j-load"), data=False)
    note("delete s1", job_run(run, "snapshot-delete", "j-del", "s1"))
    note("dismiss j-del", dismiss(run, "j-del"), data=False)
    note("delete missing", job_run(run, "snapshot-delete", "j-del2", "nope"))
    note("dismiss j-del2", dismiss(run, "j-del2"), data=False)
    note("load deleted s1", job_run(run, "snapshot-load", "j-load2", "s1"))
    note("dismiss j-load2", dismiss(run, "j-load2"), data=False)
    return out


JOB_EXPECT = {
    # step: (statuses, error in query-jobs or None, data)
    "save s1": (DONE, None, expect(P0)),
    "save s1 again": (FAILED, "Snapshot 's1' already exists in one or more "
                      "devices", expect(P0, P1)),
    "load s1": (DONE, None, expect(P0)),
    "delete s1": (DONE, None, expect(P0)),
    "load deleted s1": (FAILED, "Snapshot 's1' does not exist in one or "
                        "more devices", expect(P0)),
}


def check_jobs(label, recs):
    for rec in recs:
        step = rec["step"]
        if step in JOB_EXPECT:
            seq, err, data = JOB_EXPECT[step]
            eq(rec.get("statuses"), seq, "%s: %s: JOB_STATUS_CHANGE %s"
               % (label, step, " ".join(seq)))
            listed = rec.get("listed") or {}
            eq((listed.get("status"), listed.get("error")), ("concluded",
                                                             err),
               "%s: %s: query-jobs lists it concluded, %s" % (
                   label, step, "error %r" % err if err else "no error"))
            eq(rec.get("data"), data, "%s: %s: the guest reads as expected"
               % (label, step))
        elif step.startswith("dismiss"):
            ok(rec["reply"] == {} and rec.get("event") == ["null"] and
               rec["listed after"] is None and
               rec["again"] == {"class": "GenericError",
                                "desc": "Job not found"},
               "%s: %s: {}, event null, gone from query-jobs, a second "
               "dismiss: Job not found" % (label, step), repr(rec))
    by = {r["step"]: r for r in recs}
    eq(by["reuse j-again"]["reply"], {"class": "GenericError", "desc":
                                      "Job ID 'j-again' already in use"},
       "%s: a job id in use is refused" % label)
    for name in ("snapshot-save", "snapshot-load", "snapshot-delete"):
        eq(by["%s without devices" % name]["reply"],
           {"class": "GenericError", "desc": "Parameter 'devices' is "
            "missing"}, "%s: %s without devices is refused" % (label, name))


def compare_jobs(direct, proxied):
    for q, p in zip(direct, proxied):
        step = q["step"]
        for key in ("reply", "statuses", "listed", "event", "listed after",
                    "again", "data"):
            if key not in q and key not in p:
                continue
            eq(p.get(key), q.get(key), "jobs: %s: %s as under QEMU"
               % (step, key))
        if step in ("save s1", "load s1", "delete s1"):
            eq((p["status"], q["status"]), ("running", "running"),
               "jobs: %s: the VM runs on, as under QEMU" % step)
    last = [(q, p) for q, p in zip(direct, proxied)
            if q["step"] == "load deleted s1"][0]
    eq(last[1]["status"], "running", "jobs: a failed snapshot-load leaves "
       "the VM running on its branch (QEMU: %s)" % last[0]["status"])


def uefi_jobs():
    """The jobs on the raw + UEFI VM: QEMU's own fail, the tree's work."""
    if not all(os.path.exists(f) for f in (OVMF_CODE, OVMF_VARS)):
        qbtest.skip("jobs on raw disk and UEFI variables", "no ovmf")
        return
    direct = uefi_run("uefi jobs direct", False)
    rec = job_run(direct, "snapshot-save", "j-raw", "a")
    err = (rec.get("listed") or {}).get("error") or ""
    ok(rec.get("statuses") == FAILED and
       "does not support snapshots" in err,
       "raw + UEFI, QEMU alone: the snapshot-save job fails: %s" % err,
       repr(rec))
    direct.finish()
    proxied = uefi_run("uefi jobs proxied", True)
    check_jobs("raw + UEFI jobs, through qbranchd", job_session(proxied))
    proxied.finish()


def job_sessions():
    direct = Run("jobs direct", False, [Disk("vda")])
    d = job_session(direct)
    direct.finish()
    proxied = Run("jobs proxied", True, [Disk("vda")])
    p = job_session(proxied)
    check_jobs("jobs, QEMU alone", d)
    check_jobs("jobs, through qbranchd", p)
    compare_jobs(d, p)
    return proxied


# --------------------------------------------------------------------------
# 4: a job and its client


def job_and_client(run):
    """The client that started a job goes on while the operation runs;
    a job survives its client."""
    c = run.client()
    node = run.node()
    c.send_json(qbtest.QMP.command("snapshot-save", {
        "job-id": "j-busy", "tag": "busy", "vmstate": node,
        "devices": [node]}, id="save"))
    c.send_json(qbtest.QMP.command("query-status", id="status"))
    order = []
    while len(order) < 3:
        m = c.recv()
        if m.is_event:
            d = m.get("data", {})
            if m.get("event") == "JOB_STATUS_CHANGE" and \
                    d.get("id") == "j-busy" and d.get("status") == "concluded":
                order.append("concluded")
        elif m.get("id") in ("save", "status"):
            order.append(m.get("id"))
            if m.get("id") == "status":
                ok(m.get("return", {}).get("status") in ("running", "paused"),
                   "a job's client: query-status is answered meanwhile",
                   repr(m.raw))
    eq(order[0], "save", "a job's client: snapshot-save answers first")
    diag("a job's client: %s" % " before ".join(order))
    ok(order.index("status") < order.index("concluded"),
       "a job's client: query-status answered before the job concluded",
       repr(order))
    eq(job_listed(run, "j-busy", c=c).get("status"), "concluded",
       "a job's client: query-jobs lists it concluded")
    eq(c.cmd("job-dismiss", {"id": "j-busy"}).get("return"), {},
       "a job's client: dismissed")
    c.close()

    # A client that goes away right after {}: the job goes on.
    other = run.client()
    gone = run.client()
    node = run.node()
    r = gone.cmd("snapshot-save", {"job-id": "j-gone", "tag": "gone",
                                   "vmstate": node, "devices": [node]})
    eq(r.get("return"), {}, "a job whose client leaves: {}")
    gone.close()
    seq = job_statuses(other, "j-gone")
    eq(seq, DONE, "a job whose client leaves: another client sees it "
       "through to concluded")
    eq((job_listed(run, "j-gone", c=other) or {}).get("status"), "concluded",
       "a job whose client leaves: query-jobs on another client lists it "
       "concluded")
    eq(other.cmd("job-dismiss", {"id": "j-gone"}).get("return"), {},
       "a job whose client leaves: another client dismisses it")
    eq(job_listed(run, "j-gone", c=other), None, "and it is gone")
    tags = [ROW.match(r).group(2) for r in
            table(run.hmp("info snapshots"))[2] if ROW.match(r)]
    ok("gone" in tags and "busy" in tags, "both jobs' snapshots are in the "
       "tree", repr(tags))
    other.close()


def main(env):
    qcow2_sessions()
    uefi_sessions()
    uefi_jobs()
    run = job_sessions()
    try:
        job_and_client(run)
    except BaseException:
        run.failed_before = -1      # the failure is counted later
        raise
    finally:
        run.finish()


qbtest.run(main, timeout=120)

#!/usr/bin/env python3
# Launch mode: qbranchd [options] -- qemu-system-x86_64 ARGS. qbranchd adds
# -S and a private monitor, checks the disks against the tree, resumes the
# guest (unless the rig passed -S), supervises QEMU, passes SIGTERM on,
# exits with QEMU's status (128+N when a signal killed it) and removes its
# private directory. A QEMU that cannot start makes it exit non-zero with
# a message. A disk left on a frozen image is moved back before the guest
# runs.

import os
import signal
import stat
import time

import qbtest
from qbtest import ok, eq, Disk, MiB, SnapVM, CMD_TIMEOUT

A, B, C = 0xa1, 0xb2, 0xc3
EXIT_TIMEOUT = 15


def private_dirs(p):
    """The qbranchd.* directories under the proxy's TMPDIR."""
    return sorted(f for f in os.listdir(p.tmpdir) if f.startswith("qbranchd."))


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [x.decode() for x in f.read().split(b"\0")[:-1]]
    except OSError:
        return []


def gone(pid, timeout=EXIT_TIMEOUT):
    """True once pid is no process, or a zombie nobody reaps yet."""
    def dead():
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True
    return qbtest.wait_for(dead, timeout=timeout, step=0.05)


def status(c):
    return c.cmd("query-status", timeout=CMD_TIMEOUT).get("return", {})


def check_running_vm(env):
    """No -S from the rig: running once greeted; snapshot, write, revert;
    quit: exit 0, private directory gone."""
    vm = SnapVM(env, disks=[Disk("vda", image="vm.qcow2")], launch=True,
                cont=False)
    p = vm.proxy
    st = vm.status()
    eq((st.get("status"), st.get("running")), ("running", True),
       "no -S from the rig: the guest runs by the time a client is "
       "greeted")

    kids = p.children()
    eq(len(kids), 1, "qbranchd has one child, QEMU")
    argv = cmdline(kids[0]) if kids else []
    tail = argv[-5:]
    ok(len(tail) == 5 and tail[0] == "-S" and tail[1] == "-chardev" and
       tail[2].startswith("socket,id=qbranch-qmp,fd=") and
       tail[2].endswith(",server=on,wait=off") and
       tail[3:] == ["-mon", "chardev=qbranch-qmp,mode=control"],
       "QEMU's command line ends in -S -chardev socket,id=qbranch-qmp,"
       "fd=N,server=on,wait=off -mon chardev=qbranch-qmp,mode=control",
       "argv: %r" % argv)
    dirs = private_dirs(p)
    eq(len(dirs), 1, "one private directory under TMPDIR")
    if dirs:
        d = os.path.join(p.tmpdir, dirs[0])
        st_d = os.stat(d)
        eq(stat.S_IMODE(st_d.st_mode), 0o700, "it has mode 0700")
        sock = os.path.join(d, "qmp.sock")
        ok(os.path.exists(sock) and stat.S_ISSOCK(os.stat(sock).st_mode),
           "it holds the monitor socket qmp.sock", repr(os.listdir(d)))

    names = {x.get("name") for x in vm.ret("query-commands")}
    ok("qbranch-snapshot-create" in names, "the proxy's commands are there")
    vm.write(A, 0)
    vm.create("s1")
    vm.write(B, 0)
    vm.write(C, MiB)
    vm.check_data("B at 0 and C at 1M on top of s1")
    br = vm.revert("s1")
    eq(br.get("name"), "s1-1", "revert s1 -> branch s1-1")
    vm.check_data("after the revert: A at 0, zeroes at 1M")
    eq(vm.running(), True, "running before the revert -> running after")
    vm.check_tree("tree as expected")

    vm.c.send_json({"execute": "quit", "id": "bye"})
    try:
        msgs = vm.c.recv_until_eof(timeout=EXIT_TIMEOUT)
    except qbtest.QBTestError as e:
        msgs = []
        qbtest.diag(str(e))
    ok(any(m.get("id") == "bye" and m.get("return") == {} for m in msgs),
       "quit is answered before the connection closes",
       *[repr(m.raw) for m in msgs])
    ok(any(m.get("event") == "SHUTDOWN" for m in msgs),
       "and the SHUTDOWN event reaches the client")
    eq(p.wait(EXIT_TIMEOUT), 0, "QEMU quit: qbranchd exits with QEMU's "
       "status, 0")
    eq(private_dirs(p), [], "the private socket and directory are gone")
    ok(not os.path.exists(p.listen[0]), "the listening socket is removed")
    ok(kids and gone(kids[0]), "no QEMU left behind")
    ok("QEMU exited with status 0" in p.log_text(), "the log says so")


def check_paused_vm(env):
    """-S from the rig: stays in prelaunch; the client resumes it."""
    p = env.start_launch(paused=True, name="paused")
    c = p.client(negotiate=True)
    st = status(c)
    eq(st.get("status"), "prelaunch", "-S from the rig: the guest stays "
       "in prelaunch")
    time.sleep(0.5)
    eq(status(c).get("status"), "prelaunch", "and still does a moment "
       "later")
    argv = cmdline(p.children()[0]) if p.children() else []
    ok(argv.count("-S") == 1, "qbranchd does not add a second -S",
       repr(argv))
    eq(c.cmd("cont").get("return"), {}, "cont from a client")
    eq(status(c).get("status"), "running", "the guest runs")

    # SIGTERM: passed on to QEMU, which exits 0 (its own rule), and so
    # does qbranchd.
    kids = p.children()
    p.send_signal(signal.SIGTERM)
    try:
        msgs = c.recv_until_eof(timeout=EXIT_TIMEOUT)
    except qbtest.QBTestError as e:
        msgs = []
        qbtest.diag(str(e))
    ok(any(m.get("event") == "SHUTDOWN" and
           (m.get("data") or {}).get("reason") == "host-signal"
           for m in msgs),
       "SIGTERM to qbranchd: QEMU got it (SHUTDOWN, host-signal)",
       *[repr(m.raw) for m in msgs])
    eq(p.wait(EXIT_TIMEOUT), 0, "SIGTERM: qbranchd exits with QEMU's "
       "status, 0")
    ok(kids and gone(kids[0]), "SIGTERM: QEMU is gone")
    eq(private_dirs(p), [], "SIGTERM: private directory removed")

    # QEMU killed by a signal: 128 + N.
    p = env.start_launch(paused=True, name="killed")
    c = p.client(negotiate=True)
    kids = p.children()
    ok(kids, "a second QEMU runs")
    if kids:
        os.kill(kids[0], signal.SIGKILL)
    eq(p.wait(EXIT_TIMEOUT), 128 + signal.SIGKILL, "QEMU killed by "
       "SIGKILL: qbranchd exits 128+9")
    ok("killed by signal 9" in p.log_text(), "and says so",
       p.log_text()[-500:])
    eq(private_dirs(p), [], "private directory removed")

    # qbranchd killed: QEMU does not outlive it (PR_SET_PDEATHSIG).
    p = env.start_launch(paused=True, name="orphan")
    p.client(negotiate=True)
    kids = p.children()
    p.kill(signal.SIGKILL)
    p.wait(EXIT_TIMEOUT)
    ok(kids and gone(kids[0]), "qbranchd killed with SIGKILL: its QEMU "
       "goes too")


def check_start_failures(env):
    """QEMU that cannot start: non-zero exit with QEMU's words and ours."""
    p = env.start_launch(qemu_args=["-no-such-option"], wait=False,
                         name="badopt")
    st = p.wait(EXIT_TIMEOUT)
    log = p.log_text()
    ok(st is not None and st != 0, "a bad QEMU option: non-zero exit",
       "status %r" % st)
    eq(st, 1, "QEMU's status, 1")
    ok("no-such-option" in log, "QEMU's own error is visible", log)
    ok("before its monitor was ready" in log, "with qbranchd's message", log)
    eq(private_dirs(p), [], "no private directory left")

    p = env.start_launch(qemu=env.path("no-such-qemu"), wait=False,
                         name="noexec")
    st = p.wait(EXIT_TIMEOUT)
    log = p.log_text()
    eq(st, 127, "a QEMU binary that does not exist: exit 127")
    ok("cannot run QEMU" in log and "No such file" in log,
       "with a clear message", log)
    eq(private_dirs(p), [], "no private directory left")
    ok(not os.path.exists(p.listen[0]), "nor a listening socket")

    p = env.start_launch(qemu_args=["-daemonize"], wait=False,
                         name="daemonize")
    st = p.wait(EXIT_TIMEOUT)
    ok(st not in (None, 0) and "-daemonize" in p.log_text(),
       "-daemonize is refused with a message", "status %r, log %r"
       % (st, p.log_text()))
    st, out = env.run_proxy(["--qemu", env.path("q.sock"), "--listen",
                             env.path("x.sock"), "--", qbtest.QEMU])
    ok(st not in (None, 0) and "one of --qemu" in out,
       "--qemu and a QEMU command line together are refused", out)
    st, out = env.run_proxy(["-n", "--listen", env.path("x.sock"), "--",
                             qbtest.QEMU, "-S"])
    eq(st, 0, "-n in launch mode: configuration OK")
    st, out = env.run_proxy(["-n", "--listen", env.path("x.sock"), "--",
                             env.path("no-such-qemu")])
    ok(st != 0 and "not found" in out, "-n: a QEMU that cannot be found "
       "is reported", out)


def check_frozen(env):
    """The tree's disk left on its frozen image (QEMU started again on
    its original command line): moved back onto the branch before the
    guest runs; with a tree that does not fit, the guest stays paused."""
    vm = SnapVM(env, disks=[Disk("vdf", image="f.qcow2")], launch=True,
                cont=False, state_dir="fstate")
    vm.write(A, 0)
    vm.create("s1")
    vm.write(B, MiB)
    want_top = vm.chain()[0]
    ok(want_top != vm.originals["vdf"], "the branch runs on an overlay")
    vm.c.cmd("quit")
    eq(vm.proxy.wait(EXIT_TIMEOUT), 0, "first run ends with quit")
    vm.c.close()

    # The same command line again: QEMU opens the original, frozen image.
    vm.proxy = env.start_launch(disks=vm.disk_specs, args=vm.proxy_args,
                                name="again")
    vm.c = vm.proxy.client(negotiate=True, timeout=CMD_TIMEOUT)
    eq(vm.chain()[0], want_top, "vdf is back on the branch's overlay "
       "when the first client is greeted")
    st = vm.status()
    eq(st.get("status"), "running", "and the guest was resumed after that")
    log = vm.proxy.log_text()
    i, j = log.find("disks back on branch"), log.find("guest is resumed")
    ok(0 <= i < j, "the disks moved before the guest was resumed",
       log[-1500:])
    vm.check_data("the branch's data, the write after s1 included")
    vm.check_originals("the frozen original was not written")
    vm.c.cmd("quit")
    eq(vm.proxy.wait(EXIT_TIMEOUT), 0, "second run ends with quit")
    vm.c.close()

    # A tree whose disk is not in this VM: it cannot be checked, so the
    # guest must not run.
    p = env.start_launch(disks=[Disk("vdz", image="z.qcow2")],
                         args=vm.proxy_args, name="mismatch")
    c = p.client(negotiate=True, timeout=CMD_TIMEOUT)
    eq(status(c).get("status"), "prelaunch", "a tree that does not fit "
       "the VM: the guest stays paused")
    ok("stays paused" in p.log_text(), "and the log says why",
       p.log_text()[-800:])
    r = c.cmd("qbranch-query-snapshots")
    ok(r.err_class == "GenericError", "snapshot commands are refused",
       repr(r.raw))
    c.cmd("quit")
    eq(p.wait(EXIT_TIMEOUT), 0, "third run ends with quit")


def main(env):
    check_running_vm(env)
    check_paused_vm(env)
    check_start_failures(env)
    check_frozen(env)


qbtest.run(main, timeout=120)

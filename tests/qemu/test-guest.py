#!/usr/bin/env python3
# The test guest (scripts/guest-build) boots and keeps its serial protocol:
# "ready", a counter that runs, a disk write that reaches the image, a read,
# filling RAM. The memory-snapshot tests rely on each of these.
#
# The guest comes from scripts/guest-build, in QBRANCH_GUEST_DIR if set; if
# it cannot be built (no Debian mirror), the file is skipped.

import os
import re
import socket
import subprocess
import time

import qbtest
from qbtest import ok, eq, diag, skip_all, Disk, QBTestError

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       os.pardir, os.pardir, "scripts")
BUILD_TIMEOUT = 300     # a cold build downloads about 70 MB
# A Linux guest is ready within 2 s under KVM; where KVM is nested
# virtualization in software, booting takes minutes, so after this long
# the guest is booted again under TCG (about 7 s there).
KVM_BOOT_TIMEOUT = 6
TCG_BOOT_TIMEOUT = 40
CMD_TIMEOUT = 15        # fill under TCG takes a second or two


def build():
    """The guest's directory, or None after skip_all()."""
    try:
        r = subprocess.run(["bash", os.path.join(SCRIPTS, "guest-build")],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        skip_all("scripts/guest-build took more than %d s" % BUILD_TIMEOUT)
        return None
    if r.returncode != 0:
        why = r.stderr.decode("utf-8", "replace").strip().splitlines()
        skip_all(why[-1] if why else
                 "scripts/guest-build: exit %d" % r.returncode)
        return None
    return r.stdout.decode().splitlines()[-1]


class Guest:
    """The guest in one QEMU: its console (ttyS0) goes to a file, its
    command port (ttyS1) is a unix socket."""

    def __init__(self, env, guest_dir, accel):
        name = "qemu-" + accel[0]
        self.console = env.path(name + "-console.log")
        self.cmd_sock = env.path(name + "-cmd.sock")
        self.qemu = env.start_qemu(
            sock=name + ".sock", direct=name + "-direct.sock", name=name,
            disks=[Disk("vda")], accel=accel, extra=[
                "-m", "256",
                "-kernel", os.path.join(guest_dir, "vmlinuz"),
                "-initrd", os.path.join(guest_dir, "initrd.cpio.gz"),
                "-append", "console=ttyS0 quiet",
                "-serial", "file:" + self.console,
                "-serial", "unix:%s,server=on,wait=off" % self.cmd_sock])
        self.qmp = self.qemu.direct_client()
        self.kvm = self.qmp.cmd("query-kvm")["return"]["enabled"]
        self.qmp.cmd("cont")
        self.started = time.monotonic()
        self.sock = None
        self.buf = b""

    def console_text(self):
        try:
            with open(self.console, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_ready(self, timeout):
        """Seconds from cont to "qbranch-guest ready", or None."""
        if qbtest.wait_for(lambda: "qbranch-guest ready" in
                           self.console_text() or not self.qemu.alive(),
                           timeout=timeout, step=0.05) and \
                self.qemu.alive():
            return time.monotonic() - self.started
        return None

    def counter(self):
        """The last counter value on the console, or None."""
        n = re.findall(r"qbranch-counter (\d+)", self.console_text())
        return int(n[-1]) if n else None

    def cmd(self, line):
        """Send one command; return its answer line."""
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(self.cmd_sock)
        self.sock.sendall(line.encode() + b"\n")
        self.sock.settimeout(CMD_TIMEOUT)
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise QBTestError("ttyS1 closed, waiting for %r" % line)
            self.buf += data
        answer, self.buf = self.buf.split(b"\n", 1)
        return answer.decode("utf-8", "replace")

    def quit(self):
        if self.sock:
            self.sock.close()
        self.qmp.cmd("quit")
        return self.qemu.wait(CMD_TIMEOUT)


def main(env):
    guest_dir = build()
    if guest_dir is None:
        return

    g = Guest(env, guest_dir, ("kvm", "tcg"))
    boot = g.wait_ready(KVM_BOOT_TIMEOUT if g.kvm else TCG_BOOT_TIMEOUT)
    if boot is None and g.kvm and g.qemu.alive():
        diag("no 'qbranch-guest ready' within %d s under KVM (nested "
             "virtualization in software?); booting under TCG"
             % KVM_BOOT_TIMEOUT)
        g.quit()
        g = Guest(env, guest_dir, ("tcg",))
        boot = g.wait_ready(TCG_BOOT_TIMEOUT)
    if not ok(boot is not None, "the guest boots to 'qbranch-guest ready'",
              g.console_text()[-2000:]):
        return
    diag("ready %.1f s after cont (%s)" % (boot, "KVM" if g.kvm else "TCG"))

    first = g.counter()
    ok(qbtest.wait_for(lambda: (g.counter() or 0) >= (first or 0) + 3,
                       timeout=5),
       "the counter increases on ttyS0",
       "first %r, now %r" % (first, g.counter()))

    eq(g.cmd("write 1 0xaa"), "qbranch-wrote 1 0xaa", "write 1 0xaa")
    eq(g.cmd("read 1"), "qbranch-read 1 0xaa", "read 1 gives 0xaa")
    eq(g.cmd("read 2"), "qbranch-read 2 0x00", "read 2 (never written) "
       "gives 0x00")
    answer = g.cmd("frobnicate 1")
    ok(answer.startswith("qbranch-error "), "an unknown command answers "
       "qbranch-error", answer)
    eq(g.cmd("fill 32"), "qbranch-filled 32", "fill 32")
    now = g.counter()
    ok(qbtest.wait_for(lambda: (g.counter() or 0) > (now or 0), timeout=5),
       "the counter still runs after the commands")

    eq(g.quit(), 0, "QEMU quits")
    r = subprocess.run([qbtest.QEMU_IO, "-f", "qcow2",
                        "-c", "read -P 0xaa 1M 64k",
                        "-c", "read -P 0 1088k 64k",
                        env.disk("vda").path],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=CMD_TIMEOUT)
    ok(r.returncode == 0, "the image holds 64 KiB of 0xaa at 1M and zeroes after it",
       r.stdout.decode("utf-8", "replace"))


qbtest.run(main, timeout=120)

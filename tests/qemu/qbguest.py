"""The test guest (scripts/guest-build) in a QEMU of an integration test.

    import qbguest
    guest_dir = qbguest.build()          # None: skip_all() was called
    g = qbguest.Guest(env, guest_dir, disks=[Disk("vda")], ram_file=True)
    g.boot()                             # QMP "cont", up to "ready"
    g.command("mount")                   # -> "qbranch-mounted vda new"
    n = g.last_counter()

The guest prints on ttyS0, which goes to a file: "qbranch-boot ID" once
per boot, "qbranch-guest ready", then "qbranch-counter N" every 100 ms,
N held only in its RAM. ttyS1, a unix socket here, takes one command a
line and answers each with one "qbranch-..." line (scripts/guest-init
lists them).

Where KVM is nested virtualization done in software, this kernel takes
minutes to boot: a guest that is not ready KVM_BOOT_TIMEOUT seconds after
"cont" is started again under TCG, and so is every later guest of the
same test file. QBRANCH_GUEST_ACCEL=tcg skips the try.
"""

import os
import re
import shutil
import socket
import subprocess
import time

import qbtest
from qbtest import diag, skip_all, QBTestError

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       os.pardir, os.pardir, "scripts")
BUILD_TIMEOUT = 300     # a cold build downloads about 70 MB
KVM_BOOT_TIMEOUT = 6    # ready in about 2 s under a real KVM
TCG_BOOT_TIMEOUT = 40   # about 7 s here (11 s under OVMF)
UEFI_EXTRA_TIMEOUT = 30
COMMAND_TIMEOUT = 20    # fill and mke2fs under TCG take a second or two

# Debian 12's ovmf package: the 4 MiB pair (the 2 MiB one is the old
# layout; a CODE and a VARS of different sizes do not work together).
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
# The qdev paths of the board's flash devices (-machine pflashN=): the
# second holds the UEFI variables.
PFLASH_CODE_QDEV = "/machine/system.flash0"
PFLASH_VARS_QDEV = "/machine/system.flash1"

# None: not tried yet; False: KVM did not boot a guest in time, so this
# file's later guests go straight to TCG.
_kvm_boots = None
if os.environ.get("QBRANCH_GUEST_ACCEL") == "tcg":
    _kvm_boots = False

_COUNTER = re.compile(r"qbranch-counter (\d+)\r?$")
_BOOT = re.compile(r"qbranch-boot ([0-9a-f]+)\r?$")
_READY = re.compile(r"qbranch-guest ready\r?$")


def build():
    """The guest's directory (scripts/guest-build run first), or None
    after skip_all() when it cannot be built (no Debian mirror)."""
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


def uefi_missing():
    """Why a UEFI guest cannot run here, or None."""
    for f in (OVMF_CODE, OVMF_VARS):
        if not os.path.exists(f):
            return "no %s (Debian's ovmf package; scripts/deps)" % f
    return None


class Guest:
    """The guest in one QEMU, started by env.start_qemu() (QMP sockets
    `sock` for a proxy and `direct` for the test; self.qmp is a client
    of the direct one).

    ram_mib   guest RAM
    ram_file  RAM as a shared file in the test directory (NAME.ram,
              self.ram_path): the memory backend ram0
    uefi      OVMF as a pflash pair: CODE read-only, a copy of VARS
              (NAME-vars.fd, self.vars_path) writable, on -blockdev nodes
              NAME-code/-vars (formats) over NAME-code-file/-vars-file
    disks     Disk objects (or ids) as env.start_qemu() takes them; the
              guest sees them as vda, vdb... in this order
    accel     ("kvm", "tcg"), tried as described above, or ("tcg",)
    extra     more QEMU arguments
    """

    def __init__(self, env, guest_dir, name="guest", ram_mib=256,
                 ram_file=False, uefi=False, disks=("vda",),
                 accel=("kvm", "tcg"), extra=(), sock="qemu.sock",
                 direct="direct.sock"):
        self.env = env
        self.guest_dir = guest_dir
        self.name = name
        self.ram_mib = ram_mib
        self.ram_path = env.path(name + ".ram") if ram_file else None
        self.uefi = uefi
        self.vars_path = env.path(name + "-vars.fd") if uefi else None
        self.disks = list(disks)
        self.accel = tuple(accel)
        self.extra = list(extra)
        self.sock_name = sock
        self.direct_name = direct
        self.console = env.path(name + "-console.log")
        self.cmd_sock = env.path(name + "-cmd.sock")
        self.qemu = None
        self.qmp = None
        self.kvm = None
        self.boot_seconds = None
        self._sock = None
        self._buf = b""

    # -- starting ------------------------------------------------------
    def args(self):
        """QEMU arguments for the guest itself (not its disks)."""
        a = ["-m", "%d" % self.ram_mib]
        if self.ram_path:
            a += ["-object", "memory-backend-file,id=ram0,size=%dM,"
                  "mem-path=%s,share=on" % (self.ram_mib, self.ram_path),
                  "-machine", "memory-backend=ram0"]
        if self.uefi:
            n = self.name
            a += ["-blockdev", "driver=file,filename=%s,node-name=%s-code-file,"
                  "read-only=on" % (OVMF_CODE, n),
                  "-blockdev", "driver=raw,file=%s-code-file,node-name=%s-code,"
                  "read-only=on" % (n, n),
                  "-blockdev", "driver=file,filename=%s,node-name=%s-vars-file"
                  % (self.vars_path, n),
                  "-blockdev", "driver=raw,file=%s-vars-file,node-name=%s-vars"
                  % (n, n),
                  "-machine", "pflash0=%s-code,pflash1=%s-vars" % (n, n)]
        a += ["-kernel", os.path.join(self.guest_dir, "vmlinuz"),
              "-initrd", os.path.join(self.guest_dir, "initrd.cpio.gz"),
              "-append", "console=ttyS0 quiet",
              "-serial", "file:" + self.console,
              "-serial", "unix:%s,server=on,wait=off" % self.cmd_sock]
        return a + self.extra

    def start(self):
        """Start QEMU paused (-S); no boot yet."""
        for p in (self.console, self.cmd_sock, self.ram_path,
                  self.env.path(self.sock_name),
                  self.env.path(self.direct_name)):
            if p and os.path.lexists(p):
                os.unlink(p)
        if self.uefi and not os.path.exists(self.vars_path):
            shutil.copyfile(OVMF_VARS, self.vars_path)
        self.qemu = self.env.start_qemu(
            sock=self.sock_name, direct=self.direct_name, name=self.name,
            disks=self.disks, accel=self.accel, extra=self.args())
        self.qmp = self.qemu.direct_client(timeout=qbtest.CMD_TIMEOUT)
        self.kvm = self.qmp.cmd("query-kvm")["return"]["enabled"]
        return self.qemu

    def boot(self, timeout=None):
        """Start QEMU (unless started), "cont", wait for "ready"; under
        KVM, fall back to TCG as the module's header says. Raises
        QBTestError if the guest does not come up."""
        global _kvm_boots
        if _kvm_boots is False and "kvm" in self.accel:
            self.accel = tuple(a for a in self.accel if a != "kvm") or \
                ("tcg",)
            if self.qemu is not None:
                self.quit()
                self.qemu = None
        if self.qemu is None:
            self.start()
        tcg_limit = timeout or (TCG_BOOT_TIMEOUT +
                                (UEFI_EXTRA_TIMEOUT if self.uefi else 0))
        limit = tcg_limit
        if self.kvm and _kvm_boots is None:
            # OVMF takes about as long again as the kernel.
            limit = KVM_BOOT_TIMEOUT * (2 if self.uefi else 1)
        self._cont()
        if self.wait_ready(limit):
            if self.kvm:
                _kvm_boots = True
            return self.boot_seconds
        if self.kvm and _kvm_boots is None and self.qemu.alive():
            _kvm_boots = False
            diag("no 'qbranch-guest ready' within %d s under KVM (nested "
                 "virtualization in software?); this file's guests boot "
                 "under TCG" % limit)
            self.quit()
            self.accel = ("tcg",)
            self.start()
            self._cont()
            if self.wait_ready(tcg_limit):
                return self.boot_seconds
        raise QBTestError("the guest did not reach 'qbranch-guest ready' "
                          "(%s):\n%s" % ("KVM" if self.kvm else "TCG",
                                         self.console_text()[-2000:]))

    def _cont(self):
        r = self.qmp.cmd("cont")
        if "return" not in r:
            raise QBTestError("cont: %r" % r.raw)
        self._started = time.monotonic()

    def wait_ready(self, timeout=TCG_BOOT_TIMEOUT):
        """Wait for "qbranch-guest ready" (once "cont" has been sent);
        False on timeout or if QEMU exited."""
        if qbtest.wait_for(lambda: self.ready_count() > 0 or
                           not self.qemu.alive(), timeout=timeout,
                           step=0.05) and self.qemu.alive():
            self.boot_seconds = time.monotonic() - self._started
            return True
        return False

    def accel_name(self):
        return "KVM" if self.kvm else "TCG"

    # -- the console -----------------------------------------------------
    def console_text(self):
        try:
            with open(self.console, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def mark(self):
        """Where the console's complete lines end now: give it to the
        since= of the readers below to see only what comes later."""
        t = self.console_text()
        return t.rfind("\n") + 1

    def lines(self, since=0):
        """The console's complete lines (a line being written when QEMU
        stopped, or being written now, is left out)."""
        t = self.console_text()
        end = t.rfind("\n") + 1
        return t[since:end].splitlines()

    def counters(self, since=0):
        return [int(m.group(1)) for m in
                (_COUNTER.search(l) for l in self.lines(since)) if m]

    def last_counter(self, since=0):
        """The last counter the guest printed (a complete line), or None."""
        c = self.counters(since)
        return c[-1] if c else None

    def wait_counter_above(self, n, timeout=10, since=0):
        """Wait until the guest prints a counter above n; return the last
        counter then, or None on timeout."""
        v = qbtest.wait_for(lambda: (self.last_counter(since) or 0) > n,
                            timeout=timeout, step=0.05)
        return self.last_counter(since) if v else None

    def boot_ids(self, since=0):
        """The boot IDs the guest printed, one a boot: more than one, or
        a new one, means it rebooted."""
        return [m.group(1) for m in
                (_BOOT.search(l) for l in self.lines(since)) if m]

    def ready_count(self, since=0):
        return sum(1 for l in self.lines(since) if _READY.search(l))

    # -- ttyS1 -----------------------------------------------------------
    def command(self, line, timeout=COMMAND_TIMEOUT):
        """Send one command; return its answer line."""
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.cmd_sock)
            self._sock = s
        self._sock.sendall(line.encode() + b"\n")
        self._sock.settimeout(timeout)
        try:
            while b"\n" not in self._buf:
                data = self._sock.recv(4096)
                if not data:
                    raise QBTestError("ttyS1 closed, waiting for the answer "
                                      "to %r" % line)
                self._buf += data
        except socket.timeout:
            # A late answer must not pass for the next command's.
            self._sock.close()
            self._sock = None
            self._buf = b""
            raise QBTestError("no answer to %r on ttyS1 within %s s"
                              % (line, timeout))
        answer, self._buf = self._buf.split(b"\n", 1)
        return answer.decode("utf-8", "replace").strip("\r")

    # -- the end ---------------------------------------------------------
    def quit(self, timeout=COMMAND_TIMEOUT):
        """quit QEMU; its exit status (None if it did not exit)."""
        if self._sock:
            self._sock.close()
            self._sock = None
            self._buf = b""
        if self.qemu is None:
            return None
        try:
            self.qmp.cmd("quit")
        except QBTestError:
            pass
        self.qmp.close()
        st = self.qemu.wait(timeout)
        self.qemu.stop()
        return st

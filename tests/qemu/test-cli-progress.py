#!/usr/bin/env python3
# The progress bar of qbranch: a delete whose merge streams a few hundred
# MiB (long enough for several QBRANCH_PROGRESS events, 200 ms apart) runs
# with stderr on a pseudo-terminal of 80 columns. The bar must show during
# the merge, never go back, fit the terminal, reach 100% and then clear its
# line; stdout stays clean. With stderr on a pipe nothing is drawn.

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import time

import qbtest
from qbtest import ok, eq, Disk, MiB, SnapVM, qbranch, CMD_TIMEOUT

DATA = 384 * MiB        # about 1 s of block-stream on the test machine
SMALL = 64 * MiB        # where only the end of the bar matters
FRAME_RE = re.compile(r"^(\S+) \[([#.]+)\] +(\d+)%  +(\S+)/(\S+) *$")


def run_on_pty(argv, cols=80):
    """Run argv with stderr on a new pty (cols wide), stdout on a pipe.
    Returns (status, stdout bytes, pty bytes, seconds)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols,
                                                       0, 0))
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=slave,
                         env=dict(os.environ, LC_ALL="C"))
    os.close(slave)
    tty = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:         # EIO: every writer closed the pty
            break
        if not data:
            break
        tty += data
    out = p.stdout.read()
    p.stdout.close()
    rc = p.wait(CMD_TIMEOUT)
    os.close(master)
    return rc, out, tty, time.monotonic() - t0


def frames(tty):
    """The bar's frames: each redraw is \\r<text>\\e[K."""
    text = tty.decode("utf-8", "replace").replace("\r\n", "\n")
    return [f[:-3] for f in re.findall(r"\r[^\r]*?\x1b\[K", text)
            if f[1:-3]], text


def main(env):
    if not qbtest.QBRANCH:
        qbtest.skip_all("QBRANCH is not set")
        return
    vm = SnapVM(env, disks=[Disk("vda", image="vm.qcow2", size="1G")],
                cont=True)
    sock = env.path("proxy.sock")

    # s1 freezes DATA bytes that only its child image will hold: deleting
    # s1 streams them all up into the live overlay.
    vm.create("s0")
    env.write(vm.c, "vda", 0x5a, 0, DATA)
    vm.branches[vm.attached]["data"]["vda"][0] = 0x5a
    vm.create("s1")
    vm.write(0x6b, DATA)
    # The live overlay gets more than s1's image, so that the merge pulls
    # s1's data up (block-stream) rather than pushing the overlay's down.
    env.write(vm.c, "vda", 0x6c, DATA + MiB, DATA + 16 * MiB)
    vm.branches[vm.attached]["data"]["vda"][DATA + MiB] = 0x6c
    vm.offsets.add(DATA + MiB)

    rc, out, tty, secs = run_on_pty([qbtest.QBRANCH, "-c", sock, "delete",
                                     "s1"])
    if rc == 0:
        vm._deleted("s1", None)
    eq((rc, out), (0, b"snapshot s1 deleted, its data merged into its "
                      b"children\n"), "delete s1 under a pty: exit 0, "
       "stdout only says what happened")
    fs, text = frames(tty)
    qbtest.diag("delete took %.2f s, %d frames" % (secs, len(fs)))
    parsed = [FRAME_RE.match(f.lstrip("\r")) for f in fs]
    ok(fs and all(parsed), "every frame is a bar: op [###...] N%  cur/total",
       repr(text[:400]))
    pcts = [int(m.group(3)) for m in parsed if m]
    ok(any(p < 100 for p in pcts),
       "the bar showed progress before the end (QBRANCH_PROGRESS events "
       "arrived while waiting for the reply)", "percentages: %s" % pcts)
    ok(pcts == sorted(pcts), "the bar never goes back", "%s" % pcts)
    ok(pcts and pcts[-1] == 100, "the bar reaches 100%", "%s" % pcts)
    ok(all(m.group(1) == "delete" for m in parsed if m),
       "the bar names the operation (delete)")
    ok(all(len(f.lstrip("\r")) <= 79 for f in fs),
       "every frame fits 80 columns (the last one left free)",
       *[repr(f) for f in fs if len(f.lstrip("\r")) > 79])
    ok(all(len(m.group(2)) == len(parsed[0].group(2)) for m in parsed if m),
       "the bar keeps its width")
    ok(re.search(r" 100%  +\S+/\S+\x1b\[K\r\x1b\[K\Z", text),
       "after 100% the line is cleared (\\r ESC[K), and nothing follows",
       repr(text[-120:]))
    vm.check_data("after the delete: the model's blocks read as written")
    env.expect_data(vm.c, "vda", [(0x5a, 0, DATA),
                                  (0x6b, DATA, qbtest.REGION)],
                    "after the delete: all %d MiB merged read back"
                    % (DATA // MiB))
    vm.check_tree("after the delete: tree as expected")

    # narrow terminal: numbers only, still 100% and cleared
    env.write(vm.c, "vda", 0x7c, 0, SMALL)
    vm.branches[vm.attached]["data"]["vda"][0] = 0x7c
    vm.create("s2")
    rc, out, tty, secs = run_on_pty([qbtest.QBRANCH, "-c", sock, "delete",
                                     "s2"], cols=30)
    if rc == 0:
        vm._deleted("s2", None)
    fs, text = frames(tty)
    ok(rc == 0 and fs and all(len(f.lstrip("\r")) <= 29 for f in fs) and
       "100%" in fs[-1] and text.endswith("\x1b[K\r\x1b[K"),
       "a 30-column terminal: the frames fit, 100%, then cleared",
       repr(text[-200:]))

    # piped: quiet
    env.write(vm.c, "vda", 0x8d, 0, SMALL)
    vm.branches[vm.attached]["data"]["vda"][0] = 0x8d
    vm.create("s3")
    r = qbranch("delete", "s3", sock=sock)
    if r.rc == 0:
        vm._deleted("s3", None)
    eq((r.rc, r.err), (0, ""), "stderr on a pipe: no bar, nothing at all")

    # a failing operation leaves no bar behind (and no 100%)
    rc, out, tty, secs = run_on_pty([qbtest.QBRANCH, "-c", sock, "delete",
                                     "nope"])
    text = tty.decode("utf-8", "replace")
    ok(rc == 1 and "100%" not in text and "no snapshot named nope" in text,
       "a refused delete on a pty: the error, no bar", repr(text))

    env.expect_data(vm.c, "vda", [(0x8d, 0, SMALL), (0x5a, SMALL, MiB)],
                    "the end: the VM reads the last data written")
    vm.check_data("the end: the model's blocks read as written")
    vm.check_files("no stray image files")


qbtest.run(main, timeout=60)

#!/usr/bin/env python3
# File descriptors passed with SCM_RIGHTS reach QEMU with getfd / add-fd.

import os

import qbtest
from qbtest import ok, eq


def fd_targets(pid):
    """{fd number: link target} of a process."""
    out = {}
    d = "/proc/%d/fd" % pid
    for f in os.listdir(d):
        try:
            out[int(f)] = os.readlink(os.path.join(d, f))
        except OSError:
            pass
    return out


def holds(pid, path):
    return [fd for fd, t in fd_targets(pid).items() if t == path]


def main(env):
    qemu = env.start_qemu()
    proxy = env.start_proxy()
    c = proxy.client(negotiate=True)

    f1 = env.path("file-one")
    f2 = env.path("file-two")
    f3 = env.path("file-three")
    for p in (f1, f2, f3):
        with open(p, "w") as f:
            f.write(p)

    # getfd
    fd = os.open(f1, os.O_RDONLY)
    c.send_fds(b'{"execute": "getfd", "arguments": {"fdname": "one"}, '
               b'"id": "g1"}', [fd])
    os.close(fd)
    r = c.recv_reply()
    eq((r.get("return"), r.get("id")), ({}, "g1"), "getfd with an fd works")
    ok(holds(qemu.pid, f1), "QEMU now holds our file open",
       repr(fd_targets(qemu.pid)))
    ok(not holds(proxy.pid, f1), "qbranchd did not keep a copy",
       repr(fd_targets(proxy.pid)))
    r = c.cmd("closefd", {"fdname": "one"}, id="c1")
    eq(r.get("return"), {}, "closefd on the passed fd works")
    ok(qbtest.wait_for(lambda: not holds(qemu.pid, f1), 2),
       "QEMU closed it")
    r = c.cmd("closefd", {"fdname": "one"}, id="c2")
    eq(r.err_class, "GenericError", "second closefd fails (it is gone)")

    # getfd without an fd: QEMU's own error, no stale fd attached.
    r = c.cmd("getfd", {"fdname": "none"}, id="g0")
    eq((r.err_class, r.err_desc),
       ("GenericError", "No file descriptor supplied via SCM_RIGHTS"),
       "getfd without an fd gets QEMU's error")

    # add-fd, then query-fdsets; the fd number QEMU reports is our file.
    fd = os.open(f2, os.O_RDONLY)
    c.send_fds(b'{"execute": "add-fd", "arguments": {"opaque": "two"}, '
               b'"id": "a1"}', [fd])
    os.close(fd)
    r = c.recv_reply()
    ret = r.get("return", {})
    ok(isinstance(ret.get("fdset-id"), int) and isinstance(ret.get("fd"), int),
       "add-fd with an fd works", repr(r.raw))
    qfd = ret.get("fd")
    r = c.cmd("query-fdsets", id="q")
    sets = r.get("return", [])
    ok(any(s.get("fdset-id") == ret.get("fdset-id") and
           {"fd": qfd, "opaque": "two"} in s.get("fds", []) for s in sets),
       "query-fdsets lists it", repr(r.raw))
    ok(qfd is not None and fd_targets(qemu.pid).get(qfd) == f2,
       "QEMU's fd %s is our file" % qfd, repr(fd_targets(qemu.pid)))
    ok(not holds(proxy.pid, f2), "qbranchd did not keep a copy")

    # Two getfd in one write, each with its own fd, from two clients at
    # once, and a command without fd in between.
    d = proxy.client(negotiate=True)
    fa = os.open(f1, os.O_RDONLY)
    fb = os.open(f3, os.O_RDONLY)
    c.send_fds(b'{"execute": "getfd", "arguments": {"fdname": "a"}, '
               b'"id": 1}', [fa])
    d.send_fds(b'{"execute": "getfd", "arguments": {"fdname": "b"}, '
               b'"id": 2}', [fb])
    os.close(fa)
    os.close(fb)
    ra, rb = c.recv_reply(), d.recv_reply()
    ok(ra.get("return") == {} and rb.get("return") == {},
       "concurrent getfd from two clients", repr(ra.raw), repr(rb.raw))
    ok(holds(qemu.pid, f1) and holds(qemu.pid, f3),
       "QEMU holds both files")
    r = c.cmd("query-status", id=3)
    ok("return" in r, "a command after fd passing works")
    r1 = c.cmd("closefd", {"fdname": "a"})
    r2 = d.cmd("closefd", {"fdname": "b"})
    ok(r1.get("return") == {} and r2.get("return") == {},
       "each name refers to a passed fd")
    ok(qbtest.wait_for(lambda: not holds(qemu.pid, f1) and
                       not holds(qemu.pid, f3), 2), "QEMU closed both")

    # An fd handed over together with the command bytes split over two
    # writes (fd on the first part).
    fd = os.open(f3, os.O_RDONLY)
    c.send_fds(b'{"execute": "getfd", ', [fd])
    os.close(fd)
    c.send(b'"arguments": {"fdname": "split"}, "id": "s"}')
    r = c.recv_reply()
    eq(r.get("return"), {}, "getfd whose fd came with the first fragment")
    r = c.cmd("closefd", {"fdname": "split"})
    eq(r.get("return"), {}, "... and it is really there")

    ok(not holds(proxy.pid, f1) and not holds(proxy.pid, f2) and
       not holds(proxy.pid, f3), "no passed fd leaked in qbranchd",
       repr(fd_targets(proxy.pid)))


qbtest.run(main)

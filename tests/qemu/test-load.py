#!/usr/bin/env python3
# Load: 64 clients each pipeline commands with ids of mixed types while
# another client runs create, revert and delete in a loop. Every reply
# must reach its sender, in order, with its id byte for byte; no client
# may starve; qbranchd's memory must stay bounded. The suite runs 300
# commands per client; scripts/load runs the 10,000
# (QBRANCH_LOAD_COMMANDS).

import json
import os
import socket
import threading
import time

import qbtest
from qbtest import ok, eq

CLIENTS = 64
COMMANDS = int(os.environ.get("QBRANCH_LOAD_COMMANDS") or "300")
WINDOW = 64     # pipelined commands in flight per client


def ids(k, i):
    """The raw id of client k's i-th command: ints, big ints, negatives,
    floats, strings with escapes, objects, arrays, null."""
    forms = [
        b"%d" % i,
        b"18446744073709551%03d" % (i % 1000),
        b"-%d" % (i + 1),
        b"%d.5" % i,
        b'"c%d-\\u00e9\\"%d"' % (k, i),
        b'{"c": %d, "i": [%d, "x"]}' % (k, i),
        b'[%d, {"k": null}]' % i,
        b"null",
    ]
    return forms[(i + k) % len(forms)]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Client(threading.Thread):
    def __init__(self, path, k):
        threading.Thread.__init__(self, daemon=True)
        self.path, self.k = path, k
        self.got = 0
        self.bad = []
        self.done_at = None

    def run(self):
        try:
            self._run()
        except Exception as e:
            self.bad.append("client %d: %r" % (self.k, e))

    def _run(self):
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.path)
        f = s.makefile("rb")
        f.readline()
        s.sendall(b'{"execute": "qmp_capabilities"}')
        if b"return" not in f.readline():
            raise qbtest.QBTestError("negotiation failed")
        sent = 0
        while self.got < COMMANDS:
            burst = []
            while sent < COMMANDS and sent - self.got < WINDOW:
                burst.append(b'{"execute": "query-status", "id": %s}'
                             % ids(self.k, sent))
                sent += 1
            if burst:
                s.sendall(b"".join(burst))
            line = f.readline()
            if not line:
                raise qbtest.QBTestError("closed after %d" % self.got)
            if line.startswith(b'{"timestamp"'):
                continue            # an event
            want = ids(self.k, self.got)
            # The id is spliced back as it was sent: compare its bytes.
            if b'"id": ' + want + b'}' not in line and \
                    b'"id": ' + want + b',' not in line:
                if len(self.bad) < 3:
                    self.bad.append("client %d reply %d: want id %s, got %s"
                                    % (self.k, self.got, want, line[:200]))
            self.got += 1
        self.done_at = time.monotonic()
        s.close()


def main(env):
    # In an ASan build, freed memory waits in a quarantine of up to 256 MiB
    # before reuse, which RSS counts; a small one keeps the bound about
    # qbranchd's own memory.
    asan = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = (asan + ":" if asan else "") + \
        "quarantine_size_mb=16"
    qemu = env.start_qemu(disks=["vda"])
    proxy = env.start_proxy(args=["--state-dir", env.path("state"),
                                  "--max-clients", "128"])
    admin = proxy.client(negotiate=True)
    admin.cmd("cont")
    path = proxy.listen[0]
    ops = {"create": 0, "revert": 0, "delete": 0, "errors": []}
    stop = threading.Event()

    def snapshot_loop():
        c = proxy.client(negotiate=True)
        n = 0
        while not stop.is_set():
            name = "load%d" % n
            for cmd, args in (("qbranch-snapshot-create", {"name": name}),
                              ("qbranch-snapshot-revert",
                               {"name": name, "discard": True}),
                              ("qbranch-snapshot-delete", {"name": name})):
                r = c.cmd(cmd, args, timeout=60)
                if "return" in r:
                    ops[cmd.split("-")[-1]] += 1
                else:
                    ops["errors"].append(r.raw[:200])
            n += 1

    rss0 = rss_kib(proxy.pid)
    snapper = threading.Thread(target=snapshot_loop, daemon=True)
    snapper.start()
    clients = [Client(path, k) for k in range(CLIENTS)]
    t0 = time.monotonic()
    for c in clients:
        c.start()
    peak = rss0
    while any(c.is_alive() for c in clients):
        peak = max(peak, rss_kib(proxy.pid))
        time.sleep(0.05)
        if time.monotonic() - t0 > 40 + COMMANDS * CLIENTS / 500:
            break
    elapsed = time.monotonic() - t0
    stop.set()
    snapper.join(120)
    total = sum(c.got for c in clients)
    bad = [b for c in clients for b in c.bad]
    eq(total, CLIENTS * COMMANDS, "%d clients x %d pipelined commands: "
       "every reply came back (%.1f s, %.0f/s)" % (CLIENTS, COMMANDS,
                                                  elapsed, total / elapsed))
    ok(not bad, "every reply went to its sender, in order, with its id "
       "byte for byte", *bad[:10])
    ends = sorted(c.done_at for c in clients if c.done_at)
    if len(ends) == CLIENTS:
        spread = (ends[-1] - ends[0]) / (ends[-1] - t0)
        ok(spread < 0.5, "no client starved: the first finished %.0f%% of "
           "the run before the last" % (100 * spread))
    else:
        ok(False, "no client starved", "%d of %d finished" % (len(ends),
                                                               CLIENTS))
    ok(ops["create"] > 0 and ops["revert"] > 0 and ops["delete"] > 0 and
       not ops["errors"], "meanwhile: %d creates, %d reverts, %d deletes, "
       "no error" % (ops["create"], ops["revert"], ops["delete"]),
       *ops["errors"][:5])
    ok(peak - rss0 < 64 * 1024, "qbranchd's memory stayed bounded: %d KiB "
       "at the start, %d KiB at the peak" % (rss0, peak))
    r = admin.cmd("qbranch-query-snapshots")
    eq([s["name"] for s in r["return"]["snapshots"]], [],
       "the tree holds no leftover of the loop")
    env.expect_data(admin, "vda", [(0, "0", qbtest.REGION)],
                    "the guest's disk reads as before")


qbtest.run(main, timeout=int(120 + COMMANDS * CLIENTS / 400))

#!/usr/bin/env python3
"""tools/where-threads-wait.py - where a program's threads wait, sampled.

    python3 tools/where-threads-wait.py [--samples N] [--every MS] [--delay S] -- prog [args...]

Runs prog (give it a run time of its own, e.g. `--seconds 2`), waits
--delay seconds (default 0.4) for its threads to start, then N times
(default 200), every MS milliseconds (default 5), reads
/proc/PID/task/*/syscall for each thread of prog's own process (not of
processes it forks: run the program itself, not a shell or time(1) around
it; ksync-run execs, so it is fine). A thread is in a system call (the
first field is its number), "running" (on a CPU, ready for one, or caught
between two states: the kernel cannot tell), or "not in a system call"
(stopped, or blocked in the kernel outside one). For futex(2) calls it
keeps the word's address, the operation and the expected value, and for
the BITSET operations the mask that tells waiters apart. At the end it
prints prog's output (stdout and stderr together), then per place the
average number of threads found there per sample, most first: how many
threads ran, and on which futex words the others slept.

Exit status: prog's (128 + N if a signal N ended it); 1 if prog ended
before the first sample or its threads could not be read (another user's
process, or one that is not dumpable), 2 for bad options.

Used in docs/dropin.md ("Why glibc's rwlock wins with 16 threads on 2
CPUs") to see that glibc's reader-preferring rwlock keeps most of its
threads asleep on one word. Only Linux /proc; the sampling itself takes
a little CPU, so run it on a machine with nothing else to do. Reading
another process's syscall file needs the same user (or root) and
ptrace permission (kernel.yama.ptrace_scope 0 or 1 for a child).
"""
import argparse
import collections
import errno
import os
import subprocess
import sys
import tempfile
import time

FUTEX = {"x86_64": "202", "aarch64": "98"}
# a few other calls a thread of a benchmark or server sleeps in
NAMES = {
    "x86_64": {"0": "read", "7": "poll", "35": "nanosleep", "61": "wait4", "230": "clock_nanosleep",
               "232": "epoll_wait", "281": "epoll_pwait"},
    "aarch64": {"63": "read", "73": "ppoll", "101": "nanosleep", "115": "clock_nanosleep",
                "22": "epoll_pwait", "260": "wait4"},
}
OPS = {0: "WAIT", 1: "WAKE", 9: "WAIT_BITSET", 10: "WAKE_BITSET"}


def describe(fields, futex_nr, names):
    if fields[0] == "running":
        return "running"
    if fields[0] == "-1":
        return "not in a system call"
    if fields[0] != futex_nr or len(fields) < 7:
        return "syscall %s%s" % (fields[0], " (%s)" % names[fields[0]] if fields[0] in names else "")
    op = int(fields[2], 16)
    name = OPS.get(op & 0x7F, "op %d" % (op & 0x7F))
    if op & 128:
        name += "_PRIVATE"
    if op & 256:
        name += "_CLOCK_REALTIME"
    extra = " mask %s" % fields[6] if (op & 0x7F) in (9, 10) else ""
    return "futex %s %s val %s%s" % (fields[1], name, fields[3], extra)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--every", type=float, default=5.0, help="milliseconds between samples")
    ap.add_argument("--delay", type=float, default=0.4, help="seconds before the first sample")
    ap.add_argument("prog", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    prog = a.prog[1:] if a.prog[:1] == ["--"] else a.prog
    if not prog:
        ap.error("give a program after --")
    if not 1 <= a.samples <= 10**6:
        ap.error("--samples: 1 to 1000000")
    if not 0 <= a.every <= 60000:  # also false for nan
        ap.error("--every: 0 to 60000 milliseconds")
    if not 0 <= a.delay <= 3600:
        ap.error("--delay: 0 to 3600 seconds")
    futex_nr = FUTEX.get(os.uname().machine)
    names = NAMES.get(os.uname().machine, {})
    if futex_nr is None:
        sys.exit("where-threads-wait: unknown architecture %s" % os.uname().machine)
    out = tempfile.TemporaryFile()  # not a pipe: a full pipe would stop the program
    try:
        p = subprocess.Popen(prog, stdout=out, stderr=subprocess.STDOUT)
    except OSError as e:
        sys.exit("where-threads-wait: cannot run %s: %s" % (prog[0], e.strerror))
    time.sleep(a.delay)
    seen = collections.Counter()
    taken = 0
    denied = None
    while taken < a.samples and denied is None:
        if p.poll() is not None:
            break  # the program has ended (its /proc entry stays until it is reaped)
        try:
            tasks = os.listdir("/proc/%d/task" % p.pid)
        except OSError:
            break  # the program has ended
        sample = collections.Counter()
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/syscall" % (p.pid, t)) as f:
                    fields = f.read().split()
            except OSError as e:
                if e.errno in (errno.EACCES, errno.EPERM):
                    denied = e.strerror
                    break
                continue  # the thread has ended
            if fields:
                sample[describe(fields, futex_nr, names)] += 1
        if denied is None:
            seen.update(sample)
            taken += 1
            time.sleep(a.every / 1000.0)
    p.wait()
    out.seek(0)
    sys.stdout.write(out.read().decode(errors="replace"))
    sys.stdout.flush()
    if denied is not None:
        sys.exit("where-threads-wait: cannot read the threads of pid %d: %s" % (p.pid, denied))
    if taken == 0:
        sys.exit("where-threads-wait: the program ended before the first sample")
    print("%d samples of pid %d; threads per sample, by place:" % (taken, p.pid))
    for place, n in seen.most_common():
        print("%7.2f  %s" % (n / taken, place))
    return p.returncode if p.returncode >= 0 else 128 - p.returncode


if __name__ == "__main__":
    sys.exit(main())

"""Python-side checks of python/ksync.py, run by tests/test_python.c:

    python3 tests/test_python.py CASE [NAME]

One case per run; prints "ok CASE ..." and exits 0, or a traceback and 1.
The cases with a NAME open a segment the C test made.
"""

import errno
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import ksync  # noqa: E402


def expect(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s(%s) did not raise %s" % (fn.__name__, args, exc.__name__))


def anon(max_msg=100, capacity=4096):
    return ksync.Channel.create(None, capacity, max_msg, ksync.SEND | ksync.RECV)


def closed():
    """Every call on a closed channel is OSError(EBADF); close is idempotent."""
    ch = anon()
    ch.send(b"left behind")
    ch.close()
    assert ch.closed
    for call in (lambda: ch.recv(), lambda: ch.recv(timeout=0), lambda: ch.send(b"x"), lambda: ch.fd):
        e = expect(OSError, call)
        assert e.errno == errno.EBADF, e
    ch.close()
    with anon() as ch2:
        pass
    assert ch2.closed
    e = expect(OSError, ch2.recv)
    assert e.errno == errno.EBADF, e
    return "recv/send/fd -> EBADF, close twice fine, with closes"


def timeout_zero():
    """timeout=0 on an empty channel tries once: TimeoutError at once."""
    with anon() as ch:
        t = time.monotonic()
        expect(TimeoutError, ch.recv, timeout=0)
        quick = time.monotonic() - t
        assert quick < 0.5, quick
        t = time.monotonic()
        e = expect(TimeoutError, ch.recv, timeout=0.1)
        slow = time.monotonic() - t
        assert e.errno == errno.ETIMEDOUT and slow >= 0.1, (e, slow)
        for bad in (-1, -0.001, math.nan):
            expect(ValueError, ch.recv, timeout=bad)
        ch.send(b"still works")
        assert ch.recv(timeout=0) == b"still works"
    return "timeout=0 %.1f ms, timeout=0.1 %.1f ms, negative/NaN ValueError" % (quick * 1e3, slow * 1e3)


def oversize():
    """A message above max_msg is OSError(EMSGSIZE) and sends nothing."""
    with anon(max_msg=100) as ch:
        e = expect(OSError, ch.send, b"x" * 101)
        assert type(e) is OSError and e.errno == errno.EMSGSIZE, repr(e)
        expect(TimeoutError, ch.recv, timeout=0)  # nothing was queued
        ch.send(bytearray(b"y" * 100))              # exactly max_msg, from a bytearray
        assert ch.recv(timeout=0) == b"y" * 100
        expect(TypeError, ch.send, 5)               # not bytes(5) = five zeros
    return "EMSGSIZE, nothing queued, max_msg itself passes"


def grow():
    """recv's buffer starts at 4096 and grows on EMSGSIZE: the channel keeps
    the message and says its length.  A second handle through open_fd."""
    sizes = [10, 5000, 4097, 60000, 0, 3, 65536]
    with ksync.Channel.create(None, 1 << 18, 65536, ksync.SEND) as tx, \
            ksync.Channel.open_fd(tx.fd, ksync.RECV) as rx:
        for i, n in enumerate(sizes):
            tx.send(bytes((i + k) & 0xff for k in range(n)))
        for i, n in enumerate(sizes):
            m = rx.recv(timeout=5)
            assert m == bytes((i + k) & 0xff for k in range(n)), (i, n, len(m))
    return "sizes %s whole and in order" % sizes


def broken_pipe():
    """The receiver sees what was sent, then BrokenPipeError; a sender
    whose receivers all left gets BrokenPipeError too."""
    tx = ksync.Channel.create(None, 4096, 64, ksync.SEND)
    rx = ksync.Channel.open_fd(tx.fd, ksync.RECV)
    for i in range(3):
        tx.send(b"%d" % i)
    tx.close()
    got = [rx.recv(timeout=5) for _ in range(3)]
    assert got == [b"0", b"1", b"2"], got
    e = expect(BrokenPipeError, rx.recv, timeout=5)
    assert e.errno == errno.EPIPE
    rx.close()
    rx = ksync.Channel.create(None, 4096, 64, ksync.RECV)
    tx = ksync.Channel.open_fd(rx.fd, ksync.SEND)
    rx.close()
    expect(BrokenPipeError, tx.send, b"nobody", timeout=5)
    tx.close()
    return "3 messages then EPIPE; send after the receiver left: EPIPE"


def bad_magic(name):
    t = time.monotonic()
    e = expect(ksync.SegmentError, ksync.Segment.open, name, timeout=5)
    took = time.monotonic() - t
    assert isinstance(e, OSError) and e.errno == errno.EBADMSG and "magic" in str(e), repr(e)
    assert took < 1, took  # at once, not after the 5 s of waiting for a writer
    return "%s (%.0f ms)" % (e, took * 1e3)


def truncated(name):
    e = expect(ksync.SegmentError, ksync.Segment.open, name, timeout=5)
    assert e.errno == errno.EBADMSG and "truncated" in str(e), repr(e)
    return str(e)


def not_shared(name):
    e = expect(ksync.SegmentError, ksync.Segment.open, name, timeout=5)
    assert e.errno == errno.EINVAL and "KS_SHARED" in str(e), repr(e)
    return str(e)


def unpublished(name):
    t = time.monotonic()
    e = expect(TimeoutError, ksync.Segment.open, name, timeout=0.3)
    took = time.monotonic() - t
    assert took >= 0.3 and "publish" in str(e), (took, e)
    return "%s after %.2f s" % (e, took)


def missing(name):
    e = expect(FileNotFoundError, ksync.Segment.open, name, timeout=0.1)
    return str(e)


def cross(name):
    """Wakes both ways with the C test (tests/test_python.c, python/cross):
    Python posts items, which wakes C in ks_sem_timedwait; C waits until
    Python sleeps in ks_event_wait (the event's SLEEPERS bit) and sets done;
    then until Python is a registered waiter of items, and posts it."""
    with ksync.Segment.open(name, timeout=5) as seg:
        expect(TimeoutError, seg.done.wait, timeout=0)
        expect(TimeoutError, seg.items.wait, timeout=0)
        assert not seg.done.is_set()
        seg.items.post()
        t = time.monotonic()
        seg.done.wait(timeout=20)
        ev = time.monotonic() - t
        assert seg.done.is_set()
        t = time.monotonic()
        seg.items.wait(timeout=20)
        sem = time.monotonic() - t
        for _ in range(seg.slots):
            seg.space.wait(timeout=0)
        expect(TimeoutError, seg.space.wait, timeout=0)
        seg.done.clear()
        assert not seg.done.is_set()
        e = expect(ValueError, seg.sem, 3)  # misaligned
        e = expect(ValueError, seg.event, seg.size - 4)  # past the end
    return "event wait woken by C after %.0f ms, sem wait after %.0f ms" % (ev * 1e3, sem * 1e3)


CASES = {f.__name__: f for f in (closed, timeout_zero, oversize, grow, broken_pipe, bad_magic, truncated,
                                   not_shared, unpublished, missing, cross)}

if __name__ == "__main__":
    case = CASES[sys.argv[1]]
    print("ok %s: %s" % (sys.argv[1], case(*sys.argv[2:])))

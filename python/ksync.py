"""ksync from Python: channels, and semaphores and events in shared memory.

A small pure-Python module over libksync.so through ctypes (no compiled
extension, nothing outside the standard library).  docs/python.md describes
it; the C side is include/ksync/channel.h, include/ksync/sem.h and
include/ksync/event.h.

    import ksync
    with ksync.Channel.open("/logs", ksync.RECV) as ch:
        while True:
            try:
                msg = ch.recv(timeout=5.0)        # bytes
            except BrokenPipeError:               # every sender has gone
                break

    with ksync.Segment.open("/course") as seg:    # made by examples/shm_writer.c
        seg.items.wait()                          # ks_sem_wait
        record = seg.slot(0)
        seg.space.post()                          # ks_sem_post
        seg.done.set()                            # ks_event_set

Errors are OSError(errno, os.strerror(errno)), so EPIPE is BrokenPipeError,
ETIMEDOUT TimeoutError, ENOENT FileNotFoundError; a timeout is in seconds
(None: wait for ever; 0: try once), turned into a ksync deadline with
ks_deadline_after.  Python never touches the shared words itself: every
atomic operation and every futex call is the library's.

The library: $KSYNC_LIB if set, else build/libksync.so.1 of the repository
this file is in (`make` builds it), else the system's libksync.so.1.
"""

import ctypes
import ctypes.util
import errno
import mmap
import os
import struct
import threading
import time

__all__ = ["SEND", "RECV", "FOREVER", "Channel", "SharedMemory", "Semaphore", "Event", "Segment",
           "SegmentError", "library_path"]

SEND = 1
RECV = 2
FOREVER = 2**63 - 1                 # KS_FOREVER (include/ksync/time.h)
KS_SHARED = 1                       # include/ksync/common.h

# sizeof and alignment of the objects (include/ksync/sem.h: a u64 state
# aligned to 8, u32 max, u32 flags; include/ksync/event.h: u32 word,
# u32 flags).  Segment checks them against what the C writer publishes.
SEM_SIZE, SEM_ALIGN, SEM_FLAGS_AT = 16, 8, 12
EVENT_SIZE, EVENT_ALIGN, EVENT_FLAGS_AT = 8, 4, 4

# A wait for ever (or for long) in the main thread is made of waits of this
# length, so that Ctrl-C (KeyboardInterrupt) is seen between two of them:
# Python runs signal handlers between bytecodes, never inside a C call.
_SLICE_NS = 100 * 1000 * 1000


def _find_library():
    env = os.environ.get("KSYNC_LIB")
    if env:
        return env  # an explicit choice: if it does not load, say so
    here = os.path.dirname(os.path.abspath(__file__))
    built = os.path.join(os.path.dirname(here), "build", "libksync.so.1")
    if os.path.exists(built):
        return built
    return ctypes.util.find_library("ksync") or "libksync.so.1"


library_path = _find_library()
try:
    _lib = ctypes.CDLL(library_path)
    _lib.ks_channel_create  # a libksync without channels is too old
except (OSError, AttributeError) as _e:
    raise ImportError("ksync: cannot use %s (%s): run `make` in the repository, or set KSYNC_LIB"
                      % (library_path, _e)) from None

_vp, _i64, _sz = ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t
_int, _uint = ctypes.c_int, ctypes.c_uint


def _proto(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_deadline_after = _proto("ks_deadline_after", _i64, _i64)
_ch_create = _proto("ks_channel_create", _int, ctypes.c_char_p, _sz, _sz, _uint, ctypes.POINTER(_vp))
_ch_open = _proto("ks_channel_open", _int, ctypes.c_char_p, _uint, ctypes.POINTER(_vp))
_ch_open_fd = _proto("ks_channel_open_fd", _int, _int, _uint, ctypes.POINTER(_vp))
_ch_unlink = _proto("ks_channel_unlink", _int, ctypes.c_char_p)
_ch_close = _proto("ks_channel_close", _int, _vp)
_ch_fd = _proto("ks_channel_fd", _int, _vp)
_ch_max_msg = _proto("ks_channel_max_msg", _sz, _vp)
_ch_send = _proto("ks_channel_send", _int, _vp, ctypes.c_char_p, _sz, _i64)
_ch_recv = _proto("ks_channel_recv", _int, _vp, _vp, _sz, ctypes.POINTER(_sz), _i64)
# ks_sem_wait, ks_sem_timedwait, ks_sem_post and ks_event_wait are static
# inline in the headers (a fast path of one CAS or one load) and so not in
# the shared library; their out-of-line halves are, and each is the whole
# operation on its own: ks_sem_wait_slow tries, spins and sleeps, and
# ks_sem_post_slow is a complete post (src/sem.c).
_sem_wait = _proto("ks_sem_wait_slow", _int, _vp, _i64)
_sem_post = _proto("ks_sem_post_slow", _int, _vp)
_ev_wait = _proto("ks_event_timedwait", _int, _vp, _i64)
_ev_set = _proto("ks_event_set", _int, _vp)
_ev_clear = _proto("ks_event_clear", _int, _vp)


def _error(e, filename=None):
    """OSError(e, strerror): the constructor picks the subclass (EPIPE:
    BrokenPipeError, ETIMEDOUT: TimeoutError, ENOENT: FileNotFoundError...)."""
    if filename is None:
        return OSError(e, os.strerror(e))
    return OSError(e, os.strerror(e), filename)


def _deadline(timeout):
    """Seconds (None: for ever) to an absolute ksync deadline."""
    if timeout is None:
        return FOREVER
    t = float(timeout)
    if not t >= 0:  # also NaN
        raise ValueError("timeout must be a non-negative number of seconds or None")
    if t >= 9e9:  # beyond int64 nanoseconds: ks_deadline_after saturates anyway
        return FOREVER
    return _deadline_after(int(t * 1e9))


def _call(fn, end):
    """fn(deadline) -> errno, by the absolute deadline end.  In the main
    thread a long wait is cut into slices (each an ordinary timed call: it
    takes what is there or leaves nothing behind), so a signal handler can
    run between two of them."""
    if threading.current_thread() is not threading.main_thread():
        return fn(end)
    while True:
        d = _deadline_after(_SLICE_NS)
        if d >= end:
            return fn(end)
        e = fn(d)
        if e != errno.ETIMEDOUT:
            return e


class _Guarded:
    """A native resource that close() must not free under a call in another
    thread: calls count themselves in and out; a closed one is EBADF."""

    _what = "object"

    def __init__(self):
        self._lock = threading.Lock()
        self._busy = 0
        self._closed = False

    def _enter(self):
        with self._lock:
            if self._closed:
                raise OSError(errno.EBADF, "%s: %s is closed" % (os.strerror(errno.EBADF), self._what))
            self._busy += 1

    def _leave(self):
        with self._lock:
            self._busy -= 1

    def _begin_close(self):
        """True if the caller must free the resource now."""
        with self._lock:
            if self._closed:
                return False
            if self._busy:
                raise OSError(errno.EBUSY, "%s: another thread is inside a call on this %s"
                              % (os.strerror(errno.EBUSY), self._what))
            self._closed = True
            return True

    @property
    def closed(self):
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Channel(_Guarded):
    """One attachment to a ks_channel (include/ksync/channel.h).  Make one
    with Channel.create, Channel.open or Channel.open_fd."""

    _what = "channel"

    def __init__(self, handle, name=None):
        super().__init__()
        self._h = handle
        self.name = name
        self.max_msg = _ch_max_msg(handle)
        # recv's buffer starts small and grows to the largest message seen
        self._bufsize = min(self.max_msg, 4096)

    @classmethod
    def create(cls, name, capacity, max_msg, role):
        """A new channel: name is a shm name ("/x"), or None for an
        anonymous one that other processes reach through .fd."""
        h = _vp()
        e = _ch_create(None if name is None else os.fsencode(name), capacity, max_msg, role, ctypes.byref(h))
        if e:
            raise _error(e, name)
        return cls(h.value, name)

    @classmethod
    def open(cls, name, role):
        """Attach to an existing channel by name.  FileNotFoundError: no such
        name yet; BlockingIOError (EAGAIN): its creator has not finished."""
        h = _vp()
        e = _ch_open(os.fsencode(name), role, ctypes.byref(h))
        if e:
            raise _error(e, name)
        return cls(h.value, name)

    @classmethod
    def open_fd(cls, fd, role):
        """Attach through a descriptor of the segment (the library dups it)."""
        h = _vp()
        e = _ch_open_fd(fd, role, ctypes.byref(h))
        if e:
            raise _error(e)
        return cls(h.value)

    @staticmethod
    def unlink(name):
        e = _ch_unlink(os.fsencode(name))
        if e:
            raise _error(e, name)

    @property
    def fd(self):
        """The segment's descriptor, owned by the channel (pass it on, e.g.
        with socket.send_fds, for Channel.open_fd in another process)."""
        self._enter()
        try:
            return _ch_fd(self._h)
        finally:
            self._leave()

    def send(self, data, timeout=None):
        """Send one message (bytes-like, at most max_msg bytes)."""
        if type(data) is not bytes:
            data = memoryview(data).tobytes()
        self._enter()
        try:
            e = _call(lambda d: _ch_send(self._h, data, len(data), d), _deadline(timeout))
        finally:
            self._leave()
        if e:
            raise _error(e)

    def recv(self, timeout=None):
        """The oldest message, as bytes.  BrokenPipeError once every sender
        has gone and every message sent has been received."""
        n = _sz()
        end = _deadline(timeout)
        self._enter()
        try:
            while True:
                size = self._bufsize
                buf = ctypes.create_string_buffer(size)
                e = _call(lambda d: _ch_recv(self._h, buf, size, ctypes.byref(n), d), end)
                if e == 0:
                    return ctypes.string_at(buf, n.value)
                if e == errno.EMSGSIZE and n.value > size:
                    # the message is longer than the buffer: the channel kept
                    # it and said how long it is
                    self._bufsize = max(self._bufsize, n.value)
                    continue
                raise _error(e)
        finally:
            self._leave()

    def close(self):
        """Detach (idempotent).  EBUSY if another thread is inside a call."""
        if self._begin_close():
            _ch_close(self._h)
            self._h = None

    def __del__(self):
        try:
            if not self._closed and not self._busy:
                self.close()
        except Exception:
            pass

    def __repr__(self):
        state = "closed" if self._closed else "max_msg=%d" % self.max_msg
        return "<ksync.Channel %s %s>" % (self.name or "(anonymous)", state)


_libc = ctypes.CDLL(None, use_errno=True)
_shm_open = getattr(_libc, "shm_open", None)
if _shm_open is not None:
    _shm_open.restype = ctypes.c_int
    _shm_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint]


def _shm_open_rw(name):
    if _shm_open is None:  # glibc before 2.34 keeps it in librt: what it does
        return os.open("/dev/shm/" + name.lstrip("/"), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    fd = _shm_open(os.fsencode(name), os.O_RDWR | os.O_CLOEXEC, 0)
    if fd < 0:
        raise _error(ctypes.get_errno(), name)
    return fd


class SharedMemory(_Guarded):
    """An existing POSIX shared-memory object (shm_open), mapped whole with
    mmap, MAP_SHARED.  sem(offset) and event(offset) name the ksync objects
    a C program placed in it."""

    _what = "shared memory"

    def __init__(self, name):
        super().__init__()
        self.name = name
        fd = _shm_open_rw(name)
        try:
            self.size = os.fstat(fd).st_size
            if self.size == 0:
                raise _error(errno.EAGAIN, name)  # created, not sized yet
            self._mm = mmap.mmap(fd, self.size)  # MAP_SHARED, read and write
        finally:
            os.close(fd)
        # The address of the mapping, for the library: a ctypes array over
        # the mmap's buffer (it keeps the mmap from being closed while it
        # lives; close() drops it first).
        self._anchor = (ctypes.c_char * self.size).from_buffer(self._mm)
        self.address = ctypes.addressof(self._anchor)

    def _check(self, offset, size, align, what):
        if not isinstance(offset, int) or offset < 0 or offset + size > self.size:
            raise ValueError("%s at offset %r: outside the %d bytes of %s" % (what, offset, self.size, self.name))
        if offset % align:
            raise ValueError("%s at offset %d: not aligned to %d" % (what, offset, align))
        return self.address + offset

    def read(self, offset, n):
        """n bytes at offset, copied out (plain reads: order them with the
        library's waits, as a C reader would)."""
        self._enter()
        try:
            if offset < 0 or n < 0 or offset + n > self.size:
                raise ValueError("read of %d bytes at %d: outside %s" % (n, offset, self.name))
            return self._mm[offset:offset + n]
        finally:
            self._leave()

    def sem(self, offset, shared=True):
        """The ks_sem_t at offset.  shared: refuse one initialised without
        KS_SHARED (its waiters would sleep on a private futex that another
        process's post never wakes)."""
        return Semaphore(self, offset, shared)

    def event(self, offset, shared=True):
        """The ks_event_t at offset (shared: as for sem)."""
        return Event(self, offset, shared)

    def close(self):
        if self._begin_close():
            del self._anchor
            self._mm.close()

    def __del__(self):
        try:
            if not self._closed and not self._busy:
                self.close()
        except Exception:
            pass


class _Object:
    def __init__(self, mem, offset, size, align, flags_at, shared):
        self._mem = mem
        self.offset = offset
        self._addr = mem._check(offset, size, align, type(self).__name__)
        if shared:
            flags = struct.unpack_from("=I", mem.read(offset + flags_at, 4))[0]
            if not flags & KS_SHARED:
                raise SegmentError(errno.EINVAL, "the %s at offset %d was not initialised with KS_SHARED"
                                   % (type(self).__name__, offset), mem.name)

    def _run(self, fn, timeout):
        end = _deadline(timeout)
        self._mem._enter()
        try:
            return _call(fn, end)
        finally:
            self._mem._leave()


class Semaphore(_Object):
    """A ks_sem_t in shared memory (include/ksync/sem.h)."""

    def __init__(self, mem, offset, shared=True):
        super().__init__(mem, offset, SEM_SIZE, SEM_ALIGN, SEM_FLAGS_AT, shared)

    def wait(self, timeout=None):
        """Take a unit: ks_sem_wait (timeout None) or ks_sem_timedwait.
        TimeoutError if none came in time; timeout=0 tries once."""
        a = self._addr
        e = self._run(lambda d: _sem_wait(a, d), timeout)
        if e:
            raise _error(e)

    def post(self):
        """ks_sem_post.  OSError(EOVERFLOW) if the value is at its maximum."""
        self._mem._enter()
        try:
            e = _sem_post(self._addr)
        finally:
            self._mem._leave()
        if e:
            raise _error(e)


class Event(_Object):
    """A ks_event_t in shared memory (include/ksync/event.h)."""

    def __init__(self, mem, offset, shared=True):
        super().__init__(mem, offset, EVENT_SIZE, EVENT_ALIGN, EVENT_FLAGS_AT, shared)

    def wait(self, timeout=None):
        """ks_event_wait (timeout None) or ks_event_timedwait: TimeoutError
        if still clear at the deadline."""
        a = self._addr
        e = self._run(lambda d: _ev_wait(a, d), timeout)
        if e:
            raise _error(e)

    def is_set(self):
        """One look (ks_event_timedwait with a deadline already past: an
        acquire load, no sleep)."""
        self._mem._enter()
        try:
            return _ev_wait(self._addr, 0) == 0
        finally:
            self._mem._leave()

    def _op(self, fn):
        self._mem._enter()
        try:
            e = fn(self._addr)
        finally:
            self._mem._leave()
        if e:
            raise _error(e)

    def set(self):
        """ks_event_set: wakes every waiter, in every process."""
        self._op(_ev_set)

    def clear(self):
        self._op(_ev_clear)


class SegmentError(OSError):
    """A segment that is not what it should be: errno EBADMSG (not a
    course segment, inconsistent header), EPROTO (another version or
    another ABI of ksync), EINVAL (objects not made with KS_SHARED)."""


# examples/course.h: the header the C writer publishes.
_HDR = struct.Struct("=8sII8sQIIIIIIIII")
_HDR_FIELDS = ("magic", "version", "hdr_size", "ready", "total_size", "items_off", "space_off", "done_off",
               "ring_off", "slots", "slot_size", "sem_size", "event_size", "writer_pid")
MAGIC = b"KSCOURSE"
VERSION = 1
_READY_OFF = 16


class Segment(SharedMemory):
    """The course's segment (examples/course.h): a header that says where
    the objects are, items (ks_sem_t: records to read), space (ks_sem_t:
    free slots), done (ks_event_t: set by the reader when it has finished),
    ready (ks_event_t, set by the writer last), and a ring of slots."""

    _what = "segment"

    @classmethod
    def open(cls, name, timeout=5.0):
        """Open the segment name, waiting up to timeout seconds for a writer
        to create and publish it.  FileNotFoundError: nobody created it in
        time; TimeoutError: created but never published; SegmentError: not
        a course segment, or one this module cannot use."""
        end = time.monotonic() + timeout
        while True:
            seg = None
            try:
                seg = cls(name)
                if seg._published():
                    return seg
                seg.close()
                if time.monotonic() >= end:
                    raise TimeoutError(errno.ETIMEDOUT, "the writer did not publish the segment within %g s"
                                       % timeout, name)
            except (FileNotFoundError, BlockingIOError):
                if seg is not None:
                    seg.close()
                if time.monotonic() >= end:
                    raise
            except BaseException:
                if seg is not None:
                    seg.close()
                raise
            time.sleep(0.01)

    def _published(self):
        # (a size of 0, created but not sized yet, was EAGAIN in __init__)
        magic = self.read(0, min(8, self.size))
        if magic != MAGIC and magic != bytes(len(magic)):
            raise SegmentError(errno.EBADMSG, "not a ksync course segment (magic %r, expected %r)"
                               % (magic, MAGIC), self.name)
        if self.size < _HDR.size:
            raise SegmentError(errno.EBADMSG, "truncated: %d bytes, a header alone is %d"
                               % (self.size, _HDR.size), self.name)
        if magic != MAGIC:
            return False  # sized, not written yet
        # The writer sets ready after everything else; the library's acquire
        # load in this look orders our reads of the header after it.
        if _ev_wait(self.address + _READY_OFF, 0) != 0:
            return False
        self._parse()
        return True

    def _parse(self):
        h = dict(zip(_HDR_FIELDS, _HDR.unpack(self.read(0, _HDR.size))))
        name = self.name

        def bad(why, e=errno.EBADMSG):
            raise SegmentError(e, why, name)

        if h["version"] != VERSION:
            bad("version %d, this module reads version %d" % (h["version"], VERSION), errno.EPROTO)
        if h["sem_size"] != SEM_SIZE or h["event_size"] != EVENT_SIZE:
            bad("the writer's ks_sem_t/ks_event_t are %d/%d bytes, this module's %d/%d"
                % (h["sem_size"], h["event_size"], SEM_SIZE, EVENT_SIZE), errno.EPROTO)
        if h["hdr_size"] < _HDR.size or h["total_size"] != self.size:
            bad("header says %d bytes of header in %d, the segment has %d"
                % (h["hdr_size"], h["total_size"], self.size))
        if h["slots"] == 0 or h["slot_size"] < 24 or h["slot_size"] % 8:
            bad("%d slots of %d bytes" % (h["slots"], h["slot_size"]))
        if h["ring_off"] < h["hdr_size"] or h["ring_off"] + h["slots"] * h["slot_size"] > self.size:
            bad("the ring (%d slots of %d at %d) does not fit" % (h["slots"], h["slot_size"], h["ring_off"]))
        for k, size in (("items_off", SEM_SIZE), ("space_off", SEM_SIZE), ("done_off", EVENT_SIZE)):
            if h[k] < h["hdr_size"] or h[k] + size > h["ring_off"]:
                bad("%s %d is outside the room between header and ring" % (k, h[k]))
        self.header = h
        try:
            self.items = self.sem(h["items_off"])
            self.space = self.sem(h["space_off"])
            self.done = self.event(h["done_off"])
            self.ready = self.event(_READY_OFF)
        except ValueError as e:  # misaligned
            bad(str(e))
        self.slots = h["slots"]
        self.slot_size = h["slot_size"]

    def slot(self, i):
        """The bytes of slot i (0 <= i < slots)."""
        if not 0 <= i < self.slots:
            raise IndexError("slot %d of %d" % (i, self.slots))
        return self.read(self.header["ring_off"] + i * self.slot_size, self.slot_size)

#!/usr/bin/env python3
"""The Python reader of the course's writer/reader pair.

    python3 python/reader.py shm NAME [--timeout S]
    python3 python/reader.py channel NAME [--timeout S]

shm: opens the segment NAME that examples/shm_writer.c made (waiting up to
--timeout seconds for it), takes each record as the writer posts it
(ks_sem_wait on "items"), gives its slot back (ks_sem_post on "space"), and
after the end record sets "done" (ks_event_set), which lets the writer
unlink the segment and exit.

channel: opens the ks_channel NAME, unlinks the name (this reader is the
only one that needed it) and receives records until BrokenPipeError: the
writer closed its end and every record it sent has been read.

Each record's CRC-32 and sequence number are checked.  Prints
"count=N checksum=XXXXXXXX" (the payloads' CRC-32 chained in order, as the
writer prints it) and exits 0; exit 1: a bad record; exit 2: no writer,
a bad segment, a timeout.
"""

import argparse
import os
import struct
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ksync  # noqa: E402

REC = struct.Struct("=QIIII")  # struct ksc_rec of examples/course.h
END = 1


class BadRecord(Exception):
    pass


def check(rec, count, room):
    seq, n, crc, flags, _ = REC.unpack_from(rec)
    if flags & END:
        return None, seq, crc
    if seq != count:
        raise BadRecord("record %d arrived as number %d" % (seq, count))
    if n > room:
        raise BadRecord("record %d says %d bytes, there is room for %d" % (seq, n, room))
    payload = rec[REC.size:REC.size + n]
    if len(payload) != n or zlib.crc32(payload) != crc:
        raise BadRecord("record %d: checksum mismatch" % seq)
    return payload, seq, crc


def read_shm(name, timeout):
    count = total = 0
    with ksync.Segment.open(name, timeout) as seg:
        room = seg.slot_size - REC.size
        i = 0
        while True:
            seg.items.wait(timeout)          # a record to read
            rec = seg.slot(i)                # copied out of the slot...
            i = (i + 1) % seg.slots
            seg.space.post()                 # ...before the slot is given back
            payload, seq, crc = check(rec, count, room)
            if payload is None:
                if seq != count or crc != total:
                    raise BadRecord("end record says %d records, checksum %08x" % (seq, crc))
                break
            total = zlib.crc32(payload, total)
            count += 1
        seg.done.set()                       # the writer may unlink and go
    return count, total


def open_channel(name, timeout):
    end = time.monotonic() + timeout
    while True:
        try:
            return ksync.Channel.open(name, ksync.RECV)
        except (FileNotFoundError, BlockingIOError):  # not there yet / not initialised yet
            if time.monotonic() >= end:
                raise
            time.sleep(0.01)


def read_channel(name, timeout):
    count = total = 0
    with open_channel(name, timeout) as ch:
        ksync.Channel.unlink(name)
        room = ch.max_msg - REC.size
        while True:
            try:
                msg = ch.recv(timeout)
            except BrokenPipeError:          # the writer closed: nothing more will come
                break
            payload, _, _ = check(msg, count, room)
            if payload is None:
                raise BadRecord("an end record in channel mode")
            total = zlib.crc32(payload, total)
            count += 1
    return count, total


def main(argv=None):
    ap = argparse.ArgumentParser(description="the Python reader of the course's writer/reader pair")
    ap.add_argument("mode", choices=("shm", "channel"))
    ap.add_argument("name", help="the shm name the writer uses, e.g. /course")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds to wait for the writer, and for each record (default 30)")
    a = ap.parse_args(argv)
    try:
        if a.mode == "shm":
            count, total = read_shm(a.name, a.timeout)
        else:
            count, total = read_channel(a.name, a.timeout)
    except BadRecord as e:
        print("reader: bad record: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:
        print("reader: %s" % e, file=sys.stderr)
        return 2
    print("count=%d checksum=%08x" % (count, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())

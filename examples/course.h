/* examples/course.h - the course's writer/reader pair (issue 14, scenario
 * S20 of the course): the layout of the shared segment that
 * examples/shm_writer.c makes and python/reader.py reads, the record both
 * modes carry, and the checksum.  Shared by the writer and by
 * tests/test_python.c; python/ksync.py reads the same layout (docs/python.md,
 * "The segment").
 *
 * A segment starts with a header that publishes where everything else is,
 * so that a reader in another language need not hard-code the size or the
 * alignment of ks_sem_t and ks_event_t:
 *
 *   offset  field
 *   0       magic "KSCOURSE"        stored last by the writer (release)
 *   8       version (1), hdr_size   u32, u32
 *   16      ready   ks_event_t      set once everything below is in place;
 *                                   at a fixed offset, the one thing a reader
 *                                   looks at before it trusts the rest
 *   24      total_size              u64: the segment's size in bytes
 *   32      items_off, space_off    u32: two ks_sem_t, records to read and
 *                                   free slots
 *   40      done_off                u32: ks_event_t, set by the reader once
 *                                   it has read the last record
 *   44      ring_off, slots,        u32 x 3: the ring of fixed-size slots
 *           slot_size
 *   56      sem_size, event_size    u32: sizeof(ks_sem_t), sizeof(ks_event_t)
 *                                   as the writer was compiled
 *   64      writer_pid              u32, for people reading the segment
 *
 * Each slot holds one record: a struct ksc_rec then len bytes of payload.
 * The last record has KSC_END in flags, seq = the number of records before
 * it and crc = their checksum.  Over a ks_channel each message is one
 * record and the end is the writer's close (EPIPE at the reader).
 *
 * The checksum is CRC-32 (IEEE 802.3, the one of zlib.crc32), chained over
 * the payloads in order, so the reader's total shows order as well as
 * content.
 */
#ifndef KSYNC_EXAMPLES_COURSE_H
#define KSYNC_EXAMPLES_COURSE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <ksync.h>

#define KSC_MAGIC "KSCOURSE"
#define KSC_VERSION 1u
#define KSC_END 1u

/* examples/shm_writer.c's sizes (tests/test_python.c computes what the
 * reader must print from them) */
#define KSC_SLOT 256u             /* slot size of the shm ring */
#define KSC_CHAN_MAX 12288u       /* largest message over the channel */
#define KSC_CHAN_RING (64u << 10) /* the channel's ring */

struct ksc_hdr {
    char magic[8];
    uint32_t version, hdr_size;
    ks_event_t ready;
    uint64_t total_size;
    uint32_t items_off, space_off, done_off;
    uint32_t ring_off, slots, slot_size;
    uint32_t sem_size, event_size;
    uint32_t writer_pid;
    uint32_t reserved[15];
};

_Static_assert(offsetof(struct ksc_hdr, ready) == 16 && offsetof(struct ksc_hdr, total_size) == 24 &&
                   offsetof(struct ksc_hdr, items_off) == 32 && offsetof(struct ksc_hdr, ring_off) == 44 &&
                   offsetof(struct ksc_hdr, sem_size) == 56 && offsetof(struct ksc_hdr, writer_pid) == 64 &&
                   sizeof(struct ksc_hdr) == 128,
               "the layout python/ksync.py reads");

struct ksc_rec {
    uint64_t seq;
    uint32_t len;   /* payload bytes after the record header */
    uint32_t crc;   /* CRC-32 of the payload (of all payloads for KSC_END) */
    uint32_t flags; /* KSC_END on the last record */
    uint32_t reserved;
};
_Static_assert(sizeof(struct ksc_rec) == 24, "record header");

/* Where the objects go: each on a line of its own after the header. */
#define KSC_ITEMS_OFF 128u
#define KSC_SPACE_OFF 256u
#define KSC_DONE_OFF 384u
#define KSC_RING_OFF 512u

static inline size_t ksc_segment_size(uint32_t slots, uint32_t slot_size)
{
    return KSC_RING_OFF + (size_t)slots * slot_size;
}

/* Lay out a segment of ksc_segment_size(slots, slot_size) zeroed bytes: the
 * header, items = 0, space = slots, done clear, all with `flags` (KS_SHARED
 * for two processes; tests/test_python.c passes 0 to make the mistake a
 * reader must refuse).  The magic is stored last (release) and ready is set
 * after it: a reader that sees ready set (acquire, in the library) sees
 * all of it. */
static inline int ksc_init(void *seg, uint32_t slots, uint32_t slot_size, unsigned flags, uint32_t pid)
{
    struct ksc_hdr *h = (struct ksc_hdr *)seg;
    unsigned char *base = (unsigned char *)seg;
    int e;
    if ((e = ks_event_init(&h->ready, flags)) != 0 ||
        (e = ks_sem_init((ks_sem_t *)(void *)(base + KSC_ITEMS_OFF), 0, flags)) != 0 ||
        (e = ks_sem_init((ks_sem_t *)(void *)(base + KSC_SPACE_OFF), slots, flags)) != 0 ||
        (e = ks_event_init((ks_event_t *)(void *)(base + KSC_DONE_OFF), flags)) != 0)
        return e;
    h->version = KSC_VERSION;
    h->hdr_size = sizeof *h;
    h->total_size = ksc_segment_size(slots, slot_size);
    h->items_off = KSC_ITEMS_OFF;
    h->space_off = KSC_SPACE_OFF;
    h->done_off = KSC_DONE_OFF;
    h->ring_off = KSC_RING_OFF;
    h->slots = slots;
    h->slot_size = slot_size;
    h->sem_size = sizeof(ks_sem_t);
    h->event_size = sizeof(ks_event_t);
    h->writer_pid = pid;
    uint64_t m;
    memcpy(&m, KSC_MAGIC, 8);
    /* release: a reader that reads the magic with acquire sees the fields;
     * python/ksync.py instead waits for ready, whose acquire is the library's */
    __atomic_store_n((uint64_t *)(void *)h->magic, m, __ATOMIC_RELEASE);
    return ks_event_set(&h->ready);
}

/* CRC-32 of n bytes, continuing crc (0 to start): zlib.crc32(data, crc).
 * A byte at a time through a table (built on first use, by one thread). */
static inline uint32_t ksc_crc32(uint32_t crc, const void *p, size_t n)
{
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
            table[i] = c;
        }
    const unsigned char *b = (const unsigned char *)p;
    crc = ~crc;
    while (n--)
        crc = (crc >> 8) ^ table[(crc ^ *b++) & 0xffu];
    return ~crc;
}

/* The payload of record seq, at most max bytes: its length varies with seq
 * (0 included), its bytes with seq and position.  Returns the length. */
static inline uint32_t ksc_payload(uint64_t seq, unsigned char *buf, uint32_t max)
{
    uint64_t x = (seq + 1) * 0x9e3779b97f4a7c15ull;
    uint32_t len = (uint32_t)((x >> 33) % ((uint64_t)max + 1));
    for (uint32_t j = 0; j < len; j++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[j] = (unsigned char)(x >> 24);
    }
    return len;
}

/* The count and checksum a reader must print for n records of at most max
 * payload bytes each. */
static inline uint32_t ksc_expected_crc(uint64_t n, uint32_t max, unsigned char *scratch)
{
    uint32_t crc = 0;
    for (uint64_t s = 0; s < n; s++)
        crc = ksc_crc32(crc, scratch, ksc_payload(s, scratch, max));
    return crc;
}

#endif

/* ksync/mpmc.h - bounded lock-free multi-producer multi-consumer ring of
 * pointer-sized items.  Algorithm, progress guarantee and proof sketch:
 * docs/mpmc.md.
 *
 *   ks_mpmc_t *q;
 *   ks_mpmc_create(&q, 1000);               exactly 1000 items fit
 *   ks_mpmc_try_push(q, p);                  0, or EAGAIN when full
 *   ks_mpmc_try_pop(q, &p);                  0, or EAGAIN when empty
 *   ks_mpmc_destroy(q);
 *
 * The algorithm is Dmitry Vyukov's bounded MPMC queue (per-cell sequence
 * numbers, one compare-and-swap per operation), with two changes: the
 * sequence counts in half-steps (2t free for ticket t, 2t+1 holding ticket
 * t's item), which makes a capacity of 1 work and lets the capacity be any
 * number, not only a power of two; and a failed operation says why.
 *
 * Capacity: exactly what was asked, 1 .. KS_MPMC_CAPACITY_MAX.  A power of
 * two indexes with a mask, any other number with a division (about 20-40
 * cycles more per operation: prefer powers of two on hot paths).
 *
 * Items are any uintptr_t-sized value, NULL included; the ring never reads
 * through them.  An item pushed is popped exactly once; items pushed by one
 * thread are popped in the order that thread pushed them.
 *
 * Return values (errno codes):
 *   create   0, EINVAL (NULL out pointer, capacity 0 or above the maximum),
 *            ENOMEM (nothing allocated)
 *   init     0, EINVAL (NULL, capacity out of range, memory not aligned to
 *            KS_MPMC_ALIGN)
 *   try_push 0; EAGAIN: full; EBUSY: not full, but the slot this push needs
 *            is still being read by a consumer that has claimed it (it was
 *            preempted mid-pop): try again; EINVAL
 *   try_pop  0; EAGAIN: empty; EBUSY: not empty, but the oldest item's
 *            producer has claimed its slot and not finished writing it (it
 *            was preempted mid-push): try again; EINVAL
 *   destroy  0, EINVAL (NULL).  A ring from create is freed: no call may
 *            follow, a second destroy included (a use after free).  A ring
 *            from init is not freed and destroy changes nothing in it.
 * EBUSY is the honest statement of the progress guarantee: one operation
 * never waits for another, but a thread stopped inside an operation hides
 * one slot from the others until it runs again (docs/mpmc.md, "Progress").
 *
 * Memory order: a push is a release and the pop that takes its item an
 * acquire: what the producer wrote before pushing is visible to the consumer.
 *
 * Shared memory: ks_mpmc_bytes(capacity) bytes at a KS_MPMC_ALIGN-aligned
 * address, set up with ks_mpmc_init(), hold everything (no pointers inside),
 * so a ring may sit in memory mapped by several processes at different
 * addresses.
 */
#ifndef KSYNC_MPMC_H
#define KSYNC_MPMC_H

#include <ksync/arch.h>
#include <ksync/common.h>
#include <stddef.h>

#define KS_MPMC_ALIGN KS_CACHELINE /* producer and consumer counters each own a line (pair) */
#define KS_MPMC_CAPACITY_MAX (1ull << 40)
/* bit 63 of the tail ticket: no more pushes (used by ks_queue_close) */
#define KS_MPMC_CLOSED (1ull << 63)

/* One slot.  seq == 2t: free for the push holding ticket t; seq == 2t+1:
 * holds that push's item, for the pop holding ticket t. */
typedef struct ks_mpmc_cell {
    uint64_t seq __attribute__((aligned(8))); /* 8 even where uint64_t aligns to 4 (i386) */
    uintptr_t item;
} ks_mpmc_cell_t;

typedef struct ks_mpmc {
    /* constants, read by everybody */
    uint64_t cap;
    uint64_t mask;  /* cap - 1 when cap is a power of two */
    uint32_t pow2;  /* cap is a power of two */
    uint32_t owned; /* allocated by ks_mpmc_create: destroy frees it */
    /* next push ticket (bits 0-62) and KS_MPMC_CLOSED; written by producers */
    uint64_t tail __attribute__((aligned(KS_MPMC_ALIGN)));
    /* next pop ticket; written by consumers */
    uint64_t head __attribute__((aligned(KS_MPMC_ALIGN)));
    /* cap cells follow the struct, at (ks_mpmc_cell_t *)(q + 1) */
} __attribute__((aligned(KS_MPMC_ALIGN))) ks_mpmc_t;

KS_EXTERN_C_BEGIN

/* Bytes needed for a ring of `capacity` items, or 0 if capacity is invalid. */
KS_API size_t ks_mpmc_bytes(size_t capacity);
KS_API int ks_mpmc_init(ks_mpmc_t *q, size_t capacity);
KS_API int ks_mpmc_create(ks_mpmc_t **qp, size_t capacity);
KS_API int ks_mpmc_destroy(ks_mpmc_t *q);

static inline size_t ks_mpmc_capacity(const ks_mpmc_t *q)
{
    return q ? (size_t)q->cap : 0;
}

/* Items in the ring right now, counting pushes and pops in progress: a
 * snapshot for statistics, stale as soon as it is returned. */
static inline size_t ks_mpmc_size(const ks_mpmc_t *q)
{
    if (!q)
        return 0;
    /* relaxed: a statistic; head first so that the difference is not
     * negative unless a pop is in flight between the two loads. */
    uint64_t h = __atomic_load_n(&q->head, __ATOMIC_RELAXED);
    uint64_t t = __atomic_load_n(&q->tail, __ATOMIC_RELAXED) & ~KS_MPMC_CLOSED;
    return t > h ? (size_t)(t - h > q->cap ? q->cap : t - h) : 0;
}

/* A pause between looks at a slot whose owner is mid-operation. */
static inline void ks_mpmc_relax_(void) { ks_cpu_relax(); }

/* Looks at a slot claimed by a thread that has not finished with it before
 * reporting EBUSY: a running owner finishes within a few of them. */
#define KS_MPMC_BUSY_LOOKS 16

/* Look at a claimed cell until its sequence number reaches `want` (return
 * 0: try again), passes it (0 too: the caller's ticket is stale and the retry
 * reloads it), or KS_MPMC_BUSY_LOOKS looks are spent (EBUSY).  Relaxed: the
 * value only decides whether to retry; the caller's acquire load at the top
 * of its loop is the one that orders the data. */
static inline int ks_mpmc_busy_looks_(const uint64_t *seq, uint64_t want)
{
    for (int i = 0; i < KS_MPMC_BUSY_LOOKS; i++) {
        ks_mpmc_relax_();
        if ((int64_t)(__atomic_load_n(seq, __ATOMIC_RELAXED) - want) >= 0)
            return 0;
    }
    return EBUSY;
}

static inline ks_mpmc_cell_t *ks_mpmc_cell_(ks_mpmc_t *q, uint64_t ticket)
{
    uint64_t i = KS_LIKELY(q->pow2) ? (ticket & q->mask) : (ticket % q->cap);
    return (ks_mpmc_cell_t *)(q + 1) + i;
}

/* Push `item`: 0, EAGAIN (full), EBUSY (see above), EPIPE (closed: only
 * for the ring inside a ks_queue). */
static inline int ks_mpmc_push_(ks_mpmc_t *q, uintptr_t item)
{
    /* relaxed: seeds the CAS loop; the ticket itself orders nothing. */
    uint64_t t = __atomic_load_n(&q->tail, __ATOMIC_RELAXED);
    for (;;) {
        if (KS_UNLIKELY(t & KS_MPMC_CLOSED))
            return EPIPE;
        ks_mpmc_cell_t *c = ks_mpmc_cell_(q, t);
        /* acquire: pairs with the release store of the pop that emptied
         * this cell, so its read of the old item happens before our write. */
        uint64_t s = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
        int64_t d = (int64_t)(s - 2 * t);
        if (d == 0) {
            /* relaxed: the CAS only hands out ticket t; the cell's sequence
             * number carries the ordering. */
            if (__atomic_compare_exchange_n(&q->tail, &t, t + 1, 1, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED)) {
                c->item = item;
                /* release: pairs with the acquire load in ks_mpmc_pop_; the
                 * item (and all the producer wrote before) is visible to
                 * the consumer that sees 2t+1. */
                __atomic_store_n(&c->seq, 2 * t + 1, __ATOMIC_RELEASE);
                return 0;
            }
        } else if (d < 0) {
            /* When we read seq the cell still held ticket t - cap's item, so
             * the tail was still t then (a push of t needs seq == 2t, and seq
             * only grows).  Full if that item had not been claimed by a pop,
             * else a pop is mid-way; a head past t means we were preempted
             * and t is stale. */
            uint64_t h = __atomic_load_n(&q->head, __ATOMIC_RELAXED); /* relaxed: a verdict */
            if ((int64_t)(t - h) < 0) {
                t = __atomic_load_n(&q->tail, __ATOMIC_RELAXED); /* relaxed: re-seeds */
                continue;
            }
            if (t - h >= q->cap)
                return EAGAIN;
            /* a pop is mid-way through the slot: give it a few looks */
            if (ks_mpmc_busy_looks_(&c->seq, 2 * t) != 0)
                return EBUSY;
        } else {
            /* another producer took ticket t: relaxed, re-seeds the loop */
            t = __atomic_load_n(&q->tail, __ATOMIC_RELAXED);
        }
    }
}

/* Pop into *item: 0, EAGAIN (empty), EBUSY (see above), EPIPE (empty and
 * closed: only for the ring inside a ks_queue). */
static inline int ks_mpmc_pop_(ks_mpmc_t *q, uintptr_t *item)
{
    uint64_t h = __atomic_load_n(&q->head, __ATOMIC_RELAXED); /* relaxed: seeds the CAS loop */
    for (;;) {
        ks_mpmc_cell_t *c = ks_mpmc_cell_(q, h);
        /* acquire: pairs with the release store in ks_mpmc_push_. */
        uint64_t s = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
        int64_t d = (int64_t)(s - (2 * h + 1));
        if (d == 0) {
            /* relaxed: hands out ticket h; the sequence numbers order the data. */
            if (__atomic_compare_exchange_n(&q->head, &h, h + 1, 1, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED)) {
                *item = c->item;
                /* release: pairs with the acquire load in ks_mpmc_push_ of
                 * ticket h + cap; our read of the item happens before its
                 * write. */
                __atomic_store_n(&c->seq, 2 * (h + q->cap), __ATOMIC_RELEASE);
                return 0;
            }
        } else if (d < 0) {
            /* Ticket h's item was not there when we read seq, so the head
             * was still h then (a pop of h needs seq == 2h+1).  Empty if no
             * push holds ticket h: tail == h also means head == h now. */
            uint64_t t = __atomic_load_n(&q->tail, __ATOMIC_RELAXED); /* relaxed: a verdict */
            if ((t & ~KS_MPMC_CLOSED) == h)
                return (t & KS_MPMC_CLOSED) ? EPIPE : EAGAIN;
            /* a push is mid-way through the slot: give it a few looks */
            if (ks_mpmc_busy_looks_(&c->seq, 2 * h + 1) != 0)
                return EBUSY;
        } else {
            h = __atomic_load_n(&q->head, __ATOMIC_RELAXED); /* relaxed: re-seeds the loop */
        }
    }
}

static inline int ks_mpmc_try_push(ks_mpmc_t *q, void *item)
{
    if (KS_UNLIKELY(!q))
        return EINVAL;
    return ks_mpmc_push_(q, (uintptr_t)item);
}

static inline int ks_mpmc_try_pop(ks_mpmc_t *q, void **item)
{
    if (KS_UNLIKELY(!q || !item))
        return EINVAL;
    uintptr_t v;
    int e = ks_mpmc_pop_(q, &v);
    if (e == 0)
        *item = (void *)v;
    return e;
}

KS_EXTERN_C_END

#endif

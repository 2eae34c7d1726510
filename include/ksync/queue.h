/* ksync/queue.h - blocking bounded MPMC queue with Python's queue.Queue
 * semantics (put/get, task_done/join) plus close().  Built on the ks_mpmc
 * ring; algorithm, wake-up protocol and proof: docs/queue.md.
 *
 *   ks_queue_t *q;
 *   ks_queue_create(&q, 5, 0);               maxsize 5 (exact)
 *   ks_queue_put(q, p);                       blocks while full
 *   ks_queue_get(q, &p);                      blocks while empty
 *   ks_queue_task_done(q);   ks_queue_join(q);
 *   ks_queue_close(q);                        no more puts; gets drain, then EPIPE
 *   ks_queue_destroy(q);
 *
 * Return values (errno codes):
 *   create        0, EINVAL (NULL, capacity 0 or > KS_MPMC_CAPACITY_MAX,
 *                 unknown flags), ENOMEM (nothing allocated)
 *   init          as create, for caller memory of ks_queue_bytes(capacity)
 *                 bytes aligned to KS_MPMC_ALIGN (shared memory: KS_SHARED;
 *                 EINVAL also for misaligned memory; a refused init writes
 *                 nothing)
 *   put           0; EPIPE: the queue is closed (the item was not queued); EINVAL
 *   timedput      0, EPIPE, ETIMEDOUT (still full at the deadline: not queued),
 *                 EINVAL (also for a negative deadline)
 *   tryput        0, EAGAIN (full), EPIPE, EINVAL
 *   get           0; EPIPE: closed and empty; EINVAL
 *   timedget      0, EPIPE, ETIMEDOUT (still empty at the deadline), EINVAL
 *   tryget        0, EAGAIN (empty), EPIPE, EINVAL
 *   task_done     0; EINVAL: called more often than items were put (nothing
 *                 changes, as Python's ValueError)
 *   join          0 once every item put has had its task_done
 *   timedjoin     0, ETIMEDOUT, EINVAL; ks_queue_unfinished() then tells how
 *                 many task_done calls are missing
 *   close         0 (closing twice is harmless), EINVAL
 *   destroy       0, EBUSY (a thread is asleep in the queue: nothing freed),
 *                 EINVAL.  Threads that were woken (by close(), say) and are
 *                 still on their way out are waited for (KS_SHARED: up to
 *                 100 ms, as a process killed on its way out never leaves);
 *                 threads still calling put/get/join otherwise are the
 *                 caller's to stop.  EBUSY can be transient (a waker still
 *                 finishing its wake-up): retry a bounded number of times.
 *                 Destroy only once every put, get, task_done, join and
 *                 close call on the queue has returned (join the threads
 *                 that make them).  In particular, having got the last item
 *                 does not mean that the put which queued it has returned:
 *                 after its item is in the ring a put (and likewise a get,
 *                 after taking one) may still be waking a sleeper, and
 *                 writes the queue's wake-up words (`waking`, `skipped`,
 *                 `sleepers`) when the FUTEX_WAKE found nobody -- by then
 *                 the thread it meant to wake may have taken the item, and
 *                 a destroy there frees memory that put still writes.
 *                 Destroying twice, or any call after a destroy that
 *                 returned 0, is a use after free for a created queue.
 *
 * Process-shared queues (KS_SHARED) do not survive the death of a peer
 * process inside a call; what a death leaves behind, exactly:
 *   - killed between taking a put's ticket and publishing its cell: that
 *     cell stays "being written" for ever.  Every later get that reaches it
 *     answers EBUSY internally and waits (a blocking get sleeps until its
 *     deadline, for ever with none; tryget answers EAGAIN), close()
 *     included, and the items put after it are never returned.
 *   - killed between taking a get's ticket and releasing its cell: likewise
 *     the cell is never freed for the put one lap later.
 *   - killed while counted as a sleeper (in a blocking put, get or join):
 *     the count stays one too high: destroy answers EBUSY for ever, and
 *     every later put or get that could wake that side makes a FUTEX_WAKE
 *     that wakes nobody (a system call each).
 *   - killed on its way out of a wait: `users` stays up, destroy answers
 *     EBUSY after 100 ms.
 *   - killed after a put's item is in the ring and before its wake (or a
 *     get's cell freed and before its wake): the sleeper it meant to wake
 *     sleeps on (an untimed one for ever) until another put or get wakes
 *     that side.  The queue's sleeps are not cut into the one-second slices
 *     of the other KS_SHARED sleeps (docs/futex.md): its wakers count off
 *     the sleepers they wake, so a sleeper must not wake by itself.
 * None of this is detected or repaired; a peer death means the queue's
 * memory must be set up again (init) by a process that knows every peer is
 * gone (docs/shared.md).
 *
 * A stray FUTEX_WAKE on the queue's words (from an object that used this
 * memory before and was destroyed between its atomic and its wake, glibc
 * bug 13690's class) leaves one sleeper counted that is not there.  Nothing
 * hangs and destroy still succeeds, but until the count is right again
 * later puts and gets pay a FUTEX_WAKE that wakes nobody, and one put or get
 * may go round its wake-up loop (a FUTEX_WAKE and a sched_yield a round)
 * for as long as the others keep pushing or popping without a pause
 * (docs/queue.md, "the baton").
 *
 * A put that returns 0 has queued its item, which will be returned by
 * exactly one get even if close() follows: close() stops new puts at once,
 * wakes every blocked put (EPIPE) and get, and gets keep returning the items
 * left until the queue is empty, then EPIPE.  A put is a release and the get
 * that returns its item an acquire; a task_done is a release and the join it
 * completes an acquire.
 *
 * Blocked threads spin briefly, then sleep on a futex (an event count per
 * side); an operation that meets no sleeper costs one compare-and-swap, one
 * store and one full fence, and makes no system call.
 */
#ifndef KSYNC_QUEUE_H
#define KSYNC_QUEUE_H

#include <ksync/common.h>
#include <ksync/mpmc.h>
#include <ksync/time.h>

/* A waiting side: `seq` is the futex word, bumped by every wake-up;
 * `sleepers` counts threads committed to sleeping on it; `waking` is set
 * while a woken thread has not yet run (the baton: no second wake-up is
 * sent until it has looked at the ring); `skipped` records that a push or
 * pop sent no wake-up because the baton was out (docs/queue.md).  A
 * ks_wait_any caller watching the side (KS_ANY_GET, KS_ANY_PUT) adds
 * 1 << 20 to `sleepers`, so that the inline filter below calls the slow
 * path, and sleeps on `any_seq`, which that path bumps and wakes (all)
 * while a watcher is counted (docs/wait_any.md).  Adding `any_seq` moved
 * no field the inline functions read (the sides are cache-line aligned). */
typedef struct ks_queue_side {
    uint32_t seq;
    uint32_t sleepers;
    uint32_t waking;
    uint32_t skipped;
    uint32_t any_seq;
} ks_queue_side_t;

typedef struct ks_queue {
    ks_queue_side_t getters __attribute__((aligned(KS_CACHELINE))); /* wait for an item */
    ks_queue_side_t putters __attribute__((aligned(KS_CACHELINE))); /* wait for a free slot */
    uint64_t done __attribute__((aligned(KS_CACHELINE)));           /* task_done calls */
    ks_queue_side_t joiners;
    uint32_t users; /* threads in a slow path (destroy waits for them) */
    uint32_t flags; /* KS_SHARED or 0; constant */
    uint32_t owned; /* allocated by ks_queue_create */
    ks_mpmc_t ring; /* last: its cells follow the struct */
} ks_queue_t;

KS_EXTERN_C_BEGIN

KS_API size_t ks_queue_bytes(size_t capacity);
KS_API int ks_queue_init(ks_queue_t *q, size_t capacity, unsigned flags);
KS_API int ks_queue_create(ks_queue_t **qp, size_t capacity, unsigned flags);
KS_API int ks_queue_destroy(ks_queue_t *q);

KS_API int ks_queue_timedput(ks_queue_t *q, void *item, int64_t deadline);
KS_API int ks_queue_timedget(ks_queue_t *q, void **item, int64_t deadline);
KS_API int ks_queue_task_done(ks_queue_t *q);
KS_API int ks_queue_timedjoin(ks_queue_t *q, int64_t deadline);
KS_API int ks_queue_close(ks_queue_t *q);
/* Wake a sleeper of `side` if there is one, after a push or pop made an
 * item or a slot for it (the out-of-line half of the fast paths below). */
KS_API void ks_queue_wake_slow(ks_queue_t *q, ks_queue_side_t *side);

static inline size_t ks_queue_capacity(const ks_queue_t *q)
{
    return q ? ks_mpmc_capacity(&q->ring) : 0;
}

/* Items queued right now (a snapshot, as Python's qsize()). */
static inline size_t ks_queue_size(const ks_queue_t *q)
{
    return q ? ks_mpmc_size(&q->ring) : 0;
}

static inline int ks_queue_is_closed(const ks_queue_t *q)
{
    /* relaxed: a snapshot */
    return q ? !!(__atomic_load_n(&q->ring.tail, __ATOMIC_RELAXED) & KS_MPMC_CLOSED) : 0;
}

/* Items put and not yet task_done'd (a snapshot). */
static inline uint64_t ks_queue_unfinished(const ks_queue_t *q)
{
    if (!q)
        return 0;
    /* relaxed: a snapshot; done first, so puts racing in only raise it */
    uint64_t d = __atomic_load_n(&q->done, __ATOMIC_RELAXED);
    return (__atomic_load_n(&q->ring.tail, __ATOMIC_RELAXED) & ~KS_MPMC_CLOSED) - d;
}

/* After a successful push or pop: wake a sleeper of the other side if there
 * is one.  The fence orders our cell store before the load of `sleepers`;
 * it pairs with the fence a sleeper issues after announcing itself and
 * before re-checking the ring (a Dekker pair: one of the two sees the
 * other; docs/queue.md).  This is only the fast filter: ks_queue_wake_slow
 * holds the whole waker protocol (it repeats the fence and the check), and
 * the library's own slow paths call it directly. */
static inline void ks_queue_wake_(ks_queue_t *q, ks_queue_side_t *side)
{
    ks_fence_full(); /* the arch layer's; under TSan a shared RMW (ksync/arch.h) */
    /* relaxed: ordered by the fence above */
    if (KS_UNLIKELY(__atomic_load_n(&side->sleepers, __ATOMIC_RELAXED)))
        ks_queue_wake_slow(q, side);
}

static inline int ks_queue_tryput(ks_queue_t *q, void *item)
{
    if (KS_UNLIKELY(!q))
        return EINVAL;
    int e = ks_mpmc_push_(&q->ring, (uintptr_t)item);
    if (KS_LIKELY(e == 0))
        ks_queue_wake_(q, &q->getters);
    else if (e == EBUSY)
        if ((e = ks_queue_timedput(q, item, 0)) == ETIMEDOUT) /* a pop in flight: retry briefly */
            e = EAGAIN;
    return e;
}

static inline int ks_queue_put(ks_queue_t *q, void *item)
{
    if (KS_UNLIKELY(!q))
        return EINVAL;
    if (KS_LIKELY(ks_mpmc_push_(&q->ring, (uintptr_t)item) == 0)) {
        ks_queue_wake_(q, &q->getters);
        return 0;
    }
    return ks_queue_timedput(q, item, KS_FOREVER);
}

static inline int ks_queue_tryget(ks_queue_t *q, void **item)
{
    if (KS_UNLIKELY(!q || !item))
        return EINVAL;
    uintptr_t v;
    int e = ks_mpmc_pop_(&q->ring, &v);
    if (KS_LIKELY(e == 0)) {
        *item = (void *)v;
        ks_queue_wake_(q, &q->putters);
    } else if (e == EBUSY) {
        if ((e = ks_queue_timedget(q, item, 0)) == ETIMEDOUT) /* a push in flight: retry briefly */
            e = EAGAIN;
    }
    return e;
}

static inline int ks_queue_get(ks_queue_t *q, void **item)
{
    if (KS_UNLIKELY(!q || !item))
        return EINVAL;
    uintptr_t v;
    if (KS_LIKELY(ks_mpmc_pop_(&q->ring, &v) == 0)) {
        *item = (void *)v;
        ks_queue_wake_(q, &q->putters);
        return 0;
    }
    return ks_queue_timedget(q, item, KS_FOREVER);
}

static inline int ks_queue_join(ks_queue_t *q)
{
    return ks_queue_timedjoin(q, KS_FOREVER);
}

KS_EXTERN_C_END

#endif

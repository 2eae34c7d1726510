/* src/queue.c - blocking bounded MPMC queue (Python's queue.Queue plus
 * close) on the ks_mpmc ring.  Docs: docs/queue.md.
 *
 * The ring does the data transfer; this file only decides when a thread
 * sleeps and who wakes it.  Each waiting side (getters, putters, joiners)
 * is an event count: a 32-bit sequence `seq` (the futex word) and a count
 * of committed sleepers.
 *
 *   sleeper                                  waker (after changing the ring)
 *   sleepers++                               (push/pop/task_done/close)
 *   fence(seq_cst)              <- Dekker ->  fence(seq_cst)
 *   e = seq (acquire)                        if (sleepers) {
 *   re-check the ring; if it can go: leave       seq++ (release)
 *   futex_wait(&seq, e, deadline)                futex_wake(&seq, n)
 *   sleepers--                               }
 *
 * Why no wake-up is lost: if the waker's load of `sleepers` misses the
 * increment, the two fences make the sleeper's re-check see the waker's
 * change.  If it sees a sleeper it bumps `seq`; a sleeper that read `seq`
 * before the bump fails its FUTEX_WAIT (EAGAIN) or is woken, and one that
 * read it after the bump (acquire, pairing with the release increment) also
 * sees the change made before the bump.
 *
 * Accounting: the waker takes the threads its FUTEX_WAKE woke off
 * `sleepers` (side_sleep explains who decrements when).
 *
 * Wakes: a push wakes one getter, a pop one putter (each frees exactly one
 * item or slot; a woken thread whose item was taken by a spinning thread
 * goes back to sleep, and the item went to someone, so nothing is owed),
 * with at most one wake-up in flight per side: the baton (`waking`,
 * `skipped`; ks_queue_wake_slow and baton_pass below, docs/queue.md).  close()
 * and the task_done that finishes the last task wake all.
 *
 * Closing sets KS_MPMC_CLOSED in the ring's tail ticket: a push's CAS on the
 * tail fails from then on (EPIPE), a push that took its ticket before still
 * completes, and a pop reports EPIPE only when its ticket equals the frozen
 * tail, i.e. after every item pushed has been popped.
 *
 * task_done/join: the number of puts is the tail ticket, so only task_done
 * needs a counter (`done`); unfinished = tail - done.
 */
#include "internal.h"

#include <ksync/queue.h>

#include <sched.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(ks_queue_t) == offsetof(ks_queue_t, ring) + sizeof(ks_mpmc_t),
               "the ring's cells must follow ks_queue_t directly");

/* A ks_wait_any watcher's weight in a side's `sleepers` (the low 20 bits
 * count sleeping threads, the high 12 watchers); see ks_queue_any_arm. */
#define WATCHER (1u << 20)
#define SLEEPERS(s) ((s) & (WATCHER - 1))
#define WATCHERS_MAX ((1u << 12) - 1)

size_t ks_queue_bytes(size_t capacity)
{
    size_t rb = ks_mpmc_bytes(capacity);
    return rb ? offsetof(ks_queue_t, ring) + rb : 0;
}

void ks_queue_setup(ks_queue_t *q, size_t capacity, unsigned flags, int owned)
{
    memset(q, 0, offsetof(ks_queue_t, ring));
    q->flags = flags;
    q->owned = (uint32_t)owned;
    ks_mpmc_setup(&q->ring, capacity, 0);
}

int ks_queue_init(ks_queue_t *q, size_t capacity, unsigned flags)
{
    if (!q || ((uintptr_t)q & (KS_MPMC_ALIGN - 1)) || !ks_queue_bytes(capacity) ||
        (flags & ~KS_FLAGS_VALID))
        return EINVAL;
    ks_queue_setup(q, capacity, flags, 0);
    return 0;
}

int ks_queue_create(ks_queue_t **qp, size_t capacity, unsigned flags)
{
    size_t bytes = ks_queue_bytes(capacity);
    if (!qp || !bytes || (flags & ~KS_FLAGS_VALID))
        return EINVAL;
    ks_queue_t *q = ks_alloc_lines(bytes);
    if (!q)
        return ENOMEM;
    ks_queue_setup(q, capacity, flags, 1);
    *qp = q;
    return 0;
}

int ks_queue_destroy(ks_queue_t *q)
{
    if (!q)
        return EINVAL;
    int64_t give_up = (q->flags & KS_SHARED) ? ks_deadline_after(100 * 1000000LL) : KS_FOREVER;
    for (;;) {
        /* ks_wait_any watchers are not users: their weight in `sleepers`
         * is their presence.  acquire: pairs with the release decrement
         * that ends a watch (ks_queue_any_disarm), the watcher's last
         * access.  On an open queue a watcher is asleep (a caller bug we
         * report); once closed, every watcher was woken or finds the queue
         * ready at its next arm, so wait for them as for users. */
        uint32_t watched = (__atomic_load_n(&q->getters.sleepers, __ATOMIC_ACQUIRE) |
                            __atomic_load_n(&q->putters.sleepers, __ATOMIC_ACQUIRE)) &
                           ~(WATCHER - 1);
        if (watched && !ks_queue_is_closed(q))
            return EBUSY;
        /* acquire: pairs with the release decrement that is a woken
         * thread's last access to the queue (wait_op, timedjoin).  Every
         * sleeper is inside users_enter/users_leave, so with no user the
         * sleeper counts can only be a phantom: a getter woken by a stray
         * FUTEX_WAKE (an object that used this memory before, docs/pitfalls.md
         * item 2) takes the 0 for a waker's and stays counted.  Destroy
         * used to answer EBUSY for good then. */
        if (!watched && !__atomic_load_n(&q->users, __ATOMIC_ACQUIRE))
            break;
        /* A thread still asleep here is a caller bug we report.  (Briefly
         * also a waker between its FUTEX_WAKE and taking the woken thread
         * off the count: EBUSY can be transient.)  relaxed: a count whose
         * owners' last accesses the users count above orders. */
        if (SLEEPERS(__atomic_load_n(&q->getters.sleepers, __ATOMIC_RELAXED)) ||
            SLEEPERS(__atomic_load_n(&q->putters.sleepers, __ATOMIC_RELAXED)) ||
            __atomic_load_n(&q->joiners.sleepers, __ATOMIC_RELAXED))
            return EBUSY;
        /* acquire: pairs with the release decrement that is a woken
         * thread's last access to the queue (wait_op, timedjoin); threads
         * woken but not yet scheduled are still inside (docs/pitfalls.md item 20).  In
         * shared memory a process killed on its way out would keep `users`
         * (or a watcher's weight) up for ever: give up after 100 ms there. */
        if (!watched && !__atomic_load_n(&q->users, __ATOMIC_ACQUIRE))
            break;
        if (give_up != KS_FOREVER && ks_now() >= give_up)
            return EBUSY;
        sched_yield();
    }
    if (q->owned)
        free(q);
    return 0;
}

static void users_enter(ks_queue_t *q)
{
    __atomic_fetch_add(&q->users, 1, __ATOMIC_RELAXED); /* relaxed: see users_leave */
}

/* The last access of a slow path to the queue. */
static void users_leave(ks_queue_t *q)
{
    /* release: pairs with the acquire load in ks_queue_destroy */
    __atomic_fetch_sub(&q->users, 1, __ATOMIC_RELEASE);
}

/* Bump the count and wake up to n sleepers; the waker counts off the
 * sleepers the kernel woke, so that a thread woken but not yet running
 * (common when threads outnumber CPUs) is not counted as asleep.
 * Returns how many were woken. */
static int wake(ks_queue_side_t *side, int n, unsigned flags)
{
    /* release: pairs with the acquire load of seq in side_enter, so a
     * sleeper that reads the new value also sees the change we made. */
    __atomic_fetch_add(&side->seq, 1, __ATOMIC_RELEASE);
    KS_RACE_POINT();
    int woken = ks_futex_wake(&side->seq, n, flags);
    if (woken > 0) /* relaxed: a count; see side_sleep */
        __atomic_fetch_sub(&side->sleepers, (uint32_t)woken, __ATOMIC_RELAXED);
    return woken;
}

/* Every ks_wait_any watcher of the side: they sleep on their own word, so
 * that `wake` above counts off sleepers only.  No accounting: a watcher
 * takes itself off when it stops watching. */
static void wake_watchers(ks_queue_side_t *side, unsigned flags)
{
    /* release: pairs with the acquire load of any_seq in ks_queue_any_arm */
    __atomic_fetch_add(&side->any_seq, 1, __ATOMIC_RELEASE);
    KS_RACE_POINT();
    ks_futex_wake(&side->any_seq, KS_WAKE_ALL, flags);
}

/* Is there something for this side's sleepers to find: an item (getters)
 * or a free slot (putters), or the queue closed (both: EPIPE is an answer
 * too, and a getter that slept on a put in flight at close() must learn
 * it).  Relaxed loads, ordered by the caller's fence. */
static int has_work(ks_queue_t *q, ks_queue_side_t *side)
{
    if (ks_queue_is_closed(q))
        return 1;
    size_t n = ks_mpmc_size(&q->ring);
    return side == &q->getters ? n > 0 : n < ks_mpmc_capacity(&q->ring);
}

/* Wake one sleeper, unless a wake-up is already on its way: take the baton
 * (waking 0 -> 1); the thread woken holds it until it has tried the ring
 * (baton_pass).  A caller that finds the baton out records that it skipped
 * (skipped = 1, a fence, then a second look at `waking`): a Dekker pair with
 * the futile-wake path below ("waking = 0; fence; exchange skipped"), so
 * either that holder sees the flag or the skipper sees the baton back and
 * takes it.  A woken holder re-checks the ring itself (baton_pass).
 *
 * If the kernel had nobody asleep (the sleepers counted are between their
 * announcement and FUTEX_WAIT: the bumped count turns them back), put the
 * baton back and go again only if someone skipped meanwhile: a sleeper may
 * have read the bumped count, missed that skipper's push or pop in its
 * re-check, and gone to sleep.  Looping on "sleepers && work" instead would
 * never end if `sleepers` were one too high (a stray FUTEX_WAKE from an
 * object that used this memory before: side_sleep).
 *
 * Process-shared queues use no baton: a process killed while holding it
 * would silence every later wake-up; each push or pop that sees a sleeper
 * wakes one. */
void ks_queue_wake_slow(ks_queue_t *q, ks_queue_side_t *side)
{
    /* The waker's half of the Dekker pair, whole here, so that the slow
     * paths of this file call this function and never the header's inline
     * filter (ks_queue_wake_), which repeats the first two steps so that a
     * push or pop with no sleeper makes no call.  The fence orders the
     * caller's cell store before the load of `sleepers`; it pairs with the
     * fence a sleeper issues after announcing itself (side_sleep). */
    ks_fence_full();
    /* relaxed: ordered by the fence above */
    uint32_t s = __atomic_load_n(&side->sleepers, __ATOMIC_RELAXED);
    if (s >= WATCHER)
        wake_watchers(side, q->flags);
    if (!SLEEPERS(s))
        return;
    if (q->flags & KS_SHARED) {
        wake(side, 1, q->flags);
        return;
    }
    for (int futile = 0;;) {
        uint32_t zero = 0;
        /* relaxed: the baton orders nothing; the fences around it do */
        if (!__atomic_compare_exchange_n(&side->waking, &zero, 1, 0, __ATOMIC_RELAXED,
                                         __ATOMIC_RELAXED)) {
            /* relaxed: the fence orders it; only written when not yet set,
             * so skippers do not keep stealing the line from each other */
            if (!__atomic_load_n(&side->skipped, __ATOMIC_RELAXED))
                __atomic_store_n(&side->skipped, 1, __ATOMIC_RELAXED);
            ks_fence_full(); /* pairs with the fence after "waking = 0" */
            if (__atomic_load_n(&side->waking, __ATOMIC_RELAXED)) /* relaxed: after the fence */
                return; /* the holder sees `skipped` or re-checks the ring */
            continue;       /* the baton came back: take it ourselves */
        }
        if (wake(side, 1, q->flags) > 0)
            return;
        __atomic_store_n(&side->waking, 0, __ATOMIC_RELAXED); /* relaxed: ordered by the fence */
        ks_fence_full(); /* pairs with the fence of a skipper */
        if (!__atomic_exchange_n(&side->skipped, 0, __ATOMIC_ACQUIRE)) /* acquire: see baton_pass */
            return;
        /* A sleeper counted but not yet in FUTEX_WAIT is usually a thread
         * preempted on its way there: from the second futile wake-up on,
         * let it run instead of calling the kernel again at once. */
        if (futile++)
            sched_yield();
    }
}

static void wake_all(ks_queue_side_t *side, unsigned flags)
{
    wake(side, KS_WAKE_ALL, flags);
}

/* The first half of a sleep: announce, then read the event count.  The
 * caller re-checks its condition and then calls side_sleep or side_leave. */
static uint32_t side_enter(ks_queue_side_t *side)
{
    /* relaxed: ordered before the re-check by the fence below */
    __atomic_fetch_add(&side->sleepers, 1, __ATOMIC_RELAXED);
    /* pairs with the fence in ks_queue_wake_slow (and its inline filter ks_queue_wake_) / task_done (Dekker) */
    ks_fence_full();
    /* acquire: pairs with the release increment in wake() */
    return __atomic_load_n(&side->seq, __ATOMIC_ACQUIRE);
}

static void side_leave(ks_queue_side_t *side)
{
    __atomic_fetch_sub(&side->sleepers, 1, __ATOMIC_RELAXED); /* relaxed: a count */
}

enum { SLEPT_WOKEN, SLEPT_OTHER, SLEPT_TIMEOUT };

/* Sleep until woken, the count moves, or the deadline.  Exactly one party
 * takes the thread off `sleepers`: the waker whose FUTEX_WAKE chose it
 * (ks_futex_wait_exact returns 0 only for a FUTEX_WAKE), or the thread
 * itself for any other return (EAGAIN, a signal, a timeout).  (Looking at
 * `seq` instead cannot tell: a thread may read the bumped count, sleep, and
 * still be the one the bumping waker's FUTEX_WAKE picks.)  A stray
 * FUTEX_WAKE left over from an object that used this memory before would
 * leave one sleeper counted that is gone: later wakers would then make
 * calls that wake nobody, never miss a wake-up. */
static int side_sleep(ks_queue_side_t *side, uint32_t seen, int64_t deadline, unsigned flags)
{
    KS_RACE_POINT();
    /* A count that already moved would make FUTEX_WAIT fail: skip the call
     * (relaxed: a shortcut; the kernel's own comparison is the real one). */
    int e = __atomic_load_n(&side->seq, __ATOMIC_RELAXED) == seen
                ? ks_futex_wait_exact(&side->seq, seen, deadline, flags, KS_MATCH_ANY)
                : EAGAIN;
    if (e == 0)
        return SLEPT_WOKEN;
    side_leave(side);
    return e == ETIMEDOUT ? SLEPT_TIMEOUT : SLEPT_OTHER;
}

/* Called by a woken thread once it has tried the ring (result e): put the
 * baton back, and if the ring still has work for this side's sleepers hand
 * it to the next one.  The fence pairs with the fence of a push or pop that
 * skipped its wake-up because the baton was out (ks_queue_wake_slow): either
 * we see its `skipped` flag and its change of the ring, or it sees the
 * baton back and wakes someone itself.  After close() the baton goes from
 * sleeper to sleeper until none is left.
 *
 * If our own attempt met a peer mid-operation (EBUSY), the work we see is
 * most likely behind that peer, which wakes a sleeper itself when it
 * finishes: pass the baton only if someone skipped a wake-up meanwhile
 * (otherwise woken sleepers would wake each other in turn, each meeting the
 * same stalled peer, until it runs). */
static void baton_pass(ks_queue_t *q, ks_queue_side_t *side, int e)
{
    __atomic_store_n(&side->waking, 0, __ATOMIC_RELAXED); /* relaxed: ordered by the fence */
    ks_fence_full();
    /* acquire: the loads below must not move before the exchange (AArch64
     * may do them early otherwise), so a skipper's change of the ring that
     * we learn of through its flag is also seen by them; pairs with the
     * fence the skipper issued after setting the flag */
    int skip = (int)__atomic_exchange_n(&side->skipped, 0, __ATOMIC_ACQUIRE);
    if (e == EBUSY && !skip)
        return;
    if (SLEEPERS(__atomic_load_n(&side->sleepers, __ATOMIC_RELAXED)) && has_work(q, side))
        ks_queue_wake_slow(q, side);
}

/* put (dir PUT) or get (dir GET) that waits: spin, then sleep on this
 * side's event count until the ring lets the operation through. */
enum { PUT, GET };

static int ring_op(ks_queue_t *q, int dir, uintptr_t *v)
{
    return dir == PUT ? ks_mpmc_push_(&q->ring, *v) : ks_mpmc_pop_(&q->ring, v);
}

static int wait_op(ks_queue_t *q, int dir, uintptr_t *v, int64_t deadline)
{
    ks_queue_side_t *mine = dir == PUT ? &q->putters : &q->getters;
    /* spin: -1 until the first attempt failed (a timed call that never
     * blocks takes no spinner place and learns nothing), then 1 while the
     * spin lasts, 0 after. */
    struct ks_spin sp;
    int spin = -1, baton = 0, inside = 0, e;
    for (;;) {
        e = ring_op(q, dir, v);
        if (baton) {
            baton_pass(q, mine, e);
            baton = 0;
        }
        if (e == 0 || e == EPIPE)
            break;
        if (spin < 0) {
            spin = ks_spin_begin(&sp, KS_SPIN_QUEUE);
            ks_spin_clip(&sp, deadline);
        }
        if (spin) {
            if (ks_spin_more(&sp)) {
                ks_cpu_relax();
                continue;
            }
            ks_spin_end(&sp);
            spin = 0;
        }
        /* a deadline already past (tryput/tryget, timeouts of 0): no sleep,
         * and no announcement that would send wakers after us */
        if (ks_deadline_passed(deadline)) {
            e = ETIMEDOUT;
            break;
        }
        if (!inside) {
            users_enter(q);
            inside = 1;
        }
        uint32_t seen = side_enter(mine);
        e = ring_op(q, dir, v);
        if (e == 0 || e == EPIPE) {
            side_leave(mine);
            break;
        }
        int r = side_sleep(mine, seen, deadline, q->flags);
        if (r == SLEPT_WOKEN) {
            baton = 1;
        } else if (r == SLEPT_TIMEOUT) {
            /* a last look: a slot or item there at the deadline is ours */
            if ((e = ring_op(q, dir, v)) != 0 && e != EPIPE)
                e = ETIMEDOUT;
            break;
        }
    }
    if (e == 0) { /* we made room or an item: wake the other side */
        if (spin > 0)
            ks_spin_won(&sp);
        else if (spin == 0)
            ks_spin_waited(&sp);
        ks_queue_wake_slow(q, dir == PUT ? &q->getters : &q->putters);
    } else if (spin > 0) {
        ks_spin_end(&sp);
    }
    if (inside)
        users_leave(q); /* the last access */
    return e;
}

int ks_queue_timedput(ks_queue_t *q, void *item, int64_t deadline)
{
    if (!q || deadline < 0)
        return EINVAL;
    uintptr_t v = (uintptr_t)item;
    return wait_op(q, PUT, &v, deadline);
}

int ks_queue_timedget(ks_queue_t *q, void **item, int64_t deadline)
{
    if (!q || !item || deadline < 0)
        return EINVAL;
    uintptr_t v;
    int e = wait_op(q, GET, &v, deadline);
    if (e == 0)
        *item = (void *)v;
    return e;
}

static uint64_t puts_of(const ks_queue_t *q)
{
    /* relaxed: a bound; the tail ticket counts the puts that have begun */
    return __atomic_load_n(&q->ring.tail, __ATOMIC_RELAXED) & ~KS_MPMC_CLOSED;
}

int ks_queue_task_done(ks_queue_t *q)
{
    if (!q)
        return EINVAL;
    uint64_t d = __atomic_load_n(&q->done, __ATOMIC_RELAXED); /* relaxed: seeds the CAS */
    do {
        if (d >= puts_of(q))
            return EINVAL; /* more task_done() than put(): nothing changes */
        /* release: pairs with the acquire load in ks_queue_timedjoin, so the
         * task's work happens before the join that sees it finished. */
    } while (!__atomic_compare_exchange_n(&q->done, &d, d + 1, 1, __ATOMIC_RELEASE,
                                          __ATOMIC_RELAXED));
    /* pairs with the fence in side_enter(&joiners) (Dekker) */
    ks_fence_full();
    if (__atomic_load_n(&q->joiners.sleepers, __ATOMIC_RELAXED) && puts_of(q) == d + 1)
        wake_all(&q->joiners, q->flags); /* relaxed load: ordered by the fence */
    return 0;
}

static int all_done(const ks_queue_t *q)
{
    /* acquire: pairs with the release CAS in ks_queue_task_done */
    uint64_t d = __atomic_load_n(&q->done, __ATOMIC_ACQUIRE);
    return d == puts_of(q);
}

int ks_queue_timedjoin(ks_queue_t *q, int64_t deadline)
{
    if (!q || deadline < 0)
        return EINVAL;
    if (all_done(q))
        return 0;
    users_enter(q);
    int e;
    for (;;) {
        uint32_t seen = side_enter(&q->joiners);
        if (all_done(q)) {
            side_leave(&q->joiners);
            e = 0;
            break;
        }
        if (side_sleep(&q->joiners, seen, deadline, q->flags) == SLEPT_TIMEOUT) {
            e = all_done(q) ? 0 : ETIMEDOUT;
            break;
        }
        if (all_done(q)) {
            e = 0;
            break;
        }
    }
    users_leave(q); /* the last access */
    return e;
}

int ks_queue_close(ks_queue_t *q)
{
    if (!q)
        return EINVAL;
    /* seq_cst: ordered before the wake-ups below; a sleeper that reads the
     * bumped count (acquire) sees the flag. */
    __atomic_fetch_or(&q->ring.tail, KS_MPMC_CLOSED, __ATOMIC_SEQ_CST);
    wake_all(&q->putters, q->flags);
    wake_all(&q->getters, q->flags);
    wake_watchers(&q->putters, q->flags);
    wake_watchers(&q->getters, q->flags);
    return 0;
}

/* ks_wait_any's arm (src/wait_any.c): ready (1) if a get (put) would not
 * block now: an item (a free slot) is there or the queue is closed.  Else
 * the caller is counted as a watcher and sleeps on any_seq.  The Dekker
 * pair is the sleepers' own: watcher "sleepers += WATCHER; fence; read
 * any_seq; look at the ring" against the waker's "change the ring; fence;
 * read sleepers; bump any_seq and wake" (ks_queue_wake_slow, close): either
 * the waker sees the watcher, or the watcher's look sees the change.  A
 * watcher is never handed the baton and takes nothing: readiness is
 * level-triggered, as a channel's. */
int ks_queue_any_arm(ks_queue_t *q, int put, struct ks_waitset *ws)
{
    if (!q)
        return -EINVAL;
    ks_queue_side_t *side = put ? &q->putters : &q->getters;
    /* Refuse before adding: an add undone after the check would wrap the
     * watchers' bits to 0 meanwhile, and a waker reading them then would
     * wake no watcher (found by review).  relaxed: ordered before the look
     * at the ring by the fence below. */
    uint32_t old = __atomic_load_n(&side->sleepers, __ATOMIC_RELAXED);
    do {
        if (old / WATCHER >= WATCHERS_MAX)
            return -EAGAIN;
    } while (!__atomic_compare_exchange_n(&side->sleepers, &old, old + WATCHER, 1, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    /* pairs with the fence in ks_queue_wake_slow (and the header's filter) */
    ks_fence_full();
    /* acquire: pairs with the release increment in wake_watchers */
    uint32_t seen = __atomic_load_n(&side->any_seq, __ATOMIC_ACQUIRE);
    if (has_work(q, side)) {
        ks_queue_any_disarm(q, put);
        return 1;
    }
    ks_waitset_add(ws, &side->any_seq, seen, q->flags);
    return 0;
}

/* The watch's end: its last access to the queue. */
void ks_queue_any_disarm(ks_queue_t *q, int put)
{
    ks_queue_side_t *side = put ? &q->putters : &q->getters;
    /* release: pairs with the acquire loads of sleepers in ks_queue_destroy */
    __atomic_fetch_sub(&side->sleepers, WATCHER, __ATOMIC_RELEASE);
}

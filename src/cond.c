/* src/cond.c - condition variable: a sequence counter, a waiter reference
 * count, and requeue-on-broadcast.  Full write-up: docs/cond.md.
 *
 *   seq       futex word; +1 by each signal/broadcast that finds waiters
 *   waiters   threads between entering wait and their last access to the
 *             object (bit 31 DESTROYING: destroy waits for 0)
 *   sleepers  threads that may be in FUTEX_WAIT on seq (or requeued)
 *   mutex     the mutex passed to the most recent wait
 *
 * wait:   waiters++; s = seq (before unlocking: PITFALLS item 15); unlock m;
 *         spin until seq != s, else sleepers++ and FUTEX_WAIT(seq, s);
 *         sleepers--; waiters-- (last access; wake destroy if it waits);
 *         relock m as a contended locker.
 * signal: if waiters: seq++, and FUTEX_WAKE 1 if sleepers.
 * broadcast: if waiters: seq++, and if sleepers, FUTEX_CMP_REQUEUE: wake one,
 *         move the rest to the mutex word.
 *
 * Lost wake-ups: the waiter reads seq while it still holds the mutex, so a
 * signal made by a thread that took the mutex after it changes seq from the
 * value the waiter will wait on: either its FUTEX_WAIT fails with EAGAIN or
 * it was queued and gets the wake.  The spinner/sleeper split is a Dekker
 * pair: the waiter increments `sleepers` and then the kernel reads `seq`;
 * signal increments `seq` and then reads `sleepers`; both increments are
 * seq_cst read-modify-writes (and the kernel orders its read after a full
 * barrier), so at least one side sees the other.
 *
 * Requeue (PITFALLS item 19): moved waiters sleep on the mutex word.  The one
 * woken by the requeue, and each moved waiter when it is woken, re-acquire
 * the mutex through ks_mutex_lock_requeued(), which always leaves CONTENDED
 * set, so the next unlock wakes another.  Requeue needs waiter and mutex in
 * the same futex namespace: it is used only for private objects whose flags
 * match; otherwise broadcast wakes everyone.
 *
 * Wrap (PITFALLS item 18): seq is 32 bits; a waiter that is descheduled
 * between reading seq and FUTEX_WAIT while exactly 2^32 signals happen would
 * sleep through them.  Accepted, as in Rust's futex condvar.
 */
#include "internal.h"

#include <ksync/cond.h>

#define DESTROYING 0x80000000u
#define COND_SPIN 200

int ks_cond_init(ks_cond_t *c, unsigned flags)
{
    if (!c || (flags & ~KS_FLAGS_VALID))
        return EINVAL;
    c->seq = 0;
    c->waiters = 0;
    c->sleepers = 0;
    c->flags = flags;
    c->mutex = 0;
    return 0;
}

int ks_cond_destroy(ks_cond_t *c)
{
    if (!c)
        return EINVAL;
    /* acquire: pairs with the release decrement of the last leaving waiter,
     * so its accesses happen before the caller frees the memory. */
    uint32_t w = __atomic_or_fetch(&c->waiters, DESTROYING, __ATOMIC_ACQUIRE);
    while (w & ~DESTROYING) {
        ks_futex_wait(&c->waiters, w, KS_FOREVER, c->flags);
        w = __atomic_load_n(&c->waiters, __ATOMIC_ACQUIRE);
    }
    __atomic_store_n(&c->waiters, 0, __ATOMIC_RELAXED); /* reusable after re-init */
    return 0;
}

int ks_cond_timedwait(ks_cond_t *c, ks_mutex_t *m, int64_t deadline)
{
    if (!c || !m || deadline < 0)
        return EINVAL;
    /* relaxed: only the calling thread can legitimately hold m; this is a
     * best-effort misuse check, as for an error-checking pthread mutex. */
    if (!(__atomic_load_n(&m->state, __ATOMIC_RELAXED) & KS_MUTEX_LOCKED))
        return EPERM;
    const unsigned fl = c->flags;
    /* relaxed: the mutex unlock below releases it to any signaller that
     * takes the mutex; a signaller that does not is covered by seq. */
    __atomic_fetch_add(&c->waiters, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&c->mutex, m, __ATOMIC_RELAXED); /* a hint for broadcast only */
    /* relaxed: ordered before our unlock's release; compared by the kernel. */
    const uint32_t s = __atomic_load_n(&c->seq, __ATOMIC_RELAXED);
    ks_mutex_unlock(m);

    int r = 0, slept = 0;
    for (int i = 0, n = ks_spin_budget(COND_SPIN); i < n; i++) {
        /* relaxed: seq only says "go re-check"; the predicate's data is
         * ordered by the mutex we re-acquire. */
        if (__atomic_load_n(&c->seq, __ATOMIC_RELAXED) != s)
            goto woken;
        ks_cpu_relax();
    }
    __atomic_fetch_add(&c->sleepers, 1, __ATOMIC_SEQ_CST); /* Dekker pair with signal */
    slept = 1;
    KS_RACE_POINT();
    r = ks_futex_wait(&c->seq, s, deadline, fl);
    /* relaxed: a count that only decides whether signal makes a syscall;
     * an over-estimate costs one wake, and the increment was seq_cst. */
    __atomic_fetch_sub(&c->sleepers, 1, __ATOMIC_RELAXED);
woken:;
    /* release: the last access to c; pairs with destroy's acquire. */
    uint32_t w = __atomic_fetch_sub(&c->waiters, 1, __ATOMIC_RELEASE);
    if (w == (DESTROYING | 1))
        ks_futex_wake(&c->waiters, INT32_MAX, fl); /* address only */
    if (slept)
        ks_mutex_lock_requeued(m);
    else
        ks_mutex_lock(m);
    return r == ETIMEDOUT ? ETIMEDOUT : 0;
}

int ks_cond_signal(ks_cond_t *c)
{
    if (!c)
        return EINVAL;
    /* relaxed: a waiter that entered before the caller took the mutex is
     * visible through the mutex; without the mutex there is no "before". */
    if (!(__atomic_load_n(&c->waiters, __ATOMIC_RELAXED) & ~DESTROYING))
        return 0;
    __atomic_fetch_add(&c->seq, 1, __ATOMIC_SEQ_CST); /* Dekker pair with wait */
    if (__atomic_load_n(&c->sleepers, __ATOMIC_SEQ_CST)) {
        KS_RACE_POINT();
        ks_futex_wake(&c->seq, 1, c->flags);
    }
    return 0;
}

int ks_cond_broadcast(ks_cond_t *c)
{
    if (!c)
        return EINVAL;
    /* relaxed: as in signal. */
    if (!(__atomic_load_n(&c->waiters, __ATOMIC_RELAXED) & ~DESTROYING))
        return 0;
    uint32_t s = __atomic_add_fetch(&c->seq, 1, __ATOMIC_SEQ_CST); /* Dekker pair with wait */
    if (!__atomic_load_n(&c->sleepers, __ATOMIC_SEQ_CST))
        return 0;
    const unsigned fl = c->flags;
    ks_mutex_t *m = __atomic_load_n(&c->mutex, __ATOMIC_RELAXED); /* a hint: see wait */
    KS_RACE_POINT();
    if (m && !(fl & KS_SHARED) && !(m->flags & KS_SHARED)) {
        /* CMP_REQUEUE fails with EAGAIN if another signal moved seq since;
         * the waiters have then been released by that and by us anyway,
         * but we must still wake them, so fall back to waking all. */
        if (ks_futex_requeue(&c->seq, s, 1, INT32_MAX, &m->state, fl) >= 0)
            return 0;
    }
    ks_futex_wake(&c->seq, INT32_MAX, fl);
    return 0;
}

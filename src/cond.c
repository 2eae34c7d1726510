/* src/cond.c - condition variable: a sequence counter, a waiter reference
 * count, and requeue-on-broadcast.  Full write-up: docs/cond.md.
 *
 *   seq       futex word; +1 by each signal/broadcast that finds waiters
 *   waiters   threads between entering wait and their last access to the
 *             object (bit 31 DESTROYING: destroy waits for 0)
 *   sleepers  threads that may be in FUTEX_WAIT on seq (or requeued)
 *   mutex     NULL, then the one mutex every wait so far has used, then
 *             that mutex tagged MIXED (bit 0) for good once a wait used
 *             another one (or a mutex whose futex namespace differs):
 *             broadcast requeues only onto an untagged mutex, and destroy
 *             wakes the mutex, tagged or not
 *
 * wait:   waiters++; note m in `mutex`; s = seq (before unlocking: a
 *         lost wake-up otherwise, docs/pitfalls.md item 15); unlock m;
 *         spin until seq != s, else sleepers++ and FUTEX_WAIT(seq, s);
 *         sleepers--; waiters-- (last access; wake destroy if it waits);
 *         relock m, as a waiter that may have been requeued if it slept
 *         and `mutex` was m.
 * signal: if waiters: seq++, and FUTEX_WAKE 1 if sleepers.
 * broadcast: if waiters: seq++, and if sleepers, FUTEX_CMP_REQUEUE onto
 *         the shared mutex (wake two, one with a single usable CPU, and
 *         move the rest), or wake all; after
 *         a requeue, if `mutex` is tagged by then, wake all on the mutex.
 * destroy: DESTROYING; while waiters: FUTEX_WAKE all on the mutex that
 *         requeues went to (if any), then wait for waiters to change.
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
 * Requeue (docs/pitfalls.md item 19): moved waiters sleep on the mutex word.
 * The ones woken by the requeue, and each moved waiter when it is woken,
 * re-acquire the mutex through ks_mutex_lock_requeued(), which always leaves
 * CONTENDED set, so the next unlock wakes another.  Requeueing a waiter
 * onto a mutex it does not use would lose a wake-up (the unlock meant for
 * that mutex's waiters wakes it, and it never unlocks that mutex), so
 * broadcast requeues only onto `mutex` when it is a single mutex, and every
 * waiter that used another one tagged it MIXED before it could sleep: its
 * store is sequenced before its seq_cst increment of `sleepers`, which
 * broadcast reads (all writes to `sleepers` are read-modify-writes, so that
 * read synchronizes with every earlier increment).  A waiter that
 * increments later may still be queued in time to be requeued: it read
 * seq after the broadcast's increment and sleeps on that value, which the
 * FUTEX_CMP_REQUEUE expects (a review reproduced this: W2 with m2 enters
 * between broadcast's read of `mutex` and its requeue, is moved onto m1,
 * wakes there, and strands the m1 waiter behind it).  Such a waiter tagged
 * `mutex` before it entered the kernel, and the requeue found it queued
 * under the futex bucket lock, so broadcast's re-read of `mutex` after the
 * requeue sees the tag; it then wakes everyone on the mutex word, which
 * strands nobody: each woken thread re-evaluates the mutex, and the one
 * that came from another mutex goes back to it.
 *
 * Destroy while holding the mutex, right after a broadcast (POSIX allows
 * it; glibc supports it on purpose): the requeued waiters still count in
 * `waiters`, and they can only leave once the mutex they sleep on is
 * unlocked, which the destroyer does after destroy returns.  So destroy
 * wakes every thread on the shared mutex's word: the requeued waiters leave
 * the condition variable (their last access to it) and go back to sleep on
 * the mutex as contended lockers; others woken there see a spurious wake-up.
 *
 * Wrap (docs/pitfalls.md item 18): seq is 32 bits; a waiter that is
 * descheduled between reading seq and FUTEX_WAIT while exactly 2^32 signals
 * happen would sleep through them.  Accepted, as in Rust's futex condvar.
 */
#include "internal.h"

#include <ksync/cond.h>

#include <pthread.h>

#define DESTROYING KS_DRAIN_DESTROYING

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

/* The mutex broadcast may requeue onto, or NULL: only for a private
 * condition variable whose waiters all used one private mutex. */
static ks_mutex_t *requeue_target(const ks_cond_t *c, unsigned fl)
{
    if (fl & KS_SHARED)
        return NULL;
    /* relaxed: ordered by the Dekker pair on `sleepers` (top comment). */
    ks_mutex_t *m = __atomic_load_n(&c->mutex, __ATOMIC_RELAXED);
    return ((uintptr_t)m & KS_COND_MIXED) ? NULL : m;
}

/* The mutex that broadcasts may have requeued waiters onto, tagged or not
 * (the tag only stops new requeues), or NULL. */
static ks_mutex_t *requeued_onto(const ks_cond_t *c, unsigned fl)
{
    if (fl & KS_SHARED)
        return NULL;
    /* relaxed: destroy runs after the broadcasts that requeued (POSIX: no
     * broadcast may race with destroy), which ordered the field for it. */
    uintptr_t m = (uintptr_t)__atomic_load_n(&c->mutex, __ATOMIC_RELAXED);
    return (ks_mutex_t *)(m & ~(uintptr_t)KS_COND_MIXED);
}

/* Waiters requeued onto the mutex leave only when woken there; the caller
 * may hold that mutex (top comment).  Only the address is used: a mutex
 * already freed is harmless to wake (EFAULT). */
static void wake_requeued(const void *p)
{
    const ks_cond_t *c = p;
    ks_mutex_t *m = requeued_onto(c, c->flags);
    if (m)
        ks_futex_wake(&m->state, KS_WAKE_ALL, 0);
}

int ks_cond_destroy(ks_cond_t *c)
{
    if (!c)
        return EINVAL;
    ks_drain(&c->waiters, c->flags, wake_requeued, c);
    return 0;
}

/* Record that a wait uses m; returns whether broadcast may requeue this
 * waiter onto m.  `mutex` goes NULL -> m -> m|MIXED and never back (every
 * change is a CAS), so two waiters with different mutexes always leave the
 * tag behind, whatever their order, and the tag keeps the mutex that
 * requeues went to.  m NULL (a mutex that is no ks_mutex: the drop-in
 * layer's priority-inheritance or robust ones) tags it at once.  relaxed:
 * published to broadcast by the seq_cst increment of `sleepers` that
 * follows (top comment). */
static int note_mutex(ks_cond_t *c, ks_mutex_t *m)
{
    ks_mutex_t *cur = __atomic_load_n(&c->mutex, __ATOMIC_RELAXED);
    for (;;) {
        if (m && cur == m)
            return 1;
        if ((uintptr_t)cur & KS_COND_MIXED)
            return 0;
        ks_mutex_t *want = !m || cur || (m->flags & KS_SHARED)
                               ? (ks_mutex_t *)((uintptr_t)cur | KS_COND_MIXED)
                               : m;
        if (__atomic_compare_exchange_n(&c->mutex, &cur, want, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return want == m;
    }
}

/* A waiter's last access to c: leave, and wake destroy if it waits for us. */
static void leave(ks_cond_t *c, unsigned fl)
{
    ks_drain_leave(&c->waiters, fl);
}

/* ks_mutex as the lock of a wait (ks_cond_timedwait). */
static int ks_unlock_op(void *m)
{
    ks_mutex_unlock(m); /* the caller checked that m is locked */
    return 0;
}

/* A waiter that may have been requeued may have been woken by an unlock of
 * m with others still asleep on it: it must lock as a contended locker
 * (docs/cond.md).  One that cannot have been requeued locks as any other
 * thread, and does not pass a starving waiter of m. */
static int ks_relock_op(void *m, int requeued)
{
    return requeued ? ks_mutex_lock_requeued(m) : ks_mutex_lock(m);
}

static const struct ks_cond_lockops ks_mutex_ops = {ks_unlock_op, ks_relock_op};

/* Cancellation (KS_WAIT_CANCEL): what a waiter cancelled in its sleep
 * leaves behind.  It still counts in `sleepers` and `waiters`, and it may
 * have been chosen by a signal that was meant for the others, so it sends
 * a replacement (a spurious wake-up is allowed, a lost one is not: POSIX
 * says a cancelled waiter must not consume a signal), then leaves and
 * re-takes the mutex, which POSIX requires before the cleanup handlers of
 * the application run. */
struct cancel_frame {
    ks_cond_t *c;
    void *mutex;
    const struct ks_cond_lockops *ops;
    int may_requeue;
};

static void on_cancel(void *p)
{
    struct cancel_frame *f = p;
    /* relaxed: as the decrement after a normal wake. */
    __atomic_fetch_sub(&f->c->sleepers, 1, __ATOMIC_RELAXED);
    ks_cond_signal(f->c); /* while we still count in `waiters`: c is alive */
    leave(f->c, f->c->flags);
    f->ops->relock(f->mutex, f->may_requeue);
}

static int sleep_cancellable(struct cancel_frame *f, uint32_t s, int64_t deadline, unsigned fl)
{
    int r;
    pthread_cleanup_push(on_cancel, f);
    r = ks_futex_wait_cancellable(&f->c->seq, s, deadline, fl);
    pthread_cleanup_pop(0);
    return r == EINTR ? 0 : r;
}

/* The wait, for ks_mutex (constant ops: the calls are direct) and for the
 * drop-in layer's mutexes. */
static inline __attribute__((always_inline)) int wait_core(ks_cond_t *c, void *mutex, ks_mutex_t *word,
                                                           const struct ks_cond_lockops *ops,
                                                           int64_t deadline, unsigned opts)
{
    const unsigned fl = c->flags;
    /* relaxed: the mutex unlock below releases it to any signaller that
     * takes the mutex; a signaller that does not is covered by seq. */
    const uint32_t before = __atomic_fetch_add(&c->waiters, 1, __ATOMIC_RELAXED) & ~DESTROYING;
    const int may_requeue = !(fl & KS_SHARED) && note_mutex(c, word);
    /* relaxed: ordered before our unlock's release; compared by the kernel. */
    const uint32_t s = __atomic_load_n(&c->seq, __ATOMIC_RELAXED);
    int e = ops->unlock(mutex);
    if (KS_UNLIKELY(e)) {
        leave(c, fl); /* the caller does not hold the mutex: no wait */
        return e;
    }

    int r = 0, slept = 0;
    /* Spin only while the waiters, this one included, fit on the usable
     * CPUs (as the barrier does): more waiters than CPUs all wait for one
     * thread that needs a CPU to signal, and each spin takes it (a
     * broadcast to 16 waiters on 2 CPUs ran at 0.8x glibc with spinning
     * waiters, 1.3-1.6x without). */
    struct ks_spin sp;
    const int may_spin = before + 1 <= (uint32_t)ks_usable_cpus();
    if (may_spin && ks_spin_begin(&sp, KS_SPIN_COND)) {
        ks_spin_clip(&sp, deadline);
        do {
            /* relaxed: seq only says "go re-check"; the predicate's data is
             * ordered by the mutex we re-acquire. */
            if (__atomic_load_n(&c->seq, __ATOMIC_RELAXED) != s) {
                ks_spin_won(&sp);
                goto woken;
            }
            ks_cpu_relax();
        } while (ks_spin_more(&sp));
        ks_spin_end(&sp);
    }
    __atomic_fetch_add(&c->sleepers, 1, __ATOMIC_SEQ_CST); /* Dekker pair with signal */
    slept = 1;
    KS_RACE_POINT();
    /* KS_SHARED: a 0 with seq unmoved is no signal (the sleep's slice
     * ended, src/futex.c; a signal handler ran; a stale wake): sleep again
     * rather than hand the caller a spurious wake-up every second, which a
     * loop that re-arms a relative timeout on each return would never get
     * out of.  Every signal and broadcast moves seq before it wakes, so a
     * signaller killed before its wake is still seen at the slice's end.
     * Only shared: a shared condition variable never requeues (see
     * requeue_target), while a private waiter may have been moved onto the
     * mutex's word, where any wake it gets is the mutex's and must be acted
     * on by relocking (a waiter that joined after a broadcast's increment
     * and was moved with the others is woken there with seq unmoved: going
     * back to sleep on seq would swallow a mutex wake).  relaxed: seq only
     * says "go re-check", as in the spin above. */
    do {
        if (opts & KS_WAIT_CANCEL) {
            struct cancel_frame f = {c, mutex, ops, may_requeue};
            r = sleep_cancellable(&f, s, deadline, fl);
        } else {
            r = ks_futex_wait(&c->seq, s, deadline, fl);
        }
    } while (r == 0 && (fl & KS_SHARED) && __atomic_load_n(&c->seq, __ATOMIC_RELAXED) == s);
    /* relaxed: a count that only decides whether signal makes a syscall;
     * an over-estimate costs one wake, and the increment was seq_cst. */
    __atomic_fetch_sub(&c->sleepers, 1, __ATOMIC_RELAXED);
    if (r != ETIMEDOUT && may_spin)
        ks_spin_waited(&sp);
woken:
    leave(c, fl);
    e = ops->relock(mutex, slept && may_requeue);
    if (e)
        return e;
    return r == ETIMEDOUT ? ETIMEDOUT : 0;
}

int ks_cond_timedwait(ks_cond_t *c, ks_mutex_t *m, int64_t deadline)
{
    if (!c || !m || deadline < 0)
        return EINVAL;
    /* relaxed: only the calling thread can legitimately hold m; this is a
     * best-effort misuse check, as for an error-checking pthread mutex. */
    if (!(__atomic_load_n(&m->state, __ATOMIC_RELAXED) & KS_MUTEX_LOCKED))
        return EPERM;
    return wait_core(c, m, m, &ks_mutex_ops, deadline, 0);
}

int ks_cond_wait_ext(ks_cond_t *c, void *mutex, ks_mutex_t *word, const struct ks_cond_lockops *ops,
                     int64_t deadline, unsigned opts)
{
    if (deadline < 0)
        return EINVAL;
    return wait_core(c, mutex, word, ops, deadline, opts);
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

/* How many sleepers the broadcast's FUTEX_CMP_REQUEUE wakes (the rest it
 * moves onto the mutex): two when two CPUs are usable, else one.  Each
 * unlock then wakes one moved waiter, so the moved waiters come off the
 * mutex in a chain; with one woken, every link of the chain is a sleeping
 * thread's wake-up, often on an idle vCPU, and nothing else runs meanwhile
 * (0.5-0.6x glibc's broadcasts/s on an Intel Xeon guest, docs/cond.md).
 * With two, one woken waiter holds the mutex while the other is on its
 * way, and each unlock wakes the next: a wake-up is in flight during each
 * critical section (1.1-1.3x glibc there, and fewer sleeps than before).
 * More than two wake threads that find the mutex held and sleep on it
 * again, which is what requeueing avoids (waking all 16: 19-22 sleeps per
 * broadcast against 16). */
static int requeue_wakes(void)
{
    return ks_usable_cpus() >= 2 ? 2 : 1;
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
    ks_mutex_t *m = requeue_target(c, fl);
    KS_RACE_POINT();
    /* Any failure (EAGAIN: another signal moved seq since; EFAULT, EINVAL)
     * falls back to waking all: the sleepers must be released either way. */
    if (m && ks_futex_requeue(&c->seq, s, requeue_wakes(), KS_WAKE_ALL, &m->state, fl) >= 0) {
        /* A waiter with another mutex may have slept on the new seq in
         * time to be moved (top comment): it tagged `mutex` first.
         * acquire: its store came before it queued under the bucket lock
         * that the requeue took after it. */
        if (__atomic_load_n(&c->mutex, __ATOMIC_ACQUIRE) != m)
            ks_futex_wake(&m->state, KS_WAKE_ALL, fl);
        return 0;
    }
    ks_futex_wake(&c->seq, KS_WAKE_ALL, fl);
    return 0;
}

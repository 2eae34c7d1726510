/* ksync/cond.h - condition variable for ks_mutex.  docs/cond.md.
 *
 *   ks_cond_t c = KS_COND_INIT;                 (all zeros)
 *   ks_mutex_lock(&m);
 *   while (!predicate) ks_cond_wait(&c, &m);
 *   ks_mutex_unlock(&m);
 *   ... elsewhere: change predicate under m; ks_cond_signal(&c) or ks_cond_broadcast(&c);
 *
 * Return values: init 0, EINVAL (NULL, unknown flags); wait 0, EPERM (m is
 * not locked), EINVAL; timedwait also ETIMEDOUT (the mutex is re-acquired in
 * every case); signal, broadcast 0, EINVAL; destroy 0, EINVAL.  destroy
 * frees nothing: a second destroy returns 0, and init makes it usable again.
 *
 * Spurious wake-ups are part of the contract: a wait may return 0 without a
 * signal (and a signal may release more than one waiter that is still
 * spinning), so callers loop on their predicate.  A KS_SHARED wait does
 * not return on a futex wake-up that came with no signal: its sleep looks
 * again every second, so that a signaller killed before its wake strands
 * nobody (docs/shared.md), and sleeps on.  signal and broadcast with
 * nobody waiting make no syscall.  broadcast wakes one waiter (two when the
 * process may run on two CPUs or more, so that one is running when the
 * first unlocks) and moves the others onto the mutex's futex
 * (FUTEX_CMP_REQUEUE), so they are woken one at a time by unlocks instead
 * of stampeding.  It wakes all instead for a KS_SHARED condition variable
 * or one waited on with a KS_SHARED mutex, and for one that has ever been waited on
 * with two different mutexes (POSIX leaves concurrent waits with different
 * mutexes undefined; here they work, and such a condition variable wakes
 * all on broadcast from then on, until it is initialised again).
 *
 * Destroy right after broadcast (docs/pitfalls.md item 20): ks_cond_destroy
 * waits until every waiter that has been woken has stopped touching the
 * object, so "broadcast, unlock, destroy, free" is safe, and so is
 * "broadcast, destroy, unlock" with the mutex held throughout (destroy
 * wakes the waiters moved onto the mutex so that they can leave).
 * Destroying a condition variable that threads are still blocked on (never
 * signalled) is undefined in POSIX; here it blocks until they leave.
 */
#ifndef KSYNC_COND_H
#define KSYNC_COND_H

#include <ksync/annotate.h>
#include <ksync/common.h>
#include <ksync/mutex.h>
#include <ksync/time.h>

typedef struct ks_cond {
    uint32_t seq;      /* futex word: bumped by every signal/broadcast that finds waiters */
    uint32_t waiters;  /* threads inside wait (bit 31: destroy is waiting for them to leave) */
    uint32_t sleepers; /* threads inside FUTEX_WAIT (or requeued to the mutex) */
    uint32_t flags;    /* KS_SHARED or 0; constant after init */
    ks_mutex_t *mutex; /* NULL, the one mutex of every wait so far, tagged KS_COND_MIXED after another */
} ks_cond_t;

/* Bit 0 of `mutex`, set once waits have used two different mutexes (or a
 * KS_SHARED mutex): broadcast no longer requeues; the rest of the field
 * still names the mutex earlier broadcasts may have requeued onto. */
#define KS_COND_MIXED 1u

#define KS_COND_INIT {0u, 0u, 0u, 0u, 0}

KS_EXTERN_C_BEGIN

KS_API int ks_cond_init(ks_cond_t *c, unsigned flags);
KS_API int ks_cond_destroy(ks_cond_t *c);
KS_API int ks_cond_timedwait(ks_cond_t *c, ks_mutex_t *m, int64_t deadline);
KS_API int ks_cond_signal(ks_cond_t *c);
KS_API int ks_cond_broadcast(ks_cond_t *c);

#if KS_ANNOTATING
/* A race detector sees the wait release the mutex and take it again
 * (ksync/annotate.h): the library does both inside, where a program built
 * with -fsanitize=thread against an uninstrumented libksync cannot see
 * them.  EPERM on a locked mutex (another thread's: the library cannot
 * tell): the detector has been told of that unlock, and reports it;
 * EINVAL: it is still held. */
static inline int ks_cond_timedwait_annotated_(ks_cond_t *c, ks_mutex_t *m, int64_t deadline)
{
    /* a mutex that is not locked: the wait refuses (EPERM), nothing told
     * (relaxed: the caller's own hold, if any) */
    const int told = m && (__atomic_load_n(&m->state, __ATOMIC_RELAXED) & KS_MUTEX_LOCKED);
    if (told) {
        KS_ANN_UNLOCK_PRE(m, 0);
        KS_ANN_UNLOCK_POST(m, 0);
    }
    int e = (ks_cond_timedwait)(c, m, deadline);
    if (told && e != EPERM) {
        KS_ANN_LOCK_PRE(m, 0, 0);
        KS_ANN_LOCK_POST(m, 0, 0, 0);
    }
    return e;
}
#define ks_cond_timedwait(c, m, deadline) ks_cond_timedwait_annotated_((c), (m), (deadline))
#endif

static inline int ks_cond_wait(ks_cond_t *c, ks_mutex_t *m)
{
    return ks_cond_timedwait(c, m, KS_FOREVER);
}

KS_EXTERN_C_END

#endif

/* ksync/mutex.h - a futex mutex: one 32-bit word, one CAS to lock, one CAS to
 * unlock when nobody waits.  Algorithm, state machine and proof sketch:
 * docs/mutex.md.
 *
 *   ks_mutex_t m = KS_MUTEX_INIT;        (all zeros is a valid unlocked mutex)
 *   ks_mutex_init(&m, KS_SHARED);        (for a mutex in shared memory)
 *   ks_mutex_lock(&m) ... ks_mutex_unlock(&m);
 *
 * Return values (errno codes, never through errno):
 *   init        0, EINVAL (NULL, or flags other than KS_PRIVATE/KS_SHARED)
 *   lock        0, EINVAL (NULL)
 *   trylock     0, EBUSY (held, or being handed to a long waiter), EINVAL
 *   timedlock   0, ETIMEDOUT, EINVAL (NULL or negative deadline; the deadline
 *               is absolute CLOCK_MONOTONIC ns, see ksync/time.h)
 *   unlock      0, EPERM (the mutex is not locked), EINVAL
 *   destroy     0, EBUSY (locked or waited on), EINVAL; destroy frees
 *               nothing, so destroying a free mutex again returns 0, and a
 *               destroyed mutex may be initialised again
 * The mutex is not recursive and does not record its owner: relocking from
 * the owner deadlocks, and unlocking a mutex another thread holds is not
 * detected (use ks_rmutex for both; lock-order checking, ksync/lockdep.h,
 * reports both).
 *
 * -DKSYNC_DEBUG: the inline fast paths below call the library every time,
 * so that lock statistics and lock-order checking see a statically
 * initialised mutex from its first acquisition (ksync/lockdep.h).
 *
 * Destroy/free right after unlock: once ks_mutex_unlock() has made the
 * mutex available it touches nothing but the futex wake on its address, so
 * a thread that then locks, unlocks and frees it is safe (POSIX's rule,
 * glibc bug 13690).
 */
#ifndef KSYNC_MUTEX_H
#define KSYNC_MUTEX_H

#include <ksync/annotate.h>
#include <ksync/common.h>
#include <ksync/time.h>

#define KS_MUTEX_LOCKED 1u    /* held */
#define KS_MUTEX_CONTENDED 2u /* threads may be asleep: unlock must wake one */
#define KS_MUTEX_STARVING 4u  /* a waiter waited too long: newcomers queue */
#define KS_MUTEX_TRACED 8u    /* lock statistics see every acquisition: the fast paths fail */

typedef struct ks_mutex {
    uint32_t state; /* the futex word: KS_MUTEX_* bits */
    uint32_t flags; /* KS_SHARED or 0; constant after init */
} ks_mutex_t;

#define KS_MUTEX_INIT {0u, 0u}

#ifdef KSYNC_DEBUG
#define KS_MUTEX_FAST_ 0 /* every call reaches the library */
#else
#define KS_MUTEX_FAST_ 1
#endif

KS_EXTERN_C_BEGIN

KS_API int ks_mutex_init(ks_mutex_t *m, unsigned flags);
KS_API int ks_mutex_destroy(ks_mutex_t *m);
KS_API int ks_mutex_lock_slow(ks_mutex_t *m, int64_t deadline);
KS_API int ks_mutex_unlock_slow(ks_mutex_t *m);
/* Lock-order checking (ksync/lockdep.h): the calling thread's next
 * acquisition of `second` is the second lock of a ks_mutex_lock2 taken
 * after `first`, in address order.  Called only while checking is on
 * (ks_lockdep_on_, a switch the library sets: relaxed). */
KS_API extern int ks_lockdep_on_;
KS_API void ks_lockdep_ordered_(const void *first, const void *second);
/* A trylock that found KS_MUTEX_TRACED (ksync/lockstat.h, KS_LOCKSTAT_ALL;
 * ksync/lockdep.h), or any trylock under KSYNC_DEBUG. */
KS_API int ks_mutex_trylock_slow(ks_mutex_t *m);

/* Fast paths: a single CAS each.  Acquire on lock pairs with the release
 * in the unlock that made the word 0; release on unlock pairs with the next
 * locker's acquire CAS. */
static inline int ks_mutex_trylock_raw_(ks_mutex_t *m)
{
    uint32_t expect = 0;
    if (KS_UNLIKELY(!m))
        return EINVAL;
    if (!KS_MUTEX_FAST_)
        return ks_mutex_trylock_slow(m);
    if (__atomic_compare_exchange_n(&m->state, &expect, KS_MUTEX_LOCKED, 0, __ATOMIC_ACQUIRE,
                                    __ATOMIC_RELAXED))
        return 0;
    return KS_LIKELY(!(expect & KS_MUTEX_TRACED)) ? EBUSY : ks_mutex_trylock_slow(m);
}

static inline int ks_mutex_lock_raw_(ks_mutex_t *m)
{
    uint32_t expect = 0;
    if (KS_LIKELY(KS_MUTEX_FAST_ && m &&
                  __atomic_compare_exchange_n(&m->state, &expect, KS_MUTEX_LOCKED, 0, __ATOMIC_ACQUIRE,
                                              __ATOMIC_RELAXED)))
        return 0;
    return ks_mutex_lock_slow(m, KS_FOREVER);
}

static inline int ks_mutex_timedlock_raw_(ks_mutex_t *m, int64_t deadline)
{
    uint32_t expect = 0;
    if (KS_LIKELY(KS_MUTEX_FAST_ && m && deadline >= 0 &&
                  __atomic_compare_exchange_n(&m->state, &expect, KS_MUTEX_LOCKED, 0,
                                              __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)))
        return 0;
    return ks_mutex_lock_slow(m, deadline);
}

static inline int ks_mutex_unlock_raw_(ks_mutex_t *m)
{
    uint32_t expect = KS_MUTEX_LOCKED;
    if (KS_LIKELY(KS_MUTEX_FAST_ && m &&
                  __atomic_compare_exchange_n(&m->state, &expect, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED)))
        return 0;
    return ks_mutex_unlock_slow(m);
}

/* What a race detector is told (ksync/annotate.h): nothing, and these are
 * the functions above, unless the program is built with -fsanitize=thread
 * or -DKSYNC_HELGRIND / -DKSYNC_DRD. */
static inline int ks_mutex_trylock(ks_mutex_t *m)
{
    if (m)
        KS_ANN_LOCK_PRE(m, 0, 1);
    int e = ks_mutex_trylock_raw_(m);
    if (m)
        KS_ANN_LOCK_POST(m, 0, 1, e);
    return e;
}

static inline int ks_mutex_lock(ks_mutex_t *m)
{
    if (m)
        KS_ANN_LOCK_PRE(m, 0, 0);
    int e = ks_mutex_lock_raw_(m);
    if (m)
        KS_ANN_LOCK_POST(m, 0, 0, e);
    return e;
}

static inline int ks_mutex_timedlock(ks_mutex_t *m, int64_t deadline)
{
    if (m)
        KS_ANN_LOCK_PRE(m, 0, 1);
    int e = ks_mutex_timedlock_raw_(m, deadline);
    if (m)
        KS_ANN_LOCK_POST(m, 0, 1, e);
    return e;
}

static inline int ks_mutex_unlock(ks_mutex_t *m)
{
    /* an unlock the call refuses (EPERM: not locked) is not told: the
     * caller gets the error (relaxed: the caller's own hold, if any) */
    const int told = KS_ANNOTATING && m && (__atomic_load_n(&m->state, __ATOMIC_RELAXED) & KS_MUTEX_LOCKED);
    if (told)
        KS_ANN_UNLOCK_PRE(m, 0);
    int e = ks_mutex_unlock_raw_(m);
    if (told)
        KS_ANN_UNLOCK_POST(m, 0);
    return e;
}

/* Two mutexes at once, in one global order: the lower address first, so that
 * threads locking the same pair in opposite argument orders (the course's
 * bank transfer: lock(from), lock(to)) cannot deadlock.  a == b takes it
 * once (ks_mutex_unlock2 then releases it once).  A timed acquisition that gets the
 * first and not the second releases the first and reports the second's
 * error (ETIMEDOUT), so it never returns holding one of the two.  The
 * order is the address in the caller's address space: KS_SHARED objects that
 * processes map at different addresses need an order of the caller's own
 * (an account number), or two processes may disagree.
 * Errors: those of ks_mutex_timedlock, and EINVAL if either is NULL. */
static inline int ks_mutex_timedlock2(ks_mutex_t *a, ks_mutex_t *b, int64_t deadline)
{
    if (!a || !b)
        return EINVAL;
    if (a == b)
        return ks_mutex_timedlock(a, deadline);
    if ((uintptr_t)b < (uintptr_t)a) {
        ks_mutex_t *t = a;
        a = b;
        b = t;
    }
    int e = ks_mutex_timedlock(a, deadline);
    if (e != 0)
        return e;
    /* relaxed: a switch; the checker is told that this order is lock2's
     * (lock-order checking, docs/lockdep.md) */
    if (KS_UNLIKELY(__atomic_load_n(&ks_lockdep_on_, __ATOMIC_RELAXED)))
        ks_lockdep_ordered_(a, b);
    e = ks_mutex_timedlock(b, deadline);
    if (e != 0)
        (void)ks_mutex_unlock(a);
    return e;
}

static inline int ks_mutex_lock2(ks_mutex_t *a, ks_mutex_t *b) { return ks_mutex_timedlock2(a, b, KS_FOREVER); }

/* Releases what ks_mutex_lock2 took (either argument order); the first error of the
 * two unlocks, both attempted. */
static inline int ks_mutex_unlock2(ks_mutex_t *a, ks_mutex_t *b)
{
    if (!a || !b)
        return EINVAL;
    int e = ks_mutex_unlock(a);
    if (a == b)
        return e;
    int e2 = ks_mutex_unlock(b);
    return e != 0 ? e : e2;
}

KS_EXTERN_C_END

#endif

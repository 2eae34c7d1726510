/* ksync/sem.h - counting and bounded semaphores (Python's Semaphore and
 * BoundedSemaphore).  Algorithm and proof sketch: docs/sem.md.
 *
 *   ks_sem_t s;  ks_sem_init(&s, 3, 0);              counting, starts at 3
 *   ks_sem_t b;  ks_sem_init_bounded(&b, 3, 3, 0);   a post above 3 is refused
 *   ks_sem_t z = KS_SEM_INIT(0);                     static, counting
 *
 * Return values (errno codes):
 *   init / init_bounded  0, EINVAL (NULL, unknown flags, value > max,
 *                        max == 0 or max > KS_SEM_VALUE_MAX)
 *   wait                 0, EINVAL
 *   trywait              0, EAGAIN (value is 0), EINVAL
 *   timedwait            0, ETIMEDOUT, EINVAL (NULL or negative deadline)
 *   post                 0, EOVERFLOW (value already at max: nothing changes), EINVAL
 *   value                the current value (>= 0), or -EINVAL for NULL
 *   destroy              0, EBUSY (threads are waiting), EINVAL.  destroy
 *                        changes nothing: destroying twice is 0, and a
 *                        destroyed semaphore may be initialised again; any
 *                        other use after destroy is undefined.
 *
 * A semaphore can be destroyed and freed as soon as the wait that took the
 * last unit returns: post never touches it after the atomic increment except
 * to issue the futex wake on its address (glibc bug 12674).
 *
 * Lock statistics (ksync/lockstat.h) count the waits that reach the
 * library: those that found no unit, and their wait times.  A wait that
 * finds a unit is inline and unseen, unless built with -DKSYNC_DEBUG, which
 * sends every wait and trywait to the library (or made through the drop-in
 * layer's sem_t under KS_LOCKSTAT_ALL).  A semaphore has no holder: no
 * hold times.
 */
#ifndef KSYNC_SEM_H
#define KSYNC_SEM_H

#include <ksync/annotate.h>
#include <ksync/common.h>
#include <ksync/time.h>

#define KS_SEM_VALUE_MAX 0x7fffffffu

/* state: bits 0-30 value, bit 31 WAKING (a wake is on its way to a waiter),
 * bits 32-63 number of registered waiters.  The futex word is the low half. */
#define KS_SEM_VALUE_MASK 0x7fffffffull
#define KS_SEM_WAKING 0x80000000ull
#define KS_SEM_ONE_WAITER (1ull << 32)

typedef struct ks_sem {
    uint64_t state __attribute__((aligned(8)));
    uint32_t max;   /* 0 means KS_SEM_VALUE_MAX (so all zeros is valid); constant */
    uint32_t flags; /* KS_SHARED or 0; constant after init */
} ks_sem_t;

#define KS_SEM_INIT(value) {(uint64_t)(value), 0u, 0u}

#ifdef KSYNC_DEBUG
#define KS_SEM_FAST_ 0 /* every wait reaches the library (lock statistics) */
#else
#define KS_SEM_FAST_ 1
#endif

KS_EXTERN_C_BEGIN

KS_API int ks_sem_init(ks_sem_t *s, unsigned value, unsigned flags);
KS_API int ks_sem_init_bounded(ks_sem_t *s, unsigned value, unsigned max, unsigned flags);
KS_API int ks_sem_destroy(ks_sem_t *s);
/* The out-of-line halves of wait/timedwait/post.  Each is the complete
 * operation (the inline functions below only save a call when no thread
 * waits), and both are stable entry points for languages that cannot call
 * an inline function (python/ksync.py; docs/conventions.md). */
KS_API int ks_sem_wait_slow(ks_sem_t *s, int64_t deadline);
KS_API int ks_sem_post_slow(ks_sem_t *s);
/* trywait in the library (a -DKSYNC_DEBUG build's, for lock statistics) */
KS_API int ks_sem_trywait_slow(ks_sem_t *s);

static inline int ks_sem_value(const ks_sem_t *s)
{
    if (KS_UNLIKELY(!s))
        return -EINVAL;
    /* relaxed: a snapshot that may be stale by the time it is returned. */
    return (int)(__atomic_load_n(&s->state, __ATOMIC_RELAXED) & KS_SEM_VALUE_MASK);
}

/* Take a unit if there is one.  acquire: pairs with the release in post. */
static inline int ks_sem_trywait_raw_(ks_sem_t *s)
{
    if (KS_UNLIKELY(!s))
        return EINVAL;
    if (!KS_SEM_FAST_)
        return ks_sem_trywait_slow(s);
    uint64_t v = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
    while (v & KS_SEM_VALUE_MASK)
        if (__atomic_compare_exchange_n(&s->state, &v, v - 1, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return 0;
    return EAGAIN;
}

static inline int ks_sem_wait_raw_(ks_sem_t *s)
{
    if (KS_LIKELY(KS_SEM_FAST_ && ks_sem_trywait_raw_(s) == 0))
        return 0;
    return ks_sem_wait_slow(s, KS_FOREVER);
}

static inline int ks_sem_timedwait_raw_(ks_sem_t *s, int64_t deadline)
{
    if (KS_LIKELY(KS_SEM_FAST_ && deadline >= 0 && ks_sem_trywait_raw_(s) == 0))
        return 0;
    return ks_sem_wait_slow(s, deadline);
}

/* Fast path: nobody registered as waiting and room below max: one CAS.
 * release: pairs with the acquire CAS of the waiter that takes the unit. */
static inline int ks_sem_post_raw_(ks_sem_t *s)
{
    if (KS_LIKELY(s != 0)) {
        uint64_t lim = s->max ? s->max : KS_SEM_VALUE_MAX;
        uint64_t v = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
        if ((v >> 32) == 0 && (v & KS_SEM_VALUE_MASK) < lim &&
            __atomic_compare_exchange_n(&s->state, &v, v + 1, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
            return 0;
    }
    return ks_sem_post_slow(s);
}

/* What a race detector is told (ksync/annotate.h): a post happens before
 * the wait that takes its unit.  Nothing unless the program is built for
 * one. */
static inline int ks_sem_trywait(ks_sem_t *s)
{
    int e = ks_sem_trywait_raw_(s);
    if (!e)
        KS_ANN_ACQUIRE(s);
    return e;
}

static inline int ks_sem_wait(ks_sem_t *s)
{
    if (s)
        KS_ANN_OBJECT(s);
    int e = ks_sem_wait_raw_(s);
    if (!e)
        KS_ANN_ACQUIRE(s);
    return e;
}

static inline int ks_sem_timedwait(ks_sem_t *s, int64_t deadline)
{
    if (s)
        KS_ANN_OBJECT(s);
    int e = ks_sem_timedwait_raw_(s, deadline);
    if (!e)
        KS_ANN_ACQUIRE(s);
    return e;
}

static inline int ks_sem_post(ks_sem_t *s)
{
    if (s) {
        KS_ANN_OBJECT(s);
        KS_ANN_RELEASE(s);
    }
    return ks_sem_post_raw_(s);
}

KS_EXTERN_C_END

#endif

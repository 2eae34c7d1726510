/* src/dropin/prwlock.c - pthread_rwlock_* on ks_rwlock.  docs/dropin.md.
 *
 * Layout inside glibc's 56-byte pthread_rwlock_t: the ks_rwlock_t at 0
 * (its flags hold KS_SHARED), the tid of the writer holding it at 24, and
 * glibc's kind at glibc's offset 48, where
 * PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP puts it.
 *
 * Kinds, as glibc: PTHREAD_RWLOCK_PREFER_READER_NP (the default, 0) and
 * PTHREAD_RWLOCK_PREFER_WRITER_NP (1, which glibc treats as reader
 * preference too) let readers in while writers wait, so a thread may take
 * a read lock it already holds; PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP
 * (2) keeps new readers out while a writer waits.  The preference is passed
 * to ksync's slow paths per call, read from the kind field.
 *
 * Lock statistics (docs/lockstat.md): every call passes the program's call
 * site, the class of the lock's records; while KS_LOCKSTAT_ALL is on
 * (ks_trace_all_) the fast paths below give way to the library's, so that a
 * statically initialised lock is counted from its first call.
 *
 * EDEADLK, as glibc: a thread that holds the write lock and asks for it
 * again, or for a read lock.  The writer's tid is written after it takes
 * the lock and cleared before it releases it; other threads only compare
 * it with their own tid (relaxed).
 */
#include "dropin.h"

#include <string.h>

/* The drop-in's locks never use the reader bias (src/rwlock.c): glibc lets
 * a thread release a read lock another thread took, which a slot of the
 * visible-readers table cannot allow.  This overrides the library's weak 0. */
KS_HIDDEN int ks_rwlock_no_bias = 1;

struct ks_prwlock {
    ks_rwlock_t l;
    uint32_t unused[2];
    int writer; /* tid of the thread holding the write lock, 0 if none */
};
_Static_assert(sizeof(struct ks_prwlock) <= offsetof(pthread_rwlock_t, __data.__flags),
               "ksync's fields end before glibc's kind");

static struct ks_prwlock *prw(pthread_rwlock_t *l)
{
    return (struct ks_prwlock *)(void *)l;
}

static int prefer_reader(const pthread_rwlock_t *l)
{
    /* relaxed: constant after init */
    return __atomic_load_n(&l->__data.__flags, __ATOMIC_RELAXED) != PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP;
}

static int writer_is_me(const struct ks_prwlock *l)
{
    int w = __atomic_load_n(&l->writer, __ATOMIC_RELAXED);
    return w && w == ks_pt_tid();
}

KS_PT_EXPORT int pthread_rwlock_init(pthread_rwlock_t *lock, const pthread_rwlockattr_t *attr)
{
    int kind = PTHREAD_RWLOCK_DEFAULT_NP, pshared = PTHREAD_PROCESS_PRIVATE;
    if (attr) {
        pthread_rwlockattr_getkind_np(attr, &kind);
        pthread_rwlockattr_getpshared(attr, &pshared);
    }
    memset(lock, 0, sizeof *lock);
    int r = ks_rwlock_init_at(&prw(lock)->l, pshared == PTHREAD_PROCESS_SHARED ? KS_SHARED : 0,
                              __builtin_return_address(0));
    lock->__data.__flags = (unsigned)kind;
    return r;
}

KS_PT_EXPORT int pthread_rwlock_destroy(pthread_rwlock_t *lock)
{
    return ks_rwlock_destroy(&prw(lock)->l);
}

/* The calls after a failed fast path, out of line: the fast paths below
 * then need no stack frame (keeping `site` across the tid lookup gave them
 * one: 11 more instructions per read lock). */
static __attribute__((noinline)) int rdlock_slow(pthread_rwlock_t *lock, int64_t deadline, const void *site)
{
    if (writer_is_me(prw(lock)))
        return EDEADLK;
    return ks_rwlock_rdlock_mode(&prw(lock)->l, deadline, prefer_reader(lock), site, ks_pt_counting_all());
}

static __attribute__((noinline)) int wrlock_slow(pthread_rwlock_t *lock, int64_t deadline, const void *site)
{
    struct ks_prwlock *l = prw(lock);
    if (writer_is_me(l))
        return EDEADLK;
    int r = ks_rwlock_wrlock_at(&l->l, deadline, site);
    if (r == 0)
        __atomic_store_n(&l->writer, ks_pt_tid(), __ATOMIC_RELAXED);
    return r;
}

static inline int rdlock(pthread_rwlock_t *lock, int64_t deadline, const void *site)
{
    struct ks_prwlock *l = prw(lock);
    uint64_t v = __atomic_load_n(&l->l.state, __ATOMIC_RELAXED);
    /* acquire: pairs with the release in unlock (as ks_rwlock_rdlock). */
    if (KS_LIKELY(ks_rwlock_read_lockable_(v) &&
                  !(ks_rwlock_bias_(&l->l) & (KS_RWLOCK_BIAS | KS_RWLOCK_TRACED)) && !ks_pt_counting_all() &&
                  __atomic_compare_exchange_n(&l->l.state, &v, v + 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)))
        return 0;
    return rdlock_slow(lock, deadline, site);
}

static inline int wrlock(pthread_rwlock_t *lock, int64_t deadline, const void *site)
{
    struct ks_prwlock *l = prw(lock);
    uint64_t zero = 0;
    /* acquire: pairs with the release in unlock (as ks_rwlock_wrlock). */
    if (KS_LIKELY(!ks_pt_counting_all() && __atomic_compare_exchange_n(&l->l.state, &zero, KS_RWLOCK_WRITER, 0,
                                                                 __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))) {
        int r = KS_LIKELY(!(ks_rwlock_bias_(&l->l) & (KS_RWLOCK_BIAS_USED | KS_RWLOCK_TRACED)))
                    ? 0
                    : ks_rwlock_revoke_at(&l->l, deadline, site);
        if (r == 0)
            __atomic_store_n(&l->writer, ks_pt_tid(), __ATOMIC_RELAXED);
        return r;
    }
    return wrlock_slow(lock, deadline, site);
}

KS_PT_EXPORT int pthread_rwlock_rdlock(pthread_rwlock_t *lock)
{
    return rdlock(lock, KS_FOREVER, __builtin_return_address(0));
}

KS_PT_EXPORT int pthread_rwlock_wrlock(pthread_rwlock_t *lock)
{
    return wrlock(lock, KS_FOREVER, __builtin_return_address(0));
}

KS_PT_EXPORT int pthread_rwlock_tryrdlock(pthread_rwlock_t *lock)
{
    return ks_rwlock_tryrdlock_mode(&prw(lock)->l, prefer_reader(lock), __builtin_return_address(0));
}

KS_PT_EXPORT int pthread_rwlock_trywrlock(pthread_rwlock_t *lock)
{
    struct ks_prwlock *l = prw(lock);
    int r = ks_pt_counting_all() ? ks_rwlock_trywrlock_at(&l->l, __builtin_return_address(0)) : ks_rwlock_trywrlock(&l->l);
    if (r == 0)
        __atomic_store_n(&l->writer, ks_pt_tid(), __ATOMIC_RELAXED);
    return r;
}

/* As glibc: the clock and tv_nsec are checked before the lock is tried
 * (EINVAL even when it is free). */
static int clocklock(pthread_rwlock_t *lock, clockid_t clock, const struct timespec *abstime, int wr,
                     const void *site)
{
    int64_t deadline;
    int r = ks_pt_deadline(clock, abstime, &deadline);
    if (r)
        return r;
    return wr ? wrlock(lock, deadline, site) : rdlock(lock, deadline, site);
}

KS_PT_EXPORT int pthread_rwlock_clockrdlock(pthread_rwlock_t *lock, clockid_t clock, const struct timespec *abstime)
{
    return clocklock(lock, clock, abstime, 0, __builtin_return_address(0));
}

KS_PT_EXPORT int pthread_rwlock_clockwrlock(pthread_rwlock_t *lock, clockid_t clock, const struct timespec *abstime)
{
    return clocklock(lock, clock, abstime, 1, __builtin_return_address(0));
}

KS_PT_EXPORT int pthread_rwlock_timedrdlock(pthread_rwlock_t *lock, const struct timespec *abstime)
{
    return clocklock(lock, CLOCK_REALTIME, abstime, 0, __builtin_return_address(0));
}

KS_PT_EXPORT int pthread_rwlock_timedwrlock(pthread_rwlock_t *lock, const struct timespec *abstime)
{
    return clocklock(lock, CLOCK_REALTIME, abstime, 1, __builtin_return_address(0));
}

KS_PT_EXPORT int pthread_rwlock_unlock(pthread_rwlock_t *lock)
{
    struct ks_prwlock *l = prw(lock);
    /* The write lock's holder clears its tid before releasing; a reader
     * sees 0 here (no writer holds it while readers do). */
    if (__atomic_load_n(&l->writer, __ATOMIC_RELAXED))
        __atomic_store_n(&l->writer, 0, __ATOMIC_RELAXED);
    uint64_t v = __atomic_load_n(&l->l.state, __ATOMIC_RELAXED);
    uint64_t held = v & KS_RWLOCK_WRITER;
    /* release: pairs with the acquire of the next locker (as ks_rwlock_unlock). */
    if (KS_LIKELY(held && !(v & ~KS_RWLOCK_WRITER) &&
                  !(ks_rwlock_bias_(&l->l) & (KS_RWLOCK_BIAS_USED | KS_RWLOCK_TRACED)) &&
                  __atomic_compare_exchange_n(&l->l.state, &v, held == KS_RWLOCK_WRITER ? 0 : v - 1, 0,
                                              __ATOMIC_RELEASE, __ATOMIC_RELAXED)))
        return 0;
    return ks_rwlock_unlock_mode(&l->l, prefer_reader(lock));
}

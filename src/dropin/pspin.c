/* src/dropin/pspin.c - pthread_spin_*.  docs/dropin.md.
 *
 * glibc's pthread_spinlock_t is an int: test-and-test-and-set with the arch
 * layer's pause, never sleeping (a spinlock that slept would be a mutex;
 * glibc spins too).  One int works across processes as it is, so pshared
 * needs nothing.
 *
 * Lock statistics (docs/lockstat.md; kind KS_LOCK_SPIN): a lock whose first
 * exchange fails is a contended acquisition, its wait the spin; while
 * KS_LOCKSTAT_ALL is on every lock and trylock is counted.  Every unlock is
 * this library's function, so a counted acquisition's hold is timed at
 * its unlock (once statistics have been on, an unlock looks for a stamp).
 * The class is the call site of pthread_spin_init, or of the first counted
 * acquisition.
 */
#include "dropin.h"

#include <ksync/lockstat.h>

/* The lock's address as lock statistics' key (pthread_spinlock_t is a
 * volatile int). */
static inline const void *key(pthread_spinlock_t *lock)
{
    return (const void *)(uintptr_t)lock;
}

KS_PT_EXPORT int pthread_spin_init(pthread_spinlock_t *lock, int pshared)
{
    (void)pshared; /* one int works across processes as it is */
    __atomic_store_n(lock, 0, __ATOMIC_RELAXED);
    if (KS_UNLIKELY(ks_ls_mode()))
        ks_ls_init(key(lock), KS_LOCK_SPIN, __builtin_return_address(0));
    return 0;
}

KS_PT_EXPORT int pthread_spin_destroy(pthread_spinlock_t *lock)
{
    (void)lock;
    return 0;
}

/* failed: the caller's exchange failed (a contended acquisition); else it
 * made none (statistics count every acquisition). */
static __attribute__((noinline)) int spin_lock_slow(pthread_spinlock_t *lock, int failed, const void *site)
{
    /* the record before the lock: nothing but the stamp inside it */
    void *rec = ks_ls_mode() ? ks_ls_enter(key(lock), KS_LOCK_SPIN, site) : NULL;
    const uint64_t t0 = rec ? ks_ticks() : 0;
    int waited = failed;
    /* acquire: pairs with the release store in pthread_spin_unlock. */
    if (waited || __atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE)) {
        waited = 1;
        do {
            while (__atomic_load_n(lock, __ATOMIC_RELAXED)) /* wait without writing the line */
                ks_cpu_relax();
        } while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE)); /* acquire: as above */
    }
    if (rec) {
        const uint64_t now = waited ? ks_ticks() : t0;
        ks_ls_acquired(rec, waited, now - t0, now); /* the unlock always comes here: stamped */
    }
    return 0;
}

KS_PT_EXPORT int pthread_spin_lock(pthread_spinlock_t *lock)
{
    if (KS_UNLIKELY(ks_pt_counting_all()))
        return spin_lock_slow(lock, 0, __builtin_return_address(0));
    /* acquire: pairs with the release store in pthread_spin_unlock. */
    if (KS_LIKELY(!__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE)))
        return 0;
    return spin_lock_slow(lock, 1, __builtin_return_address(0));
}

static __attribute__((noinline)) int spin_trylock_counted(pthread_spinlock_t *lock, const void *site)
{
    void *rec = ks_ls_enter(key(lock), KS_LOCK_SPIN, site);
    /* acquire: as in pthread_spin_lock. */
    if (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE))
        return EBUSY;
    if (rec)
        ks_ls_acquired(rec, 0, 0, ks_ticks());
    return 0;
}

KS_PT_EXPORT int pthread_spin_trylock(pthread_spinlock_t *lock)
{
    if (KS_UNLIKELY(ks_pt_counting_all()))
        return spin_trylock_counted(lock, __builtin_return_address(0));
    /* acquire: as in pthread_spin_lock. */
    return __atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE) ? EBUSY : 0;
}

/* Out of line, so that the unlock below needs no stack frame. */
static __attribute__((noinline)) int spin_unlock_timed(pthread_spinlock_t *lock)
{
    /* the hold ends while the lock is still ours; counted after the store */
    void *rec = NULL;
    uint64_t held = ks_ls_hold_end(key(lock), &rec);
    /* release: pairs with the acquire exchange of the next locker. */
    __atomic_store_n(lock, 0, __ATOMIC_RELEASE);
    if (rec)
        ks_ls_hold_add(rec, held);
    return 0;
}

KS_PT_EXPORT int pthread_spin_unlock(pthread_spinlock_t *lock)
{
    if (KS_UNLIKELY(ks_ls_ever()))
        return spin_unlock_timed(lock);
    /* release: pairs with the acquire exchange of the next locker. */
    __atomic_store_n(lock, 0, __ATOMIC_RELEASE);
    return 0;
}

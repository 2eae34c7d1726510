/* src/dropin/pspin.c - pthread_spin_*.  docs/dropin.md.
 *
 * glibc's pthread_spinlock_t is an int: test-and-test-and-set with the arch
 * layer's pause, never sleeping (a spinlock that slept would be a mutex;
 * glibc spins too).  One int works across processes as it is, so pshared
 * needs nothing.
 */
#include "dropin.h"

KS_PT_EXPORT int pthread_spin_init(pthread_spinlock_t *lock, int pshared)
{
    (void)pshared; /* one int works across processes as it is */
    __atomic_store_n(lock, 0, __ATOMIC_RELAXED);
    return 0;
}

KS_PT_EXPORT int pthread_spin_destroy(pthread_spinlock_t *lock)
{
    (void)lock;
    return 0;
}

KS_PT_EXPORT int pthread_spin_lock(pthread_spinlock_t *lock)
{
    /* acquire: pairs with the release store in pthread_spin_unlock. */
    while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(lock, __ATOMIC_RELAXED)) /* wait without writing the line */
            ks_cpu_relax();
    return 0;
}

KS_PT_EXPORT int pthread_spin_trylock(pthread_spinlock_t *lock)
{
    /* acquire: as in pthread_spin_lock. */
    return __atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE) ? EBUSY : 0;
}

KS_PT_EXPORT int pthread_spin_unlock(pthread_spinlock_t *lock)
{
    /* release: pairs with the acquire exchange of the next locker. */
    __atomic_store_n(lock, 0, __ATOMIC_RELEASE);
    return 0;
}

/* src/dropin/pbarrier.c - pthread_barrier_* on ks_barrier.  docs/dropin.md.
 *
 * ks_barrier_t sits at the start of glibc's 32-byte object; ks_barrier_wait
 * returns KS_BARRIER_SERIAL, which is PTHREAD_BARRIER_SERIAL_THREAD, to
 * exactly one thread a round, and destroy waits until the released threads
 * have left the object (glibc's does too), so "wait returned SERIAL, destroy,
 * free" is safe.
 */
#include "dropin.h"

#include <limits.h>

_Static_assert(sizeof(ks_barrier_t) <= sizeof(pthread_barrier_t), "fits in pthread_barrier_t");
_Static_assert(KS_BARRIER_SERIAL == PTHREAD_BARRIER_SERIAL_THREAD, "same serial value");

static ks_barrier_t *pbar(pthread_barrier_t *b)
{
    return (ks_barrier_t *)(void *)b;
}

KS_PT_EXPORT int pthread_barrier_init(pthread_barrier_t *barrier, const pthread_barrierattr_t *attr, unsigned count)
{
    int pshared = PTHREAD_PROCESS_PRIVATE;
    if (attr)
        pthread_barrierattr_getpshared(attr, &pshared);
    if (count == 0 || count >= INT_MAX) /* glibc's bounds (KS_BARRIER_MAX is INT_MAX) */
        return EINVAL;
    return ks_barrier_init(pbar(barrier), count, pshared == PTHREAD_PROCESS_SHARED ? KS_SHARED : 0);
}

KS_PT_EXPORT int pthread_barrier_destroy(pthread_barrier_t *barrier)
{
    return ks_barrier_destroy(pbar(barrier));
}

KS_PT_EXPORT int pthread_barrier_wait(pthread_barrier_t *barrier)
{
    return ks_barrier_wait(pbar(barrier));
}

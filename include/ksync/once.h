/* ksync/once.h - run-once initialisation (pthread_once).  docs/once.md.
 *
 *   static ks_once_t once = KS_ONCE_INIT;     (all zeros)
 *   ks_once(&once, init_fn);                  init_fn: void (*)(void)
 *
 * The first caller runs init_fn; every other caller, concurrent or later,
 * returns only after init_fn has returned, and sees everything it wrote.
 * Returns 0, or EINVAL for a NULL argument.  After completion a call is one
 * acquire load.  If init_fn is left by thread cancellation, pthread_exit or
 * a C++ exception, the run did not happen: the object is NEW again and the
 * next caller runs its function (as pthread_once and std::call_once); leaving
 * it by longjmp leaves the other callers blocked, and calling ks_once on the
 * same object from inside init_fn deadlocks.  KS_ONCE_INIT_SHARED is the initialiser for an
 * object in shared memory used by several processes.
 *
 * Fork: if a thread is inside init_fn when another thread forks (fork(),
 * _Fork(), or a raw clone), the child's first caller runs init_fn again, as
 * glibc's pthread_once does (the thread that was running it does not exist
 * in the child).  A KS_SHARED object is never taken over this way.
 */
#ifndef KSYNC_ONCE_H
#define KSYNC_ONCE_H

#include <ksync/common.h>

/* The kind of state, in the low two bits of `state`.  While init_fn runs
 * in a private object, the other bits hold the runner's fork generation. */
#define KS_ONCE_NEW 0u      /* nobody has started */
#define KS_ONCE_RUNNING 1u  /* a thread runs init_fn */
#define KS_ONCE_WAITED 2u   /* running, and other threads sleep */
#define KS_ONCE_DONE 3u     /* the whole word is exactly 3 */

typedef struct ks_once {
    uint32_t state; /* the futex word */
    uint32_t flags; /* KS_SHARED or 0 */
} ks_once_t;

#define KS_ONCE_INIT {0u, 0u}
#define KS_ONCE_INIT_SHARED {0u, 1u}

KS_EXTERN_C_BEGIN

KS_API int ks_once_slow(ks_once_t *o, void (*fn)(void));

/* acquire: pairs with the release store of KS_ONCE_DONE after fn returned. */
static inline int ks_once(ks_once_t *o, void (*fn)(void))
{
    if (KS_LIKELY(o && fn && __atomic_load_n(&o->state, __ATOMIC_ACQUIRE) == KS_ONCE_DONE))
        return 0;
    return ks_once_slow(o, fn);
}

KS_EXTERN_C_END

#endif

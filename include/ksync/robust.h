/* ksync/robust.h - a robust mutex: when its owner dies holding it (the
 * thread exits, or its process is killed), the next locker gets EOWNERDEAD
 * and owns it, as POSIX robust mutexes behave.  Built on the kernel's
 * robust-futex list: the futex word holds the owner's kernel TID, and the
 * object carries a list node at the offset glibc's own robust mutexes use,
 * so the kernel's walk of glibc's per-thread list at thread death finds it.
 * State machine, list cooperation, what survives which death, figures:
 * docs/robust.md.
 *
 *   ks_robust_t m = KS_ROBUST_INIT;      (all zeros is a valid free mutex)
 *   ks_robust_init(&m, KS_SHARED);       (for a mutex in shared memory)
 *   ks_robust_init(&m, KS_SHARED | KS_ROBUST_RECURSIVE);  (a recursive one,
 *                                        or KS_ROBUST_RECURSIVE_INIT)
 *   int e = ks_robust_lock(&m);
 *   if (e == EOWNERDEAD) { ...repair the data...; ks_robust_consistent(&m); }
 *   else if (e) ...;
 *   ks_robust_unlock(&m);
 *
 * Return values (errno codes, never through errno):
 *   init        0, EINVAL (NULL, flags other than KS_SHARED and
 *               KS_ROBUST_RECURSIVE, or an object not aligned to
 *               _Alignof(ks_robust_t)), EBUSY (the
 *               caller holds it: re-initialising would cut its robust
 *               list), ENOTSUP (this C library's robust list has another
 *               layout)
 *   lock        0, EOWNERDEAD (the caller owns it now, but its last owner
 *               died holding it: the data it protects may be inconsistent),
 *               ENOTRECOVERABLE (an owner that got EOWNERDEAD unlocked it
 *               without ks_robust_consistent: the mutex is unusable),
 *               EDEADLK (the caller holds it already; a recursive mutex
 *               instead counts one more level and returns 0, or EAGAIN
 *               when the count would pass KS_ROBUST_MAX_DEPTH), ENOTSUP (the thread
 *               has no robust list, or one of another layout), EINVAL
 *               (NULL or misaligned)
 *   trylock     as lock, plus EBUSY (held by another thread)
 *   timedlock   as lock, plus ETIMEDOUT; EINVAL for a negative deadline
 *               (absolute CLOCK_MONOTONIC ns, see ksync/time.h)
 *   unlock      0, EPERM (the caller does not hold it), EINVAL.  Unlocking
 *               after EOWNERDEAD without ks_robust_consistent makes the
 *               mutex not recoverable (waiters get ENOTRECOVERABLE).  A
 *               recursive mutex is released by the unlock that matches its
 *               first lock; the ones before only count down.  The owner that
 *               takes a recursive mutex with EOWNERDEAD holds it once (the
 *               dead owner's levels are gone with it)
 *   consistent  0, EINVAL (NULL, not held by the caller, or not inconsistent)
 *   destroy     0, EBUSY (held), EINVAL.  A free, owner-dead or
 *               not-recoverable mutex may be destroyed and initialised
 *               again.  destroy cannot see sleepers (the word shows only
 *               that one may exist): as for every ksync object, destroy only
 *               once no thread can still be inside a call on it
 *
 * Trust and lifetime.  The list node lives in the mutex, so in shared
 * memory every process that can write the segment can write the pointers
 * this process's unlock follows (glibc's process-shared robust mutexes have
 * the same exposure): share a robust mutex only with processes you trust.
 * Unmapping or freeing a mutex while it is held breaks the thread's whole
 * robust list (the next robust lock of any mutex, glibc's included, faults,
 * and the kernel's walk at death stops there).  TIDs are per PID namespace:
 * processes in different namespaces must not share one (equal TIDs pass
 * the owner checks).  A vfork child must not lock one (it would run on the
 * parent's TID and list).  ks_robust is for 64-bit glibc only.
 *
 * Both KS_PRIVATE and KS_SHARED mutexes use the process-shared futex
 * operations: the kernel wakes robust futexes with a shared wake, which a
 * private-op waiter would not hear (glibc does the same for its robust
 * mutexes).  The calls are not async-signal-safe (nor are glibc's): a
 * handler must not lock a robust mutex on a thread that may be inside one
 * of these calls.  x86-64 and AArch64 with glibc (LP64 pthread_mutex_t);
 * elsewhere ENOTSUP.
 */
#ifndef KSYNC_ROBUST_H
#define KSYNC_ROBUST_H

#include <ksync/common.h>
#include <ksync/time.h>

/* The futex word: the bits of <linux/futex.h>, by value so that this
 * header needs no kernel header. */
#define KS_ROBUST_WAITERS 0x80000000u    /* FUTEX_WAITERS: unlock must wake */
#define KS_ROBUST_OWNER_DIED 0x40000000u /* FUTEX_OWNER_DIED: inconsistent */
#define KS_ROBUST_TID_MASK 0x3fffffffu   /* FUTEX_TID_MASK: owner's TID */
/* Not recoverable: a "TID" above every PID the kernel can hand out
 * (PID_MAX_LIMIT is 2^22), so no thread's death ever matches it. */
#define KS_ROBUST_NOTRECOVERABLE KS_ROBUST_TID_MASK

/* Init flag: the owner may lock it again (Python's RLock, a recursive
 * pthread mutex), up to KS_ROBUST_MAX_DEPTH levels. */
#define KS_ROBUST_RECURSIVE 2u
#define KS_ROBUST_MAX_DEPTH (UINT32_MAX - 1) /* levels above the first: UINT32_MAX in all, as glibc */

/* 40 bytes, laid out as glibc's LP64 pthread_mutex_t where it matters: the
 * futex word at 0, the list node's prev at 24 and next at 32, so that the
 * kernel's futex_offset for the thread (glibc's, -32) leads from the node to
 * the word, and glibc's own list code may update our prev when it unlinks
 * its mutex next to ours. */
typedef struct ks_robust {
    uint32_t word;          /* the futex word: owner TID | WAITERS | OWNER_DIED */
    uint32_t flags;         /* KS_SHARED, KS_ROBUST_RECURSIVE; constant after init */
    uint32_t depth;         /* recursive: levels above the first; the owner's alone */
    uint32_t reserved_[3];  /* keeps the node where glibc has its list; zero
                             * after init and never written after it: the
                             * drop-in layer's mutex word overlays
                             * reserved_[2] (src/dropin/dropin.h) */
    void *prev_;            /* glibc's __list.__prev: the previous node's next slot */
    void *next_;            /* glibc's __list.__next, the kernel's struct robust_list */
} ks_robust_t;

#define KS_ROBUST_INIT {0u, 0u, 0u, {0u, 0u, 0u}, 0, 0}
#define KS_ROBUST_RECURSIVE_INIT {0u, KS_ROBUST_RECURSIVE, 0u, {0u, 0u, 0u}, 0, 0}

KS_EXTERN_C_BEGIN

KS_API int ks_robust_init(ks_robust_t *m, unsigned flags);
KS_API int ks_robust_destroy(ks_robust_t *m);
KS_API int ks_robust_lock(ks_robust_t *m);
KS_API int ks_robust_trylock(ks_robust_t *m);
KS_API int ks_robust_timedlock(ks_robust_t *m, int64_t deadline);
KS_API int ks_robust_unlock(ks_robust_t *m);
KS_API int ks_robust_consistent(ks_robust_t *m);

KS_EXTERN_C_END

#endif

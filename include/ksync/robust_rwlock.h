/* ksync/robust_rwlock.h - a reader-writer lock whose writer side is robust:
 * when a writer dies holding it (its thread exits, its process is killed),
 * the next locker, reader or writer, gets EOWNERDEAD and holds it
 * exclusively, to repair the data; readers and writers asleep behind the
 * dead writer do not hang.  The writer side is a ks_robust_t (the kernel's
 * robust-futex list); readers are a count.  Algorithm, state machine, what
 * survives which death, figures: docs/robust_rwlock.md.
 *
 *   ks_robust_rwlock_t rw = KS_ROBUST_RWLOCK_INIT;   (all zeros: free)
 *   ks_robust_rwlock_init(&rw, KS_SHARED);           (in shared memory)
 *   int e = ks_robust_rwlock_rdlock(&rw);
 *   if (e == EOWNERDEAD) {            the caller holds it EXCLUSIVELY:
 *       ...repair...;                 a writer died inside
 *       ks_robust_rwlock_consistent(&rw);
 *   } else if (e) ...;
 *   ...read...;
 *   ks_robust_rwlock_unlock(&rw);     (either side)
 *
 * Return values (errno codes, never through errno):
 *   init         0, EINVAL (NULL, misaligned, flags other than KS_SHARED),
 *                EBUSY (the caller holds the write side), ENOTSUP (this C
 *                library's robust list has another layout)
 *   rdlock       0 (held shared), EOWNERDEAD (held EXCLUSIVELY: a writer
 *                died holding it; repair, then ks_robust_rwlock_consistent),
 *                ENOTRECOVERABLE, EDEADLK (the caller holds the write side),
 *                EAGAIN (2^30 - 1 readers inside), ENOTSUP (a dead writer to
 *                take over and no robust list), EINVAL
 *   tryrdlock    as rdlock, plus EBUSY
 *   timedrdlock  as rdlock, plus ETIMEDOUT; EINVAL for a negative deadline
 *   wrlock       0, EOWNERDEAD, ENOTRECOVERABLE, EDEADLK, ENOTSUP, EINVAL
 *   trywrlock    as wrlock, plus EBUSY (a writer holds it or readers are in)
 *   timedwrlock  as wrlock, plus ETIMEDOUT
 *   unlock       0, EPERM (the caller holds neither side), EINVAL.  After
 *                EOWNERDEAD without consistent: not recoverable for everyone
 *   consistent   0, EINVAL (not held by the caller after EOWNERDEAD)
 *   destroy      0, EBUSY (held, or readers inside), EINVAL
 *
 * Writer-preferring: once a writer holds the write side, no new reader
 * enters; the readers inside finish and the writer goes in.  A reader that
 * asks for the write side (or the reverse) deadlocks, as with every
 * rwlock; the timed calls end it.  Readers are counted, not named: a READER
 * that dies holding it leaves its count for ever, and a writer waits until
 * its deadline (docs/robust_rwlock.md says why, and what to do).  The
 * trust, lifetime and namespace rules of ks_robust (ksync/robust.h) apply:
 * the write side is a ks_robust_t.
 */
#ifndef KSYNC_ROBUST_RWLOCK_H
#define KSYNC_ROBUST_RWLOCK_H

#include <ksync/common.h>
#include <ksync/robust.h>
#include <ksync/time.h>

/* The readers word. */
#define KS_RRW_WRITER 0x80000000u /* the write side's holder is in or draining */
#define KS_RRW_DRAIN 0x40000000u  /* that writer sleeps on this word */
#define KS_RRW_COUNT 0x3fffffffu  /* readers inside */

typedef struct ks_robust_rwlock {
    ks_robust_t writer; /* held by the writer: the robust futex */
    uint32_t readers;   /* readers inside | KS_RRW_DRAIN | KS_RRW_WRITER */
    uint32_t flags;     /* KS_SHARED or 0; constant after init */
} ks_robust_rwlock_t;

#define KS_ROBUST_RWLOCK_INIT {KS_ROBUST_INIT, 0u, 0u}

KS_EXTERN_C_BEGIN

KS_API int ks_robust_rwlock_init(ks_robust_rwlock_t *rw, unsigned flags);
KS_API int ks_robust_rwlock_destroy(ks_robust_rwlock_t *rw);
KS_API int ks_robust_rwlock_rdlock(ks_robust_rwlock_t *rw);
KS_API int ks_robust_rwlock_tryrdlock(ks_robust_rwlock_t *rw);
KS_API int ks_robust_rwlock_timedrdlock(ks_robust_rwlock_t *rw, int64_t deadline);
KS_API int ks_robust_rwlock_wrlock(ks_robust_rwlock_t *rw);
KS_API int ks_robust_rwlock_trywrlock(ks_robust_rwlock_t *rw);
KS_API int ks_robust_rwlock_timedwrlock(ks_robust_rwlock_t *rw, int64_t deadline);
KS_API int ks_robust_rwlock_unlock(ks_robust_rwlock_t *rw);
KS_API int ks_robust_rwlock_consistent(ks_robust_rwlock_t *rw);

KS_EXTERN_C_END

#endif

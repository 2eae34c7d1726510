/* ksync/rmutex.h - recursive mutex with an owner check (Python's RLock).
 *
 *   ks_rmutex_t r = KS_RMUTEX_INIT;      (all zeros is valid)
 *   ks_rmutex_lock(&r); ks_rmutex_lock(&r); ks_rmutex_unlock(&r); ks_rmutex_unlock(&r);
 *
 * Return values:
 *   init              0, EINVAL (NULL, unknown flags)
 *   lock / timedlock  0, EAGAIN (the owner already holds it KS_RMUTEX_MAX_DEPTH
 *                     times), ETIMEDOUT, EINVAL (NULL, negative deadline)
 *   trylock           0, EBUSY (another thread holds it), EAGAIN, EINVAL
 *   unlock            0, EPERM (the calling thread does not hold it), EINVAL
 *   destroy           0, EBUSY (held or waited on), EINVAL; it frees
 *                     nothing: a second destroy of a free one returns 0
 *
 * The owner is a 64-bit id unique to each thread ever created in the process
 * (and, for KS_SHARED, across processes: it combines the kernel thread id with
 * a per-process random nonce), so a thread that exits while holding the
 * mutex leaves it locked for good instead of handing it to a later thread
 * that reuses its TID (musl fffc5cda, Austin Group 755).  The recursion count
 * lives outside the futex word (docs/pitfalls.md item 11).
 * A thread that exits, or a process that dies, holding a ks_rmutex leaves it
 * locked for good.  Where that must not wedge the others (a mutex in memory
 * shared between processes), use the robust recursive mutex instead:
 * ks_robust_t with KS_ROBUST_RECURSIVE (ksync/robust.h), whose next locker
 * gets EOWNERDEAD.
 * Built on ks_mutex: docs/rmutex.md.
 */
#ifndef KSYNC_RMUTEX_H
#define KSYNC_RMUTEX_H

#include <ksync/mutex.h>

#define KS_RMUTEX_MAX_DEPTH UINT32_MAX

typedef struct ks_rmutex {
    ks_mutex_t lock;
    uint32_t depth;                           /* written by the owner only */
    uint64_t owner __attribute__((aligned(8))); /* thread id of the holder, 0 if none */
} ks_rmutex_t;

#define KS_RMUTEX_INIT {KS_MUTEX_INIT, 0u, 0u}

KS_EXTERN_C_BEGIN

KS_API int ks_rmutex_init(ks_rmutex_t *r, unsigned flags);
KS_API int ks_rmutex_destroy(ks_rmutex_t *r);
KS_API int ks_rmutex_lock(ks_rmutex_t *r);
KS_API int ks_rmutex_trylock(ks_rmutex_t *r);
KS_API int ks_rmutex_timedlock(ks_rmutex_t *r, int64_t deadline);
KS_API int ks_rmutex_unlock(ks_rmutex_t *r);
/* The calling thread's ksync id (never 0, never reused within the process). */
KS_API uint64_t ks_thread_id(void);

#if KS_ANNOTATING
/* What a race detector is told (ksync/annotate.h): a recursive mutex,
 * whose owner may take it again. */
static inline int ks_rmutex_timedlock_annotated_(ks_rmutex_t *r, int64_t deadline, int may_fail, int try_only)
{
    if (r) {
        KS_ANN_OBJECT(r);
        KS_ANN_RLOCK_PRE(r, may_fail);
    }
    int e = try_only ? (ks_rmutex_trylock)(r) : (ks_rmutex_timedlock)(r, deadline);
    if (r)
        KS_ANN_RLOCK_POST(r, may_fail, e);
    return e;
}
static inline int ks_rmutex_unlock_annotated_(ks_rmutex_t *r)
{
    /* an unlock by a thread that does not hold it is refused (EPERM), not
     * told (relaxed: only the owner's own id can match) */
    const int told = r && __atomic_load_n(&r->owner, __ATOMIC_RELAXED) == ks_thread_id();
    if (told)
        KS_ANN_RUNLOCK_PRE(r);
    int e = (ks_rmutex_unlock)(r);
    if (told)
        KS_ANN_UNLOCK_POST(r, 0);
    return e;
}
#define ks_rmutex_lock(r) ks_rmutex_timedlock_annotated_((r), KS_FOREVER, 0, 0)
#define ks_rmutex_timedlock(r, deadline) ks_rmutex_timedlock_annotated_((r), (deadline), 1, 0)
#define ks_rmutex_trylock(r) ks_rmutex_timedlock_annotated_((r), 0, 1, 1)
#define ks_rmutex_unlock(r) ks_rmutex_unlock_annotated_(r)
#endif

/* Two recursive mutexes at once, in one global order: the lower address first, so that
 * threads locking the same pair in opposite argument orders (the course's
 * bank transfer: lock(from), lock(to)) cannot deadlock.  a == b takes it
 * once (ks_rmutex_unlock2 then releases it once).  A timed acquisition that gets the
 * first and not the second releases the first and reports the second's
 * error (ETIMEDOUT), so it never returns holding one of the two.  The
 * order is the address in the caller's address space: KS_SHARED objects that
 * processes map at different addresses need an order of the caller's own
 * (an account number), or two processes may disagree.
 * Errors: those of ks_rmutex_timedlock, and EINVAL if either is NULL. */
static inline int ks_rmutex_timedlock2(ks_rmutex_t *a, ks_rmutex_t *b, int64_t deadline)
{
    if (!a || !b)
        return EINVAL;
    if (a == b)
        return ks_rmutex_timedlock(a, deadline);
    if ((uintptr_t)b < (uintptr_t)a) {
        ks_rmutex_t *t = a;
        a = b;
        b = t;
    }
    int e = ks_rmutex_timedlock(a, deadline);
    if (e != 0)
        return e;
    /* relaxed: a switch, as in ks_mutex_timedlock2 (a re-entered b never
     * reaches the checker: the hint names b's mutex, so it is not used for
     * another lock) */
    if (KS_UNLIKELY(__atomic_load_n(&ks_lockdep_on_, __ATOMIC_RELAXED)))
        ks_lockdep_ordered_(&a->lock, &b->lock);
    e = ks_rmutex_timedlock(b, deadline);
    if (e != 0)
        (void)ks_rmutex_unlock(a);
    return e;
}

static inline int ks_rmutex_lock2(ks_rmutex_t *a, ks_rmutex_t *b) { return ks_rmutex_timedlock2(a, b, KS_FOREVER); }

/* Releases what ks_rmutex_lock2 took (either argument order); the first error of the
 * two unlocks, both attempted. */
static inline int ks_rmutex_unlock2(ks_rmutex_t *a, ks_rmutex_t *b)
{
    if (!a || !b)
        return EINVAL;
    int e = ks_rmutex_unlock(a);
    if (a == b)
        return e;
    int e2 = ks_rmutex_unlock(b);
    return e != 0 ? e : e2;
}

KS_EXTERN_C_END

#endif

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

KS_EXTERN_C_END

#endif

/* src/rmutex.c - recursive mutex on top of ks_mutex.  docs/rmutex.md.
 *
 *   owner   depth   meaning
 *   0       0       free (lock.state may still show sleepers)
 *   T       n >= 1  held n times by thread T
 *
 * Only the owner writes `owner` and `depth` while it holds `lock`.  Another
 * thread may read `owner` at any time to ask "is it me?": it can only see 0,
 * some other thread's id, or (if it is the owner) its own, never its own id
 * by mistake, because no other thread ever writes that value.  Those reads
 * and writes are relaxed atomics: the id answers only the "is it me" question
 * and publishes nothing; the data the mutex protects is ordered by
 * lock.state's acquire/release.
 */
#include "internal.h"

#include <ksync/rmutex.h>

/* The owner id is ks_thread_id() (src/thread.c): unique per thread and per
 * process image, and re-made in any fork child, so a child never believes it
 * owns what the forking thread held, whether it was made by fork(), _Fork()
 * or a raw clone. */

int ks_rmutex_init(ks_rmutex_t *r, unsigned flags)
{
    if (!r)
        return EINVAL;
    int e = ks_mutex_init_at(&r->lock, flags, __builtin_return_address(0)); /* the caller's site: its class */
    if (e)
        return e;
    r->depth = 0;
    r->owner = 0;
    return 0;
}

int ks_rmutex_destroy(ks_rmutex_t *r)
{
    if (!r)
        return EINVAL;
    if (__atomic_load_n(&r->owner, __ATOMIC_RELAXED) != 0)
        return EBUSY;
    return ks_mutex_destroy(&r->lock);
}

/* Re-entry by the owner: bump the depth, or refuse at the limit. */
static int reenter(ks_rmutex_t *r)
{
    if (r->depth == KS_RMUTEX_MAX_DEPTH)
        return EAGAIN;
    r->depth++;
    return 0;
}

static void take(ks_rmutex_t *r, uint64_t me)
{
    r->depth = 1;
    /* relaxed: see the header comment; lock.state's acquire already ordered us. */
    __atomic_store_n(&r->owner, me, __ATOMIC_RELAXED);
}

/* site: the caller's call site, for lock statistics and lock-order reports */
static int timedlock(ks_rmutex_t *r, int64_t deadline, const void *site)
{
    if (!r || deadline < 0)
        return EINVAL;
    uint64_t me = ks_thread_id();
    if (__atomic_load_n(&r->owner, __ATOMIC_RELAXED) == me)
        return reenter(r);
    int e = ks_mutex_timedlock_at(&r->lock, deadline, site);
    if (e)
        return e;
    take(r, me);
    return 0;
}

int ks_rmutex_timedlock(ks_rmutex_t *r, int64_t deadline)
{
    return timedlock(r, deadline, __builtin_return_address(0));
}

int ks_rmutex_lock(ks_rmutex_t *r)
{
    return timedlock(r, KS_FOREVER, __builtin_return_address(0));
}

int ks_rmutex_trylock(ks_rmutex_t *r)
{
    if (!r)
        return EINVAL;
    uint64_t me = ks_thread_id();
    if (__atomic_load_n(&r->owner, __ATOMIC_RELAXED) == me)
        return reenter(r);
    int e = ks_mutex_trylock_site(&r->lock, __builtin_return_address(0));
    if (e)
        return e;
    take(r, me);
    return 0;
}

int ks_rmutex_unlock(ks_rmutex_t *r)
{
    if (!r)
        return EINVAL;
    if (__atomic_load_n(&r->owner, __ATOMIC_RELAXED) != ks_thread_id())
        return EPERM;
    if (--r->depth)
        return 0;
    /* relaxed: the unlock's release store orders it before the next owner's
     * acquire; other threads only compare it with their own id. */
    __atomic_store_n(&r->owner, 0, __ATOMIC_RELAXED);
    return ks_mutex_unlock(&r->lock);
}

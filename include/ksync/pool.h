/* ksync/pool.h - a fixed set of resources (connections, buffers, ...)
 * borrowed with a deadline and returned.  Docs: docs/pool.md.
 *
 *   void *conns[3] = {c0, c1, c2};
 *   ks_pool_t *p;
 *   ks_pool_create(&p, conns, 3, 0);
 *   void *c;
 *   if (ks_pool_borrow(p, ks_deadline_after(100000000), &c) == 0) {
 *       ...use c...
 *       ks_pool_return(p, c);
 *   }
 *   ks_pool_destroy(p);
 *
 * The pool copies the n resource values (distinct, any pointer-sized value,
 * NULL included) and never reads through them.  A resource is held by at
 * most one borrower at a time: borrow hands out a free one (in the order
 * they were returned, FIFO), return gives it back and is refused for a
 * value that is not borrowed now.  The pool is a ks_queue of free resource
 * indices plus one "borrowed" flag per resource (docs/pool.md, which also
 * says what a pool cannot detect: a stale second return after someone else
 * borrowed the same value again).
 *
 * Return values (errno codes):
 *   create     0, EINVAL (NULL, n == 0, n > KS_MPMC_CAPACITY_MAX, duplicate
 *              values, unknown flags), ENOMEM (nothing allocated)
 *   init       as create, for caller memory of ks_pool_bytes(n) bytes aligned
 *              to KS_MPMC_ALIGN (shared memory: KS_SHARED; EINVAL also for
 *              misaligned memory; a refused init leaves the memory as it
 *              was)
 *   borrow     0 and *res set; ETIMEDOUT: none was free by the deadline
 *              (*res untouched, nothing taken: there is nothing to return);
 *              EINVAL (also for a negative deadline).  A deadline already
 *              past makes borrow a try.
 *   return     0; EINVAL: not one of this pool's resources; EPERM: one of
 *              them but not borrowed now (returned twice)
 *   available  resources free right now (a snapshot)
 *   destroy    0, EBUSY (resources still borrowed, or a borrow that had to
 *              wait has not returned yet -- asleep, or woken and about to
 *              take a resource: nothing freed; retry once it has returned),
 *              EINVAL.  Threads still calling borrow or return otherwise are
 *              the caller's to stop: every call on the pool must have
 *              returned before destroy (a return that made every resource
 *              free may still be inside its wake-up), and no call may follow
 *              a destroy that returned 0, a second destroy included.
 * A return is a release and the borrow that gets the resource next an
 * acquire: the next borrower sees what the previous one wrote to it.
 */
#ifndef KSYNC_POOL_H
#define KSYNC_POOL_H

#include <ksync/common.h>
#include <ksync/queue.h>
#include <stddef.h>

typedef struct ks_pool ks_pool_t;

KS_EXTERN_C_BEGIN

KS_API size_t ks_pool_bytes(size_t n);
KS_API int ks_pool_init(ks_pool_t *p, void *const *resources, size_t n, unsigned flags);
KS_API int ks_pool_create(ks_pool_t **pp, void *const *resources, size_t n, unsigned flags);
KS_API int ks_pool_destroy(ks_pool_t *p);

KS_API int ks_pool_borrow(ks_pool_t *p, int64_t deadline, void **res);
KS_API int ks_pool_return(ks_pool_t *p, void *res);
KS_API size_t ks_pool_available(const ks_pool_t *p);
KS_API size_t ks_pool_size(const ks_pool_t *p);

KS_EXTERN_C_END

#endif

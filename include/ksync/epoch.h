/* ksync/epoch.h - epoch-based memory reclamation (EBR) for lock-free
 * readers.  Algorithm, ordering proof and limits: docs/epoch.md.
 *
 *   struct obj { ...; struct ks_epoch_node rcu; };      intrusive link
 *
 *   reader:  ks_epoch_enter();
 *            p = __atomic_load_n(&shared, __ATOMIC_ACQUIRE);  ...use *p...
 *            ks_epoch_exit();
 *   writer:  old = swap out of the structure (unlinked: no new reader finds it)
 *            ks_epoch_retire(&old->rcu, free_obj);   freed once no reader can hold it
 *
 * One process-wide domain.  A thread joins on its first call (a record from a
 * registry that is reused, never freed) and leaves with ks_epoch_leave() or,
 * automatically, when it exits: a thread that exits without leaving -- even
 * inside a critical section -- does not hold reclamation back (its record is
 * released by a thread-exit destructor and its pending objects go to the
 * domain's orphan list, which any thread reclaims).
 *
 * Sections nest.  Inside one, a thread may read any object it found through
 * the structure; it must not block for long (a reader asleep in a section
 * stops reclamation: the EBR trade-off, docs/pitfalls.md item 50), and must not call
 * ks_epoch_barrier().
 *
 * Unreclaimed memory is bounded: each thread frees its own retired objects
 * as their grace periods end, tries to advance the epoch every
 * KS_EPOCH_BATCH retirements, and a retire that finds KS_EPOCH_MAX objects
 * of its own pending waits for a grace period (outside a section) before
 * returning.  So: NEVER call ks_epoch_retire while holding a lock that a
 * reader may wait for inside a section (the retire may wait for that
 * reader: deadlock).
 *
 * Retire functions run on whichever thread reclaims them -- the retiring
 * thread, or any thread that reclaims a dead thread's objects -- outside
 * its sections, unless that thread calls ks_epoch_retire or ks_epoch_flush
 * inside one (a batch may then run there, and a barrier called from it
 * answers EDEADLK).  They may retire, and may
 * call ks_epoch_barrier (directly, by destroying a KS_CACHE_LOCKFREE cache
 * the object owned, or through a retire at KS_EPOCH_MAX): that barrier also
 * runs what its caller had taken out to run, but it does not wait for
 * functions that other threads are running at that moment (they may be
 * waiting for it).
 *
 * Thread exit: pthread key destructors that run after the epoch's own may
 * still use it; a retire or an outermost exit there hands the record back
 * at once.  What they cannot do is leave a section open (the thread then
 * dies inside it with no destructor left to end it: reclamation stops for
 * good), or make their first epoch call of the thread in glibc's last
 * destructor round (PTHREAD_DESTRUCTOR_ITERATIONS; the record claimed then
 * is never released).
 *
 * Fork (fork(), _Fork(), syscall(SYS_fork), clone without CLONE_VM): the
 * child keeps only the forking thread's record; objects other threads had
 * retired are not freed in the child.  fork() sets the child up in an
 * atfork handler; for the others the first epoch call in the child does
 * (it sees a new fork generation).  Forking inside a section is not
 * supported.
 *
 * A barrier waits for every section in the process to end, and for the
 * functions of orphaned objects other threads are running: do not call it
 * (nor ks_cache_destroy of a lock-free cache, nor a retire that may reach
 * KS_EPOCH_MAX) while holding a lock that a reader inside a section, or a
 * retire function, may wait for.
 *
 * Return values (errno codes):
 *   enter    0; ENOMEM: first call on this thread and no record could be
 *            allocated or its thread-exit destructor registered (not inside
 *            a section then)
 *   exit     0; EPERM: not inside a section
 *   retire   0; EINVAL (NULL node or function); ENOMEM as enter
 *   barrier  0; EDEADLK: called inside a section
 *   leave    0; EBUSY: inside a section (nothing changes).  Leaving twice,
 *            or without ever entering, is 0.
 *   flush, stats: no return value; stats(NULL) does nothing.
 */
#ifndef KSYNC_EPOCH_H
#define KSYNC_EPOCH_H

#include <ksync/common.h>
#include <stddef.h>

#define KS_EPOCH_BATCH 64u      /* retirements between attempts to advance */
#define KS_EPOCH_MAX (1u << 16) /* own pending objects that make retire wait */

/* Embedded in every object handed to ks_epoch_retire. */
struct ks_epoch_node {
    struct ks_epoch_node *next;
    void (*fn)(struct ks_epoch_node *);
};

struct ks_epoch_stats {
    uint64_t epoch;   /* the global epoch now */
    uint64_t retired; /* objects retired, all threads, since start */
    uint64_t freed;   /* objects whose function has run */
    uint64_t records; /* thread records in the registry (in use or free) */
};

KS_EXTERN_C_BEGIN

KS_API int ks_epoch_enter(void);
KS_API int ks_epoch_exit(void);
KS_API int ks_epoch_retire(struct ks_epoch_node *node, void (*fn)(struct ks_epoch_node *));
/* Wait until everything this thread retired before the call (and every
 * orphaned object) has been freed. */
KS_API int ks_epoch_barrier(void);
/* Free what this thread (and the orphan list) can free now, without waiting. */
KS_API void ks_epoch_flush(void);
KS_API int ks_epoch_leave(void);
KS_API void ks_epoch_stats(struct ks_epoch_stats *out);

KS_EXTERN_C_END

#endif

/* ksync/lockdep.h - lock-order checking: a possible deadlock is reported
 * the first time a thread takes locks in an order that closes a cycle,
 * whether or not the deadlock happens in that run.  Algorithm, reports and
 * limits: docs/lockdep.md.
 *
 *   KSYNC_LOCKDEP=1 ./prog          check from the start, report on stderr
 *   KSYNC_LOCKDEP=abort ./prog      ... and abort() after the first report
 *   ksync-run --lockdep ./prog      the same for a program using pthreads
 *   ks_lockdep_set(KS_LOCKDEP_ON);  from the program
 *
 * What is checked, for ks_mutex (and what is built on it: the mutex of a
 * ks_cond wait, ks_rmutex's first level, the drop-in layer's pthread
 * mutexes of types normal, default, errorcheck and recursive):
 *   KS_LOCKDEP_CYCLE      a thread holding lock A waits for lock B, and the
 *                         recorded orders already lead from B's class to
 *                         A's (B ... -> A, any length): reported before the
 *                         thread waits, with the classes, both orders and
 *                         where each was first seen.  Two locks of one class
 *                         (one init site) are checked as locks: taking x
 *                         then y is reported if y then x was seen.
 *   KS_LOCKDEP_RECURSION  a thread locks a mutex it already holds (it would
 *                         wait for itself forever).
 *   KS_LOCKDEP_NOT_HELD   a thread unlocks a mutex another thread took.
 *   KS_LOCKDEP_UNLOCKED   a thread unlocks a mutex nobody holds.
 *   KS_LOCKDEP_DESTROY_HELD  a mutex is destroyed while it is locked.
 *   KS_LOCKDEP_EXIT_HELD  a thread exits holding mutexes.
 *   KS_LOCKDEP_BLOCKED, KS_LOCKDEP_DEADLOCK  the watchdog (below).
 * A trylock never waits, so it adds no order towards the lock it takes
 * (taking A then trylocking B while another thread holds B and waits for A
 * cannot deadlock); locks taken while it is held are ordered after it.  A
 * timed lock waits, so it counts as a lock.
 *
 * Classes: the name given with ks_lock_name, else the ks_*_init call site,
 * else (a lock never initialised while checking was on, such as a
 * statically initialised one) a class of its own: the lock itself, with
 * its generation (docs/lockdep.md, "Classes"; lock statistics use the site
 * of its first acquisition instead).  ks_lock_nest(lock, n) puts one lock in
 * subclass n of its class: the annotation for a nesting on purpose that the
 * checker cannot see is ordered (two locks of one class taken in an order
 * by something other than their addresses, say parent and child).
 *
 * Return values: set: the previous mode, or -EINVAL (unknown mode) or
 * -ENOMEM; nest: 0, EINVAL (NULL lock), ENOMEM, ENOSPC (the lock table is
 * full); count: the number of reports of that event (0: of every event)
 * made since the process started.
 *
 * Statically initialised mutexes (KS_MUTEX_INIT, zeroed memory) are seen
 * from their first acquisition that reaches the library: at once through
 * the drop-in layer; for ks_mutex, from its first contended acquisition,
 * or from the first in code compiled with -DKSYNC_DEBUG (every inline fast
 * path then calls the library).
 */
#ifndef KSYNC_LOCKDEP_H
#define KSYNC_LOCKDEP_H

#include <ksync/common.h>

#define KS_LOCKDEP_OFF 0
#define KS_LOCKDEP_ON 1
#define KS_LOCKDEP_ABORT 2 /* on, and abort() after the first report */

enum ks_lockdep_event {
    KS_LOCKDEP_CYCLE = 1,
    KS_LOCKDEP_RECURSION,
    KS_LOCKDEP_NOT_HELD,
    KS_LOCKDEP_UNLOCKED,
    KS_LOCKDEP_DESTROY_HELD,
    KS_LOCKDEP_EXIT_HELD,
    KS_LOCKDEP_BLOCKED,  /* the watchdog: a thread has waited longer than its threshold */
    KS_LOCKDEP_DEADLOCK, /* the watchdog: threads wait for each other (a wait-for cycle) */
    KS_LOCKDEP_EVENTS
};

/* Receives each report (the text ends in a newline).  Called on the thread
 * that made the report, outside lockdep's own lock, while that thread may
 * hold the locks the report is about: it must not wait for them.  Locks it
 * takes are not checked. */
typedef void ks_lockdep_handler_fn(int event, const char *report, void *arg);

KS_EXTERN_C_BEGIN

KS_API int ks_lockdep_set(int mode);
KS_API int ks_lockdep_mode(void);
/* NULL: the default, which writes to stderr or to KSYNC_LOCKDEP_FILE. */
KS_API void ks_lockdep_handler(ks_lockdep_handler_fn *fn, void *arg);
KS_API uint64_t ks_lockdep_count(int event);
KS_API int ks_lock_nest(const void *lock, unsigned subclass);
/* Forgets every recorded order and every once-per-site note (classes and
 * the locks threads hold are kept): a later inversion is reported again.
 * For tests, and for programs that check their phases one by one. */
KS_API void ks_lockdep_reset(void);
/* The watchdog (off by default; KSYNC_LOCKDEP_WATCHDOG=ms): a thread of its
 * own looks, every quarter of the threshold, for threads that have waited
 * for a mutex longer than threshold_ms, and reports each such wait once:
 * the chain of holders (who holds the lock, what that thread holds and
 * waits for), KS_LOCKDEP_DEADLOCK when the chain comes back to a thread of
 * it, KS_LOCKDEP_BLOCKED otherwise.  It sees the threads while checking is
 * on.  0 stops it.  Returns 0, EINVAL (negative), or pthread_create's
 * error. */
KS_API int ks_lockdep_watchdog(int threshold_ms);

KS_EXTERN_C_END

#endif

/* src/dropin/dropin.h - what the drop-in pthread layer's sources share.
 * docs/dropin.md has the whole design; in short:
 *
 * - Each POSIX object keeps glibc's size, and ksync's object sits at its
 *   start, except the mutex's ks_mutex_t, at offset 20 (struct ks_pmutex).
 *   Fields that glibc's static initializers write (a mutex's kind, an
 *   rwlock's kind) stay where glibc puts them, and all zeros is a valid
 *   default object, as in glibc.
 * - A mutex whose kind asks for something ksync does not implement
 *   (priority inheritance, priority protection, robustness) is handed to
 *   glibc's own functions for its whole life: the choice is made from the
 *   kind field, which glibc's init writes and nothing changes afterwards.
 *   Condition variables are all ksync's; a wait on a glibc-handled mutex
 *   unlocks and re-takes it through glibc (ks_cond_wait_ext).
 * - Only the POSIX names leave libksync-pthread.so: this file's
 *   KS_PT_EXPORT marks them; everything else is hidden (the ksync library
 *   inside comes from libksync.a with --exclude-libs).
 */
#ifndef KS_DROPIN_H
#define KS_DROPIN_H

#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <ksync/barrier.h>
#include <ksync/cond.h>
#include <ksync/mutex.h>
#include <ksync/robust.h>
#include <ksync/rmutex.h>
#include <ksync/rwlock.h>
#include <ksync/sem.h>

#define KS_PT_EXPORT __attribute__((visibility("default")))

/* Lock statistics count every acquisition (KS_LOCKSTAT_ALL): the rwlock's,
 * the spinlock's and the semaphore's fast paths give way to the library's,
 * which count (a statically initialised object has no mark to send it
 * there).  relaxed: a switch. */
static inline int ks_pt_counting_all(void)
{
    return KS_UNLIKELY(__atomic_load_n(&ks_trace_all_, __ATOMIC_RELAXED) & KS_TRACE_LOCKSTAT);
}

/* ---- mutex ----------------------------------------------------------------
 * glibc's kind field (pthread_mutex_t.__data.__kind): the type in the low
 * two bits, flags above.  These values are glibc's ABI (nptl's pthreadP.h):
 * the static initializers and glibc's pthread_mutex_init write them. */
#define PM_TYPE_MASK 3
#define PM_ROBUST 16
#define PM_PRIO_INHERIT 32
#define PM_PRIO_PROTECT 64
#define PM_PSHARED 128
#define PM_GLIBC (PM_ROBUST | PM_PRIO_INHERIT | PM_PRIO_PROTECT) /* handled by glibc */
/* Not a glibc bit: a robust mutex (normal, default or errorcheck, not PI)
 * that the layer keeps as a ks_robust_t (include/ksync/robust.h), whose
 * layout is glibc's where the kernel and glibc's list code look; the kind
 * field sits in its reserved words.  Checked before PM_GLIBC. */
#define PM_KSROBUST 0x10000
/* Exactly the layer's robust kind: glibc's destroy writes -1 into the kind,
 * which has every bit set (a later call must go to glibc and be EINVAL). */
static inline int pm_is_krobust(int kind)
{
    return (kind & PM_KSROBUST) && !(kind & ~(PM_KSROBUST | PM_ROBUST | PM_TYPE_MASK));
}

struct ks_pmutex {
    uint32_t glibc_word_[2]; /* glibc's __lock and __count: the word of the mutexes
                              * glibc or ks_robust keep; never written by the layer
                              * for its own (see lock below) */
    int owner;               /* errorcheck, recursive: the holder's kernel tid, 0 if none */
    unsigned depth;          /* recursive: how many times the holder took it */
    int kind;                /* glibc's __kind, at glibc's offset */
    ks_mutex_t lock;         /* the lock word and its KS_SHARED flag, where glibc
                              * has __spins, __elision and __list.__prev */
};
_Static_assert(offsetof(struct ks_pmutex, kind) == offsetof(pthread_mutex_t, __data.__kind),
               "the kind field must stay where glibc's static initializers put it");
/* pthread_mutex_lock's first compare-and-swap (src/dropin/pmutex.c) goes to
 * this word before the kind is known.  It must be a word that neither glibc
 * (for the priority-inheritance, priority-protection and robust mutexes it
 * keeps, whose futex word is at 0) nor ks_robust ever uses: glibc touches
 * __spins only for adaptive mutexes and __elision only for elided default
 * ones (nptl's pthread_mutex_lock.c), both of which the layer keeps, and
 * ks_robust keeps it zero (its reserved_[2]). */
_Static_assert(offsetof(struct ks_pmutex, lock) == offsetof(pthread_mutex_t, __data.__spins),
               "the layer's lock word must be where glibc keeps __spins");
_Static_assert(offsetof(struct ks_pmutex, lock) == offsetof(ks_robust_t, reserved_[2]),
               "the layer's lock word must be a word ks_robust never writes");
_Static_assert(sizeof(struct ks_pmutex) <= sizeof(pthread_mutex_t), "fits in pthread_mutex_t");

static inline struct ks_pmutex *pmutex(pthread_mutex_t *m)
{
    return (struct ks_pmutex *)(void *)m;
}

/* The kind, read once per call: constant from init to destroy.  relaxed:
 * written before the object is shared (init, or a static initializer). */
static inline int pm_kind(const struct ks_pmutex *m)
{
    return __atomic_load_n(&m->kind, __ATOMIC_RELAXED);
}

/* glibc's own functions, for the mutexes it keeps: looked up with
 * dlsym(RTLD_NEXT) at their first use and cached, so a program that never
 * makes such a mutex never calls dlsym (which takes the loader's lock).
 * The lookup cannot fail while libc is loaded; if it did, the call would
 * return ENOSYS. */
struct ks_pt_glibc {
    int (*init)(pthread_mutex_t *, const pthread_mutexattr_t *);
    int (*destroy)(pthread_mutex_t *);
    int (*lock)(pthread_mutex_t *);
    int (*trylock)(pthread_mutex_t *);
    int (*unlock)(pthread_mutex_t *);
    int (*clocklock)(pthread_mutex_t *, clockid_t, const struct timespec *);
    int (*consistent)(pthread_mutex_t *);
};
KS_HIDDEN const struct ks_pt_glibc *ks_pt_glibc(void);

/* A condition wait's view of its mutex, on the waiter's stack:
 * ks_pt_wait_begin checks that the caller may wait with it (EPERM if an
 * errorcheck or recursive mutex is not the caller's, EINVAL if not a
 * mutex), and says which ks_mutex a broadcast may requeue onto (NULL for
 * a mutex glibc keeps).  ks_pt_mutex_ops unlock and re-take it, whatever
 * its kind, restoring a recursive mutex's depth. */
struct ks_pt_wait {
    pthread_mutex_t *m;
    int kind;
    unsigned depth;
};
KS_HIDDEN int ks_pt_wait_begin(struct ks_pt_wait *w, pthread_mutex_t *m, struct ks_mutex **word);
KS_HIDDEN extern const struct ks_cond_lockops ks_pt_mutex_ops;

/* ---- threads and time -------------------------------------------------------- */

/* The caller's kernel thread id (ks_thread_id keeps it in its high half,
 * renewed in a fork child). */
static inline int ks_pt_tid(void)
{
    return (int)(ks_thread_id() >> 32);
}

/* An absolute timeout on `clock` as a ksync deadline: EINVAL for a bad
 * tv_nsec or clock; a negative tv_sec is a time long past (deadline 0). */
static inline int ks_pt_deadline(clockid_t clock, const struct timespec *ts, int64_t *deadline)
{
    if (!ts || ts->tv_nsec < 0 || ts->tv_nsec >= KS_NSEC_PER_SEC)
        return EINVAL;
    if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC)
        return EINVAL;
    if (ts->tv_sec < 0) {
        *deadline = 0;
        return 0;
    }
    return ks_deadline_from_timespec(clock, ts, deadline);
}

#endif

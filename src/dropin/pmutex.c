/* src/dropin/pmutex.c - pthread_mutex_* on ks_mutex.  docs/dropin.md.
 *
 * Layout inside glibc's pthread_mutex_t (struct ks_pmutex, dropin.h):
 *   offset 8   owner tid (errorcheck, recursive), offset 12 depth (recursive)
 *   offset 16  glibc's kind: type | PM_PSHARED, or glibc's flags for the
 *              mutexes glibc keeps (priority inheritance/protection)
 *   offset 20  ks_mutex_t: the futex word and its KS_SHARED flag (at 24)
 * Offsets 0-7 are glibc's __lock and __count, which the layer leaves alone
 * for its own mutexes: the futex word of the ones glibc keeps is there.
 * A robust mutex (any type but PI/PP) is a ks_robust_t instead (its word at
 * 0, depth at 8, its list node at glibc's offsets 24 and 32), with the kind
 * PM_KSROBUST | PM_ROBUST | type at 16.
 * The static initializers only write the kind, so every one of them (and
 * zero-filled memory) is a valid unlocked mutex of its type.
 *
 * Types, as glibc documents them:
 *   normal, default, adaptive  ks_mutex as it is: relocking deadlocks (POSIX
 *              says normal shall), unlocking one you do not hold is not
 *              checked (undefined for these types).
 *   errorcheck owner tid: EDEADLK on relock, EPERM on unlock by a thread
 *              that does not hold it.
 *   recursive  owner tid and depth: EAGAIN when the depth would wrap, EPERM
 *              on unlock by a thread that does not hold it.
 * The owner field is read by other threads (to see it is not theirs) while
 * the holder writes it: relaxed atomics; a thread only ever compares it
 * with its own tid, which no other thread stores.
 */
#include "dropin.h"

#include <dlfcn.h>
#include <sched.h>
#include <string.h>

static struct ks_pt_glibc glibc;
static int glibc_ready; /* 0, 1 while one thread looks up, 2 once glibc is filled */

static void *lookup(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

static int enosys(void)
{
    return ENOSYS;
}

const struct ks_pt_glibc *ks_pt_glibc(void)
{
    /* acquire: pairs with the release store of 2 after the table is filled. */
    int st = __atomic_load_n(&glibc_ready, __ATOMIC_ACQUIRE);
    if (KS_LIKELY(st == 2))
        return &glibc;
    st = 0;
    if (__atomic_compare_exchange_n(&glibc_ready, &st, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE)) {
        struct ks_pt_glibc g;
        void (*none)(void) = (void (*)(void))enosys;
#define KS_PT_LOOKUP(field, name)                                                                   \
        do {                                                                                        \
            void *f_ = lookup(name);                                                                \
            memcpy(&g.field, f_ ? (void *)&f_ : (void *)&none, sizeof g.field);                     \
        } while (0)
        KS_PT_LOOKUP(init, "pthread_mutex_init");
        KS_PT_LOOKUP(destroy, "pthread_mutex_destroy");
        KS_PT_LOOKUP(lock, "pthread_mutex_lock");
        KS_PT_LOOKUP(trylock, "pthread_mutex_trylock");
        KS_PT_LOOKUP(unlock, "pthread_mutex_unlock");
        KS_PT_LOOKUP(clocklock, "pthread_mutex_clocklock");
        KS_PT_LOOKUP(consistent, "pthread_mutex_consistent");
#undef KS_PT_LOOKUP
        glibc = g;
        __atomic_store_n(&glibc_ready, 2, __ATOMIC_RELEASE); /* pairs with the acquire loads */
        return &glibc;
    }
    while (__atomic_load_n(&glibc_ready, __ATOMIC_ACQUIRE) != 2) /* pairs with the release store */
        sched_yield(); /* another thread is in dlsym: microseconds */
    return &glibc;
}

static ks_robust_t *krobust(pthread_mutex_t *mutex)
{
    return (ks_robust_t *)(void *)mutex;
}

/* A robust mutex the layer keeps: ks_robust's answers are glibc's robust
 * mutexes' (EOWNERDEAD, ENOTRECOVERABLE, EPERM, EDEADLK for the owner of an
 * errorcheck one), except that the owner's relock of a normal or default
 * one is EDEADLK at once where glibc's would deadlock (or time out), and its
 * trylock EBUSY as glibc's.  deadline: KS_FOREVER, a ksync deadline, or -1
 * for a trylock. */
static int lock_krobust(pthread_mutex_t *mutex, int kind, int64_t deadline)
{
    ks_robust_t *r = krobust(mutex);
    int e = deadline == -1 ? ks_robust_trylock(r) : ks_robust_timedlock(r, deadline);
    if (e == EDEADLK && deadline == -1 && (kind & PM_TYPE_MASK) != PTHREAD_MUTEX_ERRORCHECK)
        return EBUSY;
    return e;
}

static int owner_of(const struct ks_pmutex *m)
{
    return __atomic_load_n(&m->owner, __ATOMIC_RELAXED);
}

static void set_owner(struct ks_pmutex *m, int tid)
{
    __atomic_store_n(&m->owner, tid, __ATOMIC_RELAXED);
}

KS_PT_EXPORT int pthread_mutex_init(pthread_mutex_t *mutex, const pthread_mutexattr_t *attr)
{
    int type = PTHREAD_MUTEX_DEFAULT, pshared = PTHREAD_PROCESS_PRIVATE;
    int protocol = PTHREAD_PRIO_NONE, robust = PTHREAD_MUTEX_STALLED;
    if (attr) {
        pthread_mutexattr_gettype(attr, &type);
        pthread_mutexattr_getpshared(attr, &pshared);
        pthread_mutexattr_getprotocol(attr, &protocol);
        pthread_mutexattr_getrobust(attr, &robust);
    }
    if (robust != PTHREAD_MUTEX_STALLED && protocol == PTHREAD_PRIO_NONE) {
        ks_robust_t *r = (ks_robust_t *)(void *)mutex;
        int e = ks_robust_init(r, (pshared == PTHREAD_PROCESS_SHARED ? KS_SHARED : 0) |
                                      (type == PTHREAD_MUTEX_RECURSIVE ? KS_ROBUST_RECURSIVE : 0));
        if (e != ENOTSUP) {
            if (!e)
                /* relaxed: written before the mutex is shared, as init's */
                __atomic_store_n(&pmutex(mutex)->kind, PM_KSROBUST | PM_ROBUST | (type & PM_TYPE_MASK), __ATOMIC_RELAXED);
            return e; /* EBUSY: the caller holds it (re-initialising would cut its robust list) */
        }
        /* ENOTSUP: this C library's robust list has another layout: glibc keeps it */
    }
    if (protocol != PTHREAD_PRIO_NONE || robust != PTHREAD_MUTEX_STALLED)
        return ks_pt_glibc()->init(mutex, attr); /* glibc keeps it (its kind says so) */
    memset(mutex, 0, sizeof *mutex);
    struct ks_pmutex *m = pmutex(mutex);
    /* the caller's site is the mutex's class for lock statistics and
     * lock-order checking (and it gets their mark if they are on) */
    ks_mutex_init_at(&m->lock, pshared == PTHREAD_PROCESS_SHARED ? KS_SHARED : 0, __builtin_return_address(0));
    m->kind = (type & PM_TYPE_MASK) | (pshared == PTHREAD_PROCESS_SHARED ? PM_PSHARED : 0);
    return 0;
}

KS_PT_EXPORT int pthread_mutex_destroy(pthread_mutex_t *mutex)
{
    struct ks_pmutex *m = pmutex(mutex);
    if (pm_is_krobust(pm_kind(m))) {
        int e = ks_robust_destroy(krobust(mutex));
        if (!e)
            /* relaxed: as glibc's destroy, which writes -1: later calls go
             * to glibc and are EINVAL */
            __atomic_store_n(&m->kind, -1, __ATOMIC_RELAXED);
        return e;
    }
    if (pm_kind(m) & PM_GLIBC)
        return ks_pt_glibc()->destroy(mutex);
    /* relaxed: a courtesy check, as glibc's (EBUSY while locked). */
    int locked = (__atomic_load_n(&m->lock.state, __ATOMIC_RELAXED) & KS_MUTEX_LOCKED) != 0;
    if (KS_UNLIKELY(ks_ld_on())) /* a report if locked; else the end of its identity */
        ks_ld_destroy(&m->lock, locked, __builtin_return_address(0));
    return locked ? EBUSY : 0;
}

/* Every type but the fast one (and that one too while every acquisition
 * is traced: ks_trace_all): errorcheck and recursive bookkeeping around
 * ks_mutex; deadline KS_FOREVER, a ksync deadline, or -1 for a trylock;
 * site: the program's call site (lock statistics, lock-order reports). */
static int lock_typed(struct ks_pmutex *m, int kind, int64_t deadline, const void *site)
{
    int type = kind & PM_TYPE_MASK;
    if (type == PTHREAD_MUTEX_ERRORCHECK || type == PTHREAD_MUTEX_RECURSIVE) {
        int self = ks_pt_tid();
        if (owner_of(m) == self) {
            if (type == PTHREAD_MUTEX_ERRORCHECK)
                return deadline == -1 ? EBUSY : EDEADLK;
            if (m->depth == UINT32_MAX)
                return EAGAIN;
            m->depth++;
            return 0;
        }
        int r = deadline == -1 ? ks_mutex_trylock_site(&m->lock, site)
                               : ks_mutex_timedlock_at(&m->lock, deadline, site);
        if (r)
            return r;
        set_owner(m, self);
        m->depth = 1;
        return 0;
    }
    return deadline == -1 ? ks_mutex_trylock_site(&m->lock, site) : ks_mutex_timedlock_at(&m->lock, deadline, site);
}

/* Every kind but a default mutex on its fast path; deadline KS_FOREVER or
 * -1 (trylock).  Out of line, so that the fast path below keeps no stack
 * frame (the caller's site is read from its return address there). */
static __attribute__((noinline)) int lock_other(pthread_mutex_t *mutex, int kind, int64_t deadline,
                                                const void *site)
{
    if (pm_is_krobust(kind))
        return lock_krobust(mutex, kind, deadline);
    if (kind & PM_GLIBC)
        return deadline == -1 ? ks_pt_glibc()->trylock(mutex) : ks_pt_glibc()->lock(mutex);
    return lock_typed(pmutex(mutex), kind, deadline, site);
}

/* The fast path's compare-and-swap, made before the kind is read.
 *
 * Why first: reading the kind (a plain load of the mutex's cache line) and
 * then swapping makes two trips for the line when another CPU's waiter has
 * just looked at it.  On the Intel Xeon guest the waiter then took the
 * lock between the holder's unlock and its next lock in about one increment
 * in six of the 2-thread contended counter, against one in 26 with the swap
 * first, and the counter ran at glibc's rate (glibc reads its kind first
 * too) instead of twice it (docs/dropin.md, "The fast path swaps before it
 * reads the kind").
 *
 * Why it is safe: the word at offset 20 is the layer's own in every mutex
 * (dropin.h): the ones glibc or ks_robust keep never use it, so taking it
 * there changes nothing but the outcome of other threads' swaps, which then
 * fail and read the kind.  Returns 1 if the word was free and is now ours
 * (acquire: pairs with the release in unlock, or in swapped_other), 0 if
 * not, with the word as the swap saw it in *seen.  Not while anything
 * traces every acquisition (traced: the caller's one read of ks_trace_all_,
 * which then sees every kind go the library's way), which must see the
 * uncontended ones too, nor in a -DKSYNC_DEBUG build. */
static inline int swap_first(struct ks_pmutex *m, int traced, uint32_t *seen)
{
    *seen = 0;
    return KS_MUTEX_FAST_ && KS_LIKELY(!traced) &&
           __atomic_compare_exchange_n(&m->lock.state, seen, KS_MUTEX_LOCKED, 0, __ATOMIC_ACQUIRE,
                                       __ATOMIC_RELAXED);
}

/* swap_first took the word of a mutex that is not a private default one
 * (kind != 0).  One the layer keeps on a ks_mutex is now held: do what
 * lock_typed does after its acquisition (the caller cannot have held it:
 * the word was free).  One that glibc or ks_robust keeps is not held:
 * give the word back and lock it as its kind says.  deadline: KS_FOREVER,
 * or -1 for a trylock. */
static __attribute__((noinline)) int swapped_other(pthread_mutex_t *mutex, int kind, int64_t deadline,
                                                   const void *site)
{
    struct ks_pmutex *m = pmutex(mutex);
    if (!pm_is_krobust(kind) && !(kind & PM_GLIBC)) {
        int type = kind & PM_TYPE_MASK;
        if (type == PTHREAD_MUTEX_ERRORCHECK || type == PTHREAD_MUTEX_RECURSIVE) {
            set_owner(m, ks_pt_tid());
            m->depth = 1;
        }
        return 0;
    }
    /* relaxed: nothing is published (this word guards no data in such a
     * mutex: the next swap_first to win it gives it back too), and only
     * swaps ever write it there, so a plain store cannot lose a bit. */
    __atomic_store_n(&m->lock.state, 0, __ATOMIC_RELAXED);
    return lock_other(mutex, kind, deadline, site);
}

KS_PT_EXPORT int pthread_mutex_lock(pthread_mutex_t *mutex)
{
    struct ks_pmutex *m = pmutex(mutex);
    const int traced = __atomic_load_n(&ks_trace_all_, __ATOMIC_RELAXED); /* relaxed: a switch, read once */
    uint32_t seen;
    int kind;
    if (KS_LIKELY(swap_first(m, traced, &seen))) {
        kind = pm_kind(m); /* the line is ours now: a hit */
        if (KS_LIKELY(kind == 0))
            return 0;
        return swapped_other(mutex, kind, KS_FOREVER, __builtin_return_address(0));
    }
    kind = pm_kind(m);
    /* one test for both: the default kind, and nothing traced */
    if (KS_LIKELY((kind | traced) == 0))
        return ks_mutex_lock_slow(&m->lock, KS_FOREVER); /* tail call: the site is the caller's */
    return lock_other(mutex, kind, KS_FOREVER, __builtin_return_address(0));
}

KS_PT_EXPORT int pthread_mutex_trylock(pthread_mutex_t *mutex)
{
    struct ks_pmutex *m = pmutex(mutex);
    const int traced = __atomic_load_n(&ks_trace_all_, __ATOMIC_RELAXED); /* as in lock */
    uint32_t seen;
    int kind;
    if (KS_LIKELY(swap_first(m, traced, &seen))) {
        kind = pm_kind(m);
        if (KS_LIKELY(kind == 0))
            return 0;
        return swapped_other(mutex, kind, -1, __builtin_return_address(0));
    }
    kind = pm_kind(m);
    /* as in lock: with the one read of the switch, (kind | traced) == 0
     * means the swap was made and failed on the word it saw (a mark sends
     * the trylock to the library, as ks_mutex_trylock does).  A review
     * found a second read of the switch here: one that changed between the
     * two reads answered EBUSY for a free mutex that nobody had tried. */
    if (KS_LIKELY((kind | traced) == 0))
        return KS_LIKELY(!(seen & KS_MUTEX_TRACED)) ? EBUSY : ks_mutex_trylock_slow(&m->lock);
    return lock_other(mutex, kind, -1, __builtin_return_address(0));
}

KS_PT_EXPORT int pthread_mutex_clocklock(pthread_mutex_t *mutex, clockid_t clock, const struct timespec *abstime)
{
    struct ks_pmutex *m = pmutex(mutex);
    int kind = pm_kind(m);
    if (pm_is_krobust(kind)) {
        /* as below: the clock first, then a try, then the time */
        if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC)
            return EINVAL;
        int r = lock_krobust(mutex, kind, -1);
        if (r != EBUSY)
            return r;
        int64_t deadline;
        if ((r = ks_pt_deadline(clock, abstime, &deadline)))
            return r;
        return lock_krobust(mutex, kind, deadline);
    }
    if (kind & PM_GLIBC)
        return ks_pt_glibc()->clocklock(mutex, clock, abstime);
    /* As glibc: the clock is checked first; a free mutex is then taken
     * whatever tv_nsec says, and the owner of an errorcheck mutex gets
     * EDEADLK: the time is checked only when the caller would wait. */
    if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC)
        return EINVAL;
    const void *site = __builtin_return_address(0);
    int r = lock_typed(m, kind, -1, site);
    if (r != EBUSY)
        return r;
    if ((kind & PM_TYPE_MASK) == PTHREAD_MUTEX_ERRORCHECK && owner_of(m) == ks_pt_tid())
        return EDEADLK;
    int64_t deadline;
    if ((r = ks_pt_deadline(clock, abstime, &deadline)))
        return r;
    return lock_typed(m, kind, deadline, site);
}

KS_PT_EXPORT int pthread_mutex_timedlock(pthread_mutex_t *mutex, const struct timespec *abstime)
{
    return pthread_mutex_clocklock(mutex, CLOCK_REALTIME, abstime);
}

KS_PT_EXPORT int pthread_mutex_unlock(pthread_mutex_t *mutex)
{
    struct ks_pmutex *m = pmutex(mutex);
    int kind = pm_kind(m);
    if (KS_LIKELY(kind == 0))
        return ks_mutex_unlock(&m->lock);
    if (pm_is_krobust(kind)) {
        ks_robust_t *r = krobust(mutex);
        /* relaxed: only the caller's own TID matters, which it wrote.  As
         * glibc: an inner unlock of a recursive mutex taken with EOWNERDEAD
         * and not made consistent counts down and answers ENOTRECOVERABLE
         * (ks_robust_unlock answers 0 there). */
        if ((kind & PM_TYPE_MASK) == PTHREAD_MUTEX_RECURSIVE &&
            (__atomic_load_n(&r->word, __ATOMIC_RELAXED) & ~KS_ROBUST_WAITERS) ==
                ((uint32_t)ks_pt_tid() | KS_ROBUST_OWNER_DIED) &&
            r->depth) {
            r->depth--;
            return ENOTRECOVERABLE;
        }
        return ks_robust_unlock(r);
    }
    if (kind & PM_GLIBC)
        return ks_pt_glibc()->unlock(mutex);
    int type = kind & PM_TYPE_MASK;
    if (type == PTHREAD_MUTEX_ERRORCHECK || type == PTHREAD_MUTEX_RECURSIVE) {
        if (owner_of(m) != ks_pt_tid())
            return EPERM;
        if (--m->depth)
            return 0;
        set_owner(m, 0); /* before the release: the next holder writes its own */
    }
    return ks_mutex_unlock(&m->lock);
}

KS_PT_EXPORT int pthread_mutex_consistent(pthread_mutex_t *mutex)
{
    int kind = pm_kind(pmutex(mutex));
    if (pm_is_krobust(kind))
        return ks_robust_consistent(krobust(mutex));
    if (!(kind & PM_ROBUST))
        return EINVAL; /* only robust mutexes can be inconsistent */
    return ks_pt_glibc()->consistent(mutex);
}

/* ---- condition waits --------------------------------------------------------- */

int ks_pt_wait_begin(struct ks_pt_wait *w, pthread_mutex_t *mutex, struct ks_mutex **word)
{
    struct ks_pmutex *m = pmutex(mutex);
    w->m = mutex;
    w->kind = pm_kind(m);
    w->depth = 0;
    if ((w->kind & PM_GLIBC) || pm_is_krobust(w->kind)) {
        *word = NULL; /* never requeued onto: woken waiters re-take it themselves */
        return 0;
    }
    int type = w->kind & PM_TYPE_MASK;
    if (type == PTHREAD_MUTEX_ERRORCHECK || type == PTHREAD_MUTEX_RECURSIVE) {
        if (owner_of(m) != ks_pt_tid())
            return EPERM;
    } else if (!(__atomic_load_n(&m->lock.state, __ATOMIC_RELAXED) & KS_MUTEX_LOCKED)) {
        return EPERM; /* relaxed: a best-effort misuse check */
    }
    *word = &m->lock;
    return 0;
}

static int wait_unlock(void *p)
{
    struct ks_pt_wait *w = p;
    if (pm_is_krobust(w->kind)) {
        ks_robust_t *r = krobust(w->m);
        /* relaxed: only the caller's own TID matters, which it wrote */
        if ((w->kind & PM_TYPE_MASK) == PTHREAD_MUTEX_RECURSIVE &&
            (__atomic_load_n(&r->word, __ATOMIC_RELAXED) & KS_ROBUST_TID_MASK) == (uint32_t)ks_pt_tid()) {
            w->depth = r->depth; /* the whole depth goes, as below */
            r->depth = 0;
        }
        return ks_robust_unlock(r); /* EPERM if not the caller's, as glibc's wait */
    }
    if (w->kind & PM_GLIBC)
        return ks_pt_glibc()->unlock(w->m); /* EPERM if not the caller's, as glibc's wait */
    struct ks_pmutex *m = pmutex(w->m);
    int type = w->kind & PM_TYPE_MASK;
    if (type == PTHREAD_MUTEX_ERRORCHECK || type == PTHREAD_MUTEX_RECURSIVE) {
        /* The whole depth goes: a recursive mutex held twice would
         * otherwise stay locked for the whole wait. */
        w->depth = m->depth;
        m->depth = 0;
        set_owner(m, 0);
    }
    ks_mutex_unlock(&m->lock);
    return 0;
}

static int wait_relock(void *p, int requeued)
{
    struct ks_pt_wait *w = p;
    if (pm_is_krobust(w->kind)) {
        /* EOWNERDEAD (held, inconsistent) or ENOTRECOVERABLE, as glibc's
         * wait; held either way, the caller's levels are its own again */
        ks_robust_t *r = krobust(w->m);
        int e = ks_robust_lock(r);
        if (e == 0 || e == EOWNERDEAD)
            r->depth = w->depth;
        return e;
    }
    if (w->kind & PM_GLIBC)
        return ks_pt_glibc()->lock(w->m);
    struct ks_pmutex *m = pmutex(w->m);
    if (requeued)
        ks_mutex_lock_requeued(&m->lock);
    else
        ks_mutex_lock(&m->lock);
    int type = w->kind & PM_TYPE_MASK;
    if (type == PTHREAD_MUTEX_ERRORCHECK || type == PTHREAD_MUTEX_RECURSIVE) {
        set_owner(m, ks_pt_tid());
        m->depth = w->depth;
    }
    return 0;
}

const struct ks_cond_lockops ks_pt_mutex_ops = {wait_unlock, wait_relock};

/* src/sem.c - slow paths of ks_sem.  Full write-up: docs/sem.md.
 *
 * One 64-bit word holds everything a post needs to decide whether to wake,
 * so a single atomic both posts and decides (glibc's fix for bug 12674):
 *
 *   bits 0-30   value V           units available
 *   bit 31      WAKING            a futex wake has been issued (or is about to
 *                                 be) and some registered waiter will run its
 *                                 loop again; further posts need not wake
 *   bits 32-63  waiters N         threads registered in the slow path
 *
 * post:    V+1; if N > 0 and !WAKING and the value was 0, also set WAKING,
 *          and FUTEX_WAKE 1 after the CAS.  Nothing is read after the CAS.
 * waiter:  registers (N+1) unless it can take a unit; then loops:
 *            V > 0  take a unit, unregister and clear WAKING in one CAS; if
 *                   units and other waiters remain, set WAKING again and wake
 *                   one more ("chained wake-up")
 *            V == 0 clear WAKING (if set) and FUTEX_WAIT on the low word == 0,
 *                   or, watching (below), set WAKING and FUTEX_WAIT on the
 *                   low word == WAKING with a timeout
 *          on ETIMEDOUT it takes a unit if one appeared, else unregisters
 *          (and clears WAKING) in one CAS.
 *
 * The watch.  A waiter that slept, was woken and finds V == 0 learns that a
 * running thread took the unit first (the poster itself, mostly: wait; work;
 * post; wait again).  Clearing WAKING would make the next 0 -> 1 post wake
 * another sleeper, which would find the unit gone too: with 16 threads on
 * 3 permits that was 0.15-0.2 futex wakes per post, each a sleep and a
 * wake-up, and half the machine's time (docs/sem.md).  Instead the woken
 * waiter becomes a watcher: it keeps WAKING set, so posts do not wake, and
 * sleeps with a timeout of KS_SEM_WATCH_NS, doubling up to
 * KS_SEM_WATCH_MAX_NS (20 us .. 160 us, 300 us in all), looking for a
 * unit at each end; then it clears WAKING as before.  A watcher answers
 * for the units posted while it sleeps within its timeout: that is the
 * price, a unit nobody re-takes waits up to 160 us (plus the timer's slack)
 * for a watcher.  The drop-in's untimed sem_wait (KS_WAIT_EINTR |
 * KS_WAIT_UNTIMED) does not watch: a timed sleep ends in EINTR under
 * SA_RESTART, where glibc's untimed sem_wait is restarted.  Its
 * sem_timedwait and sem_clockwait do: their sleeps are timed anyway, and a
 * signal that ends a watch ends the call as it would have ended the sleep,
 * with EINTR (the watcher unregisters, which clears WAKING and passes a
 * unit that is there to another waiter) or with a unit posted while the
 * handler ran.  Nor do waiters of a KS_SHARED
 * semaphore (see wait_core).
 *
 * No lost wake-up.  Claim: whenever V > 0 and N > 0, a registered waiter is
 * awake in its loop, a wake is in flight to a sleeper, or a watcher's timed
 * sleep will end and it will look (WAKING is set in all three).  A waiter registers
 * and sleeps only while V == 0, so V > 0 with waiters begins with a post
 * that took V from 0 to 1; that post woke one (or found WAKING set: a wake
 * already in flight).  WAKING is cleared only by a waiter running its loop,
 * and only (a) together with taking a unit, in which case it re-arms WAKING
 * and wakes another if V > 1 and N > 1, or (b) when it observed V == 0.
 * A watcher sets or keeps WAKING only when it observed V == 0 and is about
 * to sleep with a timeout, after which it runs its loop again.  (A signal
 * handler that runs on a watcher delays that look until it returns: a post
 * meanwhile wakes nobody, and the watcher takes the unit after its handler.
 * No unit is lost, but another sleeper waits for the handler; a review's
 * reproducer with a 300 ms handler.  The library cannot act before a
 * handler runs.)
 * Posts that find V > 0 need not wake: the units they add are either taken by
 * the running threads, or found by the woken waiter, which chains.  A waiter
 * between its clearing CAS and FUTEX_WAIT sleeps only if the low word is
 * still 0, and a post changes it, so its wait returns EAGAIN.
 *
 * Why WAKING and the 0 -> 1 rule: with many threads and few permits, glibc's
 * sem_post makes a FUTEX_WAKE on every post that sees a waiter, and the woken
 * thread usually finds the unit already re-taken by a running thread.  Here a
 * post wakes only when a unit appears where there was none, and at most one
 * wake is in flight (docs/sem.md has the figures).  The price is fairness:
 * threads that keep posting and waiting re-take units ahead of sleepers, as
 * with any barging semaphore (sem_t, Python's Semaphore).  No post can
 * wake "for fairness" while units are there: by the claim above, V > 0 with
 * N > 0 always has WAKING set, so such a post would only add a second wake
 * in flight.  (An earlier one-in-64 "fair turn" tested for V > 0 with
 * WAKING clear, a state no transition reaches, and never fired; it is gone:
 * docs/sem.md.)  Sleepers are never stranded: when the running threads
 * stop, the chain hands every remaining unit to a sleeper.
 *
 * A process killed between a post's CAS and its wake (KS_SHARED) leaves
 * WAKING set and no wake on its way; the sleepers' shared sleeps end within
 * KS_PEER_RECHECK_NS (src/futex.c) and the first to look takes a unit and
 * chains (docs/shared.md).
 */
#include "internal.h"

#include <ksync/lockstat.h>
#include <ksync/sem.h>

#include <pthread.h>

#define V(x) ((x) & KS_SEM_VALUE_MASK)
#define NW(x) ((x) >> 32)
#define WAKING KS_SEM_WAKING
#define ONE_W KS_SEM_ONE_WAITER

/* A watcher's first timeout and the longest one (see wait_core). */
#ifndef KS_SEM_WATCH_NS
#define KS_SEM_WATCH_NS 20000
#endif
#ifndef KS_SEM_WATCH_MAX_NS
#define KS_SEM_WATCH_MAX_NS (8 * KS_SEM_WATCH_NS)
#endif

/* The futex word: the half of the 64-bit state that holds V and WAKING. */
static inline const uint32_t *fword(const ks_sem_t *s)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (const uint32_t *)&s->state + 1;
#else
    return (const uint32_t *)&s->state;
#endif
}

int ks_sem_init_at(ks_sem_t *s, unsigned value, unsigned max, unsigned flags, const void *site)
{
    if (!s || (flags & ~KS_FLAGS_VALID) || max == 0 || max > KS_SEM_VALUE_MAX || value > max)
        return EINVAL;
    s->state = value;
    s->max = max;
    s->flags = flags;
    if (KS_UNLIKELY(ks_ls_mode()))
        ks_ls_init(s, KS_LOCK_SEM, site); /* lock statistics: a new record, or a reset one */
    return 0;
}

int ks_sem_init_bounded(ks_sem_t *s, unsigned value, unsigned max, unsigned flags)
{
    return ks_sem_init_at(s, value, max, flags, __builtin_return_address(0));
}

int ks_sem_init(ks_sem_t *s, unsigned value, unsigned flags)
{
    return ks_sem_init_at(s, value, KS_SEM_VALUE_MAX, flags, __builtin_return_address(0));
}

int ks_sem_destroy(ks_sem_t *s)
{
    if (!s)
        return EINVAL;
    /* relaxed: a courtesy check; destroy is only legal with no users. */
    if (NW(__atomic_load_n(&s->state, __ATOMIC_RELAXED)))
        return EBUSY;
    return 0;
}

int ks_sem_post_slow(ks_sem_t *s)
{
    if (!s)
        return EINVAL;
    /* Everything post needs from the object is read before the CAS. */
    const uint64_t lim = s->max ? s->max : KS_SEM_VALUE_MAX;
    const unsigned fl = s->flags;
    uint64_t v = __atomic_load_n(&s->state, __ATOMIC_RELAXED), nv;
    int wake;
    do {
        if (V(v) >= lim)
            return EOVERFLOW;
        nv = v + 1;
        /* Wake on 0 -> 1 only: while units are available, either the
         * threads that keep posting and waiting take them, or a woken waiter
         * is running and chains (see the proof above). */
        wake = NW(v) && !(v & WAKING) && V(v) == 0;
        if (wake)
            nv |= WAKING;
        /* release: pairs with the acquire CAS of whoever takes the unit. */
    } while (!__atomic_compare_exchange_n(&s->state, &v, nv, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
    if (wake) {
        KS_RACE_POINT();
        ks_futex_wake(fword(s), 1, fl); /* address only: s may be gone */
    }
    return 0;
}

/* Take a unit while registered (v has V > 0): unregister and clear WAKING in
 * the same CAS, re-arming WAKING for a chained wake if work remains.
 * Returns 1 on success, 0 if the CAS lost (v is then reloaded). */
static int take_registered(ks_sem_t *s, uint64_t *v, unsigned fl)
{
    uint64_t nv = ((*v - 1 - ONE_W) & ~WAKING);
    int chain = V(*v) > 1 && NW(*v) > 1;
    if (chain)
        nv |= WAKING;
    /* acquire: pairs with the release CAS in post. */
    if (!__atomic_compare_exchange_n(&s->state, v, nv, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return 0;
    if (chain) {
        KS_RACE_POINT();
        ks_futex_wake(fword(s), 1, fl);
    }
    return 1;
}

/* Unregister without taking a unit (cancellation, EINTR).  The waiter may
 * have been the one a post woke, so if units remain for other registered
 * waiters it hands the wake on, keeping the claim above: V > 0 with N > 0
 * means a waiter is awake or a wake is in flight.  relaxed: unregistering
 * publishes nothing (no unit is taken). */
static void unregister(ks_sem_t *s, unsigned fl)
{
    uint64_t v = __atomic_load_n(&s->state, __ATOMIC_RELAXED), nv;
    int pass;
    do {
        nv = (v - ONE_W) & ~WAKING;
        pass = V(nv) && NW(nv);
        if (pass)
            nv |= WAKING;
    } while (!__atomic_compare_exchange_n(&s->state, &v, nv, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    if (pass)
        ks_futex_wake(fword(s), 1, fl);
}

/* Take a unit, or register as a waiter; with `expired`, neither when no
 * unit is there.  1: took one; 0: registered (*v is the state after);
 * -1: expired, nothing done. */
static int take_or_register(ks_sem_t *s, uint64_t *v, int expired)
{
    *v = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
    for (;;) {
        if (!V(*v) && expired)
            return -1;
        if (V(*v)) {
            /* acquire: pairs with the release CAS in post. */
            if (__atomic_compare_exchange_n(&s->state, v, *v - 1, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                return 1;
        } else if (__atomic_compare_exchange_n(&s->state, v, *v + ONE_W, 1, __ATOMIC_RELAXED,
                                               __ATOMIC_RELAXED)) {
            /* relaxed: registering publishes no data; post reads N in its own CAS. */
            *v += ONE_W;
            return 0;
        }
    }
}

/* Registered: take a unit if there is one (1), else clear WAKING, as a
 * waiter about to sleep does (0: sleep on the low word == 0).  A watcher
 * (`watch`) sets WAKING instead and sleeps on the low word == WAKING: it
 * answers for the units posts add while it sleeps, within its timeout. */
static int take_or_settle(ks_sem_t *s, uint64_t *v, unsigned fl, int watch)
{
    for (;;) {
        if (V(*v)) {
            if (take_registered(s, v, fl))
                return 1;
            continue;
        }
        if (watch) {
            /* relaxed: the token carries no data, see the proof above. */
            if (!(*v & WAKING) &&
                !__atomic_compare_exchange_n(&s->state, v, *v | WAKING, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                continue;
            *v |= WAKING;
            return 0;
        }
        if (*v & WAKING) {
            /* relaxed: the token carries no data, see the proof above. */
            if (!__atomic_compare_exchange_n(&s->state, v, *v & ~WAKING, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                continue;
            *v &= ~WAKING;
        }
        return 0;
    }
}

static void on_cancel(void *p)
{
    ks_sem_t *s = p;
    unregister(s, s->flags);
}

static int sleep_cancellable(ks_sem_t *s, uint32_t expect, int64_t deadline, unsigned fl)
{
    int r;
    pthread_cleanup_push(on_cancel, s);
    r = ks_futex_wait_cancellable(fword(s), expect, deadline, fl);
    pthread_cleanup_pop(0);
    return r;
}

/* *waited: set once the caller spun without a unit, or registered. */
static int wait_core(ks_sem_t *s, int64_t deadline, unsigned opts, int *waited)
{
    const unsigned fl = s->flags;
    uint64_t v;

    /* Spin (for src/spin.c's budget), but only while nobody is queued
     * (spinning past queued waiters just steals from them, docs/pitfalls.md
     * item 9). */
    struct ks_spin sp;
    if (ks_spin_begin(&sp, KS_SPIN_SEM)) {
        ks_spin_clip(&sp, deadline); /* ends at the deadline; one already past: try, barely spin */
        do {
            v = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
            if (NW(v))
                break;
            /* acquire: pairs with the release CAS in post. */
            if (V(v) && __atomic_compare_exchange_n(&s->state, &v, v - 1, 1, __ATOMIC_ACQUIRE,
                                                    __ATOMIC_RELAXED)) {
                ks_spin_won(&sp);
                return 0;
            }
            *waited = 1;
            ks_cpu_relax();
        } while (ks_spin_more(&sp));
        ks_spin_end(&sp);
    }

    /* Take a unit, or register as a waiter (unless the deadline has passed). */
    int t = take_or_register(s, &v, ks_deadline_passed(deadline));
    if (t) {
        if (t < 0)
            return ETIMEDOUT;
        ks_spin_waited(&sp);
        return 0;
    }
    *waited = 1;

    /* The drop-in layer's sem_wait (KS_WAIT_EINTR | KS_WAIT_UNTIMED) sleeps
     * unsliced, as glibc's: a sliced sleep is a timed FUTEX_WAIT, which a
     * signal handler ends with EINTR even under SA_RESTART (src/futex.c).
     * A sem_timedwait whose abstime is too far to count stays a timed
     * wait, EINTR under any handler, as glibc's: the layer passes it as
     * KS_FOREVER - 1 (src/dropin/psem.c). */
    const unsigned untimed = KS_WAIT_EINTR | KS_WAIT_UNTIMED;
    const unsigned sfl = (opts & untimed) == untimed ? fl | KS_FUTEX_NOSLICE : fl;
    /* Watching (see the comment at the top): after a wake-up that found no
     * unit, sleep with WAKING kept set for `watch` ns, doubling up to
     * KS_SEM_WATCH_MAX_NS, instead of clearing it for the next post to
     * wake someone else.  Not for the drop-in's untimed sem_wait: a timed
     * sleep would end in EINTR where an untimed one is restarted
     * (src/futex.c); its timed waits sleep timed anyway, and an EINTR
     * during a watch leaves through unregister() like any other.
     * Not for KS_SHARED semaphores: a watcher's process killed while it
     * watches would leave WAKING set, and posts would wake nobody until a
     * sleeper's slice ended (KS_PEER_RECHECK_NS, a second); and a shared
     * sleep's slice ends as a spurious return, which would start a watch
     * every second. */
    const int may_watch = (opts & untimed) != untimed && !(fl & KS_SHARED);
    int64_t watch = 0;
    for (;;) {
        if (take_or_settle(s, &v, fl, watch != 0)) {
            ks_spin_waited(&sp);
            return 0;
        }
        KS_RACE_POINT();
        int64_t dl = deadline;
        int tick = 0;
        if (watch) {
            const int64_t w = ks_deadline_after(watch);
            if (deadline == KS_FOREVER || w < deadline) {
                dl = w;
                tick = 1;
            }
        }
        const uint32_t expect = (uint32_t)(v & (KS_SEM_VALUE_MASK | WAKING)); /* 0, or WAKING when watching */
        int r;
        if (opts & KS_WAIT_CANCEL)
            r = sleep_cancellable(s, expect, dl, sfl);
        else if (opts & KS_WAIT_EINTR)
            r = ks_futex_wait_intr(fword(s), expect, dl, sfl);
        else
            r = ks_futex_wait(fword(s), expect, dl, fl);
        v = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
        if (r == EINTR && (opts & KS_WAIT_EINTR)) {
            /* A signal handler ran: take a unit that is there, else leave. */
            if (V(v) && take_registered(s, &v, fl))
                return 0;
            unregister(s, fl);
            return EINTR;
        }
        if (r == ETIMEDOUT && tick) {
            /* The end of a watch: look again, and watch twice as long, or
             * give WAKING back when the watch has lasted long enough. */
            watch = watch < KS_SEM_WATCH_MAX_NS ? 2 * watch : 0;
            continue;
        }
        if (r != ETIMEDOUT) {
            /* Woken (or spuriously): if no unit is there, a running thread
             * took it first; start watching. */
            if (may_watch && !watch && !V(v))
                watch = KS_SEM_WATCH_NS;
            continue;
        }
        /* Timed out: leave, unless a unit is there to take right now. */
        for (;;) {
            if (V(v)) {
                if (take_registered(s, &v, fl))
                    return 0;
                continue;
            }
            /* relaxed: unregistering publishes nothing (no unit is taken). */
            if (__atomic_compare_exchange_n(&s->state, &v, (v - ONE_W) & ~WAKING, 1, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED))
                return ETIMEDOUT;
        }
    }
}

/* The inline trywait, made here for callers that skipped it (a
 * -DKSYNC_DEBUG build, the drop-in layer counting every wait), so that a
 * unit that is there is taken as it would be inline: without a turn of
 * the spin loop, whose quick win would shrink the thread's spin budget
 * (src/spin.c).  For a caller whose inline trywait failed, one load.
 * acquire: pairs with the release CAS in post. */
static int take_inline(ks_sem_t *s)
{
    uint64_t v = __atomic_load_n(&s->state, __ATOMIC_RELAXED); /* seeds the CAS */
    while (V(v))
        if (__atomic_compare_exchange_n(&s->state, &v, v - 1, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return 1;
    return 0;
}

/* Lock statistics (src/lockstat.c, docs/lockstat.md): the waits that reach
 * the library.  A wait counts as contended when it had to spin without a
 * unit or register as a waiter; its wait time runs from here to the unit.
 * No hold: a unit has no holder (a post may come from any thread). */
int ks_sem_wait_at(ks_sem_t *s, int64_t deadline, unsigned opts, const void *site)
{
    if (!s || deadline < 0)
        return EINVAL;
    int waited = 0;
    if (KS_LIKELY(!ks_ls_mode()))
        return take_inline(s) ? 0 : wait_core(s, deadline, opts, &waited);
    void *rec = ks_ls_enter(s, KS_LOCK_SEM, site);
    const uint64_t t0 = rec ? ks_ticks() : 0;
    int r = take_inline(s) ? 0 : wait_core(s, deadline, opts, &waited);
    if (r == 0 && rec)
        ks_ls_acquired(rec, waited, waited ? ks_ticks() - t0 : 0, 0);
    return r;
}

int ks_sem_wait_ext(ks_sem_t *s, int64_t deadline, unsigned opts)
{
    return ks_sem_wait_at(s, deadline, opts, __builtin_return_address(0));
}

int ks_sem_wait_slow(ks_sem_t *s, int64_t deadline)
{
    return ks_sem_wait_at(s, deadline, 0, __builtin_return_address(0));
}

int ks_sem_trywait_at(ks_sem_t *s, const void *site)
{
    if (!s)
        return EINVAL;
    const int mode = ks_ls_mode();
    void *rec = KS_UNLIKELY(mode) ? ks_ls_enter(s, KS_LOCK_SEM, site) : NULL;
    if (!take_inline(s))
        return EAGAIN;
    if (rec)
        ks_ls_acquired(rec, 0, 0, 0);
    return 0;
}

int ks_sem_trywait_slow(ks_sem_t *s)
{
    return ks_sem_trywait_at(s, __builtin_return_address(0));
}

/* ks_wait_any's hooks (src/internal.h).  arm: take a unit if there is one,
 * else register as a waiter (the same registration as ks_sem_wait's) and
 * watch the futex word at 0, with WAKING cleared as the wait loop clears it
 * before it sleeps. */
int ks_sem_any_arm(ks_sem_t *s, struct ks_waitset *ws)
{
    if (!s)
        return -EINVAL;
    uint64_t v;
    if (take_or_register(s, &v, 0) || take_or_settle(s, &v, s->flags, 0))
        return 1;
    ks_waitset_add(ws, fword(s), 0, s->flags);
    return 0;
}

/* After a wake, still registered: take a unit if one is there (1, which
 * ends the registration), else 0 (still registered). */
int ks_sem_any_take(ks_sem_t *s)
{
    uint64_t v = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
    while (V(v))
        if (take_registered(s, &v, s->flags))
            return 1;
    return 0;
}

void ks_sem_any_disarm(ks_sem_t *s)
{
    unregister(s, s->flags);
}

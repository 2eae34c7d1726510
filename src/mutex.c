/* src/mutex.c - slow paths of ks_mutex.  Full write-up: docs/mutex.md.
 *
 * The futex word (m->state) holds three bits:
 *
 *   LOCKED     the mutex is held
 *   CONTENDED  threads may be asleep on the word: the unlocker must wake one
 *   STARVING   a waiter has been waiting longer than KS_MUTEX_STARVE_NS:
 *              newcomers must not take the mutex, only threads that have
 *              already slept on it may
 *
 *   state                    meaning                       next
 *   0                        free                          lock fast path -> L
 *   L                        held, nobody asleep           unlock fast path -> 0
 *   L|C                      held, maybe sleepers          unlock -> 0 + wake 1
 *   L|C|S                    held, a long waiter exists    unlock -> S + wake 1
 *   S (|C)                   free, reserved for a thread   a woken waiter -> L|C|S
 *                            that has slept
 *
 * This is Drepper's three-state mutex ("Futexes Are Tricky", mutex3: 0 / 1 /
 * 2 = locked-maybe-waiters) with two additions:
 *  - a bounded spin that stops as soon as anybody sleeps or starves (spinning
 *    past queued waiters only steals the lock from them: musl f5fb20b0);
 *  - eventual fairness in the style of Go's sync.Mutex and nsync's
 *    MU_LONG_WAIT: a waiter that has waited more than KS_MUTEX_STARVE_NS sets
 *    S, which stops barging until it gets the lock.  Each unlock wakes the
 *    oldest sleeper (the kernel queues waiters of one priority in FIFO order),
 *    so while S is set the mutex is handed down the queue.
 *
 * Invariants:
 *  (I1) a thread only sleeps on a word value with C set, so the unlock that
 *       changes that value sees C and wakes someone;
 *  (I2) a thread that acquires after having slept sets C (it cannot know
 *       whether others still sleep: Drepper's rule, musl 0db393d3);
 *  (I3) S is set only by a waiter that will itself come back to the word
 *       (it sleeps with C set, so an unlock wakes a sleeper), and that
 *       waiter clears S when it leaves, by acquiring or by timing out; so S
 *       never strands a free mutex with nobody to take it.  Unless that
 *       waiter dies (a process killed while waiting on a KS_SHARED mutex):
 *       a thread that has slept KS_MUTEX_ORPHAN_NS on a free mutex
 *       reserved by S takes it and clears S (tests/test_shm.c).  Timing out on
 *       a free mutex it clears C too and wakes one sleeper if C was set
 *       (leave_starving), so no C is left on a free mutex nobody waits on.
 */
#include "internal.h"

#include <ksync/lockdep.h>
#include <ksync/lockstat.h>
#include <ksync/mutex.h>

#define L KS_MUTEX_LOCKED
#define C KS_MUTEX_CONTENDED
#define S KS_MUTEX_STARVING
#define T KS_MUTEX_TRACED

/* How long a waiter may lose to barging threads before it turns the mutex
 * FIFO.  Go uses 1 ms; measured in docs/mutex.md. */
#define KS_MUTEX_STARVE_NS 1000000
/* How long a newcomer waits for a free mutex reserved by S before it takes
 * the reservation over: the waiter that set S may have died (a process
 * SIGKILLed while waiting on a KS_SHARED mutex), and it alone clears S
 * (I3).  Ten times the starvation threshold: a live starving waiter is
 * woken by the unlock that freed the mutex and takes it long before. */
#define KS_MUTEX_ORPHAN_NS 10000000

int ks_mutex_init_at(ks_mutex_t *m, unsigned flags, const void *site)
{
    if (!m || (flags & ~KS_FLAGS_VALID))
        return EINVAL;
    m->flags = flags;
    /* Lock statistics (src/lockstat.c) in KS_LOCKSTAT_ALL, and lock-order
     * checking (src/lockdep.c): the mark makes every lock and unlock of this
     * mutex take the slow path. */
    int mode = ks_ls_mode(), ld = ks_ld_on();
    m->state = mode == KS_LOCKSTAT_ALL || ld ? T : 0;
    if (KS_UNLIKELY(mode || ld))
        ks_ls_init(m, KS_LOCK_MUTEX, site);
    if (KS_UNLIKELY(ld))
        ks_ld_forget(m);
    return 0;
}

int ks_mutex_init(ks_mutex_t *m, unsigned flags)
{
    return ks_mutex_init_at(m, flags, __builtin_return_address(0));
}

int ks_mutex_destroy(ks_mutex_t *m)
{
    if (!m)
        return EINVAL;
    /* relaxed: destroy is only legal when no other thread uses the mutex;
     * this check is a courtesy for the caller who got that wrong. */
    uint32_t s = __atomic_load_n(&m->state, __ATOMIC_RELAXED);
    /* lock-order checking: a report if it is locked, and the end of the
     * lock's identity if the destroy succeeds (not while it is waited on) */
    if (KS_UNLIKELY(ks_ld_on()) && ((s & L) || !(s & ~T)))
        ks_ld_destroy(m, (s & L) != 0, __builtin_return_address(0));
    if (s & ~T)
        return EBUSY;
    if (s)
        __atomic_store_n(&m->state, 0, __ATOMIC_RELAXED); /* relaxed: as above */
    return 0;
}

static int lock_slow(ks_mutex_t *m, int64_t deadline, int slept);

/* (I3) for a thread that set S and gives up (timed out): clear S.  If the
 * mutex is held, its unlock will wake a sleeper as usual.  If it is free, S
 * was what kept the others away, and C may be a left-over of newcomers that
 * slept behind S and have since timed out too: clear C as well and wake one
 * sleeper if C was set.  That one acquires with C (I2) or sets C again
 * before it sleeps, so sleepers that remain are still announced; and
 * nobody left, the word is 0, so trylock and destroy see a free mutex
 * (leaving C behind made them answer EBUSY on a free, unwaited mutex).
 * relaxed: nothing is published; the lock's data is ordered by L. */
static void leave_starving(ks_mutex_t *m, unsigned fl)
{
    uint32_t s = __atomic_load_n(&m->state, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(&m->state, &s, (s & L) ? (s & ~S) : (s & T), 1, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
        ;
    if (!(s & L) && (s & C))
        ks_futex_wake(&m->state, 1, fl);
}

/* The slow path as lock statistics see it (docs/lockstat.md): with
 * statistics off and no mark, lock_slow alone.  Otherwise the time from
 * here to the acquisition is the wait, if the mutex was held (or reserved)
 * when we looked; the holder fixes the mark to the mode (set for
 * KS_LOCKSTAT_ALL, cleared otherwise) and stamps the hold when its unlock
 * will come to the slow path (T or C set: only the holder clears them). */
static int lock_stat(ks_mutex_t *m, int64_t deadline, int slept, const void *site)
{
    int mode = ks_ls_mode(), ld = ks_ld_on();
    uint32_t s0 = __atomic_load_n(&m->state, __ATOMIC_RELAXED); /* a statistic: ordered by nothing */
    if (KS_LIKELY(!mode && !ld && !(s0 & T)))
        return lock_slow(m, deadline, slept);
    /* lock-order checking: before any wait (src/lockdep.c); a deadline
     * already past cannot wait: a trylock, no orders */
    if (ld && (deadline == KS_FOREVER || !ks_deadline_passed(deadline)))
        ks_ld_lock(m, KS_LOCK_MUTEX, site);
    /* the record before the lock: nothing but the stamp inside it */
    void *rec = mode ? ks_ls_enter(m, KS_LOCK_MUTEX, site) : NULL;
    /* A free mutex (the fast path failed on the mark alone, or the caller
     * made none: a -DKSYNC_DEBUG build, the drop-in layer counting every
     * acquisition; or it was freed since the fast path failed): one CAS, as
     * the fast path would have done (acquire: pairs with the release in
     * unlock), and an acquisition without a wait if it wins.  Sending an
     * unmarked one to lock_slow instead counted it as contended, with the
     * time lock_slow took.  Only a contended acquisition reads the clock
     * before it. */
    const int contended = (s0 & (L | S)) || slept;
    uint64_t t0 = contended ? ks_ticks() : 0;
    if (contended ||
        !__atomic_compare_exchange_n(&m->state, &s0, s0 | L, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        if (!t0)
            t0 = ks_ticks(); /* lost the CAS: a wait after all */
        int r = lock_slow(m, deadline, slept);
        if (r) {
            if (ld)
                ks_ld_wait_end(); /* for the watchdog: no longer waiting */
            return r;
        }
    }
    uint32_t s = __atomic_load_n(&m->state, __ATOMIC_RELAXED); /* seeds the CAS */
    /* no record (the table full, no memory): no mark, or every call of
     * this mutex would come here for nothing */
    uint32_t want = (mode == KS_LOCKSTAT_ALL && rec) || ld ? T : 0;
    /* relaxed: the mark publishes nothing; others only add C or S meanwhile */
    while ((s & T) != want && !__atomic_compare_exchange_n(&m->state, &s, (s & ~T) | want, 1, __ATOMIC_RELAXED,
                                                           __ATOMIC_RELAXED))
        ;
    if (rec) {
        uint64_t now = ks_ticks();
        ks_ls_acquired(rec, t0 != 0, t0 ? now - t0 : 0, (s & C) || want ? now : 0);
    }
    if (ld)
        ks_ld_locked(m, KS_LOCK_MUTEX, site, 0);
    return 0;
}

int ks_mutex_lock_at(ks_mutex_t *m, int64_t deadline, const void *site)
{
    if (!m || deadline < 0)
        return EINVAL;
    return lock_stat(m, deadline, 0, site);
}

int ks_mutex_lock_slow(ks_mutex_t *m, int64_t deadline)
{
    return ks_mutex_lock_at(m, deadline, __builtin_return_address(0));
}

int ks_mutex_lock_requeued(ks_mutex_t *m)
{
    return lock_stat(m, KS_FOREVER, 1, __builtin_return_address(0));
}

int ks_mutex_trylock_slow(ks_mutex_t *m)
{
    return ks_mutex_trylock_at(m, __builtin_return_address(0));
}

int ks_mutex_trylock_at(ks_mutex_t *m, const void *site)
{
    if (!m)
        return EINVAL;
    int mode = ks_ls_mode(), ld = ks_ld_on();
    /* the record before the lock, as in lock_stat */
    void *rec = mode ? ks_ls_enter(m, KS_LOCK_MUTEX, site) : NULL;
    uint32_t s = __atomic_load_n(&m->state, __ATOMIC_RELAXED); /* seeds the CAS */
    while (!(s & (L | S))) {
        /* acquire: pairs with the release in unlock */
        if (__atomic_compare_exchange_n(&m->state, &s, s | L, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            /* the holder fixes the mark to the mode, as in lock_stat */
            uint32_t want = (mode == KS_LOCKSTAT_ALL && rec) || ld ? T : 0;
            uint32_t v = s | L;
            /* relaxed: as in lock_stat */
            while ((v & T) != want && !__atomic_compare_exchange_n(&m->state, &v, (v & ~T) | want, 1,
                                                                   __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                ;
            if (rec)
                ks_ls_acquired(rec, 0, 0, (v & C) || want ? ks_ticks() : 0);
            if (ld)
                ks_ld_locked(m, KS_LOCK_MUTEX, site, 1); /* a trylock: no order towards it */
            return 0;
        }
    }
    return EBUSY;
}

/* slept: the caller has already slept on this word (or on a condition
 * variable whose waiters may have been requeued onto it). */
static int lock_slow(ks_mutex_t *m, int64_t deadline, int slept)
{
    const unsigned fl = m->flags;
    uint32_t s;

    /* Spin while the holder runs and nobody is queued, for as long as
     * src/spin.c allows.  The pause between two looks doubles up to 16
     * cpu_relax: each look pulls the line away from the owner, whose next
     * CAS then has to fetch it back, so fewer looks let it run longer
     * (figures in docs/mutex.md).  A free word is first left to its holder
     * for the thread's learned deferral (src/spin.c, "deferring to the
     * holder"), and taken if it is still free after it.  A thread that
     * slept on the word already (requeued from a condition variable)
     * neither spins nor learns. */
    struct ks_spin sp;
    const int learn = !slept;
    if (learn && ks_spin_begin(&sp, KS_SPIN_MUTEX)) {
        ks_spin_clip(&sp, deadline); /* ends at the deadline; one already past: barely spin */
        int b = 1;
        int deferred = 0; /* the look after a deferral: what it sees is learned */
        do {
            s = __atomic_load_n(&m->state, __ATOMIC_RELAXED);
            if (deferred) {
                deferred = 0;
                if (s & L)
                    ks_spin_deferred(KS_SPIN_MUTEX, 1); /* the holder (or another) took it */
                else if ((s & ~T) == 0)
                    ks_spin_deferred(KS_SPIN_MUTEX, 0); /* still free: take it below */
            } else if ((s & ~T) == 0 && !sp.clipped) {
                const uint32_t d = ks_spin_defer_ns(KS_SPIN_MUTEX);
                if (d) {
                    if (!ks_spin_defer(&sp, d))
                        break; /* the spin is over: the loop below takes a free word */
                    deferred = 1;
                    continue;
                }
            }
            if ((s & ~T) == 0) {
                /* acquire: pairs with the release in unlock.  Strong: a
                 * spurious failure (LL/SC) would defer a second time. */
                if (__atomic_compare_exchange_n(&m->state, &s, s | L, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
                    ks_spin_won(&sp);
                    return 0;
                }
                continue;
            }
            if (s & (C | S))
                break;
            for (int k = 0; k < b; k++)
                ks_cpu_relax();
            b = b < 16 ? 2 * b : 16;
        } while (ks_spin_more(&sp));
        ks_spin_end(&sp);
    }

    int set_s = 0;    /* this thread set S and must clear it when it leaves */
    int adopt = 0;    /* it waited KS_MUTEX_ORPHAN_NS for a free reserved mutex: it takes S over */
    int quiet = 0;    /* its last sleep ended at a KS_SHARED slice's end, with no wake */
    int64_t since = 0;
    s = __atomic_load_n(&m->state, __ATOMIC_RELAXED);
    for (;;) {
        if (!(s & L) && (!(s & S) || slept)) {
            uint32_t ns = s | L | (slept ? C : 0); /* (I2) */
            if (set_s || adopt)
                ns &= ~S;
            /* acquire: pairs with the release in unlock. */
            if (__atomic_compare_exchange_n(&m->state, &s, ns, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
                if (learn)
                    ks_spin_waited(&sp);
                return 0;
            }
            continue;
        }
        /* A deadline already past: fail before announcing a sleeper, so a
         * trylock-like call leaves no CONTENDED residue (no spurious wake). */
        if (!since && ks_deadline_passed(deadline))
            return ETIMEDOUT;
        uint32_t ns = s | C; /* (I1) */
        int want_s = since && !quiet && !set_s && !(s & S) && ks_now() - since > KS_MUTEX_STARVE_NS;
        if (want_s)
            ns |= S;
        if (ns != s) {
            /* relaxed: announcing a sleeper publishes no data; the kernel
             * re-reads the word before it lets us sleep. */
            if (!__atomic_compare_exchange_n(&m->state, &s, ns, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                continue;
            set_s |= want_s;
        }
        if (!since)
            since = ks_now();
        KS_RACE_POINT();
        /* Asleep on a free mutex reserved by S: if the reserving waiter is
         * dead, no unlock will come.  Bounded, then the reservation is ours.
         * A KS_SHARED sleep is cut here rather than in src/futex.c, so that
         * the end of a slice (a peer killed between its unlock and its wake
         * is looked for) is not taken for a wake that found the mutex held
         * again: that would set S on a mutex that was merely held long. */
        int orphan_watch = !(ns & L) && (ns & S) && !set_s;
        int64_t until = deadline;
        enum { WOKEN_OR_DEADLINE, ORPHAN_WATCH, SLICE } cut = WOKEN_OR_DEADLINE;
        if (orphan_watch) {
            int64_t o = ks_deadline_after(KS_MUTEX_ORPHAN_NS);
            if (o < until) {
                until = o;
                cut = ORPHAN_WATCH;
            }
        } else if (fl & KS_SHARED) {
            int64_t sl = ks_deadline_after(KS_PEER_RECHECK_NS);
            if (sl < until) {
                until = sl;
                cut = SLICE;
            }
        }
        int r = ks_futex_wait(&m->state, ns, until, fl | KS_FUTEX_NOSLICE);
        slept = 1;
        quiet = 0;
        if (r == ETIMEDOUT && cut == ORPHAN_WATCH) {
            adopt = 1; /* the mutex stayed free and reserved for 10 ms */
            r = 0;
        } else if (r == ETIMEDOUT && cut == SLICE) {
            quiet = 1; /* nobody woke us: not a reason to set S */
            r = 0;
        }
        if (r == ETIMEDOUT) {
            if (set_s)
                leave_starving(m, fl);
            return ETIMEDOUT;
        }
        s = __atomic_load_n(&m->state, __ATOMIC_RELAXED);
    }
}

int ks_mutex_unlock_slow(ks_mutex_t *m)
{
    if (!m)
        return EINVAL;
    const unsigned fl = m->flags; /* read before the release: see below */
    uint32_t s = __atomic_load_n(&m->state, __ATOMIC_RELAXED);
    /* the hold ends here, while the mutex is still ours (after the release
     * it may be freed: the counting after it touches only the record) */
    void *held_rec = NULL;
    uint64_t held = 0;
    if (KS_UNLIKELY((s & T) || ks_ls_ever()) && (s & L))
        held = ks_ls_hold_end(m, &held_rec);
    if (KS_UNLIKELY(ks_ld_on()))
        ks_ld_unlock(m, (s & L) != 0, __builtin_return_address(0));
    do {
        if (!(s & L))
            return EPERM;
        /* release: pairs with the acquire CAS of the next locker.  Clears L
         * and C, keeps S so the hand-off to a slept thread continues, and T. */
    } while (!__atomic_compare_exchange_n(&m->state, &s, s & (S | T), 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
    /* From here the mutex may already be locked, unlocked and freed by
     * another thread: touch nothing but the futex address (the wake is
     * harmless on freed or reused memory; B.3 item 12). */
    if (s & (C | S)) {
        KS_RACE_POINT();
        ks_futex_wake(&m->state, 1, fl);
    }
    if (KS_UNLIKELY(held_rec))
        ks_ls_hold_add(held_rec, held);
    return 0;
}

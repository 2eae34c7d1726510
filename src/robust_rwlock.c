/* src/robust_rwlock.c - ks_robust_rwlock: a reader-writer lock whose writer
 * side survives its holder's death.  Full write-up: docs/robust_rwlock.md.
 *
 * Two words:
 *   writer.word  a ks_robust_t (src/robust.c): the write side's holder TID,
 *                W, OD; the kernel marks it OD when the holder dies
 *   readers      readers inside (COUNT) | DRAIN | WRITER
 *
 * WRITER is set and cleared only by the write side's holder: set after it
 * takes writer.word, cleared before it lets the word go (or left set when
 * it makes the lock not recoverable).  So WRITER with a free, owner-dead
 * word means exactly: a holder died inside.  DRAIN is set by that holder
 * when it sleeps on `readers` waiting for COUNT to reach 0.
 *
 *   reader enters:  CAS readers r -> r + 1 while WRITER is clear
 *   reader leaves:  CAS r -> r - 1; the last one wakes the writer if DRAIN
 *   writer enters:  lock writer.word (robust), then readers |= WRITER, then
 *                   sleep on `readers` until COUNT is 0
 *   writer leaves:  readers &= ~(WRITER | DRAIN), then release writer.word
 *                   waking every sleeper (readers sleep on it too)
 *
 * A reader that finds WRITER sleeps on writer.word (with W set and an owner
 * in it: robust.c's rule R1), so both the holder's release and its death
 * wake it: the kernel sets OD and wakes one sleeper.  A reader that finds
 * WRITER and an owner-dead word takes the write side over (ks_robust's lock
 * answers EOWNERDEAD), drains the readers and returns EOWNERDEAD holding
 * the lock exclusively: repair needs exclusion.  An owner that took it so
 * and then cannot wait for the readers (trylock, deadline) gives the word
 * back owner-dead (ks_robust_release_ with abandon) and leaves WRITER as it
 * found it, so the next locker is told of the death in turn.
 */
#include "internal.h"

#include <ksync/rmutex.h> /* ks_thread_id */
#include <ksync/robust_rwlock.h>

#define WRITER KS_RRW_WRITER
#define DRAIN KS_RRW_DRAIN
#define COUNT KS_RRW_COUNT
#define W KS_ROBUST_WAITERS
#define OD KS_ROBUST_OWNER_DIED
#define TID KS_ROBUST_TID_MASK
#define NOTREC KS_ROBUST_NOTRECOVERABLE

/* A sleeper re-reads the words at least this often: the kernel's wake for
 * a writer killed between its release and its wake is given only if the
 * word is still free when it looks (src/robust.c, RECHECK_NS). */
#define RECHECK_NS 1000000000LL

static inline int bad(const ks_robust_rwlock_t *rw)
{
    return !rw || ((uintptr_t)rw & (_Alignof(ks_robust_rwlock_t) - 1));
}

static inline uint32_t self_tid(void)
{
    return (uint32_t)(ks_thread_id() >> 32); /* the kernel TID (src/thread.c) */
}

int ks_robust_rwlock_init(ks_robust_rwlock_t *rw, unsigned flags)
{
    if (bad(rw) || (flags & ~KS_FLAGS_VALID))
        return EINVAL;
    int e = ks_robust_init(&rw->writer, flags);
    if (e)
        return e;
    rw->readers = 0;
    rw->flags = flags;
    return 0;
}

int ks_robust_rwlock_destroy(ks_robust_rwlock_t *rw)
{
    if (bad(rw))
        return EINVAL;
    /* relaxed: destroy is only legal when nobody uses the lock; a courtesy
     * check, as ks_robust_destroy's */
    if (__atomic_load_n(&rw->readers, __ATOMIC_RELAXED) & COUNT)
        return EBUSY;
    return ks_robust_destroy(&rw->writer);
}

/* The write side's holder (the caller): wait until no reader is inside.
 * WRITER is set first, so no reader enters meanwhile: the readers' CAS and
 * this RMW are ordered on the one word, so either a reader's increment is
 * seen here or its CAS fails on WRITER.  0, EBUSY (try), ETIMEDOUT. */
static int drain(ks_robust_rwlock_t *rw, int64_t deadline, int try)
{
    /* acquire: pairs with the release decrement of each reader that left
     * (its reads happen before our writes) */
    uint32_t r = __atomic_or_fetch(&rw->readers, WRITER, __ATOMIC_ACQUIRE);
    while (r & COUNT) {
        if (try)
            return EBUSY;
        if (ks_deadline_passed(deadline))
            return ETIMEDOUT;
        if (!(r & DRAIN)) {
            /* acquire: a failure re-reads the count as the load below
             * does (and C11 wants success at least as strong); setting
             * DRAIN itself publishes nothing */
            if (!__atomic_compare_exchange_n(&rw->readers, &r, r | DRAIN, 0, __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE))
                continue;
            r |= DRAIN;
        }
        int64_t until = ks_now() + RECHECK_NS;
        KS_RACE_POINT();
        ks_futex_wait(&rw->readers, r, deadline < until ? deadline : until, rw->flags);
        /* acquire: pairs with the release decrement of the last reader */
        r = __atomic_load_n(&rw->readers, __ATOMIC_ACQUIRE);
    }
    return 0;
}

/* Let the write side go after drain failed: WRITER as it was found
 * (had_writer: a dead holder's, which must keep readers out), and the word
 * owner-dead again if we took it with EOWNERDEAD, else free. */
static void give_back(ks_robust_rwlock_t *rw, uint32_t had_writer, int owner_dead)
{
    /* release: pairs with the acquire CAS of the readers let in */
    __atomic_and_fetch(&rw->readers, ~(DRAIN | (had_writer ? 0 : WRITER)), __ATOMIC_RELEASE);
    ks_robust_release_(&rw->writer, owner_dead);
}

/* The write side, for a writer or for a reader taking over from a dead
 * writer.  Returns what ks_robust's lock said (0 or EOWNERDEAD) with the
 * lock held exclusively, or an error with nothing held.  A reader whose
 * lock answers 0 (another thread repaired the lock and released it since
 * the reader saw the death) lets the word go at once, before it sets
 * WRITER or waits for anyone, and gets REPAIRED: it then enters as a
 * reader (found by review: it used to drain the other readers, and a
 * tryrdlock returned 0 holding the write side). */
enum { REPAIRED = -1 };

static int write_side(ks_robust_rwlock_t *rw, int64_t deadline, int try, int reader)
{
    int e = try ? ks_robust_trylock(&rw->writer) : ks_robust_timedlock(&rw->writer, deadline);
    if (e != 0 && e != EOWNERDEAD)
        return e;
    if (e == 0 && reader) {
        ks_robust_release_(&rw->writer, 0); /* WRITER is clear: its repairer's unlock cleared it */
        return REPAIRED;
    }
    /* relaxed: only the holder (now us) changes WRITER */
    uint32_t had = __atomic_load_n(&rw->readers, __ATOMIC_RELAXED) & WRITER;
    int d = drain(rw, deadline, try);
    if (d) {
        give_back(rw, had, e == EOWNERDEAD);
        return d;
    }
    return e;
}

static int rd_acquire(ks_robust_rwlock_t *rw, int64_t deadline, int try)
{
    if (bad(rw) || deadline < 0)
        return EINVAL;
    /* relaxed: seeds the CAS */
    uint32_t r = __atomic_load_n(&rw->readers, __ATOMIC_RELAXED);
    for (;;) {
        if (!(r & WRITER)) {
            if ((r & COUNT) == COUNT)
                return EAGAIN;
            /* acquire: pairs with the release that cleared WRITER (the
             * writer's unlock), so its writes are seen */
            if (__atomic_compare_exchange_n(&rw->readers, &r, r + 1, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                return 0;
            continue;
        }
        /* acquire: pairs with the release of the word in the holder's
         * unlock, which follows its clearing of WRITER: a free word read
         * here means the next load of `readers` sees WRITER clear, unless a
         * new holder set it again */
        uint32_t w = __atomic_load_n(&rw->writer.word, __ATOMIC_ACQUIRE);
        if (w == NOTREC)
            return ENOTRECOVERABLE;
        if (!(w & TID)) {
            if (w & OD) {
                /* a writer died inside: take it over (EOWNERDEAD), or meet
                 * another thread that did, or find it released since */
                int e = write_side(rw, deadline, try, 1);
                if (e != REPAIRED)
                    return e; /* EOWNERDEAD (held exclusively), or an error with nothing held */
            } else {
                /* released since `r` was read (the holder clears WRITER
                 * before it releases the word, which holds its TID until
                 * then): `r` is stale, look again */
                ks_cpu_relax();
            }
            r = __atomic_load_n(&rw->readers, __ATOMIC_RELAXED); /* relaxed: seeds the CAS */
            continue;
        }
        if ((w & TID) == self_tid())
            return EDEADLK;
        if (try)
            return EBUSY;
        if (ks_deadline_passed(deadline))
            return ETIMEDOUT;
        if (!(w & W)) {
            /* relaxed: announces a sleeper, as robust.c's lock does */
            if (!__atomic_compare_exchange_n(&rw->writer.word, &w, w | W, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
                r = __atomic_load_n(&rw->readers, __ATOMIC_RELAXED);
                continue;
            }
            w |= W;
        }
        int64_t until = ks_now() + RECHECK_NS;
        KS_RACE_POINT();
        /* the shared op: the kernel's wake at a death is a shared one */
        ks_futex_wait(&rw->writer.word, w, deadline < until ? deadline : until, KS_SHARED);
        /* The kernel wakes one sleeper at the holder's death: for a word
         * left OD (the holder died holding it, or inside its unlock after
         * clearing WRITER), and for a word left free (the holder died
         * between its releasing store and its wake: the pending slot's
         * wake).  This reader may then go in while the others sleep on, so
         * a reader woken to a word with no owner wakes them all.  After a
         * live release (which woke all already) the call finds nobody: one
         * system call per woken reader, on the sleeping path only (found
         * by review: 7 of 8 readers waited for the 1 s re-check). */
        w = __atomic_load_n(&rw->writer.word, __ATOMIC_RELAXED); /* relaxed: a hint */
        if (!(w & TID))
            ks_futex_wake(&rw->writer.word, KS_WAKE_ALL, KS_SHARED);
        r = __atomic_load_n(&rw->readers, __ATOMIC_RELAXED); /* relaxed: seeds the CAS */
    }
}

int ks_robust_rwlock_rdlock(ks_robust_rwlock_t *rw) { return rd_acquire(rw, KS_FOREVER, 0); }
int ks_robust_rwlock_tryrdlock(ks_robust_rwlock_t *rw) { return rd_acquire(rw, KS_FOREVER, 1); }
int ks_robust_rwlock_timedrdlock(ks_robust_rwlock_t *rw, int64_t deadline) { return rd_acquire(rw, deadline, 0); }

static int wr_acquire(ks_robust_rwlock_t *rw, int64_t deadline, int try)
{
    if (bad(rw) || deadline < 0)
        return EINVAL;
    return write_side(rw, deadline, try, 0);
}

int ks_robust_rwlock_wrlock(ks_robust_rwlock_t *rw) { return wr_acquire(rw, KS_FOREVER, 0); }
int ks_robust_rwlock_trywrlock(ks_robust_rwlock_t *rw) { return wr_acquire(rw, KS_FOREVER, 1); }
int ks_robust_rwlock_timedwrlock(ks_robust_rwlock_t *rw, int64_t deadline) { return wr_acquire(rw, deadline, 0); }

int ks_robust_rwlock_unlock(ks_robust_rwlock_t *rw)
{
    if (bad(rw))
        return EINVAL;
    /* relaxed: only our own TID matters, and only we put it there */
    uint32_t w = __atomic_load_n(&rw->writer.word, __ATOMIC_RELAXED);
    if (w != NOTREC && (w & TID) && (w & TID) == self_tid()) {
        /* The writer.  Inconsistent (EOWNERDEAD, no consistent): WRITER
         * stays, so that readers look at the word and find it not
         * recoverable; the release makes it so and wakes everyone. */
        if (!(w & OD))
            /* release: pairs with the acquire CAS of the readers let in */
            __atomic_and_fetch(&rw->readers, ~(WRITER | DRAIN), __ATOMIC_RELEASE);
        else
            __atomic_and_fetch(&rw->readers, ~DRAIN, __ATOMIC_RELAXED); /* relaxed: nobody enters */
        return ks_robust_release_(&rw->writer, 0);
    }
    /* A reader.  relaxed: seeds the CAS */
    uint32_t r = __atomic_load_n(&rw->readers, __ATOMIC_RELAXED);
    do {
        if (!(r & COUNT))
            return EPERM;
        /* release: pairs with the writer's acquire in drain, so our reads
         * happen before its writes */
    } while (!__atomic_compare_exchange_n(&rw->readers, &r, r - 1, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
    if ((r & COUNT) == 1 && (r & DRAIN))
        ks_futex_wake(&rw->readers, 1, rw->flags); /* the one draining writer */
    return 0;
}

int ks_robust_rwlock_consistent(ks_robust_rwlock_t *rw)
{
    if (bad(rw))
        return EINVAL;
    return ks_robust_consistent(&rw->writer);
}

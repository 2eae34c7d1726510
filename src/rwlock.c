/* src/rwlock.c - slow paths of the writer-preferring rwlock.  docs/rwlock.md.
 *
 * One 64-bit word, so every decision is one atomic step on one value:
 *
 *   R   bits 0-29   readers holding it; all ones (WRITER) = a writer holds it
 *   RS  bit 30      readers may be asleep
 *   WW  bit 31      writers wait: new readers must not enter
 *   NW  bits 32-63  writers registered as waiting (WW is set iff NW > 0,
 *                   except transiently inside one CAS)
 *
 * Readers and writers sleep on the same futex word (the low half) with
 * different FUTEX_WAIT_BITSET masks, so an unlock can wake "one writer" or
 * "all readers" by mask.  Every unlock decides whom to wake inside its
 * releasing CAS and afterwards only issues futex wakes on the address, so the
 * lock may be destroyed as soon as it is free and no call is in progress:
 *
 *   unlock making R == 0:  NW > 0   -> wake one writer (WW stays: readers keep out)
 *                          else RS  -> clear RS, wake all readers
 *   writer acquires:       R == 0 -> R = WRITER, NW -= 1 if it was registered,
 *                          WW cleared when NW reaches 0
 *   writer gives up:       NW -= 1; at NW == 0 clear WW, and if no writer holds
 *                          it and RS is set, clear RS and wake all readers
 *   reader acquires:       R < MAX_READERS and no WW -> R += 1
 *   reader sleeps:         sets RS, sleeps on the exact low word
 *
 * No lost wake-up: a thread sleeps only on the exact low word it last saw.
 * A writer registers (NW > 0) before sleeping, and every unlock that brings R
 * to 0 while NW > 0 wakes a writer; a registered writer that is not asleep
 * at that moment sees the low word change (R changed), so its FUTEX_WAIT
 * returns EAGAIN and it re-checks.  A reader sleeps only with RS set and
 * while a writer holds the lock or WW is set; RS is cleared (with a wake of
 * all readers) by the unlock that frees the lock with no writer waiting, or
 * by the last registered writer that gives up.
 *
 * Reader bias (after BRAVO, Dice & Kogan, USENIX ATC 2019; docs/rwlock.md).
 * The word above is one cache line that every reader writes twice; with
 * readers on several CPUs that line is the cost.  So, for private locks, a
 * second way in: while BIAS is set in l->bias, a reader claims a slot of a
 * per-process table (one cache line per slot, the slot picked from the
 * lock's address and the thread), storing the lock's address there, and
 * re-reads the bias; if it is still set the reader holds the lock without
 * having touched the lock's line.  A writer first takes the lock word as
 * usual (so readers that come later through the word are kept out), then
 * clears BIAS and waits until no slot of the lock's window holds the lock.
 * The two sides are a store-then-load pair each (slot then bias, bias then
 * slots), all seq_cst, so at least one sees the other: either the reader
 * sees BIAS clear and backs out, or the writer sees the slot and waits.
 *
 *   reader, slow path, holding the word:  may set BIAS | BIAS_USED (not
 *       during an inhibition window, not with writers waiting)
 *   writer registering:                    clears BIAS (new readers queue)
 *   writer holding the word:               clears BIAS, waits for the slots,
 *       clears BIAS_USED, and inhibits the bias for INHIBIT_MUL times the
 *       time that took (BRAVO's policy: revocation costs at most ~1/MUL)
 *   reader leaving a slot:                 frees it; wakes a writer that
 *       marked it (bit 0 of the slot) and sleeps on it.  The table is never
 *       freed, so this touches nothing of the lock after its release.
 *
 * Which kind of read hold a thread has is in a small thread-local list
 * (held[]): unlock looks there first, and only while BIAS_USED is set (a
 * thread can hold a slot only while it is).  A thread that holds the lock
 * through a slot and asks again only deepens its entry, so reader
 * preference's recursive read locks work across a revocation too.
 * KS_SHARED locks never use the bias: the table is per process.
 */
#include "internal.h"

#include <ksync/lockstat.h>
#include <ksync/rwlock.h>

#include <ksync/once.h>

#include <pthread.h>
#include <sched.h>

#define WRITER KS_RWLOCK_WRITER
#define RS KS_RWLOCK_READERS_SLEEP
#define WW KS_RWLOCK_WRITER_WAITS
#define ONE_W KS_RWLOCK_ONE_WRITER
#define R(v) ((v) & WRITER)
#define NW(v) ((v) >> 32)

#define MASK_READER 1u
#define MASK_WRITER 2u

static inline const uint32_t *fword(const ks_rwlock_t *l)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (const uint32_t *)&l->state + 1;
#else
    return (const uint32_t *)&l->state;
#endif
}

/* ---- the visible-readers table ------------------------------------------------------ */

#define BIAS KS_RWLOCK_BIAS
#define BIAS_USED KS_RWLOCK_BIAS_USED
#define TRACED KS_RWLOCK_TRACED
#define NSLOTS 1024u      /* table size, a power of two; 64 KiB */
#define MAX_WINDOW 256u   /* slots a writer scans at most */
#define INHIBIT_MUL 9     /* BRAVO's N */
#define CHEAP_REVOKE_NS 2000 /* revocations cheaper than this inhibit nothing */
#define UNIT_SHIFT 10     /* inhibit times in units of 1024 ns */
#define UNTIL_SHIFT 3         /* bits 0-2: BIAS, BIAS_USED, TRACED */
#define UNTIL_MASK 0x1fffffffu
#define MAX_INHIBIT (1u << 18) /* units: ~0.27 s; longer reads as expired */
#define NHELD 4           /* read locks a thread may hold through slots at once */
#define SLOT_WAITER ((uintptr_t)1) /* a writer sleeps on this slot (locks are 8-aligned) */

static struct slot {
    uintptr_t v; /* the address of the lock a reader holds through it (| SLOT_WAITER), or 0 */
    char pad[KS_CACHELINE - sizeof(uintptr_t)];
} slots[NSLOTS] __attribute__((aligned(KS_CACHELINE)));

static unsigned window; /* slots per lock: 0 until first use, then constant */
static unsigned next_tid;

struct held {
    ks_rwlock_t *l;
    uint32_t slot, depth;
};
static KS_TLS struct held held[NHELD];
static KS_TLS unsigned my_tid; /* 1 + this thread's index, 0 until first use */

/* The window: twice the CPUs, a power of two in [8, MAX_WINDOW]: enough that
 * threads running at the same time rarely share a slot, few enough that a
 * writer's scan stays short.  Fixed at first use (readers and writers must
 * agree). */
static unsigned window_size(void)
{
    /* relaxed: a constant once set; the CAS below makes everyone use one value. */
    unsigned w = __atomic_load_n(&window, __ATOMIC_RELAXED);
    if (KS_LIKELY(w))
        return w;
    cpu_set_t set;
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    unsigned want = 8;
    while (want < 2u * (unsigned)n && want < MAX_WINDOW)
        want *= 2;
    w = 0;
    /* relaxed: publishes only this number. */
    if (!__atomic_compare_exchange_n(&window, &w, want, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return w;
    return want;
}

static inline unsigned window_base(const ks_rwlock_t *l, unsigned w)
{
    uint64_t h = (uint64_t)(uintptr_t)l * 0x9e3779b97f4a7c15ull;
    return (unsigned)(h >> 40) & (NSLOTS - 1) & ~(w - 1);
}

static inline unsigned thread_index(void)
{
    if (KS_UNLIKELY(!my_tid))
        /* relaxed: only spreads threads over slots. */
        my_tid = 1 + __atomic_fetch_add(&next_tid, 1, __ATOMIC_RELAXED);
    return my_tid - 1;
}

static inline const uint32_t *slot_word(struct slot *s)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__ && UINTPTR_MAX > 0xffffffffu
    return (const uint32_t *)&s->v + 1;
#else
    return (const uint32_t *)&s->v;
#endif
}

static inline uint32_t now_units(void)
{
    return (uint32_t)((uint64_t)ks_now() >> UNIT_SHIFT) & UNTIL_MASK;
}

/* Is the bias inhibited at bias word b?  Only a time at most MAX_INHIBIT
 * ahead counts, so a stale or wrapped value (or 0 after init) reads as
 * expired. */
static inline int inhibited(uint32_t b)
{
    if (!(b >> UNTIL_SHIFT))
        return 0;
    uint32_t until = b >> UNTIL_SHIFT, now = now_units();
    uint32_t ahead = (until - now) & UNTIL_MASK;
    return ahead != 0 && ahead <= MAX_INHIBIT;
}

static int unlock_word(ks_rwlock_t *l, unsigned fl, int prefer_reader);

/* Which locks may use the bias: private (the table is per process) and
 * writer-preferring ones.  Under reader preference a new reader must enter
 * while a reader is inside, but a reader inside the table is invisible to
 * the word, so a writer takes the word and every new reader waits behind
 * it (a reader that waits for another reader then deadlocks).  And not in
 * the drop-in layer, whose callers are pthread programs: glibc lets one
 * thread release a read lock another took, which a slot cannot allow.  The
 * layer defines this (weak here) as 1. */
KS_HIDDEN int ks_rwlock_no_bias __attribute__((weak));

/* Fork: a child holds only the forking thread, and slots claimed by the
 * others would make every writer on those locks (or on a lock re-initialised
 * at the same address) wait forever.  fork() runs this in the child; a
 * child made by _Fork() or clone() runs no handler, and inherits them. */
static ks_once_t atfork_once = KS_ONCE_INIT;

static void after_fork_child(void)
{
    for (unsigned i = 0; i < NSLOTS; i++) {
        /* relaxed (both): the child is single-threaded here. */
        uintptr_t x = __atomic_load_n(&slots[i].v, __ATOMIC_RELAXED) & ~SLOT_WAITER;
        if (!x)
            continue;
        int mine = 0;
        for (int k = 0; k < NHELD; k++)
            mine |= held[k].l == (ks_rwlock_t *)x && held[k].slot == i;
        __atomic_store_n(&slots[i].v, mine ? x : 0, __ATOMIC_RELAXED);
    }
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, after_fork_child);
}

static inline struct held *held_entry(ks_rwlock_t *l)
{
    for (int i = 0; i < NHELD; i++)
        if (held[i].l == l)
            return &held[i];
    return 0;
}

/* Reader, BIAS seen set: try to enter through a slot.  0 on success. */
static int biased_enter(ks_rwlock_t *l)
{
    struct held *h = held_entry(0);
    if (!h)
        return EBUSY;
    ks_once(&atfork_once, register_atfork);
    unsigned w = window_size(), i = window_base(l, w) + (thread_index() & (w - 1));
    struct slot *s = &slots[i];
    uintptr_t zero = 0;
    /* relaxed: a look before the CAS, to leave another thread's line alone. */
    if (__atomic_load_n(&s->v, __ATOMIC_RELAXED) != 0)
        return EBUSY;
    /* seq_cst (the claim and the re-check): pairs with the writer's seq_cst
     * clearing of BIAS and its seq_cst scan in revoke(): of "claim slot,
     * read BIAS" and "clear BIAS, read slot", one sees the other. */
    if (!__atomic_compare_exchange_n(&s->v, &zero, (uintptr_t)l, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
        return EBUSY;
    /* seq_cst: see above.  It also acquires: BIAS was set by a reader
     * holding the lock word, after the last writer's release there. */
    if (KS_LIKELY(__atomic_load_n(&l->bias, __ATOMIC_SEQ_CST) & BIAS)) {
        h->l = l;
        h->slot = i;
        h->depth = 1;
        return 0;
    }
    /* Revoked meanwhile: leave, waking a writer that may already wait on us.
     * release: pairs with the writer's acquire load of the slot. */
    if (__atomic_exchange_n(&s->v, 0, __ATOMIC_RELEASE) & SLOT_WAITER)
        ks_futex_wake(slot_word(s), KS_WAKE_ALL, 0);
    return EBUSY;
}

/* Unlock of a read lock held through a slot. */
static void biased_leave(struct held *h)
{
    if (--h->depth)
        return;
    struct slot *s = &slots[h->slot];
    h->l = 0;
    /* release: pairs with the acquire load in revoke()'s scan (the writer's
     * critical section comes after this reader's).  The wake goes to the
     * table, which outlives every lock: nothing of the lock is touched. */
    if (__atomic_exchange_n(&s->v, 0, __ATOMIC_RELEASE) & SLOT_WAITER)
        ks_futex_wake(slot_word(s), KS_WAKE_ALL, 0);
}

/* A reader that holds the lock word: turn the bias on, unless writers wait
 * or a revocation inhibits it. */
static void maybe_enable_bias(ks_rwlock_t *l, uint64_t v)
{
    if (NW(v) || (v & WW))
        return;
    uint32_t b = __atomic_load_n(&l->bias, __ATOMIC_RELAXED);
    if ((b & BIAS) || inhibited(b))
        return;
    /* seq_cst: BIAS must be set before this reader's releasing unlock (a
     * writer acquiring after that release must see BIAS_USED; see
     * ks_rwlock_wrlock_revoke_); a plain RMW, ordered with the rest. */
    __atomic_fetch_or(&l->bias, BIAS | BIAS_USED, __ATOMIC_SEQ_CST);
}

/* trywrlock while readers may sit in the table: if one holds this lock, fail
 * at once without taking the word (taking it and giving it back made
 * concurrent tryrdlock calls fail, and blocking readers wait, while only
 * readers held the lock).  A reader that enters the table between this look
 * and the CAS is still found by revoke(), which gives the word back. */
/* What lock statistics need to know of one acquisition ("Lock statistics"
 * at the end of this file): the slow paths call rw_waiting() just before
 * they first spin or sleep. */
struct rw_wait {
    const void *key;  /* the record's key: the lock, or its read side's */
    unsigned kind;    /* KS_LOCK_RWLOCK_READ or _WRITE */
    const void *site; /* the caller's call site */
    int lazy;         /* find the record at the first wait (CONTENTION) */
    int waited;       /* the acquisition spun or slept */
    void *rec;        /* the record, NULL if none */
    uint64_t t0;      /* ks_ticks() when the wait began */
    int table_looked; /* a reader's table was tried already (rdlock_biased) */
};

static void rw_waiting(struct rw_wait *w)
{
    if (w->waited)
        return;
    w->waited = 1;
    if (w->lazy) {
        w->rec = ks_ls_enter(w->key, w->kind, w->site);
        w->t0 = ks_ticks();
    }
}

static int revoke(ks_rwlock_t *l, int64_t deadline, struct rw_wait *w);

/* After the writer's acquiring CAS (ks_rwlock_wrlock_revoke_'s test, for
 * this file): revoke only if readers may sit in the table. */
static inline int revoke_if_used(ks_rwlock_t *l, int64_t deadline, struct rw_wait *w)
{
    if (KS_LIKELY(!(ks_rwlock_bias_(l) & BIAS_USED)))
        return 0;
    return revoke(l, deadline, w);
}

static int trywr_core(ks_rwlock_t *l)
{
    /* relaxed: a hint, as in ks_rwlock_wrlock_revoke_. */
    if (__atomic_load_n(&l->bias, __ATOMIC_RELAXED) & BIAS_USED) {
        unsigned w = window_size(), base = window_base(l, w);
        for (unsigned i = base; i < base + w; i++)
            /* relaxed: a look; exclusion rests on revoke() after the CAS. */
            if ((__atomic_load_n(&slots[i].v, __ATOMIC_RELAXED) & ~SLOT_WAITER) == (uintptr_t)l)
                return EBUSY;
    }
    uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
    while (!(v & WRITER))
        /* acquire: pairs with the release CAS in unlock. */
        if (__atomic_compare_exchange_n(&l->state, &v, v | WRITER, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return revoke_if_used(l, -1, NULL);
    return EBUSY;
}

/* The writer holds the lock word (R == WRITER): clear BIAS, then wait until
 * no slot holds the lock.  deadline -1: do not wait (try).  rw (NULL for a
 * try) is told when a reader inside makes it wait. */
static int revoke(ks_rwlock_t *l, int64_t deadline, struct rw_wait *rw)
{
    int64_t t0 = ks_now();
    /* seq_cst: pairs with the reader's claim-then-check in biased_enter(). */
    __atomic_fetch_and(&l->bias, ~BIAS, __ATOMIC_SEQ_CST);
    unsigned w = window_size(), base = window_base(l, w);
    const uintptr_t me = (uintptr_t)l;
    int64_t waited = 0; /* time spent waiting for readers inside */
    for (unsigned i = base; i < base + w; i++) {
        struct slot *s = &slots[i];
        /* seq_cst (acquire): see biased_enter(); and it pairs with the
         * release exchange of biased_leave(): the reader's section comes
         * before ours. */
        uintptr_t x = __atomic_load_n(&s->v, __ATOMIC_SEQ_CST);
        if (KS_LIKELY((x & ~SLOT_WAITER) != me))
            continue;
        /* A reader is inside: spin a little, then mark the slot and sleep
         * on it; the reader's exchange sees the mark and wakes us, or the
         * futex finds the slot changed. */
        int64_t w0 = ks_now();
        if (rw && deadline != -1)
            rw_waiting(rw);
        struct ks_spin sp;
        if (deadline != -1 && ks_spin_begin(&sp, KS_SPIN_RWLOCK_WRITE)) {
            ks_spin_clip(&sp, deadline);
            do {
                ks_cpu_relax();
                x = __atomic_load_n(&s->v, __ATOMIC_SEQ_CST); /* seq_cst: as above */
            } while ((x & ~SLOT_WAITER) == me && ks_spin_more(&sp));
            ks_spin_end(&sp); /* what it learns, the wait for the word teaches */
        }
        while ((x & ~SLOT_WAITER) == me) {
            if (deadline == -1 || ks_deadline_passed(deadline)) {
                /* Give the lock back; BIAS_USED stays set (the slot is held). */
                unlock_word(l, l->flags, !!(l->flags & KS_RWLOCK_PREFER_READER));
                return deadline == -1 ? EBUSY : ETIMEDOUT;
            }
            /* relaxed: the mark publishes nothing; the futex re-checks it. */
            if (!(x & SLOT_WAITER) &&
                !__atomic_compare_exchange_n(&s->v, &x, x | SLOT_WAITER, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                continue;
            KS_RACE_POINT();
            ks_futex_wait(slot_word(s), (uint32_t)(me | SLOT_WAITER), deadline, 0);
            x = __atomic_load_n(&s->v, __ATOMIC_SEQ_CST); /* seq_cst: as above */
        }
        waited += ks_now() - w0;
    }
    /* BRAVO's policy, on the revocation's own cost: the time it took minus
     * the time spent waiting for readers that were inside (a writer waits
     * for readers in the word just the same; with more threads than CPUs
     * such a wait can last a preempted reader's whole time slice, and
     * counting it kept the bias off for seconds).  A revocation cheaper than
     * CHEAP_REVOKE_NS (a short scan, a small machine) inhibits nothing; a
     * dearer one keeps the bias off for INHIBIT_MUL times its cost. */
    int64_t cost = ks_now() - t0 - waited;
    uint32_t nb = 0;
    if (cost > CHEAP_REVOKE_NS) {
        uint64_t span = (uint64_t)cost * INHIBIT_MUL >> UNIT_SHIFT;
        uint32_t until = (now_units() + (uint32_t)(span < MAX_INHIBIT ? span : MAX_INHIBIT)) & UNTIL_MASK;
        nb = (until ? until : 1) << UNTIL_SHIFT;
    }
    /* relaxed: no reader sets the bias while we hold the word; a table
     * reader may have set TRACED (lock statistics, src/rwlock.c's end) while
     * inside, and the scan's acquire loads above synchronise with its
     * releasing exchange when it left its slot, so this load sees it.  The
     * store clears BIAS_USED (no slot holds the lock), keeps TRACED (the
     * caller fixes it) and publishes only the inhibition time. */
    __atomic_store_n(&l->bias, nb | (__atomic_load_n(&l->bias, __ATOMIC_RELAXED) & TRACED), __ATOMIC_RELAXED);
    return 0;
}

/* For the tests: how many readers hold l through the table. */
unsigned ks_rwlock_table_readers_(const ks_rwlock_t *l)
{
    unsigned n = 0, w = window_size(), base = window_base(l, w);
    for (unsigned i = base; i < base + w; i++)
        /* relaxed: a snapshot for tests */
        n += (__atomic_load_n(&slots[i].v, __ATOMIC_RELAXED) & ~SLOT_WAITER) == (uintptr_t)l;
    return n;
}

int ks_rwlock_init_at(ks_rwlock_t *l, unsigned flags, const void *site)
{
    if (!l || (flags & ~(KS_FLAGS_VALID | KS_RWLOCK_PREFER_READER)))
        return EINVAL;
    l->state = 0;
    l->flags = flags;
    /* Lock statistics in KS_LOCKSTAT_ALL: marked from the start (see
     * "Lock statistics" below); each side is a record of its own. */
    int mode = ks_ls_mode();
    l->bias = mode == KS_LOCKSTAT_ALL ? TRACED : 0;
    if (KS_UNLIKELY(mode)) {
        ks_ls_init(l, KS_LOCK_RWLOCK_WRITE, site);
        ks_ls_init(ks_ls_read_key(l), KS_LOCK_RWLOCK_READ, site);
    }
    return 0;
}

int ks_rwlock_init(ks_rwlock_t *l, unsigned flags)
{
    return ks_rwlock_init_at(l, flags, __builtin_return_address(0));
}

int ks_rwlock_destroy(ks_rwlock_t *l)
{
    if (!l)
        return EINVAL;
    /* relaxed: a courtesy check; destroy is only legal with no users. */
    uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
    if (R(v) || NW(v))
        return EBUSY;
    if (__atomic_load_n(&l->bias, __ATOMIC_RELAXED) & BIAS_USED) { /* relaxed: as above */
        unsigned w = window_size(), base = window_base(l, w);
        for (unsigned i = base; i < base + w; i++)
            if ((__atomic_load_n(&slots[i].v, __ATOMIC_RELAXED) & ~SLOT_WAITER) == (uintptr_t)l)
                return EBUSY; /* relaxed: as above */
    }
    return 0;
}

int ks_rwlock_table_held_(const ks_rwlock_t *l)
{
    /* relaxed: as in ks_rwlock_unlock_mode, only this thread's slots matter */
    return l && (__atomic_load_n(&l->bias, __ATOMIC_RELAXED) & BIAS_USED) && held_entry((ks_rwlock_t *)l);
}

static int unlock_core(ks_rwlock_t *l, int prefer_reader, int no_table_hold);

int ks_rwlock_unlock_slow(ks_rwlock_t *l)
{
    if (!l)
        return EINVAL;
    /* A hold through the table on an unmarked lock: what
     * ks_rwlock_unlock_mode does then (no hold was stamped: only a marked
     * lock has stamped holds), without its other cases.  relaxed: as
     * there (BIAS_USED stays set while this thread holds a slot). */
    const uint32_t b = __atomic_load_n(&l->bias, __ATOMIC_RELAXED);
    int looked = 0; /* and found no table hold: the caller's is in the word */
    if ((b & (BIAS_USED | TRACED)) == BIAS_USED) {
        struct held *h = held_entry(l);
        if (h) {
            biased_leave(h);
            return 0;
        }
        looked = 1;
    }
    return unlock_core(l, !!(l->flags & KS_RWLOCK_PREFER_READER), looked);
}

/* Under reader preference readers sleep only while a writer holds the lock,
 * so the unlock that frees it wakes them even when writers wait too. */
int ks_rwlock_unlock_mode(ks_rwlock_t *l, int prefer_reader)
{
    return unlock_core(l, prefer_reader, 0);
}

/* no_table_hold: the caller looked in its held[] entries for l already and
 * found none (they are its own: that cannot change meanwhile). */
static int unlock_core(ks_rwlock_t *l, int prefer_reader, int no_table_hold)
{
    const unsigned fl = l->flags; /* read before the release */
    /* relaxed: only this thread's own slot matters, and BIAS_USED cannot be
     * cleared while it holds one; TRACED is set only by holders and cleared
     * only by a holder alone inside (see "Lock statistics" below), so a
     * hold stamped under it finds it still set here. */
    const uint32_t b = __atomic_load_n(&l->bias, __ATOMIC_RELAXED);
    struct held *h = (b & BIAS_USED) && !no_table_hold ? held_entry(l) : NULL;
    /* Lock statistics: the hold ends here, while the lock is still ours
     * (after the release it may be freed: the counting after it touches
     * only the record).  Only a marked lock can have a stamped hold: a hold
     * is stamped only if the mark is set once it is held, and the mark is
     * taken off only by a holder alone inside, after its own stamp is gone
     * (so, unlike the mutex, no look for a stamp left from an earlier mode;
     * looking cost every biased read unlock a search of the read pool, and
     * halved 99%-read throughput in contention mode). */
    void *rec = NULL;
    uint64_t hold = 0;
    if (KS_UNLIKELY(b & TRACED)) {
        uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED); /* our own hold: see above */
        const int writer = !h && R(v) == WRITER;
        if (h || R(v))
            hold = ks_ls_hold_end(writer ? (const void *)l : ks_ls_read_key(l), &rec);
        /* A writer, alone inside, takes off the mark it put on for its own
         * hold (KS_LOCKSTAT_ALL keeps it).  relaxed: the mark publishes
         * nothing; registering writers only clear BIAS meanwhile. */
        if (writer && ks_ls_mode() != KS_LOCKSTAT_ALL)
            __atomic_fetch_and(&l->bias, ~TRACED, __ATOMIC_RELAXED);
        /* A marked lock that only readers use would keep its mark, and
         * every call of it would keep coming here, once the mode has left
         * ALL.  So the last reader in the word, when nothing else is there
         * (the word is exactly one reader: no writer waits, nobody sleeps;
         * no table reader can be inside without BIAS_USED), turns its hold
         * into a write hold for a moment, takes the mark off alone inside,
         * and releases as a writer.  A reader that comes meanwhile finds a
         * writer (a try fails: once per lock and switch out of ALL).  Not
         * for a KS_SHARED lock, whose mark another process in ALL may set
         * again at each of its acquisitions (the window would recur), nor
         * for a biased one (its readers are in the table: a writer takes
         * the mark off).  relaxed: the CAS publishes nothing (no data was
         * written under this hold); the release below orders what
         * follows. */
        uint64_t one = 1;
        if (!h && !writer && !(b & BIAS_USED) && !(fl & KS_SHARED) &&
            ks_ls_mode() != KS_LOCKSTAT_ALL &&
            __atomic_compare_exchange_n(&l->state, &one, WRITER, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            __atomic_fetch_and(&l->bias, ~TRACED, __ATOMIC_RELAXED); /* relaxed: as the writer's above */
    }
    int r;
    if (h) {
        biased_leave(h);
        r = 0;
    } else {
        r = unlock_word(l, fl, prefer_reader);
    }
    if (KS_UNLIKELY(rec))
        ks_ls_hold_add(rec, hold);
    return r;
}

/* Release a hold on the lock word (a writer's, or a reader's counted in R). */
static int unlock_word(ks_rwlock_t *l, unsigned fl, int prefer_reader)
{
    uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED), nv;
    int wake_writer, wake_readers;
    do {
        if (R(v) == 0)
            return EPERM;
        nv = R(v) == WRITER ? v - WRITER : v - 1;
        wake_writer = wake_readers = 0;
        if (R(nv) == 0) {
            if (NW(nv))
                wake_writer = 1;
            if ((nv & RS) && (prefer_reader || !NW(nv))) {
                nv &= ~RS;
                wake_readers = 1;
            }
        }
        /* release: pairs with the acquire CAS of the next locker. */
    } while (!__atomic_compare_exchange_n(&l->state, &v, nv, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
    if (wake_writer | wake_readers)
        KS_RACE_POINT();
    if (wake_writer)
        ks_futex_wake_mask(fword(l), 1, fl, MASK_WRITER);
    if (wake_readers)
        ks_futex_wake_mask(fword(l), KS_WAKE_ALL, fl, MASK_READER);
    return 0;
}

/* May a reader enter at v?  Writer preference: no writer holds or waits.
 * Reader preference: no writer holds, and either no writer waits or
 * readers are inside.  The second half is what a recursive read lock
 * needs (a thread that holds a read lock and asks again finds R > 0), and
 * it still lets a waiting writer in once the readers inside have drained:
 * letting new readers in at R == 0 too would let a stream of readers,
 * each arriving before the woken writer runs, starve the writers for good
 * (16 threads on 2 CPUs with 1% writes ran at a tenth of glibc's rate, most
 * threads asleep as writers). */
static inline int read_lockable(uint64_t v, int prefer_reader)
{
    if (!prefer_reader)
        return ks_rwlock_read_lockable_(v);
    return R(v) < KS_RWLOCK_MAX_READERS && (R(v) > 0 || !(v & WW));
}

int ks_rwlock_tryrdlock_slow(ks_rwlock_t *l)
{
    if (!l)
        return EINVAL;
    return ks_rwlock_tryrdlock_mode(l, !!(l->flags & KS_RWLOCK_PREFER_READER), __builtin_return_address(0));
}

/* Read lock without the word: a recursive hold through a slot, or a new one
 * while the bias is on.  0 on success. */
static inline int read_through_table(ks_rwlock_t *l)
{
    if (l->flags & KS_SHARED)
        return EBUSY;
    uint32_t b = __atomic_load_n(&l->bias, __ATOMIC_RELAXED); /* relaxed: biased_enter re-checks */
    if (!(b & BIAS_USED))
        return EBUSY;
    struct held *h = held_entry(l);
    if (h) {
        h->depth++;
        return 0;
    }
    return (b & BIAS) ? biased_enter(l) : EBUSY;
}

static int tryrd_core(ks_rwlock_t *l, int prefer_reader)
{
    if (read_through_table(l) == 0)
        return 0;
    uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
    while (read_lockable(v, prefer_reader))
        /* acquire: pairs with the release CAS in unlock. */
        if (__atomic_compare_exchange_n(&l->state, &v, v + 1, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return 0;
    return R(v) == KS_RWLOCK_MAX_READERS ? EAGAIN : EBUSY;
}

static int rd_stat(ks_rwlock_t *l, int64_t deadline, int prefer_reader, const void *site, int skipped,
                   int table_looked);

/* The reader bias's common case, before the general path (rd_stat, then
 * rdlock_core): the bias on, the lock not marked for statistics, and
 * statistics not counting every acquisition (KS_LOCKSTAT_ALL).  There
 * rd_stat would record nothing (with CONTENTION a record is found only
 * when the acquisition waits, and a table read never does), and
 * rdlock_core would try the table first all the same (read_through_table:
 * a recursive hold, else a new one through the thread's slot).  Skipping
 * the layers takes a biased read lock and unlock pair from 238 to 155
 * instructions (bench section 1, callgrind); one that fails pays a few
 * more than before (the tests below).  0 on success; EBUSY: take the
 * general path, told by *looked (1) not to try the table again: this
 * thread holds no slot for l (its held[] entries are its own), and its
 * slot was taken (by another thread, or by its own hold on another lock
 * of the window), or its room for holds was full, or the bias was revoked
 * as it claimed the slot; the word serves. */
static inline int rdlock_biased(ks_rwlock_t *l, int *looked)
{
    /* relaxed: a hint; biased_enter re-checks BIAS (seq_cst) after its claim. */
    const uint32_t b = __atomic_load_n(&l->bias, __ATOMIC_RELAXED);
    if ((b & (BIAS | TRACED)) != BIAS || ks_ls_mode() == KS_LOCKSTAT_ALL)
        return EBUSY;
    *looked = 1;
    struct held *h = held_entry(l);
    if (h) {
        h->depth++;
        return 0;
    }
    return biased_enter(l);
}

int ks_rwlock_rdlock_slow(ks_rwlock_t *l, int64_t deadline)
{
    if (!l || deadline < 0)
        return EINVAL;
    int looked = 0;
    if (KS_LIKELY(rdlock_biased(l, &looked) == 0))
        return 0;
    return rd_stat(l, deadline, !!(l->flags & KS_RWLOCK_PREFER_READER), __builtin_return_address(0), 0, looked);
}

int ks_rwlock_rdlock_debug_(ks_rwlock_t *l, int64_t deadline)
{
    if (!l || deadline < 0)
        return EINVAL;
    return ks_rwlock_rdlock_mode(l, deadline, !!(l->flags & KS_RWLOCK_PREFER_READER), __builtin_return_address(0), 1);
}

/* w: told when the reader has to spin or sleep for a writer. */
static int rdlock_core(ks_rwlock_t *l, int64_t deadline, int prefer_reader, struct rw_wait *w)
{
    const unsigned fl = l->flags;
    if (!w->table_looked && read_through_table(l) == 0)
        return 0;
    uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
    /* Taken: with the cull on (src/spin.c, off by default), a reader bound
     * by the lock on a CPU that other such threads share steps away first.
     * Untimed read locks only (a timed one whose deadline is KS_FOREVER
     * counts as untimed): a writer that stepped away would not be waiting
     * yet, and readers coming meanwhile would pass it (writer preference);
     * a timed lock would lose up to 1 ms of its budget. */
    /* asked: this acquisition asked the cull, so its success tells the cull
     * how long it took (rule (5)); one that did not ask (the lock was free
     * when it came, or the call is timed) must not, or the time since the
     * last asking acquisition would pass for that acquisition's wait. */
    const int asked = deadline == KS_FOREVER && !read_lockable(v, prefer_reader);
    if (asked && ks_spin_cull_wanted(l)) {
        rw_waiting(w);
        ks_spin_cull(deadline);
        v = __atomic_load_n(&l->state, __ATOMIC_RELAXED); /* relaxed: a hint; the acquiring CAS below re-checks */
    }
    /* Spin while a writer holds it and nobody queues behind it, for the
     * policy's budget (src/spin.c).  learn: 1 when the spin ran out, so the
     * acquisition that ends the wait teaches the budget. */
    struct ks_spin sp;
    int learn = 0;
    if (R(v) == WRITER && !(v & (RS | WW)) && ks_spin_begin(&sp, KS_SPIN_RWLOCK_READ)) {
        rw_waiting(w);
        ks_spin_clip(&sp, deadline);
        do {
            ks_cpu_relax();
            v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
        } while (R(v) == WRITER && !(v & (RS | WW)) && ks_spin_more(&sp));
        if (R(v) != WRITER) {
            ks_spin_won(&sp);
        } else {
            ks_spin_end(&sp);
            learn = 1;
        }
    }
    for (;;) {
        if (read_lockable(v, prefer_reader)) {
            /* acquire: pairs with the release CAS in unlock. */
            if (__atomic_compare_exchange_n(&l->state, &v, v + 1, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
                if (!(fl & KS_SHARED) && !prefer_reader && !ks_rwlock_no_bias)
                    maybe_enable_bias(l, v);
                if (learn)
                    ks_spin_waited(&sp);
                if (asked)
                    ks_spin_cull_acquired(); /* how long it took: rule (5) of the cull */
                return 0;
            }
            continue;
        }
        if (R(v) == KS_RWLOCK_MAX_READERS)
            return EAGAIN;
        if (ks_deadline_passed(deadline))
            return ETIMEDOUT; /* past deadline: no RS residue */
        rw_waiting(w);
        if (!(v & RS)) {
            /* relaxed: announcing a sleeper publishes nothing. */
            if (!__atomic_compare_exchange_n(&l->state, &v, v | RS, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                continue;
            v |= RS;
        }
        KS_RACE_POINT();
        int r = ks_futex_wait_mask(fword(l), (uint32_t)v, deadline, fl, MASK_READER);
        v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
        if (r == ETIMEDOUT && !read_lockable(v, prefer_reader))
            return ETIMEDOUT; /* RS may stay set: it only costs a later spurious wake */
    }
}

/* w: told when the writer has to spin or sleep (for the lock word, or for
 * readers inside the table). */
static int wrlock_core(ks_rwlock_t *l, int64_t deadline, struct rw_wait *w)
{
    const unsigned fl = l->flags;
    uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED), nv;
    /* Spin while the lock is held and no other writer queues (src/spin.c
     * decides how long); learn as in rdlock. */
    struct ks_spin sp;
    int learn = 0;
    if (R(v) && !NW(v) && ks_spin_begin(&sp, KS_SPIN_RWLOCK_WRITE)) {
        rw_waiting(w);
        ks_spin_clip(&sp, deadline);
        do {
            ks_cpu_relax();
            v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
        } while (R(v) && !NW(v) && ks_spin_more(&sp));
        if (!R(v)) {
            ks_spin_won(&sp);
        } else {
            ks_spin_end(&sp);
            learn = 1;
        }
    }
    int registered = 0;
    for (;;) {
        if (R(v) == 0) {
            nv = v | WRITER;
            if (registered) {
                nv -= ONE_W;
                if (NW(nv) == 0)
                    nv &= ~WW;
            }
            /* acquire: pairs with the release CAS in unlock. */
            if (__atomic_compare_exchange_n(&l->state, &v, nv, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
                if (learn)
                    ks_spin_waited(&sp);
                return revoke_if_used(l, deadline, w);
            }
            continue;
        }
        rw_waiting(w);
        if (!registered) {
            if (ks_deadline_passed(deadline))
                return ETIMEDOUT; /* past deadline: do not register at all */
            /* relaxed: registering publishes nothing; unlock reads NW in its CAS. */
            nv = (v + ONE_W) | WW;
            if (!__atomic_compare_exchange_n(&l->state, &v, nv, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                continue;
            registered = 1;
            v = nv;
            /* Writer preference: no new readers through the table either.
             * relaxed: a hint to readers; exclusion rests on revoke(). */
            if (__atomic_load_n(&l->bias, __ATOMIC_RELAXED) & BIAS)
                __atomic_fetch_and(&l->bias, ~BIAS, __ATOMIC_RELAXED);
        }
        KS_RACE_POINT();
        int r = ks_futex_wait_mask(fword(l), (uint32_t)v, deadline, fl, MASK_WRITER);
        v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
        if (r != ETIMEDOUT)
            continue;
        /* Timed out: take it if it is free right now, else unregister. */
        for (;;) {
            if (R(v) == 0)
                break; /* the outer loop takes it */
            nv = v - ONE_W;
            int wake_readers = 0;
            if (NW(nv) == 0) {
                nv &= ~WW;
                if (R(nv) != WRITER && (nv & RS)) {
                    nv &= ~RS;
                    wake_readers = 1;
                }
            }
            /* relaxed: giving up publishes nothing; readers woken here take
             * the lock with their own acquire CAS. */
            if (__atomic_compare_exchange_n(&l->state, &v, nv, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
                if (wake_readers)
                    ks_futex_wake_mask(fword(l), KS_WAKE_ALL, fl, MASK_READER);
                return ETIMEDOUT;
            }
        }
    }
}

/* ---- Lock statistics (src/lockstat.c, docs/lockstat.md) --------------------------------
 *
 * Each side of the lock is a record of its own: the write side under the
 * lock's address, the read side under ks_ls_read_key(l).  Only the library
 * paths record; the inline fast paths are those of a build without
 * statistics, except that they also fail on TRACED (bit 2 of the bias word:
 * one more bit in a mask they test anyway).
 *
 * TRACED is cleared only by a thread alone inside, and set only by a
 * holder, so that a hold timed at its acquisition (a stamp: the write
 * side's in the thread, the read side's in its record's pool,
 * src/lockstat.c) always reaches a library unlock, which consumes one:
 *   - a writer, alone inside, fixes it: set in KS_LOCKSTAT_ALL, and in
 *     KS_LOCKSTAT_CONTENTION for a writer that waited (so its hold is
 *     timed); its unlock takes it off again unless the mode is ALL;
 *   - a reader sets it (KS_LOCKSTAT_ALL) and does not clear it while other
 *     readers may be inside: that would send their unlocks down the fast
 *     path with their stamps left in the pool.  Out of ALL, the last reader
 *     in the word, alone, turns its hold into a write hold for a moment to
 *     take it off (ks_rwlock_unlock_mode; not for a biased or KS_SHARED
 *     lock, whose next writer does);
 *   - an acquisition stamps its hold only if TRACED is set once it holds
 *     the lock: it stays set until a holder alone inside takes it off,
 *     which is after this hold's release.
 * A reader's wait is for a writer (holding, or waiting under writer
 * preference); a writer's is for the word or for readers in the table.
 * Readers of a lock turned on ALL after their lock was initialised (or a
 * statically initialised lock) are seen from the first library call. */

/* Sets up w for one acquisition; returns 1 if statistics see it at all
 * (on, or the lock marked: the mark's rules above still apply).
 * KS_LOCKSTAT_ALL: the record is found here, before the lock, and t0 read
 * now.  CONTENTION: the record is found only if the acquisition waits
 * (rw_waiting), even on a marked lock: a reader that enters through the
 * table comes here without contention on every read while the bias is on,
 * and must not pay for statistics it will not record (a mark left by ALL
 * made every such read a counted, stamped one).  relaxed: a switch, and a
 * mark that routes calls (see above). */
static int rw_begin(const ks_rwlock_t *l, struct rw_wait *w, int *mode)
{
    *mode = ks_ls_mode();
    const int marked = (__atomic_load_n(&l->bias, __ATOMIC_RELAXED) & TRACED) != 0;
    if (KS_LIKELY(!*mode && !marked))
        return 0;
    if (*mode == KS_LOCKSTAT_ALL) {
        w->rec = ks_ls_enter(w->key, w->kind, w->site);
        w->t0 = w->rec ? ks_ticks() : 0;
    } else {
        w->lazy = *mode != 0;
    }
    return 1;
}

/* After the acquisition (the lock is held): counts it, if it has a record,
 * stamping its hold if `stamp`. */
static void rw_acquired(struct rw_wait *w, int stamp)
{
    if (!w->rec)
        return;
    const uint64_t now = w->waited || stamp ? ks_ticks() : w->t0;
    ks_ls_acquired(w->rec, w->waited, w->waited ? now - w->t0 : 0, stamp ? now : 0);
}

/* A read acquisition (deadline -1: a try).  skipped: the caller made no
 * inline CAS (a -DKSYNC_DEBUG build, the drop-in layer counting every
 * acquisition). */
static int rd_stat(ks_rwlock_t *l, int64_t deadline, int prefer_reader, const void *site, int skipped,
                   int table_looked)
{
    struct rw_wait w = {
        .key = ks_ls_read_key(l), .kind = KS_LOCK_RWLOCK_READ, .site = site, .table_looked = table_looked};
    int mode;
    const int counted = rw_begin(l, &w, &mode);
    /* A call that the mark (or the caller) sent here without trying the
     * inline path's CAS: that CAS first (acquire: pairs with the release in
     * unlock), so that counting does not change how the lock behaves
     * (rdlock_core would turn the reader bias on, as after contention).  A
     * call whose inline CAS failed goes on to rdlock_core as it would
     * without statistics.  relaxed loads: as the inline path's (the bias is
     * a hint there too). */
    const uint32_t b0 = __atomic_load_n(&l->bias, __ATOMIC_RELAXED);
    uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED); /* seeds the CAS */
    int r = EBUSY;
    if (deadline != -1 && (skipped || (b0 & TRACED)) && !(b0 & BIAS) && ks_rwlock_read_lockable_(v) &&
        __atomic_compare_exchange_n(&l->state, &v, v + 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        r = 0;
    if (r)
        r = deadline == -1 ? tryrd_core(l, prefer_reader) : rdlock_core(l, deadline, prefer_reader, &w);
    if (r || !counted)
        return r;
    /* relaxed: see above; we hold the lock, so a writer cannot change it */
    uint32_t b = __atomic_load_n(&l->bias, __ATOMIC_RELAXED);
    if (mode == KS_LOCKSTAT_ALL && w.rec && !(b & TRACED)) {
        /* relaxed: the mark publishes nothing (an RMW: it keeps the bias
         * bits and the release sequence of maybe_enable_bias's fetch_or) */
        __atomic_fetch_or(&l->bias, TRACED, __ATOMIC_RELAXED);
        b |= TRACED;
    }
    rw_acquired(&w, (b & TRACED) != 0);
    return 0;
}

enum { WR_WAIT, WR_TRY, WR_TAKEN };

static int wr_core(ks_rwlock_t *l, int64_t deadline, int how, struct rw_wait *w)
{
    return how == WR_WAIT ? wrlock_core(l, deadline, w)
           : how == WR_TRY ? trywr_core(l)
                           : revoke_if_used(l, deadline, w);
}

/* A write acquisition: WR_WAIT (lock or timed lock), WR_TRY, or WR_TAKEN
 * (an inline fast path took the word; the bias, or the mark, sent it
 * here). */
static int wr_stat(ks_rwlock_t *l, int64_t deadline, int how, const void *site)
{
    struct rw_wait w = {.key = l, .kind = KS_LOCK_RWLOCK_WRITE, .site = site};
    int mode;
    if (KS_LIKELY(!rw_begin(l, &w, &mode)))
        return wr_core(l, deadline, how, &w);
    int r = wr_core(l, deadline, how, &w);
    if (r)
        return r;
    /* Alone inside: the mark fixed to the mode (see above).  relaxed: the
     * mark publishes nothing; registering writers only clear BIAS
     * meanwhile (RMWs, which keep it). */
    const uint32_t want = w.rec && (mode == KS_LOCKSTAT_ALL || w.waited) ? TRACED : 0;
    if ((__atomic_load_n(&l->bias, __ATOMIC_RELAXED) & TRACED) != want) {
        if (want)
            __atomic_fetch_or(&l->bias, TRACED, __ATOMIC_RELAXED);
        else
            __atomic_fetch_and(&l->bias, ~TRACED, __ATOMIC_RELAXED);
    }
    rw_acquired(&w, want != 0);
    return 0;
}

int ks_rwlock_rdlock_mode(ks_rwlock_t *l, int64_t deadline, int prefer_reader, const void *site, int skipped)
{
    return rd_stat(l, deadline, prefer_reader, site, skipped, 0);
}

int ks_rwlock_tryrdlock_mode(ks_rwlock_t *l, int prefer_reader, const void *site)
{
    return rd_stat(l, -1, prefer_reader, site, 0, 0);
}

int ks_rwlock_wrlock_at(ks_rwlock_t *l, int64_t deadline, const void *site)
{
    if (!l || deadline < 0)
        return EINVAL;
    return wr_stat(l, deadline, WR_WAIT, site);
}

int ks_rwlock_wrlock_slow(ks_rwlock_t *l, int64_t deadline)
{
    return ks_rwlock_wrlock_at(l, deadline, __builtin_return_address(0));
}

int ks_rwlock_trywrlock_at(ks_rwlock_t *l, const void *site)
{
    if (!l)
        return EINVAL;
    return wr_stat(l, -1, WR_TRY, site);
}

int ks_rwlock_trywrlock_slow(ks_rwlock_t *l)
{
    return ks_rwlock_trywrlock_at(l, __builtin_return_address(0));
}

int ks_rwlock_revoke_at(ks_rwlock_t *l, int64_t deadline, const void *site)
{
    return wr_stat(l, deadline, WR_TAKEN, site);
}

int ks_rwlock_revoke_(ks_rwlock_t *l, int64_t deadline)
{
    return ks_rwlock_revoke_at(l, deadline, __builtin_return_address(0));
}

/* ksync/rwlock.h - reader-writer lock, writer-preferring.  docs/rwlock.md.
 *
 *   ks_rwlock_t l = KS_RWLOCK_INIT;      (all zeros)
 *   ks_rwlock_rdlock(&l) / tryrdlock / timedrdlock(&l, deadline)
 *   ks_rwlock_wrlock(&l) / trywrlock / timedwrlock(&l, deadline)
 *   ks_rwlock_unlock(&l)                 (either kind)
 *
 * Policy: writer-preferring.  Once a writer waits, new readers wait too, so
 * a stream of readers cannot starve a writer; readers that already hold the
 * lock finish, then the writer goes.  Consequence (as with Rust's and
 * glibc's writer-preferring locks): a thread that takes a read lock twice can
 * deadlock if a writer starts waiting between the two.  Readers can wait
 * behind a continuous stream of writers.
 *
 * Return values: rdlock 0, EAGAIN (KS_RWLOCK_MAX_READERS readers), EINVAL;
 * tryrdlock also EBUSY; trywrlock 0, EBUSY, EINVAL; timed variants also
 * ETIMEDOUT and EINVAL for a negative deadline; unlock 0, EPERM (not locked),
 * EINVAL; init 0, EINVAL (NULL, unknown flags); destroy 0, EBUSY (locked
 * or waited on: nothing changes), EINVAL.  destroy changes nothing, so
 * destroying twice is 0 and a destroyed lock may be initialised again; any
 * other use after destroy is undefined.  The read fast path
 * is one compare-and-swap; unlock is one when nobody waits.
 *
 * Reader bias (private, writer-preferring locks only): once readers
 * contend, a reader may instead publish itself in a slot of a per-process
 * table (src/rwlock.c, docs/rwlock.md) and leave the lock's own cache line
 * alone; a writer revokes the bias and waits for those slots to empty.  A
 * read lock is therefore owned by the thread that took it: unlock it in that
 * thread (POSIX asks the same of pthread_rwlock_unlock).  Another thread's
 * unlock cannot release a hold in the table: it gets EPERM if nobody holds
 * the lock through the word, and otherwise releases one of the word's read
 * holds instead (the lock's count is then wrong: undefined behaviour, as in
 * POSIX).  A fork() child drops the slots of the threads it does not have;
 * a child made by _Fork() or clone() does not.
 */
#ifndef KSYNC_RWLOCK_H
#define KSYNC_RWLOCK_H

#include <ksync/annotate.h>
#include <ksync/common.h>
#include <ksync/time.h>

/* state, low 32 bits (the futex word):
 *   bits 0-29  readers holding the lock, or KS_RWLOCK_WRITER (all ones) when
 *              a writer holds it
 *   bit 30     READERS_SLEEP: readers may be asleep
 *   bit 31     WRITER_WAITS: a writer waits; new readers must not enter
 * high 32 bits: number of writers registered as waiting. */
#define KS_RWLOCK_WRITER 0x3fffffffull
#define KS_RWLOCK_MAX_READERS (KS_RWLOCK_WRITER - 1)
#define KS_RWLOCK_READERS_SLEEP (1ull << 30)
#define KS_RWLOCK_WRITER_WAITS (1ull << 31)
#define KS_RWLOCK_ONE_WRITER (1ull << 32)

/* ks_rwlock_init flag: readers enter while writers wait (glibc's default
 * rwlock kind): a reader may take the lock again while it holds it, and
 * writers may starve under a steady stream of readers.  The default is
 * writer preference. */
#define KS_RWLOCK_PREFER_READER 2u

/* bias word (src/rwlock.c):
 *   bit 0      BIAS: readers may enter through the visible-readers table
 *   bit 1      BIAS_USED: the table may hold readers of this lock; only a
 *              writer that has seen every slot free clears it
 *   bit 2      TRACED: lock statistics see every lock and unlock of it
 *              (ksync/lockstat.h, docs/lockstat.md): the fast paths below
 *              fail on it, as on BIAS or BIAS_USED
 *   bits 3-31  after a revocation, the bias stays off until this time
 *              (ks_now() >> 10, 29 bits) */
#define KS_RWLOCK_BIAS 1u
#define KS_RWLOCK_BIAS_USED 2u
#define KS_RWLOCK_TRACED 4u

typedef struct ks_rwlock {
    uint64_t state __attribute__((aligned(8)));
    uint32_t flags; /* KS_SHARED or 0; constant after init */
    uint32_t bias;  /* 0 after init; never used with KS_SHARED */
} ks_rwlock_t;

#define KS_RWLOCK_INIT {0u, 0u, 0u}

#ifdef KSYNC_DEBUG
#define KS_RWLOCK_FAST_ 0 /* every call reaches the library (lock statistics) */
#else
#define KS_RWLOCK_FAST_ 1
#endif

KS_EXTERN_C_BEGIN

KS_API int ks_rwlock_init(ks_rwlock_t *l, unsigned flags);
KS_API int ks_rwlock_destroy(ks_rwlock_t *l);
KS_API int ks_rwlock_rdlock_slow(ks_rwlock_t *l, int64_t deadline);
/* A -DKSYNC_DEBUG build's read lock: the inline path's CAS made in the
 * library (ks_rwlock_rdlock_slow is for a CAS that failed). */
KS_API int ks_rwlock_rdlock_debug_(ks_rwlock_t *l, int64_t deadline);
KS_API int ks_rwlock_wrlock_slow(ks_rwlock_t *l, int64_t deadline);
KS_API int ks_rwlock_unlock_slow(ks_rwlock_t *l);
KS_API int ks_rwlock_tryrdlock_slow(ks_rwlock_t *l);
KS_API int ks_rwlock_revoke_(ks_rwlock_t *l, int64_t deadline);
KS_API int ks_rwlock_trywrlock_slow(ks_rwlock_t *l);
/* 1 if the calling thread holds l for reading through the visible-readers
 * table (for the annotations of ksync/annotate.h, which must tell a
 * reader's unlock from a writer's). */
KS_API int ks_rwlock_table_held_(const ks_rwlock_t *l);

/* relaxed: a hint; the slow paths decide (see ks_rwlock_revoke_'s caller
 * below for the one place where the value matters). */
static inline uint32_t ks_rwlock_bias_(const ks_rwlock_t *l)
{
    return __atomic_load_n(&l->bias, __ATOMIC_RELAXED);
}

/* After a writer's acquiring CAS: if readers may sit in the visible-readers
 * table, revoke the bias and wait for them (0), or give the lock back
 * (ETIMEDOUT; EBUSY for a try, deadline -1).  relaxed load: the acquire
 * CAS just made happens-after every reader's unlock, and a reader sets
 * BIAS_USED only while it holds the lock (sequenced before its unlock),
 * so this load sees it. */
static inline int ks_rwlock_wrlock_revoke_(ks_rwlock_t *l, int64_t deadline)
{
    if (KS_LIKELY(!(ks_rwlock_bias_(l) & (KS_RWLOCK_BIAS_USED | KS_RWLOCK_TRACED))))
        return 0;
    return ks_rwlock_revoke_(l, deadline);
}

static inline int ks_rwlock_read_lockable_(uint64_t v)
{
    return (v & KS_RWLOCK_WRITER) < KS_RWLOCK_MAX_READERS && !(v & KS_RWLOCK_WRITER_WAITS);
}

/* acquire (every lock CAS below): pairs with the release in unlock. */
static inline int ks_rwlock_tryrdlock_raw_(ks_rwlock_t *l)
{
    if (KS_UNLIKELY(!l))
        return EINVAL;
    /* the table (or a recursive hold there), the mark, a debug build */
    if (!KS_RWLOCK_FAST_ || (ks_rwlock_bias_(l) & (KS_RWLOCK_BIAS_USED | KS_RWLOCK_TRACED)))
        return ks_rwlock_tryrdlock_slow(l);
    uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
    while (ks_rwlock_read_lockable_(v))
        if (__atomic_compare_exchange_n(&l->state, &v, v + 1, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return 0;
    if ((v & KS_RWLOCK_WRITER_WAITS) && (l->flags & KS_RWLOCK_PREFER_READER))
        return ks_rwlock_tryrdlock_slow(l);
    return (v & KS_RWLOCK_WRITER) == KS_RWLOCK_MAX_READERS ? EAGAIN : EBUSY;
}

static inline int ks_rwlock_rdlock_raw_(ks_rwlock_t *l)
{
    if (KS_LIKELY(KS_RWLOCK_FAST_ && l != 0 && !(ks_rwlock_bias_(l) & (KS_RWLOCK_BIAS | KS_RWLOCK_TRACED)))) {
        uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
        if (ks_rwlock_read_lockable_(v) &&
            __atomic_compare_exchange_n(&l->state, &v, v + 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return 0;
    }
    return KS_RWLOCK_FAST_ ? ks_rwlock_rdlock_slow(l, KS_FOREVER) : ks_rwlock_rdlock_debug_(l, KS_FOREVER);
}

static inline int ks_rwlock_timedrdlock_raw_(ks_rwlock_t *l, int64_t deadline)
{
    if (KS_LIKELY(KS_RWLOCK_FAST_ && l != 0 && deadline >= 0 &&
                  !(ks_rwlock_bias_(l) & (KS_RWLOCK_BIAS | KS_RWLOCK_TRACED)))) {
        uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
        if (ks_rwlock_read_lockable_(v) &&
            __atomic_compare_exchange_n(&l->state, &v, v + 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return 0;
    }
    return KS_RWLOCK_FAST_ ? ks_rwlock_rdlock_slow(l, deadline) : ks_rwlock_rdlock_debug_(l, deadline);
}

static inline int ks_rwlock_trywrlock_raw_(ks_rwlock_t *l)
{
    if (KS_UNLIKELY(!l))
        return EINVAL;
    /* look at the table before taking the word; the mark, a debug build */
    if (!KS_RWLOCK_FAST_ || (ks_rwlock_bias_(l) & (KS_RWLOCK_BIAS_USED | KS_RWLOCK_TRACED)))
        return ks_rwlock_trywrlock_slow(l);
    uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
    while (!(v & KS_RWLOCK_WRITER))
        if (__atomic_compare_exchange_n(&l->state, &v, v | KS_RWLOCK_WRITER, 1, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED))
            return ks_rwlock_wrlock_revoke_(l, -1);
    return EBUSY;
}

static inline int ks_rwlock_wrlock_raw_(ks_rwlock_t *l)
{
    uint64_t zero = 0;
    if (KS_LIKELY(KS_RWLOCK_FAST_ && l &&
                  __atomic_compare_exchange_n(&l->state, &zero, KS_RWLOCK_WRITER, 0, __ATOMIC_ACQUIRE,
                                              __ATOMIC_RELAXED)))
        return ks_rwlock_wrlock_revoke_(l, KS_FOREVER);
    return ks_rwlock_wrlock_slow(l, KS_FOREVER);
}

static inline int ks_rwlock_timedwrlock_raw_(ks_rwlock_t *l, int64_t deadline)
{
    uint64_t zero = 0;
    if (KS_LIKELY(KS_RWLOCK_FAST_ && l && deadline >= 0 &&
                  __atomic_compare_exchange_n(&l->state, &zero, KS_RWLOCK_WRITER, 0, __ATOMIC_ACQUIRE,
                                              __ATOMIC_RELAXED)))
        return ks_rwlock_wrlock_revoke_(l, deadline);
    return ks_rwlock_wrlock_slow(l, deadline);
}

/* Fast unlock when nobody waits and (for a reader) others still hold it or
 * no one waits: one CAS.  release: pairs with the acquire of the next locker.
 * A reader that entered through the table must be told apart: it holds the
 * lock only while BIAS_USED is set, so without it this thread is no such
 * reader. */
static inline int ks_rwlock_unlock_raw_(ks_rwlock_t *l)
{
    if (KS_LIKELY(KS_RWLOCK_FAST_ && l != 0 && !(ks_rwlock_bias_(l) & (KS_RWLOCK_BIAS_USED | KS_RWLOCK_TRACED)))) {
        uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
        uint64_t held = v & KS_RWLOCK_WRITER;
        if (held && !(v & ~KS_RWLOCK_WRITER) &&
            __atomic_compare_exchange_n(&l->state, &v, held == KS_RWLOCK_WRITER ? 0 : v - 1, 0,
                                        __ATOMIC_RELEASE, __ATOMIC_RELAXED))
            return 0;
    }
    return ks_rwlock_unlock_slow(l);
}

/* What a race detector is told (ksync/annotate.h): nothing, and these are
 * the functions above, unless the program is built with -fsanitize=thread
 * or -DKSYNC_HELGRIND / -DKSYNC_DRD.  rd: a read lock; may_fail: a try or
 * timed one. */
#define KS_RWLOCK_ANNOTATED_(rd, may_fail, call)                                                      \
    {                                                                                                       \
        if (l)                                                                                              \
            KS_ANN_LOCK_PRE(l, rd, may_fail);                                                               \
        int e = call;                                                                                       \
        if (l)                                                                                              \
            KS_ANN_LOCK_POST(l, rd, may_fail, e);                                                           \
        return e;                                                                                           \
    }
static inline int ks_rwlock_tryrdlock(ks_rwlock_t *l) KS_RWLOCK_ANNOTATED_(1, 1, ks_rwlock_tryrdlock_raw_(l))
static inline int ks_rwlock_rdlock(ks_rwlock_t *l) KS_RWLOCK_ANNOTATED_(1, 0, ks_rwlock_rdlock_raw_(l))
static inline int ks_rwlock_timedrdlock(ks_rwlock_t *l, int64_t deadline)
    KS_RWLOCK_ANNOTATED_(1, 1, ks_rwlock_timedrdlock_raw_(l, deadline))
static inline int ks_rwlock_trywrlock(ks_rwlock_t *l) KS_RWLOCK_ANNOTATED_(0, 1, ks_rwlock_trywrlock_raw_(l))
static inline int ks_rwlock_wrlock(ks_rwlock_t *l) KS_RWLOCK_ANNOTATED_(0, 0, ks_rwlock_wrlock_raw_(l))
static inline int ks_rwlock_timedwrlock(ks_rwlock_t *l, int64_t deadline)
    KS_RWLOCK_ANNOTATED_(0, 1, ks_rwlock_timedwrlock_raw_(l, deadline))

static inline int ks_rwlock_unlock(ks_rwlock_t *l)
{
#if KS_ANNOTATING
    /* The caller holds it: for reading if through the table; else the word
     * shows a writer iff the caller is one (a writer waiting for table
     * readers to leave has its count in the word too: the table first).
     * relaxed: the caller's own hold, ordered by its acquisition. */
    int table = l && ks_rwlock_table_held_(l);
    uint64_t held = l ? __atomic_load_n(&l->state, __ATOMIC_RELAXED) & KS_RWLOCK_WRITER : 0;
    int rd = table || held != KS_RWLOCK_WRITER;
    const int told = table || held; /* nobody holds it: EPERM, not told */
    if (told)
        KS_ANN_UNLOCK_PRE(l, rd);
    int e = ks_rwlock_unlock_raw_(l);
    if (told)
        KS_ANN_UNLOCK_POST(l, rd);
    return e;
#else
    return ks_rwlock_unlock_raw_(l);
#endif
}

/* Two rwlocks, for writing at once, in one global order: the lower address first, so that
 * threads locking the same pair in opposite argument orders (the course's
 * bank transfer: lock(from), lock(to)) cannot deadlock.  a == b takes it
 * once (ks_rwlock_unlock2 then releases it once).  A timed acquisition that gets the
 * first and not the second releases the first and reports the second's
 * error (ETIMEDOUT), so it never returns holding one of the two.  The
 * order is the address in the caller's address space: KS_SHARED objects that
 * processes map at different addresses need an order of the caller's own
 * (an account number), or two processes may disagree.
 * Errors: those of ks_rwlock_timedwrlock, and EINVAL if either is NULL. */
static inline int ks_rwlock_timedwrlock2(ks_rwlock_t *a, ks_rwlock_t *b, int64_t deadline)
{
    if (!a || !b)
        return EINVAL;
    if (a == b)
        return ks_rwlock_timedwrlock(a, deadline);
    if ((uintptr_t)b < (uintptr_t)a) {
        ks_rwlock_t *t = a;
        a = b;
        b = t;
    }
    int e = ks_rwlock_timedwrlock(a, deadline);
    if (e != 0)
        return e;
    e = ks_rwlock_timedwrlock(b, deadline);
    if (e != 0)
        (void)ks_rwlock_unlock(a);
    return e;
}

static inline int ks_rwlock_wrlock2(ks_rwlock_t *a, ks_rwlock_t *b) { return ks_rwlock_timedwrlock2(a, b, KS_FOREVER); }

/* Releases what ks_rwlock_wrlock2 took (either argument order); the first error of the
 * two unlocks, both attempted. */
static inline int ks_rwlock_unlock2(ks_rwlock_t *a, ks_rwlock_t *b)
{
    if (!a || !b)
        return EINVAL;
    int e = ks_rwlock_unlock(a);
    if (a == b)
        return e;
    int e2 = ks_rwlock_unlock(b);
    return e != 0 ? e : e2;
}

KS_EXTERN_C_END

#endif

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
 */
#include "internal.h"

#include <ksync/rwlock.h>

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

int ks_rwlock_init(ks_rwlock_t *l, unsigned flags)
{
    if (!l || (flags & ~(KS_FLAGS_VALID | KS_RWLOCK_PREFER_READER)))
        return EINVAL;
    l->state = 0;
    l->flags = flags;
    l->reserved = 0;
    return 0;
}

int ks_rwlock_destroy(ks_rwlock_t *l)
{
    if (!l)
        return EINVAL;
    /* relaxed: a courtesy check; destroy is only legal with no users. */
    uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
    return (R(v) || NW(v)) ? EBUSY : 0;
}

int ks_rwlock_unlock_slow(ks_rwlock_t *l)
{
    if (!l)
        return EINVAL;
    return ks_rwlock_unlock_mode(l, !!(l->flags & KS_RWLOCK_PREFER_READER));
}

/* Under reader preference readers sleep only while a writer holds the lock,
 * so the unlock that frees it wakes them even when writers wait too. */
int ks_rwlock_unlock_mode(ks_rwlock_t *l, int prefer_reader)
{
    const unsigned fl = l->flags; /* read before the release */
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
    return ks_rwlock_tryrdlock_mode(l, !!(l->flags & KS_RWLOCK_PREFER_READER));
}

int ks_rwlock_tryrdlock_mode(ks_rwlock_t *l, int prefer_reader)
{
    uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
    while (read_lockable(v, prefer_reader))
        /* acquire: pairs with the release CAS in unlock. */
        if (__atomic_compare_exchange_n(&l->state, &v, v + 1, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return 0;
    return R(v) == KS_RWLOCK_MAX_READERS ? EAGAIN : EBUSY;
}

int ks_rwlock_rdlock_slow(ks_rwlock_t *l, int64_t deadline)
{
    if (!l || deadline < 0)
        return EINVAL;
    return ks_rwlock_rdlock_mode(l, deadline, !!(l->flags & KS_RWLOCK_PREFER_READER));
}

int ks_rwlock_rdlock_mode(ks_rwlock_t *l, int64_t deadline, int prefer_reader)
{
    const unsigned fl = l->flags;
    uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
    /* Spin while a writer holds it and nobody queues behind it. */
    for (int i = 0, n = ks_spin_budget(KS_SPIN_LIMIT); i < n && R(v) == WRITER && !(v & (RS | WW)); i++) {
        ks_cpu_relax();
        v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
    }
    for (;;) {
        if (read_lockable(v, prefer_reader)) {
            /* acquire: pairs with the release CAS in unlock. */
            if (__atomic_compare_exchange_n(&l->state, &v, v + 1, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                return 0;
            continue;
        }
        if (R(v) == KS_RWLOCK_MAX_READERS)
            return EAGAIN;
        if (ks_deadline_passed(deadline))
            return ETIMEDOUT; /* past deadline: no RS residue */
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

int ks_rwlock_wrlock_slow(ks_rwlock_t *l, int64_t deadline)
{
    if (!l || deadline < 0)
        return EINVAL;
    const unsigned fl = l->flags;
    uint64_t v = __atomic_load_n(&l->state, __ATOMIC_RELAXED), nv;
    /* Spin while the lock is held and no other writer queues. */
    for (int i = 0, n = ks_spin_budget(KS_SPIN_LIMIT); i < n && R(v) && !NW(v); i++) {
        ks_cpu_relax();
        v = __atomic_load_n(&l->state, __ATOMIC_RELAXED);
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
            if (__atomic_compare_exchange_n(&l->state, &v, nv, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                return 0;
            continue;
        }
        if (!registered) {
            if (ks_deadline_passed(deadline))
                return ETIMEDOUT; /* past deadline: do not register at all */
            /* relaxed: registering publishes nothing; unlock reads NW in its CAS. */
            nv = (v + ONE_W) | WW;
            if (!__atomic_compare_exchange_n(&l->state, &v, nv, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                continue;
            registered = 1;
            v = nv;
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

/* src/event.c - manual-reset event.  Full write-up: docs/event.md.
 *
 * The futex word:
 *   bit 0      SET       the event is set
 *   bit 1      SLEEPERS  a waiter may be asleep: set() must wake
 *   bits 2-31  GEN       number of set() transitions from clear to set (mod 2^30)
 *
 *   set:    clear -> GEN+1, SET, SLEEPERS cleared; FUTEX_WAKE all if SLEEPERS was set
 *           set   -> unchanged (still a release CAS)
 *   clear:  SET cleared
 *   wait:   returns when SET is seen or GEN differs from the GEN it first saw;
 *           otherwise sets SLEEPERS and sleeps on that exact word
 *
 * A waiter sleeps only on a clear word with SLEEPERS set; any set() changes
 * the word (GEN and SET), so either the kernel refuses the sleep (EAGAIN) or
 * the set() sees SLEEPERS and wakes everyone.  Because waiters also return
 * when GEN moved, a set() quickly followed by clear() still releases every
 * thread that was waiting (the lost "pulse" of docs/pitfalls.md item 30; the event
 * count idea of CK's ck_ec).  GEN wraps after 2^30 set() calls: a waiter
 * that sleeps through exactly a multiple of 2^30 set/clear pairs between two
 * of its looks would miss them (the same bound musl and Rust accept for
 * sequence counters, docs/pitfalls.md item 18).
 */
#include "internal.h"

#include <ksync/event.h>

#define SET KS_EVENT_SET
#define SLEEPERS KS_EVENT_SLEEPERS
#define GEN_MASK (~(uint32_t)(SET | SLEEPERS))

int ks_event_init(ks_event_t *e, unsigned flags)
{
    if (!e || (flags & ~KS_FLAGS_VALID))
        return EINVAL;
    e->word = 0;
    e->flags = flags;
    return 0;
}

int ks_event_destroy(ks_event_t *e)
{
    return e ? 0 : EINVAL;
}

int ks_event_set(ks_event_t *e)
{
    if (!e)
        return EINVAL;
    const unsigned fl = e->flags; /* read before the release: e may be freed after it */
    uint32_t v = __atomic_load_n(&e->word, __ATOMIC_RELAXED), nv;
    do {
        nv = (v & SET) ? v : (((v & GEN_MASK) + KS_EVENT_GEN) | SET);
        /* release: pairs with the acquire loads in wait() and is_set(). */
    } while (!__atomic_compare_exchange_n(&e->word, &v, nv, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
    if (v & SLEEPERS) {
        KS_RACE_POINT();
        ks_futex_wake(&e->word, KS_WAKE_ALL, fl);
    }
    return 0;
}

int ks_event_clear(ks_event_t *e)
{
    if (!e)
        return EINVAL;
    /* relaxed: clearing publishes nothing; a waiter that sees it just sleeps. */
    __atomic_fetch_and(&e->word, ~(uint32_t)SET, __ATOMIC_RELAXED);
    return 0;
}

int ks_event_timedwait(ks_event_t *e, int64_t deadline)
{
    if (!e || deadline < 0)
        return EINVAL;
    const unsigned fl = e->flags;
    /* acquire (here and below): pairs with the release CAS in set(). */
    uint32_t v = __atomic_load_n(&e->word, __ATOMIC_ACQUIRE);
    const uint32_t gen = v & GEN_MASK;
    if (v & SET)
        return 0;
    /* A deadline already past: one look, no spinning, no SLEEPERS residue. */
    if (ks_deadline_passed(deadline))
        return ETIMEDOUT;
    /* Spin while the setter may be close (src/spin.c decides how long). */
    struct ks_spin sp;
    if (ks_spin_begin(&sp, KS_SPIN_EVENT)) {
        while (!(v & SET) && (v & GEN_MASK) == gen && ks_spin_more(&sp)) {
            ks_cpu_relax();
            v = __atomic_load_n(&e->word, __ATOMIC_ACQUIRE);
        }
        if ((v & SET) || (v & GEN_MASK) != gen) {
            ks_spin_won(&sp);
            return 0;
        }
        ks_spin_end(&sp);
    }
    for (;;) {
        if ((v & SET) || (v & GEN_MASK) != gen) {
            ks_spin_waited(&sp);
            return 0;
        }
        if (!(v & SLEEPERS)) {
            /* acquire both ways (GCC wants failure <= success): on failure the
             * reloaded word may show SET; success only announces a sleeper. */
            if (!__atomic_compare_exchange_n(&e->word, &v, v | SLEEPERS, 1, __ATOMIC_ACQUIRE,
                                             __ATOMIC_ACQUIRE))
                continue;
            v |= SLEEPERS;
        }
        KS_RACE_POINT();
        int r = ks_futex_wait(&e->word, v, deadline, fl);
        v = __atomic_load_n(&e->word, __ATOMIC_ACQUIRE);
        if (r == ETIMEDOUT && !(v & SET) && (v & GEN_MASK) == gen)
            return ETIMEDOUT; /* else the loop's first test returns 0 */
    }
}

/* ks_wait_any's arm (src/internal.h): ready if set, or if set() ran since
 * the first arm (a pulse); else announce a sleeper, as timedwait does, and
 * watch the word. */
int ks_event_any_arm(ks_event_t *e, uint32_t *gen, struct ks_waitset *ws)
{
    if (!e)
        return -EINVAL;
    /* acquire (here and in the CAS): pairs with the release CAS in set(). */
    uint32_t v = __atomic_load_n(&e->word, __ATOMIC_ACQUIRE);
    for (;;) {
        if (*gen == ~0u)
            *gen = v & GEN_MASK;
        if ((v & SET) || (v & GEN_MASK) != *gen)
            return 1;
        if (v & SLEEPERS)
            break;
        if (__atomic_compare_exchange_n(&e->word, &v, v | SLEEPERS, 1, __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE)) {
            v |= SLEEPERS;
            break;
        }
    }
    ks_waitset_add(ws, &e->word, v, e->flags);
    return 0;
}

/* src/barrier.c - reusable counting barrier.  docs/barrier.md.
 *
 *   seq      = phase << 1 | SLEEPERS   (the futex word)
 *   arrived  = threads that have arrived in this phase
 *   leaving  = threads released by a phase end that have not yet made their
 *              last access (bit 31 DESTROYING: destroy sleeps on it)
 *
 * wait:  p = seq's phase (read BEFORE arriving);  n = ++arrived
 *        n == count: arrived = 0, leaving += count-1, then seq = (p+1) << 1
 *                    (release), and FUTEX_WAKE all if SLEEPERS was set
 *                    -> KS_BARRIER_SERIAL
 *        otherwise:  spin (if all parties can run at once), then set SLEEPERS
 *                    and sleep, until seq's phase != p; then leaving -= 1 as
 *                    the last access -> 0
 *
 * Why a thread reads the phase before arriving: it can only be reading phase
 * p or later, and phase p cannot end without its own arrival, so it reads
 * exactly p.  Why no thread overtakes into the next phase: a thread of phase
 * p+1 arrives only after it has seen seq move to p+1, and the last arriver
 * reset `arrived` before that release store.  Destroy after return
 * (docs/pitfalls.md item 25): the serial thread of the last phase may return and
 * destroy the barrier while the threads it released are still on their way
 * out (one still reloading seq after its futex wait, say).  Each released
 * thread's last access is its decrement of `leaving`, which the last arriver
 * raised by count-1 before releasing them; ks_barrier_destroy waits for it to
 * reach 0 (as glibc's barrier destroy does), and the last leaver wakes it on
 * the address only.  The last arriver's own last access is the seq exchange.
 */
#include "internal.h"

#include <ksync/barrier.h>

#define SLEEPERS 1u
#define PHASE_ONE 2u
/* Spinning (src/spin.c's time budget) happens only if every party can have
 * a CPU (count <= usable CPUs); otherwise a spinner would take the CPU a
 * missing thread needs, which is how CK's spinning barriers collapse. */

int ks_barrier_init(ks_barrier_t *b, unsigned count, unsigned flags)
{
    if (!b || count == 0 || count > KS_BARRIER_MAX || (flags & ~KS_FLAGS_VALID))
        return EINVAL;
    b->seq = 0;
    b->arrived = 0;
    b->count = count;
    b->flags = flags;
    b->leaving = 0;
    return 0;
}

int ks_barrier_destroy(ks_barrier_t *b)
{
    if (!b)
        return EINVAL;
    /* relaxed: threads blocked in a partly filled phase make destroy
     * undefined; this check is a courtesy for the caller who got that wrong. */
    if (__atomic_load_n(&b->arrived, __ATOMIC_RELAXED))
        return EBUSY;
    ks_drain(&b->leaving, b->flags, NULL, NULL);
    return 0;
}

/* A released waiter's last access: leave, and wake destroy if it waits for us. */
static int leave(ks_barrier_t *b, unsigned fl)
{
    ks_drain_leave(&b->leaving, fl);
    return 0;
}

int ks_barrier_wait(ks_barrier_t *b)
{
    if (!b || b->count == 0)
        return EINVAL;
    const unsigned fl = b->flags;
    const uint32_t count = b->count;
    /* acquire: pairs with the release RMW that opened this phase, so the
     * reset of `arrived` is visible before we add to it. */
    const uint32_t phase = __atomic_load_n(&b->seq, __ATOMIC_ACQUIRE) & ~SLEEPERS;
    /* acq_rel: the last arriver must see every earlier arriver's writes
     * (acquire), and its own are released through the seq store below. */
    uint32_t n = __atomic_add_fetch(&b->arrived, 1, __ATOMIC_ACQ_REL);
    if (n == count) {
        /* relaxed: ordered before the release RMW on seq, and nobody adds to
         * `arrived` until they have seen that RMW. */
        __atomic_store_n(&b->arrived, 0, __ATOMIC_RELAXED);
        /* relaxed: ordered before the release exchange below, which every
         * leaver acquires before it decrements. */
        if (count > 1)
            __atomic_fetch_add(&b->leaving, count - 1, __ATOMIC_RELAXED);
        KS_RACE_POINT();
        /* release: pairs with the waiters' acquire loads of seq. */
        uint32_t old = __atomic_exchange_n(&b->seq, phase + PHASE_ONE, __ATOMIC_RELEASE);
        if (old & SLEEPERS)
            ks_futex_wake(&b->seq, KS_WAKE_ALL, fl); /* address only from here */
        return KS_BARRIER_SERIAL;
    }

    struct ks_spin sp;
    const int may_spin = count <= (uint32_t)ks_usable_cpus();
    if (may_spin && ks_spin_begin(&sp, KS_SPIN_BARRIER)) {
        do {
            /* acquire: pairs with the last arriver's release exchange. */
            if ((__atomic_load_n(&b->seq, __ATOMIC_ACQUIRE) & ~SLEEPERS) != phase) {
                ks_spin_won(&sp);
                return leave(b, fl);
            }
            ks_cpu_relax();
        } while (ks_spin_more(&sp));
        ks_spin_end(&sp);
    }
    uint32_t s = __atomic_load_n(&b->seq, __ATOMIC_ACQUIRE);
    for (;;) {
        if ((s & ~SLEEPERS) != phase) {
            if (may_spin)
                ks_spin_waited(&sp);
            return leave(b, fl);
        }
        if (!(s & SLEEPERS)) {
            /* acquire both ways (GCC wants failure <= success): on failure the
             * reloaded word may be the next phase; success only announces. */
            if (!__atomic_compare_exchange_n(&b->seq, &s, s | SLEEPERS, 1, __ATOMIC_ACQUIRE,
                                             __ATOMIC_ACQUIRE))
                continue;
            s |= SLEEPERS;
        }
        KS_RACE_POINT();
        ks_futex_wait(&b->seq, s, KS_FOREVER, fl);
        s = __atomic_load_n(&b->seq, __ATOMIC_ACQUIRE);
    }
}

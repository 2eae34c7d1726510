/* src/spin.c - the spin-then-park policy of every blocking primitive.
 * docs/spin.md explains it; this comment is the short version.
 *
 * A waiter spins for a *time*, not a number of `pause` rounds: `pause`
 * costs ~14 ns on recent Intel cores and a few cycles on AMD's, so one
 * round count means a 10x different wait on two machines.  Time is read
 * from the arch tick counter (rdtsc, cntvct_el0), calibrated once against
 * CLOCK_MONOTONIC.
 *
 * How long is learned, per thread and per kind of wait (a "site": mutex,
 * event, sem, ...), from how the last waits ended:
 *
 *   won: the spin saw what it waited for after t
 *        -> the budget decays by 1/16 when t < budget/4 (a fast partner
 *           needs less; floor KS_SPIN_FLOOR_NS)
 *   waited: the spin ran out (or was refused) and the wait ended, usually
 *        after a sleep, W after it began
 *        -> W <= KS_SPIN_CAP_NS: the partner was near and a longer spin
 *           would have saved the sleep and the wake-up: budget = min(cap,
 *           max(budget, W + W/4))
 *        -> W >  KS_SPIN_CAP_NS: no allowed spin would have covered it
 *           (the partner was away): halve
 *        -> at a lock's site (mutex, rwlock, sem: KS_SPIN_LOCK_SITES), the
 *           KS_SPIN_MISSES-th such wait in a row, and each after it until a
 *           spin wins: halve, whatever W was.  The spin has been lengthened
 *           to cover the last waits and still covers none: the holders'
 *           holds are not of a length a spin can catch (16 threads on 2
 *           CPUs whose holder yields inside the lock, or needs the CPU the
 *           spinner occupies), and spinning on only takes CPU time from
 *           the threads that would end them.  Except one in KS_SPIN_PROBE
 *           of those (the 19th, 35th, ... in a row), a probe: budget =
 *           max(budget, 1.25 x the longest wait within the cap since the
 *           last win).  Without the probe, a hand-off whose partner answers
 *           after more than the floor, once pushed to 4 misses (an absent
 *           phase of the partner, a few preemptions), could never win
 *           again at the floor and stayed in the sleeping state.  The
 *           probe's own wait is not what it learns from: a partner whose
 *           answers alternate 30 and 75 us put every probe on a wait beyond
 *           the cap, which halved, and the pair stayed asleep (both found by
 *           reviews; docs/spin.md, "Why it converges").  One probe in 16,
 *           not 4, keeps most of what the rule gains for python3 through
 *           the drop-in layer, and a trapped pair gets its long spin
 *           within 17 waits.
 *           Not at the hand-off sites (event, cond, barrier, queue,
 *           channel): there a long spin that rarely wins still paid in
 *           bench section 8 (16 waiters of a broadcast, 1.1x glibc's
 *           broadcasts/s, 0.8-0.9x with the rule)
 *   timed out, error: nothing learned
 *
 * So a hand-off whose wake-ups are slow (a vCPU woken in tens of us) moves
 * its threads into the spinning state after one or two slow round trips and
 * stays there (at a lock's site, a pair pushed past KS_SPIN_MISSES misses
 * in a row comes back after the next probe), while a waiter whose partner
 * answers after a millisecond drops to the floor within a few waits (1/2,
 * 1/4, ... of the cap).  No spin exceeds KS_SPIN_CAP_NS.
 *
 * When not to spin at all: with one usable CPU (the thread waited for
 * cannot run while we spin), and when usable CPUs - 1 threads of the
 * process are already spinning (one CPU stays for the threads doing the
 * work: with 17 threads on 2 CPUs, two spinners took both CPUs from the
 * thread each of them waited for).  The first microsecond of a spin needs
 * no place (a hand-off's waits mostly end within it); after that a spinner
 * holds a place, a lease that runs out with its spin (see take_place).  A
 * deadline already past clips the spin to that first microsecond.
 *
 * Which CPU mask: the machine's online count is wrong under `taskset -c 0`
 * (a 2-party barrier then ran at a tenth of pthread_barrier's rate), and the
 * calling thread's own mask is wrong for a thread pinned to one CPU whose
 * partner runs on another (a pinned ping-pong then slept on every hand-off:
 * 1.0x glibc instead of 55-95x).  What matters is where the *other* threads
 * may run, which ksync approximates by the process's mask: that of its main
 * thread (tid == pid), which taskset and cpusets set and per-thread pinning
 * leaves alone.  If the main thread has exited, the caller's own mask is
 * used.  The mask can change, so each thread re-reads it every
 * KS_CPU_REFRESH calls; the syscall costs well under a microsecond and is
 * only made from slow paths.
 */
#include "internal.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define KS_CPU_REFRESH 256

static KS_TLS int tls_cpus;
static KS_TLS unsigned tls_calls;

int ks_usable_cpus(void)
{
    if (KS_UNLIKELY(tls_cpus == 0 || ++tls_calls % KS_CPU_REFRESH == 0)) {
        cpu_set_t set;
        int n = 0;
        if (sched_getaffinity(getpid(), sizeof set, &set) == 0 ||
            sched_getaffinity(0, sizeof set, &set) == 0)
            n = CPU_COUNT(&set);
        tls_cpus = n > 0 ? n : 1;
    }
    return tls_cpus;
}

/* ---- ticks <-> nanoseconds ----
 * Ticks per ns in 32.32 fixed point, 0 until calibrated.  Integer on
 * purpose: the drop-in layer runs this inside pthread_mutex_lock, where a
 * program may have enabled floating-point traps.  Relaxed: one
 * self-contained word that racing calibrations compute alike; nothing is
 * published with it. */
static uint64_t tick_scale;

/* ns conversions are only needed up to the cap; inputs are clamped here,
 * which keeps every product within 64 bits (see the two functions). */
#define NS_MAX (1ull << 28) /* 268 ms */

static int clock_ns(int64_t *ns)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return -1;
    *ns = (int64_t)ts.tv_sec * KS_NSEC_PER_SEC + ts.tv_nsec;
    return 0;
}

/* One (ticks, ns) pair: the clock read between two tick reads, the ticks
 * taken as their midpoint.  A pair whose two tick reads lie far apart (a
 * preemption, a stolen vCPU in between) is refused. */
static int sample(uint64_t *k, int64_t *ns)
{
    for (int tries = 0; tries < 100; tries++) {
        uint64_t a = ks_ticks();
        if (clock_ns(ns) != 0)
            return -1;
        uint64_t b = ks_ticks();
        if (b >= a && b - a < 20000) { /* 5-10 us of a GHz TSC; a preemption is ms */
            *k = a + (b - a) / 2;
            return 0;
        }
    }
    return -1;
}

/* Count ticks over 50 us of CLOCK_MONOTONIC, once per process (a thread
 * that races the first one measures too and stores about the same figure).
 * The window is busy on purpose: sleeping would measure the scheduler.  A
 * clock that fails (a seccomp filter) or a counter that does not move make
 * ticks count as nanoseconds. */
static __attribute__((noinline)) uint64_t calibrate(void)
{
    const int64_t window = 50000;
    uint64_t s = 1ull << 32, k0, k1;
    int64_t t0, t1;
    if (sample(&k0, &t0) == 0) {
        int ok;
        do
            ok = sample(&k1, &t1) == 0;
        while (ok && t1 - t0 < window);
        if (ok && k1 > k0 && t1 > t0 && k1 - k0 < (1ull << 31))
            s = ((k1 - k0) << 32) / (uint64_t)(t1 - t0);
        if (s == 0)
            s = 1ull << 32;
    }
    __atomic_store_n(&tick_scale, s, __ATOMIC_RELAXED);
    return s;
}

static inline uint64_t scale(void)
{
    uint64_t s = __atomic_load_n(&tick_scale, __ATOMIC_RELAXED);
    return KS_LIKELY(s) ? s : calibrate();
}

uint64_t ks_spin_ns_to_ticks(uint64_t ns)
{
    /* ns <= 2^28 and scale < 2^36 (a counter under 16 GHz): < 2^64 */
    return ((ns < NS_MAX ? ns : NS_MAX) * scale()) >> 32;
}

uint64_t ks_spin_ticks_to_ns(uint64_t ticks)
{
    /* ns per tick in 32.32 is 2^64 / scale; ticks is clamped to NS_MAX
     * worth, so ticks * that <= NS_MAX * 2^32 = 2^60. */
    const uint64_t s = scale();
    const uint64_t per = UINT64_MAX / s;
    const uint64_t tmax = (NS_MAX * s) >> 32;
    return ((ticks < tmax ? ticks : tmax) * per) >> 32;
}

/* ---- the policy ---- */

/* Spinner places: at most usable CPUs - 1 threads spin at once (at most
 * MAX_LEASES).  A place is a lease: the tick at which its spin ends, plus
 * slack.  A thread takes a place whose lease is 0 or past, and gives it back
 * by clearing it.  A spin that never gives its place back (a signal handler
 * that left it by siglongjmp or pthread_exit) or a place inherited by a
 * fork child from a thread that does not exist there frees itself when its
 * lease runs out, within the cap.  Relaxed everywhere: the places order
 * nothing, they only bound how many threads burn CPU. */
#define MAX_LEASES 64
static struct {
    uint64_t until[MAX_LEASES];
} __attribute__((aligned(KS_CACHELINE))) leases;

/* Take a free or expired place for a spin ending at `stop`; returns its
 * index + 1, or 0 when none of the first `most` is free. */
static unsigned take_place(int most, uint64_t now, uint64_t lease)
{
    for (int i = 0; i < most; i++) {
        uint64_t u = __atomic_load_n(&leases.until[i], __ATOMIC_RELAXED);
        if (u <= now &&
            __atomic_compare_exchange_n(&leases.until[i], &u, lease, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return (unsigned)i + 1;
    }
    return 0;
}

/* Budget in ns per thread and site; 0 = not yet used by this thread. */
static KS_TLS uint32_t tls_budget[KS_SPIN_SITES];
/* Waits in a row, per thread and site, that the spin did not cover (since
 * its last win), counted 1 .. KS_SPIN_MISSES + KS_SPIN_PROBE - 1, then
 * from KS_SPIN_MISSES again (ks_spin_waited). */
static KS_TLS unsigned tls_misses[KS_SPIN_SITES];
/* The longest of those waits that was within the cap, in ns (0: none),
 * which the probe lengthens the budget to cover (ks_spin_waited). */
static KS_TLS uint32_t tls_miss_max[KS_SPIN_SITES];
_Static_assert(KS_SPIN_PROBE >= 2, "a probe period of 0 or 1 is no probe");

uint32_t ks_spin_budget_ns(unsigned site)
{
    uint32_t b = tls_budget[site];
    return b ? b : KS_SPIN_START_NS;
}

void ks_spin_set_budget_ns(unsigned site, uint32_t ns)
{
    tls_budget[site] = ns < KS_SPIN_FLOOR_NS ? KS_SPIN_FLOOR_NS : ns > KS_SPIN_CAP_NS ? KS_SPIN_CAP_NS : ns;
}

unsigned ks_spin_misses(unsigned site)
{
    return site < KS_SPIN_SITES ? tls_misses[site] : 0;
}

void ks_spin_set_misses(unsigned site, unsigned n)
{
    if (site < KS_SPIN_SITES)
        tls_misses[site] = n < KS_SPIN_MISSES + KS_SPIN_PROBE ? n : KS_SPIN_MISSES + KS_SPIN_PROBE - 1;
}

int ks_spin_begin(struct ks_spin *sp, unsigned site)
{
    sp->site = site;
    sp->place = 0;
    sp->until = 0;
    sp->clipped = 0;
    sp->cut = 0;
    if (ks_usable_cpus() <= 1) {
        sp->start = sp->stop = ks_ticks();
        sp->site = KS_SPIN_SITES; /* nothing to learn: never spins */
        return 0;
    }
    /* The first KS_SPIN_FREE_NS need no place: most waits of a hand-off end
     * within them, and taking a place would make both threads of the pair
     * write the place's line on every round trip.  The rest of the budget
     * needs one (ks_spin_extend).  The conversions come before the start is
     * read: the first one of a process calibrates for 50 us, which used to
     * come out of its first spin's budget. */
    const uint64_t budget = ks_spin_ns_to_ticks(ks_spin_budget_ns(site));
    const uint64_t free_part = ks_spin_ns_to_ticks(KS_SPIN_FREE_NS);
    sp->start = ks_ticks();
    sp->stop = sp->start;
    if (budget <= free_part) {
        sp->stop = sp->start + budget;
    } else {
        sp->stop = sp->start + free_part;
        sp->until = sp->start + budget;
    }
    return 1;
}

/* The free part is over: go on to `until` if a spinner place is free.  One
 * CPU stays free of spinners for the threads that do the work (with 17
 * threads on 2 CPUs, two spinners took both CPUs from the thread each of
 * them waited for). */
int ks_spin_extend(struct ks_spin *sp)
{
    const uint64_t until = sp->until;
    sp->until = 0;
    const int cpus = ks_usable_cpus();
    const int most = cpus - 1 < MAX_LEASES ? cpus - 1 : MAX_LEASES;
    /* the lease outlasts the spin a little, for the ks_spin_end that follows */
    const uint64_t lease = until + ks_spin_ns_to_ticks(KS_SPIN_FREE_NS);
    const uint64_t now = ks_ticks();
    if (now >= until)
        return 0;
    unsigned place = take_place(most, now, lease);
    if (!place)
        return 0;
    sp->place = place;
    sp->lease = lease;
    sp->stop = until;
    return 1;
}

/* A timed wait's spin ends at its deadline: a spin of up to KS_SPIN_CAP_NS
 * would otherwise return ETIMEDOUT that much after a deadline a few
 * microseconds away.  A spin so cut teaches ks_spin_waited nothing.  A
 * deadline already past (a trylock or tryget that retries through the
 * timed path) keeps the free part only, so that the call still tries for a
 * moment, as before. */
void ks_spin_clip(struct ks_spin *sp, int64_t deadline)
{
    if (deadline == KS_FOREVER)
        return;
    const int64_t left = deadline - ks_now();
    if (left <= 0) {
        sp->until = 0;
        sp->clipped = 1; /* and no deferral to the holder (ks_spin_defer_ns's callers) */
        return;
    }
    const uint64_t end = sp->start + ks_spin_ns_to_ticks((uint64_t)left);
    if (sp->stop > end || sp->until > end)
        sp->cut = 1;
    if (sp->stop > end)
        sp->stop = end;
    if (sp->until > end)
        sp->until = end > sp->stop ? end : 0;
}

void ks_spin_end(struct ks_spin *sp)
{
    if (sp->place) {
        /* Give the place back if it is still ours (a lease that ran out may
         * have been taken by another spinner since). */
        uint64_t mine = sp->lease;
        __atomic_compare_exchange_n(&leases.until[sp->place - 1], &mine, 0, 0, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED);
        sp->place = 0;
    }
}

void ks_spin_won(struct ks_spin *sp)
{
    ks_spin_end(sp);
    if (sp->site >= KS_SPIN_SITES)
        return;
    tls_misses[sp->site] = 0;
    tls_miss_max[sp->site] = 0;
    uint64_t now = ks_ticks();
    uint64_t t = now > sp->start ? ks_spin_ticks_to_ns(now - sp->start) : 0;
    uint32_t b = ks_spin_budget_ns(sp->site);
    if (t < b / 4)
        ks_spin_set_budget_ns(sp->site, b - b / 16);
}

void ks_spin_waited(struct ks_spin *sp)
{
    ks_spin_end(sp);
    /* A spin its deadline ended says nothing about what the budget would
     * have covered: a timed lock whose deadline fell inside its deferral
     * took the still-free mutex right after, and counted as a miss, so a
     * thread doing timed locks with deadlines a few us away drove its
     * budget down to the floor (found by the review of 62c939d). */
    if (sp->site >= KS_SPIN_SITES || sp->cut)
        return;
    uint64_t now = ks_ticks();
    /* A thread that moved to a CPU whose counter lags sees now < start:
     * learn nothing from that wait. */
    if (now <= sp->start)
        return;
    uint64_t w = ks_spin_ticks_to_ns(now - sp->start);
    uint32_t b = ks_spin_budget_ns(sp->site);
    /* 1, 2, ..., MISSES + PROBE - 1, then MISSES again: past MISSES - 1
     * the lock sites halve, except at MISSES + PROBE - 1, a probe, which
     * lengthens the budget to 1.25 times the longest wait within the cap
     * since the last win (not this wait's: a probe that fell on a wait
     * beyond the cap would halve, and against a partner whose answers
     * alternate every probe can fall on such a wait).  The spin after the
     * probe is the one that may win, and a win sets the count to 0. */
    const unsigned site = sp->site;
    unsigned misses = tls_misses[site] + 1;
    if (misses >= KS_SPIN_MISSES + KS_SPIN_PROBE)
        misses = KS_SPIN_MISSES;
    tls_misses[site] = misses;
    if (w <= KS_SPIN_CAP_NS && w > tls_miss_max[site])
        tls_miss_max[site] = (uint32_t)w;
    const int lock = KS_SPIN_LOCK_SITES >> site & 1;
    if (lock && misses == KS_SPIN_MISSES + KS_SPIN_PROBE - 1 && tls_miss_max[site]) {
        const uint32_t m = tls_miss_max[site];
        if (m + m / 4 > b)
            ks_spin_set_budget_ns(site, m + m / 4); /* the probe */
    } else if (w > KS_SPIN_CAP_NS || (lock && misses >= KS_SPIN_MISSES)) {
        ks_spin_set_budget_ns(site, b / 2); /* no spin could have, or longer ones did not */
    } else if (w + w / 4 > b) {
        ks_spin_set_budget_ns(site, (uint32_t)(w + w / 4)); /* set_budget caps it */
    }
}

/* ---- deferring to the holder (docs/spin.md, "Deferring to the holder") ----
 * A spinner that looks at a lock and sees it free is racing the thread that
 * has just freed it.  If that thread takes the lock again at once (a loop
 * of short critical sections, the common case of a busy lock), taking it
 * first moves the lock's line and the lines of the data it guards to the
 * spinner's CPU, and the holder, now a spinner itself, soon takes them
 * back: every change of hands costs two or more line transfers.  With the
 * counter on the line after the lock's, two threads made 11.7 Mops/s that
 * way where glibc, whose waiter sleeps and leaves the holder alone, made
 * 34.1 (Intel Xeon guest, bench section 2 with --counter-apart;
 * docs/mutex.md "Measured").
 *
 * So a spinner that sees the lock free first waits, without looking (a
 * look would pull the line away from the holder again), for the thread's
 * learned deferral d, and then looks once more:
 *   - taken again: the holder wanted it; the spinner goes on spinning,
 *     and d doubles (from 0: 2 * FLOOR), up to CAP;
 *   - still free: the holder had left; the spinner takes it, and d loses
 *     an eighth; below FLOOR it becomes 0.
 * At 0, a free lock is taken at once, but one free sighting in PROBE still
 * defers by FLOOR, so a thread whose holders start to come back learns it.
 * A pattern where the holder leaves pays FLOOR on a sixteenth of its
 * hand-offs; a lock retaken at once has d near CAP, and its spinners no
 * longer take it between the holder's unlock and relock, which leaves the
 * holder the data's lines, as glibc's sleeping waiter does (docs/spin.md
 * has the figures).
 *
 * d is per thread and site, like the budget; thread-local, so no atomics.
 * A spin whose deadline has already passed (ks_spin_clip: a trylock
 * through the timed path) does not defer: it has about a microsecond, and
 * a deferral would spend it leaving the mutex to the holder. */
static KS_TLS uint32_t tls_defer[KS_SPIN_SITES];
static KS_TLS uint32_t tls_sightings; /* per thread, all sites: free sightings at d == 0, for PROBE */

uint32_t ks_spin_defer_ns(unsigned site)
{
    if (site >= KS_SPIN_SITES)
        return 0;
    const uint32_t d = tls_defer[site];
    if (d)
        return d;
    return ++tls_sightings % KS_DEFER_PROBE == 0 ? KS_DEFER_FLOOR_NS : 0;
}

int ks_spin_defer(struct ks_spin *sp, uint32_t ns)
{
    /* A deferral is part of the spin: it ends early if the spin does (its
     * budget, or no spinner place to go on with; ks_spin_more). */
    const uint64_t until = ks_ticks() + ks_spin_ns_to_ticks(ns);
    do {
        if (ks_ticks() >= until)
            return 1;
        ks_cpu_relax();
    } while (ks_spin_more(sp));
    return 0;
}

void ks_spin_deferred(unsigned site, int retaken)
{
    if (site >= KS_SPIN_SITES)
        return;
    uint32_t d = tls_defer[site];
    if (retaken)
        d = d < KS_DEFER_FLOOR_NS ? 2 * KS_DEFER_FLOOR_NS : d > KS_DEFER_CAP_NS / 2 ? KS_DEFER_CAP_NS : 2 * d;
    else if ((d -= d / 8) < KS_DEFER_FLOOR_NS)
        d = 0;
    tls_defer[site] = d;
}

uint32_t ks_spin_defer_get(unsigned site)
{
    return site < KS_SPIN_SITES ? tls_defer[site] : 0;
}

void ks_spin_defer_set(unsigned site, uint32_t ns)
{
    if (site < KS_SPIN_SITES)
        tls_defer[site] = ns > KS_DEFER_CAP_NS ? KS_DEFER_CAP_NS : ns;
}

/* ---- the cull (docs/spin.md, "The cull"): off unless asked for ----
 * Concurrency restriction after Dice's Malthusian locks (EuroSys 2017):
 * when more threads fight for a lock than it can serve, send the excess
 * away for a while instead of letting them all spin, sleep and wake on it.
 * With 16 threads on 2 CPUs, a rwlock with 10% writes ran both CPUs at 98%
 * and made 11 Mops/s: every operation moved the lock's line between the
 * CPUs.  On one CPU the same program made 56 Mops/s.  A culled thread
 * sleeps, the other threads of its CPU run, and when every lock-bound
 * thread of a CPU is away the lock is worked from the other CPU alone.
 *
 * Who is culled, when the cull is on: a thread whose lock is taken (1) for
 * the second time within KS_CULL_PAIR_NS, (5) when the first of the two
 * acquisitions took at least 1/KS_CULL_SHARE of the time between them (with
 * (1): it is bound by the lock just now), (2) on a CPU where another thread
 * passed (1) within KS_CULL_SHARED_NS (the CPU has other lock-bound work:
 * two threads on two CPUs are never culled, since sleeping would only leave
 * a CPU idle), (3) with more than one usable CPU, (4) while another CPU
 * holds this lock's turn.  The caller decides which waits may be culled
 * (ks_rwlock: untimed read locks only).  Each acquisition is culled at most
 * once, then waits as before: nothing of the lock's state changes.
 *
 * The turn (4): per lock (hashed), the CPU whose threads work it now.  A
 * thread that passes (1)-(3) on the turn's CPU, or finds no turn (none, or
 * none seen for KS_CULL_SHARED_NS), holds it and is not culled; on another
 * CPU it is culled, unless the turn is older than KS_CULL_TENURE_NS: then
 * its CPU takes the turn.  So the lock is worked from one CPU at a time and
 * the CPUs take turns.  The first version had no turn (a thread was culled
 * whenever another bound thread had passed on its CPU): the threads of a
 * shared CPU culled each other while a thread alone on another CPU never
 * was, and with 3 or 4 threads on 2 CPUs the slowest made almost nothing
 * (fairness 0.00 and 0.02 in bench section 7; docs/spin.md, "What it
 * costs").
 *
 * Rule (5) came last: without it, threads that work 100-500 ns between
 * acquisitions still paired within (1) and were culled, which cost up to
 * 20% there (16 threads, 90% reads, 500 ns of work); a thread that spends
 * most of its time outside the lock is not bound by it.  Its measure is a
 * clock read inside the lock, skipped while the thread's own entry in
 * occupancy[] is fresh (see tls_measure).
 *
 * Why still off by default: it sleeps threads on purpose, and the figures
 * that would justify that for every program come from one machine so far
 * (docs/spin.md, "What it costs").
 *
 * occupancy[cpu]: the last thread that passed (1) on that CPU and when, in
 * one word (bits 16-63: ks_now() in units of 1024 ns, modulo 2^48; bits
 * 0-15: a thread id) so a reader never sees a torn pair.  Relaxed: a hint;
 * a stale or lost entry only changes one decision.  Thread ids are 16 bits
 * and wrap: two threads that share one only miss a cull.
 *
 * turn[hash(lock)]: bits 0-15: 1 + the CPU (modulo 65535), bits 16-39: when
 * it took the turn, bits 40-63: when a thread last passed (1)-(3) there
 * (24-bit times in 1024 ns units: they wrap every 17 s, so an entry left
 * that long may look fresh, which costs at most KS_CULL_TENURE_NS of wrong
 * decisions on that lock; a time slightly ahead of the reader's clock
 * counts as now, see turn_ago).  One word, relaxed, a hint like occupancy[]; two
 * locks that hash together share their turns. */
#define CULL_CPUS 256 /* higher CPU numbers fold onto these entries */
static struct {
    uint64_t v;
    char pad[KS_CACHELINE - sizeof(uint64_t)];
} occupancy[CULL_CPUS] __attribute__((aligned(KS_CACHELINE)));
#define CULL_TURNS 64 /* a power of two */
static struct {
    uint64_t v;
    char pad[KS_CACHELINE - sizeof(uint64_t)];
} turn[CULL_TURNS] __attribute__((aligned(KS_CACHELINE)));

/* A lock's entry: its address mixed (the 64-bit finaliser of MurmurHash3)
 * so that locks in an array, whatever their stride, spread over the table. */
static inline unsigned turn_index(const void *lock)
{
    uint64_t h = (uint64_t)(uintptr_t)lock;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return (unsigned)h & (CULL_TURNS - 1);
}
static unsigned cull_next_id;
static KS_TLS unsigned tls_cull_id;    /* 1..65535 once assigned */
/* ks_now() of this thread's last contended acquisition that asked with the
 * cull on (0: none yet, or it was culled) */
static KS_TLS int64_t tls_contended;
/* How long that acquisition took, from its ks_spin_cull_wanted to its
 * ks_spin_cull_acquired (0: not measured, or it has not ended).  Only the
 * acquisition that asked may call ks_spin_cull_acquired: the caller keeps
 * that promise (src/rwlock.c, `asked`). */
static KS_TLS int64_t tls_took;
/* 1: that acquisition is to be measured.  0 when this thread's own id is
 * in its CPU's occupancy[] entry, renewed less than KS_CULL_SHARED_NS / 4
 * ago: it has just passed (1) and (5) there, and its next passes would
 * only renew the entry; the clock is not read inside the lock for that.
 * If another thread passes on the CPU meanwhile, one of our pairs that
 * rule (2) would have culled fails (5) instead: one cull missed, and the
 * next acquisition is measured.  (Taken on every asking acquisition,
 * that read cost 0-23%, median 11% over ten runs, at 90% reads with two
 * threads pinned to two CPUs, where nobody is ever culled: it lengthens
 * contended read holds that the other CPU's writer waits for.  Moved out of
 * the lock instead, to the end of the wait, it culled less at 16 threads
 * and made 6-9% less there, in four runs of a scratch build.) */
static KS_TLS int tls_measure;
static uint64_t cull_count;            /* relaxed: a statistic */
static uint32_t cull_word;             /* never written or woken: a cull ends by its timeout */

#define CULL_UNITS(ns) ((uint64_t)(ns) >> 10 & ((1ull << 48) - 1))

/* Off unless KSYNC_CULL=1 (or on, yes) is in the environment (read once,
 * before main) or ks_spin_cull_set turned it on: with work between
 * acquisitions it can cost more than it saves (docs/spin.md, "What it
 * costs").  relaxed: a switch; a
 * thread that sees it late makes one decision the old way. */
static int cull_on;

__attribute__((constructor)) static void cull_from_env(void)
{
    const char *v = getenv("KSYNC_CULL");
    if (!v || !*v || !strcmp(v, "0") || !strcasecmp(v, "off") || !strcasecmp(v, "no"))
        return;
    if (!strcmp(v, "1") || !strcasecmp(v, "on") || !strcasecmp(v, "yes"))
        __atomic_store_n(&cull_on, 1, __ATOMIC_RELAXED);
    else
        fprintf(stderr, "ksync: KSYNC_CULL=%s: not 0 or 1; the cull stays off\n", v);
}

void ks_spin_cull_set(int on)
{
    __atomic_store_n(&cull_on, !!on, __ATOMIC_RELAXED); /* relaxed: see above */
}

#define TURN_UNITS(ns) ((uint64_t)(ns) >> 10 & 0xffffffu)
/* How long ago, in units, modulo 2^24; a time up to TURN_SLACK units ahead
 * of ours (another thread stored it between our ks_now() and our load)
 * counts as now, not as 17 s ago. */
#define TURN_SLACK 64u
static inline uint64_t turn_ago(uint64_t now_u, uint64_t then_u)
{
    const uint64_t d = (now_u - then_u) & 0xffffffu;
    return d > 0xffffffu - TURN_SLACK ? 0 : d;
}
#define TURN(cpu1, since_u, seen_u) ((uint64_t)(cpu1) | (uint64_t)(since_u) << 16 | (uint64_t)(seen_u) << 40)
#define TURN_CPU(v) ((unsigned)((v) & 0xffffu))
#define TURN_SINCE(v) ((v) >> 16 & 0xffffffu)
#define TURN_SEEN(v) ((v) >> 40)

void ks_spin_cull_acquired_at(int64_t now)
{
    if (tls_contended && now >= tls_contended)
        tls_took = now - tls_contended;
}

int64_t ks_spin_cull_took(void)
{
    return tls_took;
}

void ks_spin_cull_acquired(void)
{
    /* relaxed: a switch (see cull_on).  The clock is read only with the
     * cull on, and only by acquisitions that asked ks_spin_cull_wanted
     * (the caller's promise, see tls_took). */
    if (tls_measure && tls_contended && __atomic_load_n(&cull_on, __ATOMIC_RELAXED))
        ks_spin_cull_acquired_at(ks_now());
}

int ks_spin_cull_decide(int64_t now, int cpu, const void *lock)
{
    const int64_t prev = tls_contended, took = tls_took;
    tls_contended = now;
    tls_took = 0;
    tls_measure = 0;
    if (cpu < 0 || !__atomic_load_n(&cull_on, __ATOMIC_RELAXED) || ks_usable_cpus() <= 1) /* relaxed: a switch */
        return 0;
    uint64_t *e = &occupancy[(unsigned)cpu % CULL_CPUS].v;
    /* relaxed (both): a hint, see above.  A load and a store, not one RMW:
     * a racing thread's entry may be lost, which only changes a decision. */
    const uint64_t old = __atomic_load_n(e, __ATOMIC_RELAXED);
    const uint64_t ago = (CULL_UNITS(now) - (old >> 16)) & ((1ull << 48) - 1); /* wraps with the units */
    /* Measure this acquisition unless our own entry here is fresh (see
     * tls_measure): then our pairs fail (5) from the next but one, until
     * the entry is KS_CULL_SHARED_NS / 4 old; the first pair after that
     * renews it.  So the entry of a CPU where one lock-bound thread runs
     * alone never gets older than about KS_CULL_SHARED_NS / 4, and rule
     * (2) still sees that thread for the next one scheduled there. */
    tls_measure = !tls_cull_id || (old & 0xffffu) != tls_cull_id || ago > CULL_UNITS(KS_CULL_SHARED_NS) / 4;
    /* (1) and (5): a pair, the first of which took its share of the time */
    if (prev == 0 || now - prev > KS_CULL_PAIR_NS || now < prev || took * KS_CULL_SHARE < now - prev)
        return 0;
    if (KS_UNLIKELY(!tls_cull_id)) /* relaxed: only tells threads apart */
        tls_cull_id = __atomic_fetch_add(&cull_next_id, 1, __ATOMIC_RELAXED) % 0xffffu + 1;
    __atomic_store_n(e, CULL_UNITS(now) << 16 | tls_cull_id, __ATOMIC_RELAXED);
    if (old == 0 || (old & 0xffffu) == tls_cull_id)
        return 0;
    if (ago > CULL_UNITS(KS_CULL_SHARED_NS))
        return 0;
    /* (4), the turn.  relaxed (all): a hint, as occupancy[]; a lost store
     * gives one CPU a turn it did not take, or one cull too few. */
    uint64_t *tp = &turn[turn_index(lock)].v;
    const uint64_t t = __atomic_load_n(tp, __ATOMIC_RELAXED), u = TURN_UNITS(now);
    const unsigned me = (unsigned)cpu % 0xffffu + 1;
    if (t == 0 || turn_ago(u, TURN_SEEN(t)) > TURN_UNITS(KS_CULL_SHARED_NS) ||
        (TURN_CPU(t) != me && turn_ago(u, TURN_SINCE(t)) > TURN_UNITS(KS_CULL_TENURE_NS))) {
        __atomic_store_n(tp, TURN(me, u, u), __ATOMIC_RELAXED); /* nobody's, or over: take it */
        return 0;
    }
    if (TURN_CPU(t) != me)
        return 1;
    /* Ours: say we are still here, at most once per 16 units (16 us), to
     * keep the line in this CPU's cache. */
    if (turn_ago(u, TURN_SEEN(t)) > 16)
        __atomic_store_n(tp, TURN(me, TURN_SINCE(t), u), __ATOMIC_RELAXED);
    return 0;
}

int ks_spin_cull_wanted(const void *lock)
{
    /* Off (the default): no clock read, no CPU number (they were paid by
     * every contended untimed read lock, cull or not, until the review of
     * rule (5)).  relaxed: a switch, see cull_on. */
    if (!__atomic_load_n(&cull_on, __ATOMIC_RELAXED))
        return 0;
    return ks_spin_cull_decide(ks_now(), sched_getcpu(), lock);
}

void ks_spin_cull(int64_t deadline)
{
    const int64_t now = ks_now();
    const int64_t until = deadline < now + KS_CULL_NS ? deadline : now + KS_CULL_NS;
    if (until <= now)
        return;
    __atomic_fetch_add(&cull_count, 1, __ATOMIC_RELAXED); /* relaxed: a statistic */
    /* Private, not a cancellation point, ends by its timeout (or a signal:
     * the acquisition then just goes on). */
    ks_futex_wait(&cull_word, 0, until, 0);
    /* Two new contended acquisitions before the next cull: with the first
     * one counted from here, a thread woken into a busy lock was culled
     * again at once, and the culls kept falling on the same threads. */
    tls_contended = 0; /* (and so no pair: tls_took is not looked at) */
}

uint64_t ks_spin_culls(void)
{
    return __atomic_load_n(&cull_count, __ATOMIC_RELAXED); /* relaxed: a statistic */
}


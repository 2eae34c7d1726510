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
 *   timed out, error: nothing learned
 *
 * So a hand-off whose wake-ups are slow (a vCPU woken in tens of us) moves
 * its threads into the spinning state after one or two slow round trips and
 * stays there, while a waiter whose partner answers after a millisecond
 * drops to the floor within a few waits (1/2, 1/4, ... of the cap).  No spin exceeds KS_SPIN_CAP_NS.
 *
 * When not to spin at all: with one usable CPU (the thread waited for
 * cannot run while we spin), and when usable CPUs - 1 threads of the
 * process are already spinning (one CPU stays for the threads doing the
 * work: with 17 threads on 2 CPUs, two spinners took both CPUs from the
 * thread each of them waited for).  The spinner count is one counter on
 * its own line, touched only by waits that missed their fast path.
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
#include <string.h>
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
 * Ticks per ns, a double kept in a uint64_t so that one relaxed atomic
 * access moves it whole; 0 until calibrated.  Relaxed: a self-contained
 * number that racing calibrations compute alike; nothing is published with
 * it.  (A double rather than fixed point: a 25 MHz cntvct_el0 and a 4 GHz
 * TSC both fit, with no 128-bit arithmetic for 32-bit targets to lack.) */
static uint64_t tick_scale_bits;

static int64_t clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * KS_NSEC_PER_SEC + ts.tv_nsec;
}

/* Count ticks over 50 us of CLOCK_MONOTONIC, once per process (a thread
 * that races the first one measures too and stores about the same figure).
 * The window is busy on purpose: sleeping would measure the scheduler. */
static __attribute__((noinline)) double calibrate(void)
{
    const int64_t window = 50000;
    int64_t t0 = clock_ns(), t1;
    uint64_t k0 = ks_ticks(), k1;
    do {
        ks_cpu_relax();
        t1 = clock_ns();
        k1 = ks_ticks();
    } while (t1 - t0 < window);
    double s = k1 > k0 ? (double)(k1 - k0) / (double)(t1 - t0) : 0;
    if (!(s > 0))
        s = 1; /* a counter that did not move: treat ticks as ns */
    uint64_t bits;
    memcpy(&bits, &s, sizeof bits);
    __atomic_store_n(&tick_scale_bits, bits, __ATOMIC_RELAXED);
    return s;
}

static inline double scale(void)
{
    uint64_t bits = __atomic_load_n(&tick_scale_bits, __ATOMIC_RELAXED);
    if (KS_UNLIKELY(!bits))
        return calibrate();
    double s;
    memcpy(&s, &bits, sizeof s);
    return s;
}

uint64_t ks_spin_ns_to_ticks(uint64_t ns)
{
    return (uint64_t)((double)ns * scale());
}

uint64_t ks_spin_ticks_to_ns(uint64_t ticks)
{
    return (uint64_t)((double)ticks / scale());
}

/* ---- the policy ---- */

/* Threads of this process inside a spin, in one word with the low half of
 * the process's fork generation (src/thread.c): a fork child, of any kind
 * (_Fork and clone run no atfork handler), inherits the count of threads
 * that spun in its parent and do not exist in it; the first spin in the
 * child sees another generation and starts the count afresh, and a spin
 * begun in the parent is not taken off the child's count.  Relaxed
 * everywhere: a heuristic count, it orders nothing. */
static struct {
    uint64_t word; /* generation << 32 | spinners */
} __attribute__((aligned(KS_CACHELINE))) spinners;

#define COUNT(w) ((uint32_t)(w))
#define GEN(w) ((uint32_t)((w) >> 32))

/* Take a place if fewer than `most` spin; returns the generation's tag
 * (never 0) or 0 when no place is free. */
static uint32_t take_place(int most, uint64_t *w)
{
    uint32_t gen = (uint32_t)ks_process_gen() | 1u;
    uint64_t nw;
    do {
        if (GEN(*w) != gen)
            nw = (uint64_t)gen << 32 | 1u; /* another image's count: start afresh */
        else if (COUNT(*w) >= (uint32_t)most)
            return 0;
        else
            nw = *w + 1;
    } while (!__atomic_compare_exchange_n(&spinners.word, w, nw, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return gen;
}

/* Budget in ns per thread and site; 0 = not yet used by this thread. */
static KS_TLS uint32_t tls_budget[KS_SPIN_SITES];

uint32_t ks_spin_budget_ns(unsigned site)
{
    uint32_t b = tls_budget[site];
    return b ? b : KS_SPIN_START_NS;
}

void ks_spin_set_budget_ns(unsigned site, uint32_t ns)
{
    tls_budget[site] = ns < KS_SPIN_FLOOR_NS ? KS_SPIN_FLOOR_NS : ns > KS_SPIN_CAP_NS ? KS_SPIN_CAP_NS : ns;
}

int ks_spin_begin(struct ks_spin *sp, unsigned site)
{
    sp->site = site;
    sp->spinning = 0;
    sp->start = ks_ticks();
    sp->stop = sp->start;
    const int cpus = ks_usable_cpus();
    if (cpus <= 1)
        return 0;
    /* One CPU stays free of spinners for the threads that do the work.  A
     * spinner about to leave (its partner has just answered, and this
     * thread is that partner, now waiting in turn) frees its place within
     * a few hundred ns: wait up to KS_SPIN_GRACE_NS for a place. */
    const int most = cpus - 1;
    uint64_t w = __atomic_load_n(&spinners.word, __ATOMIC_RELAXED);
    uint32_t tag = take_place(most, &w);
    if (!tag) {
        const uint64_t until = sp->start + ks_spin_ns_to_ticks(KS_SPIN_GRACE_NS);
        do {
            ks_cpu_relax();
            w = __atomic_load_n(&spinners.word, __ATOMIC_RELAXED);
        } while (!(tag = take_place(most, &w)) && ks_ticks() < until);
        if (!tag)
            return 0;
    }
    sp->spinning = tag;
    sp->stop = sp->start + ks_spin_ns_to_ticks(ks_spin_budget_ns(site));
    return 1;
}

void ks_spin_end(struct ks_spin *sp)
{
    if (sp->spinning) {
        uint64_t w = __atomic_load_n(&spinners.word, __ATOMIC_RELAXED);
        /* relaxed: as above; a count of another generation is not ours */
        while (GEN(w) == (uint32_t)sp->spinning && COUNT(w) &&
               !__atomic_compare_exchange_n(&spinners.word, &w, w - 1, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            ;
        sp->spinning = 0;
    }
}

void ks_spin_won(struct ks_spin *sp)
{
    ks_spin_end(sp);
    uint64_t now = ks_ticks();
    uint64_t t = now > sp->start ? ks_spin_ticks_to_ns(now - sp->start) : 0;
    uint32_t b = ks_spin_budget_ns(sp->site);
    if (t < b / 4)
        ks_spin_set_budget_ns(sp->site, b - b / 16);
}

void ks_spin_waited(struct ks_spin *sp)
{
    ks_spin_end(sp);
    uint64_t now = ks_ticks();
    /* A thread that moved to a CPU whose counter lags sees now < start:
     * learn nothing from that wait. */
    if (now <= sp->start)
        return;
    uint64_t w = ks_spin_ticks_to_ns(now - sp->start);
    uint32_t b = ks_spin_budget_ns(sp->site);
    if (w > KS_SPIN_CAP_NS)
        ks_spin_set_budget_ns(sp->site, b / 2); /* no spin could have covered it */
    else if (w + w / 4 > b)
        ks_spin_set_budget_ns(sp->site, (uint32_t)(w + w / 4)); /* set_budget caps it */
}

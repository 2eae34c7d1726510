/* tests/test_spin.c - the spin-then-park policy (src/spin.c, docs/spin.md).
 *
 * White-box: the learning rule is driven with made-up waits (a ks_spin whose
 * start lies a chosen time in the past), so each rule is checked exactly,
 * whatever the machine is doing.  Then the CPU guards the policy must keep
 * on a real machine: a thread blocked for a second burns under 1% of a CPU,
 * and a waiter whose partner answers after 1 ms burns under 10% of a CPU
 * while it waits, for every blocking primitive.  Those measure thread CPU
 * time, which a loaded machine does not inflate (a preempted spinner is not
 * charged), so they hold on the 2-core CI machine running tests in parallel.
 */
#include "helpers.h"

#include "internal.h"

#include <stdatomic.h>

/* A wait that began `ns` ago at `site`, not counted as a spinner. */
static struct ks_spin waited_for(unsigned site, uint64_t ns)
{
    struct ks_spin sp = {0};
    sp.site = site;
    uint64_t ago = ks_spin_ns_to_ticks(ns); /* calibrates first, if needed */
    sp.start = ks_ticks() - ago;
    return sp;
}

static void near(uint32_t got, uint32_t want, const char *what)
{
    uint32_t slack = want / 50 + 200; /* the tick scale rounds */
    cr_assert(got + slack >= want && got <= want + slack, "%s: budget %u ns, expected about %u", what,
              got, want);
}

/* Feed `site` one made-up wait of `ns` that was won (or not) and return the
 * budget after it.  A preemption between making the wait up and learning
 * from it would lengthen the wait the policy sees; such an attempt is
 * undone (the budget put back) and made again. */
static uint32_t learn(unsigned site, uint64_t ns, int won)
{
    const uint32_t before = ks_spin_budget_ns(site);
    const unsigned misses = ks_spin_misses(site);
    for (int attempt = 0; attempt < 100; attempt++) {
        int64_t t0 = ks_now();
        struct ks_spin sp = waited_for(site, ns);
        if (won)
            ks_spin_won(&sp);
        else
            ks_spin_waited(&sp);
        if (ks_now() - t0 < 2000)
            return ks_spin_budget_ns(site);
        ks_spin_set_budget_ns(site, before);
        ks_spin_set_misses(site, misses);
    }
    cr_assert_fail("100 attempts were preempted");
    return 0;
}

Test(spin, the_tick_scale_agrees_with_the_monotonic_clock)
{
    for (int attempt = 0;; attempt++) {
        int64_t t0 = ks_now();
        uint64_t k0 = ks_ticks();
        kt_sleep_ns(20 * KT_MS);
        uint64_t k1 = ks_ticks();
        int64_t t1 = ks_now();
        double clock = (double)(t1 - t0), ticks = (double)ks_spin_ticks_to_ns(k1 - k0);
        double err = ticks > clock ? ticks / clock - 1 : clock / ticks - 1;
        if (err < 0.02)
            break;
        /* a preemption between the two reads of a pair skews one attempt */
        cr_assert_lt(attempt, 5, "ticks say %.0f ns, CLOCK_MONOTONIC %.0f ns", ticks, clock);
    }
    uint64_t one_ms = ks_spin_ns_to_ticks(1000000);
    cr_assert_gt(one_ms, 0);
    near((uint32_t)ks_spin_ticks_to_ns(one_ms), 1000000, "1 ms there and back");
}

Test(spin, a_first_budget_is_the_start_value_and_stays_within_floor_and_cap)
{
    for (unsigned s = 0; s < KS_SPIN_SITES; s++)
        cr_assert_eq(ks_spin_budget_ns(s), KS_SPIN_START_NS);
    ks_spin_set_budget_ns(KS_SPIN_SEM, 1);
    cr_assert_eq(ks_spin_budget_ns(KS_SPIN_SEM), KS_SPIN_FLOOR_NS);
    ks_spin_set_budget_ns(KS_SPIN_SEM, UINT32_MAX);
    cr_assert_eq(ks_spin_budget_ns(KS_SPIN_SEM), KS_SPIN_CAP_NS);
    cr_assert_eq(ks_spin_budget_ns(KS_SPIN_MUTEX), KS_SPIN_START_NS, "sites are separate");
}

Test(spin, a_wait_the_spin_missed_by_a_little_lengthens_the_next_spin)
{
    near(learn(KS_SPIN_EVENT, 30000, 0), 37500, "after a 30 us wait");
    /* a shorter wait never shortens it */
    near(learn(KS_SPIN_EVENT, 5000, 0), 37500, "after a 5 us wait");
    /* nor does a wait longer than the cap lengthen it past the cap */
    cr_assert_eq(learn(KS_SPIN_EVENT, KS_SPIN_CAP_NS - 1000, 0), KS_SPIN_CAP_NS);
}

Test(spin, at_a_lock_waits_no_spin_covers_four_times_in_a_row_halve_the_budget_but_for_probes)
{
    (void)ks_spin_ns_to_ticks(1); /* calibrate first: learn() retries a preempted attempt */
    /* three uncovered waits of 40 us lengthen the spin to 50 us as before */
    for (unsigned i = 1; i < KS_SPIN_MISSES; i++) {
        near(learn(KS_SPIN_SEM, 40000, 0), 50000, "an uncovered 40 us wait");
        cr_assert_eq(ks_spin_misses(KS_SPIN_SEM), i);
    }
    /* the fourth in a row, and each after it, halves: longer spins did not
     * help; but one in KS_SPIN_PROBE of those is a probe that lengthens as
     * before */
    near(learn(KS_SPIN_SEM, 40000, 0), 25000, "the fourth uncovered wait in a row");
    near(learn(KS_SPIN_SEM, 40000, 0), 12500, "the fifth");
    near(learn(KS_SPIN_SEM, 40000, 0), 6250, "the sixth");
    uint32_t prev = ks_spin_budget_ns(KS_SPIN_SEM);
    for (unsigned i = KS_SPIN_MISSES + 3; i < KS_SPIN_MISSES + KS_SPIN_PROBE - 1; i++) {
        uint32_t b = learn(KS_SPIN_SEM, 40000, 0);
        cr_assert_eq(b, prev / 2 < KS_SPIN_FLOOR_NS ? KS_SPIN_FLOOR_NS : prev / 2, "uncovered wait %u in a row", i);
        prev = b;
    }
    cr_assert_eq(prev, KS_SPIN_FLOOR_NS);
    near(learn(KS_SPIN_SEM, 40000, 0), 50000, "the probe");
    cr_assert_eq(ks_spin_misses(KS_SPIN_SEM), KS_SPIN_MISSES + KS_SPIN_PROBE - 1);
    near(learn(KS_SPIN_SEM, 40000, 0), 25000, "the wait after the probe");
    cr_assert_eq(ks_spin_misses(KS_SPIN_SEM), KS_SPIN_MISSES, "the count goes round");
    /* the floor is no trap: the probe comes every KS_SPIN_PROBE waits */
    for (int i = 0; i < 10; i++)
        learn(KS_SPIN_SEM, 40000, 0);
    unsigned first = 0, second = 0;
    for (unsigned i = 1; i <= 2 * KS_SPIN_PROBE && !second; i++)
        if (learn(KS_SPIN_SEM, 40000, 0) > 40000) {
            if (first)
                second = i;
            else
                first = i;
        }
    cr_assert(first && second - first == KS_SPIN_PROBE, "probes at uncovered waits %u and %u", first, second);
    /* a probe that falls on a wait beyond the cap still lengthens, to
     * 1.25 x the longest wait within the cap since the last win: a partner
     * whose answers alternate could otherwise put every probe on such a wait */
    ks_spin_set_misses(KS_SPIN_SEM, KS_SPIN_MISSES + KS_SPIN_PROBE - 2);
    ks_spin_set_budget_ns(KS_SPIN_SEM, KS_SPIN_FLOOR_NS);
    near(learn(KS_SPIN_SEM, KS_SPIN_CAP_NS + 20000, 0), 50000, "a probe on a wait beyond the cap");
    cr_assert_eq(ks_spin_misses(KS_SPIN_SEM), KS_SPIN_MISSES + KS_SPIN_PROBE - 1);
    /* a win starts the count again, and the next uncovered wait lengthens */
    learn(KS_SPIN_SEM, 5000, 1);
    cr_assert_eq(ks_spin_misses(KS_SPIN_SEM), 0u);
    near(learn(KS_SPIN_SEM, 40000, 0), 50000, "after a win");
    /* other sites keep their own count */
    cr_assert_eq(ks_spin_misses(KS_SPIN_EVENT), 0u);
    /* a hand-off site counts too, but keeps lengthening (docs/spin.md) */
    for (unsigned i = 0; i < KS_SPIN_MISSES + 2; i++)
        near(learn(KS_SPIN_EVENT, 40000, 0), 50000, "an uncovered 40 us wait at the event site");
    cr_assert_geq(ks_spin_misses(KS_SPIN_EVENT), KS_SPIN_MISSES);
    ks_spin_set_misses(KS_SPIN_SITES, 3);
    cr_assert_eq(ks_spin_misses(KS_SPIN_SITES), 0u);
}

Test(spin, a_partner_that_was_away_halves_the_budget_down_to_the_floor)
{
    ks_spin_set_budget_ns(KS_SPIN_COND, KS_SPIN_CAP_NS);
    uint32_t prev = KS_SPIN_CAP_NS;
    for (int i = 0; i < 10; i++) {
        uint32_t b = learn(KS_SPIN_COND, KS_SPIN_CAP_NS + 1000, 0);
        cr_assert_eq(b, prev / 2 < KS_SPIN_FLOOR_NS ? KS_SPIN_FLOOR_NS : prev / 2);
        prev = b;
    }
    cr_assert_eq(prev, KS_SPIN_FLOOR_NS);
}

Test(spin, fast_wins_decay_the_budget_slowly_and_slow_wins_keep_it)
{
    ks_spin_set_budget_ns(KS_SPIN_MUTEX, 32000);
    near(learn(KS_SPIN_MUTEX, 100, 1), 30000, "after one fast win");
    ks_spin_set_budget_ns(KS_SPIN_MUTEX, 32000);
    cr_assert_eq(learn(KS_SPIN_MUTEX, 20000, 1), 32000, "a win that used most of the budget keeps it");
    for (int i = 0; i < 200; i++)
        learn(KS_SPIN_MUTEX, 0, 1);
    cr_assert_eq(ks_spin_budget_ns(KS_SPIN_MUTEX), KS_SPIN_FLOOR_NS);
}

/* The place tests hold spins open with the cap's budget, so their leases
 * last 100 us; an attempt that took longer than half of that (a preemption
 * on a loaded machine) proves nothing and is made again. */
#define PLACE_ATTEMPT_NS 50000
#define MOST_PLACES(cpus) ((cpus) > 1 ? ((cpus) - 1 < 64 ? (cpus) - 1 : 64) : 0)

/* Begin a spin and go past its free first microsecond at once: 1 if it
 * then holds a spinner place (and may go on spinning). */
static int begin_held(struct ks_spin *sp, unsigned site)
{
    if (!ks_spin_begin(sp, site))
        return 0;
    sp->stop = sp->start; /* the free part is over */
    return ks_spin_more(sp) && sp->place != 0;
}

Test(spin, the_first_microsecond_needs_no_spinner_place)
{
    struct ks_spin sp;
    ks_spin_set_budget_ns(KS_SPIN_MUTEX, KS_SPIN_CAP_NS);
    int began = ks_spin_begin(&sp, KS_SPIN_MUTEX);
    cr_assert_eq(began, ks_usable_cpus() > 1);
    cr_assert_eq(sp.place, 0u, "a spin took a place before its free part ended");
    if (began) {
        cr_assert_gt(sp.until, sp.stop, "the rest of the budget waits for a place");
        cr_assert_leq(ks_spin_ticks_to_ns(sp.stop - sp.start), KS_SPIN_FREE_NS + 1);
    }
    ks_spin_end(&sp);
    /* A deadline already past: the free part only. */
    cr_assert_eq(ks_spin_begin(&sp, KS_SPIN_MUTEX), began);
    ks_spin_clip(&sp, 0);
    cr_assert_eq(sp.until, 0u);
    ks_spin_end(&sp);
}

/* ---- deferring to the holder (src/spin.c, docs/spin.md) ---- */

Test(spin, a_deferral_doubles_when_the_holder_retakes_and_decays_to_zero_when_it_does_not)
{
    ks_spin_defer_set(KS_SPIN_MUTEX, 0);
    const uint32_t up[] = {2 * KS_DEFER_FLOOR_NS, 4 * KS_DEFER_FLOOR_NS, 8 * KS_DEFER_FLOOR_NS, KS_DEFER_CAP_NS,
                           KS_DEFER_CAP_NS};
    for (unsigned i = 0; i < sizeof up / sizeof up[0]; i++) {
        ks_spin_deferred(KS_SPIN_MUTEX, 1);
        cr_assert_eq(ks_spin_defer_get(KS_SPIN_MUTEX), up[i], "retaken #%u: %u ns, expected %u", i + 1,
                     ks_spin_defer_get(KS_SPIN_MUTEX), up[i]);
    }
    /* still free: an eighth less each time, then 0 below the floor */
    uint32_t d = KS_DEFER_CAP_NS;
    int steps = 0;
    while (d) {
        ks_spin_deferred(KS_SPIN_MUTEX, 0);
        uint32_t want = d - d / 8 < KS_DEFER_FLOOR_NS ? 0 : d - d / 8;
        d = ks_spin_defer_get(KS_SPIN_MUTEX);
        cr_assert_eq(d, want, "still free #%d: %u ns, expected %u", steps + 1, d, want);
        cr_assert_lt(++steps, 40, "the deferral does not reach 0");
    }
    cr_assert_geq(steps, 10, "the deferral fell from the cap to 0 in %d steps: not a slow decay", steps);
    /* other sites keep their own */
    ks_spin_defer_set(KS_SPIN_RWLOCK_WRITE, 0);
    ks_spin_deferred(KS_SPIN_MUTEX, 1);
    cr_assert_eq(ks_spin_defer_get(KS_SPIN_RWLOCK_WRITE), 0u);
    /* a site out of range is ignored, not written past the array */
    ks_spin_deferred(KS_SPIN_SITES, 1);
    ks_spin_defer_set(KS_SPIN_SITES, 500);
    cr_assert_eq(ks_spin_defer_get(KS_SPIN_SITES), 0u);
    cr_assert_eq(ks_spin_defer_ns(KS_SPIN_SITES), 0u);
    ks_spin_defer_set(KS_SPIN_MUTEX, UINT32_MAX);
    cr_assert_eq(ks_spin_defer_get(KS_SPIN_MUTEX), KS_DEFER_CAP_NS);
    ks_spin_defer_set(KS_SPIN_MUTEX, 0);
}

Test(spin, at_zero_one_free_sighting_in_sixteen_still_defers_by_the_floor)
{
    ks_spin_defer_set(KS_SPIN_MUTEX, 0);
    int probes = 0;
    for (unsigned i = 0; i < 4 * KS_DEFER_PROBE; i++) {
        uint32_t d = ks_spin_defer_ns(KS_SPIN_MUTEX);
        cr_assert(d == 0 || d == KS_DEFER_FLOOR_NS, "sighting %u: %u ns", i, d);
        probes += d != 0;
    }
    cr_assert_eq(probes, 4, "%d probes in %u sightings", probes, 4 * KS_DEFER_PROBE);
    ks_spin_defer_set(KS_SPIN_MUTEX, 600);
    for (int i = 0; i < 20; i++)
        cr_assert_eq(ks_spin_defer_ns(KS_SPIN_MUTEX), 600u);
    ks_spin_defer_set(KS_SPIN_MUTEX, 0);
}

Test(spin, a_deferral_waits_its_time_and_ends_with_the_spin)
{
    struct ks_spin sp;
    const uint32_t before = ks_spin_budget_ns(KS_SPIN_MUTEX);
    ks_spin_set_budget_ns(KS_SPIN_MUTEX, KS_SPIN_CAP_NS);
    /* A deferral of 1 us inside a budget of 100 us goes on to its end; a
     * preemption in between can use the budget up, so a few attempts. */
    int whole = ks_usable_cpus() <= 1;
    for (int attempt = 0; attempt < 20 && !whole; attempt++) {
        cr_assert_eq(ks_spin_begin(&sp, KS_SPIN_MUTEX), 1);
        cr_assert_eq(sp.clipped, 0u);
        int64_t t0 = ks_now();
        int r = ks_spin_defer(&sp, KS_DEFER_CAP_NS);
        int64_t took = ks_now() - t0;
        ks_spin_end(&sp);
        cr_assert_geq(took, (int64_t)KS_DEFER_CAP_NS * 9 / 10, "the deferral took %lld ns", (long long)took);
        whole = r == 1;
    }
    cr_assert(whole, "a deferral inside the budget ended the spin, 20 times");
    ks_spin_set_budget_ns(KS_SPIN_MUTEX, before);
    /* a deadline already past clips the spin and forbids deferring */
    if (ks_spin_begin(&sp, KS_SPIN_MUTEX)) {
        ks_spin_clip(&sp, KS_FOREVER);
        cr_assert_eq(sp.clipped, 0u);
        ks_spin_clip(&sp, 0);
        cr_assert_eq(sp.clipped, 1u);
        ks_spin_end(&sp);
    }
    /* a spin with nothing left: the deferral ends at once and says so */
    memset(&sp, 0, sizeof sp);
    sp.start = sp.stop = ks_ticks();
    int64_t t0 = ks_now();
    cr_assert_eq(ks_spin_defer(&sp, KS_DEFER_CAP_NS), 0);
    cr_assert_lt(ks_now() - t0, 50 * KT_MS);
}

/* A timed wait's spin ends at its deadline (ks_spin_clip): with a budget of
 * KS_SPIN_CAP_NS, a deadline 50 us away leaves at most 50 us of spin, not
 * 100, and the wait after such a spin teaches the budget nothing. */
Test(spin, a_timed_spin_ends_at_its_deadline)
{
    struct ks_spin sp;
    const uint32_t before = ks_spin_budget_ns(KS_SPIN_MUTEX);
    ks_spin_set_budget_ns(KS_SPIN_MUTEX, KS_SPIN_CAP_NS);
    if (!ks_spin_begin(&sp, KS_SPIN_MUTEX)) {
        ks_spin_set_budget_ns(KS_SPIN_MUTEX, before);
        return; /* one usable CPU: no spin to clip */
    }
    const uint64_t stop = sp.stop, until = sp.until;
    cr_assert_gt(until, stop, "a budget of the cap goes past the free part");
    ks_spin_clip(&sp, KS_FOREVER);
    cr_assert(sp.stop == stop && sp.until == until && !sp.clipped, "KS_FOREVER clipped the spin");
    ks_spin_clip(&sp, ks_now() + 1000 * KT_MS); /* a second away: beyond the budget */
    cr_assert(sp.stop == stop && sp.until == until && !sp.clipped, "a far deadline clipped the spin");
    cr_assert_eq(sp.cut, 0u);
    /* 50 us away; measured from before the spin began, so that a preemption
     * here cannot make the bound wrong */
    const int64_t t0 = ks_now() - (int64_t)ks_spin_ticks_to_ns(ks_ticks() - sp.start);
    const int64_t dl = ks_now() + 50000;
    ks_spin_clip(&sp, dl);
    const uint64_t end = sp.until ? sp.until : sp.stop;
    cr_assert_leq((int64_t)ks_spin_ticks_to_ns(end - sp.start), dl - t0 + 1000,
                  "a spin of %llu ns for a deadline %lld ns away",
                  (unsigned long long)ks_spin_ticks_to_ns(end - sp.start), (long long)(dl - t0));
    cr_assert_leq(sp.stop, stop);
    if (sp.clipped) { /* preempted past the deadline before the clip: nothing more to see */
        ks_spin_end(&sp);
        ks_spin_set_budget_ns(KS_SPIN_MUTEX, before);
        return;
    }
    cr_assert_eq(sp.cut, 1u);
    /* a spin its deadline ended teaches the budget nothing: a wait after it
     * (here 0 ns, or whatever the preemptions made it) neither counts as a
     * miss nor moves the budget */
    ks_spin_set_misses(KS_SPIN_MUTEX, KS_SPIN_MISSES - 1);
    ks_spin_waited(&sp);
    cr_assert_eq(ks_spin_misses(KS_SPIN_MUTEX), KS_SPIN_MISSES - 1, "a cut spin counted a miss");
    cr_assert_eq(ks_spin_budget_ns(KS_SPIN_MUTEX), KS_SPIN_CAP_NS, "a cut spin moved the budget to %u ns",
                 ks_spin_budget_ns(KS_SPIN_MUTEX));
    ks_spin_set_misses(KS_SPIN_MUTEX, 0);
    ks_spin_set_budget_ns(KS_SPIN_MUTEX, before);
}

struct hold_arg {
    ks_mutex_t m;
    atomic_int held, done;
};

static void *hold_mutex_until_done(void *p)
{
    struct hold_arg *h = p;
    ks_mutex_lock(&h->m);
    atomic_store(&h->held, 1);
    while (!atomic_load(&h->done))
        kt_sleep_ns(KT_MS);
    ks_mutex_unlock(&h->m);
    return NULL;
}

/* The same through ks_mutex_timedlock: against a holder that keeps the
 * mutex until the tries are over, a thread whose budget is the cap (100 us)
 * gives up about at its deadline, 5 us away, not after spinning its budget
 * (the median of 15 tries, with a margin for a loaded machine). */
Test(spin, a_timed_lock_gives_up_at_its_deadline_not_after_its_spin, .timeout = 60)
{
    if (ks_usable_cpus() < 2)
        return; /* no spin at all with one usable CPU */
    static struct hold_arg h;
    cr_assert_eq(ks_mutex_init(&h.m, 0), 0);
    pthread_t t;
    kt_spawn(&t, hold_mutex_until_done, &h);
    while (!atomic_load(&h.held))
        sched_yield();
    int64_t late[15];
    for (int i = 0; i < 15; i++) {
        ks_spin_set_budget_ns(KS_SPIN_MUTEX, KS_SPIN_CAP_NS);
        const int64_t dl = ks_now() + 5000;
        cr_assert_eq(ks_mutex_timedlock(&h.m, dl), ETIMEDOUT);
        late[i] = ks_now() - dl;
    }
    atomic_store(&h.done, 1);
    kt_join(t);
    cr_assert_eq(ks_mutex_destroy(&h.m), 0);
    for (int i = 1; i < 15; i++) /* insertion sort: the median */
        for (int j = i; j > 0 && late[j] < late[j - 1]; j--) {
            int64_t x = late[j];
            late[j] = late[j - 1];
            late[j - 1] = x;
        }
    cr_assert_lt(late[7], 50000, "timed locks with a 5 us deadline returned a median %lld ns after it",
                 (long long)late[7]);
}

struct defer_arg {
    ks_mutex_t *m;
    atomic_int phase; /* 1: the helper holds m; 2: main is about to lock */
    int64_t hold_ns;  /* how long the helper holds after phase 2 */
    int relock;       /* the helper takes m again at once, for relock_ns */
    int64_t relock_ns;
    int cpu; /* the helper's CPU, or -1 */
};

/* Two CPUs main and the helper may use, or -1 if there are not two. */
static void two_cpus(int *c0, int *c1)
{
    cpu_set_t s;
    *c0 = *c1 = -1;
    if (sched_getaffinity(0, sizeof s, &s) != 0)
        return;
    for (int c = 0; c < CPU_SETSIZE && *c1 < 0; c++)
        if (CPU_ISSET(c, &s))
            *(*c0 < 0 ? c0 : c1) = c;
}

static void pin_self(int cpu)
{
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

static void *defer_helper(void *p)
{
    struct defer_arg *a = p;
    if (a->cpu >= 0)
        pin_self(a->cpu);
    ks_mutex_lock(a->m);
    atomic_store(&a->phase, 1);
    while (atomic_load(&a->phase) != 2)
        ;
    int64_t t0 = ks_now();
    while (ks_now() - t0 < a->hold_ns)
        ;
    ks_mutex_unlock(a->m);
    t0 = ks_now();
    /* Retaking: each hold lasts about 500 ns, the gap between two holds a
     * few ns, so the look after a deferral most often finds the mutex held
     * (with an empty hold it found it free 91-94% of the time). */
    while (a->relock && ks_now() - t0 < a->relock_ns) {
        ks_mutex_lock(a->m);
        int64_t h = ks_now();
        while (ks_now() - h < 500)
            ;
        ks_mutex_unlock(a->m);
    }
    return NULL;
}

/* One attempt: main locks the mutex the helper holds; returns main's
 * deferral after it got the mutex. */
static uint32_t defer_after(uint32_t start_ns, int relock)
{
    ks_mutex_t m;
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    /* Main and the helper on two different CPUs: on a loaded machine the
     * scheduler could keep both on one, where main never sees the helper
     * retake the mutex while it defers (14 failures in 400 runs beside two
     * busy loops, 2026-12-05, before they were pinned). */
    int c0, c1;
    cpu_set_t was;
    two_cpus(&c0, &c1);
    const int pinned = c1 >= 0 && sched_getaffinity(0, sizeof was, &was) == 0;
    if (pinned)
        pin_self(c0);
    struct defer_arg a = {
        .m = &m, .hold_ns = 20000, .relock = relock, .relock_ns = 2 * KT_MS, .cpu = pinned ? c1 : -1};
    const uint32_t budget = ks_spin_budget_ns(KS_SPIN_MUTEX);
    ks_spin_set_budget_ns(KS_SPIN_MUTEX, KS_SPIN_CAP_NS);
    ks_spin_defer_set(KS_SPIN_MUTEX, start_ns);
    pthread_t t;
    kt_spawn(&t, defer_helper, &a);
    while (atomic_load(&a.phase) != 1)
        ;
    atomic_store(&a.phase, 2);
    cr_assert_eq(ks_mutex_lock(&m), 0);
    uint32_t d = ks_spin_defer_get(KS_SPIN_MUTEX);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    kt_join(t);
    if (pinned)
        pthread_setaffinity_np(pthread_self(), sizeof was, &was);
    ks_spin_set_budget_ns(KS_SPIN_MUTEX, budget);
    cr_assert_eq(ks_mutex_destroy(&m), 0);
    return d;
}

Test(spin, a_spinner_learns_whether_the_holder_of_a_mutex_comes_back, .timeout = 60)
{
    if (ks_usable_cpus() < 2)
        return; /* no spin at all with one usable CPU (tested above): nothing to learn */
    /* The helper frees the mutex for good after 20 us: main, spinning with
     * a long deferral, finds it still free after the deferral and takes it,
     * and its deferral shrinks.  A preemption can make main sleep instead
     * (then it learns nothing): several attempts, one must show it. */
    /* Attempts for up to 5 s each way, not a count: on a loaded machine
     * (CI runs tests side by side on 2 CPUs) whole stretches of
     * milliseconds can pass with one of the two threads not running. */
    int64_t t0 = ks_now();
    int shrank = 0;
    while (!shrank && ks_now() - t0 < 5000 * KT_MS)
        shrank = defer_after(KS_DEFER_CAP_NS, 0) < KS_DEFER_CAP_NS;
    cr_assert(shrank, "a mutex freed for good never taught a spinner to defer less");
    /* The helper takes the mutex again at once, for 2 ms: main's deferrals
     * see it retaken and grow. */
    int grew = 0;
    t0 = ks_now();
    while (!grew && ks_now() - t0 < 5000 * KT_MS)
        grew = defer_after(2 * KS_DEFER_FLOOR_NS, 1) > 2 * KS_DEFER_FLOOR_NS;
    cr_assert(grew, "a holder that kept retaking the mutex never taught a spinner to defer more");
    ks_spin_defer_set(KS_SPIN_MUTEX, 0);
}

Test(spin, spinners_leave_one_usable_cpu_free_and_ending_a_spin_frees_its_place)
{
    const int cpus = ks_usable_cpus(), most = MOST_PLACES(cpus);
    struct ks_spin sp[65];
    ks_spin_set_budget_ns(KS_SPIN_QUEUE, KS_SPIN_CAP_NS);
    for (int attempt = 0;; attempt++) {
        cr_assert_lt(attempt, 50, "no attempt ran undisturbed");
        int64_t t0 = ks_now();
        int got = 0;
        for (int i = 0; i <= most; i++)
            got += begin_held(&sp[i], KS_SPIN_QUEUE);
        int refused = sp[most].place == 0;
        int again = -1;
        if (most > 0) {
            ks_spin_end(&sp[0]);
            ks_spin_end(&sp[0]); /* a second end is harmless */
            again = begin_held(&sp[0], KS_SPIN_QUEUE);
        }
        for (int i = 0; i <= most; i++)
            ks_spin_end(&sp[i]);
        if (ks_now() - t0 > PLACE_ATTEMPT_NS)
            continue;
        cr_assert_eq(got, most, "%d of %d spins got a place with %d usable CPUs", got, most + 1, cpus);
        cr_assert(refused, "the spin beyond the places got one");
        cr_assert_eq(again, most > 0 ? 1 : -1, "an ended spin's place is free again");
        break;
    }
    cr_assert_eq(begin_held(&sp[0], KS_SPIN_QUEUE), most > 0);
    ks_spin_end(&sp[0]);
}

/* begin_held fails by itself when the thread is preempted between the
 * begin and the extension for longer than the budget (the lease has run out
 * by then): on a loaded 2-CPU machine that happened once.  A place that is
 * really taken stays taken across the tries. */
static int begin_held_retry(struct ks_spin *sp, unsigned site)
{
    for (int tries = 0; tries < 20; tries++) {
        if (begin_held(sp, site))
            return 1;
        ks_spin_end(sp);
    }
    return 0;
}

/* A spin left without ks_spin_end (a signal handler that jumped out of it)
 * holds its place only until its lease runs out. */
Test(spin, an_abandoned_spin_frees_its_place_within_the_cap)
{
    const int most = MOST_PLACES(ks_usable_cpus());
    if (most == 0)
        return; /* one usable CPU: nobody spins */
    struct ks_spin sp[64], extra;
    ks_spin_set_budget_ns(KS_SPIN_EVENT, KS_SPIN_CAP_NS);
    /* (retried: a preemption between begin and extension fails a try by
     * itself; it failed here twice in 16 runs while a CI run loaded the
     * machine) */
    for (int i = 0; i < most; i++)
        cr_assert(begin_held_retry(&sp[i], KS_SPIN_EVENT)); /* never ended */
    kt_sleep_ns(2 * (KS_SPIN_CAP_NS + KS_SPIN_FREE_NS));
    cr_assert(begin_held_retry(&extra, KS_SPIN_EVENT), "the abandoned places came back");
    ks_spin_end(&extra);
}

/* A fork child (here made by the raw syscall, which runs no atfork
 * handler), and a child of that child, keep the places of spins that do not
 * exist in them only until those leases run out. */
static int child_can_spin(void)
{
    kt_sleep_ns(2 * (KS_SPIN_CAP_NS + KS_SPIN_FREE_NS));
    struct ks_spin c;
    int ok = begin_held_retry(&c, KS_SPIN_EVENT);
    ks_spin_end(&c);
    return ok;
}

Test(spin, fork_children_do_not_keep_the_parents_spinner_places)
{
    const int most = MOST_PLACES(ks_usable_cpus());
    if (most == 0)
        return;
    struct ks_spin sp[64];
    ks_spin_set_budget_ns(KS_SPIN_EVENT, KS_SPIN_CAP_NS);
    for (int i = 0; i < most; i++)
        cr_assert(begin_held_retry(&sp[i], KS_SPIN_EVENT));
    pid_t pid = (pid_t)syscall(SYS_fork);
    if (pid == 0) {
        if (!child_can_spin())
            _exit(1);
        struct ks_spin d[64]; /* the child takes every place, then forks */
        for (int i = 0; i < most; i++)
            if (!begin_held_retry(&d[i], KS_SPIN_EVENT))
                _exit(2);
        pid_t g = (pid_t)syscall(SYS_fork);
        if (g == 0)
            _exit(child_can_spin() ? 0 : 3);
        int gs;
        if (waitpid(g, &gs, 0) != g || !WIFEXITED(gs))
            _exit(4);
        _exit(WEXITSTATUS(gs));
    }
    cr_assert_gt(pid, 0);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "a fork child could not spin (exit %d: 1 child, 2 child's places, 3 grandchild)",
              WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    for (int i = 0; i < most; i++)
        ks_spin_end(&sp[i]);
}

/* Integer arithmetic only: a program that traps on inexact floating-point
 * results (feenableexcept(FE_INEXACT)) may call ksync through the drop-in
 * layer.  The conversions are exact enough both ways, and clamp. */
Test(spin, conversions_round_trip_and_clamp)
{
    for (uint64_t ns = 1000; ns <= 100000000; ns *= 10) {
        uint64_t back = ks_spin_ticks_to_ns(ks_spin_ns_to_ticks(ns));
        cr_assert(back + ns / 1000 + 2 >= ns && back <= ns + ns / 1000 + 2, "%llu ns -> %llu ns",
                  (unsigned long long)ns, (unsigned long long)back);
    }
    cr_assert_leq(ks_spin_ticks_to_ns(UINT64_MAX), 1ull << 28, "a huge tick count is clamped");
    cr_assert_eq(ks_spin_ns_to_ticks(UINT64_MAX), ks_spin_ns_to_ticks(1ull << 28));
}

/* ---- the cull (src/spin.c, docs/spin.md "The cull") ------------------------
 * Off unless asked for (KSYNC_CULL=1, or ks_spin_cull_set(1) as here: each
 * test runs in a process of its own).  The rule first, with made-up times
 * and CPU numbers: each list of calls runs in a thread of its own (the rule
 * keeps the thread's last contended acquisition in thread-local storage);
 * CPU numbers 3 to 6 are used by nobody else in this process. */
struct cull_step {
    int64_t at;
    int cpu;
    int64_t took; /* how long the acquisition took: 0 means a quarter of the
                     pair window (bound in every pair made here), -1 that it
                     never ended (no ks_spin_cull_acquired_at) */
};
struct cull_calls {
    const struct cull_step *steps;
    int n;
    const void *lock;
    int got[8];
};

static void *cull_thread(void *p)
{
    struct cull_calls *c = p;
    for (int i = 0; i < c->n; i++) {
        const struct cull_step *st = &c->steps[i];
        c->got[i] = ks_spin_cull_decide(st->at, st->cpu, c->lock);
        if (st->took >= 0)
            ks_spin_cull_acquired_at(st->at + (st->took ? st->took : KS_CULL_PAIR_NS / 4));
    }
    return NULL;
}

static void cull_run(struct cull_calls *c)
{
    pthread_t t;
    kt_spawn(&t, cull_thread, c);
    kt_join(t);
}

/* A new thread's two contended acquisitions of `lock` on `cpu`, half a pair
 * window apart, the second at `at`: is the second culled?  (The first never
 * is: it has nothing to pair with.) */
static int cull_pair_took(int64_t at, int cpu, const void *lock, int64_t took)
{
    const struct cull_step s[] = {{at - KS_CULL_PAIR_NS / 2, cpu, took}, {at, cpu, 0}};
    struct cull_calls c = {s, 2, lock, {0}};
    cull_run(&c);
    cr_assert_eq(c.got[0], 0, "a thread's first contended acquisition is not culled");
    return c.got[1];
}

static int cull_pair_at(int64_t at, int cpu, const void *lock)
{
    return cull_pair_took(at, cpu, lock, 0);
}

/* Locks as far apart as real ones in an array: a hash on the low bits
 * would put them all on one entry. */
static _Alignas(128) char cull_lock[128], cull_other[8][128];

Test(spin, the_cull_takes_turns_of_cpus_among_lock_bound_threads_that_share_a_cpu)
{
    /* t: half a tenure before the 24-bit times of the turn table wrap
     * (2^34 ns), so that the tenure below spans the wrap.  The rule sees
     * only the times given. */
    const int64_t P = KS_CULL_PAIR_NS, SH = KS_CULL_SHARED_NS, TEN = KS_CULL_TENURE_NS;
    const int64_t t = (((ks_now() >> 34) + 1) << 34) - TEN / 2;
    const void *L = cull_lock;

    /* Off (the default; set here too, should KSYNC_CULL=1 be in the
     * environment of the tests): the second pair below would be culled. */
    ks_spin_cull_set(0);
    cr_assert_eq(cull_pair_at(t - 100 * P, 6, L), 0);
    cr_assert_eq(cull_pair_at(t - 99 * P, 6, L), 0, "the cull is off unless asked for");

    ks_spin_cull_set(1);
    const int yes = ks_usable_cpus() > 1; /* with one CPU, never */

    /* A pair that is not one: two contended acquisitions 2 pair windows
     * apart (on CPU 5, where the next call would pair with it). */
    const struct cull_step far[] = {{t, 5, 2 * P}, {t + 2 * P, 5, 0}}; /* the first took it all: (5) holds */
    struct cull_calls cf = {far, 2, L, {0}};
    cull_run(&cf);
    cr_assert_eq(cf.got[1], 0, "two contended acquisitions %lld ns apart do not pair", (long long)(2 * P));

    cr_assert_eq(cull_pair_at(t, 3, L), 0, "alone on CPU 3: sleeping would leave it idle");
    cr_assert_eq(cull_pair_at(t + P, 3, L), 0, "CPU 3 shared, the lock's turn nobody's: CPU 3 takes it");
    cr_assert_eq(cull_pair_at(t + 2 * P, 4, L), 0, "alone on CPU 4");
    cr_assert_eq(cull_pair_at(t + 3 * P, 4, L), yes, "CPU 4 shared while CPU 3 has the turn: culled");
    cr_assert_eq(cull_pair_at(t + 4 * P, 3, L), 0, "the turn's own CPU is never culled");

    /* Another lock has turns of its own: of 8 others (a hash picks the
     * entry, and one may share the lock's), at least one is not culled on
     * CPU 4 now.  Each takes its own lock's turn for CPU 4. */
    int free_others = 0;
    for (int i = 0; i < 8; i++)
        free_others += !cull_pair_at(t + 5 * P + i, 4, cull_other[i]);
    cr_assert_geq(free_others, 1, "every other lock shared this lock's turn");

    /* The turn ends: CPU 3 keeps renewing it (its bound threads pass every
     * TEN / 3, less than SH apart), also once its tenure is over (which
     * does not start a new one), then a pair on CPU 4 (shared again: a
     * thread there first) takes it, and CPU 3 waits. */
    _Static_assert(KS_CULL_TENURE_NS / 3 + 8 * KS_CULL_PAIR_NS < KS_CULL_SHARED_NS, "renewals below");
    cr_assert_eq(cull_pair_at(t + TEN / 3, 3, L), 0, "CPU 3 renews its turn");
    cr_assert_eq(cull_pair_at(t + 2 * TEN / 3, 3, L), 0, "CPU 3 renews its turn");
    cr_assert_eq(cull_pair_at(t + TEN + 2 * P, 3, L), 0, "CPU 3 renews its turn, over now");
    cr_assert_eq(cull_pair_at(t + TEN + 3 * P, 4, L), 0);
    cr_assert_eq(cull_pair_at(t + TEN + 4 * P, 4, L), 0, "CPU 3's turn is %lld ns old: CPU 4 takes it",
                 (long long)TEN);
    cr_assert_eq(cull_pair_at(t + TEN + 5 * P, 3, L), yes, "now CPU 3 is the one culled");

    /* A turn nobody renewed for SH is nobody's: CPU 3 (shared again: its
     * last bound thread is older than SH, so one comes first) takes it. */
    cr_assert_eq(cull_pair_at(t + TEN + SH + 7 * P, 3, L), 0);
    cr_assert_eq(cull_pair_at(t + TEN + SH + 8 * P, 3, L), 0, "a turn left for %lld ns is nobody's",
                 (long long)SH);

    /* A turn taken a little after our clock read (another thread stored it
     * between our ks_now() and our look) is fresh, not 17 s old.  At y,
     * long after the above: CPU 4 takes the lock's turn at y + 20 us; a
     * pair on CPU 3 (shared) at y + 10 us is culled. */
    const int64_t y = t + 3 * TEN + 3 * SH;
    cr_assert_eq(cull_pair_at(y, 4, L), 0, "CPU 4's last bound thread left long ago");
    cr_assert_eq(cull_pair_at(y + 2000, 3, L), 0, "CPU 3's last bound thread left long ago");
    cr_assert_eq(cull_pair_at(y + 20000, 4, L), 0, "a turn left for %lld ns is nobody's", (long long)SH);
    cr_assert_eq(cull_pair_at(y + 10000, 3, L), yes, "a turn taken 10 us after our clock read is fresh");

    /* No CPU number (sched_getcpu failed) means no cull. */
    const struct cull_step e[] = {{t, 6, 0}, {t + P / 4, -1, 0}, {t + P / 2, 6, 0}};
    struct cull_calls ce = {e, 3, L, {0}};
    cull_run(&ce);
    cr_assert_eq(ce.got[1], 0, "no CPU number, no cull");
}

/* Rule (5): a thread whose contended acquisitions pair within the window
 * is bound by the lock only if the first of the two took at least
 * 1/KS_CULL_SHARE of the time between them; one that works between them
 * (16 threads with 100-500 ns of work between rwlock operations: the cull
 * cost up to 20% there before this rule) is left alone. */
Test(spin, the_cull_leaves_alone_threads_that_spend_their_time_outside_the_lock)
{
    const int64_t P = KS_CULL_PAIR_NS, gap = KS_CULL_PAIR_NS / 2; /* a pair's gap, see cull_pair_took */
    const int64_t t = ks_now();
    const void *L = cull_lock;
    ks_spin_cull_set(1);
    const int yes = ks_usable_cpus() > 1;
    /* CPU 4 takes the lock's turn; CPU 3 becomes shared. */
    cr_assert_eq(cull_pair_at(t, 4, L), 0);
    cr_assert_eq(cull_pair_at(t + P, 4, L), 0);
    cr_assert_eq(cull_pair_at(t + 2 * P, 3, L), 0);
    /* On CPU 3 now, a pair is culled exactly when its first acquisition
     * took its share. */
    cr_assert_eq(cull_pair_took(t + 3 * P, 3, L, gap / KS_CULL_SHARE), yes,
                 "an acquisition that took 1/%d of the gap: bound", KS_CULL_SHARE);
    cr_assert_eq(cull_pair_took(t + 4 * P, 3, L, gap / KS_CULL_SHARE - 1), 0,
                 "an acquisition that took less than 1/%d of the gap: not bound", KS_CULL_SHARE);
    cr_assert_eq(cull_pair_took(t + 5 * P, 3, L, -1), 0, "an acquisition that never ended: not bound");
    cr_assert_eq(cull_pair_took(t + 6 * P, 3, L, gap), yes, "one that took the whole gap: bound");
}

/* What rule (5) measures, through the real clock and the real lock: only
 * the acquisitions that asked the cull, only with the cull on, and each
 * measure counts for the next decision alone.  (The first version measured
 * every read lock that reached the library's slow path: one that found the
 * lock free after an inline CAS lost to another reader passed the time
 * since the last contended acquisition off as that acquisition's wait.) */
Test(spin, the_cull_measures_only_the_acquisitions_that_asked_it)
{
    ks_spin_cull_set(0);
    ks_spin_cull_decide(ks_now() - 1000, 3, cull_lock);
    ks_spin_cull_acquired();
    cr_assert_eq(ks_spin_cull_took(), 0, "the cull is off: nothing measured");

    ks_spin_cull_set(1);
    ks_spin_cull_decide(ks_now() - 1000, 3, cull_lock);
    ks_spin_cull_acquired();
    const int64_t took = ks_spin_cull_took();
    if (ks_usable_cpus() <= 1) {
        cr_assert_eq(took, 0, "one usable CPU: nobody is culled, so nothing is measured");
        ks_spin_cull_set(0);
        return;
    }
    cr_assert_geq(took, 1000, "an acquisition that asked 1 us ago took %lld ns", (long long)took);

    /* A read lock that never asked: the lock is free, and the call goes
     * through the library's slow path (what a lost inline CAS does). */
    ks_rwlock_t free_lock = KS_RWLOCK_INIT;
    cr_assert_eq(ks_rwlock_rdlock_slow(&free_lock, KS_FOREVER), 0);
    cr_assert_eq(ks_rwlock_unlock(&free_lock), 0);
    cr_assert_eq(ks_spin_cull_took(), took, "a read lock that did not ask the cull changed its measure");

    /* With the cull off, asking reads no clock and decides nothing: the
     * measure stays (a decision would have used it up). */
    ks_spin_cull_set(0);
    cr_assert_eq(ks_spin_cull_wanted(cull_lock), 0);
    cr_assert_eq(ks_spin_cull_took(), took, "asking with the cull off went on to decide");

    /* The next decision uses the measure up, whatever it says. */
    ks_spin_cull_set(1);
    ks_spin_cull_decide(ks_now(), 3, cull_lock);
    cr_assert_eq(ks_spin_cull_took(), 0, "a measure outlived the decision it was for");
    ks_spin_cull_set(0);
}

/* The clock is read inside the lock less where it is not needed: a thread
 * whose own id is in its CPU's entry, renewed less than KS_CULL_SHARED_NS
 * / 4 ago, does not measure its acquisition; once another thread has
 * passed there, it does.  (Two threads pinned to two CPUs paid that read
 * on every contended read lock, and lost 0-23% at 90% reads, for culls
 * that never came.)  The test after this one checks the other side: a
 * thread alone on its CPU measures again once its entry has aged. */
Test(spin, the_cull_does_not_measure_a_thread_whose_cpu_entry_it_just_renewed)
{
    const int cpu = 11; /* no other test here uses CPU 11's entry */
    ks_spin_cull_set(1);
    int64_t a = ks_now();
    ks_spin_cull_decide(a - 2000, cpu, cull_lock);
    ks_spin_cull_acquired();
    if (ks_usable_cpus() <= 1) {
        cr_assert_eq(ks_spin_cull_took(), 0, "one usable CPU: nobody is culled, so nothing is measured");
        ks_spin_cull_set(0);
        return;
    }
    cr_assert_geq(ks_spin_cull_took(), 2000, "a first acquisition on an empty CPU entry is measured");
    /* 1 us after it: a pair, whose first took its share: this thread passes
     * and its id goes into the CPU's entry. */
    ks_spin_cull_decide(a - 1000, cpu, cull_lock);
    ks_spin_cull_acquired();
    cr_assert_geq(ks_spin_cull_took(), 1000, "the pass that put its id into the entry was not measured");
    ks_spin_cull_decide(a - 500, cpu, cull_lock);
    ks_spin_cull_acquired();
    cr_assert_eq(ks_spin_cull_took(), 0, "the last thread to pass on its CPU measured its acquisition");
    /* Another thread passes on the same CPU: now this one measures again. */
    a = ks_now();
    cull_pair_took(a, cpu, cull_lock, KS_CULL_PAIR_NS / 2);
    ks_spin_cull_decide(a - 1000, cpu, cull_lock);
    ks_spin_cull_acquired();
    cr_assert_geq(ks_spin_cull_took(), 1000, "a thread that shares its CPU did not measure its acquisition");
    ks_spin_cull_set(0);
}

/* Rule (2) across a context switch: a thread that ran alone on its CPU,
 * lock-bound, for longer than KS_CULL_SHARED_NS is still "another thread
 * that passed (1) within KS_CULL_SHARED_NS" for the next thread scheduled
 * there.  Made-up times 100 ms in the past, CPUs 12 and 13 (nobody else's):
 * the real clock that ks_spin_cull_acquired reads makes every measure long,
 * so (5) holds for every pair that was measured.  (The review's case: a
 * version that stopped measuring for good once the thread's own id was in
 * the entry froze the entry's time, and B was not culled; with 16 threads
 * that all but stopped the cull at 99% reads and with work between
 * operations, whenever threads ran more than 2 ms at a time.) */
struct cull_run_real {
    int64_t from, to, step;
    int cpu, culls;
};
static void *cull_real_thread(void *p)
{
    struct cull_run_real *r = p;
    for (int64_t at = r->from; at <= r->to; at += r->step) {
        r->culls += ks_spin_cull_decide(at, r->cpu, cull_lock);
        ks_spin_cull_acquired();
    }
    return NULL;
}
static int cull_real(int64_t from, int64_t to, int64_t step, int cpu)
{
    struct cull_run_real r = {from, to, step, cpu, 0};
    pthread_t t;
    kt_spawn(&t, cull_real_thread, &r);
    kt_join(t);
    return r.culls;
}

Test(spin, the_cull_counts_a_bound_thread_that_ran_alone_past_the_shared_window)
{
    const int yes = ks_usable_cpus() > 1; /* with one, nobody is culled */
    const int64_t P = KS_CULL_PAIR_NS, t = ks_now() - 100000000, alone = KS_CULL_SHARED_NS + KS_CULL_SHARED_NS / 4;
    ks_spin_cull_set(1);
    cull_real(t, t + P / 2, P / 2, 13); /* CPU 13 shared: it takes the lock's turn */
    cull_real(t + 2 * P, t + 2 * P + P / 2, P / 2, 13);
    cull_real(t + 10 * P, t + 10 * P + alone, P / 3, 12); /* A, alone and bound on CPU 12 */
    cull_real(t + 10 * P + alone - 2 * P, t + 10 * P + alone - P, P / 2, 13); /* CPU 13 renews its turn */
    cull_real(t + 10 * P + alone - P, t + 10 * P + alone - P / 2, P / 2, 13);
    cr_assert_eq(cull_real(t + 11 * P + alone, t + 11 * P + alone + P / 2, P / 2, 12), yes,
                 "B's pair on CPU 12 right after A's %lld us there, CPU 13 holding the turn: not culled",
                 (long long)alone / 1000);
    ks_spin_cull_set(0);
}

Test(spin, a_cull_sleeps_its_time_and_never_past_the_deadline)
{
    uint64_t c0 = ks_spin_culls();
    int64_t t0 = ks_now();
    ks_spin_cull(t0 - 1);
    cr_assert_eq(ks_spin_culls(), c0, "a deadline already past: no cull at all");
    t0 = ks_now();
    ks_spin_cull(KS_FOREVER);
    int64_t took = ks_now() - t0;
    cr_assert_geq(took, KS_CULL_NS - KS_CULL_NS / 20, "a cull slept %lld ns, not %d", (long long)took,
                  KS_CULL_NS);
    cr_assert_lt(took, KT_LATE_NS, "a cull slept %lld ns", (long long)took);
    cr_assert_eq(ks_spin_culls(), c0 + 1);
    /* A deadline 100 us away ends it then: never before, and (once in five
     * tries, whatever the load) well before the full 1 ms. */
    int64_t best = INT64_MAX;
    for (int i = 0; i < 5; i++) {
        t0 = ks_now();
        ks_spin_cull(t0 + 100000);
        took = ks_now() - t0;
        cr_assert_geq(took, 100000 - 1000, "a cull ended %lld ns after it began, before its deadline",
                      (long long)took);
        best = took < best ? took : best;
    }
    cr_assert_lt(best, KS_CULL_NS * 9 / 10, "a cull with a deadline 100 us away slept %lld ns", (long long)best);
}

/* The rule on a real lock: threads loop on a ks_rwlock, each pinned to one
 * of two usable CPUs (or not pinned), in one of three ways:
 *   CL_READS  one write in ten, else an untimed read (culled when bound)
 *   CL_WRITES writes only (a writer is never culled: writer preference)
 *   CL_TIMED  one write in ten, else a timed read (never culled)
 * The writes are counted and checked against the shared counter. */
enum { CL_READS, CL_WRITES, CL_TIMED };

struct cull_load {
    ks_rwlock_t l;
    uint64_t counter; /* guarded by l */
    int stop, mode;
    uint64_t writes;
};

struct cull_worker {
    struct cull_load *ld;
    int cpu; /* -1: not pinned */
    unsigned seed;
    uint64_t ops; /* this worker's operations, read after the join */
};

static void *cull_worker(void *p)
{
    struct cull_worker *w = p;
    if (w->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(w->cpu, &set);
        cr_assert_eq(pthread_setaffinity_np(pthread_self(), sizeof set, &set), 0);
    }
    const int mode = w->ld->mode;
    uint64_t x = 0x9e3779b97f4a7c15ull * (w->seed + 1), writes = 0;
    while (!__atomic_load_n(&w->ld->stop, __ATOMIC_RELAXED)) { /* relaxed: a flag polled */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (mode == CL_WRITES || (x >> 32) % 10 == 0) {
            cr_assert_eq(ks_rwlock_wrlock(&w->ld->l), 0);
            w->ld->counter++;
            writes++;
        } else {
            int e = mode == CL_TIMED ? ks_rwlock_timedrdlock(&w->ld->l, ks_deadline_after(1000 * KT_MS))
                                     : ks_rwlock_rdlock(&w->ld->l);
            cr_assert_eq(e, 0);
            (void)*(volatile uint64_t *)&w->ld->counter;
        }
        cr_assert_eq(ks_rwlock_unlock(&w->ld->l), 0);
        w->ops++;
    }
    __atomic_fetch_add(&w->ld->writes, writes, __ATOMIC_RELAXED); /* relaxed: read after join */
    return NULL;
}

/* Run n workers in `mode`, CPU i % 2 of cpus[] each (cpus NULL: unpinned),
 * until `enough` culls were made in this process or `cap_ns` passed;
 * returns the culls made, and the slowest worker's operations over the
 * fastest's in *fair if fair is not NULL. */
static uint64_t cull_load_run_fair(int n, int mode, const int *cpus, uint64_t enough, int64_t cap_ns, double *fair)
{
    struct cull_load ld = {.stop = 0, .mode = mode};
    cr_assert_eq(ks_rwlock_init(&ld.l, KS_PRIVATE), 0);
    struct cull_worker w[8];
    pthread_t t[8];
    const uint64_t c0 = ks_spin_culls();
    for (int i = 0; i < n; i++) {
        w[i] = (struct cull_worker){&ld, cpus ? cpus[i % 2] : -1, (unsigned)i, 0};
        kt_spawn(&t[i], cull_worker, &w[i]);
    }
    const int64_t end = ks_now() + cap_ns;
    while (ks_now() < end && ks_spin_culls() - c0 < enough)
        kt_sleep_ns(10 * KT_MS);
    __atomic_store_n(&ld.stop, 1, __ATOMIC_RELAXED); /* relaxed: see the worker */
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < n; i++) {
        kt_join(t[i]);
        lo = w[i].ops < lo ? w[i].ops : lo;
        hi = w[i].ops > hi ? w[i].ops : hi;
    }
    if (fair)
        *fair = hi ? (double)lo / (double)hi : 0;
    cr_assert_eq(ld.counter, ld.writes, "%llu writes counted, the word says %llu",
                 (unsigned long long)ld.writes, (unsigned long long)ld.counter);
    cr_assert_eq(ks_rwlock_destroy(&ld.l), 0);
    return ks_spin_culls() - c0;
}

static uint64_t cull_load_run(int n, int mode, const int *cpus, uint64_t enough, int64_t cap_ns)
{
    return cull_load_run_fair(n, mode, cpus, enough, cap_ns, NULL);
}

/* The first two CPUs this process may use, in cpus[]; returns how many
 * there are (0, 1 or 2). */
static int first_two_cpus(int cpus[2])
{
    cpu_set_t set;
    cr_assert_eq(sched_getaffinity(0, sizeof set, &set), 0);
    int k = 0;
    for (int c = 0; c < CPU_SETSIZE && k < 2; c++)
        if (CPU_ISSET(c, &set))
            cpus[k++] = c;
    return k;
}

Test(spin, only_untimed_readers_sharing_a_cpu_are_culled_and_only_when_asked, .timeout = 90)
{
    int cpus[2];
    const int k = first_two_cpus(cpus);
    const int64_t short_run = 300 * KT_MS;
    uint64_t culls = 0;
    ks_spin_cull_set(0); /* the default, whatever KSYNC_CULL says */
    if (k == 2 && ks_usable_cpus() >= 2) {
        culls = cull_load_run(6, CL_READS, cpus, UINT64_MAX, short_run);
        cr_assert_eq(culls, 0, "%llu culls while the cull is off", (unsigned long long)culls);
    }
    ks_spin_cull_set(1);
    if (k < 2 || ks_usable_cpus() < 2) {
        /* One CPU: a cull would gain nothing, and there is none. */
        cr_assert_eq(cull_load_run(6, CL_READS, NULL, UINT64_MAX, short_run), 0, "a cull with one usable CPU");
        return;
    }
    /* One lock-bound thread per CPU: a culled thread would only leave its
     * CPU idle. */
    culls = cull_load_run(2, CL_READS, cpus, UINT64_MAX, short_run);
    cr_assert_eq(culls, 0, "%llu culls of two threads on two CPUs", (unsigned long long)culls);
    /* Three per CPU, but writers only, or timed readers: never culled. */
    culls = cull_load_run(6, CL_WRITES, cpus, UINT64_MAX, short_run);
    cr_assert_eq(culls, 0, "%llu culls of writers", (unsigned long long)culls);
    culls = cull_load_run(6, CL_TIMED, cpus, UINT64_MAX, short_run);
    cr_assert_eq(culls, 0, "%llu culls of timed readers", (unsigned long long)culls);
    /* Three per CPU with untimed readers: a culled thread leaves its CPU to
     * the other two. */
    culls = cull_load_run(6, CL_READS, cpus, 1, 20 * KT_SLOW * 1000 * KT_MS);
    cr_assert_gt(culls, 0, "no cull in %d s of 6 lock-bound threads on 2 CPUs", 20 * KT_SLOW);
}

/* The turns.  The first version (no turns) culled a bound thread whenever
 * another had passed on its CPU: with two untimed readers on one CPU and
 * one on the other, the two culled each other while the third ran on, and
 * the slowest thread made almost nothing (bench section 7, 3 and 4
 * threads: fairness 0.00 and 0.02).  Now a CPU's threads are culled only
 * while another CPU has the lock's turn, and the CPUs take turns. */
Test(spin, the_cull_starves_no_thread_when_threads_share_cpus_unevenly_or_evenly, .timeout = 90)
{
    int cpus[2];
    const int k = first_two_cpus(cpus);
    if (k < 2 || ks_usable_cpus() < 2)
        return; /* one CPU: never a cull (the test above checks it) */
    ks_spin_cull_set(1);
    double fair = 0;
    /* Two on one CPU, one on the other: the shared CPU keeps the turn (the
     * lone thread's CPU never asks for it), so nobody is culled; the first
     * version culled the two all the time.  (Their share of the operations
     * is the scheduler's: load pinned to their CPU lowers it, cull or no
     * cull, so it is not checked.) */
    uint64_t culls = cull_load_run(3, CL_READS, cpus, UINT64_MAX, 500 * KT_MS);
    cr_assert_eq(culls, 0, "%llu culls of 2 + 1 threads", (unsigned long long)culls);
    /* Two on each: the CPUs take turns, and no thread starves (the first
     * version's slowest thread made 0.3% of the fastest's operations). */
    culls = cull_load_run_fair(4, CL_READS, cpus, UINT64_MAX, 1000 * KT_MS, &fair);
    cr_assert_gt(culls, 0, "no cull in 1 s of 2 + 2 lock-bound threads");
    cr_assert_geq(fair, 0.05, "2 + 2 threads: the slowest made %.3f of the fastest's operations (%llu culls)", fair,
                  (unsigned long long)culls);
}

/* ---- CPU guards ------------------------------------------------------------
 * One waiter, one partner that makes it wait `delay` and then lets it go,
 * per primitive.  Only the waiting call is timed: its thread CPU time over
 * its wall time is what the wait cost. */
enum { G_SEM, G_EVENT, G_MUTEX, G_COND, G_RWLOCK, G_QUEUE, G_BARRIER, G_KINDS };
static const char *const g_name[G_KINDS] = {"ks_sem_wait",       "ks_event_wait",    "ks_mutex_lock",
                                            "ks_cond_wait",      "ks_rwlock_rdlock", "ks_queue_get",
                                            "ks_barrier_wait"};

struct guard {
    int kind, rounds;
    int64_t delay;
    ks_sem_t go, done;
    ks_sem_t s;
    ks_event_t e;
    ks_mutex_t m;
    ks_cond_t c;
    int flag; /* guarded by m */
    ks_rwlock_t l;
    ks_queue_t *q;
    ks_barrier_t b;
    int64_t cpu, wall; /* the waiter's, inside the waiting calls */
};

static void guard_init(struct guard *g, int kind, int rounds, int64_t delay)
{
    memset(g, 0, sizeof *g);
    g->kind = kind;
    g->rounds = rounds;
    g->delay = delay;
    cr_assert_eq(ks_sem_init(&g->go, 0, 0), 0);
    cr_assert_eq(ks_sem_init(&g->done, 0, 0), 0);
    cr_assert_eq(ks_sem_init(&g->s, 0, 0), 0);
    cr_assert_eq(ks_event_init(&g->e, 0), 0);
    cr_assert_eq(ks_mutex_init(&g->m, 0), 0);
    cr_assert_eq(ks_cond_init(&g->c, 0), 0);
    cr_assert_eq(ks_rwlock_init(&g->l, 0), 0);
    cr_assert_eq(ks_queue_create(&g->q, 4, 0), 0);
    cr_assert_eq(ks_barrier_init(&g->b, 2, 0), 0);
}

static void guard_fini(struct guard *g)
{
    ks_queue_destroy(g->q);
    ks_barrier_destroy(&g->b);
    ks_cond_destroy(&g->c);
}

static void *guard_partner(void *arg)
{
    struct guard *g = arg;
    for (int r = 0; r < g->rounds; r++) {
        switch (g->kind) {
        case G_MUTEX:
        case G_RWLOCK:
            if (g->kind == G_MUTEX)
                ks_mutex_lock(&g->m);
            else
                ks_rwlock_wrlock(&g->l);
            ks_sem_post(&g->go); /* held: the waiter may start waiting */
            kt_sleep_ns(g->delay);
            if (g->kind == G_MUTEX)
                ks_mutex_unlock(&g->m);
            else
                ks_rwlock_unlock(&g->l);
            ks_sem_wait(&g->done);
            break;
        default:
            ks_sem_wait(&g->go);
            kt_sleep_ns(g->delay);
            switch (g->kind) {
            case G_SEM: ks_sem_post(&g->s); break;
            case G_EVENT: ks_event_set(&g->e); break;
            case G_COND:
                ks_mutex_lock(&g->m);
                g->flag = 1;
                ks_cond_signal(&g->c);
                ks_mutex_unlock(&g->m);
                break;
            case G_QUEUE: ks_queue_put(g->q, g); break;
            case G_BARRIER: ks_barrier_wait(&g->b); break;
            }
            ks_sem_wait(&g->done);
        }
    }
    return NULL;
}

static void *guard_waiter(void *arg)
{
    struct guard *g = arg;
    for (int r = 0; r < g->rounds; r++) {
        int e = 0;
        if (g->kind == G_MUTEX || g->kind == G_RWLOCK)
            ks_sem_wait(&g->go);
        else if (g->kind == G_COND)
            ks_mutex_lock(&g->m);
        if (g->kind != G_MUTEX && g->kind != G_RWLOCK)
            ks_sem_post(&g->go);
        int64_t c0 = kt_thread_cpu_ns(), t0 = ks_now();
        switch (g->kind) {
        case G_SEM: e = ks_sem_wait(&g->s); break;
        case G_EVENT: e = ks_event_wait(&g->e); break;
        case G_MUTEX: e = ks_mutex_lock(&g->m); break;
        case G_COND:
            while (!g->flag && e == 0)
                e = ks_cond_wait(&g->c, &g->m);
            break;
        case G_RWLOCK: e = ks_rwlock_rdlock(&g->l); break;
        case G_QUEUE: {
            void *item;
            e = ks_queue_get(g->q, &item);
            break;
        }
        case G_BARRIER: {
            int b = ks_barrier_wait(&g->b); /* SERIAL to one party, 0 to the other */
            e = b == KS_BARRIER_SERIAL ? 0 : b;
            break;
        }
        }
        g->wall += ks_now() - t0;
        g->cpu += kt_thread_cpu_ns() - c0;
        if (e)
            return (void *)(intptr_t)e;
        switch (g->kind) {
        case G_EVENT: ks_event_clear(&g->e); break;
        case G_MUTEX: ks_mutex_unlock(&g->m); break;
        case G_COND:
            g->flag = 0;
            ks_mutex_unlock(&g->m);
            break;
        case G_RWLOCK: ks_rwlock_unlock(&g->l); break;
        default: break;
        }
        ks_sem_post(&g->done);
    }
    return NULL;
}

/* Each kind in turn (together), so the waiters do (not) take each other's
 * CPU; together suits waits that are all asleep. */
static void run_guard(int rounds, int64_t delay, double max_share, int together, const char *what)
{
    static struct guard g[G_KINDS];
    pthread_t p[G_KINDS], w[G_KINDS];
    for (int k0 = 0; k0 < G_KINDS; k0 += together ? G_KINDS : 1) {
        int k1 = together ? G_KINDS : k0 + 1;
        for (int k = k0; k < k1; k++) {
            guard_init(&g[k], k, rounds, delay);
            kt_spawn(&p[k], guard_partner, &g[k]);
            kt_spawn(&w[k], guard_waiter, &g[k]);
        }
        for (int k = k0; k < k1; k++) {
            void *err = kt_join(w[k]);
            kt_join(p[k]);
            cr_assert_null(err, "%s: %s failed: %s", what, g_name[k], strerror((int)(intptr_t)err));
            double share = (double)g[k].cpu / (double)g[k].wall;
            cr_assert_lt(share, max_share, "%s: %s used %.2f%% of a CPU over %.3f s of waiting", what,
                         g_name[k], 100 * share, (double)g[k].wall / 1e9);
            cr_log_info("%s: %s used %.3f%% of a CPU", what, g_name[k], 100 * share);
            guard_fini(&g[k]);
        }
    }
}

Test(spin, a_waiter_whose_partner_answers_after_1ms_burns_under_5_percent_of_a_cpu, .timeout = 60)
{
    /* The bound is 10%; the policy measures 1-2% here, and a
     * regression that spun the whole cap on every wait measured 8-11%, so
     * the test holds it to 5%. */
    run_guard(100, 1 * KT_MS, 0.05, 0, "partner after 1 ms");
}

Test(spin, a_thread_blocked_for_a_second_burns_under_1_percent_of_a_cpu, .timeout = 60)
{
    run_guard(1, 1000 * KT_MS, 0.01, 1, "blocked 1 s");
}

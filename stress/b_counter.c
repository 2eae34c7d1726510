/* stress/b_counter.c - section 2: contended counter.
 *
 * T threads loop { lock; counter++; unlock; } until the stop flag, which the
 * main thread raises --seconds after the start barrier.  The lock and the
 * counter share one 128-byte block (as a lock sits beside the data it guards);
 * each thread's own count sits on its own line.  The rate is all increments
 * divided by the time from the start barrier to the last thread's exit, so
 * the drain after the stop (which is long for FIFO spinlocks whose next owner
 * is descheduled) counts against the lock that causes it.  The final counter
 * must equal the sum of the per-thread counts, or the program stops.
 *
 * --counter-apart puts the counter on the line after the lock's instead, as
 * for a lock that guards data elsewhere: the holder then leaves the lock's
 * line alone inside the critical section, and every change of hands moves
 * two lines.  The ratios differ widely between the two layouts (docs/mutex.md,
 * "Measured").  --counter-hold-ns and --counter-work-ns add busy work inside
 * the lock and after each unlock: a holder that leaves for a while before it
 * comes back, which is where a spinner that waits before taking a freed
 * mutex (docs/spin.md, "Deferring to the holder") pays for its wait.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <math.h>

struct counter_obj {
    bench_lock_t lock;
    uint64_t counter; /* guarded by lock */
    uint64_t apart __attribute__((aligned(KS_CACHELINE))); /* guarded by lock: --counter-apart's counter */
} __attribute__((aligned(KS_CACHELINE)));

/* --counter-hold-ns / --counter-work-ns, in bench_spin iterations (0: none) */
static uint64_t hold_iters, work_iters;

#define COUNTER_BODY(name)                                \
    static void body_##name(bench_thr_t *t)               \
    {                                                     \
        struct counter_obj *o = t->arg;                   \
        uint64_t *c = bopt.counter_apart ? &o->apart : &o->counter; \
        const uint64_t hold = hold_iters, work = work_iters; \
        bench_ctx_t ctx;                                  \
        uint64_t n = 0;                                   \
        memset(&ctx, 0, sizeof ctx);                      \
        while (!bench_stopped()) {                        \
            name##_b_acq(&o->lock, &ctx);                 \
            (*c)++;                                       \
            if (hold)                                     \
                bench_spin(hold);                         \
            name##_b_rel(&o->lock, &ctx);                 \
            n++;                                          \
            if (work)                                     \
                bench_spin(work);                         \
        }                                                 \
        t->ops = n;                                       \
    }
COUNTER_BODY(ks_mutex)
COUNTER_BODY(pthread_mutex)
COUNTER_BODY(ck_fas)
COUNTER_BODY(ck_ticket)
COUNTER_BODY(ck_mcs)

static const struct ckind {
    const char *name;
    void (*init)(bench_lock_t *l);
    void (*body)(bench_thr_t *t);
} kinds[] = {
    {"ks_mutex", ks_mutex_b_init, body_ks_mutex}, /* first: the numerator of the ratios */
    {"pthread", pthread_mutex_b_init, body_pthread_mutex},
    {"ck_fas", ck_fas_b_init, body_ck_fas},
    {"ck_ticket", ck_ticket_b_init, body_ck_ticket},
    {"ck_mcs", ck_mcs_b_init, body_ck_mcs},
};
#define NK ((int)(sizeof kinds / sizeof kinds[0]))

static struct counter_obj obj;

struct counter_result {
    double mops, fair, waits_per_kop, wakes_per_kop, sleeps_per_kop;
    int pinned;
};

static struct counter_result run_once(const struct ckind *k, int nthreads)
{
    struct counter_result res;
    struct bench_team team = {
        .n = nthreads, .body = k->body, .arg = &obj, .cap_ns = (int64_t)(bopt.seconds * 1e9),
    };
    memset(&obj, 0, sizeof obj);
    k->init(&obj.lock);
    bench_team_run(&team);
    const uint64_t counted = bopt.counter_apart ? obj.apart : obj.counter;
    if (counted != team.ops || (bopt.counter_apart ? obj.counter : obj.apart) != 0)
        bench_fail("%s, %d threads: counter is %llu, threads counted %llu increments", k->name, nthreads,
                   (unsigned long long)counted, (unsigned long long)team.ops);
    uint64_t lo = UINT64_MAX, hi = 0, waits = 0, wakes = 0, sleeps = 0;
    for (int i = 0; i < nthreads; i++) {
        lo = team.thr[i].ops < lo ? team.thr[i].ops : lo;
        hi = team.thr[i].ops > hi ? team.thr[i].ops : hi;
        waits += team.thr[i].fx.waits;
        wakes += team.thr[i].fx.wakes;
        sleeps += team.thr[i].vcsw;
    }
    res.fair = hi ? (double)lo / (double)hi : 0;
    res.mops = (double)team.ops / ((double)team.elapsed_ns / 1e9) / 1e6;
    res.waits_per_kop = team.ops ? 1000.0 * (double)waits / (double)team.ops : 0;
    res.wakes_per_kop = team.ops ? 1000.0 * (double)wakes / (double)team.ops : 0;
    res.sleeps_per_kop = team.ops ? 1000.0 * (double)sleeps / (double)team.ops : 0;
    res.pinned = team.pinned;
    bench_team_free(&team);
    return res;
}

void bench_counter(void)
{
    const int R = bopt.reps, NT = bopt.ntlist;
    struct counter_result *res = calloc((size_t)(NT * NK * R), sizeof *res);
    struct bench_stat (*st)[NK] = calloc((size_t)NT, sizeof *st);
    struct bench_stat (*fair)[NK] = calloc((size_t)NT, sizeof *fair);
    struct bench_stat (*sleeps)[NK] = calloc((size_t)NT, sizeof *sleeps);
    struct bench_stat *waits = calloc((size_t)NT, sizeof *waits), *wakes = calloc((size_t)NT, sizeof *wakes);
    double ratio2 = NAN, ratio16 = NAN;
#define RES(ti, k, r) res[((ti) * NK + (k)) * R + (r)]

    bench_section("2");

    printf("\n== 2. Contended counter: T threads loop { lock; counter++; unlock } ==\n");
    if (bopt.counter_apart)
        printf("--counter-apart: the counter is on the cache line after the lock's\n");
    double per_iter = 0;
    hold_iters = bopt.counter_hold_ns ? bench_spin_calibrate(bopt.counter_hold_ns, &per_iter) : 0;
    work_iters = bopt.counter_work_ns ? bench_spin_calibrate(bopt.counter_work_ns, &per_iter) : 0;
    if (hold_iters || work_iters)
        printf("--counter-hold-ns %d --counter-work-ns %d: busy loops of %llu and %llu iterations inside and\n"
               "after the lock (%.2f ns per iteration, calibrated now)\n",
               bopt.counter_hold_ns, bopt.counter_work_ns, (unsigned long long)hold_iters,
               (unsigned long long)work_iters, per_iter);
    printf("%.2f s per run; rate = increments / (start .. last thread out); %ld CPUs online\n", bopt.seconds,
           sysconf(_SC_NPROCESSORS_ONLN));
    for (int ti = 0; ti < NT; ti++) {
        for (int r = 0; r < R; r++)
            for (int k = 0; k < NK; k++)
                RES(ti, k, r) = run_once(&kinds[k], bopt.tlist[ti]);
        for (int k = 0; k < NK; k++) {
            char label[64];
            snprintf(label, sizeof label, "T=%d %s Mops/s", bopt.tlist[ti], kinds[k].name);
            st[ti][k] = BENCH_STATS_OF(label, RES(ti, k, 0), mops, R);
            fair[ti][k] = BENCH_STATS_OF(NULL, RES(ti, k, 0), fair, R);
            sleeps[ti][k] = BENCH_STATS_OF(NULL, RES(ti, k, 0), sleeps_per_kop, R);
        }
        /* kinds[0] is ks_mutex */
        waits[ti] = BENCH_STATS_OF(NULL, RES(ti, 0, 0), waits_per_kop, R);
        wakes[ti] = BENCH_STATS_OF(NULL, RES(ti, 0, 0), wakes_per_kop, R);
    }

    printf("\nMops/s (higher is better), +-: half the min..max range of the repetitions\n");
    printf("%-4s %-6s", "T", "pinned");
    for (int k = 0; k < NK; k++)
        printf(" %16s", kinds[k].name);
    printf("\n");
    for (int ti = 0; ti < NT; ti++) {
        printf("%-4d %-6s", bopt.tlist[ti], RES(ti, 0, 0).pinned ? "yes" : "no");
        for (int k = 0; k < NK; k++) {
            char buf[32];
            snprintf(buf, sizeof buf, "%.3f +-%.0f%%", st[ti][k].med, bench_spread(st[ti][k]) / 2);
            printf(" %16s", buf);
        }
        printf("\n");
    }
    printf("\nratio ks_mutex / reference (above 1 = ksync faster)\n%-11s", "T");
    for (int k = 1; k < NK; k++)
        printf(" %16s", kinds[k].name);
    printf("\n");
    for (int ti = 0; ti < NT; ti++) {
        printf("%-11d", bopt.tlist[ti]);
        for (int k = 1; k < NK; k++)
            printf(" %16.3f", st[ti][0].med / st[ti][k].med);
        printf("\n");
        if (bopt.tlist[ti] == 2)
            ratio2 = st[ti][0].med / st[ti][1].med;
        if (bopt.tlist[ti] == 16)
            ratio16 = st[ti][0].med / st[ti][1].med;
    }
    printf("\nfairness: slowest / fastest thread's count\n%-11s", "T");
    for (int k = 0; k < NK; k++)
        printf(" %16s", kinds[k].name);
    printf("\n");
    for (int ti = 0; ti < NT; ti++) {
        printf("%-11d", bopt.tlist[ti]);
        for (int k = 0; k < NK; k++)
            printf(" %16.2f", fair[ti][k].med);
        printf("\n");
    }
    printf("\nsleeps: voluntary context switches per 1000 increments (getrusage RUSAGE_THREAD);\n"
           "ks futex: ks_mutex's FUTEX_WAIT / FUTEX_WAKE calls per 1000 increments (ks_futex_stats)\n%-11s", "T");
    for (int k = 0; k < NK; k++)
        printf(" %16s", kinds[k].name);
    printf(" %16s %16s\n", "ks futex waits", "ks futex wakes");
    for (int ti = 0; ti < NT; ti++) {
        printf("%-11d", bopt.tlist[ti]);
        for (int k = 0; k < NK; k++)
            printf(" %16.3f", sleeps[ti][k].med);
        printf(" %16.3f %16.3f\n", waits[ti].med, wakes[ti].med);
    }
#undef RES

    if (bopt.counter_apart || hold_iters || work_iters) {
        /* the targets are set for the default layout; the ratio table above has the figures */
        printf("(no target lines with --counter-apart or --counter-*-ns: they are set for the counter\n"
               "beside the lock and no work)\n");
    } else {
        bench_target("contended counter, 2 threads: ks_mutex / pthread", ratio2, ">=", 1.2, "x");
        bench_target("contended counter, 16 threads: ks_mutex / pthread", ratio16, ">=", 1.0, "x");
    }
    free(res);
    free(st);
    free(fair);
    free(sleeps);
    free(waits);
    free(wakes);
}

/* stress/b_cpu.c - section 4: CPU burnt by a thread that is blocked.
 *
 * The main thread takes the object (locks the mutex, or takes the one unit
 * of a semaphore initialised to 1, leaving it at 0), starts one thread that
 * calls lock / wait on it, sleeps --seconds, then releases it.  The figure is
 * the blocked thread's CLOCK_THREAD_CPUTIME_ID over its wall time from just
 * before the call until just after it returned, in percent.  For ksync the
 * number of futex waits the call made is shown too (one sleep is ideal).
 *
 * Then the spin policy's two behaviours (docs/spin.md): a ping-pong in
 * which the partner answers D after it was asked.  Thread A posts to B and
 * waits; B waits, busy-waits D (on the clock), posts to A.  For each D the
 * rows give A's sleeps (voluntary context switches) per round trip and the
 * CPU A burnt while waiting, as a share of its waiting time.  A partner a
 * few microseconds away should be spun for (no sleep: a sleep and a wake-up
 * cost more than the wait), one a millisecond away should not (the waiter
 * sleeps and burns almost nothing).  ks_sem against glibc's sem_t, which
 * never spins.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define CPU_KIND(name)                                     \
    static void body_##name(bench_thr_t *t)               \
    {                                                     \
        bench_ctx_t ctx;                                  \
        memset(&ctx, 0, sizeof ctx);                      \
        name##_b_acq(t->arg, &ctx);                       \
        t->ops = 1;                                       \
        name##_b_rel(t->arg, &ctx);                       \
    }                                                     \
    static void take_##name(void *l)                      \
    {                                                     \
        bench_ctx_t ctx;                                  \
        name##_b_init(l);                                 \
        name##_b_acq(l, &ctx);                            \
    }                                                     \
    static void release_##name(void *l)                   \
    {                                                     \
        bench_ctx_t ctx;                                  \
        name##_b_rel(l, &ctx);                            \
    }
CPU_KIND(ks_mutex)
CPU_KIND(pthread_mutex)
CPU_KIND(ks_sem)
CPU_KIND(sem_t)

static const struct pkind {
    const char *name;
    void (*take)(void *l);
    void (*release)(void *l);
    void (*body)(bench_thr_t *t);
    int ksync;
} kinds[] = {
    {"ks_mutex_lock", take_ks_mutex, release_ks_mutex, body_ks_mutex, 1},
    {"pthread_mutex_lock", take_pthread_mutex, release_pthread_mutex, body_pthread_mutex, 0},
    {"ks_sem_wait (value 0)", take_ks_sem, release_ks_sem, body_ks_sem, 1},
    {"sem_wait (value 0)", take_sem_t, release_sem_t, body_sem_t, 0},
};
#define NK ((int)(sizeof kinds / sizeof kinds[0]))

static bench_lock_t obj __attribute__((aligned(KS_CACHELINE)));

/* ---- the partner D away ---- */

static const int64_t partner_us[] = {0, 5, 20, 50, 200, 1000};
#define ND ((int)(sizeof partner_us / sizeof partner_us[0]))

static struct partner {
    int ksync;
    int64_t delay_ns;
    bench_lock_t to_a, to_b;
    /* A's figures, written by A, read by main after the join */
    uint64_t rounds, sleeps;
    int64_t wait_ns, wait_cpu_ns;
} pp __attribute__((aligned(KS_CACHELINE)));

static void pp_post(bench_lock_t *l)
{
    if (pp.ksync)
        ks_sem_post(&l->kss);
    else
        sem_post(&l->ps);
}

static void pp_wait(bench_lock_t *l)
{
    if (pp.ksync)
        ks_sem_wait(&l->kss);
    else
        while (sem_wait(&l->ps) != 0)
            ;
}

static uint64_t my_vcsw(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return (uint64_t)ru.ru_nvcsw;
}

/* Thread 0 is A, thread 1 is B.  The stop: A stops asking and posts B once
 * more, so B's last wait ends; B, seeing the flag, answers once more without
 * the delay, in case A still waits for the round in progress. */
static void pp_body(bench_thr_t *t)
{
    if (t->id == 0) {
        while (!bench_stopped()) {
            pp_post(&pp.to_b);
            uint64_t s0 = my_vcsw();
            /* the wall interval encloses the CPU one, clock reads included */
            int64_t t0 = bench_now(), c0 = bench_thread_cpu();
            pp_wait(&pp.to_a);
            int64_t c1 = bench_thread_cpu(), t1 = bench_now();
            pp.wait_ns += t1 - t0;
            pp.wait_cpu_ns += c1 - c0;
            pp.sleeps += my_vcsw() - s0;
            pp.rounds++;
        }
        pp_post(&pp.to_b); /* B's last wait */
        t->ops = pp.rounds;
    } else {
        for (;;) {
            pp_wait(&pp.to_b);
            if (bench_stopped()) {
                pp_post(&pp.to_a); /* A may be waiting for this round's answer */
                break;
            }
            int64_t until = bench_now() + pp.delay_ns;
            while (bench_now() < until)
                ks_cpu_relax();
            pp_post(&pp.to_a);
        }
    }
}

static void bench_partner(void)
{
    const int R = bopt.reps;
    struct {
        double rt, sleeps, cpu;
    } res[2][ND][BENCH_MAX_REPS];
    /* What a fixed round count of the spin-wait hint would last here
     * (docs/spin.md): the median of 5 timings of 2M ks_cpu_relax(). */
    double relax[5];
    for (int i = 0; i < 5; i++) {
        int64_t t0 = bench_now();
        for (int k = 0; k < 2000000; k++)
            ks_cpu_relax();
        relax[i] = (double)(bench_now() - t0) / 2e6;
    }
    printf("\nks_cpu_relax() (x86-64 pause, AArch64 yield): %.1f ns, so 100 rounds last %.2f us\n",
           bench_stats(relax, 5).med, bench_stats(relax, 5).med * 100 / 1000);
    printf("\nA waiter whose partner answers D after it is asked (A posts to B and waits; B busy-waits D,\n"
           "posts to A); %.2f s per run, 2 threads%s\n", bopt.seconds / BENCH_SHORT_DIV,
           bopt.pin == PIN_NEVER ? "" : ", pinned if the machine has 2 CPUs");
    for (int r = 0; r < R; r++)
        for (int k = 0; k < 2; k++)
            for (int d = 0; d < ND; d++) {
                memset(&pp, 0, sizeof pp);
                pp.ksync = k == 0;
                pp.delay_ns = partner_us[d] * 1000;
                if (pp.ksync) {
                    ks_sem_init(&pp.to_a.kss, 0, 0);
                    ks_sem_init(&pp.to_b.kss, 0, 0);
                } else {
                    sem_init(&pp.to_a.ps, 0, 0);
                    sem_init(&pp.to_b.ps, 0, 0);
                }
                struct bench_team team = {
                    .n = 2, .body = pp_body, .cap_ns = (int64_t)(bopt.seconds / BENCH_SHORT_DIV * 1e9),
                };
                bench_team_run(&team);
                double n = pp.rounds ? (double)pp.rounds : 1;
                res[k][d][r].rt = (double)pp.rounds / ((double)team.elapsed_ns / 1e9);
                res[k][d][r].sleeps = (double)pp.sleeps / n;
                res[k][d][r].cpu = pp.wait_ns > 0 ? 100.0 * (double)pp.wait_cpu_ns / (double)pp.wait_ns : 0;
                bench_team_free(&team);
                if (!pp.ksync) {
                    sem_destroy(&pp.to_a.ps);
                    sem_destroy(&pp.to_b.ps);
                }
            }
    printf("\n%-8s %-7s %14s %12s %16s\n", "D", "impl", "round trips/s", "A sleeps/rt", "A CPU % waiting");
    double ks_sleeps[ND], ks_cpu[ND];
    for (int d = 0; d < ND; d++)
        for (int k = 0; k < 2; k++) {
            char label[64];
            snprintf(label, sizeof label, "partner %lld us %s", (long long)partner_us[d], k ? "sem_t" : "ks_sem");
            struct bench_stat rt = BENCH_STATS_OF(label, res[k][d][0], rt, R);
            struct bench_stat sl = BENCH_STATS_OF(label, res[k][d][0], sleeps, R);
            struct bench_stat cpu = BENCH_STATS_OF(label, res[k][d][0], cpu, R);
            printf("%5lld us %-7s %14.0f %12.3f %16.1f\n", (long long)partner_us[d], k ? "sem_t" : "ks_sem",
                   rt.med, sl.med, cpu.med);
            if (k == 0) {
                ks_sleeps[d] = sl.med;
                ks_cpu[d] = cpu.med;
            }
        }
    printf("(A sleeps/rt: A's voluntary context switches per round trip; A CPU %% waiting: A's thread CPU\n"
           " time inside its waits / their wall time)\n");
    bench_target("partner 20 us away: ks_sem waiter sleeps per round trip", ks_sleeps[2], "<=", 0.1, "");
    bench_target("partner 1 ms away: ks_sem waiter CPU % while waiting", ks_cpu[ND - 1], "<", 10.0, "%");
}

void bench_cpu(void)
{
    const int R = bopt.reps;
    double *pct = calloc((size_t)(NK * R), sizeof *pct);
    double *wall = calloc((size_t)(NK * R), sizeof *wall);
    double *waits = calloc((size_t)(NK * R), sizeof *waits);
    double v[1000];
    struct bench_stat p[NK], w[NK], fw[NK];

    bench_section("4");

    printf("\n== 4. CPU used by a thread blocked %.2f s (thread CPU time / its wall time) ==\n", bopt.seconds);
    for (int r = 0; r < R; r++)
        for (int k = 0; k < NK; k++) {
            struct bench_team team = {
                .n = 1, .body = kinds[k].body, .arg = &obj,
                .cap_ns = (int64_t)(bopt.seconds * 1e9), .release = kinds[k].release,
            };
            memset(&obj, 0, sizeof obj);
            kinds[k].take(&obj);
            bench_team_run(&team);
            bench_thr_t *t = &team.thr[0];
            if (t->ops != 1)
                bench_fail("%s: the blocked thread never got through", kinds[k].name);
            double dt = (double)(t->end_ns - t->begin_ns);
            pct[k * R + r] = dt > 0 ? 100.0 * (double)t->cpu_ns / dt : 0;
            wall[k * R + r] = dt / 1e9;
            waits[k * R + r] = (double)t->fx.waits;
            bench_team_free(&team);
        }
    for (int k = 0; k < NK; k++) {
        memcpy(v, &pct[k * R], (size_t)R * sizeof *v);
        p[k] = bench_stats_l(kinds[k].name, v, R);
        memcpy(v, &wall[k * R], (size_t)R * sizeof *v);
        w[k] = bench_stats(v, R);
        memcpy(v, &waits[k * R], (size_t)R * sizeof *v);
        fw[k] = bench_stats(v, R);
    }
    printf("\n%-24s %10s %10s %10s %12s\n", "blocked in", "CPU %", "max CPU %", "blocked s", "futex waits");
    for (int k = 0; k < NK; k++) {
        printf("%-24s %10.4f %10.4f %10.3f", kinds[k].name, p[k].med, p[k].max, w[k].med);
        if (kinds[k].ksync)
            printf(" %12.0f\n", fw[k].med);
        else
            printf(" %12s\n", "(glibc)");
    }
    printf("ksync/glibc CPU: mutex %.3g, semaphore %.3g (below 1 = ksync burns less)\n",
           p[1].med > 0 ? p[0].med / p[1].med : NAN, p[3].med > 0 ? p[2].med / p[3].med : NAN);

    bench_partner();
    bench_target("blocked in ks_mutex_lock: CPU % of wall time", p[0].med, "<", 10.0, "%");
    bench_target("blocked in ks_sem_wait: CPU % of wall time", p[2].med, "<", 10.0, "%");
    free(pct);
    free(wall);
    free(waits);
}

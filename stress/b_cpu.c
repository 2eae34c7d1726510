/* stress/b_cpu.c - section 4: CPU burnt by a thread that is blocked.
 *
 * The main thread takes the object (locks the mutex, or takes the one unit
 * of a semaphore initialised to 1, leaving it at 0), starts one thread that
 * calls lock / wait on it, sleeps --seconds, then releases it.  The figure is
 * the blocked thread's CLOCK_THREAD_CPUTIME_ID over its wall time from just
 * before the call until just after it returned, in percent.  For ksync the
 * number of futex waits the call made is shown too (one sleep is ideal).
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void bench_cpu(void)
{
    const int R = bopt.reps;
    double *pct = calloc((size_t)(NK * R), sizeof *pct);
    double *wall = calloc((size_t)(NK * R), sizeof *wall);
    double *waits = calloc((size_t)(NK * R), sizeof *waits);
    double v[1000];
    struct bench_stat p[NK], w[NK], fw[NK];

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

    bench_target("blocked in ks_mutex_lock: CPU % of wall time", p[0].med, "<", 10.0, "%");
    bench_target("blocked in ks_sem_wait: CPU % of wall time", p[2].med, "<", 10.0, "%");
    free(pct);
    free(wall);
    free(waits);
}

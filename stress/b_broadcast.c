/* stress/b_broadcast.c - section 8: condition-variable broadcast to 16
 * waiters.
 *
 * Team thread 0 broadcasts; threads 1..16 wait.  Under one mutex:
 *   waiter:       in++ (the last one to arrive signals all_in);
 *                 while (gen == mine) wait(c);  mine = gen
 *   broadcaster:  while (in < 16) wait(all_in);  in = 0; gen++; broadcast(c)
 * so every broadcast finds all 16 inside wait(c) (each registered before it
 * released the mutex) and every waiter sees every generation.  To stop, the
 * broadcaster sets quit with the last generation.  Compared: ks_cond with
 * ks_mutex, and pthread_cond with pthread_mutex (default attributes).
 *
 * Reported per broadcast:
 *   - for ks_cond, the futex calls made inside ks_cond_broadcast (the
 *     broadcaster's ks_futex_stats().wakes delta around the call) and the
 *     threads they woke or moved (.woken): with requeue, one FUTEX_CMP_REQUEUE
 *     wakes one waiter and moves the others onto the mutex word, where the
 *     unlocks wake them one at a time;
 *   - for ks_cond, every futex call of every thread (the hand-on wakes by
 *     unlocks, the all_in signal, the sleeps);
 *   - for both, voluntary context switches of all 17 threads (getrusage
 *     RUSAGE_THREAD): glibc's broadcast wakes all 16, which then queue on
 *     the mutex, so each may sleep twice per round; no strace is needed.
 * Integrity: each waiter must have seen exactly broadcasts - 1 generations
 * (the last one only says quit).
 */
#include "bench.h"

#include <ksync/cond.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BC_WAITERS 16

struct bc_obj {
    union {
        struct {
            ks_mutex_t m;
            ks_cond_t c, all_in;
        } ks;
        struct {
            pthread_mutex_t m;
            pthread_cond_t c, all_in;
        } pt;
    } u;
    uint64_t gen; /* under m */
    int in;       /* waiters back in wait(c) since the last broadcast, under m */
    int quit;     /* under m */
    /* the broadcaster's own, read after the join */
    uint64_t broadcasts __attribute__((aligned(KS_CACHELINE)));
    struct ks_futex_stats in_bc; /* futex calls inside broadcast(), summed */
};

/* The round protocol, for either pair of mutex and condvar. */
#define BC_KIND(name, M, C, init_m, init_c, lock, unlock, wait, signal, broadcast) \
    static void name##_bc_init(struct bc_obj *o)                                  \
    {                                                                             \
        init_m(&o->u.M.m);                                                        \
        init_c(&o->u.C.c);                                                        \
        init_c(&o->u.C.all_in);                                                   \
    }                                                                             \
    static void body_##name(bench_thr_t *t)                                       \
    {                                                                             \
        struct bc_obj *o = t->arg;                                                \
        uint64_t n = 0;                                                           \
        lock(&o->u.M.m);                                                          \
        if (t->id == 0) {                                                         \
            struct ks_futex_stats f0, f1;                                         \
            for (;;) {                                                            \
                while (o->in < BC_WAITERS)                                        \
                    wait(&o->u.C.all_in, &o->u.M.m);                              \
                o->in = 0;                                                        \
                o->gen++;                                                         \
                const int last = bench_stopped();                                 \
                o->quit = last;                                                   \
                ks_futex_stats(&f0);                                              \
                broadcast(&o->u.C.c);                                             \
                ks_futex_stats(&f1);                                              \
                o->in_bc.waits += f1.waits - f0.waits;                            \
                o->in_bc.wakes += f1.wakes - f0.wakes;                            \
                o->in_bc.woken += f1.woken - f0.woken;                            \
                o->broadcasts++;                                                  \
                if (last)                                                         \
                    break;                                                        \
            }                                                                     \
        } else {                                                                  \
            uint64_t mine = o->gen;                                               \
            for (;;) {                                                            \
                if (++o->in == BC_WAITERS)                                        \
                    signal(&o->u.C.all_in);                                       \
                while (o->gen == mine)                                            \
                    wait(&o->u.C.c, &o->u.M.m);                                   \
                mine = o->gen;                                                    \
                if (o->quit)                                                      \
                    break;                                                        \
                n++;                                                              \
            }                                                                     \
        }                                                                         \
        unlock(&o->u.M.m);                                                        \
        t->ops = n;                                                               \
    }
#define KS_M_INIT(m) ks_mutex_init(m, KS_PRIVATE)
#define KS_C_INIT(c) ks_cond_init(c, KS_PRIVATE)
#define PT_M_INIT(m) pthread_mutex_init(m, NULL)
#define PT_C_INIT(c) pthread_cond_init(c, NULL)
BC_KIND(ks, ks, ks, KS_M_INIT, KS_C_INIT, ks_mutex_lock, ks_mutex_unlock, ks_cond_wait, ks_cond_signal,
        ks_cond_broadcast)
BC_KIND(pt, pt, pt, PT_M_INIT, PT_C_INIT, pthread_mutex_lock, pthread_mutex_unlock, pthread_cond_wait,
        pthread_cond_signal, pthread_cond_broadcast)
#undef KS_M_INIT
#undef KS_C_INIT
#undef PT_M_INIT
#undef PT_C_INIT

static const struct bckind {
    const char *name;
    void (*init)(struct bc_obj *o);
    void (*body)(bench_thr_t *t);
} kinds[] = {
    {"ks_cond+ks_mutex", ks_bc_init, body_ks}, /* first: the ksync row */
    {"pthread_cond+mutex", pt_bc_init, body_pt},
};
#define NK ((int)(sizeof kinds / sizeof kinds[0]))

static struct bc_obj obj;

struct bc_result {
    double rate;                   /* broadcasts/s */
    double bc_wakes, bc_woken;     /* inside broadcast(), per broadcast */
    double bcaster_wakes;          /* all the broadcaster's wakes, per broadcast */
    double all_waits, all_wakes;   /* every thread's futex calls, per broadcast */
    double sleeps, waiter_sleeps;  /* voluntary context switches: all threads, waiters only */
};

static struct bc_result run_once(const struct bckind *k)
{
    struct bc_result res;
    struct bench_team team = {
        .n = 1 + BC_WAITERS, .body = k->body, .arg = &obj,
        .cap_ns = (int64_t)(bopt.seconds * 1e9 / BENCH_SHORT_DIV),
    };
    memset(&obj, 0, sizeof obj);
    k->init(&obj);
    bench_team_run(&team);
    const uint64_t nb = obj.broadcasts;
    if (nb < 2)
        bench_fail("%s: %llu broadcasts in %.2f s", k->name, (unsigned long long)nb,
                   (double)team.elapsed_ns / 1e9);
    uint64_t sleeps = 0, wsleeps = 0, waits = 0, wakes = 0;
    for (int i = 0; i < team.n; i++) {
        if (i > 0 && team.thr[i].ops != nb - 1)
            bench_fail("%s: waiter %d saw %llu generations of %llu", k->name, i,
                       (unsigned long long)team.thr[i].ops, (unsigned long long)(nb - 1));
        sleeps += team.thr[i].vcsw;
        wsleeps += i > 0 ? team.thr[i].vcsw : 0;
        waits += team.thr[i].fx.waits;
        wakes += team.thr[i].fx.wakes;
    }
    res.rate = (double)nb / ((double)team.elapsed_ns / 1e9);
    res.bc_wakes = (double)obj.in_bc.wakes / (double)nb;
    res.bc_woken = (double)obj.in_bc.woken / (double)nb;
    res.bcaster_wakes = (double)team.thr[0].fx.wakes / (double)nb;
    res.all_waits = (double)waits / (double)nb;
    res.all_wakes = (double)wakes / (double)nb;
    res.sleeps = (double)sleeps / (double)nb;
    res.waiter_sleeps = (double)wsleeps / (double)nb;
    bench_team_free(&team);
    return res;
}

void bench_broadcast(void)
{
    const int R = bopt.reps;
    struct bc_result *res = calloc((size_t)(NK * R), sizeof *res);
    struct bench_stat rate[NK], slp[NK], wslp[NK], bcw, bcwoken, bcaster, aw, ak;
#define RES(k, r) res[(k) * R + (r)]

    bench_section("8");

    printf("\n== 8. Broadcast to %d waiters: 1 broadcaster, %d threads in cond wait, one mutex ==\n", BC_WAITERS,
           BC_WAITERS);
    printf("%.2f s per run; each broadcast finds all %d waiters inside wait; %ld CPUs online\n",
           bopt.seconds / BENCH_SHORT_DIV, BC_WAITERS, sysconf(_SC_NPROCESSORS_ONLN));
    for (int r = 0; r < R; r++)
        for (int k = 0; k < NK; k++)
            RES(k, r) = run_once(&kinds[k]);
    for (int k = 0; k < NK; k++) {
        char label[64];
        snprintf(label, sizeof label, "%s broadcasts/s", kinds[k].name);
        rate[k] = BENCH_STATS_OF(label, RES(k, 0), rate, R);
        slp[k] = BENCH_STATS_OF(NULL, RES(k, 0), sleeps, R);
        wslp[k] = BENCH_STATS_OF(NULL, RES(k, 0), waiter_sleeps, R);
    }
    /* kinds[0] is ks_cond */
    bcw = BENCH_STATS_OF("ks_cond_broadcast futex calls/broadcast", RES(0, 0), bc_wakes, R);
    bcwoken = BENCH_STATS_OF(NULL, RES(0, 0), bc_woken, R);
    bcaster = BENCH_STATS_OF(NULL, RES(0, 0), bcaster_wakes, R);
    aw = BENCH_STATS_OF(NULL, RES(0, 0), all_waits, R);
    ak = BENCH_STATS_OF(NULL, RES(0, 0), all_wakes, R);

    printf("\n%-20s %13s %7s %20s %22s\n", "implementation", "broadcasts/s", "spread", "sleeps/bc (all 17)",
           "sleeps/bc (16 waiters)");
    for (int k = 0; k < NK; k++)
        printf("%-20s %13.0f %6.0f%% %20.2f %22.2f\n", kinds[k].name, rate[k].med, bench_spread(rate[k]), slp[k].med,
               wslp[k].med);
    printf("(sleeps/bc: voluntary context switches per broadcast, getrusage RUSAGE_THREAD summed over\n"
           " the threads; a waiter that sleeps once per round counts 1)\n");
    printf("\nks_cond futex calls per broadcast (ks_futex_stats):\n");
    printf("  inside ks_cond_broadcast:       %6.3f wake calls (FUTEX_CMP_REQUEUE), %.2f threads woken or moved\n",
           bcw.med, bcwoken.med);
    printf("  broadcaster in all:             %6.3f wake calls (its broadcast, and its unlocks in wait)\n",
           bcaster.med);
    printf("  all %d threads:                 %6.3f wake calls, %.3f wait calls\n", 1 + BC_WAITERS, ak.med,
           aw.med);
    printf("ratio ks/pthread: broadcasts/s %.2f, sleeps per broadcast %.2f\n", rate[0].med / rate[1].med,
           slp[1].med > 0 ? slp[0].med / slp[1].med : NAN);
#undef RES

    bench_target("broadcast to 16: wake calls inside ks_cond_broadcast", bcw.med, "<=", 1.0, "");
    bench_target("broadcast to 16: ks / pthread broadcasts/s", rate[0].med / rate[1].med, ">=", 1.0, "x");
    free(res);
}

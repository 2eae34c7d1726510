/* stress/b_barrier.c - section 6: barrier episodes per second.
 *
 * N threads (2, then 8) do nothing but meet at a reusable barrier: one
 * episode (phase) is one barrier crossing by all N.  Compared: ks_barrier,
 * pthread_barrier, and every Concurrency Kit barrier (centralized,
 * combining tree in groups of 2, dissemination, tournament, MCS; the
 * adapters, shared with S19, are ref_barrier.h's).
 *
 * Stopping: a barrier cannot be abandoned mid-phase (a thread that stops
 * arriving leaves the others waiting for good, spinning in CK's case), so
 * thread 0 decides for everyone: before arriving at barrier k it reads the
 * team's stop flag and, if raised, writes quit_at = k; every thread reads
 * quit_at after barrier k (the barrier orders the write before the reads)
 * and all leave after the same phase.  CK's barriers spin, so with more
 * threads than CPUs a phase needs every spinner to be scheduled in turn and
 * they collapse; the time cap still ends the run after the phase in progress
 * and the rate (phases / (start .. last thread out)) is the partial one.
 *
 * Integrity: every thread must have crossed the same number of barriers,
 * and where the API names a serial thread (ksync, pthread) there must be
 * exactly one per phase in total.
 */
#include "bench.h"
#include "ref_barrier.h"

#include <ksync/barrier.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const int bar_threads[] = {2, 8};
#define NT ((int)(sizeof bar_threads / sizeof bar_threads[0]))

struct bar_obj {
    unsigned n;
    int pt_live; /* pt was initialised */
    ks_barrier_t ks;
    pthread_barrier_t pt;
    struct ckb ck; /* the Concurrency Kit barriers (ref_barrier.h) */
    /* thread 0 -> all: the last phase; written before a barrier, read after */
    uint64_t quit_at __attribute__((aligned(KS_CACHELINE)));
    uint64_t serials __attribute__((aligned(KS_CACHELINE))); /* summed after the run */
};

static void *bar_alloc(size_t size)
{
    void *p = calloc(1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "ksync-bench: out of memory\n");
        exit(1);
    }
    return p;
}

/* name_bar_init(o), name_bar_join(o, me, id) in the thread, name_bar_wait(o,
 * me): 1 if this caller is the phase's serial thread, else 0. */
static void no_join(struct bar_obj *o, struct ckb_me *me, int id)
{
    (void)o, (void)me, (void)id;
}

static void ks_bar_init(struct bar_obj *o) { ks_barrier_init(&o->ks, o->n, KS_PRIVATE); }
#define ks_bar_join no_join
static inline int ks_bar_wait(struct bar_obj *o, struct ckb_me *me)
{
    (void)me;
    return ks_barrier_wait(&o->ks) == KS_BARRIER_SERIAL;
}

static void pt_bar_init(struct bar_obj *o) { o->pt_live = pthread_barrier_init(&o->pt, NULL, o->n) == 0; }
#define pt_bar_join no_join
static inline int pt_bar_wait(struct bar_obj *o, struct ckb_me *me)
{
    (void)me;
    return pthread_barrier_wait(&o->pt) == PTHREAD_BARRIER_SERIAL_THREAD;
}

/* Concurrency Kit: ref_barrier.h's adapters (static inline) on o->ck */
#define CK_BAR(name)                                                                 \
    static void name##_bar_init(struct bar_obj *o)                                   \
    {                                                                                \
        ckb_##name##_init(&o->ck, o->n, bar_alloc);                                  \
    }                                                                                \
    static inline void name##_bar_join(struct bar_obj *o, struct ckb_me *me, int id) \
    {                                                                                \
        ckb_##name##_join(&o->ck, me, (unsigned)id);                                 \
    }                                                                                \
    static inline int name##_bar_wait(struct bar_obj *o, struct ckb_me *me)          \
    {                                                                                \
        ckb_##name##_wait(&o->ck, me);                                               \
        return 0;                                                                    \
    }
CK_BAR(cen)
CK_BAR(comb)
CK_BAR(dis)
CK_BAR(tour)
CK_BAR(mcs)

static void bar_free(struct bar_obj *o)
{
    ckb_free(&o->ck);
    if (o->pt_live)
        pthread_barrier_destroy(&o->pt);
}

#define BAR_BODY(name)                                                               \
    static void body_##name(bench_thr_t *t)                                          \
    {                                                                                \
        struct bar_obj *o = t->arg;                                                  \
        struct ckb_me me;                                                            \
        uint64_t k, serial = 0;                                                      \
        memset(&me, 0, sizeof me);                                                   \
        name##_bar_join(o, &me, t->id);                                              \
        for (k = 0;; k++) {                                                          \
            /* relaxed: barrier k orders it before every read below. */              \
            if (t->id == 0 && bench_stopped())                                       \
                __atomic_store_n(&o->quit_at, k, __ATOMIC_RELAXED);                  \
            serial += (uint64_t)name##_bar_wait(o, &me);                             \
            if (__atomic_load_n(&o->quit_at, __ATOMIC_RELAXED) <= k)                 \
                break;                                                               \
        }                                                                            \
        t->ops = k + 1;                                                              \
        __atomic_fetch_add(&o->serials, serial, __ATOMIC_RELAXED);                   \
    }
BAR_BODY(ks)
BAR_BODY(pt)
BAR_BODY(cen)
BAR_BODY(comb)
BAR_BODY(dis)
BAR_BODY(tour)
BAR_BODY(mcs)

enum { K_KS, K_PT, K_CK0 };
static const struct bkind {
    const char *name;
    void (*init)(struct bar_obj *o);
    void (*body)(bench_thr_t *t);
    int serial; /* the API names one serial thread per phase */
} kinds[] = {
    {"ks_barrier", ks_bar_init, body_ks, 1}, /* first: the numerator of the ratios */
    {"pthread_barrier", pt_bar_init, body_pt, 1},
    {"ck_centralized", cen_bar_init, body_cen, 0},
    {"ck_combining", comb_bar_init, body_comb, 0},
    {"ck_dissemination", dis_bar_init, body_dis, 0},
    {"ck_tournament", tour_bar_init, body_tour, 0},
    {"ck_mcs", mcs_bar_init, body_mcs, 0},
};
#define NK ((int)(sizeof kinds / sizeof kinds[0]))

static struct bar_obj obj;

struct bar_result {
    double rate, phases, sleeps, waits, wakes, cpu_share; /* sleeps..wakes: per phase, all threads */
    int pinned;
};

static struct bar_result run_once(const struct bkind *k, int nthreads)
{
    struct bar_result res;
    struct bench_team team = {
        .n = nthreads, .body = k->body, .arg = &obj, .cap_ns = (int64_t)(bopt.seconds * 1e9 / BENCH_SHORT_DIV),
    };
    memset(&obj, 0, sizeof obj);
    obj.n = (unsigned)nthreads;
    obj.quit_at = UINT64_MAX;
    k->init(&obj);
    bench_team_run(&team);
    uint64_t phases = team.thr[0].ops, sleeps = 0, waits = 0, wakes = 0;
    int64_t cpu = 0;
    for (int i = 0; i < nthreads; i++) {
        if (team.thr[i].ops != phases)
            bench_fail("%s, %d threads: thread %d crossed %llu barriers, thread 0 %llu", k->name, nthreads, i,
                       (unsigned long long)team.thr[i].ops, (unsigned long long)phases);
        sleeps += team.thr[i].vcsw;
        waits += team.thr[i].fx.waits;
        wakes += team.thr[i].fx.wakes;
        cpu += team.thr[i].cpu_ns;
    }
    if (k->serial && obj.serials != phases)
        bench_fail("%s, %d threads: %llu serial returns in %llu phases", k->name, nthreads,
                   (unsigned long long)obj.serials, (unsigned long long)phases);
    res.phases = (double)phases;
    res.rate = (double)phases / ((double)team.elapsed_ns / 1e9);
    res.sleeps = (double)sleeps / (double)phases;
    res.waits = (double)waits / (double)phases;
    res.wakes = (double)wakes / (double)phases;
    res.cpu_share = 100.0 * (double)cpu / ((double)team.elapsed_ns * (double)sysconf(_SC_NPROCESSORS_ONLN));
    res.pinned = team.pinned;
    bench_team_free(&team);
    bar_free(&obj);
    return res;
}

void bench_barrier(void)
{
    const int R = bopt.reps;
    struct bar_result *res = calloc((size_t)(NT * NK * R), sizeof *res);
    struct bench_stat rate[NT][NK], phases[NT][NK], slp[NT][NK], cpu[NT][NK], waits[NT], wakes[NT];
#define RES(ti, k, r) res[((ti) * NK + (k)) * R + (r)]

    bench_section("6");

    printf("\n== 6. Barrier: N threads cross a reusable barrier (episodes/s, higher is better) ==\n");
    printf("%.2f s per run (CK's spinning barriers end after the phase in progress: partial rate);\n"
           "rate = phases / (start .. last thread out); %ld CPUs online\n",
           bopt.seconds / BENCH_SHORT_DIV, sysconf(_SC_NPROCESSORS_ONLN));
    for (int ti = 0; ti < NT; ti++) {
        for (int r = 0; r < R; r++)
            for (int k = 0; k < NK; k++)
                RES(ti, k, r) = run_once(&kinds[k], bar_threads[ti]);
        for (int k = 0; k < NK; k++) {
            char label[64];
            snprintf(label, sizeof label, "N=%d %s phases/s", bar_threads[ti], kinds[k].name);
            rate[ti][k] = BENCH_STATS_OF(label, RES(ti, k, 0), rate, R);
            phases[ti][k] = BENCH_STATS_OF(NULL, RES(ti, k, 0), phases, R);
            slp[ti][k] = BENCH_STATS_OF(NULL, RES(ti, k, 0), sleeps, R);
            cpu[ti][k] = BENCH_STATS_OF(NULL, RES(ti, k, 0), cpu_share, R);
        }
        waits[ti] = BENCH_STATS_OF(NULL, RES(ti, K_KS, 0), waits, R);
        wakes[ti] = BENCH_STATS_OF(NULL, RES(ti, K_KS, 0), wakes, R);
    }

    for (int ti = 0; ti < NT; ti++) {
        printf("\nN = %d threads (pinned: %s)\n", bar_threads[ti], RES(ti, 0, 0).pinned ? "yes" : "no");
        printf("%-18s %13s %7s %9s %10s %11s %9s\n", "implementation", "phases/s", "spread", "phases",
               "ks/ref", "sleeps/ph", "CPU used");
        for (int k = 0; k < NK; k++) {
            printf("%-18s %13.0f %6.0f%% %9.0f ", kinds[k].name, rate[ti][k].med, bench_spread(rate[ti][k]),
                   phases[ti][k].med);
            if (k)
                printf("%10.2f", rate[ti][K_KS].med / rate[ti][k].med);
            else
                printf("%10s", "");
            printf(" %11.3f %8.0f%%\n", slp[ti][k].med, cpu[ti][k].med);
        }
        printf("ks_barrier futex calls per phase (all threads): %.3f waits, %.3f wakes\n", waits[ti].med,
               wakes[ti].med);
        if (RES(ti, 0, 0).pinned && waits[ti].med >= 0.5 && bar_threads[ti] <= sysconf(_SC_NPROCESSORS_ONLN))
            printf("note: ks_barrier slept in most phases although all %d threads have a CPU: it spins only\n"
                   "if count <= the CPUs the calling thread may use (its own affinity mask), and a pinned\n"
                   "thread may use one; --pin never lets it spin\n", bar_threads[ti]);
    }
    printf("(phases: median count per run; sleeps/ph: voluntary context switches of all threads per\n"
           " phase, getrusage RUSAGE_THREAD; CPU used: all threads' CPU time / (wall x nproc))\n");

    for (int ti = 0; ti < NT; ti++) {
        char what[96];
        const int n = bar_threads[ti];
        if (n == 2) {
            bench_target("barrier, 2 threads: ks_barrier / pthread_barrier", rate[ti][K_KS].med / rate[ti][K_PT].med,
                         ">=", 10.0, "x");
        } else {
            snprintf(what, sizeof what, "barrier, %d threads: ks_barrier / pthread_barrier", n);
            bench_target(what, rate[ti][K_KS].med / rate[ti][K_PT].med, ">=", 1.0, "x");
            for (int k = K_CK0; k < NK; k++) {
                snprintf(what, sizeof what, "barrier, %d threads: ks_barrier / %s", n, kinds[k].name);
                bench_target(what, rate[ti][K_KS].med / rate[ti][k].med, ">=", 10.0, "x");
            }
        }
    }
#undef RES
    free(res);
}

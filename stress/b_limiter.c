/* stress/b_limiter.c - section 3: a semaphore used as a limiter.
 *
 * --lim-threads threads (16) share --permits permits (3); each loops
 * { wait; ~--work-ns of busy work; post; } until the stop flag.  Compared:
 * ks_sem, glibc's sem_t, and the textbook semaphore built from a
 * pthread_mutex and a pthread_cond (signal only when someone waits).
 *
 * Integrity: every holder increments an "inside" counter on entry and
 * decrements it before posting; more than --permits inside at once, or a
 * final value other than --permits, stops the program.  (The two relaxed
 * atomic operations are part of every implementation's work alike.)
 *
 * Bounds, with ks_sem: one thread alone (the ceiling is min(permits, CPUs)
 * times its rate), min(permits, CPUs) and one thread per permit (nobody
 * waits), and the loop with no semaphore at all (what no semaphore can
 * beat: the permit check's line is shared whatever limits the threads).
 *
 * Also reported: ks_sem's futex wakes per post and waits per wait, from
 * ks_futex_stats() summed over the threads, and for every implementation the
 * CPU time all threads used as a share of (wall time x nproc), and the work
 * done per CPU-second they used against the same figure of the loop alone:
 * when other processes load the machine, every Mops/s and the ceiling drop
 * by however much CPU the run was given, while work per CPU-second shows
 * what the synchronization itself costs.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cv_sem {
    pthread_mutex_t m;
    pthread_cond_t c;
    unsigned value;   /* guarded by m */
    unsigned waiters; /* guarded by m */
};

struct lim_obj {
    union {
        ks_sem_t ks;
        sem_t ps;
        struct cv_sem cv;
    } s;
} __attribute__((aligned(KS_CACHELINE)));

/* The permit check, on its own line.  Kept outside struct lim_obj: GCC 12
 * misreads atomics on a member reached through that pointer as overflows. */
static struct {
    int inside; /* holders right now */
    int worst;  /* most holders seen, when above the limit */
} guard __attribute__((aligned(KS_CACHELINE)));

static uint64_t work_iters;

static void ks_sem_l_init(struct lim_obj *o, unsigned v) { ks_sem_init(&o->s.ks, v, 0); }
static inline void ks_sem_l_wait(struct lim_obj *o) { ks_sem_wait(&o->s.ks); }
static inline void ks_sem_l_post(struct lim_obj *o) { ks_sem_post(&o->s.ks); }
static int ks_sem_l_value(struct lim_obj *o) { return ks_sem_value(&o->s.ks); }

static void sem_t_l_init(struct lim_obj *o, unsigned v) { sem_init(&o->s.ps, 0, v); }
static inline void sem_t_l_wait(struct lim_obj *o) { sem_wait(&o->s.ps); }
static inline void sem_t_l_post(struct lim_obj *o) { sem_post(&o->s.ps); }
static int sem_t_l_value(struct lim_obj *o)
{
    int v = -1;
    sem_getvalue(&o->s.ps, &v);
    return v;
}

static void cv_l_init(struct lim_obj *o, unsigned v)
{
    pthread_mutex_init(&o->s.cv.m, NULL);
    pthread_cond_init(&o->s.cv.c, NULL);
    o->s.cv.value = v;
    o->s.cv.waiters = 0;
}
static inline void cv_l_wait(struct lim_obj *o)
{
    struct cv_sem *s = &o->s.cv;
    pthread_mutex_lock(&s->m);
    while (s->value == 0) {
        s->waiters++;
        pthread_cond_wait(&s->c, &s->m);
        s->waiters--;
    }
    s->value--;
    pthread_mutex_unlock(&s->m);
}
static inline void cv_l_post(struct lim_obj *o)
{
    struct cv_sem *s = &o->s.cv;
    pthread_mutex_lock(&s->m);
    s->value++;
    if (s->waiters)
        pthread_cond_signal(&s->c);
    pthread_mutex_unlock(&s->m);
}
static int cv_l_value(struct lim_obj *o)
{
    return (int)o->s.cv.value; /* read after every thread was joined */
}

#define LIM_BODY(name)                                                          \
    static void body_##name(bench_thr_t *t)                                     \
    {                                                                           \
        struct lim_obj *o = t->arg;                                             \
        const int permits = bopt.permits;                                       \
        uint64_t n = 0;                                                         \
        while (!bench_stopped()) {                                              \
            name##_l_wait(o);                                                   \
            int in = __atomic_add_fetch(&guard.inside, 1, __ATOMIC_RELAXED);       \
            if (in > permits)                                                   \
                __atomic_store_n(&guard.worst, in, __ATOMIC_RELAXED);              \
            bench_spin(work_iters);                                             \
            __atomic_sub_fetch(&guard.inside, 1, __ATOMIC_RELAXED);                \
            name##_l_post(o);                                                   \
            n++;                                                                \
        }                                                                       \
        t->ops = n;                                                             \
    }
LIM_BODY(ks_sem)
LIM_BODY(sem_t)
LIM_BODY(cv)

/* No semaphore at all: the loop and its permit check alone.  Run with
 * min(permits, CPUs) threads, so the check still holds, it is what no
 * semaphore can beat on this machine: the permit check's line goes back and
 * forth between the CPUs whatever limits the threads. */
static void none_l_init(struct lim_obj *o, unsigned v) { (void)o, (void)v; }
static inline void none_l_wait(struct lim_obj *o) { (void)o; }
static inline void none_l_post(struct lim_obj *o) { (void)o; }
static int none_l_value(struct lim_obj *o) { return (void)o, bopt.permits; }
LIM_BODY(none)

static const struct lkind {
    const char *name;
    void (*init)(struct lim_obj *o, unsigned v);
    int (*value)(struct lim_obj *o);
    void (*body)(bench_thr_t *t);
} kinds[] = {
    {"ks_sem", ks_sem_l_init, ks_sem_l_value, body_ks_sem}, /* first: numerator of the ratios */
    {"sem_t", sem_t_l_init, sem_t_l_value, body_sem_t},
    {"mutex+condvar", cv_l_init, cv_l_value, body_cv},
};
#define NK ((int)(sizeof kinds / sizeof kinds[0]))
static const struct lkind no_sem = {"no semaphore", none_l_init, none_l_value, body_none};

static struct lim_obj obj;

struct lim_result {
    double mops, cpu_share, wakes_per_post, waits_per_wait, fair, sleeps_per_op;
    double per_cpu; /* Mops per second of CPU time the threads used */
};

static struct lim_result run_once(const struct lkind *k, int nthreads, double seconds)
{
    struct lim_result res;
    struct bench_team team = {
        .n = nthreads, .body = k->body, .arg = &obj, .cap_ns = (int64_t)(seconds * 1e9),
    };
    memset(&obj, 0, sizeof obj);
    memset(&guard, 0, sizeof guard);
    k->init(&obj, (unsigned)bopt.permits);
    bench_team_run(&team);
    if (guard.worst)
        bench_fail("%s: %d threads held one of %d permits at once", k->name, guard.worst, bopt.permits);
    if (guard.inside != 0 || k->value(&obj) != bopt.permits)
        bench_fail("%s: value %d after the run, expected %d", k->name, k->value(&obj), bopt.permits);
    uint64_t wakes = 0, waits = 0, sleeps = 0, lo = UINT64_MAX, hi = 0;
    int64_t cpu = 0;
    for (int i = 0; i < team.n; i++) {
        wakes += team.thr[i].fx.wakes;
        waits += team.thr[i].fx.waits;
        cpu += team.thr[i].cpu_ns;
        sleeps += team.thr[i].vcsw;
        lo = team.thr[i].ops < lo ? team.thr[i].ops : lo;
        hi = team.thr[i].ops > hi ? team.thr[i].ops : hi;
    }
    double secs = (double)team.elapsed_ns / 1e9;
    res.mops = (double)team.ops / secs / 1e6;
    res.cpu_share = 100.0 * (double)cpu / ((double)team.elapsed_ns * (double)sysconf(_SC_NPROCESSORS_ONLN));
    res.per_cpu = cpu > 0 ? (double)team.ops / ((double)cpu / 1e9) / 1e6 : 0;
    res.wakes_per_post = team.ops ? (double)wakes / (double)team.ops : 0;
    res.waits_per_wait = team.ops ? (double)waits / (double)team.ops : 0;
    res.sleeps_per_op = team.ops ? (double)sleeps / (double)team.ops : 0;
    res.fair = hi ? (double)lo / (double)hi : 0;
    bench_team_free(&team);
    return res;
}

void bench_limiter(void)
{
    const int R = bopt.reps;
    struct lim_result *res = calloc((size_t)(NK * R), sizeof *res);
    double per_iter, solo[1000], solo_cpu[1000], nw_par[1000], nw_per[1000], bare[1000];
    struct bench_stat mops[NK], cpu[NK], fair[NK], slp[NK], pcpu[NK], wpp, wpw, solo_s, solo_c, nwp_s, nwq_s, bare_s;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int par = bopt.permits < ncpu ? bopt.permits : (int)ncpu;
    int per_permit = bopt.permits < bopt.lim_threads ? bopt.permits : bopt.lim_threads;

    work_iters = bench_spin_calibrate(bopt.work_ns, &per_iter);
    bench_section("3");

    printf("\n== 3. Semaphore limiter: %d threads, %d permits, wait; work; post (Mops/s, higher is better) ==\n",
           bopt.lim_threads, bopt.permits);
    printf("%.2f s per run; work = %llu spin iterations = %.0f ns (calibrated now)\n", bopt.seconds,
           (unsigned long long)work_iters, (double)work_iters * per_iter);

    for (int r = 0; r < R; r++) {
        for (int k = 0; k < NK; k++)
            res[k * R + r] = run_once(&kinds[k], bopt.lim_threads, bopt.seconds);
        /* The same loop on one thread with ks_sem: no waiting at all. */
        struct lim_result one = run_once(&kinds[0], 1, bopt.seconds / 4);
        solo[r] = one.mops;
        solo_cpu[r] = one.per_cpu;
        /* With no more threads than permits nobody waits: what sharing the
         * semaphore's (and the permit check's) lines between CPUs costs,
         * with min(permits, CPUs) threads and with one thread per permit. */
        nw_par[r] = run_once(&kinds[0], par, bopt.seconds / 4).mops;
        nw_per[r] = run_once(&kinds[0], per_permit, bopt.seconds / 4).mops;
        bare[r] = run_once(&no_sem, par, bopt.seconds / 4).mops;
    }
    solo_s = bench_stats_l("1 thread ks_sem", solo, R);
    solo_c = bench_stats(solo_cpu, R);
    nwp_s = bench_stats_l("min(permits,CPUs) threads ks_sem, no waits", nw_par, R);
    nwq_s = bench_stats_l("permits threads ks_sem, no waits", nw_per, R);
    bare_s = bench_stats_l("min(permits,CPUs) threads, no semaphore", bare, R);

    for (int k = 0; k < NK; k++) {
        mops[k] = BENCH_STATS_OF(kinds[k].name, res[k * R], mops, R);
        cpu[k] = BENCH_STATS_OF(NULL, res[k * R], cpu_share, R);
        fair[k] = BENCH_STATS_OF(NULL, res[k * R], fair, R);
        slp[k] = BENCH_STATS_OF(NULL, res[k * R], sleeps_per_op, R);
        pcpu[k] = BENCH_STATS_OF(NULL, res[k * R], per_cpu, R);
    }
    /* kinds[0] is ks_sem */
    wpp = BENCH_STATS_OF("ks_sem wakes/post", res[0], wakes_per_post, R);
    wpw = BENCH_STATS_OF(NULL, res[0], waits_per_wait, R);

    printf("\n%-16s %9s %7s %10s %9s %9s %12s\n", "implementation", "Mops/s", "spread", "ks_sem/ref",
           "CPU used", "fairness", "sleeps/op");
    for (int k = 0; k < NK; k++) {
        printf("%-16s %9.3f %6.0f%% ", kinds[k].name, mops[k].med, bench_spread(mops[k]));
        if (k)
            printf("%10.3f", mops[0].med / mops[k].med);
        else
            printf("%10s", "");
        printf(" %8.0f%% %9.2f %12.4f\n", cpu[k].med, fair[k].med, slp[k].med);
    }
    printf("(CPU used: all threads' CPU time / (wall x nproc); fairness: slowest/fastest thread;\n"
           " sleeps/op: voluntary context switches per wait+post, getrusage RUSAGE_THREAD)\n");
    printf("ks_sem futex calls: %.4f wakes per post, %.4f waits per wait (sum of ks_futex_stats over threads)\n",
           wpp.med, wpw.med);
    printf("ceiling: one thread alone does %.3f Mops/s; min(permits, CPUs) = %d such loops in parallel\n"
           "would make %.3f Mops/s; ks_sem reaches %.0f%% of that, sem_t %.0f%%\n",
           solo_s.med, par, par * solo_s.med, 100 * mops[0].med / (par * solo_s.med),
           100 * mops[1].med / (par * solo_s.med));
    printf("no waiting: %d threads (min(permits, CPUs)) make %.3f Mops/s, %.0f%% of the ceiling (the\n"
           "semaphore's and the permit check's lines go back and forth between CPUs); %d (one per permit)\n"
           "%.3f, %.0f%%; ks_sem at %d threads reaches %.0f%% of the latter\n",
           par, nwp_s.med, 100 * nwp_s.med / (par * solo_s.med), per_permit, nwq_s.med,
           100 * nwq_s.med / (par * solo_s.med), bopt.lim_threads, 100 * mops[0].med / nwq_s.med);
    printf("no semaphore: the loop and its permit check alone, %d threads, make %.3f Mops/s, %.0f%% of the\n"
           "ceiling: no semaphore can do better here; that is %.2fx sem_t and %.2fx mutex+condvar\n",
           par, bare_s.med, 100 * bare_s.med / (par * solo_s.med), bare_s.med / mops[1].med,
           bare_s.med / mops[2].med);
    /* Other processes' load lowers every Mops/s above and the ceiling does
     * not know it; work done per CPU-second the threads got does not depend
     * on how many CPU-seconds they got. */
    printf("per CPU-second the threads used (Mops/CPU-s; the loop alone: %.3f): ks_sem %.3f (%.0f%%), sem_t %.3f\n"
           "(%.0f%%), mutex+condvar %.3f (%.0f%%)\n",
           solo_c.med, pcpu[0].med, 100 * pcpu[0].med / solo_c.med, pcpu[1].med, 100 * pcpu[1].med / solo_c.med,
           pcpu[2].med, 100 * pcpu[2].med / solo_c.med);

    bench_target("limiter 16 threads/3 permits: ks_sem / sem_t",
                 bopt.lim_threads == 16 && bopt.permits == 3 ? mops[0].med / mops[1].med : NAN, ">=", 3.0,
                 "x");
    bench_target("limiter 16 threads/3 permits: ks_sem / mutex+condvar",
                 bopt.lim_threads == 16 && bopt.permits == 3 ? mops[0].med / mops[2].med : NAN, ">=", 1.5,
                 "x");
    bench_target("limiter 16 threads/3 permits: ks_sem share of the ceiling",
                 bopt.lim_threads == 16 && bopt.permits == 3 ? 100 * mops[0].med / (par * solo_s.med) : NAN,
                 ">=", 70.0, "%");
    free(res);
}

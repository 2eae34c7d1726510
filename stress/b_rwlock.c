/* stress/b_rwlock.c - section 7: reader-writer lock, 90% and 99% reads.
 *
 * T threads (2, then 16) loop until the stop flag: a per-thread xorshift
 * draw picks a write one time in ten (then, in the second table, one time
 * in a hundred), else a read.
 *   read:  rdlock; read the RW_WORDS shared words; unlock
 *   write: wrlock; increment each of the words; unlock
 * With --rw-work-ns N each thread also spins N ns after each operation,
 * outside the lock (default 0: the lock is all the threads do).
 * The lock and the words share one 128-byte block (a lock sits beside the
 * data it guards).  Compared: ks_rwlock (writer-preferring), glibc's
 * pthread_rwlock with default attributes (reader-preferring), CK's
 * ck_rwlock (spinning, writers announce themselves and readers back off),
 * and, to separate the policy from the implementation, glibc's
 * pthread_rwlock of kind PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP
 * (writer-preferring, as ks_rwlock is); the target is against the default.
 * The rate is all lock operations divided by the time from the start
 * barrier to the last thread's exit, so a spinning lock's slow drain after
 * the stop (a preempted holder with 16 threads on few CPUs) counts against
 * it, as in section 2.
 *
 * Integrity: a reader that sees words that differ (a write in progress),
 * or final words that differ from the number of writes the threads counted,
 * stops the program.
 */
#include "bench.h"

#include <ksync/rwlock.h>

#include <ck_rwlock.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define rw_threads bopt.rw_threads /* 2 and 16 unless --rw-threads */
#define NT 2
#define RW_WORDS 4
/* one write in rw_mixes[m] operations: 90% and 99% reads */
static const unsigned rw_mixes[] = {10, 100};
#define NM ((int)(sizeof rw_mixes / sizeof rw_mixes[0]))
static unsigned rw_write_one_in;
static uint64_t rw_work_iters; /* --rw-work-ns, in bench_spin iterations */

struct rw_obj {
    union {
        ks_rwlock_t ks;
        pthread_rwlock_t pt;
        ck_rwlock_t ck;
    } l;
    uint64_t w[RW_WORDS]; /* guarded by l */
} __attribute__((aligned(KS_CACHELINE)));

/* Counted by each thread, added once at its end. */
static struct {
    uint64_t writes, torn;
} tally __attribute__((aligned(KS_CACHELINE)));

/* name_rw_init / rd / wr / unrd / unwr */
/* The cull (docs/spin.md, "The cull") is off by default and process-wide:
 * every kind's init sets it, on only for "ks_rwlock+cull". */
static void ks_rw_init(struct rw_obj *o)
{
    ks_spin_cull_set(0);
    ks_rwlock_init(&o->l.ks, KS_PRIVATE);
}
static void kc_rw_init(struct rw_obj *o)
{
    ks_rwlock_init(&o->l.ks, KS_PRIVATE);
    ks_spin_cull_set(1);
}
static inline void ks_rw_rd(struct rw_obj *o) { ks_rwlock_rdlock(&o->l.ks); }
static inline void ks_rw_wr(struct rw_obj *o) { ks_rwlock_wrlock(&o->l.ks); }
static inline void ks_rw_unrd(struct rw_obj *o) { ks_rwlock_unlock(&o->l.ks); }
#define ks_rw_unwr ks_rw_unrd

static void pt_rw_init(struct rw_obj *o)
{
    ks_spin_cull_set(0);
    pthread_rwlock_init(&o->l.pt, NULL);
}
static inline void pt_rw_rd(struct rw_obj *o) { pthread_rwlock_rdlock(&o->l.pt); }
static inline void pt_rw_wr(struct rw_obj *o) { pthread_rwlock_wrlock(&o->l.pt); }
static inline void pt_rw_unrd(struct rw_obj *o) { pthread_rwlock_unlock(&o->l.pt); }
#define pt_rw_unwr pt_rw_unrd

/* glibc's writer-preferring kind: the same policy as ks_rwlock, for contrast */
static void pw_rw_init(struct rw_obj *o)
{
    ks_spin_cull_set(0);
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&o->l.pt, &a);
    pthread_rwlockattr_destroy(&a);
}
#define pw_rw_rd pt_rw_rd
#define pw_rw_wr pt_rw_wr
#define pw_rw_unrd pt_rw_unrd
#define pw_rw_unwr pt_rw_unwr

static void ck_rw_init(struct rw_obj *o)
{
    ks_spin_cull_set(0);
    ck_rwlock_init(&o->l.ck);
}
static inline void ck_rw_rd(struct rw_obj *o) { ck_rwlock_read_lock(&o->l.ck); }
static inline void ck_rw_wr(struct rw_obj *o) { ck_rwlock_write_lock(&o->l.ck); }
static inline void ck_rw_unrd(struct rw_obj *o) { ck_rwlock_read_unlock(&o->l.ck); }
static inline void ck_rw_unwr(struct rw_obj *o) { ck_rwlock_write_unlock(&o->l.ck); }

static inline uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

#define RW_BODY(name)                                                             \
    static void body_##name(bench_thr_t *t)                                       \
    {                                                                             \
        struct rw_obj *o = t->arg;                                                \
        uint64_t n = 0, writes = 0, torn = 0;                                     \
        uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(t->id + 1);            \
        const unsigned one_in = rw_write_one_in;                                  \
        const uint64_t work = rw_work_iters;                                      \
        while (!bench_stopped()) {                                                \
            if ((xorshift64(&seed) >> 32) % one_in == 0) {                        \
                name##_rw_wr(o);                                                  \
                for (int i = 0; i < RW_WORDS; i++)                                \
                    o->w[i]++;                                                    \
                name##_rw_unwr(o);                                                \
                writes++;                                                         \
            } else {                                                              \
                uint64_t x[RW_WORDS];                                             \
                name##_rw_rd(o);                                                  \
                for (int i = 0; i < RW_WORDS; i++)                                \
                    x[i] = o->w[i];                                               \
                name##_rw_unrd(o);                                                \
                for (int i = 1; i < RW_WORDS; i++)                                \
                    torn += x[i] != x[0];                                         \
            }                                                                     \
            n++;                                                                  \
            if (work)                                                             \
                bench_spin(work);                                                 \
        }                                                                         \
        t->ops = n;                                                               \
        __atomic_fetch_add(&tally.writes, writes, __ATOMIC_RELAXED);              \
        __atomic_fetch_add(&tally.torn, torn, __ATOMIC_RELAXED);                  \
    }
RW_BODY(ks)
RW_BODY(pt)
RW_BODY(ck)
RW_BODY(pw)

static const struct rkind {
    const char *name;
    void (*init)(struct rw_obj *o);
    void (*body)(bench_thr_t *t);
} kinds[] = {
    {"ks_rwlock", ks_rw_init, body_ks}, /* first: the numerator of the ratios */
    {"pthread_rwlock", pt_rw_init, body_pt},
    {"ck_rwlock", ck_rw_init, body_ck},
    {"pthread_rwlock_wp", pw_rw_init, body_pw},
    {"ks_rwlock+cull", kc_rw_init, body_ks}, /* last: printed apart, not in the targets */
};
#define NK ((int)(sizeof kinds / sizeof kinds[0]))
#define KC (NK - 1) /* ks_rwlock+cull */

static struct rw_obj obj;

struct rw_result {
    double mops, write_share, fair, sleeps_per_kop, waits_per_kop, wakes_per_kop, culls_per_kop, cpu_share;
    int pinned;
};

static struct rw_result run_once(const struct rkind *k, int nthreads)
{
    struct rw_result res;
    struct bench_team team = {
        .n = nthreads, .body = k->body, .arg = &obj, .cap_ns = (int64_t)(bopt.seconds * 1e9 / BENCH_SHORT_DIV),
    };
    memset(&obj, 0, sizeof obj);
    memset(&tally, 0, sizeof tally);
    k->init(&obj);
    const uint64_t culls0 = ks_spin_culls();
    bench_team_run(&team);
    const uint64_t culls = ks_spin_culls() - culls0;
    if (tally.torn)
        bench_fail("%s, %d threads: readers saw %llu words that a writer was changing", k->name, nthreads,
                   (unsigned long long)tally.torn);
    for (int i = 0; i < RW_WORDS; i++)
        if (obj.w[i] != tally.writes)
            bench_fail("%s, %d threads: word %d is %llu after %llu writes", k->name, nthreads, i,
                       (unsigned long long)obj.w[i], (unsigned long long)tally.writes);
    uint64_t lo = UINT64_MAX, hi = 0, sleeps = 0, waits = 0, wakes = 0;
    int64_t cpu = 0;
    for (int i = 0; i < nthreads; i++) {
        cpu += team.thr[i].cpu_ns;
        lo = team.thr[i].ops < lo ? team.thr[i].ops : lo;
        hi = team.thr[i].ops > hi ? team.thr[i].ops : hi;
        sleeps += team.thr[i].vcsw;
        waits += team.thr[i].fx.waits;
        wakes += team.thr[i].fx.wakes;
    }
    double kops = (double)team.ops / 1000.0;
    res.mops = (double)team.ops / ((double)team.elapsed_ns / 1e9) / 1e6;
    res.write_share = team.ops ? 100.0 * (double)tally.writes / (double)team.ops : 0;
    res.fair = hi ? (double)lo / (double)hi : 0;
    res.sleeps_per_kop = kops > 0 ? (double)sleeps / kops : 0;
    res.waits_per_kop = kops > 0 ? (double)waits / kops : 0;
    res.wakes_per_kop = kops > 0 ? (double)wakes / kops : 0;
    res.culls_per_kop = kops > 0 ? (double)culls / kops : 0;
    res.cpu_share = 100.0 * (double)cpu / ((double)team.elapsed_ns * (double)sysconf(_SC_NPROCESSORS_ONLN));
    res.pinned = team.pinned;
    bench_team_free(&team);
    return res;
}

static void bench_rwlock_mix(int m)
{
    const int R = bopt.reps;
    struct rw_result *res = calloc((size_t)(NT * NK * R), sizeof *res);
    struct bench_stat mops[NT][NK], fair[NT][NK], slp[NT][NK], wshare[NT][NK], cpu[NT][NK], waits[NT], wakes[NT],
        culls[NT];
#define RES(ti, k, r) res[((ti) * NK + (k)) * R + (r)]

    rw_write_one_in = rw_mixes[m];
    const int reads = 100 - 100 / (int)rw_write_one_in;
    bench_section("7");

    printf("\n== 7%s. rwlock: T threads, %d%% reads of %d shared words, writes increment them (Mops/s) ==\n",
           m ? "b" : "", reads, RW_WORDS);
    printf("%.2f s per run; rate = lock operations / (start .. last thread out); %ld CPUs online\n",
           bopt.seconds / BENCH_SHORT_DIV, sysconf(_SC_NPROCESSORS_ONLN));
    for (int ti = 0; ti < NT; ti++) {
        for (int r = 0; r < R; r++)
            for (int k = 0; k < NK; k++)
                RES(ti, k, r) = run_once(&kinds[k], rw_threads[ti]);
        for (int k = 0; k < NK; k++) {
            char label[64];
            snprintf(label, sizeof label, "%d%% T=%d %s Mops/s", reads, rw_threads[ti], kinds[k].name);
            mops[ti][k] = BENCH_STATS_OF(label, RES(ti, k, 0), mops, R);
            fair[ti][k] = BENCH_STATS_OF(NULL, RES(ti, k, 0), fair, R);
            slp[ti][k] = BENCH_STATS_OF(NULL, RES(ti, k, 0), sleeps_per_kop, R);
            wshare[ti][k] = BENCH_STATS_OF(NULL, RES(ti, k, 0), write_share, R);
            cpu[ti][k] = BENCH_STATS_OF(NULL, RES(ti, k, 0), cpu_share, R);
        }
        /* kinds[0] is ks_rwlock */
        waits[ti] = BENCH_STATS_OF(NULL, RES(ti, 0, 0), waits_per_kop, R);
        wakes[ti] = BENCH_STATS_OF(NULL, RES(ti, 0, 0), wakes_per_kop, R);
        culls[ti] = BENCH_STATS_OF(NULL, RES(ti, KC, 0), culls_per_kop, R);
    }

    for (int ti = 0; ti < NT; ti++) {
        printf("\nT = %d threads (pinned: %s)\n", rw_threads[ti], RES(ti, 0, 0).pinned ? "yes" : "no");
        printf("%-18s %9s %7s %10s %9s %12s %9s %9s\n", "implementation", "Mops/s", "spread", "ks/ref",
               "fairness", "sleeps/kop", "CPU used", "writes");
        for (int k = 0; k < KC; k++) {
            printf("%-18s %9.3f %6.0f%% ", kinds[k].name, mops[ti][k].med, bench_spread(mops[ti][k]));
            if (k)
                printf("%10.3f", mops[ti][0].med / mops[ti][k].med);
            else
                printf("%10s", "");
            printf(" %9.2f %12.3f %8.0f%% %8.1f%%\n", fair[ti][k].med, slp[ti][k].med, cpu[ti][k].med,
                   wshare[ti][k].med);
        }
        printf("ks_rwlock futex calls per 1000 lock operations (all threads): %.3f waits, %.3f wakes\n",
               waits[ti].med, wakes[ti].med);
        printf("with the cull on (KSYNC_CULL=1; docs/spin.md, \"The cull\"): ks_rwlock %.3f Mops/s +-%.0f%%,\n"
               " %.3fx pthread_rwlock, %.3fx pthread_rwlock_wp; fairness %.2f, CPU used %.0f%%, %.3f culls\n"
               " per 1000 operations\n",
               mops[ti][KC].med, bench_spread(mops[ti][KC]), mops[ti][KC].med / mops[ti][1].med,
               mops[ti][KC].med / mops[ti][3].med, fair[ti][KC].med, cpu[ti][KC].med, culls[ti].med);
    }
    printf("(pthread_rwlock_wp: kind PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP, writer-preferring like\n"
           " ks_rwlock; fairness: slowest / fastest thread's count; sleeps/kop: voluntary context switches\n"
           " per 1000 operations, getrusage RUSAGE_THREAD; CPU used: all threads' CPU time / (wall x\n"
           " nproc); writes: share of operations that were writes)\n");

    /* issue 13: kinds[1] is pthread_rwlock (glibc's default), kinds[3] its
     * writer-preferring kind */
    char what[96];
    if (rw_threads[0] != 2 || rw_threads[1] != 16) {
        /* --rw-threads: the targets are set for 2 and 16 threads */
    } else if (m == 0) {
        /* 2 threads: at least 3x; 16 threads: at least 1x (issue 13) */
        snprintf(what, sizeof what, "rwlock 90%% reads, %d threads: ks_rwlock / pthread_rwlock", rw_threads[0]);
        bench_target(what, mops[0][0].med / mops[0][1].med, ">=", 3.0, "x");
        snprintf(what, sizeof what, "rwlock 90%% reads, %d threads: ks_rwlock / pthread_rwlock", rw_threads[1]);
        bench_target(what, mops[1][0].med / mops[1][1].med, ">=", 1.0, "x");
        snprintf(what, sizeof what, "rwlock 90%% reads, %d threads: ks_rwlock / pthread_rwlock_wp", rw_threads[1]);
        bench_target(what, mops[1][0].med / mops[1][3].med, ">=", 2.0, "x");
    } else {
        snprintf(what, sizeof what, "rwlock 99%% reads, %d threads: ks_rwlock / pthread_rwlock", rw_threads[1]);
        bench_target(what, mops[1][0].med / mops[1][1].med, ">=", 2.0, "x");
    }
    ks_spin_cull_set(0);
#undef RES
    free(res);
}

void bench_rwlock(void)
{
    double per_iter = 0;
    rw_work_iters = bopt.rw_work_ns ? bench_spin_calibrate(bopt.rw_work_ns, &per_iter) : 0;
    if (rw_work_iters)
        printf("\n(--rw-work-ns %d: after each operation every thread spins %llu iterations = %.0f ns\n"
               " outside the lock, calibrated now)\n",
               bopt.rw_work_ns, (unsigned long long)rw_work_iters, (double)rw_work_iters * per_iter);
    for (int m = 0; m < NM; m++)
        bench_rwlock_mix(m);
}

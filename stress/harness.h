/* stress/harness.h - the small common harness of ksync's stress runner.
 *
 * A scenario (one row of the table in docs/stress.md) is a function that, for each
 * implementation it compares (ksync and its references), fills a struct
 * st_run and calls st_run(): the harness creates the threads, releases them
 * together through a start barrier, stops them after --iters operations each
 * or --seconds of wall time (or at a time cap), watches for a stall, times
 * the run and hands back per-thread counters.  The scenario then checks its
 * invariant and prints one row with st_row().
 *
 * A worker body is a loop over st_next():
 *
 *     static void body(struct st_thread *t)
 *     {
 *         struct my_ctx *c = t->ctx;
 *         while (st_next(t)) {
 *             ...one operation, may use st_rand(t), st_pause(t, 100)...
 *         }
 *     }
 *
 * The harness's own machinery (start barrier, end notification) uses
 * pthreads, never ksync: the library under test must not be trusted to run
 * its own test.
 */
#ifndef KS_STRESS_HARNESS_H
#define KS_STRESS_HARNESS_H

#include <ksync/arch.h> /* KS_CACHELINE: keep per-thread and shared data on separate lines */
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- options ------------------------------------------------------------ */

enum st_kind {
    ST_KSYNC = 1, /* a ksync primitive */
    ST_REF = 2,   /* a reference implementation (glibc, Concurrency Kit) */
    ST_BASE = 3,  /* neither: a deliberately broken baseline, shown with both */
};

struct st_opts {
    const char *scenario; /* "all", an id ("S5"), a name, or a comma list */
    unsigned threads;     /* 0: each scenario's default */
    double seconds;       /* > 0: timed mode, every run lasts this long */
    uint64_t iters;       /* 0: each scenario's default (per thread) */
    uint64_t seed;
    unsigned kinds;       /* ST_KSYNC, ST_REF or both */
    unsigned yield;       /* permille of race points that yield */
};

/* The scenario's default unless the command line overrides it. */
unsigned st_threads(const struct st_opts *o, unsigned dflt);
uint64_t st_iters(const struct st_opts *o, uint64_t dflt);
bool st_selected(const struct st_opts *o, enum st_kind kind);

/* A scenario's default configurations (its --list "defaults"), each run
 * against every implementation selected.  With --threads N only the first
 * runs, at N threads. */
struct st_config {
    unsigned threads; /* default thread count (or producers, workers, ...) */
    uint64_t iters;   /* default operations per thread */
    unsigned arg;     /* the scenario's own parameter (S14: semaphore permits) */
};
/* run(o, &cfg[k], st_threads(o, cfg[k].threads)) for k = 0..n-1, or k = 0
 * alone with --threads. */
void st_configs(const struct st_opts *o, const struct st_config *cfg, size_t n,
                void (*run)(const struct st_opts *o, const struct st_config *cfg,
                            unsigned threads));
#define ST_CONFIGS(o, cfg, run) st_configs(o, cfg, sizeof(cfg) / sizeof((cfg)[0]), run)

/* ---- threads -------------------------------------------------------------- */

#define ST_NSTAT 8

struct st_thread {
    _Alignas(KS_CACHELINE) unsigned id; /* 0 .. nthreads-1 */
    unsigned nthreads;
    void *ctx;                 /* the scenario's shared state (st_run.ctx) */
    uint64_t rng;              /* xorshift64* state, seeded per run and thread */
    uint64_t done;             /* operations started by st_next (all complete) */
    uint64_t limit;            /* this thread's iteration budget */
    const atomic_int *stop;    /* set by the harness: deadline or cap reached */
    _Atomic uint64_t progress; /* == done, for the monitor; relaxed */
    uint64_t stat[ST_NSTAT];   /* scenario counters, read after the run */
    int64_t t_start, t_end;    /* CLOCK_MONOTONIC ns around the body */
    uint64_t sink;             /* keeps st_spin's work alive */
    void *runner;              /* the harness's own, not for scenarios */
};

/* Begin the next operation, or return false when the thread must stop.
 * The stop flag is read relaxed: it only ends the loop, no data hangs on it. */
static inline bool st_next(struct st_thread *t)
{
    if (t->done >= t->limit || atomic_load_explicit(t->stop, memory_order_relaxed))
        return false;
    t->done++;
    atomic_store_explicit(&t->progress, t->done, memory_order_relaxed);
    return true;
}

/* Per-thread PRNG: xorshift64* (Vigna), seeded from --seed, run and thread. */
static inline uint64_t st_rand(struct st_thread *t)
{
    uint64_t x = t->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    t->rng = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* Uniform in [0, n). */
static inline uint32_t st_below(struct st_thread *t, uint32_t n)
{
    return (uint32_t)(((st_rand(t) >> 32) * n) >> 32);
}

/* Fixed CPU work: n dependent LCG steps (~4 cycles each), result returned so
 * the caller can fold it into a checked total. */
static inline uint64_t st_work(uint64_t x, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        x = x * 6364136223846793005ull + 1442695040888963407ull;
    return x;
}

/* A 64-bit mix (MurmurHash3's fmix64 finalizer): checksums of items and
 * values, and pure functions of an id (S14's task values). */
static inline uint64_t st_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* Count one operation for a thread whose loop is not st_next's (a consumer
 * that follows the producers, a barrier phase): what st_next counts.
 * relaxed: the progress word is the stall monitor's, no data hangs on it. */
static inline void st_count_op(struct st_thread *t)
{
    t->done++;
    atomic_store_explicit(&t->progress, t->done, memory_order_relaxed);
}

/* Busy work whose result is discarded (but not optimised away). */
static inline void st_spin(struct st_thread *t, unsigned n)
{
    t->sink += st_work(t->sink, n);
}

/* Zeroed memory on its own cache lines (scenario contexts); exits on ENOMEM. */
void *st_alloc(size_t n);

/* The stand-in for the seeds' time.sleep(): usually a random spin below
 * spin_max, sometimes sched_yield(), rarely a sleep of a few microseconds. */
void st_pause(struct st_thread *t, unsigned spin_max);

/* ---- runs ------------------------------------------------------------------ */

struct st_run {
    const char *scen;  /* "S2" */
    const char *impl;  /* "ksync", "pthread_mutex", "ck_spinlock_mcs", ... */
    enum st_kind kind;
    unsigned threads;
    uint64_t iters;    /* per thread, in iteration mode */
    double cap_s;      /* iteration mode: stop after this long (0: ST_CAP_S) */
    bool fixed;        /* run exactly `iters` even in --seconds mode */
    void (*body)(struct st_thread *t);
    void *ctx;
    /* Optional: describe the shared object's state if the run stalls. */
    void (*dump)(void *ctx, char *buf, size_t len);
};

#ifndef ST_CAP_S
#define ST_CAP_S 10.0 /* default time cap of an iteration-mode run */
#endif
/* Busy-waiting references (CK spinlocks, ck_rwlock) lose whole time slices
 * to preempted holders when threads outnumber CPUs, and ticket/MCS hand the
 * lock to a waiter that may not be running: their iteration-mode runs stop
 * after this long and report the partial count. */
#define ST_SPIN_CAP_S 2.0
#ifndef ST_STALL_S
#define ST_STALL_S 30.0 /* no progress for this long: report and exit */
#endif

struct st_result {
    struct st_thread *t; /* threads[nthreads], valid until st_result_free */
    unsigned nthreads;
    uint64_t ops;        /* operations completed, all threads */
    uint64_t planned;    /* threads * iters in iteration mode, else 0 */
    double secs;         /* first start to last end */
    bool capped;         /* iteration mode, stopped by the cap before the end */
};

/* Run `run` to completion and fill *res.  Does not return on a stall: it
 * prints a FAIL row with run->dump's description and exits with status 3
 * (stuck threads cannot be joined); likewise, with status 4, if the threads
 * cannot be created. */
void st_run(const struct st_opts *o, const struct st_run *run, struct st_result *res);
void st_result_free(struct st_result *res);

/* Sum of stat[i] over the run's threads. */
uint64_t st_stat_sum(const struct st_result *res, unsigned i);
/* Fewest and most operations done by one thread (fairness at a glance). */
void st_spread(const struct st_result *res, uint64_t *lo, uint64_t *hi);

/* ---- first-failure note ------------------------------------------------------
 * Workers that see an invariant broken record it here; the first message is
 * kept, later ones are only counted. */
struct st_note {
    atomic_uint count;
    atomic_flag taken;
    char msg[200];
};
void st_note_init(struct st_note *n);
void st_note(struct st_note *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
unsigned st_note_count(struct st_note *n);
/* For a stall dump (st_run.dump): "E errors, first: MSG; " when a failure was
 * noted, MSG cut to `max` characters so that the state that follows fits;
 * returns the length written, at most len - 1. */
size_t st_note_prefix(struct st_note *n, char *buf, size_t len, int max);

/* ---- items of the producer/consumer scenarios (S9, S10, S11) ------------------
 * An item is producer << ST_SEQ_BITS | seq, seq = 0, 1, ... per producer;
 * in iteration mode a scenario may keep one seen flag per item, up to
 * ST_SEEN_MAX of them (S14 flags its tasks under the same bound). */
#define ST_SEQ_BITS 40
#define ST_SEEN_MAX (64u << 20)

/* One consumer's check of one item: it comes from one of np producers, after
 * the last item this consumer took from that producer (FIFO; next[p] holds
 * the lowest seq still allowed, 0 at first), and, with seen flags
 * (seen[p * iters + seq] for seq < iters; seen NULL: none), no other
 * consumer took it.  A failure is noted in err. */
void st_check_item(struct st_note *err, uint64_t item, unsigned np, uint64_t *next,
                   atomic_uchar *seen, uint64_t iters);

/* ---- result table -------------------------------------------------------------- */

enum st_verdict { ST_PASS, ST_FAIL, ST_REPORT, ST_SKIP };

/* One row: scenario, implementation, threads, ops, ops/s, verdict, detail.
 * `res` may be NULL (a row that ran nothing).  A capped run's detail starts
 * with "capped at C s after N of M ops: ".  ST_FAIL makes the exit status 1. */
void st_row(const struct st_run *run, const struct st_result *res, enum st_verdict v,
            const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void st_table_header(void);
unsigned st_failures(void);
unsigned st_rows(void);

/* "12.3M" style rendering of a rate or count into buf. */
const char *st_human(double v, char *buf, size_t len);

/* ---- scenario registry ----------------------------------------------------------- */

struct st_scenario {
    const char *id;    /* "S2" */
    const char *name;  /* "locked-counter" (also accepted by --scenario) */
    const char *title; /* one line, from the seed */
    const char *impls; /* "ksync mutex | pthread_mutex, ck_spinlock_fas, ..." */
    const char *dflt;  /* the defaults, for --list */
    void (*run)(const struct st_opts *o);
};

/* Each stress/s_<family>.c exports one table ending with a {0} entry. */
extern const struct st_scenario st_family_mutex[]; /* s_mutex.c: S1 S2 S3 S17 */
extern const struct st_scenario st_family_rmutex[]; /* s_rmutex.c: S4 */
extern const struct st_scenario st_family_sem[];   /* s_sem.c: S5 S6 S7 */
extern const struct st_scenario st_family_cost[];  /* s_cost.c: S15 */
extern const struct st_scenario st_family_event[]; /* s_event.c: S8 */
extern const struct st_scenario st_family_cond[];  /* s_cond.c: S9 */
extern const struct st_scenario st_family_barrier[]; /* s_barrier.c: S19 */
extern const struct st_scenario st_family_queue[]; /* s_queue.c: S10 S11 */
extern const struct st_scenario st_family_pool[];  /* s_pool.c: S12 */
extern const struct st_scenario st_family_monitoring[]; /* s_monitoring.c: S14 */
extern const struct st_scenario st_family_cache[]; /* s_cache.c: S13 */
extern const struct st_scenario st_family_channel[]; /* s_channel.c: S21 S22 */
extern const struct st_scenario st_family_shm[];   /* s_shm.c: S20 */
extern const struct st_scenario st_family_lockstat[]; /* s_lockstat.c: S18 */
extern const struct st_scenario st_family_lockdep[]; /* s_lockdep.c: S16 */

#endif

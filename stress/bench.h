/* stress/bench.h - what the ksync-bench sections share.
 *
 * ksync-bench measures ksync against glibc (pthread_mutex, sem_t, a
 * mutex+condvar semaphore), Concurrency Kit (spinlocks, ck_ring) and
 * liburcu (wfcqueue, rculfhash), all in one run,
 * and prints each figure as the median of --reps repetitions with the ratio
 * ksync/reference taken from the same run.  One file per section:
 *
 *   b_uncontended.c   1. lock+unlock on one thread: ns and callgrind Ir
 *   b_counter.c       2. contended counter, T threads, Mops/s
 *   b_limiter.c       3. 16 threads through a 3-permit semaphore, Mops/s
 *   b_cpu.c           4. CPU used by a thread blocked for --seconds
 *   b_handoff.c       5. two-thread ping-pong hand-off, round trips/s
 *   b_barrier.c       6. barrier episodes/s at 2 and 8 threads
 *   b_rwlock.c        7. rwlock with 90% reads at 2 and 16 threads, Mops/s
 *   b_broadcast.c     8. condvar broadcast to 16 waiters: futex calls, sleeps
 *   b_queue.c         9. MPMC ring and blocking queue, 1p1c..16p16c, items/s
 *   b_cache.c        10. key/value caches with TTL (ks_cache, ck_ht, rculfhash,
 *                        mutex table) at 2 and 16 threads, ops/s; S3-FIFO vs
 *                        LRU hit ratio
 *   b_ipc.c          11. ks_channel against pipe, AF_UNIX stream and loopback
 *                        TCP between processes: messages/s, MB/s, ping-pong
 *
 * bench.c holds main(), the options, the context header, the PASS/MISS
 * summary and the one helper every section uses to run threads: a "team"
 * of n threads released together by a barrier, stopped by a flag after a
 * time cap, each reporting its ops, thread CPU time and futex call counts.
 */
#ifndef KSYNC_BENCH_H
#define KSYNC_BENCH_H

#include <ksync/arch.h> /* KS_CACHELINE: keep per-thread and shared data on separate lines */
#include <ksync/debug.h>
#include <ksync/mutex.h>
#include <ksync/rmutex.h>
#include <ksync/rwlock.h>
#include <ksync/sem.h>
#include <ksync/time.h>

/* The cull (src/spin.c, docs/spin.md "The cull"): culls made in this
 * process so far, and its switch.  Internal to the library, reached here
 * through the static archive. */
uint64_t ks_spin_culls(void);
void ks_spin_cull_set(int on);

/* Concurrency Kit picks its fences from the memory model in ck_md.h, which
 * Debian generates per architecture (amd64: TSO, arm64: RMO).  The two
 * packages cannot be co-installed (tools/deps.sh unpacks the arm64 one
 * instead), but a machine where someone installed libck-dev:arm64 by hand has
 * the arm64 header in /usr/include, and CK's spinlocks would then carry
 * fences x86-64 never needs: refuse to measure such a reference. */
#include <ck_md.h>
#if defined(__x86_64__) && !defined(CK_MD_TSO)
#error "/usr/include/ck_md.h is not the amd64 one: apt-get install --reinstall libck-dev:amd64"
#endif
#if defined(CK_MD_TSO)
#define BENCH_CK_MD_NOTE "TSO"
#elif defined(CK_MD_PSO)
#define BENCH_CK_MD_NOTE "PSO"
#else
#define BENCH_CK_MD_NOTE "RMO"
#endif
#include <ck_spinlock.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>

#define BENCH_MAX_THREADS 1024
#define BENCH_MAX_TLIST 16

/* ---- options ---------------------------------------------------------- */

enum {
    SEC_UNCONTENDED = 1u << 0, /* section 1 */
    SEC_MUTEX = 1u << 1,       /* section 2: contended counter */
    SEC_SEM = 1u << 2,         /* section 3: semaphore limiter */
    SEC_CPU = 1u << 3,         /* section 4: CPU while blocked */
    SEC_HANDOFF = 1u << 4,     /* section 5: ping-pong hand-off */
    SEC_BARRIER = 1u << 5,     /* section 6: barrier episodes */
    SEC_RWLOCK = 1u << 6,      /* section 7: rwlock, 90% reads */
    SEC_BROADCAST = 1u << 7,   /* section 8: condvar broadcast */
    SEC_QUEUE = 1u << 8,       /* section 9: MPMC ring and blocking queue */
    SEC_CACHE = 1u << 9,       /* section 10: key/value caches */
    SEC_IPC = 1u << 10,        /* section 11: messages between processes */
    SEC_ALL = 0x7ffu,
};

/* Sections 5-8 have many more runs (implementations x thread counts) than
 * sections 2-4: each of their runs lasts --seconds / BENCH_SHORT_DIV
 * (sections 9 and 10, with 28 and 42 runs per repetition, --seconds /
 * (2 * BENCH_SHORT_DIV)). */
#define BENCH_SHORT_DIV 2

struct bench_opts {
    unsigned sections;     /* SEC_* bits */
    int reps;              /* repetitions per figure (median printed) */
    double seconds;        /* measurement cap of sections 2-4 */
    int tlist[BENCH_MAX_TLIST];
    int ntlist;            /* thread counts of section 2 */
    uint64_t iters;        /* section 1: pairs per timed repetition */
    uint64_t cg_iters;     /* section 1: pairs per callgrind repetition */
    int callgrind;         /* section 1: run the callgrind half */
    const char *valgrind;  /* valgrind executable */
    int lim_threads;       /* section 3 */
    int permits;           /* section 3 */
    int work_ns;           /* section 3: busy work while holding a permit */
    int rw_work_ns;        /* section 7: busy work after each operation, outside the lock */
    int counter_apart;     /* section 2: the counter on the line after the lock's, not beside it */
    int counter_hold_ns;   /* section 2: busy work inside the lock, after the increment */
    int counter_work_ns;   /* section 2: busy work after each unlock, outside the lock */
    int rw_threads[2];     /* section 7: its two thread counts (2 and 16; the targets need those) */
    int pin;               /* PIN_*: team threads bound to CPUs */
    int verbose;           /* print every repetition's value */
    const char *csv;       /* --csv FILE: every labelled repetition, or NULL */
};
enum { PIN_NEVER, PIN_AUTO, PIN_ALWAYS }; /* auto: pin when threads <= online CPUs */
extern struct bench_opts bopt;

/* ---- small helpers (bench.c) --------------------------------------------- */

int64_t bench_now(void);        /* CLOCK_MONOTONIC ns */
int64_t bench_thread_cpu(void); /* CLOCK_THREAD_CPUTIME_ID ns of the caller */
void bench_sleep_ns(int64_t ns);
/* Create and join a thread, once.  glibc (2.34 on) takes its mutexes and
 * semaphores without atomic instructions while the process has never
 * created a thread; a lock matters only in a multi-threaded process, so the
 * uncontended figures are taken after this. */
void bench_go_multithreaded(void);
/* Print an error and exit(2): a result that fails its integrity check must
 * not be reported as a figure. */
void bench_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Median, min and max of n >= 1 values (v is reordered). */
struct bench_stat {
    double med, min, max;
};
struct bench_stat bench_stats(double *v, int n);
/* The same, first printing the values in run order under --verbose. */
struct bench_stat bench_stats_l(const char *label, double *v, int n);
/* The same over one double field of n results stored `stride` bytes apart
 * from *first on (a section's RES(k, 0).field .. RES(k, n - 1).field), n <=
 * BENCH_MAX_REPS; label NULL: bench_stats, else bench_stats_l.  The
 * statistics of a field: BENCH_STATS_OF(label, RES(k, 0), rate, R). */
#define BENCH_MAX_REPS 1000
struct bench_stat bench_stats_at(const char *label, const double *first, size_t stride, int n);
#define BENCH_STATS_OF(label, res0, field, n) bench_stats_at(label, &(res0).field, sizeof(res0), n)
/* --csv: the section whose repetitions bench_stats_l writes next (its
 * number in the printed header, "1" to "11"). */
void bench_section(const char *id);
/* Relative spread (max-min)/median in percent, 0 when the median is 0. */
double bench_spread(struct bench_stat s);

/* Busy work that the compiler cannot remove: about ns nanoseconds once
 * bench_spin_calibrate() has run. */
void bench_spin(uint64_t iters);
uint64_t bench_spin_calibrate(int64_t ns, double *ns_per_iter);

/* Register a target for the final PASS/MISS list.  value NAN means "not
 * measured in this run".  cmp is "<=", ">=", ">" or "<". */
void bench_target(const char *what, double value, const char *cmp, double limit, const char *unit);

/* ---- the thread team ----------------------------------------------------- */

extern int bench_stop_flag;
/* relaxed: the flag only tells workers to finish; results are read after
 * pthread_join, which orders everything. */
static inline int bench_stopped(void)
{
    return __atomic_load_n(&bench_stop_flag, __ATOMIC_RELAXED);
}

typedef struct bench_thr {
    int id;
    void *arg;         /* the team's arg */
    uint64_t ops;      /* set by the body: work items completed */
    int64_t begin_ns;  /* after the start barrier */
    int64_t end_ns;    /* when the body returned */
    int64_t cpu_ns;    /* thread CPU time spent in the body */
    struct ks_futex_stats fx; /* ksync futex calls made in the body */
    uint64_t vcsw;     /* voluntary context switches in the body (blocked) */
    uint64_t ivcsw;    /* involuntary ones (preempted) */
} __attribute__((aligned(KS_CACHELINE))) bench_thr_t;

struct bench_team {
    int n;                           /* threads */
    void (*body)(bench_thr_t *t);    /* run by each; loops until bench_stopped() */
    void *arg;
    int64_t cap_ns;                  /* main sets the stop flag after this */
    void (*release)(void *arg);      /* optional: called by main right after stop */
    /* results */
    bench_thr_t *thr;                /* n entries, freed by bench_team_free */
    int64_t start_ns;                /* barrier release, seen by main */
    int64_t elapsed_ns;              /* start_ns to the last body's end */
    uint64_t ops;                    /* sum of thr[].ops */
    int pinned;                      /* threads were bound to CPUs (bopt.pin) */
};
void bench_team_run(struct bench_team *team);
void bench_team_free(struct bench_team *team);

/* ---- the locks under test: one storage type, uniform adapters ------------- */

typedef union bench_lock {
    ks_mutex_t ks;
    ks_rmutex_t ksr;
    ks_sem_t kss;
    ks_rwlock_t ksrw;
    pthread_rwlock_t prw;
    pthread_spinlock_t pspin;
    pthread_mutex_t pm;
    sem_t ps;
    ck_spinlock_fas_t fas;
    ck_spinlock_ticket_t ticket;
    ck_spinlock_mcs_t mcs; /* the MCS queue tail */
} bench_lock_t;

/* Per-thread context for locks that need one (the MCS queue node; reused
 * across acquisitions, which MCS allows once the lock is released). */
typedef struct bench_ctx {
    ck_spinlock_mcs_context_t mcs;
} bench_ctx_t;

/* name_init / name_acq / name_rel for each primitive.  acq/rel of a
 * semaphore are wait/post.  Return values are not checked in the loops:
 * the counter and permit checks catch a lock that does not exclude. */
static inline void ks_mutex_b_init(bench_lock_t *l) { ks_mutex_init(&l->ks, 0); }
static inline void ks_mutex_b_acq(bench_lock_t *l, bench_ctx_t *c) { (void)c; ks_mutex_lock(&l->ks); }
static inline void ks_mutex_b_rel(bench_lock_t *l, bench_ctx_t *c) { (void)c; ks_mutex_unlock(&l->ks); }

static inline void pthread_mutex_b_init(bench_lock_t *l) { pthread_mutex_init(&l->pm, NULL); }
static inline void pthread_mutex_b_acq(bench_lock_t *l, bench_ctx_t *c) { (void)c; pthread_mutex_lock(&l->pm); }
static inline void pthread_mutex_b_rel(bench_lock_t *l, bench_ctx_t *c) { (void)c; pthread_mutex_unlock(&l->pm); }

static inline void ck_fas_b_init(bench_lock_t *l) { ck_spinlock_fas_init(&l->fas); }
static inline void ck_fas_b_acq(bench_lock_t *l, bench_ctx_t *c) { (void)c; ck_spinlock_fas_lock(&l->fas); }
static inline void ck_fas_b_rel(bench_lock_t *l, bench_ctx_t *c) { (void)c; ck_spinlock_fas_unlock(&l->fas); }

static inline void ck_ticket_b_init(bench_lock_t *l) { ck_spinlock_ticket_init(&l->ticket); }
static inline void ck_ticket_b_acq(bench_lock_t *l, bench_ctx_t *c) { (void)c; ck_spinlock_ticket_lock(&l->ticket); }
static inline void ck_ticket_b_rel(bench_lock_t *l, bench_ctx_t *c) { (void)c; ck_spinlock_ticket_unlock(&l->ticket); }

static inline void ck_mcs_b_init(bench_lock_t *l) { ck_spinlock_mcs_init(&l->mcs); }
static inline void ck_mcs_b_acq(bench_lock_t *l, bench_ctx_t *c) { ck_spinlock_mcs_lock(&l->mcs, &c->mcs); }
static inline void ck_mcs_b_rel(bench_lock_t *l, bench_ctx_t *c) { ck_spinlock_mcs_unlock(&l->mcs, &c->mcs); }

static inline void ks_rmutex_b_init(bench_lock_t *l) { ks_rmutex_init(&l->ksr, 0); }
static inline void ks_rmutex_b_acq(bench_lock_t *l, bench_ctx_t *c) { (void)c; ks_rmutex_lock(&l->ksr); }
static inline void ks_rmutex_b_rel(bench_lock_t *l, bench_ctx_t *c) { (void)c; ks_rmutex_unlock(&l->ksr); }

static inline void pthread_rec_b_init(bench_lock_t *l)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&l->pm, &a);
    pthread_mutexattr_destroy(&a);
}
#define pthread_rec_b_acq pthread_mutex_b_acq
#define pthread_rec_b_rel pthread_mutex_b_rel

/* Semaphores start at 1 for section 1 (wait then post). */
static inline void ks_sem_b_init(bench_lock_t *l) { ks_sem_init(&l->kss, 1, 0); }
static inline void ks_sem_b_acq(bench_lock_t *l, bench_ctx_t *c) { (void)c; ks_sem_wait(&l->kss); }
static inline void ks_sem_b_rel(bench_lock_t *l, bench_ctx_t *c) { (void)c; ks_sem_post(&l->kss); }

static inline void sem_t_b_init(bench_lock_t *l) { sem_init(&l->ps, 0, 1); }
static inline void sem_t_b_acq(bench_lock_t *l, bench_ctx_t *c) { (void)c; sem_wait(&l->ps); }
static inline void sem_t_b_rel(bench_lock_t *l, bench_ctx_t *c) { (void)c; sem_post(&l->ps); }

/* Read-write locks (section 1: one thread, read or write lock + unlock). */
static inline void ks_rwlock_b_init(bench_lock_t *l) { ks_rwlock_init(&l->ksrw, 0); }
static inline void ks_rwlock_rd_b_acq(bench_lock_t *l, bench_ctx_t *c) { (void)c; ks_rwlock_rdlock(&l->ksrw); }
static inline void ks_rwlock_wr_b_acq(bench_lock_t *l, bench_ctx_t *c) { (void)c; ks_rwlock_wrlock(&l->ksrw); }
static inline void ks_rwlock_b_rel(bench_lock_t *l, bench_ctx_t *c) { (void)c; ks_rwlock_unlock(&l->ksrw); }
#define ks_rwlock_rd_b_rel ks_rwlock_b_rel
#define ks_rwlock_wr_b_rel ks_rwlock_b_rel

static inline void pthread_rwlock_b_init(bench_lock_t *l) { pthread_rwlock_init(&l->prw, NULL); }
static inline void pthread_rwlock_rd_b_acq(bench_lock_t *l, bench_ctx_t *c) { (void)c; pthread_rwlock_rdlock(&l->prw); }
static inline void pthread_rwlock_wr_b_acq(bench_lock_t *l, bench_ctx_t *c) { (void)c; pthread_rwlock_wrlock(&l->prw); }
static inline void pthread_rwlock_b_rel(bench_lock_t *l, bench_ctx_t *c) { (void)c; pthread_rwlock_unlock(&l->prw); }
#define pthread_rwlock_rd_b_rel pthread_rwlock_b_rel
#define pthread_rwlock_wr_b_rel pthread_rwlock_b_rel

/* glibc's spinlock (section 1; under ksync-run, the drop-in layer's). */
static inline void pthread_spin_b_init(bench_lock_t *l) { pthread_spin_init(&l->pspin, PTHREAD_PROCESS_PRIVATE); }
static inline void pthread_spin_b_acq(bench_lock_t *l, bench_ctx_t *c) { (void)c; pthread_spin_lock(&l->pspin); }
static inline void pthread_spin_b_rel(bench_lock_t *l, bench_ctx_t *c) { (void)c; pthread_spin_unlock(&l->pspin); }

/* ---- sections ------------------------------------------------------------- */

void bench_uncontended(void);
int bench_callgrind_child(void); /* the process valgrind runs (internal option) */
void bench_run_begin(void);      /* bench.c: line-buffered stdout, the context block */
void bench_run_end(void);        /* bench.c: the PASS/MISS summary, load, total time */
void bench_counter(void);
void bench_limiter(void);
void bench_cpu(void);
void bench_handoff(void);
void bench_barrier(void);
void bench_rwlock(void);
void bench_broadcast(void);
void bench_queue(void);
void bench_ipc(void);
void bench_cache(void);

#endif

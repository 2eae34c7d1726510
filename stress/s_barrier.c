/* stress/s_barrier.c - the barrier family: S19 (N threads meet at a
 * reusable barrier for many phases).  Seed: 002 "Barreras".
 *
 * Every thread runs phases 0, 1, 2, ...: a little random work, one
 * increment of the phase's counter fin[k], then the barrier.  After barrier
 * k a thread checks:
 *   - fin[k] == N: nobody left barrier k before all N had finished phase k
 *     (and, before its own increment, fin[k] < N: nobody of a later phase
 *     that reuses the slot got in early);
 *   - where the barrier reports a serial thread (ksync, pthread_barrier),
 *     serial[k-1] == 1: exactly one thread was serial at barrier k-1 (its
 *     increment happens after barrier k-1 and before barrier k).
 * Counters live in a ring of 4 slots indexed by k mod 4; thread 0 zeroes
 * slot k+2 after barrier k, when no thread can still touch it.  All these
 * atomics are relaxed on purpose: the barrier alone must order them (the
 * CK issue in docs/pitfalls.md item 26 was exactly a missing fence).
 *
 * Concurrency Kit's barriers (centralized, combining tree, dissemination,
 * tournament, MCS tree; adapters in ref_barrier.h, shared with bench section
 * 6) have no serial thread in their API: for them only
 * the phase invariant is checked, and the row says so.  They spin without
 * end and cannot be abandoned: one thread that stops arriving leaves the
 * others spinning for good.  So the stop is decided by one thread for all:
 * thread 0, before arriving at barrier k, writes quit_at = k when its
 * budget or the harness's stop flag says so; every thread reads quit_at
 * after barrier k (the barrier orders the write before the reads) and all
 * leave after the same phase.  Spinning barriers collapse when threads
 * outnumber free CPUs (a phase needs every spinner to be scheduled, and a
 * spinner keeps the CPU from the thread it waits for): their iteration-mode
 * runs stop after S19_SPIN_CAP_S and report the partial rate.
 */
#include "harness.h"
#include "ref_barrier.h"

#include <ksync/barrier.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The spinning references' cap in iteration mode: shorter than
 * ST_SPIN_CAP_S because S19 runs five of them per configuration. */
#define S19_SPIN_CAP_S 1.0
#define S19_SERIAL (-1) /* KS_BARRIER_SERIAL == PTHREAD_BARRIER_SERIAL_THREAD */
#define S19_SLOTS 4

/* ---- the barriers compared ------------------------------------------------------ */

struct s19;

struct barrier_impl {
    const char *name;
    enum st_kind kind;
    int serial; /* wait() reports one serial thread per phase */
    int spins;  /* busy-waits: collapses when threads outnumber cores */
    int (*init)(struct s19 *c);
    void (*join)(struct s19 *c, struct ckb_me *me, unsigned id); /* in the thread */
    int (*wait)(struct s19 *c, struct ckb_me *me); /* S19_SERIAL, 0, or an error > 0 */
    int (*destroy)(struct s19 *c);
};

struct s19_slot {
    _Alignas(KS_CACHELINE) atomic_uint v;
};

struct s19 {
    ks_barrier_t ks; /* first: the stall dump reads it */
    pthread_barrier_t pt;
    struct ckb ck; /* the Concurrency Kit barriers */
    const struct barrier_impl *im;
    unsigned n;
    struct s19_slot fin[S19_SLOTS];    /* threads that finished phase k (slot k % 4) */
    struct s19_slot serial[S19_SLOTS]; /* serial threads of barrier k */
    _Alignas(KS_CACHELINE) _Atomic uint64_t quit_at; /* last phase; UINT64_MAX: none yet */
    struct st_note err;
};

/* ksync */
static int ks_binit(struct s19 *c) { return ks_barrier_init(&c->ks, c->n, KS_PRIVATE); }
static void no_join(struct s19 *c, struct ckb_me *me, unsigned id) { (void)c, (void)me, (void)id; }
static int ks_bwait(struct s19 *c, struct ckb_me *me)
{
    (void)me;
    int r = ks_barrier_wait(&c->ks);
    return r == KS_BARRIER_SERIAL ? S19_SERIAL : r;
}
static int ks_bdestroy(struct s19 *c) { return ks_barrier_destroy(&c->ks); }

/* pthread */
static int pt_binit(struct s19 *c) { return pthread_barrier_init(&c->pt, NULL, c->n); }
static int pt_bwait(struct s19 *c, struct ckb_me *me)
{
    (void)me;
    int r = pthread_barrier_wait(&c->pt);
    return r == PTHREAD_BARRIER_SERIAL_THREAD ? S19_SERIAL : r;
}
static int pt_bdestroy(struct s19 *c) { return pthread_barrier_destroy(&c->pt); }

/* Concurrency Kit: ref_barrier.h's adapters on c->ck */
#define CK_BARRIER(name)                                                                    \
    static int name##_init(struct s19 *c)                                                   \
    {                                                                                       \
        ckb_##name##_init(&c->ck, c->n, st_alloc);                                          \
        return 0;                                                                           \
    }                                                                                       \
    static void name##_join(struct s19 *c, struct ckb_me *me, unsigned id)                  \
    {                                                                                       \
        ckb_##name##_join(&c->ck, me, id);                                                  \
    }                                                                                       \
    static int name##_wait(struct s19 *c, struct ckb_me *me)                                \
    {                                                                                       \
        ckb_##name##_wait(&c->ck, me);                                                      \
        return 0;                                                                           \
    }
CK_BARRIER(cen)
CK_BARRIER(comb)
CK_BARRIER(dis)
CK_BARRIER(tour)
CK_BARRIER(mcs)

static int ck_destroy(struct s19 *c)
{
    ckb_free(&c->ck);
    return 0;
}

static const struct barrier_impl barriers[] = {
    {"ksync", ST_KSYNC, 1, 0, ks_binit, no_join, ks_bwait, ks_bdestroy},
    {"pthread_barrier", ST_REF, 1, 0, pt_binit, no_join, pt_bwait, pt_bdestroy},
    {"ck_centralized", ST_REF, 0, 1, cen_init, cen_join, cen_wait, ck_destroy},
    {"ck_combining", ST_REF, 0, 1, comb_init, comb_join, comb_wait, ck_destroy},
    {"ck_dissemination", ST_REF, 0, 1, dis_init, dis_join, dis_wait, ck_destroy},
    {"ck_tournament", ST_REF, 0, 1, tour_init, tour_join, tour_wait, ck_destroy},
    {"ck_mcs", ST_REF, 0, 1, mcs_init, mcs_join, mcs_wait, ck_destroy},
};
#define N_BARRIERS (sizeof barriers / sizeof barriers[0])

/* ---- S19: phases ------------------------------------------------------------------ */

enum { S19_SERIALS };

static void s19_dump(void *ctx, char *buf, size_t len)
{
    struct s19 *c = ctx;
    /* The first invariant failure, if any, usually explains the stall. */
    size_t at = st_note_prefix(&c->err, buf, len, 100);
    snprintf(buf + at, len - at, "ks_barrier seq 0x%x (phase %u%s), arrived %u of %u",
             __atomic_load_n(&c->ks.seq, __ATOMIC_RELAXED),
             __atomic_load_n(&c->ks.seq, __ATOMIC_RELAXED) >> 1,
             (__atomic_load_n(&c->ks.seq, __ATOMIC_RELAXED) & 1) ? ", sleepers" : "",
             __atomic_load_n(&c->ks.arrived, __ATOMIC_RELAXED), c->ks.count);
}

static void s19_body(struct st_thread *t)
{
    struct s19 *c = t->ctx;
    const unsigned n = c->n;
    struct ckb_me me;
    memset(&me, 0, sizeof me);
    c->im->join(c, &me, t->id);
    for (uint64_t k = 0;; k++) {
        const unsigned s = (unsigned)(k % S19_SLOTS);
        st_pause(t, 64); /* the phase's work */
        unsigned before = atomic_fetch_add_explicit(&c->fin[s].v, 1, memory_order_relaxed);
        if (before >= n)
            st_note(&c->err, "phase %llu: %u threads had already finished it when another did "
                    "(a thread %u phases ahead?)", (unsigned long long)k, before + 1, S19_SLOTS);
        st_count_op(t); /* one phase done: counted here, as st_next would */
        /* Thread 0 decides for everyone whether this is the last phase;
         * relaxed: barrier k orders it before every read below. */
        if (t->id == 0 &&
            (t->done >= t->limit || atomic_load_explicit(t->stop, memory_order_relaxed)))
            atomic_store_explicit(&c->quit_at, k, memory_order_relaxed);

        int r = c->im->wait(c, &me);

        if (r > 0)
            st_note(&c->err, "phase %llu: wait returned %d", (unsigned long long)k, r);
        unsigned f = atomic_load_explicit(&c->fin[s].v, memory_order_relaxed);
        if (f != n)
            st_note(&c->err, "phase %llu: a thread left the barrier when %u of %u had finished "
                    "the phase", (unsigned long long)k, f, n);
        if (r == S19_SERIAL) {
            t->stat[S19_SERIALS]++;
            atomic_fetch_add_explicit(&c->serial[s].v, 1, memory_order_relaxed);
        }
        if (c->im->serial && k > 0) {
            unsigned sv = atomic_load_explicit(&c->serial[(k - 1) % S19_SLOTS].v,
                                               memory_order_relaxed);
            if (sv != 1)
                st_note(&c->err, "phase %llu had %u serial threads", (unsigned long long)(k - 1),
                        sv);
        }
        if (t->id == 0) {
            /* Slot k+2 (== k-2): its last readers checked it before barrier k. */
            atomic_store_explicit(&c->fin[(k + 2) % S19_SLOTS].v, 0, memory_order_relaxed);
            atomic_store_explicit(&c->serial[(k + 2) % S19_SLOTS].v, 0, memory_order_relaxed);
        }
        if (atomic_load_explicit(&c->quit_at, memory_order_relaxed) <= k)
            return;
    }
}

static void s19_one(const struct st_opts *o, const struct barrier_impl *im, unsigned threads,
                    uint64_t iters)
{
    struct s19 *c = st_alloc(sizeof *c);
    c->im = im;
    c->n = threads;
    atomic_init(&c->quit_at, UINT64_MAX);
    st_note_init(&c->err);
    struct st_run run = {.scen = "S19", .impl = im->name, .kind = im->kind, .threads = threads,
                         .iters = iters, .cap_s = im->spins ? S19_SPIN_CAP_S : 0,
                         .body = s19_body, .ctx = c,
                         .dump = im->kind == ST_KSYNC ? s19_dump : NULL};
    int e = im->init(c);
    if (e) {
        st_row(&run, NULL, ST_FAIL, "init returned %d", e);
        free(c);
        return;
    }
    struct st_result r;
    st_run(o, &run, &r);
    uint64_t phases = r.t[0].done, lo, hi;
    st_spread(&r, &lo, &hi);
    uint64_t serials = st_stat_sum(&r, S19_SERIALS);
    uint64_t last = phases ? phases - 1 : 0;
    unsigned last_serial = atomic_load(&c->serial[last % S19_SLOTS].v);
    int de = im->destroy(c);
    unsigned errs = st_note_count(&c->err);
    /* Serial: one per phase in total, and the last phase (which no later
     * barrier checked) had exactly one. */
    int serial_ok = !im->serial || (serials == phases && last_serial == 1);
    char rate[32];
    st_human(r.secs > 0 ? (double)phases / r.secs : 0, rate, sizeof rate);
    if (errs || lo != hi || !serial_ok || de)
        st_row(&run, &r, ST_FAIL,
               "%llu phases, threads did %llu..%llu; %llu serial returns%s; destroy %d; %u "
               "errors: %s",
               (unsigned long long)phases, (unsigned long long)lo, (unsigned long long)hi,
               (unsigned long long)serials, im->serial ? "" : " (no serial notion)", de, errs,
               errs ? c->err.msg : "-");
    else if (im->serial)
        st_row(&run, &r, ST_PASS,
               "%llu phases (%s/s): nobody entered phase k+1 before all %u finished phase k; "
               "exactly one serial thread per phase",
               (unsigned long long)phases, rate, threads);
    else
        st_row(&run, &r, ST_PASS,
               "%llu phases (%s/s): nobody entered phase k+1 before all %u finished phase k; "
               "no serial notion in CK's API, phase invariant only%s",
               (unsigned long long)phases, rate, threads,
               r.capped || threads > (unsigned)sysconf(_SC_NPROCESSORS_ONLN)
                   ? "; a spinning barrier collapses when threads outnumber free cpus"
                   : "");
    st_result_free(&r);
    free(c);
}

static void s19_config(const struct st_opts *o, const struct st_config *cfg, unsigned n)
{
    for (size_t i = 0; i < N_BARRIERS; i++)
        if (st_selected(o, barriers[i].kind))
            s19_one(o, &barriers[i], n, st_iters(o, cfg->iters));
}

static void s19_run(const struct st_opts *o)
{
    /* Defaults: one thread per core, and 4 per core (oversubscribed). */
    static const struct st_config cfg[] = {{2, 20000, 0}, {8, 5000, 0}};
    ST_CONFIGS(o, cfg, s19_config);
}

const struct st_scenario st_family_barrier[] = {
    {"S19", "barrier-phases", "N threads meet at a reusable barrier for many phases: nobody "
                              "enters phase k+1 before all finished phase k, one serial thread "
                              "per phase",
     "ksync barrier | pthread_barrier, ck_barrier_{centralized,combining,dissemination,"
     "tournament,mcs}",
     "2 threads x 20000 phases and 8 x 5000 (CK capped at 1 s)", s19_run},
    {0, 0, 0, 0, 0, 0},
};

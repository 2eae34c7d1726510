/* stress/b_queue.c - section 9: the MPMC ring and the blocking queue.
 *
 * P producers and C consumers (1p1c, 2p2c, 4p4c, 16p16c) move items through
 * a queue of QB_SLOTS (1024) slots for --seconds/QB_DIV per run; the figure
 * is items consumed / (start .. last thread out), so a slow drain after the
 * stop counts against the queue that causes it.
 *
 * Non-blocking rings, each with two retry policies applied alike to a full
 * ring (producer) and an empty one (consumer):
 *   spin-retry    ck_pr_stall() (PAUSE on x86) and try again
 *   sched_yield   sched_yield() and try again
 * compared: ks_mpmc (try_push/try_pop; EBUSY is retried like EAGAIN) and
 * Concurrency Kit's ck_ring MPMC (ck_ring_enqueue_mpmc/ck_ring_dequeue_mpmc;
 * ck_ring_init(1024) holds 1023 items: CK keeps one slot empty).  Note that
 * ck_ring's enqueue also spins inside itself, whatever the policy, until the
 * producers that took earlier tickets have published (docs/pitfalls.md item 45).
 *
 * liburcu's wfcqueue (cds_wfcq_enqueue; __cds_wfcq_dequeue_blocking for one
 * consumer, and for several cds_wfcq_dequeue_blocking, which takes the
 * queue's head mutex: liburcu requires mutual exclusion between
 * dequeuers).  It is unbounded, so its producers never wait for a slot; the
 * nodes are preallocated, QB_WFCQ_POOL per producer and recycled (a consumer
 * marks a node free after reading it), so a producer that runs QB_WFCQ_POOL
 * items ahead of the consumers does wait, for its oldest node: those waits
 * are counted and printed.  Empty-queue retries use sched_yield; the ratio
 * is against ks_mpmc with the same policy.
 *
 * Blocking queues: ks_queue_put/ks_queue_get against the textbook bounded
 * queue of one pthread_mutex and two pthread_conds (not_full, not_empty;
 * signal only when someone waits).  To stop, producers see the flag and the
 * harness closes the queue (ks_queue_close; for the pthread queue a `done`
 * flag and a broadcast on both conditions): blocked producers return, and
 * consumers drain what was queued, then return.
 *
 * Integrity, on every run: an item is producer << 40 | seq, seq = 1, 2, ...
 * per producer.  Each consumer checks that the seqs it gets from each
 * producer strictly increase (per-producer FIFO; it also rules out a
 * duplicate seen twice by one consumer) and keeps, per producer, a count,
 * the sum of the seqs and the sum of a 64-bit mix of the items; the producer
 * sums the same mix over the items it pushed.  At the end, for every
 * producer, consumed count == pushed count, the seq sum == n(n+1)/2 and the
 * mix sums agree (a loss and a duplicate that cancel in both sums would need
 * a 64-bit coincidence).  Any difference stops the program (bench_fail),
 * and so does a run whose threads are not all out 10 s after the stop (a
 * lost wake-up or a livelock: a watchdog thread reports the queue's state
 * instead of letting `make bench` hang).
 *
 * Also printed: failed attempts per item, voluntary context switches and
 * ksync futex calls per 1000 items, CPU used, and the drain time (last
 * thread out minus the cap), which shows a ring stalled by a preempted
 * thread.
 */
#include "bench.h"

#include <ksync/mpmc.h>
#include <ksync/queue.h>

#include <ck_pr.h>
#include <ck_ring.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _LGPL_SOURCE /* the inline (static) wfcqueue, as ck_ring and ks_mpmc are inline */
#include <urcu/wfcqueue.h>

#define QB_SLOTS 1024
#define QB_DIV (2 * BENCH_SHORT_DIV) /* 28 runs per repetition: --seconds/4 each */
#define QB_SEQ_BITS 40
#define QB_SEQ_MASK ((1ull << QB_SEQ_BITS) - 1)
#define QB_WFCQ_POOL (1u << 14) /* nodes per producer (power of two) */

static const struct {
    int np, nc;
} shapes[] = {{1, 1}, {2, 2}, {4, 4}, {16, 16}};
#define NS ((int)(sizeof shapes / sizeof shapes[0]))
#define QB_MAXP 16

/* ---- per-thread accounting --------------------------------------------------- */

struct prod_state {
    uint64_t pushed;  /* items this producer queued: seqs 1..pushed */
    uint64_t mix;     /* sum of qb_mix(item) over them */
    uint64_t retries; /* failed attempts (full, busy, no free node) */
    uint64_t busy;    /* of which EBUSY (ks_mpmc: the other side's claimant not finished) */
} __attribute__((aligned(KS_CACHELINE)));

struct per_prod {
    uint64_t last, cnt, sum, mix;
};

struct cons_state {
    uint64_t retries;          /* failed attempts (empty, busy) */
    uint64_t busy;             /* of which EBUSY */
    uint64_t bad;              /* out-of-order, duplicate or foreign items */
    uint64_t bad_item;         /* the first such item */
    struct per_prod pp[QB_MAXP];
} __attribute__((aligned(KS_CACHELINE)));

static inline uint64_t qb_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static inline void qb_take(struct cons_state *cs, uint64_t item, int np)
{
    uint64_t p = item >> QB_SEQ_BITS, s = item & QB_SEQ_MASK;
    if (KS_UNLIKELY(p >= (uint64_t)np || s <= cs->pp[p].last)) {
        if (!cs->bad++)
            cs->bad_item = item;
        return;
    }
    struct per_prod *pp = &cs->pp[p];
    pp->last = s;
    pp->cnt++;
    pp->sum += s;
    pp->mix += qb_mix(item);
}

/* ---- the queues ---------------------------------------------------------------- */

struct wnode {
    struct cds_wfcq_node node;
    uint64_t item;
    uint32_t free; /* 1: the producer may reuse it */
};

/* Textbook bounded queue: one mutex, two conditions. */
struct cvq {
    pthread_mutex_t m;
    pthread_cond_t not_full, not_empty;
    unsigned head, count;          /* guarded by m */
    unsigned wait_put, wait_get;   /* guarded by m: threads in pthread_cond_wait */
    int done;                      /* guarded by m: no more puts; gets drain */
    uintptr_t buf[QB_SLOTS];       /* guarded by m */
};

static struct qb_run {
    int np, nc;
    ks_mpmc_t *ksm;
    ks_queue_t *ksq;
    struct cvq *cvq;
    ck_ring_t *ckr;
    ck_ring_buffer_t *ckbuf;
    struct wnode *pool; /* QB_WFCQ_POOL per producer */
    int multi_deq;      /* wfcq: several consumers, so dequeue under the head lock */
    struct prod_state *prod;
    struct cons_state *cons;
    int err; /* an unexpected return value, seen by a thread */
} run;

/* Producers that have finished, counted on their own line. */
static struct {
    int n;
} prod_done __attribute__((aligned(KS_CACHELINE)));
/* Consumers that have finished: only the watchdog reads it. */
static struct {
    int n;
} cons_done __attribute__((aligned(KS_CACHELINE)));

static struct {
    struct cds_wfcq_head h;
} wq_head __attribute__((aligned(KS_CACHELINE)));
static struct {
    struct cds_wfcq_tail t;
} wq_tail __attribute__((aligned(KS_CACHELINE)));

static inline void retry_spin(void) { ck_pr_stall(); }
static inline void retry_yield(void) { sched_yield(); }

/* push: 0 or a retry code; pop: 0, EAGAIN (empty) or EBUSY (retry) */
static inline int ksm_push(uint64_t item) { return ks_mpmc_try_push(run.ksm, (void *)(uintptr_t)item); }
static inline int ksm_pop(uint64_t *item)
{
    void *p;
    int e = ks_mpmc_try_pop(run.ksm, &p);
    if (e == 0)
        *item = (uintptr_t)p;
    return e;
}

static inline int ck_push(uint64_t item)
{
    return ck_ring_enqueue_mpmc(run.ckr, run.ckbuf, (void *)(uintptr_t)item) ? 0 : EAGAIN;
}
static inline int ck_pop(uint64_t *item)
{
    void *p;
    if (!ck_ring_dequeue_mpmc(run.ckr, run.ckbuf, &p))
        return EAGAIN;
    *item = (uintptr_t)p;
    return 0;
}

static void note_err(int e)
{
    int zero = 0;
    /* relaxed: read by main after pthread_join */
    __atomic_compare_exchange_n(&run.err, &zero, e, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

static void producer_end(void)
{
    /* release: pairs with the consumers' acquire load; every push of this
     * producer is complete before a consumer sees the count. */
    __atomic_add_fetch(&prod_done.n, 1, __ATOMIC_RELEASE);
}

static void consumer_end(void)
{
    __atomic_add_fetch(&cons_done.n, 1, __ATOMIC_RELAXED); /* relaxed: a detector (the watchdog) */
}

static inline int producers_all_done(void)
{
    /* acquire: pairs with producer_end */
    return __atomic_load_n(&prod_done.n, __ATOMIC_ACQUIRE) == run.np;
}

/* Non-blocking ring bodies: thread ids 0..np-1 produce, the others consume.
 * A consumer leaves when a pop finds the ring empty (EAGAIN, not EBUSY)
 * after every producer has finished. */
#define RING_BODY(name, pol)                                                           \
    static void body_##name##_##pol(bench_thr_t *t)                                    \
    {                                                                                  \
        const int np = run.np;                                                         \
        uint64_t retries = 0, busy = 0;                                                \
        if (t->id < np) {                                                              \
            struct prod_state *ps = &run.prod[t->id];                                  \
            const uint64_t tag = (uint64_t)t->id << QB_SEQ_BITS;                       \
            uint64_t seq = 0, mix = 0;                                                 \
            while (!bench_stopped()) {                                                 \
                uint64_t item = tag | (seq + 1);                                       \
                int e;                                                                 \
                while ((e = name##_push(item)) != 0) {                                 \
                    if (KS_UNLIKELY(e != EAGAIN && e != EBUSY)) {                      \
                        note_err(e);                                                   \
                        goto out_p;                                                    \
                    }                                                                  \
                    retries++;                                                         \
                    busy += e == EBUSY;                                                \
                    if (bench_stopped())                                               \
                        goto out_p;                                                    \
                    retry_##pol();                                                     \
                }                                                                      \
                seq++;                                                                 \
                mix += qb_mix(item);                                                   \
            }                                                                          \
        out_p:                                                                         \
            ps->pushed = seq;                                                          \
            ps->mix = mix;                                                             \
            ps->retries = retries;                                                     \
            ps->busy = busy;                                                           \
            producer_end();                                                            \
        } else {                                                                       \
            struct cons_state *cs = &run.cons[t->id - np];                             \
            uint64_t n = 0, item;                                                      \
            for (;;) {                                                                 \
                int e = name##_pop(&item);                                             \
                if (e == 0) {                                                          \
                    qb_take(cs, item, np);                                             \
                    n++;                                                               \
                    continue;                                                          \
                }                                                                      \
                if (KS_UNLIKELY(e != EAGAIN && e != EBUSY)) {                          \
                    note_err(e);                                                       \
                    break;                                                             \
                }                                                                      \
                retries++;                                                             \
                busy += e == EBUSY;                                                    \
                if (producers_all_done()) {                                            \
                    /* no push is in flight now: EBUSY cannot last */                  \
                    uint64_t late_busy = 0;                                            \
                    while ((e = name##_pop(&item)) == 0 || e == EBUSY) {               \
                        if (e == 0) {                                                  \
                            qb_take(cs, item, np);                                     \
                            n++;                                                       \
                        } else if (++late_busy > 1000000) {                            \
                            note_err(EBUSY);                                           \
                            break;                                                     \
                        }                                                              \
                    }                                                                  \
                    break;                                                             \
                }                                                                      \
                retry_##pol();                                                         \
            }                                                                          \
            cs->retries = retries;                                                     \
            cs->busy = busy;                                                           \
            t->ops = n;                                                                \
            consumer_end();                                                            \
        }                                                                              \
    }
RING_BODY(ksm, spin)
RING_BODY(ck, spin)
RING_BODY(ksm, yield)
RING_BODY(ck, yield)

/* wfcqueue: a producer reuses its nodes in order, waiting (sched_yield) for
 * the one it needs to be marked free. */
static void body_wfcq(bench_thr_t *t)
{
    const int np = run.np;
    uint64_t retries = 0;
    if (t->id < np) {
        struct prod_state *ps = &run.prod[t->id];
        struct wnode *pool = run.pool + (size_t)t->id * QB_WFCQ_POOL;
        const uint64_t tag = (uint64_t)t->id << QB_SEQ_BITS;
        uint64_t seq = 0, mix = 0;
        while (!bench_stopped()) {
            uint64_t item = tag | (seq + 1);
            struct wnode *w = &pool[seq & (QB_WFCQ_POOL - 1)];
            /* acquire: pairs with the consumer's release store of free; its
             * read of the node happens before our rewrite. */
            while (!__atomic_load_n(&w->free, __ATOMIC_ACQUIRE)) {
                retries++;
                if (bench_stopped())
                    goto out_p;
                sched_yield();
            }
            w->free = 0;
            w->item = item;
            cds_wfcq_node_init(&w->node);
            cds_wfcq_enqueue(&wq_head.h, &wq_tail.t, &w->node);
            seq++;
            mix += qb_mix(item);
        }
    out_p:
        ps->pushed = seq;
        ps->mix = mix;
        ps->retries = retries;
        producer_end();
    } else {
        struct cons_state *cs = &run.cons[t->id - np];
        const int multi = run.multi_deq;
        uint64_t n = 0;
        for (;;) {
            struct cds_wfcq_node *nd = multi ? cds_wfcq_dequeue_blocking(&wq_head.h, &wq_tail.t)
                                             : __cds_wfcq_dequeue_blocking(&wq_head.h, &wq_tail.t);
            if (nd) {
                struct wnode *w = caa_container_of(nd, struct wnode, node);
                qb_take(cs, w->item, np);
                /* release: pairs with the producer's acquire load of free */
                __atomic_store_n(&w->free, 1, __ATOMIC_RELEASE);
                n++;
                continue;
            }
            retries++;
            if (producers_all_done()) {
                /* every enqueue is complete: NULL now means empty */
                if (cds_wfcq_empty(&wq_head.h, &wq_tail.t))
                    break;
                continue;
            }
            sched_yield();
        }
        cs->retries = retries;
        t->ops = n;
        consumer_end();
    }
}

/* ---- blocking queues ------------------------------------------------------------ */

static inline int ksq_put(uint64_t item) { return ks_queue_put(run.ksq, (void *)(uintptr_t)item); }
static inline int ksq_get(uint64_t *item)
{
    void *p;
    int e = ks_queue_get(run.ksq, &p);
    if (e == 0)
        *item = (uintptr_t)p;
    return e;
}
static void ksq_release(void *arg)
{
    (void)arg;
    int e = ks_queue_close(run.ksq);
    if (e)
        note_err(e);
}

static inline int cvq_put(uint64_t item)
{
    struct cvq *q = run.cvq;
    pthread_mutex_lock(&q->m);
    while (q->count == QB_SLOTS && !q->done) {
        q->wait_put++;
        pthread_cond_wait(&q->not_full, &q->m);
        q->wait_put--;
    }
    if (q->done) {
        pthread_mutex_unlock(&q->m);
        return EPIPE;
    }
    q->buf[(q->head + q->count) & (QB_SLOTS - 1)] = (uintptr_t)item;
    q->count++;
    if (q->wait_get)
        pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->m);
    return 0;
}
static inline int cvq_get(uint64_t *item)
{
    struct cvq *q = run.cvq;
    pthread_mutex_lock(&q->m);
    while (q->count == 0 && !q->done) {
        q->wait_get++;
        pthread_cond_wait(&q->not_empty, &q->m);
        q->wait_get--;
    }
    if (q->count == 0) {
        pthread_mutex_unlock(&q->m);
        return EPIPE;
    }
    *item = q->buf[q->head];
    q->head = (q->head + 1) & (QB_SLOTS - 1);
    q->count--;
    if (q->wait_put)
        pthread_cond_signal(&q->not_full);
    pthread_mutex_unlock(&q->m);
    return 0;
}
static void cvq_release(void *arg)
{
    (void)arg;
    struct cvq *q = run.cvq;
    pthread_mutex_lock(&q->m);
    q->done = 1;
    pthread_cond_broadcast(&q->not_full);
    pthread_cond_broadcast(&q->not_empty);
    pthread_mutex_unlock(&q->m);
}

/* A put returns 0 (queued) or EPIPE (closed: not queued); a get 0 or EPIPE
 * (closed and drained). */
#define BLOCKING_BODY(name)                                                            \
    static void body_##name(bench_thr_t *t)                                            \
    {                                                                                  \
        const int np = run.np;                                                         \
        if (t->id < np) {                                                              \
            struct prod_state *ps = &run.prod[t->id];                                  \
            const uint64_t tag = (uint64_t)t->id << QB_SEQ_BITS;                       \
            uint64_t seq = 0, mix = 0;                                                 \
            while (!bench_stopped()) {                                                 \
                uint64_t item = tag | (seq + 1);                                       \
                int e = name##_put(item);                                              \
                if (e) {                                                               \
                    if (e != EPIPE)                                                    \
                        note_err(e);                                                   \
                    break;                                                             \
                }                                                                      \
                seq++;                                                                 \
                mix += qb_mix(item);                                                   \
            }                                                                          \
            ps->pushed = seq;                                                          \
            ps->mix = mix;                                                             \
            producer_end();                                                            \
        } else {                                                                       \
            struct cons_state *cs = &run.cons[t->id - np];                             \
            uint64_t n = 0, item;                                                      \
            int e;                                                                     \
            while ((e = name##_get(&item)) == 0) {                                     \
                qb_take(cs, item, np);                                                 \
                n++;                                                                   \
            }                                                                          \
            if (e != EPIPE)                                                            \
                note_err(e);                                                           \
            t->ops = n;                                                                \
            consumer_end();                                                            \
        }                                                                              \
    }
BLOCKING_BODY(ksq)
BLOCKING_BODY(cvq)

/* ---- kinds ---------------------------------------------------------------------- */

enum { K_KSM_SPIN, K_CK_SPIN, K_KSM_YIELD, K_CK_YIELD, K_WFCQ, K_KSQ, K_CVQ, NK };

static const struct qkind {
    const char *name;
    void (*body)(bench_thr_t *t);
    void (*release)(void *arg);
    int ref; /* the kind this one is compared with (ratio ks / ref), or -1 */
} kinds[NK] = {
    [K_KSM_SPIN] = {"ks_mpmc spin-retry", body_ksm_spin, NULL, -1},
    [K_CK_SPIN] = {"ck_ring spin-retry", body_ck_spin, NULL, K_KSM_SPIN},
    [K_KSM_YIELD] = {"ks_mpmc sched_yield", body_ksm_yield, NULL, -1},
    [K_CK_YIELD] = {"ck_ring sched_yield", body_ck_yield, NULL, K_KSM_YIELD},
    [K_WFCQ] = {"wfcqueue (unbounded)", body_wfcq, NULL, K_KSM_YIELD},
    [K_KSQ] = {"ks_queue put/get", body_ksq, ksq_release, -1},
    [K_CVQ] = {"mutex+2cond put/get", body_cvq, cvq_release, K_KSQ},
};

static void setup(int k)
{
    int e = 0;
    switch (k) {
    case K_KSM_SPIN:
    case K_KSM_YIELD:
        e = ks_mpmc_create(&run.ksm, QB_SLOTS);
        break;
    case K_CK_SPIN:
    case K_CK_YIELD:
        memset(run.ckr, 0, sizeof *run.ckr);
        memset(run.ckbuf, 0, QB_SLOTS * sizeof *run.ckbuf);
        ck_ring_init(run.ckr, QB_SLOTS);
        break;
    case K_WFCQ:
        cds_wfcq_init(&wq_head.h, &wq_tail.t);
        for (size_t i = 0; i < (size_t)run.np * QB_WFCQ_POOL; i++)
            run.pool[i].free = 1;
        run.multi_deq = run.nc > 1;
        break;
    case K_KSQ:
        e = ks_queue_create(&run.ksq, QB_SLOTS, KS_PRIVATE);
        break;
    case K_CVQ:
        memset(run.cvq, 0, sizeof *run.cvq);
        pthread_mutex_init(&run.cvq->m, NULL);
        pthread_cond_init(&run.cvq->not_full, NULL);
        pthread_cond_init(&run.cvq->not_empty, NULL);
        break;
    }
    if (e) {
        fprintf(stderr, "ksync-bench: %s: creating a %d-slot queue failed: %s\n", kinds[k].name, QB_SLOTS,
                strerror(e));
        exit(1);
    }
}

/* Tear down; returns items left in the queue (must be 0). */
static uint64_t teardown(int k)
{
    uint64_t left = 0;
    void *p;
    int e = 0;
    switch (k) {
    case K_KSM_SPIN:
    case K_KSM_YIELD:
        while (ks_mpmc_try_pop(run.ksm, &p) == 0)
            left++;
        e = ks_mpmc_destroy(run.ksm);
        break;
    case K_CK_SPIN:
    case K_CK_YIELD:
        while (ck_ring_dequeue_mpmc(run.ckr, run.ckbuf, &p))
            left++;
        break;
    case K_WFCQ:
        while (__cds_wfcq_dequeue_blocking(&wq_head.h, &wq_tail.t))
            left++;
        cds_wfcq_destroy(&wq_head.h, &wq_tail.t);
        break;
    case K_KSQ:
        left = ks_queue_size(run.ksq);
        e = ks_queue_destroy(run.ksq); /* every thread has left: EBUSY is a miscount */
        if (e == EBUSY)
            bench_fail("%s: ks_queue_destroy says EBUSY after every thread was joined (sleepers: getters "
                       "%u, putters %u, joiners %u)", kinds[k].name, run.ksq->getters.sleepers,
                       run.ksq->putters.sleepers, run.ksq->joiners.sleepers);
        break;
    case K_CVQ:
        left = run.cvq->count;
        pthread_cond_destroy(&run.cvq->not_full);
        pthread_cond_destroy(&run.cvq->not_empty);
        pthread_mutex_destroy(&run.cvq->m);
        break;
    }
    if (e)
        bench_fail("%s: destroy after the run returned %s", kinds[k].name, strerror(e));
    return left;
}

/* ---- watchdog ------------------------------------------------------------------ */

/* A run whose threads are not all out QB_GRACE_NS after the time cap (a lost
 * wake-up, a livelock) stops the program with what it can see, instead of
 * hanging `make bench`: a queue that strands its threads has failed. */
#define QB_GRACE_NS (10 * (int64_t)KS_NSEC_PER_SEC)
static struct {
    int64_t deadline; /* 0: no run in progress; -1: section over */
    int kind, shape;
} wd;

static void *watchdog(void *arg)
{
    (void)arg;
    for (;;) {
        bench_sleep_ns(100 * 1000 * 1000);
        /* acquire: pairs with the release store in run_once; kind/shape */
        int64_t d = __atomic_load_n(&wd.deadline, __ATOMIC_ACQUIRE);
        if (d < 0)
            return NULL;
        if (d == 0 || bench_now() < d)
            continue;
        const int k = wd.kind, np = shapes[wd.shape].np, nc = shapes[wd.shape].nc;
        /* relaxed: a detector; the threads are stuck or racing, any value helps */
        int pd = __atomic_load_n(&prod_done.n, __ATOMIC_RELAXED), cd = __atomic_load_n(&cons_done.n, __ATOMIC_RELAXED);
        char extra[256] = "";
        if (k == K_KSQ) {
            ks_queue_t *q = run.ksq;
            /* relaxed: a detector */
            uint64_t t = __atomic_load_n(&q->ring.tail, __ATOMIC_RELAXED);
            snprintf(extra, sizeof extra,
                     "; queue %s, tail %llu, head %llu, getters seq %u sleepers %u, putters seq %u sleepers %u",
                     (t & KS_MPMC_CLOSED) ? "closed" : "open", (unsigned long long)(t & ~KS_MPMC_CLOSED),
                     (unsigned long long)__atomic_load_n(&q->ring.head, __ATOMIC_RELAXED),
                     __atomic_load_n(&q->getters.seq, __ATOMIC_RELAXED),
                     __atomic_load_n(&q->getters.sleepers, __ATOMIC_RELAXED),
                     __atomic_load_n(&q->putters.seq, __ATOMIC_RELAXED),
                     __atomic_load_n(&q->putters.sleepers, __ATOMIC_RELAXED));
        }
        bench_fail("%s, %dp%dc: threads still inside the queue %.0f s after the stop (%d of %d producers, "
                   "%d of %d consumers returned)%s", kinds[k].name, np, nc, (double)QB_GRACE_NS / 1e9, pd, np, cd,
                   nc, extra);
    }
}

struct qb_result {
    double mitems;     /* million items per second */
    double retries;    /* failed attempts per item, both sides */
    double busy_pct;   /* % of the failed attempts that were EBUSY */
    double sleeps_k;   /* voluntary context switches per 1000 items */
    double futex_k;    /* ksync futex waits + wakes per 1000 items */
    double cpu_share;  /* % of wall x nproc */
    double overrun_ms; /* last thread out - time cap */
    int pinned;
};

static uint64_t runs_checked, items_checked;

static struct qb_result run_once(int k, int si, double seconds)
{
    const int np = shapes[si].np, nc = shapes[si].nc;
    struct qb_result res;
    struct bench_team team = {
        .n = np + nc, .body = kinds[k].body, .arg = &run, .cap_ns = (int64_t)(seconds * 1e9),
        .release = kinds[k].release,
    };
    run.np = np;
    run.nc = nc;
    run.err = 0;
    memset(run.prod, 0, QB_MAXP * sizeof *run.prod);
    memset(run.cons, 0, QB_MAXP * sizeof *run.cons);
    prod_done.n = 0;
    cons_done.n = 0;
    setup(k);
    wd.kind = k;
    wd.shape = si;
    /* release: pairs with the watchdog's acquire load */
    __atomic_store_n(&wd.deadline, bench_now() + team.cap_ns + QB_GRACE_NS, __ATOMIC_RELEASE);
    bench_team_run(&team);
    __atomic_store_n(&wd.deadline, 0, __ATOMIC_RELAXED); /* relaxed: nothing to publish */
    uint64_t left = teardown(k);

    const char *what = kinds[k].name;
    if (run.err)
        bench_fail("%s, %dp%dc: unexpected return value %d (%s)", what, np, nc, run.err, strerror(run.err));
    uint64_t consumed = 0, retries = 0, busy = 0, sleeps = 0, fx = 0;
    for (int c = 0; c < nc; c++) {
        if (run.cons[c].bad)
            bench_fail("%s, %dp%dc: consumer %d got %llu items out of order, twice or from no producer "
                       "(first: producer %llu seq %llu)", what, np, nc, c, (unsigned long long)run.cons[c].bad,
                       (unsigned long long)(run.cons[c].bad_item >> QB_SEQ_BITS),
                       (unsigned long long)(run.cons[c].bad_item & QB_SEQ_MASK));
        retries += run.cons[c].retries;
        busy += run.cons[c].busy;
    }
    for (int p = 0; p < np; p++) {
        uint64_t cnt = 0, sum = 0, mix = 0, n = run.prod[p].pushed;
        for (int c = 0; c < nc; c++) {
            cnt += run.cons[c].pp[p].cnt;
            sum += run.cons[c].pp[p].sum;
            mix += run.cons[c].pp[p].mix;
        }
        uint64_t want = (n & 1) ? n * ((n + 1) / 2) : (n / 2) * (n + 1); /* mod 2^64, as the sums */
        if (cnt != n || sum != want || mix != run.prod[p].mix)
            bench_fail("%s, %dp%dc: producer %d pushed %llu items, consumers got %llu (seq sum %s, item mix "
                       "sum %s): items lost or duplicated", what, np, nc, p, (unsigned long long)n,
                       (unsigned long long)cnt, sum == want ? "equal" : "differs",
                       mix == run.prod[p].mix ? "equal" : "differs");
        consumed += cnt;
        retries += run.prod[p].retries;
        busy += run.prod[p].busy;
    }
    if (left || consumed != team.ops)
        bench_fail("%s, %dp%dc: %llu items left in the queue after the drain, %llu counted by consumers, "
                   "%llu by their threads", what, np, nc, (unsigned long long)left, (unsigned long long)consumed,
                   (unsigned long long)team.ops);
    runs_checked++;
    items_checked += consumed;
    int64_t cpu = 0;
    for (int i = 0; i < team.n; i++) {
        cpu += team.thr[i].cpu_ns;
        sleeps += team.thr[i].vcsw;
        fx += team.thr[i].fx.waits + team.thr[i].fx.wakes;
    }
    double kitems = (double)consumed / 1000.0;
    res.mitems = (double)consumed / ((double)team.elapsed_ns / 1e9) / 1e6;
    res.retries = consumed ? (double)retries / (double)consumed : 0;
    res.busy_pct = retries ? 100.0 * (double)busy / (double)retries : 0;
    res.sleeps_k = kitems > 0 ? (double)sleeps / kitems : 0;
    res.futex_k = kitems > 0 ? (double)fx / kitems : 0;
    res.cpu_share = 100.0 * (double)cpu / ((double)team.elapsed_ns * (double)sysconf(_SC_NPROCESSORS_ONLN));
    res.overrun_ms = (double)(team.elapsed_ns - team.cap_ns) / 1e6;
    res.pinned = team.pinned;
    bench_team_free(&team);
    return res;
}

void bench_queue(void)
{
    const int R = bopt.reps;
    const double secs = bopt.seconds / QB_DIV;
    struct qb_result *res = calloc((size_t)(NS * NK * R), sizeof *res);
    struct bench_stat st[NS][NK], retr[NS][NK], busy[NS][2], slp[NS][NK], fxk[NS][NK], cpu[NS][NK], ovr[NS][NK];
#define RES(si, k, r) res[((si) * NK + (k)) * R + (r)]

    run.prod = aligned_alloc(KS_CACHELINE, QB_MAXP * sizeof *run.prod);
    run.cons = aligned_alloc(KS_CACHELINE, QB_MAXP * sizeof *run.cons);
    run.cvq = aligned_alloc(KS_CACHELINE, (sizeof(struct cvq) + KS_CACHELINE - 1) / KS_CACHELINE * KS_CACHELINE);
    run.ckr = aligned_alloc(KS_CACHELINE, (sizeof(ck_ring_t) + KS_CACHELINE - 1) / KS_CACHELINE * KS_CACHELINE);
    run.ckbuf = aligned_alloc(KS_CACHELINE, QB_SLOTS * sizeof *run.ckbuf);
    run.pool = aligned_alloc(KS_CACHELINE, (size_t)QB_MAXP * QB_WFCQ_POOL * sizeof *run.pool);
    if (!res || !run.prod || !run.cons || !run.cvq || !run.ckr || !run.ckbuf || !run.pool) {
        fprintf(stderr, "ksync-bench: out of memory\n");
        exit(1);
    }
    runs_checked = items_checked = 0;
    pthread_t wd_tid;
    wd.deadline = 0;
    if (pthread_create(&wd_tid, NULL, watchdog, NULL)) {
        fprintf(stderr, "ksync-bench: pthread_create failed\n");
        exit(1);
    }

    bench_section("9");

    printf("\n== 9. MPMC ring and blocking queue: P producers, C consumers, %d slots (M items/s) ==\n", QB_SLOTS);
    printf("%.3f s per run; rate = items consumed / (start .. last thread out); %ld CPUs online\n", secs,
           sysconf(_SC_NPROCESSORS_ONLN));
    for (int si = 0; si < NS; si++) {
        for (int r = 0; r < R; r++)
            for (int k = 0; k < NK; k++)
                RES(si, k, r) = run_once(k, si, secs);
        for (int k = 0; k < NK; k++) {
            char label[80];
            snprintf(label, sizeof label, "%dp%dc %s M items/s", shapes[si].np, shapes[si].nc, kinds[k].name);
            st[si][k] = BENCH_STATS_OF(label, RES(si, k, 0), mitems, R);
            retr[si][k] = BENCH_STATS_OF(NULL, RES(si, k, 0), retries, R);
            if (k == K_KSM_SPIN || k == K_KSM_YIELD) {
                busy[si][k == K_KSM_YIELD] = BENCH_STATS_OF(NULL, RES(si, k, 0), busy_pct, R);
            }
            slp[si][k] = BENCH_STATS_OF(NULL, RES(si, k, 0), sleeps_k, R);
            fxk[si][k] = BENCH_STATS_OF(NULL, RES(si, k, 0), futex_k, R);
            cpu[si][k] = BENCH_STATS_OF(NULL, RES(si, k, 0), cpu_share, R);
            snprintf(label, sizeof label, "%dp%dc %s drain ms", shapes[si].np, shapes[si].nc, kinds[k].name);
            ovr[si][k] = BENCH_STATS_OF(label, RES(si, k, 0), overrun_ms, R);
        }
    }

    __atomic_store_n(&wd.deadline, -1, __ATOMIC_RELAXED); /* relaxed: only ends the watchdog */
    pthread_join(wd_tid, NULL);

    for (int si = 0; si < NS; si++) {
        printf("\n%dp%dc (%d threads, pinned: %s)\n", shapes[si].np, shapes[si].nc, shapes[si].np + shapes[si].nc,
               RES(si, 0, 0).pinned ? "yes" : "no");
        printf("%-22s %9s %7s %8s %10s %10s %10s %8s %9s\n", "implementation", "M items/s", "spread", "ks/ref",
               "retries/it", "sleeps/kit", "futex/kit", "CPU used", "drain ms");
        for (int k = 0; k < NK; k++) {
            printf("%-22s %9.3f %6.0f%% ", kinds[k].name, st[si][k].med, bench_spread(st[si][k]));
            if (kinds[k].ref >= 0)
                printf("%8.3f", st[si][kinds[k].ref].med / st[si][k].med);
            else
                printf("%8s", "");
            printf(" %10.3f %10.3f %10.3f %7.0f%% %9.1f\n", retr[si][k].med, slp[si][k].med, fxk[si][k].med,
                   cpu[si][k].med, ovr[si][k].med);
        }
        printf("ks_mpmc failed attempts that were EBUSY (the slot's last claimant had not finished): "
               "spin-retry %.1f%%, sched_yield %.1f%%\n", busy[si][0].med, busy[si][1].med);
    }
    printf("(ks/ref: ks_mpmc / ck_ring with the same retry policy, ks_mpmc sched_yield / wfcqueue,\n"
           " ks_queue / mutex+2cond.  ck_ring_init(%d) holds %d items, the others %d.  wfcqueue is\n"
           " unbounded: its producers never wait for a slot, only for one of their %u recycled nodes\n"
           " (counted in retries/it); dequeue: __cds_wfcq_dequeue_blocking with one consumer,\n"
           " cds_wfcq_dequeue_blocking (head mutex) with several.  retries/it: failed attempts (full,\n"
           " empty, busy) per item; sleeps/kit: voluntary context switches per 1000 items; futex/kit:\n"
           " ksync futex waits+wakes per 1000 items; drain ms: last thread out minus the time cap)\n",
           QB_SLOTS, QB_SLOTS - 1, QB_SLOTS, QB_WFCQ_POOL);
    printf("integrity: %llu runs, %llu items checked: none lost, duplicated or out of per-producer order\n",
           (unsigned long long)runs_checked, (unsigned long long)items_checked);

    for (int si = 0; si < NS; si++) {
        char what[96];
        int np = shapes[si].np, nc = shapes[si].nc;
        if (np <= 2) {
            snprintf(what, sizeof what, "queue %dp%dc: ks_mpmc / ck_ring, spin-retry", np, nc);
            bench_target(what, st[si][K_KSM_SPIN].med / st[si][K_CK_SPIN].med, ">=", 1.0, "x");
            snprintf(what, sizeof what, "queue %dp%dc: ks_mpmc / ck_ring, sched_yield", np, nc);
            bench_target(what, st[si][K_KSM_YIELD].med / st[si][K_CK_YIELD].med, ">=", 1.0, "x");
        } else {
            snprintf(what, sizeof what, "queue %dp%dc: ks_mpmc spin-retry, M items/s", np, nc);
            bench_target(what, st[si][K_KSM_SPIN].med, ">", 1.0, "");
            snprintf(what, sizeof what, "queue %dp%dc: ks_mpmc sched_yield, M items/s", np, nc);
            bench_target(what, st[si][K_KSM_YIELD].med, ">", 1.0, "");
        }
        if (np == 16)
            bench_target("queue 16p16c: ks_queue / mutex+2cond", st[si][K_KSQ].med / st[si][K_CVQ].med, ">=", 3.0,
                         "x");
    }
    /* A failed check stops the program before this line: reaching it means 0. */
    bench_target("queue: runs with items lost, duplicated or reordered", 0, "<=", 0, "");
#undef RES
    free(run.prod);
    free(run.cons);
    free(run.cvq);
    free(run.ckr);
    free(run.ckbuf);
    free(run.pool);
    free(res);
}

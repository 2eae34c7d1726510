/* stress/s_queue.c - the queue family: S10 (bounded queue with task_done and
 * join), S11 (a consumer that forgets task_done), S12 (connection pool
 * borrowed with a deadline), S14 (monitoring pipeline).  Seed 000: "Queue
 * thread-safe", antipattern "Forget de task_done()", "Exercice 1 : Pool de
 * connexions thread-safe", "Exercice récapitulatif : Système de monitoring
 * complet".
 *
 * The queues compared (S10, S11, and S14's two pipelines):
 *   ksync          ks_queue (blocking, over the ks_mpmc ring)
 *   ck_ring        Concurrency Kit's MPMC ring over a power-of-two buffer (it
 *                  holds size - 1 items, so maxsize 5 becomes a ring of 8 that
 *                  holds 7); a full or empty ring is retried after
 *                  sched_yield() until the deadline; task_done/join are an
 *                  atomic unfinished-task counter, close() a flag
 *   urcu_wfcqueue  liburcu's wait-free-enqueue queue (unbounded: a put never
 *                  waits), same counter and flag, polled like ck_ring
 *   pthread_cond   Python's queue.Queue in C: one pthread mutex, conditions
 *                  not_empty / not_full / all_tasks_done, an unfinished count
 * The two polling references busy-wait when threads outnumber CPUs (ck_ring's
 * producers also wait for each other's commits), so their iteration runs stop
 * after ST_SPIN_CAP_S and report the partial count.
 *
 * close() (ks_queue_close; a flag or Python 3.13's shutdown() for the others)
 * is called only after every producer is done and join() returned, as here:
 * the references' flag is not safe against a put racing with it.
 */
#define _LGPL_SOURCE /* liburcu: wfcqueue as static inline code, no library symbols */
#include "harness.h"

#include <ksync/event.h>
#include <ksync/mutex.h>
#include <ksync/pool.h>
#include <ksync/queue.h>
#include <ksync/sem.h>
#include <ksync/time.h>

#include <ck_ring.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <urcu/wfcqueue.h>

/* ---- helpers ------------------------------------------------------------------------ */

static struct timespec to_ts(int64_t ns)
{
    return (struct timespec){(time_t)(ns / KS_NSEC_PER_SEC), (long)(ns % KS_NSEC_PER_SEC)};
}

static int cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int e = pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
    return e;
}

/* Wait on c until signalled or the deadline (KS_FOREVER: no deadline). */
static int cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, int64_t deadline)
{
    if (deadline == KS_FOREVER)
        return pthread_cond_wait(c, m);
    struct timespec ts = to_ts(deadline);
    return pthread_cond_timedwait(c, m, &ts);
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* A coordinator's pause between looks: a sleep of 1..max_us microseconds. */
static void nap(struct st_thread *t, unsigned max_us)
{
    struct timespec ts = {0, 1000L * (long)(1 + st_below(t, max_us))};
    nanosleep(&ts, NULL);
}

/* The smallest ck_ring size (a power of two) that holds n items (size - 1). */
static unsigned ck_size_for(size_t n)
{
    unsigned s = 2;
    while (s - 1 < n)
        s <<= 1;
    return s;
}

/* Count one operation for a thread whose loop is not st_next's. */
static void count_op(struct st_thread *t)
{
    t->done++;
    atomic_store_explicit(&t->progress, t->done, memory_order_relaxed); /* relaxed: the monitor's */
}

/* A counter owned by one thread and read by another, on its own lines. */
struct st_count {
    _Alignas(KS_CACHELINE) _Atomic uint64_t n;
};

/* Sum of n owners' counters; acquire: pairs with each owner's release store. */
static uint64_t count_sum(struct st_count *c, unsigned n)
{
    uint64_t s = 0;
    for (unsigned i = 0; i < n; i++)
        s += atomic_load_explicit(&c[i].n, memory_order_acquire); /* acquire: see above */
    return s;
}

/* ---- the queues compared -------------------------------------------------------------- */

struct ckq {
    ck_ring_t ring; /* CK pads its counters itself */
    ck_ring_buffer_t *buf;
    _Alignas(KS_CACHELINE) _Atomic uint64_t unfinished;
    _Alignas(KS_CACHELINE) atomic_int closed;
};

struct wnode {
    struct cds_wfcq_node node;
    uint64_t item;
};

struct wfq {
    struct cds_wfcq_head head;
    _Alignas(KS_CACHELINE) struct cds_wfcq_tail tail;
    _Alignas(KS_CACHELINE) _Atomic uint64_t unfinished;
    _Alignas(KS_CACHELINE) atomic_int closed;
};

struct ptq {
    pthread_mutex_t m;
    pthread_cond_t not_empty, not_full, all_done; /* CLOCK_MONOTONIC */
    uint64_t *buf;                                /* under m, as the rest */
    size_t cap, head, count;
    uint64_t unfinished;
    int closed;
};

struct anyq {
    union {
        ks_queue_t *ks;
        struct ckq ck;
        struct wfq wf;
        struct ptq pt;
    } u;
    size_t cap; /* items it holds; 0: unbounded */
};

struct q_impl {
    const char *name;
    enum st_kind kind;
    int spins; /* polls: iteration runs capped at ST_SPIN_CAP_S */
    /* A getter sleeps until a put wakes it, and a put waits only for a full
     * queue: the lost-wake-up check below applies (not to the polling ones,
     * whose producers may also wait for each other). */
    int wakes;
    int (*init)(struct anyq *q, size_t cap);
    /* 0, ETIMEDOUT (deadline: absolute CLOCK_MONOTONIC ns or KS_FOREVER), EPIPE */
    int (*put)(struct anyq *q, uint64_t item, int64_t deadline);
    int (*get)(struct anyq *q, uint64_t *item, int64_t deadline);
    int (*task_done)(struct anyq *q); /* 0, EINVAL: more than put */
    int (*join)(struct anyq *q, int64_t deadline);
    uint64_t (*unfinished)(struct anyq *q);
    int (*close)(struct anyq *q);
    int (*destroy)(struct anyq *q);
};

/* ksync */
static int ksq_init(struct anyq *q, size_t cap)
{
    q->cap = cap;
    return ks_queue_create(&q->u.ks, cap, KS_PRIVATE);
}
/* Deadline KS_FOREVER: the inline put/get; 0: the inline tryput/tryget
 * (EAGAIN reported as ETIMEDOUT); any other: timedput/timedget. */
static int ksq_put(struct anyq *q, uint64_t item, int64_t dl)
{
    void *p = (void *)(uintptr_t)item;
    if (dl == 0) {
        int e = ks_queue_tryput(q->u.ks, p);
        return e == EAGAIN ? ETIMEDOUT : e;
    }
    return dl == KS_FOREVER ? ks_queue_put(q->u.ks, p) : ks_queue_timedput(q->u.ks, p, dl);
}
static int ksq_get(struct anyq *q, uint64_t *item, int64_t dl)
{
    void *p;
    int e;
    if (dl == 0) {
        if ((e = ks_queue_tryget(q->u.ks, &p)) == EAGAIN)
            e = ETIMEDOUT;
    } else {
        e = dl == KS_FOREVER ? ks_queue_get(q->u.ks, &p) : ks_queue_timedget(q->u.ks, &p, dl);
    }
    if (e == 0)
        *item = (uintptr_t)p;
    return e;
}
static int ksq_task_done(struct anyq *q) { return ks_queue_task_done(q->u.ks); }
static int ksq_join(struct anyq *q, int64_t dl)
{
    return dl == KS_FOREVER ? ks_queue_join(q->u.ks) : ks_queue_timedjoin(q->u.ks, dl);
}
static uint64_t ksq_unfinished(struct anyq *q) { return ks_queue_unfinished(q->u.ks); }
static int ksq_close(struct anyq *q) { return ks_queue_close(q->u.ks); }
static int ksq_destroy(struct anyq *q) { return ks_queue_destroy(q->u.ks); }

/* The references' task_done/join: an unfinished-task counter. */
static int unf_task_done(_Atomic uint64_t *unf)
{
    uint64_t u = atomic_load_explicit(unf, memory_order_relaxed); /* relaxed: seeds the CAS */
    do {
        if (u == 0)
            return EINVAL;
        /* release: pairs with the acquire load in unf_join */
    } while (!atomic_compare_exchange_weak_explicit(unf, &u, u - 1, memory_order_release,
                                                    memory_order_relaxed));
    return 0;
}
static int unf_join(_Atomic uint64_t *unf, int64_t dl)
{
    /* acquire: pairs with the release CAS in unf_task_done */
    while (atomic_load_explicit(unf, memory_order_acquire)) {
        if (ks_now() >= dl)
            return ETIMEDOUT;
        sched_yield();
    }
    return 0;
}

/* Concurrency Kit ck_ring, MPMC */
static int ckq_init(struct anyq *q, size_t cap)
{
    struct ckq *k = &q->u.ck;
    unsigned size = ck_size_for(cap);
    k->buf = calloc(size, sizeof *k->buf);
    if (!k->buf)
        return ENOMEM;
    ck_ring_init(&k->ring, size);
    atomic_init(&k->unfinished, 0);
    atomic_init(&k->closed, 0);
    q->cap = ck_ring_capacity(&k->ring) - 1;
    return 0;
}
static int ckq_put(struct anyq *q, uint64_t item, int64_t dl)
{
    struct ckq *k = &q->u.ck;
    /* relaxed: sequenced before the enqueue, whose release publishes the
     * count with the item, so no task_done can precede it. */
    atomic_fetch_add_explicit(&k->unfinished, 1, memory_order_relaxed);
    for (;;) {
        int e = 0;
        /* relaxed: close() follows every put here (see the top) */
        if (atomic_load_explicit(&k->closed, memory_order_relaxed))
            e = EPIPE;
        else if (ck_ring_enqueue_mpmc(&k->ring, k->buf, (void *)(uintptr_t)item))
            return 0;
        else if (ks_now() >= dl)
            e = ETIMEDOUT;
        if (e) {
            atomic_fetch_sub_explicit(&k->unfinished, 1, memory_order_relaxed); /* not queued */
            return e;
        }
        sched_yield();
    }
}
static int ckq_get(struct anyq *q, uint64_t *item, int64_t dl)
{
    struct ckq *k = &q->u.ck;
    for (;;) {
        void *p;
        if (ck_ring_dequeue_mpmc(&k->ring, k->buf, &p)) {
            *item = (uintptr_t)p;
            return 0;
        }
        /* acquire: pairs with the release store in ckq_close */
        if (atomic_load_explicit(&k->closed, memory_order_acquire)) {
            if (!ck_ring_dequeue_mpmc(&k->ring, k->buf, &p))
                return EPIPE;
            *item = (uintptr_t)p;
            return 0;
        }
        if (ks_now() >= dl)
            return ETIMEDOUT;
        sched_yield();
    }
}
static int ckq_task_done(struct anyq *q) { return unf_task_done(&q->u.ck.unfinished); }
static int ckq_join(struct anyq *q, int64_t dl) { return unf_join(&q->u.ck.unfinished, dl); }
static uint64_t ckq_unfinished(struct anyq *q)
{
    return atomic_load_explicit(&q->u.ck.unfinished, memory_order_relaxed); /* a snapshot */
}
static int ckq_close(struct anyq *q)
{
    /* release: pairs with the acquire load in ckq_get */
    atomic_store_explicit(&q->u.ck.closed, 1, memory_order_release);
    return 0;
}
static int ckq_destroy(struct anyq *q)
{
    free(q->u.ck.buf);
    return 0;
}

/* liburcu wfcqueue (unbounded) */
#define WFQ_MEMORY_GUARD (1u << 20) /* unfinished items before a put yields (soak memory) */

static int wfq_init(struct anyq *q, size_t cap)
{
    (void)cap;
    struct wfq *w = &q->u.wf;
    cds_wfcq_init(&w->head, &w->tail);
    atomic_init(&w->unfinished, 0);
    atomic_init(&w->closed, 0);
    q->cap = 0;
    return 0;
}
static int wfq_put(struct anyq *q, uint64_t item, int64_t dl)
{
    (void)dl; /* never full */
    struct wfq *w = &q->u.wf;
    if (atomic_load_explicit(&w->closed, memory_order_relaxed)) /* relaxed: see the top */
        return EPIPE;
    /* relaxed: a guard against memory exhaustion in a long soak, no more */
    while (atomic_load_explicit(&w->unfinished, memory_order_relaxed) > WFQ_MEMORY_GUARD)
        sched_yield();
    struct wnode *n = malloc(sizeof *n);
    if (!n)
        return ENOMEM;
    cds_wfcq_node_init(&n->node);
    n->item = item;
    /* relaxed: sequenced before the enqueue (a release), as in ckq_put */
    atomic_fetch_add_explicit(&w->unfinished, 1, memory_order_relaxed);
    cds_wfcq_enqueue(&w->head, &w->tail, &n->node);
    return 0;
}
static int wfq_take(struct wfq *w, uint64_t *item)
{
    struct cds_wfcq_node *qn = cds_wfcq_dequeue_blocking(&w->head, &w->tail);
    if (!qn)
        return 0;
    struct wnode *n = caa_container_of(qn, struct wnode, node);
    *item = n->item;
    free(n);
    return 1;
}
static int wfq_get(struct anyq *q, uint64_t *item, int64_t dl)
{
    struct wfq *w = &q->u.wf;
    for (;;) {
        if (wfq_take(w, item))
            return 0;
        /* acquire: pairs with the release store in wfq_close */
        if (atomic_load_explicit(&w->closed, memory_order_acquire))
            return wfq_take(w, item) ? 0 : EPIPE;
        if (ks_now() >= dl)
            return ETIMEDOUT;
        sched_yield();
    }
}
static int wfq_task_done(struct anyq *q) { return unf_task_done(&q->u.wf.unfinished); }
static int wfq_join(struct anyq *q, int64_t dl) { return unf_join(&q->u.wf.unfinished, dl); }
static uint64_t wfq_unfinished(struct anyq *q)
{
    return atomic_load_explicit(&q->u.wf.unfinished, memory_order_relaxed); /* a snapshot */
}
static int wfq_close(struct anyq *q)
{
    /* release: pairs with the acquire load in wfq_get */
    atomic_store_explicit(&q->u.wf.closed, 1, memory_order_release);
    return 0;
}
static int wfq_destroy(struct anyq *q)
{
    struct wfq *w = &q->u.wf;
    uint64_t item;
    while (wfq_take(w, &item))
        ;
    cds_wfcq_destroy(&w->head, &w->tail);
    return 0;
}

/* pthread mutex + conditions: Python's queue.Queue (plus shutdown) in C */
static int ptq_init(struct anyq *q, size_t cap)
{
    struct ptq *p = &q->u.pt;
    memset(p, 0, sizeof *p);
    p->cap = q->cap = cap;
    p->buf = calloc(cap, sizeof *p->buf);
    if (!p->buf)
        return ENOMEM;
    int e = pthread_mutex_init(&p->m, NULL);
    if (!e)
        e = cond_init_mono(&p->not_empty);
    if (!e)
        e = cond_init_mono(&p->not_full);
    if (!e)
        e = cond_init_mono(&p->all_done);
    return e;
}
static int ptq_put(struct anyq *q, uint64_t item, int64_t dl)
{
    struct ptq *p = &q->u.pt;
    pthread_mutex_lock(&p->m);
    while (p->count == p->cap && !p->closed)
        if (cond_wait_until(&p->not_full, &p->m, dl) == ETIMEDOUT && p->count == p->cap &&
            !p->closed) {
            pthread_mutex_unlock(&p->m);
            return ETIMEDOUT;
        }
    if (p->closed) {
        pthread_mutex_unlock(&p->m);
        return EPIPE;
    }
    p->buf[(p->head + p->count) % p->cap] = item;
    p->count++;
    p->unfinished++;
    pthread_cond_signal(&p->not_empty);
    pthread_mutex_unlock(&p->m);
    return 0;
}
static int ptq_get(struct anyq *q, uint64_t *item, int64_t dl)
{
    struct ptq *p = &q->u.pt;
    pthread_mutex_lock(&p->m);
    while (p->count == 0 && !p->closed)
        if (cond_wait_until(&p->not_empty, &p->m, dl) == ETIMEDOUT && p->count == 0 &&
            !p->closed) {
            pthread_mutex_unlock(&p->m);
            return ETIMEDOUT;
        }
    if (p->count == 0) { /* closed and drained */
        pthread_mutex_unlock(&p->m);
        return EPIPE;
    }
    *item = p->buf[p->head];
    p->head = (p->head + 1) % p->cap;
    p->count--;
    pthread_cond_signal(&p->not_full);
    pthread_mutex_unlock(&p->m);
    return 0;
}
static int ptq_task_done(struct anyq *q)
{
    struct ptq *p = &q->u.pt;
    int e = 0;
    pthread_mutex_lock(&p->m);
    if (p->unfinished == 0)
        e = EINVAL; /* Python: ValueError('task_done() called too many times') */
    else if (--p->unfinished == 0)
        pthread_cond_broadcast(&p->all_done);
    pthread_mutex_unlock(&p->m);
    return e;
}
static int ptq_join(struct anyq *q, int64_t dl)
{
    struct ptq *p = &q->u.pt;
    int e = 0;
    pthread_mutex_lock(&p->m);
    while (p->unfinished)
        if (cond_wait_until(&p->all_done, &p->m, dl) == ETIMEDOUT && p->unfinished) {
            e = ETIMEDOUT;
            break;
        }
    pthread_mutex_unlock(&p->m);
    return e;
}
static uint64_t ptq_unfinished(struct anyq *q)
{
    struct ptq *p = &q->u.pt;
    pthread_mutex_lock(&p->m);
    uint64_t u = p->unfinished;
    pthread_mutex_unlock(&p->m);
    return u;
}
static int ptq_close(struct anyq *q)
{
    struct ptq *p = &q->u.pt;
    pthread_mutex_lock(&p->m);
    p->closed = 1;
    pthread_cond_broadcast(&p->not_empty);
    pthread_cond_broadcast(&p->not_full);
    pthread_mutex_unlock(&p->m);
    return 0;
}
static int ptq_destroy(struct anyq *q)
{
    struct ptq *p = &q->u.pt;
    int e = pthread_cond_destroy(&p->not_empty), r;
    if ((r = pthread_cond_destroy(&p->not_full)) && !e)
        e = r;
    if ((r = pthread_cond_destroy(&p->all_done)) && !e)
        e = r;
    if ((r = pthread_mutex_destroy(&p->m)) && !e)
        e = r;
    free(p->buf);
    return e;
}

static const struct q_impl q_ksync = {"ksync", ST_KSYNC, 0, 1, ksq_init, ksq_put, ksq_get,
                                      ksq_task_done, ksq_join, ksq_unfinished, ksq_close,
                                      ksq_destroy};
static const struct q_impl q_ck = {"ck_ring", ST_REF, 1, 0, ckq_init, ckq_put, ckq_get,
                                   ckq_task_done, ckq_join, ckq_unfinished, ckq_close,
                                   ckq_destroy};
static const struct q_impl q_wf = {"urcu_wfcqueue", ST_REF, 1, 0, wfq_init, wfq_put, wfq_get,
                                   wfq_task_done, wfq_join, wfq_unfinished, wfq_close,
                                   wfq_destroy};
static const struct q_impl q_pt = {"pthread_cond", ST_REF, 0, 1, ptq_init, ptq_put, ptq_get,
                                   ptq_task_done, ptq_join, ptq_unfinished, ptq_close,
                                   ptq_destroy};

static int ksq_describe(const ks_queue_t *q, char *buf, size_t len)
{
    if (!q)
        return snprintf(buf, len, "no queue");
    uint64_t tail = __atomic_load_n(&q->ring.tail, __ATOMIC_RELAXED);
    return snprintf(buf, len,
                    "ks_queue cap %llu: tail %llu%s head %llu done %llu; getters seq %u sleepers "
                    "%u, putters seq %u sleepers %u, joiners seq %u sleepers %u",
                    (unsigned long long)q->ring.cap,
                    (unsigned long long)(tail & ~KS_MPMC_CLOSED),
                    (tail & KS_MPMC_CLOSED) ? " (closed)" : "",
                    (unsigned long long)__atomic_load_n(&q->ring.head, __ATOMIC_RELAXED),
                    (unsigned long long)__atomic_load_n(&q->done, __ATOMIC_RELAXED),
                    __atomic_load_n(&q->getters.seq, __ATOMIC_RELAXED),
                    __atomic_load_n(&q->getters.sleepers, __ATOMIC_RELAXED),
                    __atomic_load_n(&q->putters.seq, __ATOMIC_RELAXED),
                    __atomic_load_n(&q->putters.sleepers, __ATOMIC_RELAXED),
                    __atomic_load_n(&q->joiners.seq, __ATOMIC_RELAXED),
                    __atomic_load_n(&q->joiners.sleepers, __ATOMIC_RELAXED));
}

/* The first failure noted, if any, as a dump prefix; returns the length used. */
static size_t note_prefix(struct st_note *n, char *buf, size_t len)
{
    unsigned errs = st_note_count(n);
    size_t at = errs ? (size_t)snprintf(buf, len, "%u errors, first: %.90s; ", errs, n->msg) : 0;
    return at < len ? at : len - 1;
}

/* ---- S10 / S11: producers, consumers and a coordinator around one queue ----------------
 * Thread 0 is the coordinator (the seed's main thread, which joins), threads
 * 1..P the producers, P+1..P+C the consumers.  Items are producer << 40 |
 * sequence.  Producers put (one put in 16 is first a try, then a plain put
 * if the queue was full; two in 16 are timed puts with a short deadline,
 * retried when they time out); consumers get with a timeout (one get in 8 is
 * a try, one a plain get without timeout, four have a deadline 20 us..2 ms
 * away, two the seed's 2 s), process the item, count it and call task_done.
 * A get that times out is retried: the seed's consumers stop at their first
 * timeout, which loses nothing only because its producers finish first; here
 * close() ends them.
 *
 * Checked on every implementation:
 *   - every item consumed exactly once: counts and a sum of hashed items equal
 *     the produced ones; in iteration mode a seen flag per item; each consumer
 *     sees each producer's sequence numbers strictly increasing (FIFO);
 *   - a timed get or put that reports ETIMEDOUT did not return before its
 *     deadline;
 *   - no lost wake-up (ksync and pthread_cond, whose getters sleep until
 *     woken): a get with the seed's 2 s timeout must not run to its deadline
 *     (timing out, or finding an item only at its last look) while the
 *     producers are still putting (they wait only for a full queue, so items
 *     keep coming).  Without this check a queue that loses wake-ups passes,
 *     only slower: its sleepers wake at their deadlines.  (Not for the
 *     polling references: a preempted ck_ring producer stalls the others,
 *     docs/pitfalls.md item 45, and consumers that poll have no wake-up to lose.);
 *   - join: while the producers run, the coordinator calls timed joins with
 *     short deadlines; one that returns 0 must find every item put before it
 *     began counted as finished (each consumer counts an item just before its
 *     task_done; the count is published by task_done's release and read after
 *     join's acquire).  Once the producers are done, join() must return with
 *     finished == put exactly, and unfinished == 0;
 *   - close(): afterwards every consumer gets EPIPE (none before close()
 *     began), none times out on the closed, drained queue, a get blocked when
 *     close() ran is woken rather than left to its deadline (the last
 *     consumer must be gone within 0.5 s of close(), though some wait up to
 *     2 s), and that time is reported;
 *   - ksync only, single-threaded before the run: a queue of 5 takes exactly
 *     5 items, FIFO, and the try/timed/join/close error codes; after: put and
 *     get EPIPE, an extra task_done EINVAL, destroy 0.
 * S11 (forgot task_done): consumer 0 never calls task_done, the others
 * forget one item in 32.  While the producers run, a timed join must time
 * out as soon as one task_done is known to be missing, and unfinished() must
 * be at least the count missing; once every item is taken and handled,
 * timedjoin(20 ms) returns ETIMEDOUT (not early, and not hanging) and
 * unfinished() equals the number of missing task_done calls exactly.  Then
 * the coordinator makes the missing calls, an extra one is refused (EINVAL)
 * and join() returns 0.
 */

#define SQ_SEQ_BITS 40
#define SQ_SEEN_MAX (64u << 20)
#define SQ_LONG_NS 2000000000LL          /* the seed's get(timeout=2) */
#define SQ_CLOSE_SLACK_NS 500000000LL    /* a get blocked at close() must not wait this long */
#define S11_JOIN_NS 20000000LL           /* the final timed join */
#define S11_HANG_NS 1000000000LL         /* a timed join this late "hangs" */

struct sq {
    struct anyq q; /* first: the stall dump reads q.u.ks */
    const struct q_impl *im;
    int ks;
    int forget; /* S11 */
    unsigned np, nc;
    uint64_t iters;
    atomic_uchar *seen;     /* [producer * iters + seq], iteration mode */
    struct st_count *puts;  /* [np] items whose put returned 0 */
    struct st_count *fin;   /* [nc] items counted finished, just before task_done */
    struct st_count *forgot; /* [nc] S11: items whose task_done was skipped */
    struct st_count *handled; /* [nc] S11: items taken and processed */
    _Alignas(KS_CACHELINE) atomic_uint producers_left;
    _Alignas(KS_CACHELINE) _Atomic int64_t close_ns; /* when close() returned; 0 before */
    int64_t close_start;                             /* when close() was called */
    /* the coordinator's findings, read after the run */
    uint64_t probes, probes_ok, probes_tmo, final_put, final_fin;
    uint64_t s11_missing, s11_unfinished;
    int64_t s11_late_ns;
    const char *after_close; /* ksync: what went wrong in the post-close checks */
    struct st_note err;
};

enum { SQ_SUM, SQ_GET_TMO, SQ_PUT_TMO, SQ_EPIPE, SQ_EPIPE_NS };

static void sq_dump(void *ctx, char *buf, size_t len)
{
    struct sq *c = ctx;
    size_t at = note_prefix(&c->err, buf, len);
    at += (size_t)ksq_describe(c->q.u.ks, buf + at, len - at);
    at = at < len ? at : len - 1;
    snprintf(buf + at, len - at, "; %u producers left, close %s", /* relaxed: a snapshot */
             atomic_load_explicit(&c->producers_left, memory_order_relaxed),
             atomic_load_explicit(&c->close_ns, memory_order_relaxed) ? "done" : "not yet");
}

static void sq_producer(struct st_thread *t, struct sq *c, unsigned p)
{
    uint64_t seq = 0, n = 0;
    while (st_next(t)) {
        uint64_t item = (uint64_t)p << SQ_SEQ_BITS | seq++;
        uint32_t r = st_below(t, 16);
        int e = ETIMEDOUT;
        if (r == 0 && (e = c->im->put(&c->q, item, 0)) == ETIMEDOUT) /* a try */
            t->stat[SQ_PUT_TMO]++;
        if (r == 1 || r == 2) {
            do {
                int64_t dl = ks_now() + 10000 + st_below(t, 1000000);
                e = c->im->put(&c->q, item, dl);
                if (e == ETIMEDOUT) {
                    t->stat[SQ_PUT_TMO]++;
                    if (ks_now() < dl)
                        st_note(&c->err, "timed put returned ETIMEDOUT before its deadline");
                }
            } while (e == ETIMEDOUT);
        } else if (e == ETIMEDOUT) {
            e = c->im->put(&c->q, item, KS_FOREVER);
        }
        if (e) {
            st_note(&c->err, "producer %u: put returned %d", p, e);
            break;
        }
        t->stat[SQ_SUM] += mix64(item);
        /* release: pairs with the coordinator's acquire sum (count_sum) */
        atomic_store_explicit(&c->puts[p].n, ++n, memory_order_release);
        st_pause(t, 200); /* the seed's time.sleep between items */
    }
    /* release: a coordinator that reads 0 (acquire) sees every put count */
    atomic_fetch_sub_explicit(&c->producers_left, 1, memory_order_release);
}

/* Check one item's producer, FIFO order and seen flag. */
static void sq_check_item(struct sq *c, uint64_t *next, uint64_t item)
{
    uint64_t p = item >> SQ_SEQ_BITS, seq = item & ((1ull << SQ_SEQ_BITS) - 1);
    if (p >= c->np) {
        st_note(&c->err, "item 0x%llx from no producer", (unsigned long long)item);
        return;
    }
    if (seq < next[p])
        st_note(&c->err, "producer %llu's item %llu after its item %llu (FIFO order broken or a "
                "duplicate)", (unsigned long long)p, (unsigned long long)seq,
                (unsigned long long)next[p] - 1);
    next[p] = seq + 1;
    /* relaxed: the exchanges on one flag are totally ordered anyway. */
    if (c->seen && seq < c->iters &&
        atomic_exchange_explicit(&c->seen[p * c->iters + seq], 1, memory_order_relaxed))
        st_note(&c->err, "producer %llu's item %llu consumed twice", (unsigned long long)p,
                (unsigned long long)seq);
}

static void sq_consumer(struct st_thread *t, struct sq *c, unsigned k)
{
    uint64_t *next = calloc(c->np, sizeof *next); /* per producer: lowest seq still allowed */
    if (!next) {
        st_note(&c->err, "out of memory");
        return;
    }
    uint64_t fin = 0, forgot = 0;
    for (;;) {
        /* acquire: pairs with the coordinator's release store after close() */
        int64_t closed_before = atomic_load_explicit(&c->close_ns, memory_order_acquire);
        uint32_t r = st_below(t, 8);
        int64_t dl = r == 0   ? 0 /* a try */
                     : r == 1 ? KS_FOREVER
                              : ks_now() + (r < 6 ? 20000 + st_below(t, 2000000) : SQ_LONG_NS);
        uint64_t item;
        int e = c->im->get(&c->q, &item, dl);
        int64_t now = ks_now();
        /* acquire: pairs with the producers' release decrement */
        if (c->im->wakes && r >= 6 && now >= dl && (e == 0 || e == ETIMEDOUT) &&
            atomic_load_explicit(&c->producers_left, memory_order_acquire))
            st_note(&c->err, "a get with the seed's 2 s timeout %s only at its deadline while "
                    "the producers were still putting (a lost wake-up)",
                    e ? "timed out" : "found an item");
        if (e == ETIMEDOUT) {
            t->stat[SQ_GET_TMO]++;
            if (now < dl)
                st_note(&c->err, "timed get returned ETIMEDOUT before its deadline");
            if (closed_before)
                st_note(&c->err, "a get begun after close() of the drained queue timed out "
                        "(want EPIPE)");
            /* acquire: pairs with the release store after close() */
            int64_t cl = atomic_load_explicit(&c->close_ns, memory_order_acquire);
            if (cl && dl - cl > SQ_CLOSE_SLACK_NS)
                st_note(&c->err, "a get blocked when close() ran was not woken: ETIMEDOUT at its "
                        "deadline, %.0f ms after close()", (double)(dl - cl) / 1e6);
            continue;
        }
        if (e == EPIPE) {
            t->stat[SQ_EPIPE] = 1;
            t->stat[SQ_EPIPE_NS] = (uint64_t)ks_now();
            break;
        }
        if (e) {
            st_note(&c->err, "get returned %d", e);
            break;
        }
        if (closed_before)
            st_note(&c->err, "get returned an item after close() of the drained queue");
        sq_check_item(c, next, item);
        t->stat[SQ_SUM] += mix64(item);
        count_op(t); /* one get; consumers follow the producers, not the stop flag */
        st_pause(t, 150); /* the seed's traitement */
        if (c->forget && (k == 0 || st_below(t, 32) == 0)) {
            /* relaxed: published by the release store of `handled` below */
            atomic_store_explicit(&c->forgot[k].n, ++forgot, memory_order_relaxed);
        } else {
            /* relaxed: published by task_done (release) to the join (acquire)
             * that counts it: the ordering under test. */
            atomic_store_explicit(&c->fin[k].n, ++fin, memory_order_relaxed);
            if ((e = c->im->task_done(&c->q)))
                st_note(&c->err, "task_done returned %d", e);
        }
        if (c->forget) /* release: pairs with the coordinator's acquire sum */
            atomic_store_explicit(&c->handled[k].n, fin + forgot, memory_order_release);
    }
    free(next);
}

/* close(), timed, and (ksync) what a closed queue must refuse. */
static void sq_close(struct sq *c)
{
    c->close_start = ks_now();
    int e = c->im->close(&c->q);
    /* release: pairs with the consumers' acquire loads */
    atomic_store_explicit(&c->close_ns, ks_now(), memory_order_release);
    if (e)
        st_note(&c->err, "close returned %d", e);
    if (c->ks) {
        ks_queue_t *q = c->q.u.ks;
        void *x = (void *)(uintptr_t)1;
        if (ks_queue_put(q, x) != EPIPE)
            c->after_close = "put after close() was not EPIPE";
        else if (ks_queue_tryput(q, x) != EPIPE)
            c->after_close = "tryput after close() was not EPIPE";
        else if (ks_queue_timedput(q, x, ks_now() + 1000000) != EPIPE)
            c->after_close = "timedput after close() was not EPIPE";
        else if (!ks_queue_is_closed(q))
            c->after_close = "is_closed() is 0 after close()";
        else if (ks_queue_close(q))
            c->after_close = "a second close() failed";
    }
}

static void s10_coordinator(struct st_thread *t, struct sq *c)
{
    /* While the producers run: timed joins with short deadlines.  acquire:
     * pairs with the producers' release decrement. */
    while (atomic_load_explicit(&c->producers_left, memory_order_acquire)) {
        nap(t, 400);
        uint64_t p = count_sum(c->puts, c->np);
        int64_t dl = ks_now() + 20000 + st_below(t, 500000);
        int e = c->im->join(&c->q, dl);
        c->probes++;
        if (e == 0) {
            c->probes_ok++;
            uint64_t f = count_sum(c->fin, c->nc);
            if (f < p)
                st_note(&c->err, "timed join returned 0 when %llu items were finished, but %llu "
                        "had been put before it began", (unsigned long long)f,
                        (unsigned long long)p);
        } else if (e == ETIMEDOUT) {
            c->probes_tmo++;
            if (ks_now() < dl)
                st_note(&c->err, "timed join returned ETIMEDOUT before its deadline");
        } else {
            st_note(&c->err, "timed join returned %d", e);
        }
    }
    /* The seed's threads[0].join(); threads[1].join(); q.join() */
    uint64_t p = count_sum(c->puts, c->np);
    int e = c->im->join(&c->q, KS_FOREVER);
    uint64_t f = count_sum(c->fin, c->nc);
    c->final_put = p;
    c->final_fin = f;
    if (e)
        st_note(&c->err, "join returned %d", e);
    else if (f != p)
        st_note(&c->err, "join() returned when %llu of the %llu items put were finished",
                (unsigned long long)f, (unsigned long long)p);
    uint64_t u = c->im->unfinished(&c->q);
    if (u)
        st_note(&c->err, "unfinished() is %llu after join()", (unsigned long long)u);
    sq_close(c);
}

static void s11_coordinator(struct st_thread *t, struct sq *c)
{
    /* acquire: pairs with the producers' release decrement */
    while (atomic_load_explicit(&c->producers_left, memory_order_acquire)) {
        nap(t, 400);
        uint64_t missing = count_sum(c->forgot, c->nc);
        int64_t dl = ks_now() + 20000 + st_below(t, 500000);
        int e = c->im->join(&c->q, dl);
        uint64_t u = c->im->unfinished(&c->q);
        c->probes++;
        if (e == ETIMEDOUT) {
            c->probes_tmo++;
            if (ks_now() < dl)
                st_note(&c->err, "timed join returned ETIMEDOUT before its deadline");
        } else if (e == 0) {
            c->probes_ok++;
            if (missing)
                st_note(&c->err, "timed join returned 0 with %llu task_done calls missing",
                        (unsigned long long)missing);
        } else {
            st_note(&c->err, "timed join returned %d", e);
        }
        if (u < missing)
            st_note(&c->err, "unfinished() %llu below the %llu task_done calls known missing",
                    (unsigned long long)u, (unsigned long long)missing);
    }
    /* Every item put has been taken and handled: the queue is quiet. */
    uint64_t p = count_sum(c->puts, c->np);
    while (count_sum(c->handled, c->nc) < p)
        nap(t, 200);
    uint64_t missing = count_sum(c->forgot, c->nc);
    int64_t dl = ks_now() + S11_JOIN_NS;
    int e = c->im->join(&c->q, dl);
    int64_t now = ks_now();
    c->final_put = p;
    c->s11_missing = missing;
    c->s11_late_ns = now - dl;
    if (missing && e != ETIMEDOUT)
        st_note(&c->err, "join(%lld ms) returned %d with %llu task_done calls missing",
                S11_JOIN_NS / 1000000, e, (unsigned long long)missing);
    else if (!missing && e)
        st_note(&c->err, "join(%lld ms) returned %d with every task done",
                S11_JOIN_NS / 1000000, e);
    else if (e == ETIMEDOUT && now < dl)
        st_note(&c->err, "join returned ETIMEDOUT %lld ns before its deadline",
                (long long)(dl - now));
    else if (e == ETIMEDOUT && now - dl > S11_HANG_NS)
        st_note(&c->err, "join with a %lld ms timeout returned %.0f ms late (hangs)",
                S11_JOIN_NS / 1000000, (double)(now - dl) / 1e6);
    c->s11_unfinished = c->im->unfinished(&c->q);
    if (c->s11_unfinished != missing)
        st_note(&c->err, "unfinished() says %llu, but %llu task_done calls are missing",
                (unsigned long long)c->s11_unfinished, (unsigned long long)missing);
    /* The missing calls, made late: then join() returns, an extra is refused. */
    for (uint64_t i = 0; i < missing; i++)
        if ((e = c->im->task_done(&c->q))) {
            st_note(&c->err, "late task_done %llu of %llu returned %d", (unsigned long long)i,
                    (unsigned long long)missing, e);
            break;
        }
    if ((e = c->im->task_done(&c->q)) != EINVAL)
        st_note(&c->err, "task_done with nothing unfinished returned %d, want EINVAL", e);
    if ((e = c->im->join(&c->q, ks_now() + SQ_LONG_NS)))
        st_note(&c->err, "join after the missing task_done calls returned %d", e);
    if ((c->final_fin = c->im->unfinished(&c->q)))
        st_note(&c->err, "unfinished() is %llu after join()", (unsigned long long)c->final_fin);
    sq_close(c);
}

static void s10_body(struct st_thread *t)
{
    struct sq *c = t->ctx;
    if (t->id == 0)
        s10_coordinator(t, c);
    else if (t->id <= c->np)
        sq_producer(t, c, t->id - 1);
    else
        sq_consumer(t, c, t->id - 1 - c->np);
}

static void s11_body(struct st_thread *t)
{
    struct sq *c = t->ctx;
    if (t->id == 0)
        s11_coordinator(t, c);
    else if (t->id <= c->np)
        sq_producer(t, c, t->id - 1);
    else
        sq_consumer(t, c, t->id - 1 - c->np);
}

/* ksync, single-threaded: capacity, order and error codes of a queue of 5. */
static const char *s10_before(void)
{
    ks_queue_t *q;
    if (ks_queue_create(&q, 0, KS_PRIVATE) != EINVAL)
        return "create with capacity 0 was not EINVAL";
    if (ks_queue_create(&q, 5, KS_PRIVATE))
        return "create(5) failed";
    const char *w = NULL;
    void *x;
    int64_t dl;
    if (ks_queue_capacity(q) != 5)
        w = "capacity() is not 5";
    for (uintptr_t i = 1; i <= 5 && !w; i++)
        if (ks_queue_tryput(q, (void *)i))
            w = "tryput below capacity failed";
    if (!w && ks_queue_tryput(q, &x) != EAGAIN)
        w = "tryput on a full queue of 5 was not EAGAIN";
    if (!w && (ks_queue_timedput(q, &x, dl = ks_now() + 200000) != ETIMEDOUT || ks_now() < dl))
        w = "timedput on a full queue did not time out at its deadline";
    if (!w && (ks_queue_size(q) != 5 || ks_queue_unfinished(q) != 5))
        w = "size() or unfinished() is not 5 with 5 items queued";
    if (!w && (ks_queue_timedjoin(q, dl = ks_now() + 200000) != ETIMEDOUT || ks_now() < dl))
        w = "timedjoin with 5 unfinished did not time out at its deadline";
    for (uintptr_t i = 1; i <= 5 && !w; i++)
        if (ks_queue_tryget(q, &x) || x != (void *)i)
            w = "tryget did not return the 5 items in order";
    if (!w && ks_queue_tryget(q, &x) != EAGAIN)
        w = "tryget on an empty queue was not EAGAIN";
    if (!w && (ks_queue_timedget(q, &x, dl = ks_now() + 200000) != ETIMEDOUT || ks_now() < dl))
        w = "timedget on an empty queue did not time out at its deadline";
    for (int i = 0; i < 5 && !w; i++)
        if (ks_queue_task_done(q))
            w = "task_done for an item put failed";
    if (!w && ks_queue_task_done(q) != EINVAL)
        w = "a 6th task_done after 5 puts was not EINVAL";
    if (!w && (ks_queue_unfinished(q) || ks_queue_timedjoin(q, 0)))
        w = "join did not return 0 with every task done";
    if (!w && (ks_queue_tryput(q, (void *)7) || ks_queue_close(q)))
        w = "tryput or close failed";
    if (!w && ks_queue_tryput(q, &x) != EPIPE)
        w = "tryput after close() was not EPIPE";
    if (!w && (ks_queue_get(q, &x) || x != (void *)7))
        w = "the item queued before close() was not returned by get";
    if (!w && ks_queue_get(q, &x) != EPIPE)
        w = "get on a closed, drained queue was not EPIPE";
    if (!w && (ks_queue_task_done(q) || ks_queue_join(q)))
        w = "task_done/join after close() failed";
    int de = ks_queue_destroy(q);
    return w ? w : de ? "destroy failed" : NULL;
}

static struct sq *sq_new(const struct q_impl *im, unsigned np, unsigned nc, uint64_t iters,
                         int forget, int timed)
{
    struct sq *c = st_alloc(sizeof *c);
    c->im = im;
    c->ks = im->kind == ST_KSYNC;
    c->forget = forget;
    c->np = np;
    c->nc = nc;
    c->puts = st_alloc(np * sizeof *c->puts);
    c->fin = st_alloc(nc * sizeof *c->fin);
    c->forgot = st_alloc(nc * sizeof *c->forgot);
    c->handled = st_alloc(nc * sizeof *c->handled);
    atomic_init(&c->producers_left, np);
    atomic_init(&c->close_ns, 0);
    st_note_init(&c->err);
    if (!timed && (uint64_t)np * iters <= SQ_SEEN_MAX && iters < (1ull << SQ_SEQ_BITS)) {
        c->iters = iters;
        c->seen = calloc(np * iters, 1);
    }
    return c;
}

static void sq_free(struct sq *c)
{
    free(c->seen);
    free(c->puts);
    free(c->fin);
    free(c->forgot);
    free(c->handled);
    free(c);
}

/* What every S10/S11 run checks after the threads are joined. */
struct sq_tally {
    uint64_t made, got, sum_made, sum_got, missing, get_tmo, put_tmo;
    unsigned epipe, epipe_early;
    double drain_ms;
};

static void sq_tally(struct sq *c, const struct st_result *r, struct sq_tally *y)
{
    memset(y, 0, sizeof *y);
    for (unsigned p = 0; p < c->np; p++) {
        uint64_t n = atomic_load_explicit(&c->puts[p].n, memory_order_relaxed); /* joined */
        y->made += n;
        y->sum_made += r->t[1 + p].stat[SQ_SUM];
        if (c->seen) /* relaxed: the threads are joined */
            for (uint64_t s = 0; s < n && s < c->iters; s++)
                y->missing += !atomic_load_explicit(&c->seen[p * c->iters + s],
                                                    memory_order_relaxed);
    }
    /* relaxed: the threads are joined */
    int64_t close_ns = atomic_load_explicit(&c->close_ns, memory_order_relaxed), last = 0;
    for (unsigned k = 0; k < c->nc; k++) {
        const struct st_thread *th = &r->t[1 + c->np + k];
        y->got += th->done;
        y->sum_got += th->stat[SQ_SUM];
        y->epipe += (unsigned)th->stat[SQ_EPIPE];
        if (th->stat[SQ_EPIPE] && (int64_t)th->stat[SQ_EPIPE_NS] < c->close_start)
            y->epipe_early++;
        last = th->t_end > last ? th->t_end : last;
    }
    y->get_tmo = st_stat_sum(r, SQ_GET_TMO);
    y->put_tmo = st_stat_sum(r, SQ_PUT_TMO);
    y->drain_ms = close_ns && last > close_ns ? (double)(last - close_ns) / 1e6 : 0;
}

/* Checks common to S10 and S11; returns a description of the first failure. */
static const char *sq_verdict(struct sq *c, const struct sq_tally *y, int de, char *buf,
                              size_t len)
{
    unsigned errs = st_note_count(&c->err);
    if (errs)
        snprintf(buf, len, "%u errors, first: %s", errs, c->err.msg);
    else if (y->made != y->got || y->sum_made != y->sum_got || y->missing)
        snprintf(buf, len, "%llu items put, %llu got, checksums %s, %llu never seen",
                 (unsigned long long)y->made, (unsigned long long)y->got,
                 y->sum_made == y->sum_got ? "equal" : "DIFFER", (unsigned long long)y->missing);
    else if (y->epipe != c->nc || y->epipe_early)
        snprintf(buf, len, "%u of %u consumers ended with EPIPE, %u of them before close()",
                 y->epipe, c->nc, y->epipe_early);
    else if (y->drain_ms > SQ_CLOSE_SLACK_NS / 1e6)
        snprintf(buf, len, "the last consumer left %.0f ms after close(): gets blocked at "
                 "close() were not woken", y->drain_ms);
    else if (c->after_close)
        snprintf(buf, len, "%s", c->after_close);
    else if (c->final_put != y->made)
        snprintf(buf, len, "the coordinator saw %llu puts, the producers made %llu",
                 (unsigned long long)c->final_put, (unsigned long long)y->made);
    else if (de && c->ks) { /* EBUSY frees nothing: show what is left */
        int at = snprintf(buf, len, "destroy returned %d after every thread left; ", de);
        ksq_describe(c->q.u.ks, buf + at, len - (size_t)at);
    } else if (de)
        snprintf(buf, len, "destroy returned %d", de);
    else
        return NULL;
    return buf;
}

/* ksync after the run: the drained, closed queue refuses everything. */
static const char *sq_ks_after(ks_queue_t *q)
{
    void *x;
    if (ks_queue_tryget(q, &x) != EPIPE)
        return "tryget on the closed, drained queue was not EPIPE";
    if (ks_queue_timedget(q, &x, ks_now() + 1000000) != EPIPE)
        return "timedget on the closed, drained queue was not EPIPE";
    if (ks_queue_task_done(q) != EINVAL)
        return "task_done with every task done was not EINVAL";
    if (ks_queue_unfinished(q) || ks_queue_size(q))
        return "unfinished() or size() not 0 at the end";
    return NULL;
}

static void s10_one(const struct st_opts *o, const struct q_impl *im, unsigned np, size_t cap,
                    uint64_t iters)
{
    struct sq *c = sq_new(im, np, np, iters, 0, o->seconds > 0);
    struct st_run run = {.scen = "S10", .impl = im->name, .kind = im->kind, .threads = 2 * np + 1,
                         .iters = iters, .cap_s = im->spins ? ST_SPIN_CAP_S : 0,
                         .body = s10_body, .ctx = c, .dump = c->ks ? sq_dump : NULL};
    const char *pre = c->ks ? s10_before() : NULL;
    int e = pre ? 0 : im->init(&c->q, cap);
    if (pre || e) {
        if (pre)
            st_row(&run, NULL, ST_FAIL, "single-threaded check: %s", pre);
        else
            st_row(&run, NULL, ST_FAIL, "init returned %d", e);
        sq_free(c);
        return;
    }
    struct st_result r;
    st_run(o, &run, &r);
    const char *after = c->ks ? sq_ks_after(c->q.u.ks) : NULL;
    if (after && !c->after_close)
        c->after_close = after;
    uint64_t u = im->unfinished(&c->q);
    size_t qcap = c->q.cap;
    int de = im->destroy(&c->q);
    struct sq_tally y;
    sq_tally(c, &r, &y);
    char why[400], rate[32], capd[48];
    st_human(r.secs > 0 ? (double)y.got / r.secs : 0, rate, sizeof rate);
    if (!qcap)
        snprintf(capd, sizeof capd, "unbounded");
    else if (qcap != cap)
        snprintf(capd, sizeof capd, "cap %zu (ring of %zu)", qcap, qcap + 1);
    else
        snprintf(capd, sizeof capd, "cap %zu", qcap);
    const char *bad = sq_verdict(c, &y, de, why, sizeof why);
    if (!bad && c->final_fin != c->final_put)
        bad = "final join returned early";
    if (!bad && u)
        bad = "tasks unfinished at the end";
    if (bad)
        st_row(&run, &r, ST_FAIL, "%u+%u+1, %s: %s", np, np, capd, bad);
    else
        st_row(&run, &r, ST_PASS,
               "%u+%u+1, %s: %llu items (%s/s) each got once (%s); %llu timed joins during "
               "traffic (%llu returned 0, each after the task_done of every item put before it); "
               "join() after all %llu task_done; close(): %u consumers got EPIPE, last %.1f ms "
               "later; %llu get / %llu put timeouts",
               np, np, capd, (unsigned long long)y.got, rate,
               c->seen ? "seen flags, checksum, FIFO" : "count, checksum, FIFO",
               (unsigned long long)c->probes, (unsigned long long)c->probes_ok,
               (unsigned long long)c->final_fin, y.epipe, y.drain_ms,
               (unsigned long long)y.get_tmo, (unsigned long long)y.put_tmo);
    st_result_free(&r);
    sq_free(c);
}

static void s10_run(const struct st_opts *o)
{
    /* Defaults: the seed's 2+2 at maxsize 5, then 16+16 (oversubscribed) at
     * maxsize 5 and 1024.  --threads N: N+N at both capacities. */
    static const struct {
        unsigned producers;
        size_t cap;
        uint64_t iters;
    } cfg[] = {{2, 5, 20000}, {16, 5, 2000}, {16, 1024, 2000}};
    static const struct q_impl *const impls[] = {&q_ksync, &q_ck, &q_wf, &q_pt};
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        if (o->threads && k == 0)
            continue;
        unsigned np = st_threads(o, cfg[k].producers);
        uint64_t iters = st_iters(o, np <= 4 ? cfg[0].iters : cfg[k].iters);
        for (size_t i = 0; i < sizeof impls / sizeof impls[0]; i++)
            if (st_selected(o, impls[i]->kind))
                s10_one(o, impls[i], np, cfg[k].cap, iters);
    }
}

static void s11_one(const struct st_opts *o, const struct q_impl *im, unsigned np, uint64_t iters)
{
    const size_t cap = 5;
    struct sq *c = sq_new(im, np, np, iters, 1, o->seconds > 0);
    struct st_run run = {.scen = "S11", .impl = im->name, .kind = im->kind, .threads = 2 * np + 1,
                         .iters = iters, .body = s11_body, .ctx = c,
                         .dump = c->ks ? sq_dump : NULL};
    int e = im->init(&c->q, cap);
    if (e) {
        st_row(&run, NULL, ST_FAIL, "init returned %d", e);
        sq_free(c);
        return;
    }
    struct st_result r;
    st_run(o, &run, &r);
    const char *after = c->ks ? sq_ks_after(c->q.u.ks) : NULL;
    if (after && !c->after_close)
        c->after_close = after;
    int de = im->destroy(&c->q);
    struct sq_tally y;
    sq_tally(c, &r, &y);
    char why[400];
    const char *bad = sq_verdict(c, &y, de, why, sizeof why);
    if (bad)
        st_row(&run, &r, ST_FAIL, "%u+%u+1, cap %zu: %s", np, np, cap, bad);
    else
        st_row(&run, &r, ST_PASS,
               "%u+%u+1, cap %zu, consumer 0 never calls task_done, the others forget 1 in 32: "
               "%llu items, %llu task_done missing; timedjoin(%lld ms) -> ETIMEDOUT %.2f ms "
               "after its deadline, unfinished() == %llu exactly; %llu timed joins during "
               "traffic (%llu ETIMEDOUT, none 0 once a task_done was missing); after the missing "
               "calls join() 0, one more task_done EINVAL",
               np, np, cap, (unsigned long long)y.got, (unsigned long long)c->s11_missing,
               S11_JOIN_NS / 1000000, (double)c->s11_late_ns / 1e6,
               (unsigned long long)c->s11_unfinished, (unsigned long long)c->probes,
               (unsigned long long)c->probes_tmo);
    st_result_free(&r);
    sq_free(c);
}

static void s11_run(const struct st_opts *o)
{
    static const struct {
        unsigned producers;
        uint64_t iters;
    } cfg[] = {{2, 5000}, {16, 500}};
    static const struct q_impl *const impls[] = {&q_ksync, &q_pt};
    for (size_t k = 0; k < 2; k++) {
        if (o->threads && k)
            break;
        unsigned np = st_threads(o, cfg[k].producers);
        uint64_t iters = st_iters(o, np <= 4 ? cfg[0].iters : cfg[1].iters);
        for (size_t i = 0; i < sizeof impls / sizeof impls[0]; i++)
            if (st_selected(o, impls[i]->kind))
                s11_one(o, impls[i], np, iters);
    }
}

/* ---- S12: connection pool ------------------------------------------------------------------
 * N connections (3), more clients (16, 64).  Each request: borrow with a
 * random short deadline (one in 16 already past: a try), hold the
 * connection for a moment (the seed's query), return it, pause.  The seed's
 * obtenir_connexion() has a bug: after a timeout its `finally` puts back a
 * connection it never got.  Here a timed-out borrow must leave the output
 * untouched (it is set to a sentinel first) and the client returns nothing.
 *
 * Checked on every implementation:
 *   - a connection is never held by two clients: a per-connection atomic
 *     holder count must be 0 when a client takes it, and the holder's id,
 *     written on borrow, is still there at return;
 *   - each holder increments the connection's plain (non-atomic) use count
 *     (the seed's used_count += 1): the counts add up to the borrows, which
 *     also checks that a return hands its writes to the next borrower;
 *   - a timed-out borrow did not return before its deadline and gave nothing;
 *   - at the end borrows == returns, every connection is back (available ==
 *     N) and no holder count is left;
 *   - ksync, single-threaded after the run: returning a connection that is not
 *     borrowed is refused (EPERM) and a foreign value too (EINVAL), neither
 *     changes available(); with all N borrowed, a try and a short timed
 *     borrow time out with the output untouched and destroy() says EBUSY.
 * References: a ck_ring MPMC of free connections (sched_yield retry until
 * the deadline), and a pthread mutex + condition FIFO (the seed's Queue).
 */

#define S12_CONNS 3

struct conn {
    _Alignas(KS_CACHELINE) atomic_uint holders;
    unsigned owner; /* plain: written and read by the holder */
    uint64_t uses;  /* plain: the seed's used_count, by the holder */
};

struct ckpool {
    ck_ring_t ring;
    ck_ring_buffer_t *buf;
};

struct ptpool {
    pthread_mutex_t m;
    pthread_cond_t c; /* CLOCK_MONOTONIC */
    void **buf;       /* a FIFO of free connections, under m */
    size_t n, head, count;
};

union anypool {
    ks_pool_t *ks;
    struct ckpool ck;
    struct ptpool pt;
};

struct pool_impl {
    const char *name;
    enum st_kind kind;
    int spins;
    int (*init)(union anypool *p, void *const *res, size_t n);
    int (*borrow)(union anypool *p, int64_t deadline, void **res); /* 0, ETIMEDOUT */
    int (*ret)(union anypool *p, void *res);
    size_t (*available)(union anypool *p);
    int (*destroy)(union anypool *p);
};

static int ksp_init(union anypool *p, void *const *res, size_t n)
{
    return ks_pool_create(&p->ks, res, n, KS_PRIVATE);
}
static int ksp_borrow(union anypool *p, int64_t dl, void **res)
{
    return ks_pool_borrow(p->ks, dl, res);
}
static int ksp_ret(union anypool *p, void *res) { return ks_pool_return(p->ks, res); }
static size_t ksp_available(union anypool *p) { return ks_pool_available(p->ks); }
static int ksp_destroy(union anypool *p) { return ks_pool_destroy(p->ks); }

static int ckp_init(union anypool *p, void *const *res, size_t n)
{
    unsigned size = ck_size_for(n);
    p->ck.buf = calloc(size, sizeof *p->ck.buf);
    if (!p->ck.buf)
        return ENOMEM;
    ck_ring_init(&p->ck.ring, size);
    for (size_t i = 0; i < n; i++)
        if (!ck_ring_enqueue_mpmc(&p->ck.ring, p->ck.buf, res[i]))
            return EOVERFLOW;
    return 0;
}
static int ckp_borrow(union anypool *p, int64_t dl, void **res)
{
    for (;;) {
        void *v;
        if (ck_ring_dequeue_mpmc(&p->ck.ring, p->ck.buf, &v)) {
            *res = v;
            return 0;
        }
        if (ks_now() >= dl)
            return ETIMEDOUT;
        sched_yield();
    }
}
static int ckp_ret(union anypool *p, void *res)
{
    /* the ring holds every connection: a return never finds it full */
    return ck_ring_enqueue_mpmc(&p->ck.ring, p->ck.buf, res) ? 0 : EOVERFLOW;
}
static size_t ckp_available(union anypool *p) { return ck_ring_size(&p->ck.ring); }
static int ckp_destroy(union anypool *p)
{
    free(p->ck.buf);
    return 0;
}

static int ptp_init(union anypool *p, void *const *res, size_t n)
{
    struct ptpool *q = &p->pt;
    memset(q, 0, sizeof *q);
    q->buf = calloc(n, sizeof *q->buf);
    if (!q->buf)
        return ENOMEM;
    q->n = q->count = n;
    memcpy(q->buf, res, n * sizeof *res);
    int e = pthread_mutex_init(&q->m, NULL);
    return e ? e : cond_init_mono(&q->c);
}
static int ptp_borrow(union anypool *p, int64_t dl, void **res)
{
    struct ptpool *q = &p->pt;
    pthread_mutex_lock(&q->m);
    while (q->count == 0)
        if (cond_wait_until(&q->c, &q->m, dl) == ETIMEDOUT && q->count == 0) {
            pthread_mutex_unlock(&q->m);
            return ETIMEDOUT;
        }
    *res = q->buf[q->head];
    q->head = (q->head + 1) % q->n;
    q->count--;
    pthread_mutex_unlock(&q->m);
    return 0;
}
static int ptp_ret(union anypool *p, void *res)
{
    struct ptpool *q = &p->pt;
    int e = 0;
    pthread_mutex_lock(&q->m);
    if (q->count == q->n) {
        e = EOVERFLOW;
    } else {
        q->buf[(q->head + q->count) % q->n] = res;
        q->count++;
        pthread_cond_signal(&q->c);
    }
    pthread_mutex_unlock(&q->m);
    return e;
}
static size_t ptp_available(union anypool *p)
{
    pthread_mutex_lock(&p->pt.m);
    size_t n = p->pt.count;
    pthread_mutex_unlock(&p->pt.m);
    return n;
}
static int ptp_destroy(union anypool *p)
{
    int e = pthread_cond_destroy(&p->pt.c), r = pthread_mutex_destroy(&p->pt.m);
    free(p->pt.buf);
    return e ? e : r;
}

static const struct pool_impl pools[] = {
    {"ksync", ST_KSYNC, 0, ksp_init, ksp_borrow, ksp_ret, ksp_available, ksp_destroy},
    {"ck_ring", ST_REF, 1, ckp_init, ckp_borrow, ckp_ret, ckp_available, ckp_destroy},
    {"pthread_cond", ST_REF, 0, ptp_init, ptp_borrow, ptp_ret, ptp_available, ptp_destroy},
};

struct s12 {
    union anypool p; /* first: the stall dump reads p.ks */
    const struct pool_impl *im;
    struct conn *conns;
    void *res[S12_CONNS];
    char sentinel; /* its address: "nothing borrowed" */
    struct st_note err;
};

enum { S12_BORROWS, S12_RETURNS, S12_TIMEOUTS, S12_TRIES, S12_TRY_TMO };

static void s12_dump(void *ctx, char *buf, size_t len)
{
    struct s12 *c = ctx;
    size_t at = note_prefix(&c->err, buf, len);
    at += (size_t)snprintf(buf + at, len - at, "ks_pool: %zu of %zu available; holders",
                           ks_pool_available(c->p.ks), ks_pool_size(c->p.ks));
    for (int i = 0; i < S12_CONNS && at < len; i++) /* relaxed: a snapshot */
        at += (size_t)snprintf(buf + at, len - at, " %u",
                               atomic_load_explicit(&c->conns[i].holders, memory_order_relaxed));
}

static void s12_body(struct st_thread *t)
{
    struct s12 *c = t->ctx;
    void *const nothing = &c->sentinel;
    while (st_next(t)) {
        void *res = nothing;
        int try = st_below(t, 16) == 0;
        int64_t dl = try ? ks_now() - 1 : ks_now() + 1000 + st_below(t, 300000);
        t->stat[S12_TRIES] += (uint64_t)try;
        int e = c->im->borrow(&c->p, dl, &res);
        if (e == ETIMEDOUT) {
            t->stat[S12_TIMEOUTS]++;
            t->stat[S12_TRY_TMO] += (uint64_t)try;
            if (res != nothing)
                st_note(&c->err, "a borrow that timed out wrote %p to its output", res);
            if (ks_now() < dl)
                st_note(&c->err, "borrow returned ETIMEDOUT before its deadline");
            st_pause(t, 100); /* "Timeout - pas de connexion disponible"; nothing to return */
            continue;
        }
        if (e) {
            st_note(&c->err, "borrow returned %d", e);
            continue;
        }
        struct conn *cn = res;
        if (cn < c->conns || cn >= c->conns + S12_CONNS || res == nothing) {
            st_note(&c->err, "borrow returned %p, no connection of the pool", res);
            continue;
        }
        t->stat[S12_BORROWS]++;
        /* relaxed: a detector; the pool's return/borrow order the holders. */
        unsigned h = atomic_fetch_add_explicit(&cn->holders, 1, memory_order_relaxed);
        if (h)
            st_note(&c->err, "connection %d borrowed while %u other clients held it",
                    (int)(cn - c->conns), h);
        cn->owner = t->id;
        cn->uses++;       /* the seed's connexion['used_count'] += 1 */
        st_pause(t, 300); /* the query: time.sleep(duree) */
        if (cn->owner != t->id)
            st_note(&c->err, "connection %d taken over by client %u while client %u held it",
                    (int)(cn - c->conns), cn->owner, t->id);
        atomic_fetch_sub_explicit(&cn->holders, 1, memory_order_relaxed); /* relaxed: as above */
        if ((e = c->im->ret(&c->p, res)))
            st_note(&c->err, "return returned %d", e);
        else
            t->stat[S12_RETURNS]++;
        st_pause(t, 100); /* the seed's pause between requests */
    }
}

/* ksync, single-threaded after the run: refusals and timeouts.  Every
 * return that must be refused is tried while a connection is out, so that a
 * pool that wrongly accepted it has room and the check cannot block. */
static const char *s12_ks_after(struct s12 *c)
{
    ks_pool_t *p = c->p.ks;
    void *got[S12_CONNS], *a, *d, *x = &c->sentinel;
    int64_t dl;
    if (ks_pool_borrow(p, 0, &a))
        return "a try (deadline past) on a pool with a free connection failed";
    void *b = a == c->res[0] ? c->res[1] : c->res[0]; /* free */
    if (ks_pool_return(p, b) != EPERM)
        return "returning a connection that was never borrowed (the seed's bug) was not EPERM";
    if (ks_pool_return(p, &c->sentinel) != EINVAL)
        return "returning a value that is no connection was not EINVAL";
    if (ks_pool_available(p) != S12_CONNS - 1 || ks_pool_size(p) != S12_CONNS)
        return "a refused return changed available() or size()";
    if (ks_pool_return(p, a))
        return "returning a borrowed connection failed";
    if (ks_pool_borrow(p, 0, &d)) /* FIFO: not a, which went to the back */
        return "a try on a full pool failed";
    int e = d != a ? ks_pool_return(p, a) : EPERM;
    if (ks_pool_return(p, d))
        return "returning a borrowed connection failed";
    if (e != EPERM)
        return "a second return of one connection was not EPERM";
    for (int i = 0; i < S12_CONNS; i++)
        if (ks_pool_borrow(p, 0, &got[i]))
            return "a try (deadline past) on a pool with a free connection failed";
    for (int i = 0; i < S12_CONNS; i++)
        for (int j = 0; j < i; j++)
            if (got[i] == got[j])
                return "one connection borrowed twice";
    const char *w = NULL;
    if (ks_pool_borrow(p, 0, &x) != ETIMEDOUT || x != &c->sentinel)
        w = "a try on an empty pool did not time out with the output untouched";
    else if (ks_pool_borrow(p, dl = ks_now() + 200000, &x) != ETIMEDOUT || x != &c->sentinel ||
             ks_now() < dl)
        w = "a timed borrow on an empty pool did not time out at its deadline, output untouched";
    else if (ks_pool_available(p) != 0)
        w = "available() is not 0 with everything borrowed";
    else if (ks_pool_destroy(p) != EBUSY)
        w = "destroy with connections borrowed was not EBUSY";
    for (int i = 0; i < S12_CONNS; i++)
        if (ks_pool_return(p, got[i]) && !w)
            w = "returning a borrowed connection failed";
    return w;
}

static void s12_one(const struct st_opts *o, const struct pool_impl *im, unsigned threads,
                    uint64_t iters)
{
    struct s12 *c = st_alloc(sizeof *c);
    c->im = im;
    c->conns = st_alloc(S12_CONNS * sizeof *c->conns);
    for (int i = 0; i < S12_CONNS; i++) {
        atomic_init(&c->conns[i].holders, 0);
        c->res[i] = &c->conns[i];
    }
    st_note_init(&c->err);
    struct st_run run = {.scen = "S12", .impl = im->name, .kind = im->kind, .threads = threads,
                         .iters = iters, .cap_s = im->spins ? ST_SPIN_CAP_S : 0,
                         .body = s12_body, .ctx = c,
                         .dump = im->kind == ST_KSYNC ? s12_dump : NULL};
    int e = im->init(&c->p, c->res, S12_CONNS);
    if (e) {
        st_row(&run, NULL, ST_FAIL, "init returned %d", e);
        free(c->conns);
        free(c);
        return;
    }
    struct st_result r;
    st_run(o, &run, &r);
    size_t avail = im->available(&c->p);
    const char *after = im->kind == ST_KSYNC && avail == S12_CONNS ? s12_ks_after(c) : NULL;
    int de = im->destroy(&c->p);
    uint64_t borrows = st_stat_sum(&r, S12_BORROWS), returns = st_stat_sum(&r, S12_RETURNS),
             tmo = st_stat_sum(&r, S12_TIMEOUTS), tries = st_stat_sum(&r, S12_TRIES),
             try_tmo = st_stat_sum(&r, S12_TRY_TMO), uses = 0;
    unsigned held = 0;
    char per[64];
    int at = 0;
    for (int i = 0; i < S12_CONNS; i++) {
        uses += c->conns[i].uses;
        held += atomic_load_explicit(&c->conns[i].holders, memory_order_relaxed); /* joined */
        at += snprintf(per + at, sizeof per - (size_t)at, "%s%llu", i ? "/" : "",
                       (unsigned long long)c->conns[i].uses);
    }
    unsigned errs = st_note_count(&c->err);
    if (errs || borrows != returns || avail != S12_CONNS || held || uses != borrows || after || de)
        st_row(&run, &r, ST_FAIL,
               "%d conns, %u clients: %llu borrows, %llu returns, %zu of %d available at the "
               "end, %u still held, uses %llu; %s; destroy %d; %u errors: %s",
               S12_CONNS, threads, (unsigned long long)borrows, (unsigned long long)returns,
               avail, S12_CONNS, held, (unsigned long long)uses, after ? after : "-", de, errs,
               errs ? c->err.msg : "-");
    else
        st_row(&run, &r, ST_PASS,
               "%d conns, %u clients: %llu borrows == returns, never two holders, uses %s add "
               "up; %llu timed out with nothing taken or returned (%llu of %llu tries); all %d "
               "back at the end%s",
               S12_CONNS, threads, (unsigned long long)borrows, per, (unsigned long long)tmo,
               (unsigned long long)try_tmo, (unsigned long long)tries, S12_CONNS,
               im->kind == ST_KSYNC ? "; return of a free one EPERM, of a stranger EINVAL" : "");
    st_result_free(&r);
    free(c->conns);
    free(c);
}

static void s12_run(const struct st_opts *o)
{
    static const struct {
        unsigned threads;
        uint64_t iters;
    } cfg[] = {{16, 5000}, {64, 1000}};
    for (size_t k = 0; k < 2; k++) {
        if (o->threads && k)
            break;
        unsigned n = st_threads(o, cfg[k].threads);
        for (size_t i = 0; i < sizeof pools / sizeof pools[0]; i++)
            if (st_selected(o, pools[i].kind))
                s12_one(o, &pools[i], n, st_iters(o, n <= 16 ? cfg[0].iters : cfg[1].iters));
    }
}

/* ---- S14: monitoring pipeline ----------------------------------------------------------------
 * The seed's SystemeMonitoring: a main thread adds monitoring tasks to a task
 * queue (stats["taches_ajoutees"] under the stats lock); W workers take tasks
 * with a timeout, execute each inside a semaphore of `permits` (the value
 * measured, stats "taches_executees"/"alertes_generees" under the lock) and
 * put the result into a result queue, then task_done; one result handler
 * takes results with a timeout and appends alerts under the lock, then
 * task_done.  Workers and handler loop until the stop event is set.
 *
 * A task is its id; its type (cpu/memoire/disque/autre), the value measured
 * in that type's range and its threshold (70/80/85/90) are pure functions of
 * the id.  The main thread counts the alerts to expect when it creates each
 * task; workers recompute the value, the handler re-checks the result's
 * value and alert flag against the id.  The seed's arreter() sets the event
 * while tasks may still be queued (they are lost); here stop() first joins
 * the task queue and then the result queue, then sets the event and waits
 * for every thread to leave (a pthread count, test machinery).
 *
 * Checked: tasks added == executed == results handled == tasks made, each
 * task handled once (seen flags, iteration mode); alerts generated (under the
 * lock) == alerts kept by the handler == alerts expected from the task values,
 * with equal checksums of their ids; never more than `permits` workers inside
 * the semaphore, and its value back at the end; stop() joined every thread
 * within 2 s (its latency is reported).
 * Reference: the same pipeline on two ck_ring MPMC queues (polling, with the
 * counter task_done/join above), sem_t, a pthread mutex, and for stop a flag
 * set under a pthread mutex with a condition broadcast (threading.Event).
 */

#define S14_QCAP 64
#define S14_STOP_BOUND_NS 2000000000LL

struct pt_flag {
    pthread_mutex_t m;
    pthread_cond_t c;
    atomic_int flag; /* written under m */
};

struct s14 {
    /* ksync */
    struct anyq tq, rq; /* first: the stall dump reads tq.u.ks */
    ks_sem_t ksem;
    ks_mutex_t kmx;
    ks_event_t kstop;
    /* reference */
    sem_t psem;
    pthread_mutex_t pmx;
    struct pt_flag pstop;
    const struct q_impl *qi;
    int ks;
    unsigned workers, permits;
    uint64_t salt;
    /* the seed's statistiques and alertes, under the stats lock */
    uint64_t added, executed, alerts_gen, alerts_kept, alerts_sum;
    /* main thread only */
    uint64_t made, expect_alerts, expect_sum;
    /* handler only */
    uint64_t handled;
    _Alignas(KS_CACHELINE) atomic_uint in_sem;
    atomic_uint peak;
    /* who has left (test machinery) */
    pthread_mutex_t xm;
    pthread_cond_t xc; /* CLOCK_MONOTONIC */
    unsigned exited;
    int64_t stop_ns, stop_lat_ns;
    unsigned left_at_bound;
    atomic_uchar *seen; /* [id - 1], iteration mode */
    uint64_t iters;
    struct st_note err;
};

enum { S14_TMO };

static const struct {
    unsigned lo, hi;
} s14_types[4] = {{10, 95}, {30, 90}, {40, 95}, {0, 100}}; /* cpu, memoire, disque, autre */
static const unsigned s14_seuils[4] = {70, 80, 85, 90};

static unsigned s14_threshold(const struct s14 *c, uint64_t id)
{
    return s14_seuils[mix64(id ^ c->salt) & 3];
}

static unsigned s14_value(const struct s14 *c, uint64_t id)
{
    uint64_t h = mix64(id * 0x9e3779b97f4a7c15ull + c->salt);
    unsigned ty = (unsigned)(h & 3), lo = s14_types[ty].lo, hi = s14_types[ty].hi;
    return lo + (unsigned)((h >> 8) % (hi - lo + 1));
}

static void s14_sem_wait(struct s14 *c)
{
    int e = 0;
    if (c->ks)
        e = ks_sem_wait(&c->ksem);
    else
        while (sem_wait(&c->psem))
            if (errno != EINTR) {
                e = errno;
                break;
            }
    if (e)
        st_note(&c->err, "sem wait returned %d", e);
}

static void s14_sem_post(struct s14 *c)
{
    int e = c->ks ? ks_sem_post(&c->ksem) : sem_post(&c->psem) ? errno : 0;
    if (e)
        st_note(&c->err, "sem post returned %d", e);
}

static void s14_lock(struct s14 *c)
{
    int e = c->ks ? ks_mutex_lock(&c->kmx) : pthread_mutex_lock(&c->pmx);
    if (e)
        st_note(&c->err, "lock returned %d", e);
}

static void s14_unlock(struct s14 *c)
{
    int e = c->ks ? ks_mutex_unlock(&c->kmx) : pthread_mutex_unlock(&c->pmx);
    if (e)
        st_note(&c->err, "unlock returned %d", e);
}

static int s14_stopping(struct s14 *c)
{
    if (c->ks)
        return ks_event_is_set(&c->kstop);
    /* acquire: pairs with the release store in s14_stop */
    return atomic_load_explicit(&c->pstop.flag, memory_order_acquire);
}

static void s14_stop(struct s14 *c)
{
    int e = 0;
    if (c->ks) {
        e = ks_event_set(&c->kstop);
    } else {
        pthread_mutex_lock(&c->pstop.m);
        /* release: pairs with the acquire load in s14_stopping */
        atomic_store_explicit(&c->pstop.flag, 1, memory_order_release);
        pthread_cond_broadcast(&c->pstop.c); /* Event.set() wakes its waiters (none here) */
        pthread_mutex_unlock(&c->pstop.m);
    }
    if (e)
        st_note(&c->err, "event set returned %d", e);
}

static void s14_exit(struct s14 *c)
{
    pthread_mutex_lock(&c->xm);
    c->exited++;
    pthread_cond_broadcast(&c->xc);
    pthread_mutex_unlock(&c->xm);
}

static void s14_dump(void *ctx, char *buf, size_t len)
{
    struct s14 *c = ctx;
    size_t at = note_prefix(&c->err, buf, len);
    at += (size_t)snprintf(buf + at, len - at, "tasks: ");
    at += (size_t)ksq_describe(c->tq.u.ks, buf + at, len - at);
    at = at < len ? at : len - 1;
    at += (size_t)snprintf(buf + at, len - at, "; results: ");
    at = at < len ? at : len - 1;
    at += (size_t)ksq_describe(c->rq.u.ks, buf + at, len - at);
    at = at < len ? at : len - 1;
    snprintf(buf + at, len - at, "; sem %d, %u inside, stop %d, %u exited", /* a snapshot */
             ks_sem_value(&c->ksem), atomic_load_explicit(&c->in_sem, memory_order_relaxed),
             ks_event_is_set(&c->kstop), c->exited);
}

/* The seed's main: ajouter_tache() in a loop, then (drained) arreter(). */
static void s14_main(struct st_thread *t, struct s14 *c)
{
    int e;
    while (st_next(t)) {
        uint64_t id = t->done;
        if (s14_value(c, id) > s14_threshold(c, id)) {
            c->expect_alerts++;
            c->expect_sum += mix64(id);
        }
        if ((e = c->qi->put(&c->tq, id, KS_FOREVER))) {
            st_note(&c->err, "task put returned %d", e);
            break;
        }
        c->made++;
        s14_lock(c);
        c->added++;
        s14_unlock(c);
        st_pause(t, 100); /* the seed's time.sleep(0.2) between tasks */
    }
    if ((e = c->qi->join(&c->tq, KS_FOREVER)))
        st_note(&c->err, "task queue join returned %d", e);
    if ((e = c->qi->join(&c->rq, KS_FOREVER)))
        st_note(&c->err, "result queue join returned %d", e);
    c->stop_ns = ks_now();
    s14_stop(c);
    struct timespec ts = to_ts(c->stop_ns + S14_STOP_BOUND_NS);
    pthread_mutex_lock(&c->xm);
    while (c->exited < c->workers + 1)
        if (pthread_cond_timedwait(&c->xc, &c->xm, &ts) == ETIMEDOUT)
            break;
    unsigned ex = c->exited;
    pthread_mutex_unlock(&c->xm);
    c->stop_lat_ns = ks_now() - c->stop_ns;
    if (ex < c->workers + 1) {
        c->left_at_bound = c->workers + 1 - ex;
        st_note(&c->err, "stop(): %u of %u threads still running %lld ms after the stop event",
                c->left_at_bound, c->workers + 1, S14_STOP_BOUND_NS / 1000000);
    }
}

static void s14_worker(struct st_thread *t, struct s14 *c)
{
    while (!s14_stopping(c)) {
        uint64_t id;
        int e = c->qi->get(&c->tq, &id, ks_now() + 200000 + st_below(t, 4800000));
        if (e == ETIMEDOUT) {
            t->stat[S14_TMO]++;
            continue; /* check the stop event */
        }
        if (e) {
            st_note(&c->err, "task get returned %d", e);
            break;
        }
        s14_sem_wait(c); /* with self.semaphore_ressources: */
        /* relaxed (in_sem, peak): a detector; the semaphore orders the holders. */
        unsigned in = atomic_fetch_add_explicit(&c->in_sem, 1, memory_order_relaxed) + 1;
        unsigned pk = atomic_load_explicit(&c->peak, memory_order_relaxed);
        while (in > pk && !atomic_compare_exchange_weak_explicit(&c->peak, &pk, in,
                                                                 memory_order_relaxed,
                                                                 memory_order_relaxed))
            ;
        if (in > c->permits)
            st_note(&c->err, "%u workers inside a semaphore of %u", in, c->permits);
        /* executer_tache(): measure, then time.sleep */
        unsigned v = s14_value(c, id), alert = v > s14_threshold(c, id);
        t->sink += st_work(id, 20 + v);
        st_pause(t, 300);
        s14_lock(c);
        c->executed++;
        c->alerts_gen += alert;
        s14_unlock(c);
        if ((e = c->qi->put(&c->rq, id << 8 | (uint64_t)alert << 7 | v, KS_FOREVER)))
            st_note(&c->err, "result put returned %d", e);
        atomic_fetch_sub_explicit(&c->in_sem, 1, memory_order_relaxed); /* relaxed: a detector */
        s14_sem_post(c);
        if ((e = c->qi->task_done(&c->tq)))
            st_note(&c->err, "task queue task_done returned %d", e);
        count_op(t);
    }
    s14_exit(c);
}

static void s14_handler(struct st_thread *t, struct s14 *c)
{
    while (!s14_stopping(c)) {
        uint64_t res;
        int e = c->qi->get(&c->rq, &res, ks_now() + 200000 + st_below(t, 4800000));
        if (e == ETIMEDOUT) {
            t->stat[S14_TMO]++;
            continue;
        }
        if (e) {
            st_note(&c->err, "result get returned %d", e);
            break;
        }
        uint64_t id = res >> 8;
        unsigned v = (unsigned)(res & 127), alert = (unsigned)(res >> 7) & 1;
        if (id == 0 || v != s14_value(c, id) || alert != (v > s14_threshold(c, id)))
            st_note(&c->err, "result 0x%llx: task %llu's value or alert is wrong",
                    (unsigned long long)res, (unsigned long long)id);
        /* relaxed: the exchanges on one flag are totally ordered anyway. */
        else if (c->seen && id <= c->iters &&
                 atomic_exchange_explicit(&c->seen[id - 1], 1, memory_order_relaxed))
            st_note(&c->err, "task %llu's result handled twice", (unsigned long long)id);
        if (alert) {
            s14_lock(c);
            c->alerts_kept++; /* self.alertes.append(alerte) */
            c->alerts_sum += mix64(id);
            s14_unlock(c);
        }
        c->handled++;
        if ((e = c->qi->task_done(&c->rq)))
            st_note(&c->err, "result queue task_done returned %d", e);
        count_op(t);
    }
    s14_exit(c);
}

static void s14_body(struct st_thread *t)
{
    struct s14 *c = t->ctx;
    if (t->id == 0)
        s14_main(t, c);
    else if (t->id <= c->workers)
        s14_worker(t, c);
    else
        s14_handler(t, c);
}

static int s14_init(struct s14 *c)
{
    int e = c->qi->init(&c->tq, S14_QCAP);
    if (!e)
        e = c->qi->init(&c->rq, S14_QCAP);
    if (!e)
        e = pthread_mutex_init(&c->xm, NULL);
    if (!e)
        e = cond_init_mono(&c->xc);
    if (e)
        return e;
    if (c->ks) {
        if (!(e = ks_sem_init(&c->ksem, c->permits, KS_PRIVATE)) &&
            !(e = ks_mutex_init(&c->kmx, KS_PRIVATE)))
            e = ks_event_init(&c->kstop, KS_PRIVATE);
        return e;
    }
    atomic_init(&c->pstop.flag, 0);
    if (sem_init(&c->psem, 0, c->permits))
        return errno;
    if (!(e = pthread_mutex_init(&c->pmx, NULL)) && !(e = pthread_mutex_init(&c->pstop.m, NULL)))
        e = cond_init_mono(&c->pstop.c);
    return e;
}

/* Destroys everything; returns the first error and the semaphore's value. */
static int s14_destroy(struct s14 *c, int *semval)
{
    int e = 0, r;
#define S14_KEEP(x)                                                                               \
    if ((r = (x)) && !e)                                                                          \
    e = r
    if (c->ks) {
        *semval = ks_sem_value(&c->ksem);
        S14_KEEP(ks_sem_destroy(&c->ksem));
        S14_KEEP(ks_mutex_destroy(&c->kmx));
        S14_KEEP(ks_event_destroy(&c->kstop));
    } else {
        if (sem_getvalue(&c->psem, semval))
            *semval = -1;
        S14_KEEP(sem_destroy(&c->psem) ? errno : 0);
        S14_KEEP(pthread_mutex_destroy(&c->pmx));
        S14_KEEP(pthread_mutex_destroy(&c->pstop.m));
        S14_KEEP(pthread_cond_destroy(&c->pstop.c));
    }
    S14_KEEP(c->qi->unfinished(&c->tq) ? EBUSY : 0);
    S14_KEEP(c->qi->unfinished(&c->rq) ? EBUSY : 0);
    S14_KEEP(c->qi->destroy(&c->tq));
    S14_KEEP(c->qi->destroy(&c->rq));
    S14_KEEP(pthread_mutex_destroy(&c->xm));
    S14_KEEP(pthread_cond_destroy(&c->xc));
#undef S14_KEEP
    return e;
}

static void s14_one(const struct st_opts *o, const struct q_impl *qi, unsigned workers,
                    unsigned permits, uint64_t iters)
{
    struct s14 *c = st_alloc(sizeof *c);
    c->qi = qi;
    c->ks = qi->kind == ST_KSYNC;
    c->workers = workers;
    c->permits = permits;
    c->salt = mix64(o->seed + workers);
    atomic_init(&c->in_sem, 0);
    atomic_init(&c->peak, 0);
    st_note_init(&c->err);
    if (o->seconds <= 0 && iters <= SQ_SEEN_MAX) {
        c->iters = iters;
        c->seen = calloc(iters, 1);
    }
    const char *name = c->ks ? "ksync" : "ck_ring+pthread";
    struct st_run run = {.scen = "S14", .impl = name, .kind = qi->kind, .threads = workers + 2,
                         .iters = iters, .cap_s = qi->spins ? ST_SPIN_CAP_S : 0,
                         .body = s14_body, .ctx = c, .dump = c->ks ? s14_dump : NULL};
    int e = s14_init(c);
    if (e) {
        st_row(&run, NULL, ST_FAIL, "init returned %d", e);
        free(c->seen);
        free(c);
        return;
    }
    struct st_result r;
    st_run(o, &run, &r);
    int semval = -1;
    int de = s14_destroy(c, &semval);
    uint64_t missing = 0;
    if (c->seen) /* relaxed: the threads are joined */
        for (uint64_t i = 0; i < c->made && i < c->iters; i++)
            missing += !atomic_load_explicit(&c->seen[i], memory_order_relaxed);
    unsigned errs = st_note_count(&c->err), peak = atomic_load(&c->peak);
    double stop_ms = (double)c->stop_lat_ns / 1e6;
    char rate[32];
    st_human(r.secs > 0 ? (double)c->handled / r.secs : 0, rate, sizeof rate);
    if (errs || c->added != c->made || c->executed != c->made || c->handled != c->made ||
        missing || c->alerts_gen != c->expect_alerts || c->alerts_kept != c->expect_alerts ||
        c->alerts_sum != c->expect_sum || peak > permits || semval != (int)permits ||
        c->left_at_bound || de)
        st_row(&run, &r, ST_FAIL,
               "1+%u+1, sem %u: tasks made %llu, added %llu, executed %llu, handled %llu, %llu "
               "never handled; alerts expected %llu, generated %llu, kept %llu (checksums %s); "
               "sem peak %u, value %d; stop %.1f ms, %u threads left; destroy %d; %u errors: %s",
               workers, permits, (unsigned long long)c->made, (unsigned long long)c->added,
               (unsigned long long)c->executed, (unsigned long long)c->handled,
               (unsigned long long)missing, (unsigned long long)c->expect_alerts,
               (unsigned long long)c->alerts_gen, (unsigned long long)c->alerts_kept,
               c->alerts_sum == c->expect_sum ? "equal" : "DIFFER", peak, semval, stop_ms,
               c->left_at_bound, de, errs, errs ? c->err.msg : "-");
    else
        st_row(&run, &r, ST_PASS,
               "1 adder + %u workers (sem %u) + 1 handler: %llu tasks (%s/s) added == executed "
               "== handled%s; %llu alerts == results over threshold (expected from the task "
               "values); sem peak %u/%u; stop() joined %u threads in %.1f ms",
               workers, permits, (unsigned long long)c->made, rate,
               c->seen ? " (each once)" : "", (unsigned long long)c->expect_alerts, peak,
               permits, workers + 1, stop_ms);
    st_result_free(&r);
    free(c->seen);
    free(c);
}

static void s14_run(const struct st_opts *o)
{
    /* Defaults: the seed's SystemeMonitoring(max_workers=2) with 3 workers,
     * and 32 workers on 3 permits (oversubscribed).  --threads N: N workers. */
    static const struct {
        unsigned workers, permits;
        uint64_t tasks;
    } cfg[] = {{3, 2, 20000}, {32, 3, 10000}};
    static const struct q_impl *const impls[] = {&q_ksync, &q_ck};
    for (size_t k = 0; k < 2; k++) {
        if (o->threads && k)
            break;
        unsigned w = st_threads(o, cfg[k].workers);
        unsigned permits = o->threads ? 3 : cfg[k].permits;
        for (size_t i = 0; i < sizeof impls / sizeof impls[0]; i++)
            if (st_selected(o, impls[i]->kind))
                s14_one(o, impls[i], w, permits, st_iters(o, cfg[k].tasks));
    }
}

const struct st_scenario st_family_queue[] = {
    {"S10", "bounded-queue", "producers put, consumers get with a timeout and call task_done, the "
                             "main thread joins, then closes: no item lost or duplicated, FIFO "
                             "per producer, join() only after every task_done()",
     "ksync queue | ck_ring MPMC, liburcu wfcqueue, pthread mutex + conds (Python's Queue)",
     "1 coordinator + 2+2 x 20000 items per producer at maxsize 5, 1 + 16+16 x 2000 at maxsize 5 "
     "and 1024 (--threads N: N producers + N consumers at both sizes)",
     s10_run},
    {"S11", "forgot-task-done", "consumers that forget task_done(): a timed join returns "
                                "ETIMEDOUT and unfinished() is the exact count missing, instead "
                                "of join() hanging",
     "ksync queue | pthread mutex + conds (Python's Queue)",
     "1 coordinator + 2+2 x 5000 items and 1 + 16+16 x 500, maxsize 5", s11_run},
    {"S12", "connection-pool", "more clients than connections borrow with a deadline and return: "
                               "never two holders, a timed-out borrow takes and returns nothing, "
                               "all connections back",
     "ksync pool | ck_ring MPMC pool, pthread mutex + cond pool",
     "3 connections, 16 clients x 5000 requests and 64 x 1000", s12_run},
    {"S14", "monitoring", "task queue -> workers under a semaphore -> result queue -> handler, "
                          "stats under a lock, stop event: added == executed == handled, alerts "
                          "== results over threshold, stop() joins every thread within 2 s",
     "ksync queue + sem + mutex + event | ck_ring + sem_t + pthread_mutex + flag/cond",
     "1 adder + 3 workers (sem 2) + 1 handler x 20000 tasks, 1 + 32 (sem 3) + 1 x 10000 "
     "(--threads N: N workers, sem 3)",
     s14_run},
    {0, 0, 0, 0, 0, 0},
};

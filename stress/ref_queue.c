/* stress/ref_queue.c - the queues compared by S10, S11 and S14 (see
 * ref_queue.h): ks_queue, ck_ring MPMC and liburcu's wfcqueue polled until
 * the deadline, and Python's queue.Queue on a pthread mutex and conditions;
 * and the helpers the references share with S12's pools.
 */
#define _LGPL_SOURCE /* liburcu: wfcqueue as static inline code, no library symbols */
#include "ref_queue.h"

#include <ksync/time.h>

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------ */

struct timespec rq_timespec(int64_t ns)
{
    return (struct timespec){(time_t)(ns / KS_NSEC_PER_SEC), (long)(ns % KS_NSEC_PER_SEC)};
}

int rq_cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int e = pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
    return e;
}

/* Wait on c until signalled or the deadline (KS_FOREVER: no deadline). */
int rq_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, int64_t deadline)
{
    if (deadline == KS_FOREVER)
        return pthread_cond_wait(c, m);
    struct timespec ts = rq_timespec(deadline);
    return pthread_cond_timedwait(c, m, &ts);
}

/* The smallest ck_ring size (a power of two) that holds n items (size - 1). */
unsigned rq_ck_ring_size(size_t n)
{
    unsigned s = 2;
    while (s - 1 < n)
        s <<= 1;
    return s;
}

/* ---- the queues compared -------------------------------------------------------------- */

/* ksync */
static int ksq_init(struct rq_queue *q, size_t cap)
{
    q->cap = cap;
    return ks_queue_create(&q->u.ks, cap, KS_PRIVATE);
}
/* Deadline KS_FOREVER: the inline put/get; 0: the inline tryput/tryget
 * (EAGAIN reported as ETIMEDOUT); any other: timedput/timedget. */
static int ksq_put(struct rq_queue *q, uint64_t item, int64_t dl)
{
    void *p = (void *)(uintptr_t)item;
    if (dl == 0) {
        int e = ks_queue_tryput(q->u.ks, p);
        return e == EAGAIN ? ETIMEDOUT : e;
    }
    return dl == KS_FOREVER ? ks_queue_put(q->u.ks, p) : ks_queue_timedput(q->u.ks, p, dl);
}
static int ksq_get(struct rq_queue *q, uint64_t *item, int64_t dl)
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
static int ksq_task_done(struct rq_queue *q) { return ks_queue_task_done(q->u.ks); }
static int ksq_join(struct rq_queue *q, int64_t dl)
{
    return dl == KS_FOREVER ? ks_queue_join(q->u.ks) : ks_queue_timedjoin(q->u.ks, dl);
}
static uint64_t ksq_unfinished(struct rq_queue *q) { return ks_queue_unfinished(q->u.ks); }
static int ksq_close(struct rq_queue *q) { return ks_queue_close(q->u.ks); }
static int ksq_destroy(struct rq_queue *q) { return ks_queue_destroy(q->u.ks); }

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
static int ckq_init(struct rq_queue *q, size_t cap)
{
    struct rq_ckq *k = &q->u.ck;
    unsigned size = rq_ck_ring_size(cap);
    k->buf = calloc(size, sizeof *k->buf);
    if (!k->buf)
        return ENOMEM;
    ck_ring_init(&k->ring, size);
    atomic_init(&k->unfinished, 0);
    atomic_init(&k->closed, 0);
    q->cap = ck_ring_capacity(&k->ring) - 1;
    return 0;
}
static int ckq_put(struct rq_queue *q, uint64_t item, int64_t dl)
{
    struct rq_ckq *k = &q->u.ck;
    /* relaxed: sequenced before the enqueue, whose release publishes the
     * count with the item, so no task_done can precede it. */
    atomic_fetch_add_explicit(&k->unfinished, 1, memory_order_relaxed);
    for (;;) {
        int e = 0;
        /* relaxed: close() follows every put (see ref_queue.h) */
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
static int ckq_get(struct rq_queue *q, uint64_t *item, int64_t dl)
{
    struct rq_ckq *k = &q->u.ck;
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
static int ckq_task_done(struct rq_queue *q) { return unf_task_done(&q->u.ck.unfinished); }
static int ckq_join(struct rq_queue *q, int64_t dl) { return unf_join(&q->u.ck.unfinished, dl); }
static uint64_t ckq_unfinished(struct rq_queue *q)
{
    return atomic_load_explicit(&q->u.ck.unfinished, memory_order_relaxed); /* a snapshot */
}
static int ckq_close(struct rq_queue *q)
{
    /* release: pairs with the acquire load in ckq_get */
    atomic_store_explicit(&q->u.ck.closed, 1, memory_order_release);
    return 0;
}
static int ckq_destroy(struct rq_queue *q)
{
    free(q->u.ck.buf);
    return 0;
}

/* liburcu wfcqueue (unbounded) */
#define WFQ_MEMORY_GUARD (1u << 20) /* unfinished items before a put yields (soak memory) */

struct wnode {
    struct cds_wfcq_node node;
    uint64_t item;
};

static int wfq_init(struct rq_queue *q, size_t cap)
{
    (void)cap;
    struct rq_wfq *w = &q->u.wf;
    cds_wfcq_init(&w->head, &w->tail);
    atomic_init(&w->unfinished, 0);
    atomic_init(&w->closed, 0);
    q->cap = 0;
    return 0;
}
static int wfq_put(struct rq_queue *q, uint64_t item, int64_t dl)
{
    (void)dl; /* never full */
    struct rq_wfq *w = &q->u.wf;
    /* relaxed: close() follows every put (see ref_queue.h) */
    if (atomic_load_explicit(&w->closed, memory_order_relaxed))
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
static int wfq_take(struct rq_wfq *w, uint64_t *item)
{
    struct cds_wfcq_node *qn = cds_wfcq_dequeue_blocking(&w->head, &w->tail);
    if (!qn)
        return 0;
    struct wnode *n = caa_container_of(qn, struct wnode, node);
    *item = n->item;
    free(n);
    return 1;
}
static int wfq_get(struct rq_queue *q, uint64_t *item, int64_t dl)
{
    struct rq_wfq *w = &q->u.wf;
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
static int wfq_task_done(struct rq_queue *q) { return unf_task_done(&q->u.wf.unfinished); }
static int wfq_join(struct rq_queue *q, int64_t dl) { return unf_join(&q->u.wf.unfinished, dl); }
static uint64_t wfq_unfinished(struct rq_queue *q)
{
    return atomic_load_explicit(&q->u.wf.unfinished, memory_order_relaxed); /* a snapshot */
}
static int wfq_close(struct rq_queue *q)
{
    /* release: pairs with the acquire load in wfq_get */
    atomic_store_explicit(&q->u.wf.closed, 1, memory_order_release);
    return 0;
}
static int wfq_destroy(struct rq_queue *q)
{
    struct rq_wfq *w = &q->u.wf;
    uint64_t item;
    while (wfq_take(w, &item))
        ;
    cds_wfcq_destroy(&w->head, &w->tail);
    return 0;
}

/* pthread mutex + conditions: Python's queue.Queue (plus shutdown) in C */
static int ptq_init(struct rq_queue *q, size_t cap)
{
    struct rq_ptq *p = &q->u.pt;
    memset(p, 0, sizeof *p);
    p->cap = q->cap = cap;
    p->buf = calloc(cap, sizeof *p->buf);
    if (!p->buf)
        return ENOMEM;
    int e = pthread_mutex_init(&p->m, NULL);
    if (!e)
        e = rq_cond_init_mono(&p->not_empty);
    if (!e)
        e = rq_cond_init_mono(&p->not_full);
    if (!e)
        e = rq_cond_init_mono(&p->all_done);
    return e;
}
static int ptq_put(struct rq_queue *q, uint64_t item, int64_t dl)
{
    struct rq_ptq *p = &q->u.pt;
    pthread_mutex_lock(&p->m);
    while (p->count == p->cap && !p->closed)
        if (rq_cond_wait_until(&p->not_full, &p->m, dl) == ETIMEDOUT && p->count == p->cap &&
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
static int ptq_get(struct rq_queue *q, uint64_t *item, int64_t dl)
{
    struct rq_ptq *p = &q->u.pt;
    pthread_mutex_lock(&p->m);
    while (p->count == 0 && !p->closed)
        if (rq_cond_wait_until(&p->not_empty, &p->m, dl) == ETIMEDOUT && p->count == 0 &&
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
static int ptq_task_done(struct rq_queue *q)
{
    struct rq_ptq *p = &q->u.pt;
    int e = 0;
    pthread_mutex_lock(&p->m);
    if (p->unfinished == 0)
        e = EINVAL; /* Python: ValueError('task_done() called too many times') */
    else if (--p->unfinished == 0)
        pthread_cond_broadcast(&p->all_done);
    pthread_mutex_unlock(&p->m);
    return e;
}
static int ptq_join(struct rq_queue *q, int64_t dl)
{
    struct rq_ptq *p = &q->u.pt;
    int e = 0;
    pthread_mutex_lock(&p->m);
    while (p->unfinished)
        if (rq_cond_wait_until(&p->all_done, &p->m, dl) == ETIMEDOUT && p->unfinished) {
            e = ETIMEDOUT;
            break;
        }
    pthread_mutex_unlock(&p->m);
    return e;
}
static uint64_t ptq_unfinished(struct rq_queue *q)
{
    struct rq_ptq *p = &q->u.pt;
    pthread_mutex_lock(&p->m);
    uint64_t u = p->unfinished;
    pthread_mutex_unlock(&p->m);
    return u;
}
static int ptq_close(struct rq_queue *q)
{
    struct rq_ptq *p = &q->u.pt;
    pthread_mutex_lock(&p->m);
    p->closed = 1;
    pthread_cond_broadcast(&p->not_empty);
    pthread_cond_broadcast(&p->not_full);
    pthread_mutex_unlock(&p->m);
    return 0;
}
static int ptq_destroy(struct rq_queue *q)
{
    struct rq_ptq *p = &q->u.pt;
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

const struct rq_impl rq_ksync = {"ksync", 1, 0, 1, ksq_init, ksq_put, ksq_get,
                                 ksq_task_done, ksq_join, ksq_unfinished, ksq_close,
                                 ksq_destroy};
const struct rq_impl rq_ck_ring = {"ck_ring", 0, 1, 0, ckq_init, ckq_put, ckq_get,
                                   ckq_task_done, ckq_join, ckq_unfinished, ckq_close,
                                   ckq_destroy};
const struct rq_impl rq_wfcqueue = {"urcu_wfcqueue", 0, 1, 0, wfq_init, wfq_put, wfq_get,
                                    wfq_task_done, wfq_join, wfq_unfinished, wfq_close,
                                    wfq_destroy};
const struct rq_impl rq_pthread = {"pthread_cond", 0, 0, 1, ptq_init, ptq_put, ptq_get,
                                   ptq_task_done, ptq_join, ptq_unfinished, ptq_close,
                                   ptq_destroy};

int rq_ks_describe(const ks_queue_t *q, char *buf, size_t len)
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


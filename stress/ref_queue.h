/* stress/ref_queue.h - the queues compared by S10, S11 (s_queue.c) and S14
 * (s_monitoring.c), behind one table of operations, and the small pthread
 * and ck_ring helpers the references share with S12's pools (s_pool.c).
 *
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
 * may be called only after every producer is done and join() returned, as
 * the scenarios do: the references' flag is not safe against a put racing
 * with it.
 *
 * Items are uint64_t (ks_queue carries them as pointer-sized values).  The
 * queue is stored by value (struct rq_queue) in the scenario's context, so
 * its layout is here; only ref_queue.c touches the members of the union.
 */
#ifndef KS_STRESS_REF_QUEUE_H
#define KS_STRESS_REF_QUEUE_H

#include <ksync/arch.h> /* KS_CACHELINE: keep per-thread and shared data on separate lines */
#include <ksync/queue.h>

#include <ck_ring.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <urcu/wfcqueue.h>

/* ---- helpers the references share (S10-S14) -------------------------------------------- */

/* An absolute CLOCK_MONOTONIC deadline in ns as a timespec. */
struct timespec rq_timespec(int64_t ns);
/* pthread_cond_init on CLOCK_MONOTONIC (the clock of ks_now and the deadlines). */
int rq_cond_init_mono(pthread_cond_t *c);
/* Wait on c until signalled or the deadline (KS_FOREVER: no deadline). */
int rq_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, int64_t deadline);
/* The smallest ck_ring size (a power of two) that holds n items (size - 1). */
unsigned rq_ck_ring_size(size_t n);

/* ---- the queues compared ---------------------------------------------------------------- */

struct rq_ckq {
    ck_ring_t ring; /* CK pads its counters itself */
    ck_ring_buffer_t *buf;
    _Alignas(KS_CACHELINE) _Atomic uint64_t unfinished;
    _Alignas(KS_CACHELINE) atomic_int closed;
};

struct rq_wfq {
    struct cds_wfcq_head head;
    _Alignas(KS_CACHELINE) struct cds_wfcq_tail tail;
    _Alignas(KS_CACHELINE) _Atomic uint64_t unfinished;
    _Alignas(KS_CACHELINE) atomic_int closed;
};

struct rq_ptq {
    pthread_mutex_t m;
    pthread_cond_t not_empty, not_full, all_done; /* CLOCK_MONOTONIC */
    uint64_t *buf;                                /* under m, as the rest */
    size_t cap, head, count;
    uint64_t unfinished;
    int closed;
};

struct rq_queue {
    union {
        ks_queue_t *ks;
        struct rq_ckq ck;
        struct rq_wfq wf;
        struct rq_ptq pt;
    } u;
    size_t cap; /* items it holds; 0: unbounded */
};

struct rq_impl {
    const char *name;
    int ksync; /* 1: ks_queue, 0: a reference */
    int spins; /* polls: iteration runs capped at ST_SPIN_CAP_S */
    /* A getter sleeps until a put wakes it, and a put waits only for a full
     * queue: S10's lost-wake-up check applies (not to the polling ones,
     * whose producers may also wait for each other). */
    int wakes;
    int (*init)(struct rq_queue *q, size_t cap);
    /* 0, ETIMEDOUT (deadline: absolute CLOCK_MONOTONIC ns or KS_FOREVER), EPIPE.
     * ksync: deadline KS_FOREVER is the inline put/get, 0 the inline
     * tryput/tryget (EAGAIN reported as ETIMEDOUT), any other timedput/timedget. */
    int (*put)(struct rq_queue *q, uint64_t item, int64_t deadline);
    int (*get)(struct rq_queue *q, uint64_t *item, int64_t deadline);
    int (*task_done)(struct rq_queue *q); /* 0, EINVAL: more than put */
    int (*join)(struct rq_queue *q, int64_t deadline);
    uint64_t (*unfinished)(struct rq_queue *q);
    int (*close)(struct rq_queue *q);
    int (*destroy)(struct rq_queue *q);
};

extern const struct rq_impl rq_ksync, rq_ck_ring, rq_wfcqueue, rq_pthread;

/* A ks_queue's state words, for a stall dump (q NULL: "no queue"); returns
 * what snprintf returns. */
int rq_ks_describe(const ks_queue_t *q, char *buf, size_t len);

#endif

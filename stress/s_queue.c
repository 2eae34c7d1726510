/* stress/s_queue.c - the queue family: S10 (bounded queue with task_done and
 * join) and S11 (a consumer that forgets task_done).  Seed 000: "Queue
 * thread-safe", antipattern "Forget de task_done()".  S14, the monitoring
 * pipeline over two queues, is in s_monitoring.c; the queues compared (ksync,
 * ck_ring, urcu_wfcqueue, pthread_cond) are in ref_queue.c, described in
 * ref_queue.h.
 */
#include "harness.h"
#include "ref_queue.h"

#include <ksync/queue.h>
#include <ksync/time.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- helpers ------------------------------------------------------------------------ */

/* A coordinator's pause between looks: a sleep of 1..max_us microseconds. */
static void nap(struct st_thread *t, unsigned max_us)
{
    struct timespec ts = {0, 1000L * (long)(1 + st_below(t, max_us))};
    nanosleep(&ts, NULL);
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

#define SQ_LONG_NS 2000000000LL          /* the seed's get(timeout=2) */
#define SQ_CLOSE_SLACK_NS 500000000LL    /* a get blocked at close() must not wait this long */
#define S11_JOIN_NS 20000000LL           /* the final timed join */
#define S11_HANG_NS 1000000000LL         /* a timed join this late "hangs" */

struct sq {
    struct rq_queue q; /* first: the stall dump reads q.u.ks */
    const struct rq_impl *im;
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
    size_t at = st_note_prefix(&c->err, buf, len, 90);
    at += (size_t)rq_ks_describe(c->q.u.ks, buf + at, len - at);
    at = at < len ? at : len - 1;
    snprintf(buf + at, len - at, "; %u producers left, close %s", /* relaxed: a snapshot */
             atomic_load_explicit(&c->producers_left, memory_order_relaxed),
             atomic_load_explicit(&c->close_ns, memory_order_relaxed) ? "done" : "not yet");
}

static void sq_producer(struct st_thread *t, struct sq *c, unsigned p)
{
    uint64_t seq = 0, n = 0;
    while (st_next(t)) {
        uint64_t item = (uint64_t)p << ST_SEQ_BITS | seq++;
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
        t->stat[SQ_SUM] += st_mix64(item);
        /* release: pairs with the coordinator's acquire sum (count_sum) */
        atomic_store_explicit(&c->puts[p].n, ++n, memory_order_release);
        st_pause(t, 200); /* the seed's time.sleep between items */
    }
    /* release: a coordinator that reads 0 (acquire) sees every put count */
    atomic_fetch_sub_explicit(&c->producers_left, 1, memory_order_release);
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
        st_check_item(&c->err, item, c->np, next, c->seen, c->iters);
        t->stat[SQ_SUM] += st_mix64(item);
        st_count_op(t); /* one get; consumers follow the producers, not the stop flag */
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

static struct sq *sq_new(const struct rq_impl *im, unsigned np, unsigned nc, uint64_t iters,
                         int forget, int timed)
{
    struct sq *c = st_alloc(sizeof *c);
    c->im = im;
    c->ks = im->ksync;
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
    if (!timed && (uint64_t)np * iters <= ST_SEEN_MAX && iters < (1ull << ST_SEQ_BITS)) {
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
        rq_ks_describe(c->q.u.ks, buf + at, len - (size_t)at);
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

/* The run, then (ksync) the post-close checks: their failure unless one is noted. */
static void sq_run(const struct st_opts *o, struct sq *c, const struct st_run *run,
                   struct st_result *r)
{
    st_run(o, run, r);
    const char *after = c->ks ? sq_ks_after(c->q.u.ks) : NULL;
    if (after && !c->after_close)
        c->after_close = after;
}

static void s10_one(const struct st_opts *o, const struct rq_impl *im, unsigned np, size_t cap,
                    uint64_t iters)
{
    struct sq *c = sq_new(im, np, np, iters, 0, o->seconds > 0);
    struct st_run run = {.scen = "S10", .impl = im->name, .kind = im->ksync ? ST_KSYNC : ST_REF,
                         .threads = 2 * np + 1, .iters = iters,
                         .cap_s = im->spins ? ST_SPIN_CAP_S : 0, .body = s10_body,
                         .ctx = c, .dump = c->ks ? sq_dump : NULL};
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
    sq_run(o, c, &run, &r);
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
    static const struct rq_impl *const impls[] = {&rq_ksync, &rq_ck_ring, &rq_wfcqueue,
                                                  &rq_pthread};
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        if (o->threads && k == 0)
            continue;
        unsigned np = st_threads(o, cfg[k].producers);
        uint64_t iters = st_iters(o, np <= 4 ? cfg[0].iters : cfg[k].iters);
        for (size_t i = 0; i < sizeof impls / sizeof impls[0]; i++)
            if (st_selected(o, impls[i]->ksync ? ST_KSYNC : ST_REF))
                s10_one(o, impls[i], np, cfg[k].cap, iters);
    }
}

static void s11_one(const struct st_opts *o, const struct rq_impl *im, unsigned np, uint64_t iters)
{
    const size_t cap = 5;
    struct sq *c = sq_new(im, np, np, iters, 1, o->seconds > 0);
    struct st_run run = {.scen = "S11", .impl = im->name, .kind = im->ksync ? ST_KSYNC : ST_REF,
                         .threads = 2 * np + 1, .iters = iters, .body = s11_body,
                         .ctx = c, .dump = c->ks ? sq_dump : NULL};
    int e = im->init(&c->q, cap);
    if (e) {
        st_row(&run, NULL, ST_FAIL, "init returned %d", e);
        sq_free(c);
        return;
    }
    struct st_result r;
    sq_run(o, c, &run, &r);
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

/* Defaults: the seed's 2+2, and 16+16 (oversubscribed); threads: producers.
 * --threads N: 5000 items per producer up to 4, else 500. */
static const struct st_config s11_cfg[] = {{2, 5000, 0}, {16, 500, 0}};

static void s11_config(const struct st_opts *o, const struct st_config *cfg, unsigned np)
{
    (void)cfg;
    static const struct rq_impl *const impls[] = {&rq_ksync, &rq_pthread};
    uint64_t iters = st_iters(o, np <= 4 ? s11_cfg[0].iters : s11_cfg[1].iters);
    for (size_t i = 0; i < sizeof impls / sizeof impls[0]; i++)
        if (st_selected(o, impls[i]->ksync ? ST_KSYNC : ST_REF))
            s11_one(o, impls[i], np, iters);
}

static void s11_run(const struct st_opts *o)
{
    ST_CONFIGS(o, s11_cfg, s11_config);
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
    {0, 0, 0, 0, 0, 0},
};

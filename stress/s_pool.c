/* stress/s_pool.c - the pool family: S12 (connection pool borrowed with a
 * deadline).  Seed 000: "Exercice 1 : Pool de connexions thread-safe".
 */
#include "harness.h"
#include "ref_queue.h" /* rq_ck_ring_size, rq_cond_init_mono, rq_cond_wait_until */

#include <ksync/pool.h>
#include <ksync/time.h>

#include <ck_ring.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    unsigned size = rq_ck_ring_size(n);
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
    return e ? e : rq_cond_init_mono(&q->c);
}
static int ptp_borrow(union anypool *p, int64_t dl, void **res)
{
    struct ptpool *q = &p->pt;
    pthread_mutex_lock(&q->m);
    while (q->count == 0)
        if (rq_cond_wait_until(&q->c, &q->m, dl) == ETIMEDOUT && q->count == 0) {
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
    size_t at = st_note_prefix(&c->err, buf, len, 90);
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

/* Defaults: 16 clients, and 64 (oversubscribed).  --threads N: 5000
 * requests per client up to 16 clients, else 1000. */
static const struct st_config s12_cfg[] = {{16, 5000, 0}, {64, 1000, 0}};

static void s12_config(const struct st_opts *o, const struct st_config *cfg, unsigned n)
{
    (void)cfg;
    uint64_t iters = st_iters(o, n <= 16 ? s12_cfg[0].iters : s12_cfg[1].iters);
    for (size_t i = 0; i < sizeof pools / sizeof pools[0]; i++)
        if (st_selected(o, pools[i].kind))
            s12_one(o, &pools[i], n, iters);
}

static void s12_run(const struct st_opts *o)
{
    ST_CONFIGS(o, s12_cfg, s12_config);
}

const struct st_scenario st_family_pool[] = {
    {"S12", "connection-pool", "more clients than connections borrow with a deadline and return: "
                               "never two holders, a timed-out borrow takes and returns nothing, "
                               "all connections back",
     "ksync pool | ck_ring MPMC pool, pthread mutex + cond pool",
     "3 connections, 16 clients x 5000 requests and 64 x 1000", s12_run},
    {0, 0, 0, 0, 0, 0},
};

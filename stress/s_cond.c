/* stress/s_cond.c - the condition-variable family: S9 (producer/consumer
 * over a bounded buffer).  Seed: 000 "Condition pour coordination
 * complexe" (2 producers, 2 consumers, Buffer(taille_max=3)).
 *
 * --threads N runs N producers and N consumers (2N threads; the table's thr
 * column shows 2N).  Producers are threads 0..N-1, consumers N..2N-1.  Two
 * ways of using the condition variable, each with ksync (ks_cond +
 * ks_mutex) and glibc (pthread_cond + pthread_mutex):
 *   - the seed's: ONE condition for both "not full" and "not empty", and
 *     notify_all (broadcast) after every put and every get;
 *   - the textbook one: two conditions, not_full and not_empty, and a
 *     signal to the other side after each put/get.
 * One wait in 16 is a timed wait of a few microseconds (a timeout just
 * re-checks the predicate), so the timeout path races with signals too.
 *
 * Items are producer << 40 | sequence.  Checked:
 *   - under the mutex, after every put and get: 0 <= count <= capacity, and
 *     at most one thread is ever inside (an atomic occupancy count taken
 *     after lock and after every wait return, dropped before unlock and
 *     before every wait: a wait that returned without the mutex shows up);
 *   - every item consumed exactly once: consumed count and a sum of hashed
 *     items equal the produced ones; in iteration mode also a seen flag per
 *     item (a second sighting is a duplicate, a missing one a loss); and
 *     since the buffer is FIFO, each consumer sees each producer's sequence
 *     numbers strictly increasing.
 * Producers stop on the harness's budget/stop flag; consumers drain the
 * buffer and stop once every producer has finished and it is empty.
 */
#include "harness.h"

#include <ksync/cond.h>
#include <ksync/mutex.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define S9_CAP 3 /* the seed's Buffer(taille_max=3) */

/* ---- the mutex + condition variables compared -------------------------------------- */

enum { CV_ONE = 0, CV_NOT_FULL = 0, CV_NOT_EMPTY = 1, N_CV = 2 };

struct cv_impl {
    const char *name;
    enum st_kind kind;
    int two; /* two conditions + signal; else one condition + broadcast */
};

static const struct cv_impl cvs[] = {
    {"ksync", ST_KSYNC, 0},
    {"pthread_cond", ST_REF, 0},
    {"ksync 2cv+signal", ST_KSYNC, 1},
    {"pthread 2cv+signal", ST_REF, 1},
};
#define N_CVS (sizeof cvs / sizeof cvs[0])

struct s9 {
    /* first: the stall dump reads them */
    ks_mutex_t km;
    ks_cond_t kc[N_CV];
    pthread_mutex_t pm;
    pthread_cond_t pc[N_CV];
    const struct cv_impl *im;
    int ks;            /* im->kind == ST_KSYNC */
    unsigned producers;
    /* under the mutex */
    uint64_t buf[S9_CAP];
    unsigned head, count, producers_left;
    _Alignas(KS_CACHELINE) atomic_uint inside; /* threads holding the mutex: must be <= 1 */
    atomic_uchar *seen;                        /* [producer * iters + seq], iteration mode */
    uint64_t iters;
    struct st_note err;
};

static int s9_init(struct s9 *c)
{
    if (c->ks) {
        int e = ks_mutex_init(&c->km, KS_PRIVATE);
        for (int i = 0; i < N_CV && !e; i++)
            e = ks_cond_init(&c->kc[i], KS_PRIVATE);
        return e;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int e = pthread_mutex_init(&c->pm, NULL);
    for (int i = 0; i < N_CV && !e; i++)
        e = pthread_cond_init(&c->pc[i], &ca);
    pthread_condattr_destroy(&ca);
    return e;
}

static int s9_destroy(struct s9 *c)
{
    int e = 0, r;
    for (int i = 0; i < N_CV; i++)
        if ((r = c->ks ? ks_cond_destroy(&c->kc[i]) : pthread_cond_destroy(&c->pc[i])) && !e)
            e = r;
    if ((r = c->ks ? ks_mutex_destroy(&c->km) : pthread_mutex_destroy(&c->pm)) && !e)
        e = r;
    return e;
}

static void s9_enter(struct s9 *c)
{
    /* relaxed: a detector; the mutex orders the data. */
    unsigned in = atomic_fetch_add_explicit(&c->inside, 1, memory_order_relaxed);
    if (in)
        st_note(&c->err, "%u other threads inside the critical section", in);
}

static void s9_leave(struct s9 *c)
{
    atomic_fetch_sub_explicit(&c->inside, 1, memory_order_relaxed);
}

static void s9_lock(struct s9 *c)
{
    int e = c->ks ? ks_mutex_lock(&c->km) : pthread_mutex_lock(&c->pm);
    if (e)
        st_note(&c->err, "lock returned %d", e);
    s9_enter(c);
}

static void s9_unlock(struct s9 *c)
{
    s9_leave(c);
    int e = c->ks ? ks_mutex_unlock(&c->km) : pthread_mutex_unlock(&c->pm);
    if (e)
        st_note(&c->err, "unlock returned %d", e);
}

enum { S9_SUM, S9_WAITS, S9_TIMED, S9_TIMEOUTS };

/* Wait on condition i with the mutex held; now and then a timed wait. */
static void s9_wait(struct st_thread *t, struct s9 *c, int i)
{
    int timed = st_below(t, 16) == 0, e;
    t->stat[S9_WAITS]++;
    s9_leave(c);
    if (!timed) {
        e = c->ks ? ks_cond_wait(&c->kc[i], &c->km) : pthread_cond_wait(&c->pc[i], &c->pm);
    } else {
        int64_t dl = ks_now() + 1000 + st_below(t, 20000);
        t->stat[S9_TIMED]++;
        if (c->ks) {
            e = ks_cond_timedwait(&c->kc[i], &c->km, dl);
        } else {
            struct timespec ts = {(time_t)(dl / KS_NSEC_PER_SEC), (long)(dl % KS_NSEC_PER_SEC)};
            e = pthread_cond_timedwait(&c->pc[i], &c->pm, &ts);
        }
        if (e == ETIMEDOUT) {
            t->stat[S9_TIMEOUTS]++;
            e = 0;
        }
    }
    s9_enter(c);
    if (e)
        st_note(&c->err, "%swait returned %d", timed ? "timed" : "", e);
}

static void s9_wake(struct s9 *c, int i, int all)
{
    int e;
    if (c->ks)
        e = all ? ks_cond_broadcast(&c->kc[i]) : ks_cond_signal(&c->kc[i]);
    else
        e = all ? pthread_cond_broadcast(&c->pc[i]) : pthread_cond_signal(&c->pc[i]);
    if (e)
        st_note(&c->err, "%s returned %d", all ? "broadcast" : "signal", e);
}

/* ---- S9: bounded buffer ------------------------------------------------------------- */

static void s9_dump(void *ctx, char *buf, size_t len)
{
    struct s9 *c = ctx;
    /* The first invariant failure, if any, usually explains the stall. */
    size_t at = st_note_prefix(&c->err, buf, len, 100);
    snprintf(buf + at, len - at,
             "mutex 0x%x; cond[0] seq %u waiters 0x%x sleepers %u; cond[1] seq %u waiters 0x%x "
             "sleepers %u; buffer %u/%d, %u producers left",
             __atomic_load_n(&c->km.state, __ATOMIC_RELAXED),
             __atomic_load_n(&c->kc[0].seq, __ATOMIC_RELAXED),
             __atomic_load_n(&c->kc[0].waiters, __ATOMIC_RELAXED),
             __atomic_load_n(&c->kc[0].sleepers, __ATOMIC_RELAXED),
             __atomic_load_n(&c->kc[1].seq, __ATOMIC_RELAXED),
             __atomic_load_n(&c->kc[1].waiters, __ATOMIC_RELAXED),
             __atomic_load_n(&c->kc[1].sleepers, __ATOMIC_RELAXED), c->count, S9_CAP,
             c->producers_left);
}

static void s9_producer(struct st_thread *t, struct s9 *c)
{
    const int two = c->im->two;
    uint64_t seq = 0;
    while (st_next(t)) {
        uint64_t item = (uint64_t)t->id << ST_SEQ_BITS | seq++;
        s9_lock(c);
        while (c->count >= S9_CAP)
            s9_wait(t, c, two ? CV_NOT_FULL : CV_ONE);
        c->buf[(c->head + c->count) % S9_CAP] = item;
        c->count++;
        if (c->count > S9_CAP)
            st_note(&c->err, "buffer holds %u items, capacity %d", c->count, S9_CAP);
        if (two)
            s9_wake(c, CV_NOT_EMPTY, 0);
        else
            s9_wake(c, CV_ONE, 1); /* the seed's notify_all() */
        s9_unlock(c);
        t->stat[S9_SUM] += st_mix64(item);
        st_pause(t, 200); /* the seed's time.sleep between items */
    }
    s9_lock(c);
    c->producers_left--;
    for (int i = 0; i < (two ? N_CV : 1); i++)
        s9_wake(c, i, 1); /* consumers waiting on an empty buffer must see the end */
    s9_unlock(c);
}

static void s9_consumer(struct st_thread *t, struct s9 *c)
{
    const int two = c->im->two;
    const unsigned np = c->producers;
    uint64_t *next = calloc(np, sizeof *next); /* per producer: lowest seq still allowed */
    if (!next) {
        st_note(&c->err, "out of memory");
        return;
    }
    for (;;) {
        s9_lock(c);
        while (c->count == 0 && c->producers_left)
            s9_wait(t, c, two ? CV_NOT_EMPTY : CV_ONE);
        if (c->count == 0) { /* every producer is done and the buffer is empty */
            s9_unlock(c);
            break;
        }
        uint64_t item = c->buf[c->head];
        c->head = (c->head + 1) % S9_CAP;
        c->count--;
        if (c->count > S9_CAP) /* wrapped below 0 */
            st_note(&c->err, "buffer count went below 0");
        if (two)
            s9_wake(c, CV_NOT_FULL, 0);
        else
            s9_wake(c, CV_ONE, 1);
        s9_unlock(c);

        st_check_item(&c->err, item, np, next, c->seen, c->iters);
        t->stat[S9_SUM] += st_mix64(item);
        st_count_op(t); /* one get; consumers follow the producers, not the stop flag */
        st_pause(t, 150); /* the seed's "traite" */
    }
    free(next);
}

static void s9_body(struct st_thread *t)
{
    struct s9 *c = t->ctx;
    if (t->id < c->producers)
        s9_producer(t, c);
    else
        s9_consumer(t, c);
}

static void s9_one(const struct st_opts *o, const struct cv_impl *im, unsigned np, uint64_t iters)
{
    struct s9 *c = st_alloc(sizeof *c);
    c->im = im;
    c->ks = im->kind == ST_KSYNC;
    c->producers = c->producers_left = np;
    atomic_init(&c->inside, 0);
    st_note_init(&c->err);
    const int timed = o->seconds > 0;
    if (!timed && (uint64_t)np * iters <= ST_SEEN_MAX && iters < (1ull << ST_SEQ_BITS)) {
        c->iters = iters;
        c->seen = calloc(np * iters, 1);
    }
    struct st_run run = {.scen = "S9", .impl = im->name, .kind = im->kind, .threads = 2 * np,
                         .iters = iters, .body = s9_body, .ctx = c,
                         .dump = c->ks ? s9_dump : NULL};
    int e = s9_init(c);
    if (e) {
        st_row(&run, NULL, ST_FAIL, "init returned %d", e);
        free(c->seen);
        free(c);
        return;
    }
    struct st_result r;
    st_run(o, &run, &r);
    int de = s9_destroy(c);
    uint64_t made = 0, got = 0, sum_made = 0, sum_got = 0, waits = st_stat_sum(&r, S9_WAITS),
             tw = st_stat_sum(&r, S9_TIMED), tmo = st_stat_sum(&r, S9_TIMEOUTS);
    for (unsigned i = 0; i < 2 * np; i++) {
        if (i < np)
            made += r.t[i].done, sum_made += r.t[i].stat[S9_SUM];
        else
            got += r.t[i].done, sum_got += r.t[i].stat[S9_SUM];
    }
    /* Seen flags: every produced item exactly once (duplicates were noted
     * by the consumers; here the losses). */
    uint64_t missing = 0;
    if (c->seen)
        for (unsigned p = 0; p < np; p++)
            for (uint64_t s = 0; s < r.t[p].done; s++)
                missing += !atomic_load_explicit(&c->seen[p * iters + s], memory_order_relaxed);
    unsigned errs = st_note_count(&c->err);
    char rate[32];
    st_human(r.secs > 0 ? (double)got / r.secs : 0, rate, sizeof rate);
    if (errs || made != got || sum_made != sum_got || missing || c->count || c->inside || de)
        st_row(&run, &r, ST_FAIL,
               "%u+%u: %llu items produced, %llu consumed, checksums %s, %llu never seen, %u "
               "left in the buffer; destroy %d; %u errors: %s",
               np, np, (unsigned long long)made, (unsigned long long)got,
               sum_made == sum_got ? "equal" : "DIFFER", (unsigned long long)missing, c->count,
               de, errs, errs ? c->err.msg : "-");
    else
        st_row(&run, &r, ST_PASS,
               "%u+%u, cap %d, %s: %llu items (%s items/s) each consumed once (%s), buffer in "
               "[0, %d]; %llu waits (%llu timed, %llu timed out)",
               np, np, S9_CAP, im->two ? "2 conds + signal" : "1 cond + broadcast",
               (unsigned long long)got, rate,
               c->seen ? "seen flags, checksum, FIFO order" : "count, checksum, FIFO order",
               S9_CAP, (unsigned long long)waits, (unsigned long long)tw,
               (unsigned long long)tmo);
    st_result_free(&r);
    free(c->seen);
    free(c);
}

static void s9_config(const struct st_opts *o, const struct st_config *cfg, unsigned np)
{
    for (size_t i = 0; i < N_CVS; i++)
        if (st_selected(o, cvs[i].kind))
            s9_one(o, &cvs[i], np, st_iters(o, cfg->iters));
}

static void s9_run(const struct st_opts *o)
{
    /* Defaults: the seed's 2+2, and 16+16 (oversubscribed); threads: producers. */
    static const struct st_config cfg[] = {{2, 20000, 0}, {16, 2000, 0}};
    ST_CONFIGS(o, cfg, s9_config);
}

const struct st_scenario st_family_cond[] = {
    {"S9", "bounded-buffer", "producers and consumers over a bounded buffer (capacity 3) with a "
                             "condition variable: never above capacity or below 0, every item "
                             "consumed exactly once",
     "ksync cond + mutex | pthread_cond + pthread_mutex (1 cond + broadcast, 2 conds + signal)",
     "2+2 x 20000 items per producer and 16+16 x 2000 (--threads N: N producers + N consumers)",
     s9_run},
    {0, 0, 0, 0, 0, 0},
};

/* stress/s_event.c - the event family: S8 (a coordinator releases workers
 * with a start event; a second event signals the end).  Seed: 000 "Event
 * pour signalisation".
 *
 * The seed runs one round: three workers wait on event_debut, a coordinator
 * prepares, sets it, and later sets event_fin.  Here the same exchange runs
 * for many rounds so that it both measures and races.  Thread 0 is the
 * coordinator, threads 1..W the workers; three manual-reset events:
 *
 *   start  coordinator -> workers  "round r begins"
 *   end    coordinator -> workers  "round r is over, start is clear again"
 *   ack    last worker -> coordinator  "every worker passed start" (then: "end")
 *
 * Round r:
 *   C1 coordinator: prepares (random pause); start is clear, so a timed wait
 *      on it must say "not set" (a deadline in the past every round, a real
 *      short timeout now and then, which must not return early); then
 *      set_round = r, set(start), set_done = r.
 *   W1 workers: wait(start) (sometimes as a loop of short timed waits); a
 *      worker that passes must see set_round == r: nobody passes before
 *      set().  A timed wait begun after set_done == r was visible must not
 *      time out.  Work; the last of the W to pass sets ack.
 *   C2 coordinator: wait(ack), all W passed; clear(ack), clear(start),
 *      end_round = r, set(end), end_done = r.
 *   W2 workers: wait(end), with the same checks against end_round; the last
 *      to pass sets ack.
 *   C3 coordinator: wait(ack); clear(ack), clear(end).
 * Each event is set and cleared only after everyone that must see it has
 * passed, so a worker can never meet a stale "set" from an earlier round.
 * To stop, the coordinator sets quit before set(start); the workers see it
 * after the wait.
 *
 * References: Concurrency Kit's event count ck_ec32 (an event is the
 * counter's parity: odd = set; a waiter waits for the counter to move from
 * the even value it read, so a set-then-clear pulse is not lost either), and
 * glibc's pthread cond + flag + generation.  ck_ec needs OS callbacks
 * (struct ck_ec_ops): gettime is CLOCK_MONOTONIC and wait32 a
 * FUTEX_WAIT_BITSET with an absolute deadline on that same clock.  ck_ec's
 * exponential backoff sleeps whole backoff steps (2 ms, 16 ms, ...) without
 * looking at the caller's deadline, so a short timed wait would overshoot by
 * milliseconds; a wait predicate clamps each step to the deadline (the
 * header allows the predicate to move the step's deadline earlier).
 * ck_ec runs in multiple-producer mode: ack is set by different workers, and
 * the single-producer mode exists on x86 only (docs/pitfalls.md item 31).
 */
#include "harness.h"

#include <ksync/event.h>

#include "ck_ec_os.h"
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- the events compared ---------------------------------------------------------- */

struct pt_event {
    pthread_mutex_t m;
    pthread_cond_t c; /* CLOCK_MONOTONIC */
    int flag;         /* under m */
    unsigned gen;     /* under m: clear -> set transitions */
};

union anyevent {
    ks_event_t ks;
    struct ck_ec32 ec;
    struct pt_event pt;
};

struct event_impl {
    const char *name;
    enum st_kind kind;
    int (*init)(union anyevent *e);
    int (*set)(union anyevent *e);
    int (*clear)(union anyevent *e);
    /* 0 once set (or set since the call began), ETIMEDOUT at the deadline
     * (absolute CLOCK_MONOTONIC ns, KS_FOREVER for none). */
    int (*timedwait)(union anyevent *e, int64_t deadline);
    int (*destroy)(union anyevent *e);
};

static struct timespec to_ts(int64_t ns)
{
    return (struct timespec){(time_t)(ns / KS_NSEC_PER_SEC), (long)(ns % KS_NSEC_PER_SEC)};
}

/* ksync */
static int ks_einit(union anyevent *e) { return ks_event_init(&e->ks, KS_PRIVATE); }
static int ks_eset(union anyevent *e) { return ks_event_set(&e->ks); }
static int ks_eclear(union anyevent *e) { return ks_event_clear(&e->ks); }
static int ks_ewait(union anyevent *e, int64_t dl)
{
    return dl == KS_FOREVER ? ks_event_wait(&e->ks) : ks_event_timedwait(&e->ks, dl);
}
static int ks_edestroy(union anyevent *e) { return ks_event_destroy(&e->ks); }

/* Concurrency Kit event count: OS callbacks in ck_ec_os.h */
static const struct ck_ec_mode ec_mode = {.ops = &ec_ops, .single_producer = false};

/* Clamp each backoff step to the caller's deadline (passed as data). */
static int ec_clamp(const struct ck_ec_wait_state *ws, struct timespec *step)
{
    const struct timespec *dl = ws->data;
    if (step->tv_sec > dl->tv_sec || (step->tv_sec == dl->tv_sec && step->tv_nsec > dl->tv_nsec))
        *step = *dl;
    return 0;
}

static int ec_einit(union anyevent *e)
{
    ck_ec32_init(&e->ec, 0);
    return 0;
}
/* set/clear read then increment: not atomic as a pair, which is sound here
 * because the protocol above never sets or clears one event from two
 * threads at once. */
static int ec_eset(union anyevent *e)
{
    if (!(ck_ec32_value(&e->ec) & 1))
        ck_ec32_inc(&e->ec, &ec_mode);
    return 0;
}
static int ec_eclear(union anyevent *e)
{
    if (ck_ec32_value(&e->ec) & 1)
        ck_ec32_inc(&e->ec, &ec_mode);
    return 0;
}
static int ec_ewait(union anyevent *e, int64_t dl)
{
    uint32_t v = ck_ec32_value(&e->ec); /* acquire (ck_ec_value is a read barrier) */
    if (v & 1)
        return 0;
    if (dl == KS_FOREVER)
        return ck_ec32_wait(&e->ec, &ec_mode, v, NULL) ? EINVAL : 0;
    /* A deadline with tv_sec 0 is ck_ec's "do not block". */
    struct timespec ts = to_ts(dl);
    return ck_ec32_wait_pred(&e->ec, &ec_mode, v, ec_clamp, &ts, &ts) ? ETIMEDOUT : 0;
}
static int no_destroy(union anyevent *e)
{
    (void)e;
    return 0;
}

/* pthread cond + flag (+ generation, so that a waiter also returns after a
 * set-then-clear, as ks_event and Python's Event do) */
static int pt_einit(union anyevent *e)
{
    struct pt_event *p = &e->pt;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int r = pthread_mutex_init(&p->m, NULL);
    if (!r)
        r = pthread_cond_init(&p->c, &ca);
    pthread_condattr_destroy(&ca);
    p->flag = 0;
    p->gen = 0;
    return r;
}
static int pt_eset(union anyevent *e)
{
    struct pt_event *p = &e->pt;
    pthread_mutex_lock(&p->m);
    if (!p->flag) {
        p->flag = 1;
        p->gen++;
        pthread_cond_broadcast(&p->c);
    }
    pthread_mutex_unlock(&p->m);
    return 0;
}
static int pt_eclear(union anyevent *e)
{
    struct pt_event *p = &e->pt;
    pthread_mutex_lock(&p->m);
    p->flag = 0;
    pthread_mutex_unlock(&p->m);
    return 0;
}
static int pt_ewait(union anyevent *e, int64_t dl)
{
    struct pt_event *p = &e->pt;
    struct timespec ts = to_ts(dl);
    int r = 0;
    pthread_mutex_lock(&p->m);
    unsigned g = p->gen;
    while (!p->flag && p->gen == g) {
        if (dl == KS_FOREVER) {
            pthread_cond_wait(&p->c, &p->m);
        } else if (pthread_cond_timedwait(&p->c, &p->m, &ts) == ETIMEDOUT) {
            r = (p->flag || p->gen != g) ? 0 : ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&p->m);
    return r;
}
static int pt_edestroy(union anyevent *e)
{
    int r = pthread_cond_destroy(&e->pt.c);
    int r2 = pthread_mutex_destroy(&e->pt.m);
    return r ? r : r2;
}

static const struct event_impl events[] = {
    {"ksync", ST_KSYNC, ks_einit, ks_eset, ks_eclear, ks_ewait, ks_edestroy},
    {"ck_ec32", ST_REF, ec_einit, ec_eset, ec_eclear, ec_ewait, no_destroy},
    {"pthread_cond+flag", ST_REF, pt_einit, pt_eset, pt_eclear, pt_ewait, pt_edestroy},
};
#define N_EVENTS (sizeof events / sizeof events[0])

/* ---- S8: start / end signalling -------------------------------------------------- */

enum { EV_START, EV_END, EV_ACK, N_EV };
static const char *const ev_name[N_EV] = {"start", "end", "ack"};

struct s8_event {
    _Alignas(KS_CACHELINE) union anyevent e;
    /* Round whose set() is about to happen / has returned (coordinator
     * writes; for ack unused). */
    _Atomic uint64_t set_round, set_done;
};

struct s8 {
    struct s8_event ev[N_EV]; /* first: the stall dump reads ev[k].e.ks */
    const struct event_impl *im;
    unsigned workers;
    _Alignas(KS_CACHELINE) atomic_uint passed; /* workers past start this round */
    _Alignas(KS_CACHELINE) atomic_uint left;   /* workers past end this round */
    _Alignas(KS_CACHELINE) atomic_int quit;
    struct st_note err;
};

/* per-thread counters */
enum { S8_TW_UNSET, S8_TW_WORKER, S8_TW_EXPIRED, S8_TW_LATE_US };

static void s8_dump(void *ctx, char *buf, size_t len)
{
    struct s8 *c = ctx;
    /* The first invariant failure, if any, usually explains the stall. */
    size_t at = st_note_prefix(&c->err, buf, len, 100);
    snprintf(buf + at, len - at,
             "event words start 0x%x end 0x%x ack 0x%x; start round %llu (set returned %llu), "
             "end round %llu, %u/%u passed start, %u/%u passed end",
             __atomic_load_n(&c->ev[EV_START].e.ks.word, __ATOMIC_RELAXED),
             __atomic_load_n(&c->ev[EV_END].e.ks.word, __ATOMIC_RELAXED),
             __atomic_load_n(&c->ev[EV_ACK].e.ks.word, __ATOMIC_RELAXED),
             (unsigned long long)atomic_load(&c->ev[EV_START].set_round),
             (unsigned long long)atomic_load(&c->ev[EV_START].set_done),
             (unsigned long long)atomic_load(&c->ev[EV_END].set_round), atomic_load(&c->passed),
             c->workers, atomic_load(&c->left), c->workers);
}

static void s8_call(struct s8 *c, int e, const char *what, int k)
{
    if (e)
        st_note(&c->err, "%s(%s) returned %d", what, ev_name[k], e);
}

/* Coordinator: set event k for round r, with the before/after marks. */
static void s8_set(struct s8 *c, int k, uint64_t r)
{
    struct s8_event *ev = &c->ev[k];
    /* relaxed: set() is a release operation, and the workers read this
     * only after a wait that acquired it. */
    atomic_store_explicit(&ev->set_round, r, memory_order_relaxed);
    s8_call(c, c->im->set(&ev->e), "set", k);
    /* release: pairs with the workers' acquire load before a timed wait
     * (seeing r there proves set() has returned). */
    atomic_store_explicit(&ev->set_done, r, memory_order_release);
}

/* Coordinator: a timed wait on event k, which nobody can set now, must say
 * "not set", and a real timeout must not end before its deadline. */
static void s8_unset_check(struct st_thread *t, struct s8 *c, int k)
{
    union anyevent *e = &c->ev[k].e;
    int r = c->im->timedwait(e, 0); /* long past: try once */
    t->stat[S8_TW_UNSET]++;
    if (r != ETIMEDOUT)
        st_note(&c->err, "timedwait(%s, past deadline) on the unset event returned %d, want "
                "ETIMEDOUT", ev_name[k], r);
    if (st_below(t, 16))
        return;
    int64_t dl = ks_now() + 5000 + st_below(t, 45000);
    r = c->im->timedwait(e, dl);
    int64_t now = ks_now();
    t->stat[S8_TW_UNSET]++;
    if (r != ETIMEDOUT)
        st_note(&c->err, "timedwait(%s, short timeout) on the unset event returned %d, want "
                "ETIMEDOUT", ev_name[k], r);
    else if (now < dl)
        st_note(&c->err, "timedwait(%s) returned ETIMEDOUT %lld ns before its deadline",
                ev_name[k], (long long)(dl - now));
    else if ((uint64_t)(now - dl) / 1000 > t->stat[S8_TW_LATE_US])
        t->stat[S8_TW_LATE_US] = (uint64_t)(now - dl) / 1000;
}

/* Coordinator: wait for the workers' ack, which must mean all W counted. */
static void s8_wait_ack(struct s8 *c, atomic_uint *count, const char *what, uint64_t r)
{
    s8_call(c, c->im->timedwait(&c->ev[EV_ACK].e, KS_FOREVER), "wait", EV_ACK);
    /* relaxed: the ack set() is ordered after the last increment. */
    unsigned n = atomic_load_explicit(count, memory_order_relaxed);
    if (n != c->workers)
        st_note(&c->err, "round %llu: ack passed with %u of %u workers %s",
                (unsigned long long)r, n, c->workers, what);
    s8_call(c, c->im->clear(&c->ev[EV_ACK].e), "clear", EV_ACK);
    atomic_store_explicit(count, 0, memory_order_relaxed); /* published by the next set() */
}

static void s8_coordinator(struct st_thread *t, struct s8 *c)
{
    for (uint64_t r = 1;; r++) {
        if (!st_next(t)) {
            /* relaxed: released by set(start), acquired by the workers' wait. */
            atomic_store_explicit(&c->quit, 1, memory_order_relaxed);
            s8_set(c, EV_START, r);
            return;
        }
        st_pause(t, 300); /* the seed's "Préparation..." */
        s8_unset_check(t, c, EV_START);
        s8_set(c, EV_START, r);
        s8_wait_ack(c, &c->passed, "past start", r);
        s8_call(c, c->im->clear(&c->ev[EV_START].e), "clear", EV_START);
        s8_unset_check(t, c, EV_END);
        s8_set(c, EV_END, r);
        s8_wait_ack(c, &c->left, "past end", r);
        s8_call(c, c->im->clear(&c->ev[EV_END].e), "clear", EV_END);
    }
}

/* Worker: wait for event k of round r, now and then as a loop of short
 * timed waits, and check it was not passed early. */
static void s8_worker_wait(struct st_thread *t, struct s8 *c, int k, uint64_t r)
{
    struct s8_event *ev = &c->ev[k];
    int e;
    if (st_below(t, 4)) {
        e = c->im->timedwait(&ev->e, KS_FOREVER);
    } else {
        for (;;) {
            /* acquire: pairs with the release store after set(). */
            uint64_t before = atomic_load_explicit(&ev->set_done, memory_order_acquire);
            t->stat[S8_TW_WORKER]++;
            e = c->im->timedwait(&ev->e, ks_now() + 1000 + st_below(t, 30000));
            if (e != ETIMEDOUT)
                break;
            t->stat[S8_TW_EXPIRED]++;
            if (before >= r) {
                st_note(&c->err, "round %llu: timedwait(%s) timed out although set() had "
                        "returned before it began", (unsigned long long)r, ev_name[k]);
                break;
            }
        }
    }
    if (e) {
        st_note(&c->err, "wait(%s) returned %d", ev_name[k], e);
        return;
    }
    /* relaxed: the wait acquired the set() that followed the store. */
    uint64_t sr = atomic_load_explicit(&ev->set_round, memory_order_relaxed);
    if (sr != r)
        st_note(&c->err, "round %llu: a worker passed %s while its last set() was for round "
                "%llu (passed before set)", (unsigned long long)r, ev_name[k],
                (unsigned long long)sr);
}

static void s8_arrive(struct s8 *c, atomic_uint *count)
{
    /* acq_rel: the last arriver's set(ack) must follow every increment. */
    if (atomic_fetch_add_explicit(count, 1, memory_order_acq_rel) + 1 == c->workers)
        s8_call(c, c->im->set(&c->ev[EV_ACK].e), "set", EV_ACK);
}

static void s8_worker(struct st_thread *t, struct s8 *c)
{
    for (uint64_t r = 1;; r++) {
        s8_worker_wait(t, c, EV_START, r);
        if (atomic_load_explicit(&c->quit, memory_order_relaxed))
            return;
        st_count_op(t); /* the workers follow the coordinator, not the stop flag */
        st_pause(t, 400); /* the seed's travail: time.sleep(duree_travail) */
        s8_arrive(c, &c->passed);
        s8_worker_wait(t, c, EV_END, r);
        s8_arrive(c, &c->left);
    }
}

static void s8_body(struct st_thread *t)
{
    if (t->id == 0)
        s8_coordinator(t, t->ctx);
    else
        s8_worker(t, t->ctx);
}

static void s8_one(const struct st_opts *o, const struct event_impl *im, unsigned threads,
                   uint64_t iters)
{
    struct s8 *c = st_alloc(sizeof *c);
    c->im = im;
    c->workers = threads - 1;
    st_note_init(&c->err);
    struct st_run run = {.scen = "S8", .impl = im->name, .kind = im->kind, .threads = threads,
                         .iters = iters, .body = s8_body, .ctx = c,
                         .dump = im->kind == ST_KSYNC ? s8_dump : NULL};
    int e = 0;
    for (int k = 0; k < N_EV && !e; k++)
        e = im->init(&c->ev[k].e);
    if (e) {
        st_row(&run, NULL, ST_FAIL, "init returned %d", e);
        free(c);
        return;
    }
    struct st_result r;
    st_run(o, &run, &r);
    int de = 0;
    for (int k = 0; k < N_EV; k++)
        de = de ? de : im->destroy(&c->ev[k].e);
    uint64_t rounds = r.t[0].done, lo = UINT64_MAX, hi = 0;
    for (unsigned i = 1; i < threads; i++) {
        lo = r.t[i].done < lo ? r.t[i].done : lo;
        hi = r.t[i].done > hi ? r.t[i].done : hi;
    }
    unsigned errs = st_note_count(&c->err);
    uint64_t unset = st_stat_sum(&r, S8_TW_UNSET), tw = st_stat_sum(&r, S8_TW_WORKER),
             expired = st_stat_sum(&r, S8_TW_EXPIRED);
    char rate[32];
    st_human(r.secs > 0 ? (double)rounds / r.secs : 0, rate, sizeof rate);
    if (errs || lo != rounds || hi != rounds || de)
        st_row(&run, &r, ST_FAIL,
               "%llu rounds, workers passed %llu..%llu of them; destroy %d; %u errors: %s",
               (unsigned long long)rounds, (unsigned long long)lo, (unsigned long long)hi, de,
               errs, errs ? c->err.msg : "-");
    else
        st_row(&run, &r, ST_PASS,
               "%llu rounds (%s/s), 1 coordinator + %u workers: none passed start/end before "
               "set(), all passed every round; %llu timed waits on the unset event said not set "
               "(none early, <= %llu us late); %llu worker timed waits, %llu expired before set()",
               (unsigned long long)rounds, rate, c->workers, (unsigned long long)unset,
               (unsigned long long)r.t[0].stat[S8_TW_LATE_US], (unsigned long long)tw,
               (unsigned long long)expired);
    st_result_free(&r);
    free(c);
}

static void s8_config(const struct st_opts *o, const struct st_config *cfg, unsigned n)
{
    n = n < 2 ? 2 : n; /* a coordinator and at least one worker */
    for (size_t i = 0; i < N_EVENTS; i++)
        if (st_selected(o, events[i].kind))
            s8_one(o, &events[i], n, st_iters(o, cfg->iters));
}

static void s8_run(const struct st_opts *o)
{
    /* Defaults: the seed's 3 workers, and 15 (oversubscribed) */
    static const struct st_config cfg[] = {{4, 5000, 0}, {16, 800, 0}};
    ST_CONFIGS(o, cfg, s8_config);
}

const struct st_scenario st_family_event[] = {
    {"S8", "event-start", "workers wait for a start event a coordinator sets, a second event ends "
                          "the round: nobody passes before set(), all pass after, a timed wait "
                          "on an unset event times out",
     "ksync event | ck_ec32 event count, pthread cond+flag",
     "1 coordinator + 3 workers x 5000 rounds and 1 + 15 x 800 (--threads N: 1 + N-1)", s8_run},
    {0, 0, 0, 0, 0, 0},
};

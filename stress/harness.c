/* stress/harness.c - threads, timing, stall watchdog and the result table
 * shared by every scenario (see harness.h). */
#include "harness.h"

#include <ksync/time.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- options ------------------------------------------------------------ */

unsigned st_threads(const struct st_opts *o, unsigned dflt)
{
    return o->threads ? o->threads : dflt;
}

uint64_t st_iters(const struct st_opts *o, uint64_t dflt)
{
    return o->iters ? o->iters : dflt;
}

bool st_selected(const struct st_opts *o, enum st_kind kind)
{
    return (o->kinds & (unsigned)kind) != 0;
}

void st_configs(const struct st_opts *o, const struct st_config *cfg, size_t n,
                void (*run)(const struct st_opts *o, const struct st_config *cfg,
                            unsigned threads))
{
    for (size_t k = 0; k < n; k++) {
        if (o->threads && k)
            break;
        run(o, &cfg[k], st_threads(o, cfg[k].threads));
    }
}

/* ---- helpers ---------------------------------------------------------------- */

void st_pause(struct st_thread *t, unsigned spin_max)
{
    uint32_t r = st_below(t, 64);
    if (r == 0) {
        struct timespec ts = {0, 1000 + (long)st_below(t, 20000)};
        nanosleep(&ts, NULL);
    } else if (r < 4) {
        sched_yield();
    } else if (spin_max) {
        st_spin(t, st_below(t, spin_max + 1));
    }
}

void *st_alloc(size_t n)
{
    size_t sz = (n + KS_CACHELINE - 1) / KS_CACHELINE * KS_CACHELINE;
    void *p = aligned_alloc(KS_CACHELINE, sz ? sz : KS_CACHELINE);
    if (!p) {
        fprintf(stderr, "ksync-stress: out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return memset(p, 0, sz);
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void st_note_init(struct st_note *n)
{
    atomic_init(&n->count, 0);
    atomic_flag_clear(&n->taken);
    n->msg[0] = 0;
}

void st_note(struct st_note *n, const char *fmt, ...)
{
    /* relaxed: the count is read after the run's join. */
    atomic_fetch_add_explicit(&n->count, 1, memory_order_relaxed);
    if (atomic_flag_test_and_set(&n->taken))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n->msg, sizeof n->msg, fmt, ap);
    va_end(ap);
}

unsigned st_note_count(struct st_note *n)
{
    return atomic_load_explicit(&n->count, memory_order_relaxed);
}

void st_check_item(struct st_note *err, uint64_t item, unsigned np, uint64_t *next,
                   atomic_uchar *seen, uint64_t iters)
{
    uint64_t p = item >> ST_SEQ_BITS, seq = item & ((1ull << ST_SEQ_BITS) - 1);
    if (p >= np) {
        st_note(err, "item 0x%llx from no producer", (unsigned long long)item);
        return;
    }
    if (seq < next[p])
        st_note(err, "producer %llu's item %llu after its item %llu (FIFO order broken or a "
                "duplicate)", (unsigned long long)p, (unsigned long long)seq,
                (unsigned long long)next[p] - 1);
    next[p] = seq + 1;
    /* relaxed: the exchanges on one flag are totally ordered anyway. */
    if (seen && seq < iters &&
        atomic_exchange_explicit(&seen[p * iters + seq], 1, memory_order_relaxed))
        st_note(err, "producer %llu's item %llu consumed twice", (unsigned long long)p,
                (unsigned long long)seq);
}

size_t st_note_prefix(struct st_note *n, char *buf, size_t len, int max)
{
    unsigned errs = st_note_count(n);
    size_t at =
        errs ? (size_t)snprintf(buf, len, "%u errors, first: %.*s; ", errs, max, n->msg) : 0;
    return at < len ? at : len - 1;
}

const char *st_human(double v, char *buf, size_t len)
{
    static const char unit[] = " kMGT";
    int u = 0;
    while (v >= 1000.0 && u < 4) {
        v /= 1000.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%.*f%c", v < 10 ? 2 : v < 100 ? 1 : 0, v, unit[u]);
    return buf;
}

/* ---- runs -------------------------------------------------------------------- */

struct runner {
    const struct st_run *run;
    struct st_thread *t;
    pthread_barrier_t start;
    pthread_mutex_t mx; /* guards finished */
    pthread_cond_t cv;  /* signalled when a worker finishes */
    unsigned finished;
    atomic_int stop;
};

static unsigned run_counter; /* distinct PRNG streams for every run */

static void *worker(void *arg)
{
    struct st_thread *t = arg;
    struct runner *r = t->runner;
    pthread_barrier_wait(&r->start);
    t->t_start = ks_now();
    r->run->body(t);
    t->t_end = ks_now();
    pthread_mutex_lock(&r->mx);
    r->finished++;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mx);
    return NULL;
}

static uint64_t progress(const struct runner *r, unsigned n)
{
    uint64_t s = 0;
    for (unsigned i = 0; i < n; i++)
        s += atomic_load_explicit(&r->t[i].progress, memory_order_relaxed);
    return s;
}

static void progress_line(const struct st_run *run, double el, uint64_t ops, bool tty, bool last)
{
    char b1[32], b2[32];
    if (last) {
        if (tty)
            fprintf(stderr, "\r%-78s\r", "");
        return;
    }
    fprintf(stderr, "%s  ... %s %s %u thr: %.0f s, %s ops, %s/s%s", tty ? "\r" : "", run->scen,
            run->impl, run->threads, el, st_human((double)ops, b1, sizeof b1),
            st_human(el > 0 ? (double)ops / el : 0, b2, sizeof b2), tty ? "   " : "\n");
    fflush(stderr);
}

static void stalled(const struct st_run *run, struct runner *r, uint64_t ops, double el)
{
    char state[240] = "";
    if (run->dump)
        run->dump(run->ctx, state, sizeof state);
    struct st_result res = {.t = r->t, .nthreads = run->threads, .ops = ops, .secs = el};
    unsigned running = run->threads - r->finished;
    st_row(run, &res, ST_FAIL, "STALL: no progress for %.0f s, %u of %u threads still inside; %s",
           ST_STALL_S, running, run->threads, state[0] ? state : "(no state dump)");
    fprintf(stderr, "ksync-stress: stalled threads cannot be joined; exiting\n");
    fflush(NULL);
    _exit(3);
}

void st_run(const struct st_opts *o, const struct st_run *run, struct st_result *res)
{
    const unsigned n = run->threads;
    const bool timed = o->seconds > 0 && !run->fixed;
    const double limit_s = timed ? o->seconds : (run->cap_s > 0 ? run->cap_s : ST_CAP_S);
    struct runner r = {.run = run};
    memset(res, 0, sizeof *res);

    r.t = st_alloc(sizeof *r.t * n);
    atomic_init(&r.stop, 0);
    pthread_barrier_init(&r.start, NULL, n + 1);
    pthread_mutex_init(&r.mx, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r.cv, &ca);
    pthread_condattr_destroy(&ca);

    uint64_t mix = o->seed ^ ((uint64_t)++run_counter << 40);
    pthread_t *tid = calloc(n, sizeof *tid);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    unsigned created = 0;
    int err = tid ? 0 : ENOMEM;
    for (; !err && created < n; created++) {
        struct st_thread *t = &r.t[created];
        t->id = created;
        t->nthreads = n;
        t->ctx = run->ctx;
        t->runner = &r;
        t->rng = splitmix64(&mix) | 1;
        t->limit = timed ? UINT64_MAX : run->iters;
        t->stop = &r.stop;
        t->sink = t->rng;
        atomic_init(&t->progress, 0);
        err = pthread_create(&tid[created], &attr, worker, t);
        if (err)
            break;
    }
    pthread_attr_destroy(&attr);
    if (err) {
        /* The start barrier counts n+1 arrivals and can never fill now:
         * the threads already created wait on it for good. */
        st_row(run, NULL, ST_FAIL, "cannot create thread %u of %u: %s", created, n, strerror(err));
        fflush(NULL);
        _exit(4);
    }

    pthread_barrier_wait(&r.start);
    const int64_t t0 = ks_now();
    const bool tty = isatty(2);
    int64_t last_print = t0, last_change = t0;
    uint64_t last_ops = 0;
    bool printed = false, capped = false;

    pthread_mutex_lock(&r.mx);
    while (r.finished < n) {
        int64_t now = ks_now();
        double el = (double)(now - t0) / 1e9;
        if (!atomic_load_explicit(&r.stop, memory_order_relaxed) && el >= limit_s) {
            atomic_store_explicit(&r.stop, 1, memory_order_relaxed);
            capped = !timed;
        }
        uint64_t ops = progress(&r, n);
        if (ops != last_ops) {
            last_ops = ops;
            last_change = now;
        } else if ((double)(now - last_change) / 1e9 >= ST_STALL_S) {
            pthread_mutex_unlock(&r.mx);
            if (printed)
                progress_line(run, el, ops, tty, true);
            stalled(run, &r, ops, el);
        }
        if (el >= 3.0 && (!printed || now - last_print >= (tty ? 1000000000LL : 10000000000LL))) {
            progress_line(run, el, ops, tty, false);
            last_print = now;
            printed = true;
        }
        /* Sleep until a worker ends, the next tick, or the deadline. */
        int64_t wake = now + 250000000LL;
        int64_t dl = t0 + (int64_t)(limit_s * 1e9);
        if (!atomic_load_explicit(&r.stop, memory_order_relaxed) && dl < wake)
            wake = dl;
        struct timespec ts = {(time_t)(wake / 1000000000LL), (long)(wake % 1000000000LL)};
        pthread_cond_timedwait(&r.cv, &r.mx, &ts);
    }
    pthread_mutex_unlock(&r.mx);
    if (printed)
        progress_line(run, 0, 0, tty, true);

    for (unsigned i = 0; i < n; i++)
        pthread_join(tid[i], NULL);
    free(tid);
    pthread_barrier_destroy(&r.start);
    pthread_mutex_destroy(&r.mx);
    pthread_cond_destroy(&r.cv);

    int64_t first = INT64_MAX, lastend = 0;
    for (unsigned i = 0; i < n; i++) {
        res->ops += r.t[i].done;
        if (r.t[i].t_start < first)
            first = r.t[i].t_start;
        if (r.t[i].t_end > lastend)
            lastend = r.t[i].t_end;
    }
    res->t = r.t;
    res->nthreads = n;
    res->planned = timed ? 0 : (uint64_t)n * run->iters;
    res->secs = n ? (double)(lastend - first) / 1e9 : 0;
    res->capped = capped && res->ops < res->planned;
}

void st_result_free(struct st_result *res)
{
    free(res->t);
    res->t = NULL;
}

uint64_t st_stat_sum(const struct st_result *res, unsigned i)
{
    uint64_t s = 0;
    for (unsigned k = 0; k < res->nthreads; k++)
        s += res->t[k].stat[i];
    return s;
}

void st_spread(const struct st_result *res, uint64_t *lo, uint64_t *hi)
{
    *lo = res->nthreads ? UINT64_MAX : 0;
    *hi = 0;
    for (unsigned k = 0; k < res->nthreads; k++) {
        *lo = res->t[k].done < *lo ? res->t[k].done : *lo;
        *hi = res->t[k].done > *hi ? res->t[k].done : *hi;
    }
}

/* ---- result table -------------------------------------------------------------- */

static unsigned n_rows, n_fail;

void st_table_header(void)
{
    printf("%-4s %-20s %4s %11s %9s  %-6s %s\n", "scen", "impl", "thr", "ops", "ops/s", "result",
           "detail");
    fflush(stdout);
}

void st_row(const struct st_run *run, const struct st_result *res, enum st_verdict v,
            const char *fmt, ...)
{
    static const char *const vname[] = {"PASS", "FAIL", "REPORT", "SKIP"};
    char detail[512], rate[32] = "-", ops[32] = "-";
    int at = 0;
    if (res && res->capped)
        at = snprintf(detail, sizeof detail, "capped at %.0f s after %llu of %llu ops: ",
                      run->cap_s > 0 ? run->cap_s : ST_CAP_S, (unsigned long long)res->ops,
                      (unsigned long long)res->planned);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail + at, sizeof detail - (size_t)at, fmt, ap);
    va_end(ap);
    if (res && res->secs > 0)
        st_human((double)res->ops / res->secs, rate, sizeof rate);
    if (res)
        snprintf(ops, sizeof ops, "%llu", (unsigned long long)res->ops);
    printf("%-4s %-20s %4u %11s %9s  %-6s %s\n", run->scen, run->impl, run->threads, ops, rate,
           vname[v], detail);
    fflush(stdout);
    n_rows++;
    if (v == ST_FAIL)
        n_fail++;
}

unsigned st_failures(void)
{
    return n_fail;
}

unsigned st_rows(void)
{
    return n_rows;
}

/* stress/b_cache.c - section 10: concurrent key/value caches with TTL.
 *
 * Throughput.  Every cache of ref_cache.h (ks_cache striped, striped+rwlock,
 * lock-free and bounded; ck_ht + ck_epoch with one writer mutex; liburcu's
 * rculfhash; a pthread mutex around a chained table) runs three mixes at 2
 * and 16 threads, --seconds/CB_DIV per run, the implementations interleaved
 * inside each repetition:
 *   hot5     70% get / 30% put over 5 keys (all threads on the same entries)
 *   uni100k  70% get / 30% put, uniform over 100k keys
 *   zipf1M   95% get / 5% put, Zipf(0.99) over 1M keys
 * Keys are 8-byte binary, values 32 bytes.  Each cache is created and
 * pre-filled (every key once) before a mix's runs and destroyed after them.
 * Every put carries a TTL of CB_TTL_S seconds on CLOCK_MONOTONIC, so every
 * entry has a deadline and every hit reads the clock, alike for all.  The
 * operations come from per-thread traces precomputed from a seeded
 * generator (CB_TRACE entries, replayed), so drawing a key costs the same
 * small load everywhere.  The bounded cache gets a capacity of twice the
 * keys (at least 4096): it holds every key, so the figure is the cost of
 * its bookkeeping, not of misses.  Rate = operations / (start .. the last
 * thread's loop end); the per-thread register/unregister (ck_epoch record,
 * rcu_register_thread) is outside the loop.
 *
 * Integrity: a get that returns a value whose first 8 bytes are not its
 * key, or not 32 bytes long, or an unexpected error, stops the program.
 *
 * Hit ratio.  One thread replays one Zipf(0.99) trace over 1M keys (get; on
 * a miss, put) through the bounded cache (S3-FIFO) and through a plain LRU
 * of the same capacity (a hash table and a doubly linked list, below), at
 * 1% and 10% of the key space; the first CB_HR_WARM accesses warm the
 * caches and are not counted.  The bounded cache splits its capacity over
 * shards chosen by a seeded hash, so its ratio varies slightly run to run.
 */
#include "bench.h"
#include "ref_cache.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CB_DIV (2 * BENCH_SHORT_DIV) /* 42 runs per repetition: --seconds/4 each */
#define CB_TRACE (1u << 16)          /* operations per thread trace (power of two) */
#define CB_TTL_S 600ull
#define CB_TTL (CB_TTL_S * 1000000000ull)
#define CB_VLEN 32
#define CB_PUT_BIT 0x80000000u
#define CB_MAXT 16
#define CB_HR_KEYS 1000000u
#define CB_HR_LEN 4000000u
#define CB_HR_WARM 1000000u
#define CB_ZIPF_S 0.99

static const int cb_threads[] = {2, 16};
#define NT ((int)(sizeof cb_threads / sizeof cb_threads[0]))

static const struct cb_mix {
    const char *name, *title;
    uint32_t keys;
    unsigned put_pct;
    int zipf;
} mixes[] = {
    {"hot5", "70% get / 30% put over 5 hot keys", 5, 30, 0},
    {"uni100k", "70% get / 30% put, uniform over 100k keys", 100000, 30, 0},
    {"zipf1M", "95% get / 5% put, Zipf(0.99) over 1M keys", 1000000, 5, 1},
};
#define NM ((int)(sizeof mixes / sizeof mixes[0]))

/* ---- traces ---------------------------------------------------------------------------------- */

static inline uint64_t cb_rand(uint64_t *s) /* xorshift64* */
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

static inline double cb_unit(uint64_t *s) /* [0, 1) */
{
    return (double)(cb_rand(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* Cumulative Zipf(s) weights of ranks 0..n-1, normalised to end at 1. */
static double *zipf_cdf(uint32_t n, double s)
{
    double *cdf = malloc((size_t)n * sizeof *cdf), sum = 0;
    if (!cdf) {
        fprintf(stderr, "ksync-bench: out of memory\n");
        exit(1);
    }
    for (uint32_t i = 0; i < n; i++)
        cdf[i] = sum += 1.0 / pow((double)i + 1.0, s);
    for (uint32_t i = 0; i < n; i++)
        cdf[i] /= sum;
    return cdf;
}

/* The rank whose cumulative weight first reaches u. */
static uint32_t zipf_draw(const double *cdf, uint32_t n, double u)
{
    uint32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (cdf[mid] >= u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void make_trace(uint32_t *tr, uint32_t len, const struct cb_mix *m, const double *cdf,
                       uint64_t seed)
{
    uint64_t s = seed | 1;
    for (uint32_t i = 0; i < len; i++) {
        uint32_t key = m->zipf ? zipf_draw(cdf, m->keys, cb_unit(&s))
                               : (uint32_t)(((cb_rand(&s) >> 32) * m->keys) >> 32);
        int put = (cb_rand(&s) >> 32) % 100 < m->put_pct;
        tr[i] = key | (put ? CB_PUT_BIT : 0);
    }
}

/* ---- one run --------------------------------------------------------------------------------- */

static struct cb_run {
    const struct rc_impl *im;
    struct rc_cache *c;
    uint32_t *trace[CB_MAXT];
    int64_t loop_end[CB_MAXT];
} run;

/* Added once per thread at its end; read after pthread_join. */
static struct {
    uint64_t gets, hits, bad, errs;
    int first_err;
} tally __attribute__((aligned(KS_CACHELINE)));

static void cb_body(bench_thr_t *t)
{
    const struct rc_impl *im = run.im;
    struct rc_cache *c = run.c;
    struct rc_thread *h = im->thread_enter(c);
    if (!h)
        bench_fail("%s: thread_enter failed", im->name);
    const uint32_t *tr = run.trace[t->id];
    unsigned char val[CB_VLEN], buf[64];
    uint64_t n = 0, gets = 0, hits = 0, bad = 0, errs = 0;
    int first_err = 0;
    memset(val, 0xa5, sizeof val);
    uint32_t i = (uint32_t)t->id * 4099u; /* threads start at different places */
    while (!bench_stopped()) {
        uint32_t x = tr[i++ & (CB_TRACE - 1)];
        uint64_t key = x & ~CB_PUT_BIT;
        if (x & CB_PUT_BIT) {
            memcpy(val, &key, 8);
            memcpy(val + 8, &n, 8);
            int e = im->put(c, h, &key, 8, val, CB_VLEN, CB_TTL);
            if (KS_UNLIKELY(e) && !errs++)
                first_err = e;
        } else {
            size_t vl = 0;
            int e = im->get(c, h, &key, 8, buf, sizeof buf, &vl);
            gets++;
            if (e == 0) {
                uint64_t k2;
                memcpy(&k2, buf, 8);
                hits++;
                bad += vl != CB_VLEN || k2 != key;
            } else if (KS_UNLIKELY(e != ENOENT) && !errs++) {
                first_err = e;
            }
        }
        n++;
    }
    run.loop_end[t->id] = bench_now();
    im->thread_leave(c, h);
    t->ops = n;
    /* relaxed (all five): tallies read by main after pthread_join, which orders them */
    __atomic_fetch_add(&tally.gets, gets, __ATOMIC_RELAXED);    /* relaxed: see above */
    __atomic_fetch_add(&tally.hits, hits, __ATOMIC_RELAXED);    /* relaxed: see above */
    __atomic_fetch_add(&tally.bad, bad, __ATOMIC_RELAXED);      /* relaxed: see above */
    if (errs) {
        __atomic_fetch_add(&tally.errs, errs, __ATOMIC_RELAXED); /* relaxed: see above */
        __atomic_store_n(&tally.first_err, first_err, __ATOMIC_RELAXED); /* relaxed: see above */
    }
}

struct cb_result {
    double mops, hit_pct;
    int pinned;
};

static uint64_t runs_checked, gets_checked;

static struct cb_result run_once(const struct rc_impl *im, struct rc_cache *c, int nthreads,
                                 const struct cb_mix *m, double seconds)
{
    struct cb_result res;
    struct bench_team team = {.n = nthreads, .body = cb_body, .arg = &run,
                              .cap_ns = (int64_t)(seconds * 1e9)};
    run.im = im;
    run.c = c;
    memset(&tally, 0, sizeof tally);
    bench_team_run(&team);
    if (tally.bad || tally.errs)
        bench_fail("cache %s, %s, %d threads: %llu values of another key or length, %llu "
                   "unexpected return values (one was %d)", im->name, m->name, nthreads,
                   (unsigned long long)tally.bad, (unsigned long long)tally.errs,
                   tally.first_err);
    int64_t end = team.start_ns;
    for (int i = 0; i < nthreads; i++)
        if (run.loop_end[i] > end)
            end = run.loop_end[i];
    res.mops = end > team.start_ns ? (double)team.ops / ((double)(end - team.start_ns) / 1e9) / 1e6 : 0;
    res.hit_pct = tally.gets ? 100.0 * (double)tally.hits / (double)tally.gets : 0;
    res.pinned = team.pinned;
    runs_checked++;
    gets_checked += tally.gets;
    bench_team_free(&team);
    return res;
}

static void prefill(const struct rc_impl *im, struct rc_cache *c, uint32_t keys)
{
    struct rc_thread *h = im->thread_enter(c);
    unsigned char val[CB_VLEN];
    if (!h)
        bench_fail("%s: thread_enter failed", im->name);
    memset(val, 0x5a, sizeof val);
    for (uint64_t k = 0; k < keys; k++) {
        memcpy(val, &k, 8);
        int e = im->put(c, h, &k, 8, val, CB_VLEN, CB_TTL);
        if (e)
            bench_fail("%s: pre-fill put returned %d", im->name, e);
    }
    im->thread_leave(c, h);
}

/* ---- a plain LRU for the hit-ratio comparison ---------------------------------------------------- */

#define LRU_NIL UINT32_MAX

struct lru {
    uint32_t cap, n, head, tail, mask; /* head: most recent */
    uint64_t *key;
    uint32_t *prev, *next, *hnext, *bucket;
};

static void lru_init(struct lru *l, uint32_t cap)
{
    uint32_t nb = 16;
    while (nb < 2 * cap)
        nb <<= 1;
    l->cap = cap;
    l->n = 0;
    l->head = l->tail = LRU_NIL;
    l->mask = nb - 1;
    l->key = malloc(cap * sizeof *l->key);
    l->prev = malloc(cap * sizeof *l->prev);
    l->next = malloc(cap * sizeof *l->next);
    l->hnext = malloc(cap * sizeof *l->hnext);
    l->bucket = malloc(nb * sizeof *l->bucket);
    if (!l->key || !l->prev || !l->next || !l->hnext || !l->bucket) {
        fprintf(stderr, "ksync-bench: out of memory\n");
        exit(1);
    }
    memset(l->bucket, 0xff, nb * sizeof *l->bucket);
}

static void lru_free(struct lru *l)
{
    free(l->key);
    free(l->prev);
    free(l->next);
    free(l->hnext);
    free(l->bucket);
}

static inline uint32_t lru_slot(const struct lru *l, uint64_t k)
{
    k *= 0x9e3779b97f4a7c15ull;
    return (uint32_t)(k >> 32) & l->mask;
}

static void lru_unlink(struct lru *l, uint32_t i)
{
    if (l->prev[i] != LRU_NIL)
        l->next[l->prev[i]] = l->next[i];
    else
        l->head = l->next[i];
    if (l->next[i] != LRU_NIL)
        l->prev[l->next[i]] = l->prev[i];
    else
        l->tail = l->prev[i];
}

static void lru_front(struct lru *l, uint32_t i)
{
    l->prev[i] = LRU_NIL;
    l->next[i] = l->head;
    if (l->head != LRU_NIL)
        l->prev[l->head] = i;
    l->head = i;
    if (l->tail == LRU_NIL)
        l->tail = i;
}

/* 1: hit (moved to the front); 0: miss, key inserted (the LRU one evicted if full). */
static int lru_access(struct lru *l, uint64_t k)
{
    uint32_t *b = &l->bucket[lru_slot(l, k)];
    for (uint32_t i = *b; i != LRU_NIL; i = l->hnext[i])
        if (l->key[i] == k) {
            lru_unlink(l, i);
            lru_front(l, i);
            return 1;
        }
    uint32_t i;
    if (l->n < l->cap) {
        i = l->n++;
    } else {
        i = l->tail;
        lru_unlink(l, i);
        uint32_t *p = &l->bucket[lru_slot(l, l->key[i])];
        while (*p != i)
            p = &l->hnext[*p];
        *p = l->hnext[i];
    }
    l->key[i] = k;
    l->hnext[i] = *b;
    *b = i;
    lru_front(l, i);
    return 0;
}

/* Hit ratios (percent, after the warm-up) of the bounded cache and the LRU. */
static void hit_ratio(const uint32_t *trace, uint32_t cap, double *bounded, double *lru_pct,
                      uint64_t *evictions)
{
    const struct rc_impl *im = rc_find("ksync_bounded");
    struct rc_cache *c;
    struct rc_params p = {.expected = cap, .capacity = cap, .clock = NULL, .clock_arg = NULL};
    int e = im->create(&c, &p);
    if (e)
        bench_fail("ksync_bounded: create(capacity %u) returned %d", cap, e);
    struct rc_thread *h = im->thread_enter(c);
    if (!h)
        bench_fail("ksync_bounded: thread_enter failed");
    unsigned char val[CB_VLEN], buf[64];
    memset(val, 0x3c, sizeof val);
    uint64_t hits = 0;
    for (uint32_t i = 0; i < CB_HR_LEN; i++) {
        uint64_t k = trace[i];
        size_t vl;
        e = im->get(c, h, &k, 8, buf, sizeof buf, &vl);
        if (e == 0) {
            uint64_t k2;
            memcpy(&k2, buf, 8);
            if (vl != CB_VLEN || k2 != k)
                bench_fail("ksync_bounded: key %llu returned another key's value",
                           (unsigned long long)k);
            hits += i >= CB_HR_WARM;
        } else if (e == ENOENT) {
            memcpy(val, &k, 8);
            if ((e = im->put(c, h, &k, 8, val, CB_VLEN, CB_TTL)))
                bench_fail("ksync_bounded: put returned %d", e);
        } else {
            bench_fail("ksync_bounded: get returned %d", e);
        }
    }
    struct rc_stats s;
    im->thread_leave(c, h);
    im->stats(c, &s);
    if (s.size > cap)
        bench_fail("ksync_bounded: %llu entries held, capacity %u", (unsigned long long)s.size, cap);
    *evictions = s.evictions;
    im->destroy(c);
    *bounded = 100.0 * (double)hits / (CB_HR_LEN - CB_HR_WARM);

    struct lru l;
    lru_init(&l, cap);
    hits = 0;
    for (uint32_t i = 0; i < CB_HR_LEN; i++)
        if (lru_access(&l, trace[i]) && i >= CB_HR_WARM)
            hits++;
    lru_free(&l);
    *lru_pct = 100.0 * (double)hits / (CB_HR_LEN - CB_HR_WARM);
}

/* ---- the section ------------------------------------------------------------------------------ */

void bench_cache(void)
{
    const int R = bopt.reps;
    const double secs = bopt.seconds / CB_DIV;
    int nk = 0;
    while (rc_impls[nk].name)
        nk++;
    const struct rc_impl *ims = rc_impls;
    int i_lf = -1, i_ck = -1, i_ur = -1, i_mx = -1;
    for (int k = 0; k < nk; k++) {
        if (!strcmp(ims[k].name, "ksync_lockfree"))
            i_lf = k;
        else if (!strcmp(ims[k].name, "ck_ht"))
            i_ck = k;
        else if (!strcmp(ims[k].name, "urcu_lfht"))
            i_ur = k;
        else if (!strcmp(ims[k].name, "pthread_mutex"))
            i_mx = k;
    }
    if (i_lf < 0 || i_ck < 0 || i_ur < 0 || i_mx < 0)
        bench_fail("cache: an implementation is missing from rc_impls");
    struct cb_result *res = calloc((size_t)(NM * NT * nk * R), sizeof *res);
    struct bench_stat *st = calloc((size_t)(NM * NT * nk), sizeof *st);
    double *hit = calloc((size_t)(NM * NT * nk), sizeof *hit);
    struct rc_cache **caches = calloc((size_t)nk, sizeof *caches);
    for (int t = 0; t < CB_MAXT; t++)
        run.trace[t] = malloc(CB_TRACE * sizeof *run.trace[t]);
    if (!res || !st || !hit || !caches) {
        fprintf(stderr, "ksync-bench: out of memory\n");
        exit(1);
    }
    for (int t = 0; t < CB_MAXT; t++)
        if (!run.trace[t]) {
            fprintf(stderr, "ksync-bench: out of memory\n");
            exit(1);
        }
    double v[1000];
#define RES(mi, ti, k, r) res[(((mi) * NT + (ti)) * nk + (k)) * R + (r)]
#define ST(mi, ti, k) st[((mi) * NT + (ti)) * nk + (k)]
#define HIT(mi, ti, k) hit[((mi) * NT + (ti)) * nk + (k)]
    runs_checked = gets_checked = 0;

    bench_section("10");

    printf("\n== 10. key/value caches with TTL: gets and puts, T threads (M ops/s) ==\n");
    printf("%.3f s per run; keys 8 bytes, values %d bytes, every put with a %llu s TTL on "
           "CLOCK_MONOTONIC; %ld CPUs online\n",
           secs, CB_VLEN, CB_TTL_S, sysconf(_SC_NPROCESSORS_ONLN));
    double *cdf = zipf_cdf(CB_HR_KEYS, CB_ZIPF_S);
    int64_t setup_ns = 0;
    for (int mi = 0; mi < NM; mi++) {
        const struct cb_mix *m = &mixes[mi];
        int64_t t0 = bench_now();
        for (int t = 0; t < CB_MAXT; t++)
            make_trace(run.trace[t], CB_TRACE, m, m->zipf ? cdf : NULL,
                       0x9e3779b97f4a7c15ull * (uint64_t)(mi * 64 + t + 1));
        for (int k = 0; k < nk; k++) {
            size_t cap = ims[k].bounded ? (2 * (size_t)m->keys > 4096 ? 2 * (size_t)m->keys : 4096) : 0;
            struct rc_params p = {.expected = m->keys, .capacity = cap, .clock = NULL,
                                  .clock_arg = NULL};
            int e = ims[k].create(&caches[k], &p);
            if (e)
                bench_fail("%s: create for %u keys returned %d", ims[k].name, m->keys, e);
            prefill(&ims[k], caches[k], m->keys);
        }
        setup_ns += bench_now() - t0;
        for (int ti = 0; ti < NT; ti++)
            for (int r = 0; r < R; r++)
                for (int k = 0; k < nk; k++)
                    RES(mi, ti, k, r) = run_once(&ims[k], caches[k], cb_threads[ti], m, secs);
        t0 = bench_now();
        for (int k = 0; k < nk; k++)
            ims[k].destroy(caches[k]);
        setup_ns += bench_now() - t0;
        for (int ti = 0; ti < NT; ti++)
            for (int k = 0; k < nk; k++) {
                char label[96];
                snprintf(label, sizeof label, "%s T=%d %s M ops/s", m->name, cb_threads[ti],
                         ims[k].name);
                for (int r = 0; r < R; r++)
                    v[r] = RES(mi, ti, k, r).mops;
                ST(mi, ti, k) = bench_stats_l(label, v, R);
                for (int r = 0; r < R; r++)
                    v[r] = RES(mi, ti, k, r).hit_pct;
                HIT(mi, ti, k) = bench_stats(v, R).med;
            }
    }

    for (int mi = 0; mi < NM; mi++)
        for (int ti = 0; ti < NT; ti++) {
            printf("\n%s: %s, %d threads (pinned: %s)\n", mixes[mi].name, mixes[mi].title,
                   cb_threads[ti], RES(mi, ti, 0, 0).pinned ? "yes" : "no");
            printf("%-18s %9s %7s %7s %9s %9s %9s\n", "implementation", "M ops/s", "spread",
                   "hits", "/ck_ht", "/urcu", "/mutex");
            for (int k = 0; k < nk; k++) {
                double x = ST(mi, ti, k).med;
                printf("%-18s %9.3f %6.0f%% %6.1f%% %9.3f %9.3f %9.3f\n", ims[k].name, x,
                       bench_spread(ST(mi, ti, k)), HIT(mi, ti, k), x / ST(mi, ti, i_ck).med,
                       x / ST(mi, ti, i_ur).med, x / ST(mi, ti, i_mx).med);
            }
        }
    printf("(/ck_ht, /urcu, /mutex: this row's median over ck_ht's, urcu_lfht's and the pthread "
           "mutex table's\n from the same run; hits: share of gets that found their key. "
           "ck_ht: puts under one mutex,\n gets lock-free in ck_epoch sections; urcu_lfht: "
           "rculfhash, memb flavour, auto-resize;\n ksync_bounded: S3-FIFO with room for twice "
           "the keys. Set-up (create, pre-fill, destroy): %.1f s)\n",
           (double)setup_ns / 1e9);
    printf("integrity: %llu runs, %llu gets checked: every value returned was its key's, %d bytes\n",
           (unsigned long long)runs_checked, (unsigned long long)gets_checked, CB_VLEN);

    /* Hit ratio: S3-FIFO (ksync_bounded) against LRU on one Zipf trace. */
    static const uint32_t caps[] = {CB_HR_KEYS / 100, CB_HR_KEYS / 10};
    double hb[2], hl[2];
    uint64_t ev[2];
    uint32_t *trace = malloc(CB_HR_LEN * sizeof *trace);
    if (!trace) {
        fprintf(stderr, "ksync-bench: out of memory\n");
        exit(1);
    }
    uint64_t s = 0x853c49e6748fea9bull;
    for (uint32_t i = 0; i < CB_HR_LEN; i++)
        trace[i] = zipf_draw(cdf, CB_HR_KEYS, cb_unit(&s));
    for (int i = 0; i < 2; i++)
        hit_ratio(trace, caps[i], &hb[i], &hl[i], &ev[i]);
    free(trace);
    printf("\nhit ratio, one thread, Zipf(%.2f) over %u keys, %u accesses (get; on a miss, put), "
           "the first %u not counted\n",
           CB_ZIPF_S, CB_HR_KEYS, CB_HR_LEN, CB_HR_WARM);
    printf("%-10s %16s %10s %12s %14s\n", "capacity", "ksync_bounded", "LRU", "difference",
           "evictions");
    for (int i = 0; i < 2; i++)
        printf("%6u (%2u%%) %15.2f%% %9.2f%% %+11.2f pt %14llu\n", caps[i],
               (unsigned)(100.0 * caps[i] / CB_HR_KEYS + 0.5), hb[i], hl[i], hb[i] - hl[i],
               (unsigned long long)ev[i]);
    printf("(ksync_bounded: S3-FIFO per shard, shards chosen by the cache; LRU: one list, exact)\n");

    for (int mi = 0; mi < NM; mi++)
        for (int ti = 0; ti < NT; ti++) {
            char what[96];
            snprintf(what, sizeof what, "cache %s T=%d: ksync_lockfree / ck_ht", mixes[mi].name,
                     cb_threads[ti]);
            bench_target(what, ST(mi, ti, i_lf).med / ST(mi, ti, i_ck).med, ">=", 1.0, "x");
            snprintf(what, sizeof what, "cache %s T=%d: ksync_lockfree / urcu_lfht",
                     mixes[mi].name, cb_threads[ti]);
            bench_target(what, ST(mi, ti, i_lf).med / ST(mi, ti, i_ur).med, ">=", 1.0, "x");
        }
    for (int i = 0; i < 2; i++) {
        char what[96];
        snprintf(what, sizeof what, "cache hit ratio at %u%%: ksync_bounded - LRU",
                 (unsigned)(100.0 * caps[i] / CB_HR_KEYS + 0.5));
        bench_target(what, hb[i] - hl[i], ">=", 0.0, " pt");
    }
    /* A failed check stops the program before this line: reaching it means 0. */
    bench_target("cache: gets that returned another key's value", 0, "<=", 0, "");
#undef RES
#undef ST
#undef HIT
    free(cdf);
    for (int t = 0; t < CB_MAXT; t++)
        free(run.trace[t]);
    free(caches);
    free(hit);
    free(st);
    free(res);
}

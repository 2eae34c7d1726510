/* stress/s_cache.c - the cache family: S13 (thread-safe cache with
 * expiration).  Seed 000: "Exercice 2 : Cache thread-safe avec expiration".
 *
 * Every implementation of ref_cache.h (the four ks_cache variants, ck_ht,
 * liburcu's rculfhash, a pthread mutex around a chained table) runs the
 * same workload: N threads (default 8) over NK keys ("k0".."k1023"), 70%
 * gets and 30% puts with a per-entry TTL of 1..S13_TTL_TICKS ticks (one
 * put in 16 never expires), each thread calling sweep(0) every
 * S13_SWEEP_EVERY operations.
 *
 * The clock.  The caches read the test's clock, a counter of fake
 * nanoseconds that every thread advances by one tick (1 ms) every
 * S13_TICK_EVERY operations, so entries really expire during the run
 * whatever the machine's speed.  A put runs with the clock frozen: it holds
 * a pthread rwlock for reading while a tick takes it for writing.  So the
 * clock value the thread reads just before the put is exactly the `now`
 * the cache reads inside it, and the deadline the thread embeds in the
 * value (now + ttl) is exactly the cache's deadline for that entry.
 *
 * Values are 24..64 bytes: {deadline, key, writer, length, seq} then bytes
 * derived from all of them; a get checks the whole value (integrity, and
 * that it belongs to the key asked for).
 *
 * Invariants, on every implementation:
 *   (a) a get never returns an expired value: with t = the clock read just
 *       before the get began, a returned value's embedded deadline must be
 *       > t (the entry had to be live when the get read the clock, which
 *       was at t or later);
 *   (b) hits + misses == gets, and the implementation's own counters
 *       (ks_cache_stats for ksync) equal the counts the threads kept (gets,
 *       hits, misses, puts; for ksync deletes too);
 *   (c) after the run each key holds the last value written to it: once
 *       every thread is past a barrier, key k's owner (thread k mod N)
 *       deletes it (0 or ENOENT) and writes a final value that never
 *       expires; after a second barrier every thread reads every key back
 *       and must find exactly its final value, and so does the main thread
 *       after the join; the size is then exactly NK (and, for ksync, the
 *       bytes the exact sum of keys and final values, no eviction, and at
 *       least as many expirations as the sweeps reported);
 *   (d) value integrity: every byte of every value returned is checked.
 */
#include "harness.h"
#include "ref_cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S13_KEYS 1024
#define S13_ITERS 100000       /* per thread */
#define S13_TICK_NS 1000000ull /* one tick of the test clock: 1 ms */
#define S13_TICK_EVERY 64      /* operations per thread between ticks */
#define S13_TTL_TICKS 64       /* TTLs of 1..64 ticks */
#define S13_SWEEP_EVERY 2048   /* operations per thread between sweeps */
#define S13_HDR 24
#define S13_VMAX 64
#define S13_FINAL_SEQ UINT64_MAX
#define S13_SMALL_CAP 256 /* the evicting bounded run: a quarter of the keys */

struct s13 {
    const struct rc_impl *im;
    struct rc_cache *c;
    unsigned nthreads;
    size_t cap; /* 0: room for every key; else the bounded cache's capacity */
    uint64_t salt;
    char keys[S13_KEYS][8];
    uint8_t klen[S13_KEYS];
    pthread_rwlock_t freeze; /* puts: read; ticks: write */
    pthread_barrier_t bar;   /* the final phase */
    _Alignas(KS_CACHELINE) _Atomic uint64_t now; /* the test clock, fake ns */
    _Alignas(KS_CACHELINE) struct st_note err;
};

enum { S13_GETS, S13_HITS, S13_MISSES, S13_PUTS, S13_DELS, S13_SWEPT, S13_EXPIRED_SEEN };

/* The clock handed to the caches.  relaxed: read-read coherence keeps it
 * monotonic along any happens-before chain; a put reads it under the
 * freeze lock, whose acquire/release orders it against the ticks. */
static uint64_t s13_clock(void *arg)
{
    struct s13 *c = arg;
    return atomic_load_explicit(&c->now, memory_order_relaxed);
}

static void s13_tick(struct s13 *c)
{
    pthread_rwlock_wrlock(&c->freeze);
    /* relaxed: the write lock excludes every put; see s13_clock */
    atomic_fetch_add_explicit(&c->now, S13_TICK_NS, memory_order_relaxed);
    pthread_rwlock_unlock(&c->freeze);
}

struct s13_hdr {
    uint64_t deadline; /* the cache's deadline for this entry; UINT64_MAX: never */
    uint32_t key;
    uint16_t writer;
    uint8_t len;
    uint8_t pad;
    uint64_t seq;
};

static void s13_value(const struct s13 *c, unsigned char *v, unsigned len, uint32_t key,
                      unsigned writer, uint64_t seq, uint64_t deadline)
{
    struct s13_hdr h = {deadline, key, (uint16_t)writer, (uint8_t)len, 0, seq};
    memcpy(v, &h, sizeof h);
    uint64_t x = st_mix64(c->salt ^ deadline ^ ((uint64_t)key << 40) ^ ((uint64_t)writer << 20) ^
                         seq * 0x9e3779b97f4a7c15ull ^ len);
    for (unsigned i = S13_HDR; i < len; i++) {
        if ((i & 7) == 0)
            x = st_mix64(x + i);
        v[i] = (unsigned char)(x >> (8 * (i & 7)));
    }
}

/* NULL if v (vlen bytes) is an intact value of `key`, else what is wrong. */
static const char *s13_check(const struct s13 *c, const unsigned char *v, size_t vlen, uint32_t key,
                             struct s13_hdr *h)
{
    unsigned char want[S13_VMAX];
    if (vlen < S13_HDR || vlen > S13_VMAX)
        return "length out of range";
    memcpy(h, v, sizeof *h);
    if (h->len != vlen)
        return "length differs from the length written";
    if (h->key != key)
        return "another key's value";
    s13_value(c, want, (unsigned)vlen, h->key, h->writer, h->seq, h->deadline);
    if (memcmp(want, v, vlen))
        return "value corrupted (bytes differ from those written)";
    return NULL;
}

static unsigned s13_final_len(uint32_t key)
{
    return S13_HDR + (unsigned)(st_mix64(key) % (S13_VMAX - S13_HDR + 1));
}

/* Read every key back: each must hold exactly its final value. */
static void s13_readback(struct s13 *c, struct rc_thread *h, uint64_t *stat, const char *who)
{
    unsigned char buf[S13_VMAX + 8], want[S13_VMAX];
    for (uint32_t k = 0; k < S13_KEYS; k++) {
        size_t vlen = 0;
        int e = c->im->get(c->c, h, c->keys[k], c->klen[k], buf, sizeof buf, &vlen);
        stat[S13_GETS]++;
        if (e == ENOENT) {
            stat[S13_MISSES]++;
            if (!c->cap) /* with a small capacity, final writes evict each other */
                st_note(&c->err, "%s: key %u missing after its final write", who, k);
            continue;
        }
        if (e) {
            st_note(&c->err, "%s: get of key %u returned %d", who, k, e);
            continue;
        }
        stat[S13_HITS]++;
        unsigned len = s13_final_len(k);
        s13_value(c, want, len, k, k % c->nthreads, S13_FINAL_SEQ, UINT64_MAX);
        if (vlen != len || memcmp(buf, want, len))
            st_note(&c->err, "%s: key %u does not hold the last value written to it", who, k);
    }
}

static void s13_body(struct st_thread *t)
{
    struct s13 *c = t->ctx;
    const struct rc_impl *im = c->im;
    struct rc_thread *h = im->thread_enter(c->c);
    unsigned char v[S13_VMAX], buf[S13_VMAX + 8];
    uint64_t seq = 0;
    if (!h) {
        st_note(&c->err, "thread_enter failed");
        while (st_next(t))
            ;
        pthread_barrier_wait(&c->bar);
        pthread_barrier_wait(&c->bar);
        return;
    }
    while (st_next(t)) {
        if (t->done % S13_TICK_EVERY == 0)
            s13_tick(c);
        if (t->done % S13_SWEEP_EVERY == 0)
            t->stat[S13_SWEPT] += im->sweep(c->c, h, 0);
        uint32_t k = st_below(t, S13_KEYS);
        if (st_below(t, 10) < 7) {
            uint64_t before = s13_clock(c);
            size_t vlen = 0;
            int e = im->get(c->c, h, c->keys[k], c->klen[k], buf, sizeof buf, &vlen);
            t->stat[S13_GETS]++;
            if (e == ENOENT) {
                t->stat[S13_MISSES]++;
                continue;
            }
            if (e) {
                st_note(&c->err, "get returned %d", e);
                continue;
            }
            t->stat[S13_HITS]++;
            struct s13_hdr hd;
            const char *bad = s13_check(c, buf, vlen, k, &hd);
            if (bad)
                st_note(&c->err, "key %u: %s", k, bad);
            else if (hd.deadline <= before)
                st_note(&c->err, "key %u: a get begun at %llu returned a value that expired at "
                        "%llu (%llu ticks late)", k, (unsigned long long)before,
                        (unsigned long long)hd.deadline,
                        (unsigned long long)((before - hd.deadline) / S13_TICK_NS));
        } else {
            uint64_t ttl = st_below(t, 16) == 0
                               ? RC_NO_TTL
                               : (1 + st_below(t, S13_TTL_TICKS)) * S13_TICK_NS;
            unsigned len = S13_HDR + st_below(t, S13_VMAX - S13_HDR + 1);
            pthread_rwlock_rdlock(&c->freeze);
            uint64_t now = s13_clock(c);
            s13_value(c, v, len, k, t->id, ++seq, ttl == RC_NO_TTL ? UINT64_MAX : now + ttl);
            int e = im->put(c->c, h, c->keys[k], c->klen[k], v, len, ttl);
            pthread_rwlock_unlock(&c->freeze);
            if (e)
                st_note(&c->err, "put returned %d", e);
            else
                t->stat[S13_PUTS]++;
        }
    }

    /* (c): every key's last write, by its owner, after everyone stopped */
    pthread_barrier_wait(&c->bar);
    for (uint32_t k = t->id; k < S13_KEYS; k += c->nthreads) {
        int e = im->del(c->c, h, c->keys[k], c->klen[k]);
        if (e == 0)
            t->stat[S13_DELS]++;
        else if (e != ENOENT)
            st_note(&c->err, "delete returned %d", e);
        unsigned len = s13_final_len(k);
        s13_value(c, v, len, k, t->id, S13_FINAL_SEQ, UINT64_MAX);
        if ((e = im->put(c->c, h, c->keys[k], c->klen[k], v, len, RC_NO_TTL)))
            st_note(&c->err, "final put of key %u returned %d", k, e);
        else
            t->stat[S13_PUTS]++;
    }
    pthread_barrier_wait(&c->bar);
    s13_readback(c, h, t->stat, "after the final writes");
    im->thread_leave(c->c, h);
}

/* Keys the main thread found missing at its read-back after the join. */
static uint64_t misses_final(const uint64_t *mine)
{
    return mine[S13_MISSES];
}

static void s13_one(const struct st_opts *o, const struct rc_impl *im, unsigned nthreads,
                    uint64_t iters, size_t cap)
{
    struct s13 *c = st_alloc(sizeof *c);
    c->im = im;
    c->cap = cap;
    char name[48];
    snprintf(name, sizeof name, cap ? "%s_cap%zu" : "%s", im->name, cap);
    c->nthreads = nthreads;
    c->salt = st_mix64(o->seed ^ 0x5133);
    for (uint32_t k = 0; k < S13_KEYS; k++)
        c->klen[k] = (uint8_t)snprintf(c->keys[k], sizeof c->keys[k], "k%u", k);
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&c->freeze, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_barrier_init(&c->bar, NULL, nthreads);
    atomic_init(&c->now, 1000 * S13_TICK_NS);
    st_note_init(&c->err);
    struct st_run run = {.scen = "S13", .impl = name, .kind = im->ksync ? ST_KSYNC : ST_REF,
                         .threads = nthreads, .iters = iters, .body = s13_body, .ctx = c};
    struct rc_params p = {.expected = S13_KEYS, .capacity = cap, .clock = s13_clock,
                          .clock_arg = c};
    int e = im->create(&c->c, &p);
    if (e) {
        st_row(&run, NULL, ST_FAIL, "create returned %d", e);
        goto out;
    }
    struct st_result r;
    st_run(o, &run, &r);

    /* After the join: the main thread reads every key back too. */
    uint64_t mine[ST_NSTAT] = {0};
    struct rc_thread *h = im->thread_enter(c->c);
    if (h) {
        s13_readback(c, h, mine, "after the join");
        im->thread_leave(c->c, h);
    } else {
        st_note(&c->err, "thread_enter failed (main)");
    }
    struct rc_stats s;
    memset(&s, 0, sizeof s);
    im->stats(c->c, &s);
    uint64_t gets = st_stat_sum(&r, S13_GETS) + mine[S13_GETS];
    uint64_t hits = st_stat_sum(&r, S13_HITS) + mine[S13_HITS];
    uint64_t misses = st_stat_sum(&r, S13_MISSES) + mine[S13_MISSES];
    uint64_t puts = st_stat_sum(&r, S13_PUTS), dels = st_stat_sum(&r, S13_DELS);
    uint64_t swept = st_stat_sum(&r, S13_SWEPT);
    uint64_t want_bytes = 0;
    for (uint32_t k = 0; k < S13_KEYS; k++)
        want_bytes += c->klen[k] + s13_final_len(k);
    char why[200] = "";
    if (hits + misses != gets)
        snprintf(why, sizeof why, "threads counted hits %llu + misses %llu != gets %llu",
                 (unsigned long long)hits, (unsigned long long)misses, (unsigned long long)gets);
    else if (s.hits + s.misses != s.gets || s.gets != gets || s.hits != hits ||
             s.misses != misses)
        snprintf(why, sizeof why, "%s counted gets %llu = hits %llu + misses %llu, the threads "
                 "%llu = %llu + %llu", im->name, (unsigned long long)s.gets,
                 (unsigned long long)s.hits, (unsigned long long)s.misses,
                 (unsigned long long)gets, (unsigned long long)hits, (unsigned long long)misses);
    else if (s.puts != puts)
        snprintf(why, sizeof why, "%s counted %llu puts, the threads %llu", im->name,
                 (unsigned long long)s.puts, (unsigned long long)puts);
    else if (!cap && s.size != S13_KEYS)
        snprintf(why, sizeof why, "%llu entries held after every key's final write, want %u",
                 (unsigned long long)s.size, S13_KEYS);
    else if (cap && (s.size > cap || s.size + misses_final(mine) != S13_KEYS))
        snprintf(why, sizeof why, "%llu entries held (capacity %zu), %llu keys missing at the "
                 "final read-back: they should add up to %u", (unsigned long long)s.size, cap,
                 (unsigned long long)misses_final(mine), S13_KEYS);
    else if (cap && !s.evictions)
        snprintf(why, sizeof why, "no eviction with %u keys for %zu entries", S13_KEYS, cap);
    else if (im->ksync && s.deletes != dels)
        snprintf(why, sizeof why, "ksync counted %llu deletes, the threads %llu",
                 (unsigned long long)s.deletes, (unsigned long long)dels);
    else if (im->ksync && !cap && s.bytes != want_bytes)
        snprintf(why, sizeof why, "ksync holds %llu bytes, the keys and final values make %llu",
                 (unsigned long long)s.bytes, (unsigned long long)want_bytes);
    else if (im->ksync && !cap && s.evictions)
        snprintf(why, sizeof why, "%llu evictions with room for every key",
                 (unsigned long long)s.evictions);
    else if (im->ksync && s.expirations < swept)
        snprintf(why, sizeof why, "sweeps removed %llu entries, expirations counted %llu",
                 (unsigned long long)swept, (unsigned long long)s.expirations);
    unsigned errs = st_note_count(&c->err);
    if (errs || why[0])
        st_row(&run, &r, ST_FAIL, "%s%s%u errors: %s", why, why[0] ? "; " : "", errs,
               errs ? c->err.msg : "-");
    else
        st_row(&run, &r, ST_PASS,
               "%llu gets (%.0f%% hits) == hits + misses == the cache's own counts; %llu puts; "
               "no value past its expiry or corrupted; %llu expired entries removed (%llu by "
               "sweeps); %s",
               (unsigned long long)gets, gets ? 100.0 * (double)hits / (double)gets : 0.0,
               (unsigned long long)puts, (unsigned long long)s.expirations,
               (unsigned long long)swept,
               cap ? "every key present holds its last value, size <= capacity"
                   : "all 1024 keys hold their last value");
    st_result_free(&r);
    im->destroy(c->c);
out:
    pthread_barrier_destroy(&c->bar);
    pthread_rwlock_destroy(&c->freeze);
    free(c);
}

static void s13_run(const struct st_opts *o)
{
    unsigned n = st_threads(o, 8);
    for (const struct rc_impl *im = rc_impls; im->name; im++)
        if (st_selected(o, im->ksync ? ST_KSYNC : ST_REF))
            s13_one(o, im, n, st_iters(o, S13_ITERS), 0);
    /* The bounded cache once more, evicting: a quarter of the keys fit. */
    const struct rc_impl *b = rc_find("ksync_bounded");
    if (b && st_selected(o, ST_KSYNC))
        s13_one(o, b, n, st_iters(o, S13_ITERS), S13_SMALL_CAP);
}

const struct st_scenario st_family_cache[] = {
    {"S13", "ttl-cache", "70% get / 30% put with per-entry TTL on a test clock, periodic sweeps: "
                         "no value returned past its expiry, hits + misses == gets (the cache's "
                         "own counts), each key holds its last value",
     "ksync cache striped, striped+rwlock, lock-free, bounded | ck_ht + ck_epoch, liburcu "
     "rculfhash, pthread_mutex + chained table",
     "8 threads x 100000 ops over 1024 keys, TTL 1..64 ticks of 1 ms (a tick every 64 ops per "
     "thread), sweep every 2048 ops",
     s13_run},
    {0, 0, 0, 0, 0, 0},
};

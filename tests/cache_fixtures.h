/* tests/cache_fixtures.h - what the tests of tests/test_cache.c share: the
 * variants and the Criterion parameter arrays, creating and checking a
 * cache, self-checking values, the injected clock, and the worker threads
 * and their bookkeeping that several concurrency tests run.  Included by
 * tests/test_cache.c only (every .c file of tests/ is compiled into one binary:
 * everything here is static). */
#ifndef KS_TEST_CACHE_FIXTURES_H
#define KS_TEST_CACHE_FIXTURES_H

#include "helpers.h"

#include <ksync/cache.h>

#include <criterion/parameterized.h>

/* ---- variants --------------------------------------------------------------------- */

struct variant {
    char name[24]; /* not a pointer: Criterion copies the parameters into another process */
    int variant;
    unsigned flags;
};

static struct variant all_variants[] = {
    {"STRIPED", KS_CACHE_STRIPED, 0},
    {"STRIPED|RWLOCK", KS_CACHE_STRIPED, KS_CACHE_RWLOCK},
    {"LOCKFREE", KS_CACHE_LOCKFREE, 0},
    {"BOUNDED", KS_CACHE_BOUNDED, 0},
};

static struct variant epoch_variants[] = {
    {"LOCKFREE", KS_CACHE_LOCKFREE, 0},
    {"BOUNDED", KS_CACHE_BOUNDED, 0},
};

static struct variant bounded_variant[] = {
    {"BOUNDED", KS_CACHE_BOUNDED, 0},
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

#define FOR_VARIANTS(test, arr)                                                                    \
    ParameterizedTestParameters(cache, test)                                                       \
    {                                                                                              \
        return cr_make_param_array(struct variant, arr, NELEM(arr), NULL);                         \
    }

/* BOUNDED requires a capacity: where a test is not about eviction, one so
 * large that the test never reaches it. */
#define ROOMY 65536u

static struct ks_cache_options opts_for(const struct variant *v)
{
    struct ks_cache_options o = KS_CACHE_OPTIONS_INIT;
    o.variant = v->variant;
    o.flags = v->flags;
    if (v->variant == KS_CACHE_BOUNDED)
        o.capacity = ROOMY;
    return o;
}

static ks_cache_t *make_with(const struct variant *v, const struct ks_cache_options *o)
{
    ks_cache_t *c = NULL;
    int e = ks_cache_create(&c, o);
    cr_assert_eq(e, 0, "[%s] create returned %d", v->name, e);
    cr_assert_not_null(c, "[%s] create returned 0 and no cache", v->name);
    return c;
}

static ks_cache_t *make(const struct variant *v)
{
    struct ks_cache_options o = opts_for(v);
    return make_with(v, &o);
}

static void destroy(const struct variant *v, ks_cache_t *c)
{
    int e = ks_cache_destroy(c);
    cr_assert_eq(e, 0, "[%s] destroy returned %d", v->name, e);
}

static struct ks_cache_stats stats(ks_cache_t *c)
{
    struct ks_cache_stats s;
    memset(&s, 0xa5, sizeof s);
    ks_cache_stats(c, &s);
    return s;
}

#define ASSERT_STAT(v, s, field, want)                                                             \
    cr_assert_eq((s).field, (uint64_t)(want), "[%s] stats." #field " is %llu, expected %llu",      \
                 (v)->name, (unsigned long long)(s).field, (unsigned long long)(want))

static void assert_same_stats(const struct variant *v, const struct ks_cache_stats *a,
                              const struct ks_cache_stats *b, const char *what)
{
    cr_assert(a->gets == b->gets && a->hits == b->hits && a->misses == b->misses &&
                  a->puts == b->puts && a->deletes == b->deletes &&
                  a->expirations == b->expirations && a->evictions == b->evictions &&
                  a->size == b->size && a->bytes == b->bytes,
              "[%s] %s changed the statistics: gets %llu->%llu hits %llu->%llu misses %llu->%llu "
              "puts %llu->%llu deletes %llu->%llu exp %llu->%llu evict %llu->%llu size %llu->%llu "
              "bytes %llu->%llu",
              v->name, what, (unsigned long long)a->gets, (unsigned long long)b->gets,
              (unsigned long long)a->hits, (unsigned long long)b->hits,
              (unsigned long long)a->misses, (unsigned long long)b->misses,
              (unsigned long long)a->puts, (unsigned long long)b->puts,
              (unsigned long long)a->deletes, (unsigned long long)b->deletes,
              (unsigned long long)a->expirations, (unsigned long long)b->expirations,
              (unsigned long long)a->evictions, (unsigned long long)b->evictions,
              (unsigned long long)a->size, (unsigned long long)b->size,
              (unsigned long long)a->bytes, (unsigned long long)b->bytes);
}

/* put that must succeed */
static void put_ok(const struct variant *v, ks_cache_t *c, const void *k, size_t kl, const void *val,
                   size_t vl, uint64_t ttl)
{
    int e = ks_cache_put(c, k, kl, val, vl, ttl);
    cr_assert_eq(e, 0, "[%s] put(klen %zu, vlen %zu, ttl %llu) returned %d", v->name, kl, vl,
                 (unsigned long long)ttl, e);
}

/* get that must hit with exactly val[0..vl) */
static void get_is(const struct variant *v, ks_cache_t *c, const void *k, size_t kl, const void *val,
                   size_t vl, const char *what)
{
    unsigned char *buf = malloc(vl + 16);
    cr_assert_not_null(buf);
    memset(buf, 0x5a, vl + 16);
    size_t n = (size_t)-1;
    int e = ks_cache_get(c, k, kl, buf, vl + 16, &n);
    cr_assert_eq(e, 0, "[%s] %s: get returned %d, expected a hit", v->name, what, e);
    cr_assert_eq(n, vl, "[%s] %s: get set *vlen %zu, expected %zu", v->name, what, n, vl);
    cr_assert(vl == 0 || memcmp(buf, val, vl) == 0, "[%s] %s: get returned other bytes", v->name,
              what);
    for (size_t i = vl; i < vl + 16; i++)
        cr_assert_eq(buf[i], 0x5a, "[%s] %s: get wrote past the value", v->name, what);
    free(buf);
}

static void get_absent(const struct variant *v, ks_cache_t *c, const void *k, size_t kl,
                       const char *what)
{
    unsigned char buf[64];
    size_t n = 0;
    int e = ks_cache_get(c, k, kl, buf, sizeof buf, &n);
    cr_assert_eq(e, ENOENT, "[%s] %s: get returned %d, expected ENOENT", v->name, what, e);
}

/* ---- self-checking values ------------------------------------------------------------ */

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

struct vhdr {
    uint32_t key, writer;
    uint64_t seq;
};

#define VBODY_MAX 239
#define VMAX (sizeof(struct vhdr) + VBODY_MAX)

/* Writes the value for (key, writer, seq) into buf (VMAX bytes); returns its
 * length, 16..VMAX, fixed by the header as are all its bytes. */
static size_t make_value(unsigned char *buf, uint32_t key, uint32_t writer, uint64_t seq)
{
    struct vhdr h = {key, writer, seq};
    memcpy(buf, &h, sizeof h);
    uint64_t x = mix(((uint64_t)key << 40) ^ ((uint64_t)writer << 32) ^ seq);
    size_t n = (size_t)(x % (VBODY_MAX + 1));
    for (size_t i = 0; i < n; i++) {
        if (i % 8 == 0)
            x = mix(x + i);
        buf[sizeof h + i] = (unsigned char)(x >> (8 * (i % 8)));
    }
    return sizeof h + n;
}

/* Is buf[0..len) a whole value of `key`?  Its header goes to *out. */
static int value_ok(const unsigned char *buf, size_t len, uint32_t key, struct vhdr *out)
{
    unsigned char want[VMAX];
    if (len < sizeof(struct vhdr) || len > VMAX)
        return 0;
    memcpy(out, buf, sizeof *out);
    if (out->key != key)
        return 0;
    return make_value(want, key, out->writer, out->seq) == len && memcmp(want, buf, len) == 0;
}

/* Keys: 8 bytes with NULs inside, distinct per id. */
#define KLEN 8
static void key_of(unsigned char *k, uint32_t id)
{
    k[0] = 'k';
    k[1] = 0;
    k[2] = (unsigned char)(id >> 24);
    k[3] = 0;
    k[4] = (unsigned char)(id >> 16);
    k[5] = (unsigned char)(id >> 8);
    k[6] = (unsigned char)id;
    k[7] = 0;
}

/* xorshift per thread */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* ---- the injected clock --------------------------------------------------------------- */

struct tclock {
    uint64_t now;
    uint64_t reads;
};

static uint64_t tclock_read(void *arg)
{
    struct tclock *k = arg;
    __atomic_fetch_add(&k->reads, 1, __ATOMIC_SEQ_CST);
    return __atomic_load_n(&k->now, __ATOMIC_SEQ_CST);
}

static void tclock_set(struct tclock *k, uint64_t t) { __atomic_store_n(&k->now, t, __ATOMIC_SEQ_CST); }
static uint64_t tclock_reads(struct tclock *k) { return __atomic_load_n(&k->reads, __ATOMIC_SEQ_CST); }

static ks_cache_t *make_clocked(const struct variant *v, struct tclock *k, uint64_t default_ttl)
{
    struct ks_cache_options o = opts_for(v);
    o.clock = tclock_read;
    o.clock_arg = k;
    o.default_ttl = default_ttl;
    return make_with(v, &o);
}

/* ---- TTL on an injected clock ------------------------------------------------------- */

/* the injected clock's time at the start of a TTL test */
#define T0 1000000000ull

/* ---- concurrency ------------------------------------------------------------------------ */

#define NT 12 /* threads: oversubscribes the 2 cores */
#define RUN_NS (250 * KT_MS * KT_SLOW)

struct run {
    ks_cache_t *c;
    pthread_barrier_t start, end;
    int nkeys;
    int phases;
    int64_t end_ns;
    struct tclock *clk;
};

struct worker {
    struct run *r;
    int id;
    uint64_t gets, hits, misses, puts, deletes;
    uint64_t bad;       /* a get returned something that is not a whole value of its key */
    uint64_t bad_rc;    /* an unexpected return code */
    uint64_t expired;   /* a get returned an entry past its deadline */
    uint64_t *last;     /* per key: the seq of this thread's last successful write, 0 none */
    char pad[64];
};

static int check_get(struct worker *w, uint32_t id, unsigned char *buf, struct vhdr *h)
{
    unsigned char k[KLEN];
    size_t n = 0;
    key_of(k, id);
    int e = ks_cache_get(w->r->c, k, KLEN, buf, VMAX, &n);
    w->gets++;
    if (e == ENOENT) {
        w->misses++;
    } else if (e == 0) {
        w->hits++;
        if (!value_ok(buf, n, id, h))
            w->bad++;
    } else {
        w->hits++; /* ERANGE is a hit, but no value is ever longer than VMAX */
        w->bad_rc++;
    }
    return e;
}

static int do_put(struct worker *w, uint32_t id, uint64_t seq, uint64_t ttl)
{
    unsigned char k[KLEN], val[VMAX];
    key_of(k, id);
    size_t n = make_value(val, id, (uint32_t)w->id, seq);
    int e = ks_cache_put(w->r->c, k, KLEN, val, n, ttl);
    if (e == 0)
        w->puts++;
    else
        w->bad_rc++;
    return e;
}

static int do_delete(struct worker *w, uint32_t id)
{
    unsigned char k[KLEN];
    key_of(k, id);
    int e = ks_cache_delete(w->r->c, k, KLEN);
    if (e == 0)
        w->deletes++;
    else if (e != ENOENT)
        w->bad_rc++;
    return e;
}

static void run_workers(struct worker *w, int n, void *(*fn)(void *))
{
    pthread_t t[KT_MAX_THREADS];
    for (int i = 0; i < n; i++)
        kt_spawn(&t[i], fn, &w[i]);
    int64_t deadline = ks_now() + 20 * KS_NSEC_PER_SEC;
    for (int i = 0; i < n; i++)
        cr_assert(kt_join_by(t[i], deadline), "worker %d did not finish", i);
}

static void sum_workers(const struct variant *v, struct worker *w, int n, struct worker *tot)
{
    memset(tot, 0, sizeof *tot);
    for (int i = 0; i < n; i++) {
        tot->gets += w[i].gets;
        tot->hits += w[i].hits;
        tot->misses += w[i].misses;
        tot->puts += w[i].puts;
        tot->deletes += w[i].deletes;
        tot->bad += w[i].bad;
        tot->bad_rc += w[i].bad_rc;
        tot->expired += w[i].expired;
    }
    cr_assert_eq(tot->bad, 0u, "[%s] %llu gets returned a torn, mixed or foreign value", v->name,
                 (unsigned long long)tot->bad);
    cr_assert_eq(tot->bad_rc, 0u, "[%s] %llu calls returned an unexpected code", v->name,
                 (unsigned long long)tot->bad_rc);
    cr_assert_eq(tot->expired, 0u, "[%s] %llu gets returned an entry past its deadline", v->name,
                 (unsigned long long)tot->expired);
}

/* Writers replace and delete (values of varying length), readers get;
 * every get is ENOENT or a whole value of its key; afterwards the counters
 * equal what the threads counted and size/bytes what the cache holds. */
static void *churn_writer(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->r;
    uint64_t s = 0xabcdefu * (uint64_t)(w->id + 1), seq = 0;
    pthread_barrier_wait(&r->start);
    for (uint64_t i = 0;; i++) {
        if (i % 32 == 0 && ks_now() > r->end_ns)
            break;
        uint32_t k = (uint32_t)(rnd(&s) % (uint64_t)r->nkeys);
        if (rnd(&s) % 4 == 0)
            do_delete(w, k);
        else
            do_put(w, k, ++seq, 0);
    }
    return NULL;
}

static void *churn_reader(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->r;
    uint64_t s = 0x777u * (uint64_t)(w->id + 1);
    unsigned char buf[VMAX];
    struct vhdr h;
    pthread_barrier_wait(&r->start);
    for (uint64_t i = 0;; i++) {
        if (i % 64 == 0 && ks_now() > r->end_ns)
            break;
        check_get(w, (uint32_t)(rnd(&s) % (uint64_t)r->nkeys), buf, &h);
    }
    return NULL;
}

static void *churn_mixed(void *arg)
{
    struct worker *w = arg;
    return w->id % 3 == 0 ? churn_writer(arg) : churn_reader(arg);
}

/* After the threads: every key's value whole, size and bytes what the gets
 * find; returns the gets this made. */
static uint64_t check_contents(const struct variant *v, ks_cache_t *c, int nkeys)
{
    unsigned char k[KLEN], buf[VMAX];
    uint64_t found = 0, bytes = 0;
    for (int id = 0; id < nkeys; id++) {
        key_of(k, (uint32_t)id);
        size_t n = 0;
        struct vhdr h;
        int e = ks_cache_get(c, k, KLEN, buf, sizeof buf, &n);
        cr_assert(e == 0 || e == ENOENT, "[%s] key %d: get %d", v->name, id, e);
        if (e == 0) {
            cr_assert(value_ok(buf, n, (uint32_t)id, &h), "[%s] key %d: bad value", v->name, id);
            found++;
            bytes += KLEN + n;
        }
    }
    struct ks_cache_stats s = stats(c);
    ASSERT_STAT(v, s, size, found);
    ASSERT_STAT(v, s, bytes, bytes);
    return (uint64_t)nkeys;
}

#endif

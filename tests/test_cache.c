/* tests/test_cache.c - ks_cache, every variant (STRIPED with a ks_mutex,
 * STRIPED with KS_CACHE_RWLOCK, LOCKFREE, BOUNDED; each test names the
 * variant in its failure messages):
 *   API contract: put/get/delete/replace of byte strings with embedded NULs,
 *   empty keys and values, key and value limits (EMSGSIZE), ERANGE copies
 *   nothing, EINVAL everywhere (and an EINVAL get is not counted);
 *   a model-checked single-thread sequence whose statistics must match the
 *   model exactly;
 *   TTL on an injected clock: expired at the deadline exactly, default_ttl,
 *   KS_CACHE_NO_TTL, no overflow of now + ttl, expired entries are absent to
 *   get/delete/put and counted once, sweep (whole and budget 1), a get of an
 *   entry without a deadline does not read the clock; KS_CACHE_COARSE_CLOCK;
 *   8-16 oversubscribed threads: last writer wins (keys owned in turn, and a
 *   free-for-all whose final value must be some thread's last write), gets
 *   never see a torn, mixed or freed value while others replace and delete,
 *   the statistics add up to what the threads counted, a get never returns
 *   an entry past its deadline;
 *   reclamation (LOCKFREE, BOUNDED): every retired entry is freed after a
 *   barrier; ASan/LSan (make asan) check the rest;
 *   capacity: size and bytes bounded (any variant given a capacity),
 *   evictions exact, EMSGSIZE for an entry over the byte capacity,
 *   NOEVICT's ENOSPC leaves the cache unchanged, a hot set survives a scan;
 *   allocation failure: create and put give ENOMEM, the cache unchanged;
 *   regressions: a lock-free get racing a replacement across the old
 *   entry's deadline is no false miss; max_bytes below the shard count
 *   still bounds bytes; clock reads per operation (at most one, none
 *   without deadlines); a put reads the clock under the shard lock, so one
 *   that waited through an expiry counts it as an expiration.
 *
 * Values written by threads check themselves: a header {key, writer, seq}
 * fixes the value's length and every body byte, so a get that returned a
 * mix of two values, a value of another key, or bytes of a freed entry is
 * caught.  Time in the TTL tests is the test's own clock (options.clock).
 * The fixtures (variants, helpers, self-checking values, the clock, the
 * worker threads) are in tests/cache_fixtures.h. */
#include "cache_fixtures.h"

#include <ksync/epoch.h>

#include <sys/resource.h>

/* ---- API contract ---------------------------------------------------------------------- */

FOR_VARIANTS(create_rejects_bad_options, all_variants)
ParameterizedTest(struct variant *v, cache, create_rejects_bad_options, .timeout = 30)
{
    ks_cache_t *c = NULL;
    struct ks_cache_options o = opts_for(v);
    cr_assert_eq(ks_cache_create(NULL, &o), EINVAL, "[%s] NULL out accepted", v->name);
    cr_assert_eq(ks_cache_create(&c, NULL), EINVAL, "[%s] NULL options accepted", v->name);

    const int bad_variant[] = {-1, 3, 4, 100, INT32_MIN, INT32_MAX};
    for (unsigned i = 0; i < NELEM(bad_variant); i++) {
        o = opts_for(v);
        o.variant = bad_variant[i];
        cr_assert_eq(ks_cache_create(&c, &o), EINVAL, "[%s] variant %d accepted", v->name,
                     bad_variant[i]);
    }
    const unsigned bad_flags[] = {8u, 0x10u, 0x100u, 0x80000000u, ~0u, v->flags | 8u};
    for (unsigned i = 0; i < NELEM(bad_flags); i++) {
        o = opts_for(v);
        o.flags = bad_flags[i];
        cr_assert_eq(ks_cache_create(&c, &o), EINVAL, "[%s] flags 0x%x accepted", v->name,
                     bad_flags[i]);
    }
    o = opts_for(v);
    o.flags |= KS_CACHE_COARSE_CLOCK;
    o.clock = tclock_read;
    cr_assert_eq(ks_cache_create(&c, &o), EINVAL, "[%s] COARSE_CLOCK with a clock function", v->name);
    if (v->variant != KS_CACHE_STRIPED) {
        o = opts_for(v);
        o.flags |= KS_CACHE_RWLOCK;
        cr_assert_eq(ks_cache_create(&c, &o), EINVAL, "[%s] RWLOCK accepted", v->name);
    } else {
        o = opts_for(v);
        o.flags |= KS_CACHE_NOEVICT;
        cr_assert_eq(ks_cache_create(&c, &o), EINVAL, "[%s] NOEVICT without a capacity", v->name);
    }
    if (v->variant == KS_CACHE_LOCKFREE) {
        o = opts_for(v);
        o.flags |= KS_CACHE_NOEVICT;
        cr_assert_eq(ks_cache_create(&c, &o), EINVAL, "[%s] NOEVICT without a capacity", v->name);
    }
    o = opts_for(v);
    o.max_key = (size_t)KS_CACHE_LEN_MAX + 1;
    cr_assert_eq(ks_cache_create(&c, &o), EINVAL, "[%s] max_key over KS_CACHE_LEN_MAX", v->name);
    o = opts_for(v);
    o.max_value = (size_t)KS_CACHE_LEN_MAX + 1;
    cr_assert_eq(ks_cache_create(&c, &o), EINVAL, "[%s] max_value over KS_CACHE_LEN_MAX", v->name);
    if (v->variant == KS_CACHE_BOUNDED) {
        o = opts_for(v);
        o.capacity = 0;
        o.max_bytes = 0;
        cr_assert_eq(ks_cache_create(&c, &o), EINVAL, "[%s] BOUNDED without a capacity", v->name);
        /* either capacity alone is one */
        o.max_bytes = 1 << 20;
        c = make_with(v, &o);
        destroy(v, c);
        o.max_bytes = 0;
        o.capacity = 10;
        c = make_with(v, &o);
        destroy(v, c);
    }
    /* The limits themselves are accepted. */
    o = opts_for(v);
    o.max_key = (size_t)KS_CACHE_LEN_MAX;
    o.max_value = (size_t)KS_CACHE_LEN_MAX;
    c = make_with(v, &o);
    destroy(v, c);
    cr_assert_eq(ks_cache_destroy(NULL), EINVAL);
}

FOR_VARIANTS(null_arguments_are_einval_and_not_counted, all_variants)
ParameterizedTest(struct variant *v, cache, null_arguments_are_einval_and_not_counted, .timeout = 30)
{
    ks_cache_t *c = make(v);
    char buf[16];
    size_t n = 77;
    put_ok(v, c, "key", 3, "val", 3, KS_CACHE_NO_TTL);
    struct ks_cache_stats s0 = stats(c);

    cr_assert_eq(ks_cache_put(NULL, "k", 1, "v", 1, 0), EINVAL, "[%s] put NULL cache", v->name);
    cr_assert_eq(ks_cache_put(c, NULL, 1, "v", 1, 0), EINVAL, "[%s] put NULL key klen 1", v->name);
    cr_assert_eq(ks_cache_put(c, NULL, 3, "v", 1, 0), EINVAL, "[%s] put NULL key klen 3", v->name);
    cr_assert_eq(ks_cache_put(c, "key", 3, NULL, 1, 0), EINVAL, "[%s] put NULL value vlen 1",
                 v->name);
    cr_assert_eq(ks_cache_get(NULL, "key", 3, buf, sizeof buf, &n), EINVAL, "[%s] get NULL cache",
                 v->name);
    cr_assert_eq(ks_cache_get(c, NULL, 3, buf, sizeof buf, &n), EINVAL, "[%s] get NULL key klen 3",
                 v->name);
    cr_assert_eq(n, 77u, "[%s] an EINVAL get wrote *vlen", v->name);
    cr_assert_eq(ks_cache_delete(NULL, "key", 3), EINVAL, "[%s] delete NULL cache", v->name);
    cr_assert_eq(ks_cache_delete(c, NULL, 3), EINVAL, "[%s] delete NULL key klen 3", v->name);

    struct ks_cache_stats s1 = stats(c);
    assert_same_stats(v, &s0, &s1, "EINVAL calls");
    get_is(v, c, "key", 3, "val", 3, "after EINVAL calls");
    s1 = stats(c);
    ASSERT_STAT(v, s1, gets, 1);
    ASSERT_STAT(v, s1, hits, 1);
    ASSERT_STAT(v, s1, misses, 0);
    destroy(v, c);
}

FOR_VARIANTS(put_get_delete_replace_byte_strings, all_variants)
ParameterizedTest(struct variant *v, cache, put_get_delete_replace_byte_strings, .timeout = 30)
{
    ks_cache_t *c = make(v);
    /* Keys that differ only after a NUL, or in length, are different keys. */
    const char k1[] = "a\0b", k2[] = "a\0c", k3[] = "a";
    const char v1[] = "\0one\0", v2[] = "two\0\0\0two", v3[] = "\0";
    get_absent(v, c, k1, 3, "empty cache");
    put_ok(v, c, k1, 3, v1, 5, 0);
    put_ok(v, c, k2, 3, v2, 9, 0);
    put_ok(v, c, k3, 1, v3, 1, 0);
    get_is(v, c, k1, 3, v1, 5, "a\\0b");
    get_is(v, c, k2, 3, v2, 9, "a\\0c");
    get_is(v, c, k3, 1, v3, 1, "a");
    get_absent(v, c, k1, 2, "a\\0 (a prefix of a stored key)");
    get_absent(v, c, "a\0b\0", 4, "a\\0b\\0 (a stored key plus a NUL)");

    /* Empty value: a hit of length 0, also with no buffer at all. */
    put_ok(v, c, "empty", 5, "", 0, 0);
    get_is(v, c, "empty", 5, "", 0, "empty value");
    size_t n = 99;
    cr_assert_eq(ks_cache_get(c, "empty", 5, NULL, 0, &n), 0, "[%s] empty value, no buffer", v->name);
    cr_assert_eq(n, 0u, "[%s] empty value: *vlen %zu", v->name, n);
    put_ok(v, c, "nullval", 7, NULL, 0, 0);
    get_is(v, c, "nullval", 7, "", 0, "NULL value of length 0");

    /* Empty key: NULL or not, length 0 is one key. */
    put_ok(v, c, NULL, 0, "for-empty", 9, 0);
    get_is(v, c, "", 0, "for-empty", 9, "empty key (non-NULL pointer)");
    get_is(v, c, NULL, 0, "for-empty", 9, "empty key (NULL)");
    put_ok(v, c, "xyz", 0, "again", 5, 0);
    get_is(v, c, NULL, 0, "again", 5, "empty key replaced");

    struct ks_cache_stats s = stats(c);
    ASSERT_STAT(v, s, size, 6);
    ASSERT_STAT(v, s, bytes, (3 + 5) + (3 + 9) + (1 + 1) + (5 + 0) + (7 + 0) + (0 + 5));
    ASSERT_STAT(v, s, puts, 7);

    /* Replace with longer and shorter values. */
    char big[300];
    for (unsigned i = 0; i < sizeof big; i++)
        big[i] = (char)(i * 7);
    put_ok(v, c, k1, 3, big, sizeof big, 0);
    get_is(v, c, k1, 3, big, sizeof big, "replaced by a longer value");
    put_ok(v, c, k1, 3, "s", 1, 0);
    get_is(v, c, k1, 3, "s", 1, "replaced by a shorter value");
    get_is(v, c, k2, 3, v2, 9, "a neighbour after replacements");
    s = stats(c);
    ASSERT_STAT(v, s, size, 6);
    ASSERT_STAT(v, s, bytes, (3 + 1) + (3 + 9) + (1 + 1) + (5 + 0) + (7 + 0) + (0 + 5));
    ASSERT_STAT(v, s, puts, 9);

    /* Delete. */
    cr_assert_eq(ks_cache_delete(c, k1, 3), 0, "[%s] delete a\\0b", v->name);
    get_absent(v, c, k1, 3, "deleted");
    cr_assert_eq(ks_cache_delete(c, k1, 3), ENOENT, "[%s] second delete", v->name);
    cr_assert_eq(ks_cache_delete(c, "nope", 4), ENOENT, "[%s] delete of a never-stored key", v->name);
    get_is(v, c, k2, 3, v2, 9, "a\\0c after deleting a\\0b");
    cr_assert_eq(ks_cache_delete(c, NULL, 0), 0, "[%s] delete the empty key", v->name);
    get_absent(v, c, "", 0, "deleted empty key");
    put_ok(v, c, k1, 3, v1, 5, 0);
    get_is(v, c, k1, 3, v1, 5, "stored again after delete");
    s = stats(c);
    ASSERT_STAT(v, s, deletes, 2);
    ASSERT_STAT(v, s, size, 5);
    ASSERT_STAT(v, s, bytes, (3 + 5) + (3 + 9) + (1 + 1) + (5 + 0) + (7 + 0));
    ASSERT_STAT(v, s, puts, 10);
    ASSERT_STAT(v, s, expirations, 0);
    ASSERT_STAT(v, s, evictions, 0);
    cr_assert_eq(s.gets, s.hits + s.misses, "[%s] gets != hits + misses", v->name);
    destroy(v, c);
}

FOR_VARIANTS(key_and_value_limits_are_emsgsize, all_variants)
ParameterizedTest(struct variant *v, cache, key_and_value_limits_are_emsgsize, .timeout = 60)
{
    struct ks_cache_options o = opts_for(v);
    o.max_key = 16;
    o.max_value = 32;
    ks_cache_t *c = make_with(v, &o);
    unsigned char key[17], val[33];
    for (unsigned i = 0; i < sizeof key; i++)
        key[i] = (unsigned char)(i % 3 ? 'a' + i : 0);
    for (unsigned i = 0; i < sizeof val; i++)
        val[i] = (unsigned char)(0xf0 ^ i);
    put_ok(v, c, key, 16, val, 32, 0);
    get_is(v, c, key, 16, val, 32, "key and value at their limits");
    struct ks_cache_stats s0 = stats(c);
    int e = ks_cache_put(c, key, 17, "x", 1, 0);
    cr_assert_eq(e, EMSGSIZE, "[%s] key max_key+1: %d", v->name, e);
    e = ks_cache_put(c, key, 16, val, 33, 0); /* would replace: must not */
    cr_assert_eq(e, EMSGSIZE, "[%s] value max_value+1: %d", v->name, e);
    e = ks_cache_put(c, key, 3, val, 33, 0);
    cr_assert_eq(e, EMSGSIZE, "[%s] value max_value+1 (new key): %d", v->name, e);
    struct ks_cache_stats s1 = stats(c);
    assert_same_stats(v, &s0, &s1, "EMSGSIZE puts");
    get_is(v, c, key, 16, val, 32, "the entry an EMSGSIZE put would have replaced");
    get_absent(v, c, key, 3, "key of an EMSGSIZE put");
    /* A key over max_key cannot be stored, so it is simply absent. */
    destroy(v, c);

    /* The defaults: 4096-byte keys, 64 MiB values. */
    c = make(v);
    size_t big = (size_t)64 << 20;
    unsigned char *kb = malloc(4097), *vb = malloc(big + 1);
    cr_assert(kb && vb);
    memset(kb, 'K', 4097);
    kb[100] = 0;
    for (size_t i = 0; i < big + 1; i += 4096)
        vb[i] = (unsigned char)(i >> 12);
    put_ok(v, c, kb, 4096, "v", 1, 0);
    get_is(v, c, kb, 4096, "v", 1, "4096-byte key");
    cr_assert_eq(ks_cache_put(c, kb, 4097, "v", 1, 0), EMSGSIZE, "[%s] 4097-byte key", v->name);
    put_ok(v, c, "big", 3, vb, big, 0);
    cr_assert_eq(ks_cache_put(c, "big", 3, vb, big + 1, 0), EMSGSIZE, "[%s] 64 MiB + 1 value",
                 v->name);
    get_is(v, c, "big", 3, vb, big, "64 MiB value");
    struct ks_cache_stats s = stats(c);
    ASSERT_STAT(v, s, size, 2);
    ASSERT_STAT(v, s, bytes, 4096 + 1 + 3 + big);
    free(kb);
    free(vb);
    destroy(v, c);
}

FOR_VARIANTS(erange_copies_nothing_and_counts_a_hit, all_variants)
ParameterizedTest(struct variant *v, cache, erange_copies_nothing_and_counts_a_hit, .timeout = 30)
{
    ks_cache_t *c = make(v);
    const char val[] = "0123456789";
    put_ok(v, c, "k", 1, val, 10, 0);
    char buf[16];
    memset(buf, '#', sizeof buf);
    size_t n = 0;
    int e = ks_cache_get(c, "k", 1, buf, 9, &n);
    cr_assert_eq(e, ERANGE, "[%s] cap 9 for 10 bytes: %d", v->name, e);
    cr_assert_eq(n, 10u, "[%s] ERANGE set *vlen %zu", v->name, n);
    for (unsigned i = 0; i < sizeof buf; i++)
        cr_assert_eq(buf[i], '#', "[%s] ERANGE copied bytes into the buffer", v->name);
    n = 0;
    e = ks_cache_get(c, "k", 1, NULL, 0, &n);
    cr_assert_eq(e, ERANGE, "[%s] no buffer: %d", v->name, e);
    cr_assert_eq(n, 10u, "[%s] ERANGE (no buffer) set *vlen %zu", v->name, n);
    e = ks_cache_get(c, "k", 1, buf, 10, &n);
    cr_assert_eq(e, 0, "[%s] cap exactly the length: %d", v->name, e);
    cr_assert_eq(memcmp(buf, val, 10), 0);
    cr_assert_eq(buf[10], '#', "[%s] get wrote past the value", v->name);
    get_absent(v, c, "j", 1, "other key");
    struct ks_cache_stats s = stats(c);
    ASSERT_STAT(v, s, gets, 4);
    ASSERT_STAT(v, s, hits, 3);
    ASSERT_STAT(v, s, misses, 1);
    destroy(v, c);
}

/* A single thread's random sequence checked against a model: every get's
 * result and every counter, exactly. */
FOR_VARIANTS(stats_match_a_model_exactly, all_variants)
ParameterizedTest(struct variant *v, cache, stats_match_a_model_exactly, .timeout = 60)
{
    enum { NK = 300, OPS = 20000 };
    ks_cache_t *c = make(v);
    static uint64_t ver[NK]; /* 0: absent, else the seq of the stored value */
    static size_t vl[NK];
    memset(ver, 0, sizeof ver);
    uint64_t gets = 0, hits = 0, misses = 0, puts = 0, deletes = 0, size = 0, bytes = 0;
    uint64_t seed = 0x1234567;
    uint64_t seq = 0;
    unsigned char k[KLEN], val[VMAX], buf[VMAX];
    for (int i = 0; i < OPS; i++) {
        uint32_t id = (uint32_t)(rnd(&seed) % NK);
        key_of(k, id);
        unsigned op = (unsigned)(rnd(&seed) % 10);
        if (op < 4) { /* put */
            size_t n = make_value(val, id, 0, ++seq);
            put_ok(v, c, k, KLEN, val, n, 0);
            puts++;
            if (ver[id]) {
                bytes -= KLEN + vl[id];
            } else {
                size++;
            }
            ver[id] = seq;
            vl[id] = n;
            bytes += KLEN + n;
        } else if (op < 9) { /* get, sometimes with too small a buffer */
            size_t cap = op == 8 ? 20 : sizeof buf, n = 0;
            int e = ks_cache_get(c, k, KLEN, buf, cap, &n);
            gets++;
            if (!ver[id]) {
                cr_assert_eq(e, ENOENT, "[%s] op %d: get of absent key %u returned %d", v->name, i,
                             id, e);
                misses++;
            } else {
                hits++;
                cr_assert_eq(n, vl[id], "[%s] op %d: *vlen %zu, model %zu", v->name, i, n, vl[id]);
                if (vl[id] > cap) {
                    cr_assert_eq(e, ERANGE, "[%s] op %d: get returned %d, expected ERANGE",
                                 v->name, i, e);
                } else {
                    struct vhdr h;
                    cr_assert_eq(e, 0, "[%s] op %d: get returned %d", v->name, i, e);
                    cr_assert(value_ok(buf, n, id, &h) && h.seq == ver[id],
                              "[%s] op %d: key %u holds the wrong value", v->name, i, id);
                }
            }
        } else { /* delete */
            int e = ks_cache_delete(c, k, KLEN);
            if (ver[id]) {
                cr_assert_eq(e, 0, "[%s] op %d: delete of present key: %d", v->name, i, e);
                deletes++;
                size--;
                bytes -= KLEN + vl[id];
                ver[id] = 0;
            } else {
                cr_assert_eq(e, ENOENT, "[%s] op %d: delete of absent key: %d", v->name, i, e);
            }
        }
        if (i % 1000 == 999 || i == OPS - 1) {
            struct ks_cache_stats s = stats(c);
            ASSERT_STAT(v, s, gets, gets);
            ASSERT_STAT(v, s, hits, hits);
            ASSERT_STAT(v, s, misses, misses);
            ASSERT_STAT(v, s, puts, puts);
            ASSERT_STAT(v, s, deletes, deletes);
            ASSERT_STAT(v, s, size, size);
            ASSERT_STAT(v, s, bytes, bytes);
            ASSERT_STAT(v, s, expirations, 0);
            ASSERT_STAT(v, s, evictions, 0);
        }
    }
    destroy(v, c);
}

/* ---- TTL on an injected clock ------------------------------------------------------- */


FOR_VARIANTS(ttl_expires_at_the_deadline_exactly, all_variants)
ParameterizedTest(struct variant *v, cache, ttl_expires_at_the_deadline_exactly, .timeout = 30)
{
    struct tclock clk = {T0, 0};
    ks_cache_t *c = make_clocked(v, &clk, 0);
    const uint64_t T = 1000;

    /* get: present one tick before, absent at the deadline. */
    put_ok(v, c, "a", 1, "va", 2, T);
    tclock_set(&clk, T0 + T - 1);
    get_is(v, c, "a", 1, "va", 2, "ttl T at t0+T-1");
    tclock_set(&clk, T0 + T);
    get_absent(v, c, "a", 1, "ttl T at t0+T");
    get_absent(v, c, "a", 1, "ttl T at t0+T (again)");
    cr_assert_eq(ks_cache_delete(c, "a", 1), ENOENT, "[%s] delete of an expired entry", v->name);
    (void)ks_cache_sweep(c, 0);
    struct ks_cache_stats s = stats(c);
    ASSERT_STAT(v, s, expirations, 1);
    ASSERT_STAT(v, s, size, 0);
    ASSERT_STAT(v, s, bytes, 0);
    ASSERT_STAT(v, s, deletes, 0);
    ASSERT_STAT(v, s, hits, 1);
    ASSERT_STAT(v, s, misses, 2);

    /* delete of an entry expired but not yet removed: ENOENT, one expiration. */
    uint64_t t1 = T0 + 5000;
    tclock_set(&clk, t1);
    put_ok(v, c, "b", 1, "vb", 2, T);
    tclock_set(&clk, t1 + T);
    cr_assert_eq(ks_cache_delete(c, "b", 1), ENOENT, "[%s] delete at the deadline", v->name);
    s = stats(c);
    ASSERT_STAT(v, s, expirations, 2);
    ASSERT_STAT(v, s, deletes, 0);
    ASSERT_STAT(v, s, size, 0);
    cr_assert_eq(ks_cache_sweep(c, 0), 0u, "[%s] sweep found something left", v->name);

    /* put over an expired entry: stored, and the old one counts one expiration. */
    uint64_t t2 = T0 + 10000;
    tclock_set(&clk, t2);
    put_ok(v, c, "c", 1, "old", 3, T);
    tclock_set(&clk, t2 + T);
    put_ok(v, c, "c", 1, "newer", 5, KS_CACHE_NO_TTL);
    s = stats(c);
    ASSERT_STAT(v, s, expirations, 3);
    ASSERT_STAT(v, s, size, 1);
    ASSERT_STAT(v, s, bytes, 1 + 5);
    ASSERT_STAT(v, s, puts, 4);
    get_is(v, c, "c", 1, "newer", 5, "put over an expired entry");
    tclock_set(&clk, UINT64_MAX - 1);
    get_is(v, c, "c", 1, "newer", 5, "the replacement (NO_TTL) much later");

    /* A ttl of 1 expires on the next tick. */
    tclock_set(&clk, T0 * 2);
    put_ok(v, c, "d", 1, "vd", 2, 1);
    get_is(v, c, "d", 1, "vd", 2, "ttl 1 at t0");
    tclock_set(&clk, T0 * 2 + 1);
    get_absent(v, c, "d", 1, "ttl 1 at t0+1");
    destroy(v, c);
}

FOR_VARIANTS(default_ttl_no_ttl_and_huge_ttl, all_variants)
ParameterizedTest(struct variant *v, cache, default_ttl_no_ttl_and_huge_ttl, .timeout = 30)
{
    const uint64_t D = 500;
    struct tclock clk = {T0, 0};
    ks_cache_t *c = make_clocked(v, &clk, D);
    put_ok(v, c, "dflt", 4, "1", 1, 0);                      /* default_ttl: deadline t0+D */
    put_ok(v, c, "long", 4, "2", 1, 2 * D);                  /* its own: t0+2D */
    put_ok(v, c, "never", 5, "3", 1, KS_CACHE_NO_TTL);       /* never */
    put_ok(v, c, "huge", 4, "4", 1, UINT64_MAX - 1);         /* t0 + huge: saturates, no wrap */
    put_ok(v, c, "edge", 4, "5", 1, UINT64_MAX - T0 - 1);    /* exactly UINT64_MAX - 1 */
    get_is(v, c, "huge", 4, "4", 1, "ttl UINT64_MAX-1 at once");
    tclock_set(&clk, T0 + D - 1);
    get_is(v, c, "dflt", 4, "1", 1, "default ttl at t0+D-1");
    tclock_set(&clk, T0 + D);
    get_absent(v, c, "dflt", 4, "default ttl at t0+D");
    get_is(v, c, "long", 4, "2", 1, "ttl 2D at t0+D");
    tclock_set(&clk, T0 + 2 * D);
    get_absent(v, c, "long", 4, "ttl 2D at t0+2D");
    tclock_set(&clk, UINT64_MAX / 2);
    get_is(v, c, "huge", 4, "4", 1, "ttl UINT64_MAX-1 at UINT64_MAX/2");
    tclock_set(&clk, UINT64_MAX - 2);
    get_is(v, c, "huge", 4, "4", 1, "ttl UINT64_MAX-1 at UINT64_MAX-2");
    get_is(v, c, "never", 5, "3", 1, "NO_TTL at UINT64_MAX-2");
    get_is(v, c, "edge", 4, "5", 1, "deadline UINT64_MAX-1 at UINT64_MAX-2");
    tclock_set(&clk, UINT64_MAX - 1);
    get_is(v, c, "never", 5, "3", 1, "NO_TTL at UINT64_MAX-1");
    get_is(v, c, "huge", 4, "4", 1, "ttl UINT64_MAX-1 at UINT64_MAX-1");
    get_absent(v, c, "edge", 4, "deadline UINT64_MAX-1 at UINT64_MAX-1");
    (void)ks_cache_sweep(c, 0);
    struct ks_cache_stats s = stats(c);
    ASSERT_STAT(v, s, expirations, 3);
    ASSERT_STAT(v, s, size, 2);
    destroy(v, c);

    /* default_ttl 0: a ttl of 0 never expires. */
    struct tclock clk2 = {T0, 0};
    c = make_clocked(v, &clk2, 0);
    put_ok(v, c, "z", 1, "zz", 2, 0);
    tclock_set(&clk2, UINT64_MAX - 1);
    get_is(v, c, "z", 1, "zz", 2, "ttl 0 without default_ttl, at UINT64_MAX-1");
    cr_assert_eq(ks_cache_sweep(c, 0), 0u, "[%s] sweep removed an entry with no deadline", v->name);
    destroy(v, c);
}

FOR_VARIANTS(sweep_removes_exactly_the_expired, all_variants)
ParameterizedTest(struct variant *v, cache, sweep_removes_exactly_the_expired, .timeout = 30)
{
    enum { SHORT = 50, NEVER = 30, LONG = 20 };
    const uint64_t T = 100;
    struct tclock clk = {T0, 0};
    ks_cache_t *c = make_clocked(v, &clk, 0);
    unsigned char k[KLEN];
    for (uint32_t i = 0; i < SHORT + NEVER + LONG; i++) {
        key_of(k, i);
        uint64_t ttl = i < SHORT ? T : i < SHORT + NEVER ? KS_CACHE_NO_TTL : 3 * T;
        put_ok(v, c, k, KLEN, "val", 3, ttl);
    }
    /* Gets of entries without a deadline, and misses, do not read the clock. */
    uint64_t r0 = tclock_reads(&clk);
    for (uint32_t i = SHORT; i < SHORT + NEVER; i++) {
        key_of(k, i);
        get_is(v, c, k, KLEN, "val", 3, "NO_TTL entry");
    }
    for (uint32_t i = 1000; i < 1010; i++) {
        key_of(k, i);
        get_absent(v, c, k, KLEN, "never stored");
    }
    cr_assert_eq(tclock_reads(&clk), r0, "[%s] gets of entries without a deadline read the clock",
                 v->name);

    tclock_set(&clk, T0 + T);
    size_t got = ks_cache_sweep(c, 0);
    cr_assert_eq(got, (size_t)SHORT, "[%s] sweep(0) removed %zu, expected %d", v->name, got, SHORT);
    struct ks_cache_stats s = stats(c);
    ASSERT_STAT(v, s, expirations, SHORT);
    ASSERT_STAT(v, s, size, NEVER + LONG);
    ASSERT_STAT(v, s, bytes, (NEVER + LONG) * (KLEN + 3));
    cr_assert_eq(ks_cache_sweep(c, 0), 0u, "[%s] a second sweep removed more", v->name);

    /* Budget 1: each call examines one bucket (whole buckets until at least
     * one entry has been examined), so it removes one chain's worth at most,
     * and the calls together get round to every expired entry. */
    tclock_set(&clk, T0 + 3 * T);
    size_t total = 0, calls = 0, most = 0;
    while (total < LONG && calls < 100000) {
        size_t r = ks_cache_sweep(c, 1);
        most = r > most ? r : most;
        total += r;
        calls++;
    }
    cr_assert_eq(total, (size_t)LONG, "[%s] incremental sweeps removed %zu of %d in %zu calls",
                 v->name, total, LONG, calls);
    cr_assert_lt(most, (size_t)LONG / 2, "[%s] one sweep(budget 1) removed %zu of %d", v->name,
                 most, LONG);
    cr_assert_geq(calls, (size_t)2, "[%s] budget 1 swept %d entries in only %zu calls",
                  v->name, LONG, calls);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(ks_cache_sweep(c, 1), 0u, "[%s] sweep removed more than expired", v->name);
    s = stats(c);
    ASSERT_STAT(v, s, expirations, SHORT + LONG);
    ASSERT_STAT(v, s, size, NEVER);
    for (uint32_t i = 0; i < SHORT + NEVER + LONG; i++) {
        key_of(k, i);
        if (i >= SHORT && i < SHORT + NEVER)
            get_is(v, c, k, KLEN, "val", 3, "NO_TTL after sweeps");
        else
            get_absent(v, c, k, KLEN, "swept");
    }
    destroy(v, c);
}

/* KS_CACHE_COARSE_CLOCK: the real (coarse) monotonic clock; an entry with
 * a 1 ns ttl is gone a few ticks (1-4 ms each) later, long ones stay. */
FOR_VARIANTS(coarse_clock_expires_within_a_few_ticks, all_variants)
ParameterizedTest(struct variant *v, cache, coarse_clock_expires_within_a_few_ticks, .timeout = 30)
{
    struct ks_cache_options o = opts_for(v);
    o.flags |= KS_CACHE_COARSE_CLOCK;
    ks_cache_t *c = make_with(v, &o);
    put_ok(v, c, "short", 5, "s", 1, 1);
    put_ok(v, c, "hour", 4, "h", 1, 3600 * KS_CACHE_SECOND);
    put_ok(v, c, "never", 5, "n", 1, KS_CACHE_NO_TTL);
    kt_sleep_ns(20 * KT_MS);
    get_absent(v, c, "short", 5, "ttl 1 ns, 20 ms later");
    get_is(v, c, "hour", 4, "h", 1, "ttl 1 h, 20 ms later");
    get_is(v, c, "never", 5, "n", 1, "NO_TTL, 20 ms later");
    destroy(v, c);
}

/* ---- concurrency (the workers and their bookkeeping: tests/cache_fixtures.h) --------- */

/* Last writer wins, keys owned in turn: in phase p key k is written only by
 * thread (k + p) % NT (others read it meanwhile), and the phases are
 * separated by barriers, so after each phase the key must hold its owner's
 * last write -- or be absent if the owner's last act was a delete. */
static void *owner_worker(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->r;
    uint64_t s = 0x9e3779b9u * (uint64_t)(w->id + 1), seq = 0;
    unsigned char buf[VMAX];
    struct vhdr h;
    for (int p = 0; p < r->phases; p++) {
        pthread_barrier_wait(&r->start);
        for (int round = 0; round < 4; round++)
            for (int k = 0; k < r->nkeys; k++) {
                if ((k + p) % NT == w->id) {
                    if (rnd(&s) % 8 == 0) {
                        do_delete(w, (uint32_t)k);
                        w->last[k] = 0;
                    } else if (do_put(w, (uint32_t)k, ++seq, 0) == 0) {
                        w->last[k] = seq;
                    }
                } else {
                    check_get(w, (uint32_t)(rnd(&s) % (uint64_t)r->nkeys), buf, &h);
                }
            }
        pthread_barrier_wait(&r->end);
    }
    return NULL;
}

FOR_VARIANTS(concurrent_last_writer_wins_with_owners_in_turn, all_variants)
ParameterizedTest(struct variant *v, cache, concurrent_last_writer_wins_with_owners_in_turn,
                  .timeout = 60)
{
    enum { NK = 96, PHASES = 40 };
    static struct run r;
    static struct worker w[NT];
    static uint64_t last[NT][NK];
    memset(&r, 0, sizeof r);
    memset(w, 0, sizeof w);
    memset(last, 0, sizeof last);
    r.c = make(v);
    r.nkeys = NK;
    r.phases = PHASES;
    pthread_barrier_init(&r.start, NULL, NT + 1);
    pthread_barrier_init(&r.end, NULL, NT + 1);
    pthread_t t[NT];
    for (int i = 0; i < NT; i++) {
        w[i].r = &r;
        w[i].id = i;
        w[i].last = last[i];
        kt_spawn(&t[i], owner_worker, &w[i]);
    }
    unsigned char k[KLEN], buf[VMAX];
    uint64_t main_gets = 0;
    for (int p = 0; p < PHASES; p++) {
        pthread_barrier_wait(&r.start);
        pthread_barrier_wait(&r.end);
        /* The workers wait at the next start: nothing changes while we look. */
        for (int id = 0; id < NK; id++) {
            int owner = (id + p) % NT;
            key_of(k, (uint32_t)id);
            size_t n = 0;
            int e = ks_cache_get(r.c, k, KLEN, buf, sizeof buf, &n);
            main_gets++;
            if (last[owner][id] == 0) {
                cr_assert_eq(e, ENOENT, "[%s] phase %d key %d: owner %d deleted it last, get %d",
                             v->name, p, id, owner, e);
            } else {
                struct vhdr h;
                cr_assert_eq(e, 0, "[%s] phase %d key %d: get %d", v->name, p, id, e);
                cr_assert(value_ok(buf, n, (uint32_t)id, &h), "[%s] phase %d key %d: bad value",
                          v->name, p, id);
                cr_assert(h.writer == (uint32_t)owner && h.seq == last[owner][id],
                          "[%s] phase %d key %d: holds (writer %u, seq %llu), last write was "
                          "(writer %d, seq %llu)",
                          v->name, p, id, h.writer, (unsigned long long)h.seq, owner,
                          (unsigned long long)last[owner][id]);
            }
        }
    }
    int64_t deadline = ks_now() + 20 * KS_NSEC_PER_SEC;
    for (int i = 0; i < NT; i++)
        cr_assert(kt_join_by(t[i], deadline), "[%s] worker %d did not finish", v->name, i);
    struct worker tot;
    sum_workers(v, w, NT, &tot);
    struct ks_cache_stats s = stats(r.c);
    ASSERT_STAT(v, s, gets, tot.gets + main_gets);
    ASSERT_STAT(v, s, puts, tot.puts);
    ASSERT_STAT(v, s, deletes, tot.deletes);
    pthread_barrier_destroy(&r.start);
    pthread_barrier_destroy(&r.end);
    destroy(v, r.c);
}

/* Free-for-all on a few keys: each thread writes values tagged with its own
 * increasing seq.  Whatever order the puts took effect in, the last one on
 * a key was its writer's last put on that key; so the final value must be
 * (w, last[w][k]) for some thread w. */
static void *ffa_worker(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->r;
    uint64_t s = 0x51ed27u * (uint64_t)(w->id + 3), seq = 0;
    unsigned char buf[VMAX];
    struct vhdr h;
    pthread_barrier_wait(&r->start);
    for (uint64_t i = 0;; i++) {
        if (i % 64 == 0 && ks_now() > r->end_ns)
            break;
        uint32_t k = (uint32_t)(rnd(&s) % (uint64_t)r->nkeys);
        if (rnd(&s) % 2) {
            if (do_put(w, k, ++seq, 0) == 0)
                w->last[k] = seq;
        } else {
            check_get(w, k, buf, &h);
        }
    }
    return NULL;
}

FOR_VARIANTS(concurrent_final_value_is_some_threads_last_write, all_variants)
ParameterizedTest(struct variant *v, cache, concurrent_final_value_is_some_threads_last_write,
                  .timeout = 60)
{
    enum { NK = 8 };
    static struct run r;
    static struct worker w[NT];
    static uint64_t last[NT][NK];
    memset(&r, 0, sizeof r);
    memset(w, 0, sizeof w);
    memset(last, 0, sizeof last);
    r.c = make(v);
    r.nkeys = NK;
    pthread_barrier_init(&r.start, NULL, NT);
    r.end_ns = ks_now() + RUN_NS;
    for (int i = 0; i < NT; i++) {
        w[i].r = &r;
        w[i].id = i;
        w[i].last = last[i];
    }
    run_workers(w, NT, ffa_worker);
    struct worker tot;
    sum_workers(v, w, NT, &tot);
    unsigned char k[KLEN], buf[VMAX];
    for (int id = 0; id < NK; id++) {
        key_of(k, (uint32_t)id);
        size_t n = 0;
        int e = ks_cache_get(r.c, k, KLEN, buf, sizeof buf, &n);
        struct vhdr h;
        cr_assert_eq(e, 0, "[%s] key %d: get %d", v->name, id, e);
        cr_assert(value_ok(buf, n, (uint32_t)id, &h), "[%s] key %d: bad value", v->name, id);
        cr_assert(h.writer < NT, "[%s] key %d: writer %u", v->name, id, h.writer);
        cr_assert(h.seq == last[h.writer][id],
                  "[%s] key %d holds thread %u's seq %llu, but that thread's last write to it "
                  "was seq %llu: a stale put won",
                  v->name, id, h.writer, (unsigned long long)h.seq,
                  (unsigned long long)last[h.writer][id]);
    }
    struct ks_cache_stats s = stats(r.c);
    ASSERT_STAT(v, s, puts, tot.puts);
    ASSERT_STAT(v, s, gets, tot.gets + NK);
    ASSERT_STAT(v, s, size, NK);
    pthread_barrier_destroy(&r.start);
    destroy(v, r.c);
}

/* The churn of two tests below: writers replace and delete (values of
 * varying length), readers get; every get is ENOENT or a whole value of
 * its key; afterwards the counters equal what the threads counted and
 * size/bytes what the cache holds. */
static void churn(const struct variant *v, int nkeys)
{
    static struct run r;
    static struct worker w[NT];
    memset(&r, 0, sizeof r);
    memset(w, 0, sizeof w);
    r.c = make(v);
    r.nkeys = nkeys;
    pthread_barrier_init(&r.start, NULL, NT);
    r.end_ns = ks_now() + RUN_NS;
    for (int i = 0; i < NT; i++) {
        w[i].r = &r;
        w[i].id = i;
    }
    run_workers(w, NT, churn_mixed);
    struct worker tot;
    sum_workers(v, w, NT, &tot);
    cr_assert_gt(tot.hits, 0u, "[%s] no get ever hit: the run tested nothing", v->name);
    cr_assert_gt(tot.misses, 0u, "[%s] no get ever missed: deletes never raced", v->name);
    struct ks_cache_stats s = stats(r.c);
    ASSERT_STAT(v, s, gets, tot.gets);
    ASSERT_STAT(v, s, hits, tot.hits);
    ASSERT_STAT(v, s, misses, tot.misses);
    ASSERT_STAT(v, s, puts, tot.puts);
    ASSERT_STAT(v, s, deletes, tot.deletes);
    ASSERT_STAT(v, s, expirations, 0);
    ASSERT_STAT(v, s, evictions, 0);
    check_contents(v, r.c, nkeys);
    pthread_barrier_destroy(&r.start);
    destroy(v, r.c);
}

FOR_VARIANTS(concurrent_gets_racing_deletes_see_whole_values_and_stats_add_up, all_variants)
ParameterizedTest(struct variant *v, cache,
                  concurrent_gets_racing_deletes_see_whole_values_and_stats_add_up, .timeout = 60)
{
    churn(v, 200);
}

FOR_VARIANTS(concurrent_gets_racing_replacements_of_few_keys_never_see_a_mix, all_variants)
ParameterizedTest(struct variant *v, cache,
                  concurrent_gets_racing_replacements_of_few_keys_never_see_a_mix, .timeout = 60)
{
    churn(v, 2);
}

/* Hit and miss counts are exact whatever the threads do: waves of
 * short-lived threads (so that whatever per-thread counting the cache does
 * is handed from exiting threads to new ones), then 80 at once (more than
 * a cache line per thread would give, on many machines). */
static void *getter(void *arg)
{
    struct worker *w = arg;
    unsigned char buf[VMAX];
    struct vhdr h;
    uint64_t s = 0x5bd1e995u * (uint64_t)(w->id + 1);
    /* One get each before any goes on: every thread has counted (and holds
     * whatever per-thread counter it was given) while all the rest count. */
    check_get(w, 0, buf, &h);
    pthread_barrier_wait(&w->r->start);
    for (int i = 0; i < 6000 / KT_SLOW; i++) {
        check_get(w, (uint32_t)(rnd(&s) % (uint64_t)(2 * w->r->nkeys)), buf, &h);
        if (i % 16 == 15)
            sched_yield(); /* interleave the threads, not one slice each */
    }
    return NULL;
}

FOR_VARIANTS(stats_exact_across_short_lived_and_many_threads, all_variants)
ParameterizedTest(struct variant *v, cache, stats_exact_across_short_lived_and_many_threads,
                  .timeout = 60)
{
    enum { WAVES = 6, PER_WAVE = 12, MANY = 80, NK = 100 };
    static struct run r;
    static struct worker w[MANY];
    memset(&r, 0, sizeof r);
    r.c = make(v);
    r.nkeys = NK;
    unsigned char k[KLEN], val[VMAX];
    for (uint32_t i = 0; i < NK; i++) { /* keys 0..NK-1 present, NK..2NK-1 absent */
        key_of(k, i);
        put_ok(v, r.c, k, KLEN, val, make_value(val, i, 0, 1), 0);
    }
    uint64_t gets = 0, hits = 0, misses = 0;
    for (int wave = 0; wave <= WAVES; wave++) {
        int n = wave == WAVES ? MANY : PER_WAVE;
        memset(w, 0, sizeof w);
        for (int i = 0; i < n; i++) {
            w[i].r = &r;
            w[i].id = wave * 1000 + i;
        }
        pthread_barrier_init(&r.start, NULL, (unsigned)n);
        run_workers(w, n, getter);
        pthread_barrier_destroy(&r.start);
        struct worker tot;
        sum_workers(v, w, n, &tot);
        gets += tot.gets;
        hits += tot.hits;
        misses += tot.misses;
        struct ks_cache_stats s = stats(r.c);
        ASSERT_STAT(v, s, gets, gets);
        ASSERT_STAT(v, s, hits, hits);
        ASSERT_STAT(v, s, misses, misses);
    }
    destroy(v, r.c);
}

/* TTL under threads: the clock moves only between phases (the workers wait
 * at a barrier), so in phase p it reads P and a put's deadline is exactly
 * P + ttl, which the value carries as its seq.  A get in a phase with clock
 * Q must never return a value whose deadline is <= Q. */
static void *ttl_worker(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->r;
    uint64_t s = 0x3141u * (uint64_t)(w->id + 1);
    unsigned char buf[VMAX];
    struct vhdr h;
    for (int p = 0; p < r->phases; p++) {
        pthread_barrier_wait(&r->start);
        uint64_t now = __atomic_load_n(&r->clk->now, __ATOMIC_SEQ_CST);
        for (int i = 0; i < 300; i++) {
            uint32_t k = (uint32_t)(rnd(&s) % (uint64_t)r->nkeys);
            unsigned op = (unsigned)(rnd(&s) % 100);
            if (op < 3) { /* few puts, so that entries live long enough to expire */
                unsigned q = (unsigned)(rnd(&s) % 5);
                /* multiples of the phase step: deadlines fall on phase clocks exactly */
                uint64_t ttl = q == 4 ? KS_CACHE_NO_TTL : (q + 1) * 7;
                do_put(w, k, ttl == KS_CACHE_NO_TTL ? 0 : now + ttl, ttl);
            } else if (op == 3 && i % 50 == 0) {
                (void)ks_cache_sweep(r->c, 4);
            } else if (check_get(w, k, buf, &h) == 0 && h.seq != 0 && h.seq <= now) {
                w->expired++;
            }
        }
        pthread_barrier_wait(&r->end);
    }
    return NULL;
}

FOR_VARIANTS(concurrent_gets_never_return_an_expired_entry, all_variants)
ParameterizedTest(struct variant *v, cache, concurrent_gets_never_return_an_expired_entry,
                  .timeout = 60)
{
    enum { PHASES = 60, NK = 256 };
    static struct run r;
    static struct worker w[NT];
    static struct tclock clk;
    memset(&r, 0, sizeof r);
    memset(w, 0, sizeof w);
    clk.now = T0;
    clk.reads = 0;
    r.c = make_clocked(v, &clk, 0);
    r.clk = &clk;
    r.nkeys = NK;
    r.phases = PHASES;
    pthread_barrier_init(&r.start, NULL, NT + 1);
    pthread_barrier_init(&r.end, NULL, NT + 1);
    pthread_t t[NT];
    for (int i = 0; i < NT; i++) {
        w[i].r = &r;
        w[i].id = i;
        kt_spawn(&t[i], ttl_worker, &w[i]);
    }
    for (int p = 0; p < PHASES; p++) {
        tclock_set(&clk, T0 + (uint64_t)p * 7); /* 7: see ttl_worker */
        pthread_barrier_wait(&r.start);
        pthread_barrier_wait(&r.end);
    }
    int64_t deadline = ks_now() + 20 * KS_NSEC_PER_SEC;
    for (int i = 0; i < NT; i++)
        cr_assert(kt_join_by(t[i], deadline), "[%s] worker %d did not finish", v->name, i);
    struct worker tot;
    sum_workers(v, w, NT, &tot);
    struct ks_cache_stats s = stats(r.c);
    cr_assert_gt(s.expirations, 0u, "[%s] nothing expired: the run tested nothing", v->name);
    ASSERT_STAT(v, s, gets, tot.gets);
    ASSERT_STAT(v, s, hits, tot.hits);
    ASSERT_STAT(v, s, puts, tot.puts);
    /* Much later: only NO_TTL values are left, and a full sweep leaves
     * exactly those. */
    tclock_set(&clk, UINT64_MAX - 1);
    (void)ks_cache_sweep(r.c, 0);
    unsigned char k[KLEN], buf[VMAX];
    uint64_t found = 0;
    for (int id = 0; id < NK; id++) {
        key_of(k, (uint32_t)id);
        size_t n = 0;
        struct vhdr h;
        int e = ks_cache_get(r.c, k, KLEN, buf, sizeof buf, &n);
        if (e == 0) {
            cr_assert(value_ok(buf, n, (uint32_t)id, &h), "[%s] key %d: bad value", v->name, id);
            cr_assert_eq(h.seq, 0u, "[%s] key %d: a value with a deadline outlived it", v->name, id);
            found++;
        } else {
            cr_assert_eq(e, ENOENT, "[%s] key %d: get %d", v->name, id, e);
        }
    }
    s = stats(r.c);
    ASSERT_STAT(v, s, size, found);
    pthread_barrier_destroy(&r.start);
    pthread_barrier_destroy(&r.end);
    destroy(v, r.c);
}

/* ---- reclamation --------------------------------------------------------------------- */

/* Many replacements, deletes (and, BOUNDED, evictions) while readers read;
 * then destroy.  Every entry retired through ks_epoch is freed once a
 * barrier returns (ASan/LSan check use-after-free and leaks). */
FOR_VARIANTS(reclamation_catches_up_after_churn_and_destroy, epoch_variants)
ParameterizedTest(struct variant *v, cache, reclamation_catches_up_after_churn_and_destroy,
                  .timeout = 60)
{
    static struct run r;
    static struct worker w[16];
    memset(&r, 0, sizeof r);
    memset(w, 0, sizeof w);
    struct ks_epoch_stats e0, e1;
    ks_epoch_stats(&e0);
    struct ks_cache_options o = opts_for(v);
    if (v->variant == KS_CACHE_BOUNDED)
        o.capacity = 64; /* evictions too */
    r.c = make_with(v, &o);
    r.nkeys = 128;
    pthread_barrier_init(&r.start, NULL, 16);
    r.end_ns = ks_now() + RUN_NS;
    for (int i = 0; i < 16; i++) {
        w[i].r = &r;
        w[i].id = i;
    }
    run_workers(w, 16, churn_mixed);
    struct worker tot;
    sum_workers(v, w, 16, &tot);
    struct ks_cache_stats s = stats(r.c);
    ASSERT_STAT(v, s, deletes, tot.deletes);
    if (v->variant == KS_CACHE_BOUNDED)
        cr_assert_leq(s.size, 64u, "[%s] size %llu over capacity 64", v->name,
                      (unsigned long long)s.size);
    /* at least the deleted and evicted entries went through the epoch */
    uint64_t removed = s.deletes + s.evictions;
    pthread_barrier_destroy(&r.start);
    destroy(v, r.c);
    cr_assert_eq(ks_epoch_barrier(), 0);
    ks_epoch_stats(&e1);
    cr_assert_geq(e1.retired - e0.retired, removed,
                  "[%s] %llu entries retired, but %llu were deleted or evicted", v->name,
                  (unsigned long long)(e1.retired - e0.retired), (unsigned long long)removed);
    cr_assert_eq(e1.freed, e1.retired, "[%s] after destroy and a barrier %llu retired, %llu freed",
                 v->name, (unsigned long long)e1.retired, (unsigned long long)e1.freed);
}

/* ---- capacity ------------------------------------------------------------------------- */

/* Any variant given a capacity stays within it; with one shard, evictions
 * are exactly the distinct puts beyond it. */
FOR_VARIANTS(capacity_bounds_size_and_evictions_are_exact, all_variants)
ParameterizedTest(struct variant *v, cache, capacity_bounds_size_and_evictions_are_exact,
                  .timeout = 30)
{
    enum { CAP = 64, N = 300 };
    unsigned char k[KLEN], val[VMAX];
    for (int one = 1; one >= 0; one--) {
        struct ks_cache_options o = opts_for(v);
        o.capacity = CAP;
        o.shards = one ? 1 : 0;
        ks_cache_t *c = make_with(v, &o);
        for (uint32_t i = 0; i < N; i++) {
            key_of(k, i);
            size_t n = make_value(val, i, 0, 1);
            put_ok(v, c, k, KLEN, val, n, 0);
            struct ks_cache_stats s = stats(c);
            cr_assert_leq(s.size, (uint64_t)CAP, "[%s] shards %u: size %llu over capacity after put %u",
                          v->name, o.shards, (unsigned long long)s.size, i);
            if (one)
                ASSERT_STAT(v, s, size, i + 1 < CAP ? i + 1 : CAP);
            /* distinct keys, no TTL, no deletes: each put is held or was evicted */
            cr_assert_eq(s.size + s.evictions, (uint64_t)i + 1,
                         "[%s] shards %u: size %llu + evictions %llu != puts %u", v->name,
                         o.shards, (unsigned long long)s.size, (unsigned long long)s.evictions,
                         i + 1);
        }
        struct ks_cache_stats s = stats(c);
        ASSERT_STAT(v, s, puts, N);
        if (one)
            ASSERT_STAT(v, s, evictions, N - CAP);
        check_contents(v, c, N);
        /* Replacements of present keys and random deletes keep it bounded too. */
        uint64_t seed = 99;
        for (int i = 0; i < 2000; i++) {
            uint32_t id = (uint32_t)(rnd(&seed) % N);
            key_of(k, id);
            if (i % 7 == 0) {
                int e = ks_cache_delete(c, k, KLEN);
                cr_assert(e == 0 || e == ENOENT, "[%s] delete %d", v->name, e);
            } else {
                size_t n = make_value(val, id, 1, (uint64_t)i);
                put_ok(v, c, k, KLEN, val, n, 0);
            }
            s = stats(c);
            cr_assert_leq(s.size, (uint64_t)CAP, "[%s] size %llu over capacity", v->name,
                          (unsigned long long)s.size);
        }
        check_contents(v, c, N);
        destroy(v, c);
    }
}

FOR_VARIANTS(max_bytes_bounds_bytes_and_larger_entries_are_emsgsize, all_variants)
ParameterizedTest(struct variant *v, cache, max_bytes_bounds_bytes_and_larger_entries_are_emsgsize,
                  .timeout = 30)
{
    enum { MAXB = 4096 };
    unsigned char k[KLEN], val[VMAX];
    static unsigned char big[MAXB + 1];
    for (int one = 1; one >= 0; one--) {
        struct ks_cache_options o = opts_for(v);
        o.capacity = 0;
        o.max_bytes = MAXB;
        o.shards = one ? 1 : 0;
        ks_cache_t *c = make_with(v, &o);
        uint64_t seed = 7;
        for (int i = 0; i < 3000; i++) {
            uint32_t id = (uint32_t)(rnd(&seed) % 500);
            key_of(k, id);
            size_t n = make_value(val, id, 0, (uint64_t)i);
            put_ok(v, c, k, KLEN, val, n, 0);
            struct ks_cache_stats s = stats(c);
            cr_assert_leq(s.bytes, (uint64_t)MAXB, "[%s] shards %u: bytes %llu over max_bytes",
                          v->name, o.shards, (unsigned long long)s.bytes);
        }
        check_contents(v, c, 500);
        /* An entry larger than the whole byte capacity cannot be held. */
        struct ks_cache_stats s0 = stats(c);
        int e = ks_cache_put(c, "big", 3, big, MAXB - 2, 0);
        cr_assert_eq(e, EMSGSIZE, "[%s] shards %u: entry of max_bytes+1: %d", v->name, o.shards, e);
        e = ks_cache_put(c, "", 0, big, MAXB + 1, 0);
        cr_assert_eq(e, EMSGSIZE, "[%s] shards %u: value of max_bytes+1: %d", v->name, o.shards, e);
        struct ks_cache_stats s1 = stats(c);
        assert_same_stats(v, &s0, &s1, "an EMSGSIZE put");
        if (one) { /* one shard holds max_bytes: an entry of exactly that fits, alone */
            put_ok(v, c, "big", 3, big, MAXB - 3, 0);
            s1 = stats(c);
            ASSERT_STAT(v, s1, size, 1);
            ASSERT_STAT(v, s1, bytes, MAXB);
        }
        destroy(v, c);
    }
}

FOR_VARIANTS(noevict_full_cache_is_enospc_and_unchanged, bounded_variant)
ParameterizedTest(struct variant *v, cache, noevict_full_cache_is_enospc_and_unchanged, .timeout = 30)
{
    enum { CAP = 40 };
    unsigned char k[KLEN], val[VMAX];
    for (int one = 1; one >= 0; one--) {
        struct ks_cache_options o = opts_for(v);
        o.capacity = CAP;
        o.flags |= KS_CACHE_NOEVICT;
        o.shards = one ? 1 : 0;
        ks_cache_t *c = make_with(v, &o);
        uint32_t stored = 0, refused = 0;
        for (uint32_t i = 0; i < 4 * CAP; i++) {
            key_of(k, i);
            size_t n = make_value(val, i, 0, 1);
            struct ks_cache_stats s0 = stats(c);
            int e = ks_cache_put(c, k, KLEN, val, n, 0);
            if (e == ENOSPC) {
                refused++;
                struct ks_cache_stats s1 = stats(c);
                assert_same_stats(v, &s0, &s1, "an ENOSPC put");
                get_absent(v, c, k, KLEN, "refused with ENOSPC");
            } else {
                cr_assert_eq(e, 0, "[%s] put %u: %d", v->name, i, e);
                stored++;
            }
            if (one)
                cr_assert_eq(e, i < CAP ? 0 : ENOSPC, "[%s] one shard, put %u of capacity %d: %d",
                             v->name, i, CAP, e);
        }
        cr_assert_gt(refused, 0u, "[%s] never full", v->name);
        struct ks_cache_stats s = stats(c);
        ASSERT_STAT(v, s, size, stored);
        ASSERT_STAT(v, s, evictions, 0);
        cr_assert_leq(s.size, (uint64_t)CAP);
        /* nothing stored was evicted */
        unsigned char buf[VMAX];
        uint32_t found = 0;
        for (uint32_t i = 0; i < 4 * CAP; i++) {
            key_of(k, i);
            size_t n = 0;
            if (ks_cache_get(c, k, KLEN, buf, sizeof buf, &n) == 0)
                found++;
        }
        cr_assert_eq(found, stored, "[%s] %u stored, %u found: NOEVICT evicted", v->name, stored,
                     found);
        destroy(v, c);
    }
}

/* A hot set of 100 keys, one of them read (put back on a miss) after every
 * 5 keys of a scan of 100000 one-time keys, through a cache of 1000: most of
 * the hot set must survive.  A plain FIFO of the same size keeps a key only
 * for 1000 insertions whatever its reads, and loses about a fifth of it
 * (computed below for the same sequence). */
FOR_VARIANTS(eviction_keeps_a_hot_set_through_a_scan, bounded_variant)
ParameterizedTest(struct variant *v, cache, eviction_keeps_a_hot_set_through_a_scan, .timeout = 60)
{
    enum { CAP = 1000, HOT = 100, SCAN = 100000, EVERY = 5 };
    unsigned char k[KLEN], buf[64];
    for (int one = 1; one >= 0; one--) {
        struct ks_cache_options o = opts_for(v);
        o.capacity = CAP;
        o.shards = one ? 1 : 0;
        ks_cache_t *c = make_with(v, &o);
        long fifo_last[HOT], fifo_n = 0; /* the FIFO model: insertion number of each hot key */
        for (int h = 0; h < HOT; h++)
            fifo_last[h] = -CAP - 1;
        for (uint32_t i = 0; i < SCAN; i++) {
            key_of(k, 1000000 + i);
            put_ok(v, c, k, KLEN, "scan", 4, 0);
            fifo_n++;
            if (i % EVERY == EVERY - 1) {
                int h = (int)((i / EVERY) % HOT);
                key_of(k, (uint32_t)h);
                size_t n = 0;
                int e = ks_cache_get(c, k, KLEN, buf, sizeof buf, &n);
                cr_assert(e == 0 || e == ENOENT, "[%s] get %d", v->name, e);
                if (e == ENOENT)
                    put_ok(v, c, k, KLEN, "hot", 3, 0);
                if (fifo_n - fifo_last[h] > CAP)
                    fifo_last[h] = fifo_n++;
            }
        }
        int present = 0, fifo_present = 0;
        for (int h = 0; h < HOT; h++) {
            key_of(k, (uint32_t)h);
            size_t n = 0;
            if (ks_cache_get(c, k, KLEN, buf, sizeof buf, &n) == 0)
                present++;
            if (fifo_n - fifo_last[h] <= CAP)
                fifo_present++;
        }
        cr_log_info("[%s] shards %u: %d of %d hot keys kept (plain FIFO: %d)", v->name, o.shards,
                    present, HOT, fifo_present);
        cr_assert_lt(fifo_present, HOT * 9 / 10, "the sequence does not tell S3-FIFO from FIFO");
        cr_assert_geq(present, HOT * 9 / 10, "[%s] shards %u: only %d of %d hot keys kept (FIFO: %d)",
                      v->name, o.shards, present, HOT, fifo_present);
        struct ks_cache_stats s = stats(c);
        cr_assert_leq(s.size, (uint64_t)CAP);
        destroy(v, c);
    }
}

/* Many threads over a bounded cache: at the end, within capacity and bytes,
 * and size/bytes are what the cache holds. */
static void *bounded_worker(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->r;
    uint64_t s = 0x1001u * (uint64_t)(w->id + 1), seq = 0;
    unsigned char buf[VMAX];
    struct vhdr h;
    pthread_barrier_wait(&r->start);
    for (uint64_t i = 0;; i++) {
        if (i % 64 == 0 && ks_now() > r->end_ns)
            break;
        uint32_t k = (uint32_t)(rnd(&s) % (uint64_t)r->nkeys);
        unsigned op = (unsigned)(rnd(&s) % 10);
        if (op < 4)
            do_put(w, k, ++seq, 0);
        else if (op == 4)
            do_delete(w, k);
        else
            check_get(w, k, buf, &h);
    }
    return NULL;
}

FOR_VARIANTS(concurrent_capacity_holds, all_variants)
ParameterizedTest(struct variant *v, cache, concurrent_capacity_holds, .timeout = 60)
{
    static struct run r;
    static struct worker w[NT];
    memset(&r, 0, sizeof r);
    memset(w, 0, sizeof w);
    struct ks_cache_options o = opts_for(v);
    o.capacity = 300;
    o.max_bytes = 300 * 100;
    r.c = make_with(v, &o);
    r.nkeys = 4000;
    pthread_barrier_init(&r.start, NULL, NT);
    r.end_ns = ks_now() + RUN_NS;
    for (int i = 0; i < NT; i++) {
        w[i].r = &r;
        w[i].id = i;
    }
    run_workers(w, NT, bounded_worker);
    struct worker tot;
    sum_workers(v, w, NT, &tot);
    struct ks_cache_stats s = stats(r.c);
    cr_assert_leq(s.size, 300u, "[%s] size %llu over capacity 300", v->name,
                  (unsigned long long)s.size);
    cr_assert_leq(s.bytes, 30000u, "[%s] bytes %llu over max_bytes 30000", v->name,
                  (unsigned long long)s.bytes);
    cr_assert_gt(s.evictions, 0u, "[%s] nothing evicted: the run tested nothing", v->name);
    ASSERT_STAT(v, s, gets, tot.gets);
    ASSERT_STAT(v, s, hits, tot.hits);
    ASSERT_STAT(v, s, puts, tot.puts);
    ASSERT_STAT(v, s, deletes, tot.deletes);
    check_contents(v, r.c, r.nkeys);
    pthread_barrier_destroy(&r.start);
    destroy(v, r.c);
}

/* ---- allocation failure ------------------------------------------------------------------ */

/* Lower RLIMIT_AS to what the process maps now plus `slack`: a larger
 * allocation then fails (mmap ENOMEM) under glibc and under ASan (whose
 * allocator returns NULL with allocator_may_return_null=1, as make asan
 * sets).  kt_limit_address_space's 4 TiB is no use for put, whose entries
 * are at most 2 * KS_CACHE_LEN_MAX bytes. */
static void limit_tightly(struct rlimit *old, size_t slack)
{
    cr_assert_eq(getrlimit(RLIMIT_AS, old), 0);
    FILE *f = fopen("/proc/self/statm", "r");
    cr_assert_not_null(f);
    unsigned long pages = 0;
    cr_assert_eq(fscanf(f, "%lu", &pages), 1);
    fclose(f);
    struct rlimit lim = *old;
    lim.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + slack;
    if (old->rlim_cur == RLIM_INFINITY || old->rlim_cur > lim.rlim_cur)
        cr_assert_eq(setrlimit(RLIMIT_AS, &lim), 0);
}

FOR_VARIANTS(allocation_failure_is_enomem_and_changes_nothing, all_variants)
ParameterizedTest(struct variant *v, cache, allocation_failure_is_enomem_and_changes_nothing,
                  .timeout = 60)
{
    /* create: bucket tables sized for 2^42 entries (4-8 TiB) cannot be had. */
    struct rlimit old;
    for (int one = 1; one >= 0; one--) {
        struct ks_cache_options o = opts_for(v);
        o.shards = one ? 1 : 0;
        o.expected = (size_t)1 << 42;
        ks_cache_t *sentinel = (ks_cache_t *)(uintptr_t)0xdeadbeef, *c = sentinel;
        kt_limit_address_space(&old);
        int e = ks_cache_create(&c, &o);
        kt_restore_address_space(&old);
        cr_assert_eq(e, ENOMEM, "[%s] shards %u: create for 2^42 entries returned %d", v->name,
                     o.shards, e);
        if (e == 0)
            ks_cache_destroy(c);
    }

    /* put: a 512 MiB entry with the address space limited to 64 MiB more
     * than the process maps.  The value is read-only zero pages. */
    struct ks_cache_options o = opts_for(v);
    o.max_value = (size_t)1 << 30;
    ks_cache_t *c = make_with(v, &o);
    put_ok(v, c, "old", 3, "old value", 9, 0);
    put_ok(v, c, "other", 5, "x", 1, 0);
    size_t huge = (size_t)512 << 20;
    void *zero = mmap(NULL, huge, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    cr_assert_neq(zero, MAP_FAILED);
    struct ks_cache_stats s0 = stats(c);
    limit_tightly(&old, (size_t)64 << 20);
    int e1 = ks_cache_put(c, "old", 3, zero, huge, 0); /* a replacement */
    int e2 = ks_cache_put(c, "new", 3, zero, huge, 0); /* a new key */
    setrlimit(RLIMIT_AS, &old);
    munmap(zero, huge);
    cr_assert_eq(e1, ENOMEM, "[%s] put replacing, 512 MiB over the limit: %d", v->name, e1);
    cr_assert_eq(e2, ENOMEM, "[%s] put new, 512 MiB over the limit: %d", v->name, e2);
    struct ks_cache_stats s1 = stats(c);
    assert_same_stats(v, &s0, &s1, "ENOMEM puts");
    get_is(v, c, "old", 3, "old value", 9, "the key an ENOMEM put would have replaced");
    get_is(v, c, "other", 5, "x", 1, "another key after ENOMEM puts");
    get_absent(v, c, "new", 3, "the key of an ENOMEM put");
    put_ok(v, c, "new", 3, "fine", 4, 0);
    get_is(v, c, "new", 3, "fine", 4, "after the limit is restored");
    destroy(v, c);
}

/* ---- regressions from the review of d48810d ---------------------------------------- */

/* A clock that, on its first read after being armed, plays a put of another
 * thread: it replaces "K" with v2 (ttl `ttl2` from `now`) and then moves the
 * time to `later`.  Called by the test's own thread only (the put's own
 * clock read re-enters it disarmed). */
struct replacing_clock {
    ks_cache_t *c;
    uint64_t now, later, ttl2;
    int armed, put_rc;
    unsigned reads;
};

static uint64_t replacing_clock_read(void *arg)
{
    struct replacing_clock *r = arg;
    r->reads++;
    if (r->armed) {
        r->armed = 0;
        r->put_rc = ks_cache_put(r->c, "K", 1, "v2", 2, r->ttl2);
        r->now = r->later;
    }
    return r->now;
}

/* A lock-free get finds v1 (deadline 10); before it reads the clock a put
 * replaces it with v2 (deadline 100) and the time reaches 10.  The key was
 * live at every instant, so the get must return v2, not ENOENT.  The put
 * runs inside the get's clock read on the same thread: the lock-free get
 * holds no lock then (only an epoch section, in which a retire is allowed),
 * so the put takes the shard's mutex freely.  (STRIPED reads under the
 * shard lock and cannot race this way.)  Second case: the replacement has
 * itself expired by the time the get reads the clock: a miss, and only v2
 * is an expiration (v1 was replaced while live). */
FOR_VARIANTS(get_racing_a_replacement_across_the_deadline_is_no_false_miss, epoch_variants)
ParameterizedTest(struct variant *v, cache,
                  get_racing_a_replacement_across_the_deadline_is_no_false_miss, .timeout = 30)
{
    for (int v2_live = 1; v2_live >= 0; v2_live--) {
        struct replacing_clock r = {NULL, 0, 10, 0, 0, -1, 0};
        struct ks_cache_options o = opts_for(v);
        o.shards = 1;
        o.clock = replacing_clock_read;
        o.clock_arg = &r;
        ks_cache_t *c = r.c = make_with(v, &o);
        put_ok(v, c, "K", 1, "v1", 2, 10); /* deadline 10 */
        r.now = 5;
        r.ttl2 = v2_live ? 95 : 3; /* put at 5: deadline 100, or 8 */
        r.armed = 1;
        unsigned char buf[16];
        size_t n = 0;
        int e = ks_cache_get(c, "K", 1, buf, sizeof buf, &n);
        cr_assert_eq(r.armed, 0, "[%s] the get did not read the clock for an entry with a deadline",
                     v->name);
        cr_assert_eq(r.put_rc, 0, "[%s] the racing put returned %d", v->name, r.put_rc);
        struct ks_cache_stats s = stats(c);
        if (v2_live) {
            cr_assert_eq(e, 0,
                         "[%s] get of a key replaced (deadline 10 -> 100) just before its clock "
                         "read at 10 returned %d: a false miss, the key was live throughout",
                         v->name, e);
            cr_assert(n == 2 && memcmp(buf, "v2", 2) == 0, "[%s] the get returned %zu bytes, not v2",
                      v->name, n);
            ASSERT_STAT(v, s, hits, 1);
            ASSERT_STAT(v, s, misses, 0);
            ASSERT_STAT(v, s, expirations, 0);
            ASSERT_STAT(v, s, size, 1);
            r.now = 99;
            get_is(v, c, "K", 1, "v2", 2, "v2 at 99");
            r.now = 100;
            get_absent(v, c, "K", 1, "v2 at its deadline 100");
        } else {
            cr_assert_eq(e, ENOENT, "[%s] get of a key whose replacement (deadline 8) had expired "
                         "at 10 returned %d", v->name, e);
            (void)ks_cache_sweep(c, 0);
            s = stats(c);
            ASSERT_STAT(v, s, hits, 0);
            ASSERT_STAT(v, s, misses, 1);
            ASSERT_STAT(v, s, expirations, 1);
            ASSERT_STAT(v, s, size, 0);
        }
        ASSERT_STAT(v, s, puts, 2);
        destroy(v, c);
    }
}

/* max_bytes below the shard count: shards whose share would be 0 bytes
 * (= no limit) must not exist.  Entries of one byte (a 1-byte key, an empty
 * value), 256 distinct keys, max_bytes 4, 8 shards asked for or the
 * default number. */
FOR_VARIANTS(max_bytes_below_the_shard_count_still_bounds_bytes, all_variants)
ParameterizedTest(struct variant *v, cache, max_bytes_below_the_shard_count_still_bounds_bytes,
                  .timeout = 30)
{
    enum { MAXB = 4, KEYS = 256 };
    for (int noevict = 0; noevict <= 1; noevict++)
        for (int dflt = 0; dflt <= 1; dflt++) {
            struct ks_cache_options o = opts_for(v);
            o.capacity = 0;
            o.max_bytes = MAXB;
            o.shards = dflt ? 0 : 8;
            if (noevict)
                o.flags |= KS_CACHE_NOEVICT;
            ks_cache_t *c = make_with(v, &o);
            uint64_t stored = 0, refused = 0;
            for (int i = 0; i < KEYS; i++) {
                unsigned char k = (unsigned char)i;
                int e = ks_cache_put(c, &k, 1, "", 0, 0);
                if (noevict && e == ENOSPC) {
                    refused++;
                } else {
                    cr_assert_eq(e, 0, "[%s] shards %u noevict %d: put of key %d returned %d",
                                 v->name, o.shards, noevict, i, e);
                    stored++;
                    if (!noevict)
                        get_is(v, c, &k, 1, "", 0, "the entry just put");
                }
                struct ks_cache_stats s = stats(c);
                cr_assert(s.bytes <= MAXB && s.size <= MAXB,
                          "[%s] shards %u noevict %d: after %d puts of 1-byte entries, bytes %llu "
                          "size %llu with max_bytes %d",
                          v->name, o.shards, noevict, i + 1, (unsigned long long)s.bytes,
                          (unsigned long long)s.size, MAXB);
            }
            struct ks_cache_stats s = stats(c);
            if (noevict) {
                cr_assert_gt(refused, 0u, "[%s] shards %u: NOEVICT, max_bytes %d, %d puts of 1 "
                             "byte and no ENOSPC", v->name, o.shards, MAXB, KEYS);
                ASSERT_STAT(v, s, size, stored);
                ASSERT_STAT(v, s, evictions, 0);
            } else {
                ASSERT_STAT(v, s, evictions, KEYS - s.size);
            }
            ASSERT_STAT(v, s, bytes, s.size);
            destroy(v, c);
        }
}

/* One clock read per operation at most (docs/pitfalls.md item 53), and none where no
 * deadline is involved.  One shard, so "a shard with no deadlines" is the
 * whole cache. */
FOR_VARIANTS(operations_read_the_clock_at_most_once, all_variants)
ParameterizedTest(struct variant *v, cache, operations_read_the_clock_at_most_once, .timeout = 30)
{
    for (int small = 0; small <= 1; small++) { /* small: capacity 4, puts evict */
        struct tclock clk = {T0, 0};
        struct ks_cache_options o = opts_for(v);
        o.shards = 1;
        if (small)
            o.capacity = 4;
        o.clock = tclock_read;
        o.clock_arg = &clk;
        ks_cache_t *c = make_with(v, &o);
        uint64_t r;
#define READS(op, want, what)                                                                      \
    do {                                                                                           \
        r = tclock_reads(&clk);                                                                    \
        op;                                                                                        \
        cr_assert_eq(tclock_reads(&clk) - r, (uint64_t)(want),                                     \
                     "[%s] capacity %zu: %s read the clock %llu times, expected %d", v->name,      \
                     o.capacity, what, (unsigned long long)(tclock_reads(&clk) - r), (int)(want)); \
    } while (0)
        unsigned char k[KLEN];
        for (uint32_t i = 0; i < 12; i++) { /* inserts, replacements, evictions (small) */
            key_of(k, i % 6);
            READS(put_ok(v, c, k, KLEN, "x", 1, KS_CACHE_NO_TTL), 0,
                  "a put without a ttl into a shard without deadlines");
        }
        READS(put_ok(v, c, "n", 1, "x", 1, 0), 0, "a put with ttl 0, default_ttl 0, no deadlines");
        READS(get_is(v, c, "n", 1, "x", 1, "no deadline"), 0, "a get of an entry without deadline");
        READS(cr_assert_eq(ks_cache_delete(c, "n", 1), 0), 0,
              "a delete of an entry without a deadline");
        READS(put_ok(v, c, "t", 1, "y", 1, 1000), 1, "a put with a ttl");
        READS(get_is(v, c, "t", 1, "y", 1, "deadline T0+1000"), 1,
              "a get of an entry with a deadline (live)");
        /* Now the shard has deadlines; puts keep reading once: replacements,
         * inserts, a sweep every 4 puts, evictions (small). */
        for (uint32_t i = 0; i < 12; i++) {
            key_of(k, 100 + i % 6);
            READS(put_ok(v, c, k, KLEN, "z", 1, i % 2 ? 500 : KS_CACHE_NO_TTL), 1,
                  "a put into a shard with deadlines");
        }
        if (!small) {
            READS(cr_assert_eq(ks_cache_delete(c, "t", 1), 0), 1,
                  "a delete of an entry with a deadline");
            key_of(k, 100);
            READS(cr_assert_eq(ks_cache_delete(c, k, KLEN), 0), 0,
                  "a delete of an entry without a deadline, deadlines in the shard");
        }
#undef READS
        destroy(v, c);
    }
}

/* The put reads the clock under the shard lock, so a put that waited for
 * the lock while its key's entry expired counts an expiration (not a
 * replacement) and dates the new entry from when it got the lock.
 *   t=9: thread B deletes X; its clock read, under the shard lock, waits
 *        until the main thread, putting K (entry v1, deadline 10), either
 *        reads the clock (before the lock: wrong) or sleeps in futex(2) on
 *        the lock; then the time moves to 10 and B unlocks.
 *   the put then sees v1 expired at 10: one expiration, v2's deadline 110. */
struct waiting_put {
    uint64_t now;      /* the time */
    pid_t main_tid;    /* the putting thread */
    pid_t b_tid;       /* the deleting thread, 0 until it runs */
    int b_in;          /* B is in its clock read, holding the lock */
    int main_read;     /* the main thread read the clock while B held the lock */
    int read_early;    /* ...and did so before blocking on the lock */
    int main_slept;    /* the main thread was seen blocked in futex(2) */
    ks_cache_t *c;
    int del_rc;
};

static uint64_t waiting_put_clock(void *arg)
{
    struct waiting_put *w = arg;
    if (kt_gettid() == __atomic_load_n(&w->b_tid, __ATOMIC_SEQ_CST) &&
        !__atomic_load_n(&w->b_in, __ATOMIC_SEQ_CST)) {
        __atomic_store_n(&w->b_in, 1, __ATOMIC_SEQ_CST);
        int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
        for (;;) {
            if (__atomic_load_n(&w->main_read, __ATOMIC_SEQ_CST)) {
                __atomic_store_n(&w->read_early, 1, __ATOMIC_SEQ_CST);
                break;
            }
            if (kt_in_futex(w->main_tid) == 1) {
                __atomic_store_n(&w->main_slept, 1, __ATOMIC_SEQ_CST);
                break;
            }
            if (ks_now() > end)
                break;
            kt_sleep_ns(200000);
        }
        __atomic_store_n(&w->now, 10, __ATOMIC_SEQ_CST);
        return 10;
    }
    uint64_t t = __atomic_load_n(&w->now, __ATOMIC_SEQ_CST);
    if (kt_gettid() == w->main_tid && __atomic_load_n(&w->b_in, __ATOMIC_SEQ_CST))
        __atomic_store_n(&w->main_read, 1, __ATOMIC_SEQ_CST);
    return t;
}

static void *waiting_put_deleter(void *arg)
{
    struct waiting_put *w = arg;
    __atomic_store_n(&w->b_tid, kt_gettid(), __ATOMIC_SEQ_CST);
    w->del_rc = ks_cache_delete(w->c, "X", 1); /* X has a deadline: the clock is read */
    return NULL;
}

static int waiting_put_b_in(void *arg)
{
    return __atomic_load_n(&((struct waiting_put *)arg)->b_in, __ATOMIC_SEQ_CST);
}

FOR_VARIANTS(put_waiting_for_the_lock_counts_the_expiry_it_waited_through, all_variants)
ParameterizedTest(struct variant *v, cache,
                  put_waiting_for_the_lock_counts_the_expiry_it_waited_through, .timeout = 60)
{
    struct waiting_put w;
    memset(&w, 0, sizeof w);
    w.main_tid = kt_gettid();
    struct ks_cache_options o = opts_for(v);
    o.shards = 1;
    o.clock = waiting_put_clock;
    o.clock_arg = &w;
    ks_cache_t *c = w.c = make_with(v, &o);
    put_ok(v, c, "K", 1, "v1", 2, 10);   /* deadline 10 */
    put_ok(v, c, "X", 1, "x", 1, 1000);  /* deadline 1000 */
    __atomic_store_n(&w.now, 9, __ATOMIC_SEQ_CST);
    pthread_t b;
    kt_spawn(&b, waiting_put_deleter, &w);
    cr_assert(kt_wait_for(waiting_put_b_in, &w, 20 * KS_NSEC_PER_SEC),
              "[%s] the delete never read the clock", v->name);
    put_ok(v, c, "K", 1, "v2", 2, 100);
    cr_assert(kt_join_by(b, ks_now() + 20 * KS_NSEC_PER_SEC), "[%s] the deleter hangs", v->name);
    cr_assert_eq(w.del_rc, 0, "[%s] delete of X: %d", v->name, w.del_rc);
    cr_assert_eq(w.read_early, 0,
                 "[%s] the put read the clock before it had the shard lock (another thread held "
                 "it)", v->name);
    cr_assert_eq(w.main_slept, 1, "[%s] the put was never seen waiting for the lock", v->name);
    struct ks_cache_stats s = stats(c);
    ASSERT_STAT(v, s, expirations, 1); /* v1 left after its deadline */
    ASSERT_STAT(v, s, deletes, 1);
    ASSERT_STAT(v, s, puts, 3);
    ASSERT_STAT(v, s, size, 1);
    ASSERT_STAT(v, s, evictions, 0);
    __atomic_store_n(&w.now, 109, __ATOMIC_SEQ_CST);
    get_is(v, c, "K", 1, "v2", 2, "v2 (put at 10 with ttl 100) at 109");
    __atomic_store_n(&w.now, 110, __ATOMIC_SEQ_CST);
    get_absent(v, c, "K", 1, "v2 at 110");
    destroy(v, c);
}

/* ---- issue 17: key lengths no entry can have; the ghost table's size -------------------- */

/* get and delete hashed the key before looking at its length, so a length
 * longer than any key the cache accepts read past the caller's buffer (all
 * four variants crashed with SIZE_MAX).  Such a key cannot be in the cache:
 * a miss (counted) for get, ENOENT for delete, and the key is never read.
 * The key sits just before an inaccessible page, so a read past max_key
 * bytes faults. */
FOR_VARIANTS(overlong_key_is_a_miss_and_never_read, all_variants)
ParameterizedTest(struct variant *v, cache, overlong_key_is_a_miss_and_never_read, .timeout = 30)
{
    long pg = sysconf(_SC_PAGESIZE);
    unsigned char *mem = mmap(NULL, 3 * (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq((void *)mem, MAP_FAILED);
    cr_assert_eq(mprotect(mem + 2 * pg, (size_t)pg, PROT_NONE), 0);
    struct ks_cache_options o = opts_for(v);
    o.max_key = 64;
    ks_cache_t *c = make_with(v, &o);
    unsigned char *key = mem + 2 * pg - 64; /* 64 readable bytes, then the guard page */
    memset(key, 'k', 64);
    put_ok(v, c, key, 64, "v", 1, 0);
    struct ks_cache_stats a = stats(c);
    const size_t lens[] = {65, 4096, (size_t)pg + 1, (size_t)KS_CACHE_LEN_MAX + 1, SIZE_MAX / 2, SIZE_MAX};
    char buf[8];
    for (unsigned i = 0; i < NELEM(lens); i++) {
        size_t n = 12345;
        cr_assert_eq(ks_cache_get(c, key, lens[i], buf, sizeof buf, &n), ENOENT, "[%s] get, klen %zu", v->name, lens[i]);
        cr_assert_eq(n, 12345u, "[%s] a miss wrote *vlen", v->name);
        cr_assert_eq(ks_cache_delete(c, key, lens[i]), ENOENT, "[%s] delete, klen %zu", v->name, lens[i]);
        cr_assert_eq(ks_cache_put(c, key, lens[i], "v", 1, 0), EMSGSIZE, "[%s] put, klen %zu", v->name, lens[i]);
    }
    struct ks_cache_stats b = stats(c);
    ASSERT_STAT(v, b, gets, a.gets + NELEM(lens));
    ASSERT_STAT(v, b, misses, a.misses + NELEM(lens));
    ASSERT_STAT(v, b, hits, a.hits);
    ASSERT_STAT(v, b, size, 1);
    get_is(v, c, key, 64, "v", 1, "the entry at max_key after the refusals");
    destroy(v, c);
    munmap(mem, 3 * (size_t)pg);
}

static size_t vm_size_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    cr_assert_not_null(f);
    char line[256];
    size_t kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %zu kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* A bounded cache given max_bytes alone reserved its ghost table from
 * max_bytes (max_bytes / 256 slots per shard, up to 2^30 slots of 8 bytes):
 * 64 GiB of address space for an empty cache on this machine.  The ghost
 * now follows the table (what the shard holds), up to that bound. */
Test(cache, huge_max_bytes_reserves_nothing_up_front, .timeout = 30)
{
    struct variant v = {"BOUNDED", KS_CACHE_BOUNDED, 0};
    struct ks_cache_options o = KS_CACHE_OPTIONS_INIT;
    o.variant = KS_CACHE_BOUNDED;
    o.max_bytes = (size_t)1 << 50;
    size_t before = vm_size_kib();
    ks_cache_t *c = NULL;
    int e = ks_cache_create(&c, &o);
    cr_assert_eq(e, 0, "create with max_bytes 2^50 returned %d", e);
    size_t grew = vm_size_kib() - before;
    cr_assert_lt(grew, (size_t)64 << 10, "an empty cache with max_bytes 2^50 took %zu KiB of address space", grew);
    /* And it works: many entries (tables and ghosts grow), evictions by bytes
     * in a smaller one below. */
    char k[16];
    for (int i = 0; i < 20000; i++) {
        int n = snprintf(k, sizeof k, "key%d", i);
        put_ok(&v, c, k, (size_t)n, k, (size_t)n, 0);
    }
    for (int i = 0; i < 20000; i += 997) {
        int n = snprintf(k, sizeof k, "key%d", i);
        get_is(&v, c, k, (size_t)n, k, (size_t)n, "huge max_bytes");
    }
    destroy(&v, c);
    o.max_bytes = 4096;
    o.shards = 1;
    c = make_with(&v, &o);
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(k, sizeof k, "key%d", i);
        put_ok(&v, c, k, (size_t)n, k, (size_t)n, 0);
    }
    struct ks_cache_stats s = stats(c);
    cr_assert_leq(s.bytes, 4096u);
    cr_assert_gt(s.evictions, 0u);
    destroy(&v, c);
}

/* ---- thread exit: the epoch's hook, then the cache's ---------------------------------------
 * One pthread key runs the library's thread-exit hooks (src/thread.c): the
 * epoch's first (its leave runs retire functions, which may get from a
 * cache), then the cache's (it gives the thread's hit/miss line back).
 * Each worker retires an object and lets the main thread move the epoch
 * on twice before it exits without leaving, so that its exit hook's leave
 * runs the object's function on the worker.  The function gets from a
 * cache: for half the workers the thread's first get, which arms the
 * cache's hook from inside the destructor.  80 workers (more than the 63
 * lines) one after another: every function runs on its own thread, every
 * get is counted, the epoch's records are reused. */
struct exit_run {
    ks_cache_t *c;
    int first_get_in_hook;
    int retired, go; /* worker -> main, main -> worker */
    pid_t tid, ran_on;
    int rc;
    struct ks_epoch_node node;
};

static void exit_run_fn(struct ks_epoch_node *n)
{
    struct exit_run *x = (struct exit_run *)(void *)((char *)n - offsetof(struct exit_run, node));
    unsigned char buf[8];
    x->rc = ks_cache_get(x->c, "k", 1, buf, sizeof buf, NULL);
    x->ran_on = kt_gettid();
}

static void *exit_run_worker(void *arg)
{
    struct exit_run *x = arg;
    unsigned char buf[8];
    x->tid = kt_gettid();
    if (!x->first_get_in_hook)
        cr_assert_eq(ks_cache_get(x->c, "k", 1, buf, sizeof buf, NULL), 0);
    cr_assert_eq(ks_epoch_retire(&x->node, exit_run_fn), 0);
    __atomic_store_n(&x->retired, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&x->go, __ATOMIC_ACQUIRE))
        kt_sleep_ns(100 * 1000);
    return NULL; /* without ks_epoch_leave: the exit hook leaves */
}

Test(cache, thread_exit_runs_the_epochs_hook_then_the_caches, .timeout = 60)
{
    const struct variant v = {"STRIPED", KS_CACHE_STRIPED, 0};
    ks_cache_t *c = make(&v);
    put_ok(&v, c, "k", 1, "v", 1, KS_CACHE_NO_TTL);
    cr_assert_eq(ks_epoch_barrier(), 0);
    struct ks_epoch_stats a;
    ks_epoch_stats(&a);
    uint64_t gets = 0;
    for (int i = 0; i < 80; i++) {
        struct exit_run x = {.c = c, .first_get_in_hook = i % 2, .rc = -1};
        pthread_t t;
        kt_spawn(&t, exit_run_worker, &x);
        while (!__atomic_load_n(&x.retired, __ATOMIC_ACQUIRE))
            kt_sleep_ns(100 * 1000);
        struct ks_epoch_stats e0, e;
        ks_epoch_stats(&e0);
        do { /* the worker is in no section: each flush moves the epoch on */
            ks_epoch_flush();
            ks_epoch_stats(&e);
        } while (e.epoch < e0.epoch + 2);
        __atomic_store_n(&x.go, 1, __ATOMIC_RELEASE);
        kt_join(t);
        cr_assert_eq(x.ran_on, x.tid, "worker %d: the retire function ran on %d, not in the worker's exit hook",
                     i, (int)x.ran_on);
        cr_assert_eq(x.rc, 0, "worker %d: the get in the exit hook returned %d", i, x.rc);
        gets += 2u - (unsigned)x.first_get_in_hook;
    }
    struct ks_epoch_stats b;
    ks_epoch_stats(&b);
    cr_assert_leq(b.records - a.records, 2u, "80 workers one after another made %llu epoch records",
                  (unsigned long long)(b.records - a.records));
    struct ks_cache_stats s = stats(c);
    ASSERT_STAT(&v, s, hits, gets);
    ASSERT_STAT(&v, s, misses, 0);
    destroy(&v, c);
}

/* ksync/cache.h - a concurrent key/value cache with per-entry TTL.
 * Docs (algorithm, eviction policy, reclamation, figures): docs/cache.md.
 *
 *   struct ks_cache_options o = KS_CACHE_OPTIONS_INIT;
 *   o.variant = KS_CACHE_LOCKFREE;
 *   ks_cache_t *c;
 *   ks_cache_create(&c, &o);
 *   ks_cache_put(c, "user:42", 7, "alice", 5, 30 * KS_CACHE_SECOND);
 *   char buf[64]; size_t n;
 *   if (ks_cache_get(c, "user:42", 7, buf, sizeof buf, &n) == 0) ...buf[0..n)...
 *   ks_cache_destroy(c);
 *
 * Keys and values are byte strings, copied in by put and copied out by get:
 * the caller's buffers are never kept.  An entry never changes once stored;
 * put replaces it whole, so a get sees either the old value or the new one,
 * never a mix.
 *
 * Variants (chosen at creation, same API and semantics):
 *   KS_CACHE_STRIPED   the table is split into shards by hash, each under its
 *                      own lock (a ks_mutex, or a ks_rwlock with
 *                      KS_CACHE_RWLOCK so that gets of a shard run together).
 *   KS_CACHE_LOCKFREE  gets take no lock and never wait for a writer: they
 *                      read inside a ks_epoch section; writers take a
 *                      per-shard ks_mutex, and replaced or removed entries
 *                      are freed through ks_epoch once no get can hold them.
 *   KS_CACHE_BOUNDED   KS_CACHE_LOCKFREE with a capacity (entries and/or
 *                      bytes) kept by S3-FIFO eviction; a hit's only shared
 *                      write is a relaxed bump of the entry's 2-bit access
 *                      counter (besides its thread's hit counter).
 *   A capacity may also be given to STRIPED or LOCKFREE; BOUNDED requires one.
 *   The capacity is split evenly over the shards (the key's hash picks its
 *   shard), so a put may evict, or get ENOSPC, while other shards have room;
 *   the cache as a whole never holds more than capacity / max_bytes.  An
 *   entry must fit in one shard's share of max_bytes (EMSGSIZE otherwise).
 *
 * A lock-free get never waits for a writer.  It may do one writer's job
 * afterwards -- remove the expired entry it found -- only if the shard's
 * lock is free (trylock); the one wait left is ks_epoch_retire's bound on
 * unreclaimed memory (KS_EPOCH_MAX pending objects on this thread, reached
 * only while some reader stays inside a section).
 *
 * Time: every deadline is `now + ttl` on the cache's clock (nanoseconds;
 * CLOCK_MONOTONIC unless options.clock is set, e.g. by a test).  An entry
 * is expired when now >= deadline -- at the deadline exactly -- and an
 * expired entry is never returned, swept or not: get, delete and put treat
 * it as absent.  A get reads the clock only when the entry it found has a
 * deadline (a vDSO CLOCK_MONOTONIC read costs 20-30 ns, as much as the rest
 * of a get: docs/pitfalls.md item 53).  KS_CACHE_COARSE_CLOCK uses CLOCK_MONOTONIC_COARSE
 * instead (about 3 ns, but it moves in ticks of 1-4 ms, so entries expire
 * up to a tick late by the precise clock).  Expired entries are removed by the get or put that finds them,
 * by one bucket of incremental sweeping every 4 puts of a shard, by
 * eviction, and by ks_cache_sweep(); there is no background thread.
 *
 * Statistics (ks_cache_stats) are exact: every get counts one hit or one
 * miss (hits + misses == gets); `expirations` counts entries that left the
 * cache after their deadline, `evictions` entries removed to make room
 * before their deadline; size and bytes are what the cache holds now
 * (expired entries not yet removed included).  Read while other threads
 * work, the figures are each exact but not one instant's snapshot.
 *
 * Return values (errno codes):
 *   create   0 and *out set; EINVAL (NULL, unknown variant or flag,
 *            COARSE_CLOCK with a clock function, RWLOCK on a variant other
 *            than STRIPED, NOEVICT without a capacity, BOUNDED without a
 *            capacity, limits over KS_CACHE_LEN_MAX, shards > 65536);
 *            ENOMEM.  On an error *out is untouched and nothing is
 *            allocated.  Memory up front: a bucket table per shard sized
 *            for capacity (or expected), and for a bounded cache a ghost
 *            table of the same size; max_bytes alone reserves nothing
 *            (the tables grow with the entries held).
 *   destroy  0; EINVAL (NULL).  No other call on the cache may run or
 *            follow, a second destroy included (the cache is freed).  For
 *            the LOCKFREE and BOUNDED variants it ends with
 *            ks_epoch_barrier(): it waits until every epoch section in the
 *            process has ended, so do not call it while holding a lock that
 *            a thread inside a section may wait for (see ksync/epoch.h).
 *   put      0 (stored; an existing entry for the key is replaced);
 *            EINVAL (NULL cache, NULL key or value with a nonzero length);
 *            EMSGSIZE (key over max_key, value over max_value, or an entry
 *            larger than a shard's byte capacity); ENOSPC (a bounded cache
 *            created with KS_CACHE_NOEVICT is full); ENOMEM.
 *            On any error no entry is added, replaced or evicted (expired
 *            entries the put met may have been removed, as any call may).
 *   get      0 (hit: value copied, *vlen set); ENOENT (miss: absent or
 *            expired, or klen over max_key: no entry can have that key,
 *            which is then never read; counted as a miss); ERANGE (hit, but
 *            the value is longer than cap: nothing copied, *vlen = its
 *            length); EINVAL (NULL cache, NULL key with klen > 0, NULL buf
 *            with cap > 0; not counted).  vlen may be NULL (the length is
 *            then not reported); a miss leaves *vlen alone.
 *   delete   0; ENOENT (absent or expired, or klen over max_key: the key is
 *            not read); EINVAL
 *   sweep    entries removed (expired ones).  budget 0 examines every
 *            entry; otherwise whole buckets, each shard's from where its
 *            last sweep stopped and the shards in turn, until at least
 *            `budget` entries have been examined (so a call may examine,
 *            and remove, a few more than budget: the rest of a bucket);
 *            0 for a NULL cache
 *   stats    fills *out; a NULL cache or a NULL out does nothing (*out,
 *            if any, is left as it was)
 */
#ifndef KSYNC_CACHE_H
#define KSYNC_CACHE_H

#include <ksync/common.h>
#include <ksync/time.h>
#include <stddef.h>

typedef struct ks_cache ks_cache_t;

#define KS_CACHE_STRIPED 0
#define KS_CACHE_LOCKFREE 1
#define KS_CACHE_BOUNDED 2

/* options.flags */
#define KS_CACHE_RWLOCK 1u  /* STRIPED: shards under a ks_rwlock, not a ks_mutex */
#define KS_CACHE_NOEVICT 2u /* bounded: refuse a put with ENOSPC instead of evicting */
#define KS_CACHE_COARSE_CLOCK 4u /* clock = CLOCK_MONOTONIC_COARSE (see below) */

/* one second of ttl: KS_NSEC_PER_SEC as the unsigned long long it always was */
#define KS_CACHE_SECOND ((unsigned long long)KS_NSEC_PER_SEC)
#define KS_CACHE_NO_TTL UINT64_MAX /* ttl argument: never expires */
#define KS_CACHE_LEN_MAX 0xffffffffull

struct ks_cache_options {
    int variant;             /* KS_CACHE_STRIPED, _LOCKFREE or _BOUNDED */
    unsigned flags;          /* KS_CACHE_RWLOCK, KS_CACHE_NOEVICT, KS_CACHE_COARSE_CLOCK */
    unsigned shards;         /* rounded up to a power of two, at most 65536;
                                0: 4 per online CPU; lowered so that every shard
                                gets at least one entry and one byte of capacity */
    size_t expected;         /* entries expected (sizes the tables); 0: grow from small */
    size_t capacity;         /* most entries held at once; 0: no limit */
    size_t max_bytes;        /* most key+value bytes held at once; 0: no limit */
    size_t max_key;          /* longest key accepted; 0: 4096 */
    size_t max_value;        /* longest value accepted; 0: 64 MiB */
    uint64_t default_ttl;    /* ns, used when put's ttl is 0; 0 here: never expires */
    uint64_t (*clock)(void *arg); /* ns, must not go backwards; NULL: CLOCK_MONOTONIC */
    void *clock_arg;
};

#define KS_CACHE_OPTIONS_INIT {KS_CACHE_STRIPED, 0, 0, 0, 0, 0, 0, 0, 0, NULL, NULL}

struct ks_cache_stats {
    uint64_t gets, hits, misses; /* hits + misses == gets */
    uint64_t puts;               /* puts that stored an entry */
    uint64_t deletes;            /* deletes that removed a live entry */
    uint64_t expirations;        /* entries removed after their deadline */
    uint64_t evictions;          /* live entries removed to make room */
    uint64_t size;               /* entries held now */
    uint64_t bytes;              /* key + value bytes held now */
};

KS_EXTERN_C_BEGIN

KS_API int ks_cache_create(ks_cache_t **out, const struct ks_cache_options *opt);
KS_API int ks_cache_destroy(ks_cache_t *c);

/* ttl in ns: 0 means options.default_ttl, KS_CACHE_NO_TTL never expires. */
KS_API int ks_cache_put(ks_cache_t *c, const void *key, size_t klen, const void *val, size_t vlen,
                        uint64_t ttl);
KS_API int ks_cache_get(ks_cache_t *c, const void *key, size_t klen, void *buf, size_t cap,
                        size_t *vlen);
KS_API int ks_cache_delete(ks_cache_t *c, const void *key, size_t klen);
KS_API size_t ks_cache_sweep(ks_cache_t *c, size_t budget);
KS_API void ks_cache_stats(ks_cache_t *c, struct ks_cache_stats *out);

KS_EXTERN_C_END

#endif

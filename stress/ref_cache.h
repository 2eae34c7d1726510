/* stress/ref_cache.h - the key/value caches compared by S13 (s_cache.c) and
 * by bench section 10 (b_cache.c), behind one table of operations.
 *
 *   ksync_striped     ks_cache, KS_CACHE_STRIPED (a ks_mutex per shard)
 *   ksync_striped_rw  ks_cache, KS_CACHE_STRIPED | KS_CACHE_RWLOCK
 *   ksync_lockfree    ks_cache, KS_CACHE_LOCKFREE (gets under ks_epoch)
 *   ksync_bounded     ks_cache, KS_CACHE_BOUNDED (S3-FIFO) with the capacity
 *                     asked for; asked for none, it gets 16 shards of
 *                     `expected` entries each, so it never evicts
 *   ck_ht             Concurrency Kit's ck_ht (CK_HT_MODE_BYTESTRING):
 *                     single writer / many readers, so puts, deletes and
 *                     sweeps take one pthread mutex; gets take no lock
 *                     (ck_epoch section); replaced and removed entries and
 *                     the table memory ck_ht frees with defer=true are
 *                     reclaimed through ck_epoch
 *   urcu_lfht         liburcu's rculfhash (auto-resize; memb flavour):
 *                     add_replace / lookup / del under rcu_read_lock,
 *                     replaced and removed nodes freed by call_rcu
 *   pthread_mutex     one pthread mutex around a chained hash table
 *                     (the baseline)
 *
 * TTL is the same everywhere: put stores deadline = now + ttl read from the
 * cache's clock (`ttl` 0 or RC_NO_TTL: never expires), and an entry is
 * absent once now >= deadline; a get reads the clock only when the entry
 * it found has a deadline.  The references count gets, hits, misses,
 * puts and deletes themselves, in per-thread handles folded into the
 * cache's totals when the thread leaves; ksync's figures are its own
 * ks_cache_stats.
 *
 * Threads: every thread that calls an operation (the creating thread
 * included, for a pre-fill or a final read-back) first calls thread_enter
 * and passes the handle it returns; it calls thread_leave before it exits
 * and before destroy.  stats() is complete once every handle has left.
 * A handle belongs to one thread.
 */
#ifndef KS_STRESS_REF_CACHE_H
#define KS_STRESS_REF_CACHE_H

#include <stddef.h>
#include <stdint.h>

#define RC_NO_TTL UINT64_MAX /* == KS_CACHE_NO_TTL */

typedef uint64_t (*rc_clock_fn)(void *arg); /* ns, never backwards */

struct rc_params {
    size_t expected;     /* keys expected (sizes the tables) */
    size_t capacity;     /* ksync_bounded: entries; 0: enough never to evict */
    rc_clock_fn clock;   /* NULL: CLOCK_MONOTONIC */
    void *clock_arg;
};

struct rc_stats {
    uint64_t gets, hits, misses; /* every get is one hit or one miss */
    uint64_t puts;               /* puts that stored an entry */
    uint64_t deletes;            /* deletes that removed a live entry */
    uint64_t expirations;        /* expired entries removed (where counted) */
    uint64_t evictions;          /* ksync_bounded; 0 elsewhere */
    uint64_t size;               /* entries held (expired ones not yet removed too) */
    uint64_t bytes;              /* key + value bytes held; ksync only (0 elsewhere) */
};

struct rc_cache;  /* one cache; starts with the implementation's table */
struct rc_thread; /* one thread's handle */

struct rc_impl {
    const char *name;
    int ksync;   /* 1: a ks_cache variant, 0: a reference */
    int bounded; /* evicts when full (capacity) */
    int (*create)(struct rc_cache **out, const struct rc_params *p); /* 0 or errno */
    void (*destroy)(struct rc_cache *c);
    struct rc_thread *(*thread_enter)(struct rc_cache *c); /* NULL: out of memory */
    void (*thread_leave)(struct rc_cache *c, struct rc_thread *t);
    /* put 0 / ENOMEM / ENOSPC; get 0 / ENOENT / ERANGE (*vlen set);
     * del 0 / ENOENT; sweep: expired entries removed (budget: entries
     * examined, 0 = all; ck_ht and urcu_lfht always sweep everything). */
    int (*put)(struct rc_cache *c, struct rc_thread *t, const void *key, size_t klen,
               const void *val, size_t vlen, uint64_t ttl);
    int (*get)(struct rc_cache *c, struct rc_thread *t, const void *key, size_t klen, void *buf,
               size_t cap, size_t *vlen);
    int (*del)(struct rc_cache *c, struct rc_thread *t, const void *key, size_t klen);
    size_t (*sweep)(struct rc_cache *c, struct rc_thread *t, size_t budget);
    void (*stats)(struct rc_cache *c, struct rc_stats *out);
};

/* Every implementation, ksync first; ends with a {0} entry. */
extern const struct rc_impl rc_impls[];
/* By name, or NULL. */
const struct rc_impl *rc_find(const char *name);

#endif

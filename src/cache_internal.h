/* src/cache_internal.h - what the three files of ks_cache share:
 *   src/cache.c        the public API (ks_cache_*), hashing, hit/miss
 *                      counters, the choice of shard lock
 *   src/cache_table.c  the sharded hash table: buckets, unlinking,
 *                      sweeping, growth, the garbage list
 *   src/cache_evict.c  the eviction policy: S3-FIFO queues, ghost table
 * Docs: docs/cache.md.  The state and the memory-order rules are described
 * at the top of src/cache.c.  What the get and put paths call often is
 * static inline here; the rest is KS_HIDDEN ks_cache_* in its file. */
#ifndef KS_CACHE_INTERNAL_H
#define KS_CACHE_INTERNAL_H

#include "internal.h"

#include <ksync/cache.h>
#include <ksync/epoch.h>
#include <ksync/mutex.h>
#include <ksync/rwlock.h>

#include <string.h>

#define STAT_LINES 64u     /* hit/miss counter lines, one line each, by thread */
#define FREQ_MAX 3         /* S3-FIFO's 2-bit access counter */
#define MIN_BUCKETS 8u

/* Which eviction queue an entry is on (struct entry.where). */
enum { FIFO_NONE, FIFO_SMALL, FIFO_MAIN };

struct entry {
    struct entry *next; /* hash chain: release store, acquire load */
    union {
        struct { /* eviction queue, writers only, while linked */
            struct entry *newer, *older;
        } fifo;
        struct ks_epoch_node rcu; /* after unlinking: garbage list, epoch */
    } u;
    uint64_t hash;
    uint64_t deadline; /* 0: never */
    uint32_t klen, vlen;
    uint8_t freq;  /* bounded: gets bump it (relaxed), eviction reads it */
    uint8_t where; /* FIFO_*: which queue, writers only */
    unsigned char data[]; /* key, then value */
};

struct table {
    struct ks_epoch_node rcu;
    size_t mask;
    struct entry *b[];
};

struct fifo {
    struct entry *newest, *oldest;
    size_t n, bytes;
};

struct shard {
    union {
        ks_mutex_t m;
        ks_rwlock_t rw;
    } lock __attribute__((aligned(KS_CACHELINE)));
    /* under the lock; loaded relaxed by ks_cache_stats */
    size_t count, bytes, timed; /* timed: entries with a deadline */
    uint64_t puts, deletes, expirations, evictions;
    size_t sweep_pos;
    size_t cap, cap_bytes; /* this shard's share; 0: none */
    struct fifo small, main;
    uint64_t *ghost; /* hashes recently evicted from `small`; under the lock */
    size_t ghost_mask;
    size_t ghost_max; /* slots it may grow to (ks_cache_ghost_bound) */
    /* The table, on a line of its own: every lock-free get loads it, and on
     * the lock's line (where it was) a get missed it after every put of the
     * shard from another CPU (docs/cache.md, "What a get shares with a
     * put").  Release store (growth), acquire load (readers). */
    struct table *t __attribute__((aligned(KS_CACHELINE)));
    char t_pad[KS_CACHELINE - sizeof(struct table *)]; /* the rest of t's line */
};
/* t starts a line after every writer's field, and the padding right after it
 * fills that line: a field added after t_pad starts the next one. */
_Static_assert(offsetof(struct shard, t) >= offsetof(struct shard, ghost_max) + sizeof(size_t) &&
                   offsetof(struct shard, t_pad) == offsetof(struct shard, t) + sizeof(struct table *) &&
                   sizeof(struct shard) == offsetof(struct shard, t) + KS_CACHELINE,
               "a shard's table pointer shares its line with nothing a writer changes");

struct hitmiss {
    uint64_t hits, misses;
} __attribute__((aligned(KS_CACHELINE)));

struct ks_cache {
    int lockfree; /* readers use ks_epoch, writers retire */
    int rw;       /* shard locks are ks_rwlocks */
    int bounded;
    int noevict;
    unsigned shard_mask; /* shards - 1 */
    size_t max_key, max_value;
    uint64_t default_ttl;
    uint64_t (*clock)(void *);
    void *clock_arg;
    uint64_t seed;
    size_t sweep_next __attribute__((aligned(KS_CACHELINE))); /* next shard to sweep */
    struct hitmiss hm[STAT_LINES];
    struct shard *shards;
    unsigned nshards;
};

/* ---- small helpers ------------------------------------------------------ */

static inline int expired(const struct entry *e, uint64_t now)
{
    return e->deadline && now >= e->deadline;
}

/* Key comparison, inlined for the short keys caches mostly hold (a memcmp
 * call was 7% of a get over 100k keys). */
static inline int key_eq(const unsigned char *a, const unsigned char *b, size_t n)
{
    while (n >= 8) {
        uint64_t x, y;
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y)
            return 0;
        a += 8;
        b += 8;
        n -= 8;
    }
    while (n--)
        if (*a++ != *b++)
            return 0;
    return 1;
}

static inline int entry_is(const struct entry *e, uint64_t h, const void *key, size_t klen)
{
    return e->hash == h && e->klen == klen && key_eq(e->data, key, klen);
}

/* Writers' counters: only changed under the shard lock, loaded by stats. */
static inline void stat_inc(uint64_t *x)
{
    /* relaxed: a statistic; the shard lock orders the writers */
    __atomic_store_n(x, __atomic_load_n(x, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

static inline void set_size(size_t *x, size_t v)
{
    __atomic_store_n(x, v, __ATOMIC_RELAXED); /* relaxed: a statistic (see stat_inc) */
}

static inline uint8_t freq_of(struct entry *e)
{
    return __atomic_load_n(&e->freq, __ATOMIC_RELAXED); /* relaxed: a hint, see get */
}

static inline void freq_set(struct entry *e, uint8_t f)
{
    __atomic_store_n(&e->freq, f, __ATOMIC_RELAXED); /* relaxed: a hint, see get */
}

static inline struct entry *link_load(struct entry *const *p)
{
    /* acquire: pairs with link_store; see the header comment of src/cache.c */
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void link_store(struct entry **p, struct entry *e)
{
    /* release: pairs with link_load in readers; e's fields are written */
    __atomic_store_n(p, e, __ATOMIC_RELEASE);
}

static inline size_t esize(const struct entry *e)
{
    return (size_t)e->klen + e->vlen;
}

/* ---- garbage: unlinked entries and tables, freed after the lock ---------- */
/* (src/cache_table.c) */

KS_HIDDEN void ks_cache_free_entry(struct ks_epoch_node *n);
KS_HIDDEN void ks_cache_free_table(struct ks_epoch_node *n);

/* Put n on the garbage list *g, to be freed by fn after the lock. */
static inline void garbage_add(struct ks_epoch_node **g, struct ks_epoch_node *n,
                               void (*fn)(struct ks_epoch_node *))
{
    n->fn = fn;
    n->next = *g;
    *g = n;
}

/* After unlocking: free now (readers hold the lock: none can see it) or
 * retire through the epoch (lock-free readers may still be on it). */
KS_HIDDEN void ks_cache_dispose(const ks_cache_t *c, struct ks_epoch_node *g);

/* ---- tables (src/cache_table.c) ------------------------------------------ */

KS_HIDDEN struct table *ks_cache_table_new(size_t nb);

/* Find key in t; *pp is set to the link that points to the result (or to
 * the chain's end).  Writers only (relaxed would do; link_load is free on
 * x86 and keeps one loop). */
KS_HIDDEN struct entry *ks_cache_find_locked(struct table *t, uint64_t h, const void *key,
                                             size_t klen, struct entry ***pp);

/* The null link that ends h's chain: new entries are appended there, so a
 * chain keeps its keys in insertion order and keys that have been in the
 * cache longest are found first (a stationary skewed load puts its hot keys
 * in early; inserting at the head buried them under every later key). */
static inline struct entry **chain_end(struct table *t, uint64_t h)
{
    struct entry **p = &t->b[h & t->mask];
    struct entry *x;
    while ((x = link_load(p)))
        p = &x->next;
    return p;
}

/* The link that points to e (which is in t). */
static inline struct entry **link_to(struct table *t, struct entry *e)
{
    struct entry **p = &t->b[e->hash & t->mask];
    struct entry *x;
    while ((x = link_load(p)) != e)
        p = &x->next;
    return p;
}

/* Unlink e (found through link p) and put it on the garbage list. */
KS_HIDDEN void ks_cache_unlink(struct shard *s, struct entry **p, struct entry *e,
                               struct ks_epoch_node **g);

/* Sweep up to nb buckets of s from its sweep position; returns the entries
 * removed and adds those examined to *seen. */
KS_HIDDEN size_t ks_cache_sweep_locked(struct shard *s, size_t nb, uint64_t now,
                                       struct ks_epoch_node **g, size_t *seen);

/* Double s's table.  STRIPED relinks the entries (no reader is inside);
 * LOCKFREE copies them, publishes the copy and retires the old ones. */
KS_HIDDEN void ks_cache_grow(const ks_cache_t *c, struct shard *s, struct ks_epoch_node **g);

/* ---- S3-FIFO queues and ghosts (bounded; src/cache_evict.c) -------------- */

/* e becomes the newest entry of queue `where` of s. */
static inline void fifo_push(struct shard *s, struct entry *e, int where)
{
    struct fifo *q = where == FIFO_SMALL ? &s->small : &s->main;
    e->where = (uint8_t)where;
    e->u.fifo.newer = NULL;
    e->u.fifo.older = q->newest;
    if (q->newest)
        q->newest->u.fifo.newer = e;
    else
        q->oldest = e;
    q->newest = e;
    q->n++;
    q->bytes += esize(e);
}

KS_HIDDEN void ks_cache_fifo_remove(struct shard *s, struct entry *e);

/* n takes old's place in its queue (replacement, growth). */
KS_HIDDEN void ks_cache_fifo_replace(struct shard *s, struct entry *old, struct entry *n);

/* h's slot in s's ghost table: h | 1 if h was evicted from `small` lately. */
static inline uint64_t *ghost_slot(struct shard *s, uint64_t h)
{
    return &s->ghost[(h >> 20) & s->ghost_mask];
}

/* The most slots a shard's ghost table may have: a power of two at least
 * its entry capacity, or with max_bytes alone one slot per 256 bytes of its
 * share (~3%), at most 2^30. */
KS_HIDDEN size_t ks_cache_ghost_bound(const struct shard *s);

/* The ghost table follows the hash table (what the shard holds now, not what
 * max_bytes would allow: issue 17 found 64 GiB reserved for an empty cache),
 * up to ks_cache_ghost_bound.  Called under the shard's lock (the ghost is
 * only used there); on a failed allocation the old table stays (it is a
 * hint). */
KS_HIDDEN void ks_cache_ghost_follow(struct shard *s);

/* Would s hold more than its share with add_n more entries and add_bytes
 * more bytes? */
static inline int over_capacity(const struct shard *s, size_t add_n, size_t add_bytes)
{
    return (s->cap && s->count + add_n > s->cap) ||
           (s->cap_bytes && s->bytes + add_bytes > s->cap_bytes);
}

/* Remove one entry of s to make room; `keep` is never chosen.  Returns 0
 * if nothing could be removed (the policy is described in
 * src/cache_evict.c). */
KS_HIDDEN int ks_cache_evict_one(struct shard *s, uint64_t now, struct entry *keep,
                                 struct ks_epoch_node **g);

#endif

/* src/cache.c - concurrent TTL cache: striped, lock-free-read and bounded
 * (S3-FIFO) variants over one sharded chained hash table.
 * Docs: docs/cache.md (algorithm, why it is correct, eviction, figures).
 *
 * Layout: the hash picks a shard (bits 48..63) and, inside the shard's
 * table, a bucket (low bits).  A bucket is a singly linked chain of
 * entries; an entry is immutable once linked (put links a new entry in
 * place of the old one), except for its `freq` byte (bounded variant).
 *
 * Writers (put, delete, sweep, expiry on access, eviction, growth) hold the
 * shard's lock -- a ks_mutex, or a ks_rwlock write lock for
 * STRIPED|RWLOCK.  Readers:
 *   STRIPED   hold the same lock (shared, for RWLOCK) while they look;
 *   LOCKFREE  take no lock: they run inside a ks_epoch section and follow
 *             the chain with acquire loads.  Writers publish with release
 *             stores (an entry's fields, written before, are visible to a
 *             reader that finds it), unlink an entry by one release store
 *             of its predecessor's link (the unlinked entry keeps its own
 *             `next`, so a reader standing on it still reaches the rest of
 *             the chain), and hand it to ks_epoch_retire after unlocking:
 *             it is freed only once every section that could have found
 *             it has ended.  Growth copies the entries into a new table,
 *             publishes it with one release store and retires the old
 *             table and entries: a reader on the old table sees the chains
 *             as they were when growth began, all complete.
 * Memory orders: every load a lock-free reader makes of a link (shard
 * table, bucket, next) is acquire and pairs with the release store that
 * published it (link_store); writers under the lock may load links relaxed
 * (the lock orders them).
 */
#include "internal.h"

#include <ksync/cache.h>
#include <ksync/epoch.h>
#include <ksync/mutex.h>
#include <ksync/once.h>
#include <ksync/rwlock.h>

#include <pthread.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define STAT_STRIPES 64u   /* hit/miss counters, one line each, by thread */
#define SWEEP_EVERY 4u     /* a put sweeps one bucket every 4 puts of its shard */
#define FREQ_MAX 3         /* S3-FIFO's 2-bit access counter */
#define MIN_BUCKETS 8u
#define SHARDS_MAX (1u << 16)

enum { Q_NONE, Q_SMALL, Q_MAIN };

struct entry {
    struct entry *next; /* hash chain: release store, acquire load */
    union {
        struct { /* eviction queue, writers only, while linked */
            struct entry *prev, *next;
        } q;
        struct ks_epoch_node rcu; /* after unlinking: garbage list, epoch */
    } u;
    uint64_t hash;
    uint64_t deadline; /* 0: never */
    uint32_t klen, vlen;
    uint8_t freq;  /* bounded: gets bump it (relaxed), eviction reads it */
    uint8_t where; /* Q_*: which queue, writers only */
    unsigned char data[]; /* key, then value */
};

struct table {
    struct ks_epoch_node rcu;
    size_t mask;
    struct entry *b[];
};

struct fifo {
    struct entry *head, *tail; /* head newest, tail oldest */
    size_t n, bytes;
};

struct shard {
    union {
        ks_mutex_t m;
        ks_rwlock_t rw;
    } lock __attribute__((aligned(KS_CACHELINE)));
    struct table *t; /* release store (growth), acquire load (readers) */
    /* under the lock; loaded relaxed by ks_cache_stats */
    size_t count, bytes, timed; /* timed: entries with a deadline */
    uint64_t puts, deletes, expirations, evictions;
    size_t sweep_pos;
    size_t cap, cap_bytes; /* this shard's share; 0: none */
    struct fifo small, main;
    uint64_t *ghost; /* hashes recently evicted from `small`; under the lock */
    size_t ghost_mask;
    size_t ghost_max; /* slots it may grow to (ghost_bound) */
};

struct hitmiss {
    uint64_t hits, misses;
} __attribute__((aligned(KS_CACHELINE)));

struct ks_cache {
    int variant;
    int lockfree; /* readers use ks_epoch, writers retire */
    int rw;       /* shard locks are ks_rwlocks */
    int bounded;
    int noevict;
    unsigned shift_mask; /* shards - 1 */
    size_t max_key, max_value;
    uint64_t default_ttl;
    uint64_t (*clock)(void *);
    void *clock_arg;
    uint64_t seed;
    size_t sweep_next __attribute__((aligned(KS_CACHELINE))); /* next shard to sweep */
    struct hitmiss hm[STAT_STRIPES];
    struct shard *shards;
    unsigned nshards;
};

/* ---- small helpers ------------------------------------------------------ */

static uint64_t monotonic_ns(void *arg)
{
    (void)arg;
    return (uint64_t)ks_now();
}

static uint64_t coarse_ns(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t now_of(const ks_cache_t *c)
{
    return c->clock(c->clock_arg);
}

static inline int expired(const struct entry *e, uint64_t now)
{
    return e->deadline && now >= e->deadline;
}

/* splitmix64's finaliser (Steele, Lea, Flood, OOPSLA 2014). */
static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A keyed multiply-rotate hash over 8-byte words, finished by mix64.  Not a
 * cryptographic PRF: the random per-cache seed makes collisions hard to
 * aim at from outside, it does not make them impossible (docs/cache.md). */
static uint64_t hash_bytes(uint64_t seed, const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = seed ^ (n * 0x9e3779b97f4a7c15ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ (w * 0xff51afd7ed558ccdull));
        h = ((h << 31) | (h >> 33)) * 0xc4ceb9fe1a85ec53ull;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, s, n);
        h ^= w * 0xff51afd7ed558ccdull;
        h = ((h << 31) | (h >> 33)) * 0xc4ceb9fe1a85ec53ull;
    }
    return mix64(h);
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

static inline struct shard *shard_of(const ks_cache_t *c, uint64_t h)
{
    return &c->shards[(h >> 48) & c->shift_mask];
}

/* Hit/miss counters.  Lines 1..STAT_STRIPES-1 are each owned by one thread
 * at a time (claimed on its first get, released by a thread-exit
 * destructor), which counts with a plain relaxed load and store -- no
 * locked instruction on the get path.  Threads beyond that share line 0
 * and count with fetch_add.  Counts are never lost: a line has one writer
 * at a time, and the release/acquire pair on its ownership flag orders the
 * previous owner's last count before the next owner's first. */
#define SLOT_SHARED STAT_STRIPES
static uint32_t slot_owned[STAT_STRIPES];
static KS_TLS unsigned my_slot; /* 0: none yet; SLOT_SHARED: line 0 */
static pthread_key_t slot_key;
static ks_once_t slot_once = KS_ONCE_INIT;
static int slot_key_ok;

static void slot_release(void *p)
{
    unsigned s = (unsigned)(uintptr_t)p;
    my_slot = SLOT_SHARED; /* gets from later destructors use line 0 */
    /* release: pairs with the acquire CAS in slot_claim */
    __atomic_store_n(&slot_owned[s], 0, __ATOMIC_RELEASE);
}

static void make_slot_key(void)
{
    slot_key_ok = pthread_key_create(&slot_key, slot_release) == 0;
}

static __attribute__((noinline)) unsigned slot_claim(void)
{
    ks_once(&slot_once, make_slot_key);
    for (unsigned s = 1; slot_key_ok && s < STAT_STRIPES; s++) {
        uint32_t zero = 0;
        /* relaxed peek; acquire CAS: pairs with the release in slot_release */
        if (__atomic_load_n(&slot_owned[s], __ATOMIC_RELAXED) ||
            !__atomic_compare_exchange_n(&slot_owned[s], &zero, 1, 0, __ATOMIC_ACQUIRE,
                                         __ATOMIC_RELAXED))
            continue;
        if (pthread_setspecific(slot_key, (void *)(uintptr_t)s) == 0)
            return my_slot = s;
        __atomic_store_n(&slot_owned[s], 0, __ATOMIC_RELEASE); /* release: as in slot_release */
        break;
    }
    return my_slot = SLOT_SHARED;
}

static inline void count_get(ks_cache_t *c, int miss)
{
    unsigned s = my_slot;
    if (KS_UNLIKELY(!s))
        s = slot_claim();
    if (KS_UNLIKELY(s == SLOT_SHARED)) {
        /* relaxed: a statistic, summed by ks_cache_stats */
        __atomic_fetch_add(miss ? &c->hm[0].misses : &c->hm[0].hits, 1, __ATOMIC_RELAXED);
    } else {
        uint64_t *x = miss ? &c->hm[s].misses : &c->hm[s].hits;
        /* relaxed: a statistic with one writer (this thread owns line s) */
        __atomic_store_n(x, __atomic_load_n(x, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    }
}

/* Writers' counters: only changed under the shard lock, loaded by stats. */
static inline void bump(uint64_t *x)
{
    /* relaxed: a statistic; the shard lock orders the writers */
    __atomic_store_n(x, __atomic_load_n(x, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

static inline void set_size(size_t *x, size_t v)
{
    __atomic_store_n(x, v, __ATOMIC_RELAXED); /* relaxed: a statistic (see bump) */
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
    /* acquire: pairs with link_store; see the header comment */
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

/* ---- locks -------------------------------------------------------------- */

static inline void wlock(const ks_cache_t *c, struct shard *s)
{
    if (c->rw)
        ks_rwlock_wrlock(&s->lock.rw);
    else
        ks_mutex_lock(&s->lock.m);
}

static inline int wtrylock(const ks_cache_t *c, struct shard *s)
{
    return c->rw ? ks_rwlock_trywrlock(&s->lock.rw) : ks_mutex_trylock(&s->lock.m);
}

static inline void wunlock(const ks_cache_t *c, struct shard *s)
{
    if (c->rw)
        ks_rwlock_unlock(&s->lock.rw);
    else
        ks_mutex_unlock(&s->lock.m);
}

static inline void rlock(const ks_cache_t *c, struct shard *s)
{
    if (c->rw)
        ks_rwlock_rdlock(&s->lock.rw);
    else
        ks_mutex_lock(&s->lock.m);
}

/* ---- garbage: unlinked entries and tables, freed after the lock ---------- */

static void free_entry(struct ks_epoch_node *n)
{
    free((char *)n - offsetof(struct entry, u.rcu));
}

static void free_table(struct ks_epoch_node *n)
{
    free((char *)n - offsetof(struct table, rcu));
}

static inline void junk(struct ks_epoch_node **g, struct ks_epoch_node *n,
                        void (*fn)(struct ks_epoch_node *))
{
    n->fn = fn;
    n->next = *g;
    *g = n;
}

/* After unlocking: free now (readers hold the lock: none can see it) or
 * retire through the epoch (lock-free readers may still be on it). */
static void dispose(const ks_cache_t *c, struct ks_epoch_node *g)
{
    while (g) {
        struct ks_epoch_node *next = g->next;
        if (!c->lockfree) {
            g->fn(g);
        } else if (ks_epoch_retire(g, g->fn) != 0) {
            /* ENOMEM: this thread has no epoch record, so it is in no
             * section and the barrier cannot deadlock: wait for every
             * reader that could see the object, then free it here. */
            ks_epoch_barrier();
            g->fn(g);
        }
        g = next;
    }
}

/* ---- tables -------------------------------------------------------------- */

static struct table *table_new(size_t nb)
{
    if (nb > (SIZE_MAX - sizeof(struct table)) / sizeof(struct entry *))
        return NULL;
    struct table *t = calloc(1, sizeof *t + nb * sizeof(struct entry *));
    if (t)
        t->mask = nb - 1;
    return t;
}

/* Find key in t; *pp is set to the link that points to the result (or to
 * the chain's end).  Writers only (relaxed would do; link_load is free on
 * x86 and keeps one loop). */
static struct entry *find_locked(struct table *t, uint64_t h, const void *key, size_t klen,
                                 struct entry ***pp)
{
    struct entry **p = &t->b[h & t->mask];
    struct entry *e;
    while ((e = link_load(p))) {
        if (entry_is(e, h, key, klen))
            break;
        p = &e->next;
    }
    *pp = p;
    return e;
}

/* The null link that ends h's chain: new entries are appended there, so a
 * chain keeps its keys in insertion order and keys that have been in the
 * cache longest are found first (a stationary skewed load puts its hot keys
 * in early; inserting at the head buried them under every later key). */
static struct entry **chain_end(struct table *t, uint64_t h)
{
    struct entry **p = &t->b[h & t->mask];
    struct entry *x;
    while ((x = link_load(p)))
        p = &x->next;
    return p;
}

static struct entry **link_to(struct table *t, struct entry *e)
{
    struct entry **p = &t->b[e->hash & t->mask];
    struct entry *x;
    while ((x = link_load(p)) != e)
        p = &x->next;
    return p;
}

/* ---- S3-FIFO queues (bounded) ------------------------------------------- */

static inline struct fifo *fifo_of(struct shard *s, struct entry *e)
{
    return e->where == Q_SMALL ? &s->small : &s->main;
}

static void q_push(struct shard *s, struct entry *e, int where)
{
    struct fifo *q = where == Q_SMALL ? &s->small : &s->main;
    e->where = (uint8_t)where;
    e->u.q.prev = NULL;
    e->u.q.next = q->head;
    if (q->head)
        q->head->u.q.prev = e;
    else
        q->tail = e;
    q->head = e;
    q->n++;
    q->bytes += esize(e);
}

static void q_remove(struct shard *s, struct entry *e)
{
    struct fifo *q = fifo_of(s, e);
    if (e->u.q.prev)
        e->u.q.prev->u.q.next = e->u.q.next;
    else
        q->head = e->u.q.next;
    if (e->u.q.next)
        e->u.q.next->u.q.prev = e->u.q.prev;
    else
        q->tail = e->u.q.prev;
    q->n--;
    q->bytes -= esize(e);
    e->where = Q_NONE;
}

/* n takes old's place in its queue (replacement, growth). */
static void q_replace(struct shard *s, struct entry *old, struct entry *n)
{
    struct fifo *q = fifo_of(s, old);
    n->where = old->where;
    n->u.q = old->u.q;
    if (n->u.q.prev)
        n->u.q.prev->u.q.next = n;
    else
        q->head = n;
    if (n->u.q.next)
        n->u.q.next->u.q.prev = n;
    else
        q->tail = n;
    q->bytes += esize(n);
    q->bytes -= esize(old);
}

static inline uint64_t *ghost_slot(struct shard *s, uint64_t h)
{
    return &s->ghost[(h >> 20) & s->ghost_mask];
}

/* The most slots a shard's ghost table may have: a power of two at least
 * its entry capacity, or with max_bytes alone one slot per 256 bytes of its
 * share (~3%), at most 2^30. */
static size_t ghost_bound(const struct shard *s)
{
    size_t gw = s->cap ? s->cap : s->cap_bytes / 256, gs = 64;
    while (gs < gw && gs < ((size_t)1 << 30))
        gs <<= 1;
    return gs;
}

/* The ghost table follows the hash table (what the shard holds now, not what
 * max_bytes would allow: issue 17 found 64 GiB reserved for an empty cache),
 * up to ghost_bound.  Called under the shard's lock (the ghost is only used
 * there); on a failed allocation the old table stays (it is a hint). */
static void ghost_follow(struct shard *s)
{
    size_t want = s->t->mask + 1;
    if (want > s->ghost_max)
        want = s->ghost_max;
    if (want <= s->ghost_mask + 1)
        return;
    uint64_t *n = calloc(want, sizeof *n);
    if (!n)
        return;
    for (size_t i = 0; i <= s->ghost_mask; i++)
        if (s->ghost[i])
            n[(s->ghost[i] >> 20) & (want - 1)] = s->ghost[i];
    free(s->ghost);
    s->ghost = n;
    s->ghost_mask = want - 1;
}

/* ---- unlinking ----------------------------------------------------------- */

/* Unlink e (found through link p) and put it on the garbage list. */
static void unlink_entry(struct shard *s, struct entry **p, struct entry *e,
                         struct ks_epoch_node **g)
{
    link_store(p, link_load(&e->next)); /* readers on e keep e->next */
    if (e->where != Q_NONE)
        q_remove(s, e);
    set_size(&s->count, s->count - 1);
    set_size(&s->bytes, s->bytes - esize(e));
    if (e->deadline)
        s->timed--;
    junk(g, &e->u.rcu, free_entry);
}

/* Sweep up to nb buckets of s from its sweep position; returns the entries
 * removed and adds those examined to *seen. */
static size_t sweep_locked(struct shard *s, size_t nb, uint64_t now, struct ks_epoch_node **g,
                           size_t *seen)
{
    struct table *t = s->t;
    size_t removed = 0;
    if (nb > t->mask + 1)
        nb = t->mask + 1;
    for (size_t k = 0; k < nb && s->timed; k++) {
        struct entry **p = &t->b[s->sweep_pos++ & t->mask];
        struct entry *e;
        while ((e = link_load(p))) {
            (*seen)++;
            if (expired(e, now)) {
                unlink_entry(s, p, e, g);
                bump(&s->expirations);
                removed++;
            } else {
                p = &e->next;
            }
        }
    }
    return removed;
}

/* ---- eviction ------------------------------------------------------------ */

static inline int over(const struct shard *s, size_t add_n, size_t add_bytes)
{
    return (s->cap && s->count + add_n > s->cap) ||
           (s->cap_bytes && s->bytes + add_bytes > s->cap_bytes);
}

static inline int small_over(const struct shard *s)
{
    return (s->cap && s->small.n * 10 > s->cap) ||
           (s->cap_bytes && s->small.bytes * 10 > s->cap_bytes);
}

/* Remove one entry to make room (S3-FIFO, Yang et al., SOSP 2023): the
 * small queue's oldest entry is promoted to the main queue if it was read
 * since it came in, otherwise evicted and remembered in the ghost table;
 * the main queue's oldest entry goes round again, one access spent, while
 * it has any.  Expired entries met on the way are removed as expirations.
 * `keep` (a replacement just linked) is never chosen.  After enough rounds
 * to spend every counter, accesses racing in are ignored so the loop ends.
 * Returns 0 if nothing could be removed. */
static int evict_one(struct shard *s, uint64_t now, struct entry *keep, struct ks_epoch_node **g)
{
    size_t limit = 2 * (FREQ_MAX + 1) * (s->count + 1);
    for (size_t round = 0; round <= limit; round++) {
        int from_small = s->small.n && (small_over(s) || !s->main.n);
        struct fifo *q = from_small ? &s->small : &s->main;
        struct entry *e = q->tail;
        if (!e)
            return 0;
        if (e == keep) {
            if (q->n == 1) { /* keep is all of q: look at the other queue */
                from_small = !from_small;
                q = from_small ? &s->small : &s->main;
                if (!(e = q->tail))
                    return 0;
            } else { /* a fresh put: to main's head; not a round, and the
                        next tail of q is another entry */
                q_remove(s, e);
                q_push(s, e, Q_MAIN);
                round--;
                continue;
            }
        }
        int dead = expired(e, now);
        uint8_t f = freq_of(e);
        if (!dead && f && round < limit) {
            q_remove(s, e);
            if (from_small) {
                freq_set(e, 0);
                q_push(s, e, Q_MAIN);
            } else {
                freq_set(e, (uint8_t)(f - 1));
                q_push(s, e, Q_MAIN);
            }
            continue;
        }
        if (from_small && !dead)
            *ghost_slot(s, e->hash) = e->hash | 1;
        unlink_entry(s, link_to(s->t, e), e, g);
        bump(dead ? &s->expirations : &s->evictions);
        return 1;
    }
    return 0;
}

/* ---- growth ------------------------------------------------------------- */

/* n = a copy of e, field by field: e's freq may be bumped by readers. */
static void copy_entry(struct entry *n, const struct entry *e)
{
    n->hash = e->hash;
    n->deadline = e->deadline;
    n->klen = e->klen;
    n->vlen = e->vlen;
    n->freq = 0;
    n->where = Q_NONE;
    memcpy(n->data, e->data, esize(e));
}

/* Double s's table.  STRIPED relinks the entries (no reader is inside);
 * LOCKFREE copies them, publishes the copy and retires the old ones. */
static void grow(const ks_cache_t *c, struct shard *s, struct ks_epoch_node **g)
{
    struct table *old = s->t;
    size_t nb = (old->mask + 1) * 2;
    if (nb < old->mask + 1)
        return;
    struct table *t = table_new(nb);
    if (!t)
        return; /* longer chains, still correct */
    if (!c->lockfree) {
        for (size_t i = 0; i <= old->mask; i++) {
            struct entry *e = old->b[i], *next;
            for (; e; e = next) {
                next = e->next;
                e->next = NULL;
                *chain_end(t, e->hash) = e; /* readers are shut out */
            }
        }
        /* release: as below (readers are shut out here, but one store) */
        __atomic_store_n(&s->t, t, __ATOMIC_RELEASE);
        junk(g, &old->rcu, free_table);
        return;
    }
    /* Copy every entry first; on a failed allocation drop the copies and
     * keep the old table. */
    struct entry *copies = NULL;
    for (size_t i = 0; i <= old->mask; i++)
        for (struct entry *e = old->b[i]; e; e = e->next) {
            struct entry *n = malloc(sizeof *n + esize(e));
            if (!n) {
                while (copies) {
                    struct entry *x = copies;
                    copies = x->next;
                    free(x);
                }
                free(t);
                return;
            }
            copy_entry(n, e);
            n->next = copies; /* temporary list of the copies, in old order */
            copies = n;
        }
    /* Walk old entries in the same order again, pairing each with its copy
     * (the list is reversed, so collect by walking it into the new table). */
    struct entry *rev = NULL;
    while (copies) {
        struct entry *x = copies;
        copies = x->next;
        x->next = rev;
        rev = x;
    }
    for (size_t i = 0; i <= old->mask; i++) {
        struct entry *e = old->b[i];
        while (e) {
            struct entry *n = rev, *next = e->next;
            rev = n->next;
            freq_set(n, freq_of(e));
            if (e->where != Q_NONE)
                q_replace(s, e, n);
            n->next = NULL;
            *chain_end(t, n->hash) = n; /* t is not published yet */
            junk(g, &e->u.rcu, free_entry);
            e = next;
        }
    }
    /* release: the new table and every copy are written before readers
     * can load the pointer (pairs with link_load of s->t) */
    __atomic_store_n(&s->t, t, __ATOMIC_RELEASE);
    junk(g, &old->rcu, free_table);
}

/* ---- create / destroy ---------------------------------------------------- */

static unsigned pow2_at_least(size_t x, unsigned cap)
{
    unsigned p = 1;
    while (p < x && p < cap)
        p <<= 1;
    return p;
}

int ks_cache_create(ks_cache_t **out, const struct ks_cache_options *o)
{
    if (!out || !o)
        return EINVAL;
    if (o->variant < KS_CACHE_STRIPED || o->variant > KS_CACHE_BOUNDED)
        return EINVAL;
    if (o->flags & ~(KS_CACHE_RWLOCK | KS_CACHE_NOEVICT | KS_CACHE_COARSE_CLOCK))
        return EINVAL;
    if ((o->flags & KS_CACHE_COARSE_CLOCK) && o->clock)
        return EINVAL;
    if ((o->flags & KS_CACHE_RWLOCK) && o->variant != KS_CACHE_STRIPED)
        return EINVAL;
    int bounded = o->capacity || o->max_bytes;
    if (o->variant == KS_CACHE_BOUNDED && !bounded)
        return EINVAL;
    if ((o->flags & KS_CACHE_NOEVICT) && !bounded)
        return EINVAL;
    if (o->max_key > KS_CACHE_LEN_MAX || o->max_value > KS_CACHE_LEN_MAX ||
        o->shards > SHARDS_MAX)
        return EINVAL;

    unsigned ns = o->shards;
    if (!ns) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        ns = (unsigned)(cpus > 0 && cpus < 1024 ? cpus : 1024) * 4;
        if (ns < 8)
            ns = 8;
        if (bounded && o->capacity) /* keep shards large enough to rank */
            while (ns > 1 && o->capacity / ns < 64)
                ns >>= 1;
    }
    ns = pow2_at_least(ns, SHARDS_MAX);
    /* every shard holds at least one entry and one byte: a share of 0
     * would mean "no limit" */
    while (ns > 1 && ((o->capacity && o->capacity < ns) || (o->max_bytes && o->max_bytes < ns)))
        ns >>= 1;

    ks_cache_t *c = ks_alloc_lines(sizeof *c);
    if (!c)
        return ENOMEM;
    memset(c, 0, sizeof *c);
    c->variant = o->variant;
    c->lockfree = o->variant != KS_CACHE_STRIPED;
    c->rw = !!(o->flags & KS_CACHE_RWLOCK);
    c->bounded = bounded;
    c->noevict = !!(o->flags & KS_CACHE_NOEVICT);
    c->nshards = ns;
    c->shift_mask = ns - 1;
    c->max_key = o->max_key ? o->max_key : 4096;
    c->max_value = o->max_value ? o->max_value : (size_t)64 << 20;
    c->default_ttl = o->default_ttl;
    c->clock = o->clock ? o->clock
             : (o->flags & KS_CACHE_COARSE_CLOCK) ? coarse_ns
                                                  : monotonic_ns;
    c->clock_arg = o->clock_arg;
    c->seed = ks_random_u64() ^ (uint64_t)(uintptr_t)c;

    c->shards = ks_alloc_lines(sizeof(struct shard) * ns);
    if (!c->shards) {
        free(c);
        return ENOMEM;
    }
    memset(c->shards, 0, sizeof(struct shard) * ns);
    size_t per = o->expected / ns;
    for (unsigned i = 0; i < ns; i++) {
        struct shard *s = &c->shards[i];
        if (c->rw)
            ks_rwlock_init(&s->lock.rw, 0);
        else
            ks_mutex_init(&s->lock.m, 0);
        if (o->capacity)
            s->cap = o->capacity / ns + (i < o->capacity % ns);
        if (o->max_bytes)
            s->cap_bytes = o->max_bytes / ns + (i < o->max_bytes % ns);
        size_t want = s->cap && s->cap > per ? s->cap : per;
        size_t nb = MIN_BUCKETS;
        while (nb / 4 * 3 < want && nb < ((size_t)1 << 40)) /* load <= 3/4, as grow() */
            nb <<= 1;
        s->t = table_new(nb);
        if (bounded) { /* as large as the table, up to ghost_bound; grows with it */
            s->ghost_max = ghost_bound(s);
            size_t gs = nb < s->ghost_max ? (nb < 64 ? 64 : nb) : s->ghost_max;
            s->ghost = calloc(gs, sizeof *s->ghost);
            s->ghost_mask = gs - 1;
        }
        if (!s->t || (bounded && !s->ghost)) {
            for (unsigned j = 0; j <= i; j++) {
                free(c->shards[j].t);
                free(c->shards[j].ghost);
            }
            free(c->shards);
            free(c);
            return ENOMEM;
        }
    }
    *out = c;
    return 0;
}

int ks_cache_destroy(ks_cache_t *c)
{
    if (!c)
        return EINVAL;
    for (unsigned i = 0; i < c->nshards; i++) {
        struct shard *s = &c->shards[i];
        struct table *t = s->t;
        for (size_t b = 0; b <= t->mask; b++) {
            struct entry *e = t->b[b], *next;
            for (; e; e = next) {
                next = e->next;
                free(e);
            }
        }
        free(t);
        free(s->ghost);
        if (c->rw)
            ks_rwlock_destroy(&s->lock.rw);
        else
            ks_mutex_destroy(&s->lock.m);
    }
    int lockfree = c->lockfree;
    free(c->shards);
    free(c);
    /* Free what this cache retired (and anything else due) now rather than
     * at some later retire; inside a section this returns EDEADLK and the
     * objects are freed later by the epoch as usual. */
    if (lockfree)
        (void)ks_epoch_barrier();
    return 0;
}

/* ---- get ----------------------------------------------------------------- */

/* The key's entry in shard s, or NULL: a reader's walk (acquire loads). */
static inline struct entry *lookup(struct shard *s, uint64_t h, const void *key, size_t klen)
{
    /* acquire: pairs with the release store of a new table in grow() */
    struct table *t = __atomic_load_n(&s->t, __ATOMIC_ACQUIRE);
    struct entry *e = link_load(&t->b[h & t->mask]);
    while (e && !entry_is(e, h, key, klen))
        e = link_load(&e->next);
    return e;
}

/* Remove key's entry if it is (still) expired at `now`: the expiry on
 * access.  A lock-free get only tries the lock: it never waits. */
static void expire_key(ks_cache_t *c, struct shard *s, uint64_t h, const void *key, size_t klen,
                       uint64_t now)
{
    if (wtrylock(c, s) != 0)
        return;
    struct ks_epoch_node *g = NULL;
    struct entry **p;
    struct entry *e = find_locked(s->t, h, key, klen, &p);
    if (e && expired(e, now)) {
        unlink_entry(s, p, e, &g);
        bump(&s->expirations);
    }
    wunlock(c, s);
    dispose(c, g);
}

int ks_cache_get(ks_cache_t *c, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen)
{
    if (KS_UNLIKELY(!c || (!key && klen) || (!buf && cap)))
        return EINVAL;
    if (KS_UNLIKELY(klen > c->max_key)) { /* no entry has such a key: a miss, */
        count_get(c, 1);                  /* and the key is never read */
        return ENOENT;
    }
    uint64_t h = hash_bytes(c->seed, key, klen);
    struct shard *s = shard_of(c, h);
    int locked = !c->lockfree || KS_UNLIKELY(ks_epoch_enter() != 0);
    if (locked) /* STRIPED, or no epoch record (ENOMEM): read under the lock */
        rlock(c, s);
    int rc = ENOENT, dead = 0;
    uint64_t now = 0;
    struct entry *e = lookup(s, h, key, klen);
    /* An entry found expired may have been replaced between the lookup and
     * the clock read: it is a miss only if it is still the key's entry
     * after the read (it was current, and expired, at that moment).
     * Otherwise judge the entry found now.  Unlinked entries are never
     * linked again, so the loop ends unless puts keep replacing the key
     * with entries that each expire before this get reads the clock. */
    while (e && e->deadline && (now = now_of(c)) >= e->deadline) {
        struct entry *again = lookup(s, h, key, klen);
        if (again == e) {
            dead = 1;
            e = NULL;
        } else {
            e = again;
        }
    }
    if (e) {
        if (vlen)
            *vlen = e->vlen;
        if (e->vlen > cap) {
            rc = ERANGE;
        } else {
            if (e->vlen)
                memcpy(buf, e->data + klen, e->vlen);
            rc = 0;
        }
        if (c->bounded) {
            uint8_t f = freq_of(e);
            if (f < FREQ_MAX) /* racing bumps may lose one: a hint */
                freq_set(e, (uint8_t)(f + 1));
        }
    }
    if (locked) {
        if (c->rw)
            ks_rwlock_unlock(&s->lock.rw);
        else
            ks_mutex_unlock(&s->lock.m);
    } else {
        ks_epoch_exit();
    }
    count_get(c, rc == ENOENT);
    if (dead)
        expire_key(c, s, h, key, klen, now);
    return rc;
}

/* ---- put ----------------------------------------------------------------- */

int ks_cache_put(ks_cache_t *c, const void *key, size_t klen, const void *val, size_t vlen,
                 uint64_t ttl)
{
    if (!c || (!key && klen) || (!val && vlen))
        return EINVAL;
    if (klen > c->max_key || vlen > c->max_value)
        return EMSGSIZE;
    uint64_t h = hash_bytes(c->seed, key, klen);
    struct shard *s = shard_of(c, h);
    if (s->cap_bytes && klen + vlen > s->cap_bytes)
        return EMSGSIZE;
    if (!ttl)
        ttl = c->default_ttl;
    if (ttl == KS_CACHE_NO_TTL)
        ttl = 0;
    struct entry *n = malloc(sizeof *n + klen + vlen);
    if (!n)
        return ENOMEM;
    n->hash = h;
    n->klen = (uint32_t)klen;
    n->vlen = (uint32_t)vlen;
    n->freq = 0;
    n->where = Q_NONE;
    if (klen)
        memcpy(n->data, key, klen);
    if (vlen)
        memcpy(n->data + klen, val, vlen);

    struct ks_epoch_node *g = NULL;
    int rc = 0;
    wlock(c, s);
    /* The clock is read once, under the lock, so that every expiry
     * decision below holds when the change is made (read before the lock,
     * an entry expiring while the put waited would count as replaced or
     * evicted, not expired).  Not read at all when the new entry has no
     * deadline and no entry of the shard has one. */
    uint64_t now = ttl || s->timed ? now_of(c) : 0;
    n->deadline = ttl ? (now + ttl < now ? UINT64_MAX : now + ttl) : 0;
    struct entry **p;
    struct entry *old = find_locked(s->t, h, key, klen, &p);
    if (old && expired(old, now)) { /* gone already: remove, then insert */
        unlink_entry(s, p, old, &g);
        bump(&s->expirations);
        old = find_locked(s->t, h, key, klen, &p);
    }
    if (old) {
        /* Replace in place: the new entry takes the old one's chain link
         * and queue position; a put counts as an access. */
        if (c->bounded && s->cap_bytes && s->bytes - esize(old) + esize(n) > s->cap_bytes &&
            c->noevict) {
            sweep_locked(s, s->t->mask + 1, now, &g, &(size_t){0});
            old = find_locked(s->t, h, key, klen, &p);
            if (s->bytes - esize(old) + esize(n) > s->cap_bytes) {
                rc = ENOSPC;
                goto out;
            }
        }
        n->next = link_load(&old->next);
        if (old->where != Q_NONE) {
            uint8_t f = freq_of(old);
            freq_set(n, (uint8_t)(f < FREQ_MAX ? f + 1 : FREQ_MAX));
            q_replace(s, old, n);
            old->where = Q_NONE;
        }
        link_store(p, n);
        set_size(&s->bytes, s->bytes - esize(old) + esize(n));
        if (old->deadline)
            s->timed--;
        if (n->deadline)
            s->timed++;
        junk(&g, &old->u.rcu, free_entry);
        if (c->bounded)
            while (over(s, 0, 0) && evict_one(s, now, n, &g))
                ;
    } else {
        if (c->bounded && over(s, 1, esize(n))) {
            if (c->noevict) {
                /* full: expired entries may make room, nothing else may */
                if (s->timed)
                    sweep_locked(s, s->t->mask + 1, now, &g, &(size_t){0});
                if (over(s, 1, esize(n))) {
                    rc = ENOSPC;
                    goto out;
                }
            }
            while (over(s, 1, esize(n)) && evict_one(s, now, NULL, &g))
                ;
        }
        if (c->bounded) {
            uint64_t *gh = ghost_slot(s, h);
            if (*gh == (h | 1)) { /* evicted recently from small: straight to main */
                *gh = 0;
                q_push(s, n, Q_MAIN);
            } else {
                q_push(s, n, Q_SMALL);
            }
        }
        n->next = NULL;
        link_store(chain_end(s->t, h), n);
        set_size(&s->count, s->count + 1);
        set_size(&s->bytes, s->bytes + esize(n));
        if (n->deadline)
            s->timed++;
        if (s->count > (s->t->mask + 1) / 4 * 3) { /* load factor 3/4 */
            grow(c, s, &g);
            if (c->bounded)
                ghost_follow(s);
        }
    }
    bump(&s->puts);
    if (s->timed && s->puts % SWEEP_EVERY == 0)
        sweep_locked(s, 1, now, &g, &(size_t){0});
out:
    wunlock(c, s);
    if (rc)
        free(n);
    dispose(c, g);
    return rc;
}

/* ---- delete / sweep / stats ---------------------------------------------- */

int ks_cache_delete(ks_cache_t *c, const void *key, size_t klen)
{
    if (!c || (!key && klen))
        return EINVAL;
    if (klen > c->max_key) /* no entry has such a key; never read it */
        return ENOENT;
    uint64_t h = hash_bytes(c->seed, key, klen);
    struct shard *s = shard_of(c, h);
    struct ks_epoch_node *g = NULL;
    int rc = ENOENT;
    wlock(c, s);
    struct entry **p;
    struct entry *e = find_locked(s->t, h, key, klen, &p);
    if (e) {
        int dead = e->deadline && expired(e, now_of(c));
        unlink_entry(s, p, e, &g);
        bump(dead ? &s->expirations : &s->deletes);
        rc = dead ? ENOENT : 0;
    }
    wunlock(c, s);
    dispose(c, g);
    return rc;
}

size_t ks_cache_sweep(ks_cache_t *c, size_t budget)
{
    if (!c)
        return 0;
    size_t removed = 0, seen = 0;
    /* relaxed: only spreads sweepers over the shards */
    unsigned first = (unsigned)__atomic_fetch_add(&c->sweep_next, 1, __ATOMIC_RELAXED);
    for (unsigned k = 0; k < c->nshards; k++) {
        struct shard *s = &c->shards[(first + k) & c->shift_mask];
        struct ks_epoch_node *g = NULL;
        wlock(c, s);
        /* under the lock, as in put; not at all for a shard with no deadlines */
        uint64_t now = s->timed ? now_of(c) : 0;
        size_t nb = s->t->mask + 1;
        if (!budget) {
            removed += sweep_locked(s, nb, now, &g, &seen);
        } else {
            for (size_t b = 0; b < nb && seen < budget && s->timed; b++)
                removed += sweep_locked(s, 1, now, &g, &seen);
        }
        wunlock(c, s);
        dispose(c, g);
        if (budget && seen >= budget)
            break;
    }
    return removed;
}

void ks_cache_stats(ks_cache_t *c, struct ks_cache_stats *out)
{
    if (!c || !out)
        return;
    memset(out, 0, sizeof *out);
    for (unsigned i = 0; i < STAT_STRIPES; i++) {
        /* relaxed: statistics */
        out->hits += __atomic_load_n(&c->hm[i].hits, __ATOMIC_RELAXED);
        out->misses += __atomic_load_n(&c->hm[i].misses, __ATOMIC_RELAXED);
    }
    out->gets = out->hits + out->misses;
    for (unsigned i = 0; i < c->nshards; i++) {
        struct shard *s = &c->shards[i];
        /* relaxed: statistics (written under the shard lock) */
        out->puts += __atomic_load_n(&s->puts, __ATOMIC_RELAXED);
        out->deletes += __atomic_load_n(&s->deletes, __ATOMIC_RELAXED);
        out->expirations += __atomic_load_n(&s->expirations, __ATOMIC_RELAXED);
        out->evictions += __atomic_load_n(&s->evictions, __ATOMIC_RELAXED);
        out->size += __atomic_load_n(&s->count, __ATOMIC_RELAXED);
        out->bytes += __atomic_load_n(&s->bytes, __ATOMIC_RELAXED);
    }
}

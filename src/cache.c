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
 *
 * Files: this one holds the public API (ks_cache_*), hashing, the hit/miss
 * counters and the choice of shard lock; src/cache_table.c the table,
 * unlinking, sweeping, growth and the garbage list; src/cache_evict.c the
 * S3-FIFO queues and the ghost table; src/cache_internal.h what they share.
 */
#include "cache_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SWEEP_EVERY 4u     /* a put sweeps one bucket every 4 puts of its shard */
#define SHARDS_MAX (1u << 16)

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
    return (uint64_t)ts.tv_sec * (uint64_t)KS_NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

static inline uint64_t now_of(const ks_cache_t *c)
{
    return c->clock(c->clock_arg);
}

/* A keyed multiply-rotate hash over 8-byte words, finished by ks_mix64
 * (src/internal.h).  Not a
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
    return ks_mix64(h);
}

static inline struct shard *shard_of(const ks_cache_t *c, uint64_t h)
{
    return &c->shards[(h >> 48) & c->shard_mask];
}

/* Hit/miss counters.  Lines 1..STAT_LINES-1 are each owned by one thread
 * at a time (claimed on its first get, released by its thread-exit hook,
 * src/thread.c), which counts with a plain relaxed load and store -- no
 * locked instruction on the get path.  Threads beyond that share line 0
 * and count with fetch_add.  Counts are never lost: a line has one writer
 * at a time, and the release/acquire pair on its ownership flag orders the
 * previous owner's last count before the next owner's first. */
static uint32_t slot_owned[STAT_LINES];
/* 0: none claimed yet; 1..STAT_LINES-1: the line this thread owns;
 * STAT_LINES (no such line): none to be had, count on the shared line 0 */
static KS_TLS unsigned my_slot;

/* The thread-exit hook (KS_EXIT_CACHE_LINE): runs after the epoch's, so the
 * retire functions that leave runs still count on this thread's line. */
static void slot_release(void)
{
    unsigned s = my_slot;
    my_slot = STAT_LINES; /* gets from later destructors use line 0 */
    if (s && s < STAT_LINES) /* release: pairs with the acquire CAS in slot_claim */
        __atomic_store_n(&slot_owned[s], 0, __ATOMIC_RELEASE);
}

static __attribute__((noinline)) unsigned slot_claim(void)
{
    for (unsigned s = 1; s < STAT_LINES; s++) {
        uint32_t zero = 0;
        /* relaxed peek; acquire CAS: pairs with the release in slot_release */
        if (__atomic_load_n(&slot_owned[s], __ATOMIC_RELAXED) ||
            !__atomic_compare_exchange_n(&slot_owned[s], &zero, 1, 0, __ATOMIC_ACQUIRE,
                                         __ATOMIC_RELAXED))
            continue;
        my_slot = s; /* before arming: a handler that gets meanwhile uses it */
        if (ks_thread_at_exit(KS_EXIT_CACHE_LINE, slot_release) == 0)
            return s;
        __atomic_store_n(&slot_owned[s], 0, __ATOMIC_RELEASE); /* release: as in slot_release */
        break;
    }
    return my_slot = STAT_LINES;
}

static inline void count_get(ks_cache_t *c, int miss)
{
    unsigned s = my_slot;
    if (KS_UNLIKELY(!s))
        s = slot_claim();
    if (KS_UNLIKELY(s == STAT_LINES)) {
        /* relaxed: a statistic, summed by ks_cache_stats */
        __atomic_fetch_add(miss ? &c->hm[0].misses : &c->hm[0].hits, 1, __ATOMIC_RELAXED);
    } else {
        uint64_t *x = miss ? &c->hm[s].misses : &c->hm[s].hits;
        /* relaxed: a statistic with one writer (this thread owns line s) */
        __atomic_store_n(x, __atomic_load_n(x, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    }
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
    c->lockfree = o->variant != KS_CACHE_STRIPED;
    c->rw = !!(o->flags & KS_CACHE_RWLOCK);
    c->bounded = bounded;
    c->noevict = !!(o->flags & KS_CACHE_NOEVICT);
    c->nshards = ns;
    c->shard_mask = ns - 1;
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
        while (nb / 4 * 3 < want && nb < ((size_t)1 << 40)) /* load <= 3/4, as ks_cache_grow */
            nb <<= 1;
        s->t = ks_cache_table_new(nb);
        if (bounded) { /* as large as the table, up to ks_cache_ghost_bound; grows with it */
            s->ghost_max = ks_cache_ghost_bound(s);
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
    /* acquire: pairs with the release store of a new table in ks_cache_grow */
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
    struct entry *e = ks_cache_find_locked(s->t, h, key, klen, &p);
    if (e && expired(e, now)) {
        ks_cache_unlink(s, p, e, &g);
        stat_inc(&s->expirations);
    }
    wunlock(c, s);
    ks_cache_dispose(c, g);
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
    n->where = FIFO_NONE;
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
    struct entry *old = ks_cache_find_locked(s->t, h, key, klen, &p);
    if (old && expired(old, now)) { /* gone already: remove, then insert */
        ks_cache_unlink(s, p, old, &g);
        stat_inc(&s->expirations);
        old = ks_cache_find_locked(s->t, h, key, klen, &p);
    }
    if (old) {
        /* Replace in place: the new entry takes the old one's chain link
         * and queue position; a put counts as an access. */
        if (c->bounded && s->cap_bytes && s->bytes - esize(old) + esize(n) > s->cap_bytes &&
            c->noevict) {
            ks_cache_sweep_locked(s, s->t->mask + 1, now, &g, &(size_t){0});
            old = ks_cache_find_locked(s->t, h, key, klen, &p);
            if (s->bytes - esize(old) + esize(n) > s->cap_bytes) {
                rc = ENOSPC;
                goto out;
            }
        }
        n->next = link_load(&old->next);
        if (old->where != FIFO_NONE) {
            uint8_t f = freq_of(old);
            freq_set(n, (uint8_t)(f < FREQ_MAX ? f + 1 : FREQ_MAX));
            ks_cache_fifo_replace(s, old, n);
            old->where = FIFO_NONE;
        }
        link_store(p, n);
        set_size(&s->bytes, s->bytes - esize(old) + esize(n));
        if (old->deadline)
            s->timed--;
        if (n->deadline)
            s->timed++;
        garbage_add(&g, &old->u.rcu, ks_cache_free_entry);
        if (c->bounded)
            while (over_capacity(s, 0, 0) && ks_cache_evict_one(s, now, n, &g))
                ;
    } else {
        if (c->bounded && over_capacity(s, 1, esize(n))) {
            if (c->noevict) {
                /* full: expired entries may make room, nothing else may */
                if (s->timed)
                    ks_cache_sweep_locked(s, s->t->mask + 1, now, &g, &(size_t){0});
                if (over_capacity(s, 1, esize(n))) {
                    rc = ENOSPC;
                    goto out;
                }
            }
            while (over_capacity(s, 1, esize(n)) && ks_cache_evict_one(s, now, NULL, &g))
                ;
        }
        if (c->bounded) {
            uint64_t *gh = ghost_slot(s, h);
            if (*gh == (h | 1)) { /* evicted recently from small: straight to main */
                *gh = 0;
                fifo_push(s, n, FIFO_MAIN);
            } else {
                fifo_push(s, n, FIFO_SMALL);
            }
        }
        n->next = NULL;
        link_store(chain_end(s->t, h), n);
        set_size(&s->count, s->count + 1);
        set_size(&s->bytes, s->bytes + esize(n));
        if (n->deadline)
            s->timed++;
        if (s->count > (s->t->mask + 1) / 4 * 3) { /* load factor 3/4 */
            ks_cache_grow(c, s, &g);
            if (c->bounded)
                ks_cache_ghost_follow(s);
        }
    }
    stat_inc(&s->puts);
    if (s->timed && s->puts % SWEEP_EVERY == 0)
        ks_cache_sweep_locked(s, 1, now, &g, &(size_t){0});
out:
    wunlock(c, s);
    if (rc)
        free(n);
    ks_cache_dispose(c, g);
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
    struct entry *e = ks_cache_find_locked(s->t, h, key, klen, &p);
    if (e) {
        int dead = e->deadline && expired(e, now_of(c));
        ks_cache_unlink(s, p, e, &g);
        stat_inc(dead ? &s->expirations : &s->deletes);
        rc = dead ? ENOENT : 0;
    }
    wunlock(c, s);
    ks_cache_dispose(c, g);
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
        struct shard *s = &c->shards[(first + k) & c->shard_mask];
        struct ks_epoch_node *g = NULL;
        wlock(c, s);
        /* under the lock, as in put; not at all for a shard with no deadlines */
        uint64_t now = s->timed ? now_of(c) : 0;
        size_t nb = s->t->mask + 1;
        if (!budget) {
            removed += ks_cache_sweep_locked(s, nb, now, &g, &seen);
        } else {
            for (size_t b = 0; b < nb && seen < budget && s->timed; b++)
                removed += ks_cache_sweep_locked(s, 1, now, &g, &seen);
        }
        wunlock(c, s);
        ks_cache_dispose(c, g);
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
    for (unsigned i = 0; i < STAT_LINES; i++) {
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

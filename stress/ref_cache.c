/* stress/ref_cache.c - the caches compared by S13 and bench section 10
 * (see ref_cache.h): ks_cache's variants, ck_ht + ck_epoch, liburcu's
 * rculfhash, and a pthread mutex around a chained hash table.
 */
#define _LGPL_SOURCE /* liburcu: rcu_read_lock/unlock inline, as ck's are */
#include "ref_cache.h"

#include <ksync/arch.h> /* KS_CACHELINE: keep per-thread and shared data on separate lines */
#include <ksync/cache.h>

#include <ck_epoch.h>
#include <ck_ht.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <urcu.h>
#include <urcu/rculfhash.h>


/* ---- common ------------------------------------------------------------------------------- */

struct rc_cache {
    const struct rc_impl *im;
    rc_clock_fn clock;
    void *clock_arg;
    pthread_mutex_t reg;  /* guards tot and the implementation's thread list */
    struct rc_stats tot;  /* the references' counts, folded in by thread_leave */
};

struct rc_thread {
    _Alignas(KS_CACHELINE) struct rc_cache *c;
    uint64_t gets, hits, misses, puts, deletes, expirations; /* the owner's */
    ck_epoch_record_t *rec; /* ck_ht: this thread's epoch record */
};

static uint64_t mono_ns(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t now_of(const struct rc_cache *c)
{
    return c->clock(c->clock_arg);
}

/* 0: never expires */
static inline uint64_t deadline_of(uint64_t now, uint64_t ttl)
{
    if (ttl == 0 || ttl == RC_NO_TTL)
        return 0;
    return now + ttl < now ? UINT64_MAX : now + ttl;
}

static inline int expired(uint64_t deadline, uint64_t now)
{
    return deadline && now >= deadline;
}

static void base_init(struct rc_cache *c, const struct rc_impl *im, const struct rc_params *p)
{
    c->im = im;
    c->clock = p->clock ? p->clock : mono_ns;
    c->clock_arg = p->clock ? p->clock_arg : NULL;
    pthread_mutex_init(&c->reg, NULL);
    memset(&c->tot, 0, sizeof c->tot);
}

static struct rc_thread *thread_new(struct rc_cache *c)
{
    struct rc_thread *t = aligned_alloc(KS_CACHELINE, sizeof *t);
    if (t) {
        memset(t, 0, sizeof *t);
        t->c = c;
    }
    return t;
}

/* Fold a leaving thread's counts into the cache's totals. */
static void thread_fold(struct rc_cache *c, struct rc_thread *t)
{
    pthread_mutex_lock(&c->reg);
    c->tot.gets += t->gets;
    c->tot.hits += t->hits;
    c->tot.misses += t->misses;
    c->tot.puts += t->puts;
    c->tot.deletes += t->deletes;
    c->tot.expirations += t->expirations;
    pthread_mutex_unlock(&c->reg);
}

static void copy_totals(struct rc_cache *c, struct rc_stats *out)
{
    pthread_mutex_lock(&c->reg);
    *out = c->tot;
    pthread_mutex_unlock(&c->reg);
}

/* A word-at-a-time multiply-xorshift hash for the tables that want one
 * from the caller (the mutex table, rculfhash). */
static uint64_t key_hash(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ ((uint64_t)len * 0xbf58476d1ce4e5b9ull);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 31;
        p += 8;
        len -= 8;
    }
    if (len) {
        uint64_t w = 0;
        memcpy(&w, p, len);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
    }
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

/* Copy a found value out: 0, or ERANGE (nothing copied). */
static inline int copy_out(const unsigned char *v, uint32_t vlen, void *buf, size_t cap,
                           size_t *out_len)
{
    if (out_len)
        *out_len = vlen;
    if (vlen > cap)
        return ERANGE;
    if (vlen)
        memcpy(buf, v, vlen);
    return 0;
}

static inline void count_get(struct rc_thread *t, int rc)
{
    t->gets++;
    if (rc == ENOENT)
        t->misses++;
    else
        t->hits++;
}

/* ---- ksync ---------------------------------------------------------------------------------- */

struct ksc {
    struct rc_cache base;
    ks_cache_t *c;
};

static int ksc_create(struct rc_cache **out, const struct rc_params *p, const struct rc_impl *im,
                      int variant, unsigned flags)
{
    struct ksc *k = calloc(1, sizeof *k);
    if (!k)
        return ENOMEM;
    base_init(&k->base, im, p);
    struct ks_cache_options o = KS_CACHE_OPTIONS_INIT;
    o.variant = variant;
    o.flags = flags;
    o.expected = p->expected;
    o.clock = p->clock;
    o.clock_arg = p->clock_arg;
    if (variant == KS_CACHE_BOUNDED) {
        if (p->capacity) {
            o.capacity = p->capacity;
        } else {
            /* Each of 16 shards may hold every key: no eviction, whatever
             * the hash does. */
            size_t per = p->expected > 64 ? p->expected : 64;
            o.shards = 16;
            o.capacity = per * 16;
        }
    }
    int e = ks_cache_create(&k->c, &o);
    if (e) {
        pthread_mutex_destroy(&k->base.reg);
        free(k);
        return e;
    }
    *out = &k->base;
    return 0;
}

static const struct rc_impl *impl_named(const char *name);

static int ksc_create_striped(struct rc_cache **out, const struct rc_params *p)
{
    return ksc_create(out, p, impl_named("ksync_striped"), KS_CACHE_STRIPED, 0);
}
static int ksc_create_striped_rw(struct rc_cache **out, const struct rc_params *p)
{
    return ksc_create(out, p, impl_named("ksync_striped_rw"), KS_CACHE_STRIPED, KS_CACHE_RWLOCK);
}
static int ksc_create_lockfree(struct rc_cache **out, const struct rc_params *p)
{
    return ksc_create(out, p, impl_named("ksync_lockfree"), KS_CACHE_LOCKFREE, 0);
}
static int ksc_create_bounded(struct rc_cache **out, const struct rc_params *p)
{
    return ksc_create(out, p, impl_named("ksync_bounded"), KS_CACHE_BOUNDED, 0);
}

static void ksc_destroy(struct rc_cache *c)
{
    struct ksc *k = (struct ksc *)c;
    ks_cache_destroy(k->c);
    pthread_mutex_destroy(&c->reg);
    free(k);
}

static struct rc_thread *ksc_enter(struct rc_cache *c)
{
    return thread_new(c); /* ks_epoch joins a thread on its first section */
}

static void ksc_leave(struct rc_cache *c, struct rc_thread *t)
{
    (void)c;
    free(t);
}

static int ksc_put(struct rc_cache *c, struct rc_thread *t, const void *key, size_t klen,
                   const void *val, size_t vlen, uint64_t ttl)
{
    (void)t;
    return ks_cache_put(((struct ksc *)c)->c, key, klen, val, vlen, ttl);
}

static int ksc_get(struct rc_cache *c, struct rc_thread *t, const void *key, size_t klen, void *buf,
                   size_t cap, size_t *vlen)
{
    (void)t;
    return ks_cache_get(((struct ksc *)c)->c, key, klen, buf, cap, vlen);
}

static int ksc_del(struct rc_cache *c, struct rc_thread *t, const void *key, size_t klen)
{
    (void)t;
    return ks_cache_delete(((struct ksc *)c)->c, key, klen);
}

static size_t ksc_sweep(struct rc_cache *c, struct rc_thread *t, size_t budget)
{
    (void)t;
    return ks_cache_sweep(((struct ksc *)c)->c, budget);
}

static void ksc_stats(struct rc_cache *c, struct rc_stats *out)
{
    struct ks_cache_stats s;
    ks_cache_stats(((struct ksc *)c)->c, &s);
    out->gets = s.gets;
    out->hits = s.hits;
    out->misses = s.misses;
    out->puts = s.puts;
    out->deletes = s.deletes;
    out->expirations = s.expirations;
    out->evictions = s.evictions;
    out->size = s.size;
    out->bytes = s.bytes;
}

/* ---- pthread mutex + chained hash table ------------------------------------------------------- */

struct mnode {
    struct mnode *next;
    uint64_t hash, deadline; /* deadline 0: never */
    uint32_t klen, vlen;
    unsigned char data[]; /* key, then value */
};

struct mtab {
    struct rc_cache base;
    pthread_mutex_t m;
    struct mnode **b; /* everything below under m */
    size_t mask, count, cursor;
};

static int mt_create(struct rc_cache **out, const struct rc_params *p)
{
    struct mtab *t = calloc(1, sizeof *t);
    if (!t)
        return ENOMEM;
    size_t nb = 16;
    while (nb < p->expected)
        nb <<= 1;
    t->b = calloc(nb, sizeof *t->b);
    if (!t->b) {
        free(t);
        return ENOMEM;
    }
    t->mask = nb - 1;
    base_init(&t->base, impl_named("pthread_mutex"), p);
    pthread_mutex_init(&t->m, NULL);
    *out = &t->base;
    return 0;
}

static void mt_destroy(struct rc_cache *c)
{
    struct mtab *t = (struct mtab *)c;
    for (size_t i = 0; i <= t->mask; i++)
        for (struct mnode *n = t->b[i], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    free(t->b);
    pthread_mutex_destroy(&t->m);
    pthread_mutex_destroy(&c->reg);
    free(t);
}

static void mt_leave(struct rc_cache *c, struct rc_thread *t)
{
    thread_fold(c, t);
    free(t);
}

/* The link that points at key's node (or at the NULL ending its chain). */
static struct mnode **mt_find(struct mtab *t, uint64_t h, const void *key, size_t klen)
{
    struct mnode **p = &t->b[h & t->mask];
    for (; *p; p = &(*p)->next)
        if ((*p)->hash == h && (*p)->klen == klen && !memcmp((*p)->data, key, klen))
            break;
    return p;
}

static void mt_grow(struct mtab *t)
{
    size_t nb = (t->mask + 1) * 2;
    struct mnode **b = calloc(nb, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i <= t->mask; i++)
        for (struct mnode *n = t->b[i], *next; n; n = next) {
            next = n->next;
            n->next = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
        }
    free(t->b);
    t->b = b;
    t->mask = nb - 1;
    t->cursor = 0;
}

static int mt_put(struct rc_cache *c, struct rc_thread *th, const void *key, size_t klen,
                  const void *val, size_t vlen, uint64_t ttl)
{
    struct mtab *t = (struct mtab *)c;
    uint64_t h = key_hash(key, klen);
    uint64_t now = now_of(c);
    struct mnode *n = malloc(sizeof *n + klen + vlen);
    if (!n)
        return ENOMEM;
    n->hash = h;
    n->deadline = deadline_of(now, ttl);
    n->klen = (uint32_t)klen;
    n->vlen = (uint32_t)vlen;
    memcpy(n->data, key, klen);
    memcpy(n->data + klen, val, vlen);
    pthread_mutex_lock(&t->m);
    struct mnode **p = mt_find(t, h, key, klen), *old = *p;
    if (old) {
        n->next = old->next;
        *p = n;
    } else {
        n->next = t->b[h & t->mask];
        t->b[h & t->mask] = n;
        if (++t->count > t->mask + 1)
            mt_grow(t);
    }
    pthread_mutex_unlock(&t->m);
    free(old);
    th->puts++;
    return 0;
}

static int mt_get(struct rc_cache *c, struct rc_thread *th, const void *key, size_t klen, void *buf,
                  size_t cap, size_t *vlen)
{
    struct mtab *t = (struct mtab *)c;
    uint64_t h = key_hash(key, klen);
    struct mnode *dead = NULL;
    int rc = ENOENT;
    pthread_mutex_lock(&t->m);
    struct mnode **p = mt_find(t, h, key, klen), *n = *p;
    if (n) {
        if (n->deadline && expired(n->deadline, now_of(c))) {
            *p = n->next; /* expired: removed by the get that finds it */
            t->count--;
            dead = n;
        } else {
            rc = copy_out(n->data + n->klen, n->vlen, buf, cap, vlen);
        }
    }
    pthread_mutex_unlock(&t->m);
    if (dead) {
        free(dead);
        th->expirations++;
    }
    count_get(th, rc);
    return rc;
}

static int mt_del(struct rc_cache *c, struct rc_thread *th, const void *key, size_t klen)
{
    struct mtab *t = (struct mtab *)c;
    uint64_t h = key_hash(key, klen);
    int rc = ENOENT;
    pthread_mutex_lock(&t->m);
    struct mnode **p = mt_find(t, h, key, klen), *n = *p;
    if (n) {
        *p = n->next;
        t->count--;
        if (expired(n->deadline, now_of(c)))
            th->expirations++;
        else
            rc = 0;
    }
    pthread_mutex_unlock(&t->m);
    free(n);
    if (!rc)
        th->deletes++;
    return rc;
}

static size_t mt_sweep(struct rc_cache *c, struct rc_thread *th, size_t budget)
{
    struct mtab *t = (struct mtab *)c;
    size_t removed = 0, seen = 0;
    struct mnode *junk = NULL;
    uint64_t now = now_of(c);
    pthread_mutex_lock(&t->m);
    size_t nb = t->mask + 1;
    for (size_t k = 0; k < nb && (!budget || seen < budget); k++) {
        size_t i = t->cursor;
        t->cursor = (t->cursor + 1) & t->mask;
        for (struct mnode **p = &t->b[i]; *p;) {
            struct mnode *n = *p;
            seen++;
            if (expired(n->deadline, now)) {
                *p = n->next;
                t->count--;
                n->next = junk;
                junk = n;
                removed++;
            } else {
                p = &n->next;
            }
        }
    }
    pthread_mutex_unlock(&t->m);
    while (junk) {
        struct mnode *n = junk;
        junk = n->next;
        free(n);
    }
    th->expirations += removed;
    return removed;
}

static void mt_stats(struct rc_cache *c, struct rc_stats *out)
{
    struct mtab *t = (struct mtab *)c;
    copy_totals(c, out);
    pthread_mutex_lock(&t->m);
    out->size = t->count;
    pthread_mutex_unlock(&t->m);
}

/* ---- Concurrency Kit ck_ht + ck_epoch ----------------------------------------------------------
 * ck_ht is single-writer/multi-reader: writers serialise on `wm`; a get
 * runs in a ck_epoch section on its thread's record.  One block per entry
 * holds the key the table points at and the value: a put that replaces an
 * entry stores the new block's key and value pointers, so the old block
 * (key and value) is retired with ck_epoch_call once unlinked.  ck_ht frees
 * its own table with defer=true when it grows: the allocator below retires
 * that memory on the calling writer's record (ck_writer_rec, set while a
 * writer is inside ck_ht).  Each thread dispatches its own record's
 * callbacks (ck_epoch_poll every CK_POLL_EVERY retirements, a full
 * ck_epoch_barrier past CK_PENDING_MAX and when it leaves). */

#define CK_POLL_EVERY 64u
#define CK_PENDING_MAX 16384u

struct cknode {
    ck_epoch_entry_t ep; /* retirement */
    uint64_t deadline;   /* 0: never */
    uint32_t klen, vlen;
    unsigned char data[]; /* key (the table points here), then value */
};

struct ckrec { /* a record we allocated; ck_epoch records are never freed while in use */
    ck_epoch_record_t rec; /* first: recycle returns &rec */
    struct ckrec *next;
};

struct ckc {
    struct rc_cache base;
    pthread_mutex_t wm; /* the one writer */
    ck_ht_t ht;
    ck_epoch_t epoch;
    struct ckrec *recs; /* under base.reg */
};

/* The record of the writer currently inside ck_ht on this thread. */
static _Thread_local ck_epoch_record_t *ck_writer_rec;

struct ckhdr { /* before every block handed to ck_ht */
    _Alignas(16) ck_epoch_entry_t ep;
};

static void *ckm_malloc(size_t n)
{
    struct ckhdr *h = malloc(sizeof *h + n);
    return h ? h + 1 : NULL;
}

static void ckm_free_cb(ck_epoch_entry_t *e)
{
    free((struct ckhdr *)(void *)e);
}

static void ckm_free(void *p, size_t n, bool defer)
{
    (void)n;
    if (!p)
        return;
    struct ckhdr *h = (struct ckhdr *)p - 1;
    if (!defer) {
        free(h);
    } else if (ck_writer_rec) {
        ck_epoch_call(ck_writer_rec, &h->ep, ckm_free_cb);
    } else {
        fprintf(stderr, "ref_cache: ck_ht deferred a free outside a writer\n");
        abort();
    }
}

static void *ckm_realloc(void *p, size_t old, size_t n, bool defer)
{
    void *q = ckm_malloc(n);
    if (q && p) {
        memcpy(q, p, old < n ? old : n);
        ckm_free(p, old, defer);
    }
    return q;
}

static struct ck_malloc ck_alloc = {ckm_malloc, ckm_realloc, ckm_free};

static void cknode_free(ck_epoch_entry_t *e)
{
    free((char *)e - offsetof(struct cknode, ep));
}

static int ck_create(struct rc_cache **out, const struct rc_params *p)
{
    struct ckc *k = calloc(1, sizeof *k);
    if (!k)
        return ENOMEM;
    base_init(&k->base, impl_named("ck_ht"), p);
    pthread_mutex_init(&k->wm, NULL);
    ck_epoch_init(&k->epoch);
    uint64_t size = p->expected > 64 ? p->expected * 2 : 128;
    if (!ck_ht_init(&k->ht, CK_HT_MODE_BYTESTRING | CK_HT_WORKLOAD_DELETE, NULL, &ck_alloc, size,
                    0x5eed0fc4ull)) {
        pthread_mutex_destroy(&k->wm);
        pthread_mutex_destroy(&k->base.reg);
        free(k);
        return ENOMEM;
    }
    *out = &k->base;
    return 0;
}

static void ck_destroy(struct rc_cache *c)
{
    struct ckc *k = (struct ckc *)c;
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ck_ht_entry_t *e;
    while (ck_ht_next(&k->ht, &it, &e))
        free(ck_ht_entry_value(e));
    ck_ht_destroy(&k->ht); /* frees its table with defer=false */
    for (struct ckrec *r = k->recs, *next; r; r = next) {
        next = r->next;
        free(r); /* every record left (unregistered, callbacks run) */
    }
    pthread_mutex_destroy(&k->wm);
    pthread_mutex_destroy(&c->reg);
    free(k);
}

static struct rc_thread *ck_enter(struct rc_cache *c)
{
    struct ckc *k = (struct ckc *)c;
    struct rc_thread *t = thread_new(c);
    if (!t)
        return NULL;
    pthread_mutex_lock(&c->reg);
    ck_epoch_record_t *rec = ck_epoch_recycle(&k->epoch, NULL);
    if (!rec) {
        struct ckrec *r = aligned_alloc(KS_CACHELINE, (sizeof *r + KS_CACHELINE - 1) / KS_CACHELINE * KS_CACHELINE);
        if (r) {
            memset(r, 0, sizeof *r);
            ck_epoch_register(&k->epoch, &r->rec, NULL);
            r->next = k->recs;
            k->recs = r;
            rec = &r->rec;
        }
    }
    pthread_mutex_unlock(&c->reg);
    if (!rec) {
        free(t);
        return NULL;
    }
    t->rec = rec;
    return t;
}

static void ck_leave(struct rc_cache *c, struct rc_thread *t)
{
    ck_epoch_barrier(t->rec); /* unregister drops pending callbacks: run them first */
    ck_epoch_unregister(t->rec);
    thread_fold(c, t);
    free(t);
}

/* After a write, outside the writer lock: dispatch what is due. */
static void ck_reclaim(struct rc_thread *t)
{
    if (t->rec->n_pending >= CK_PENDING_MAX)
        ck_epoch_barrier(t->rec);
    else if (t->rec->n_pending >= CK_POLL_EVERY)
        ck_epoch_poll(t->rec);
}

static inline void ck_key(ck_ht_t *ht, ck_ht_hash_t *h, ck_ht_entry_t *e, const void *key,
                          size_t klen)
{
    ck_ht_hash(h, ht, key, (uint16_t)klen);
    ck_ht_entry_key_set(e, key, (uint16_t)klen);
}

static int ck_put(struct rc_cache *c, struct rc_thread *t, const void *key, size_t klen,
                  const void *val, size_t vlen, uint64_t ttl)
{
    struct ckc *k = (struct ckc *)c;
    if (klen == 0 || klen > 65535)
        return EINVAL; /* ck_ht: 16-bit key lengths; an empty key is not stored */
    uint64_t now = now_of(c);
    struct cknode *n = malloc(sizeof *n + klen + vlen);
    if (!n)
        return ENOMEM;
    n->deadline = deadline_of(now, ttl);
    n->klen = (uint32_t)klen;
    n->vlen = (uint32_t)vlen;
    memcpy(n->data, key, klen);
    memcpy(n->data + klen, val, vlen);
    ck_ht_hash_t h;
    ck_ht_entry_t e;
    ck_ht_hash(&h, &k->ht, key, (uint16_t)klen);
    ck_ht_entry_set(&e, h, n->data, (uint16_t)klen, n);
    pthread_mutex_lock(&k->wm);
    ck_writer_rec = t->rec;
    bool ok = ck_ht_set_spmc(&k->ht, h, &e);
    ck_writer_rec = NULL;
    pthread_mutex_unlock(&k->wm);
    if (!ok) {
        free(n);
        return ENOMEM;
    }
    if (!ck_ht_entry_empty(&e)) { /* replaced: e is the old entry */
        struct cknode *old = ck_ht_entry_value(&e);
        ck_epoch_call(t->rec, &old->ep, cknode_free);
    }
    t->puts++;
    ck_reclaim(t);
    return 0;
}

/* Under wm: remove key's entry if it is `only` (NULL: any) and, with
 * must_expire, expired at now.  Returns the removed block or NULL. */
static struct cknode *ck_remove_locked(struct ckc *k, const void *key, size_t klen,
                                       const struct cknode *only, int must_expire, uint64_t now)
{
    ck_ht_hash_t h;
    ck_ht_entry_t e;
    ck_key(&k->ht, &h, &e, key, klen);
    if (!ck_ht_get_spmc(&k->ht, h, &e))
        return NULL;
    struct cknode *n = ck_ht_entry_value(&e);
    if ((only && n != only) || (must_expire && !expired(n->deadline, now)))
        return NULL;
    ck_key(&k->ht, &h, &e, key, klen);
    if (!ck_ht_remove_spmc(&k->ht, h, &e))
        return NULL;
    return n;
}

static int ck_get(struct rc_cache *c, struct rc_thread *t, const void *key, size_t klen, void *buf,
                  size_t cap, size_t *vlen)
{
    struct ckc *k = (struct ckc *)c;
    ck_ht_hash_t h;
    ck_ht_entry_t e;
    struct cknode *dead = NULL;
    uint64_t now = 0;
    int rc = ENOENT;
    ck_key(&k->ht, &h, &e, key, klen);
    ck_epoch_begin(t->rec, NULL);
    if (ck_ht_get_spmc(&k->ht, h, &e)) {
        struct cknode *n = ck_ht_entry_value(&e);
        if (n->deadline && expired(n->deadline, (now = now_of(c))))
            dead = n;
        else
            rc = copy_out(n->data + n->klen, n->vlen, buf, cap, vlen);
    }
    ck_epoch_end(t->rec, NULL);
    count_get(t, rc);
    /* Expired: remove it if no writer is busy (a get never waits). */
    if (dead && pthread_mutex_trylock(&k->wm) == 0) {
        ck_writer_rec = t->rec;
        struct cknode *n = ck_remove_locked(k, key, klen, dead, 1, now);
        ck_writer_rec = NULL;
        pthread_mutex_unlock(&k->wm);
        if (n) {
            ck_epoch_call(t->rec, &n->ep, cknode_free);
            t->expirations++;
            ck_reclaim(t);
        }
    }
    return rc;
}

static int ck_del(struct rc_cache *c, struct rc_thread *t, const void *key, size_t klen)
{
    struct ckc *k = (struct ckc *)c;
    uint64_t now = now_of(c);
    pthread_mutex_lock(&k->wm);
    ck_writer_rec = t->rec;
    struct cknode *n = ck_remove_locked(k, key, klen, NULL, 0, 0);
    ck_writer_rec = NULL;
    pthread_mutex_unlock(&k->wm);
    if (!n)
        return ENOENT;
    int dead = expired(n->deadline, now);
    ck_epoch_call(t->rec, &n->ep, cknode_free);
    ck_reclaim(t);
    if (dead) {
        t->expirations++;
        return ENOENT;
    }
    t->deletes++;
    return 0;
}

static size_t ck_sweep(struct rc_cache *c, struct rc_thread *t, size_t budget)
{
    struct ckc *k = (struct ckc *)c;
    (void)budget; /* ck_ht's iterator cannot resume across writes: always all */
    size_t removed = 0, n = 0, cap = 0;
    struct cknode **dead = NULL;
    uint64_t now = now_of(c);
    pthread_mutex_lock(&k->wm);
    ck_writer_rec = t->rec;
    /* Iteration must not run beside a write: collect under wm, then remove. */
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ck_ht_entry_t *e;
    while (ck_ht_next(&k->ht, &it, &e)) {
        struct cknode *x = ck_ht_entry_value(e);
        if (!expired(x->deadline, now))
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            struct cknode **d = realloc(dead, nc * sizeof *d);
            if (!d)
                break;
            dead = d;
            cap = nc;
        }
        dead[n++] = x;
    }
    for (size_t i = 0; i < n; i++) {
        struct cknode *x = ck_remove_locked(k, dead[i]->data, dead[i]->klen, dead[i], 1, now);
        if (x) {
            ck_epoch_call(t->rec, &x->ep, cknode_free);
            removed++;
        }
    }
    ck_writer_rec = NULL;
    pthread_mutex_unlock(&k->wm);
    free(dead);
    t->expirations += removed;
    ck_reclaim(t);
    return removed;
}

static void ck_stats(struct rc_cache *c, struct rc_stats *out)
{
    struct ckc *k = (struct ckc *)c;
    copy_totals(c, out);
    pthread_mutex_lock(&k->wm);
    out->size = ck_ht_count(&k->ht);
    pthread_mutex_unlock(&k->wm);
}

/* ---- liburcu rculfhash --------------------------------------------------------------------------
 * Default (memb) flavour.  Every thread that touches the table is an RCU
 * reader: thread_enter registers it (counted per thread, so the creating
 * thread may also be registered around create/destroy). */

struct unode {
    struct cds_lfht_node lf;
    struct rcu_head rcu;
    uint64_t deadline; /* 0: never */
    uint32_t klen, vlen;
    unsigned char data[];
};

struct ukey {
    const void *key;
    size_t klen;
};

struct uc {
    struct rc_cache base;
    struct cds_lfht *ht;
};

static _Thread_local unsigned urcu_depth; /* registrations of this thread */

static void urcu_in(void)
{
    if (urcu_depth++ == 0)
        rcu_register_thread();
}

static void urcu_out(void)
{
    if (--urcu_depth == 0)
        rcu_unregister_thread();
}

static int u_match(struct cds_lfht_node *node, const void *key)
{
    const struct unode *n = caa_container_of(node, struct unode, lf);
    const struct ukey *k = key;
    return n->klen == k->klen && !memcmp(n->data, k->key, k->klen);
}

static void unode_free(struct rcu_head *h)
{
    free(caa_container_of(h, struct unode, rcu));
}

static int u_create(struct rc_cache **out, const struct rc_params *p)
{
    struct uc *u = calloc(1, sizeof *u);
    if (!u)
        return ENOMEM;
    unsigned long init = 16;
    while (init < p->expected && init < (1ul << 30))
        init <<= 1;
    u->ht = cds_lfht_new(init, 16, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
    if (!u->ht) {
        free(u);
        return ENOMEM;
    }
    base_init(&u->base, impl_named("urcu_lfht"), p);
    *out = &u->base;
    return 0;
}

static void u_destroy(struct rc_cache *c)
{
    struct uc *u = (struct uc *)c;
    struct cds_lfht_iter it;
    struct unode *n;
    urcu_in();
    rcu_read_lock();
    cds_lfht_for_each_entry(u->ht, &it, n, lf)
        if (cds_lfht_del(u->ht, &n->lf) == 0)
            call_rcu(&n->rcu, unode_free);
    rcu_read_unlock();
    rcu_barrier(); /* every node freed */
    if (cds_lfht_destroy(u->ht, NULL))
        fprintf(stderr, "ref_cache: cds_lfht_destroy failed\n");
    urcu_out();
    pthread_mutex_destroy(&c->reg);
    free(u);
}

static struct rc_thread *u_enter(struct rc_cache *c)
{
    struct rc_thread *t = thread_new(c);
    if (t)
        urcu_in();
    return t;
}

static void u_leave(struct rc_cache *c, struct rc_thread *t)
{
    thread_fold(c, t);
    free(t);
    urcu_out();
}

static int u_put(struct rc_cache *c, struct rc_thread *t, const void *key, size_t klen,
                 const void *val, size_t vlen, uint64_t ttl)
{
    struct uc *u = (struct uc *)c;
    uint64_t h = key_hash(key, klen);
    uint64_t now = now_of(c);
    struct unode *n = malloc(sizeof *n + klen + vlen);
    if (!n)
        return ENOMEM;
    cds_lfht_node_init(&n->lf);
    n->deadline = deadline_of(now, ttl);
    n->klen = (uint32_t)klen;
    n->vlen = (uint32_t)vlen;
    memcpy(n->data, key, klen);
    memcpy(n->data + klen, val, vlen);
    struct ukey k = {n->data, klen};
    rcu_read_lock();
    struct cds_lfht_node *old = cds_lfht_add_replace(u->ht, h, u_match, &k, &n->lf);
    if (old)
        call_rcu(&caa_container_of(old, struct unode, lf)->rcu, unode_free);
    rcu_read_unlock();
    t->puts++;
    return 0;
}

static int u_get(struct rc_cache *c, struct rc_thread *t, const void *key, size_t klen, void *buf,
                 size_t cap, size_t *vlen)
{
    struct uc *u = (struct uc *)c;
    uint64_t h = key_hash(key, klen);
    struct ukey k = {key, klen};
    struct cds_lfht_iter it;
    int rc = ENOENT;
    rcu_read_lock();
    cds_lfht_lookup(u->ht, h, u_match, &k, &it);
    struct cds_lfht_node *lf = cds_lfht_iter_get_node(&it);
    if (lf) {
        struct unode *n = caa_container_of(lf, struct unode, lf);
        if (n->deadline && expired(n->deadline, now_of(c))) {
            if (cds_lfht_del(u->ht, lf) == 0) { /* expired: removed by the get */
                call_rcu(&n->rcu, unode_free);
                t->expirations++;
            }
        } else {
            rc = copy_out(n->data + n->klen, n->vlen, buf, cap, vlen);
        }
    }
    rcu_read_unlock();
    count_get(t, rc);
    return rc;
}

static int u_del(struct rc_cache *c, struct rc_thread *t, const void *key, size_t klen)
{
    struct uc *u = (struct uc *)c;
    uint64_t h = key_hash(key, klen);
    struct ukey k = {key, klen};
    struct cds_lfht_iter it;
    int rc = ENOENT;
    rcu_read_lock();
    cds_lfht_lookup(u->ht, h, u_match, &k, &it);
    struct cds_lfht_node *lf = cds_lfht_iter_get_node(&it);
    if (lf && cds_lfht_del(u->ht, lf) == 0) {
        struct unode *n = caa_container_of(lf, struct unode, lf);
        if (expired(n->deadline, now_of(c)))
            t->expirations++;
        else
            rc = 0;
        call_rcu(&n->rcu, unode_free);
    }
    rcu_read_unlock();
    if (!rc)
        t->deletes++;
    return rc;
}

static size_t u_sweep(struct rc_cache *c, struct rc_thread *t, size_t budget)
{
    struct uc *u = (struct uc *)c;
    (void)budget; /* an iterator does not outlive its read-side section: always all */
    struct cds_lfht_iter it;
    struct unode *n;
    size_t removed = 0;
    uint64_t now = now_of(c);
    rcu_read_lock();
    cds_lfht_for_each_entry(u->ht, &it, n, lf)
        if (expired(n->deadline, now) && cds_lfht_del(u->ht, &n->lf) == 0) {
            call_rcu(&n->rcu, unode_free);
            removed++;
        }
    rcu_read_unlock();
    t->expirations += removed;
    return removed;
}

static void u_stats(struct rc_cache *c, struct rc_stats *out)
{
    struct uc *u = (struct uc *)c;
    long before, after;
    unsigned long count;
    copy_totals(c, out);
    urcu_in();
    rcu_read_lock();
    cds_lfht_count_nodes(u->ht, &before, &count, &after);
    rcu_read_unlock();
    urcu_out();
    out->size = count;
}

/* ---- the table ----------------------------------------------------------------------------------- */

const struct rc_impl rc_impls[] = {
    {"ksync_striped", 1, 0, ksc_create_striped, ksc_destroy, ksc_enter, ksc_leave, ksc_put, ksc_get,
     ksc_del, ksc_sweep, ksc_stats},
    {"ksync_striped_rw", 1, 0, ksc_create_striped_rw, ksc_destroy, ksc_enter, ksc_leave, ksc_put,
     ksc_get, ksc_del, ksc_sweep, ksc_stats},
    {"ksync_lockfree", 1, 0, ksc_create_lockfree, ksc_destroy, ksc_enter, ksc_leave, ksc_put,
     ksc_get, ksc_del, ksc_sweep, ksc_stats},
    {"ksync_bounded", 1, 1, ksc_create_bounded, ksc_destroy, ksc_enter, ksc_leave, ksc_put, ksc_get,
     ksc_del, ksc_sweep, ksc_stats},
    {"ck_ht", 0, 0, ck_create, ck_destroy, ck_enter, ck_leave, ck_put, ck_get, ck_del, ck_sweep,
     ck_stats},
    {"urcu_lfht", 0, 0, u_create, u_destroy, u_enter, u_leave, u_put, u_get, u_del, u_sweep,
     u_stats},
    {"pthread_mutex", 0, 0, mt_create, mt_destroy, ksc_enter, mt_leave, mt_put, mt_get, mt_del,
     mt_sweep, mt_stats},
    {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
};

static const struct rc_impl *impl_named(const char *name)
{
    return rc_find(name);
}

const struct rc_impl *rc_find(const char *name)
{
    for (const struct rc_impl *im = rc_impls; im->name; im++)
        if (!strcmp(im->name, name))
            return im;
    return NULL;
}

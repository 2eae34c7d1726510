/* src/lockstat.c - lock statistics (docs/lockstat.md).
 *
 * One record per lock, found by the lock's address in an open-addressing
 * table of record pointers (linear probing, never shrunk, no deletion: a
 * lock initialised again at the same address resets its record).  Records
 * are inserted with one CAS of a NULL slot; a record is complete before the
 * CAS publishes it.  Every counter is a relaxed atomic: the report reads a
 * snapshot that may be behind, never a torn value.
 *
 * A thread does not add each event to the shared record: that would make
 * the record's line a second contended line beside the lock's.  It counts
 * in a private shard (a few records' pending counts) and adds them to the
 * records every FLUSH_EVERY events, when the shard needs the room, when the
 * thread reads statistics, and at the thread's exit (KS_EXIT_LOCKSTAT).  So
 * the counts of a thread that is still running may lag by up to
 * FLUSH_EVERY events per lock; those of a thread that has exited are
 * exact.
 *
 * Only slow paths call in here (src/mutex.c): the fast paths of a lock are
 * those of a build without statistics.  In KS_LOCKSTAT_ALL a lock carries a
 * mark in its word (KS_MUTEX_TRACED) that makes the fast paths fail, so its
 * every acquisition and release comes here.
 */
#include "lockreg.h"

#include <ksync/lockstat.h>
#include <ksync/mutex.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <ksync/cond.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define TABLE_BITS 16
#define RD_POOL 64 /* read holds of one rwlock timed at once (see rd_push) */
#define TABLE_SIZE (1u << TABLE_BITS)
#define MAX_PROBE 256


KS_HIDDEN int ks_ls_mode_;
KS_HIDDEN int ks_ls_ever_;
KS_HIDDEN int ks_trace_all_; /* relaxed: a switch (src/internal.h) */
static struct ks_lockrec **table; /* acquire/release: published once by enable */
static uint64_t dropped;   /* relaxed: records the full table refused */
static ks_mutex_t setup = KS_MUTEX_INIT; /* never marked: the table's own lock */

static inline size_t hash(const void *p)
{
    return (size_t)(ks_mix64((uint64_t)(uintptr_t)p) & (TABLE_SIZE - 1));
}

static struct ks_lockrec **get_table(void)
{
    /* acquire: pairs with the release store in ks_lockstat_set */
    return __atomic_load_n(&table, __ATOMIC_ACQUIRE);
}

/* The last record this thread used: a lock taken and released in a loop
 * finds its record without hashing.  Records are never freed and never
 * change their lock, so a cached pointer whose lock matches is right. */
static KS_TLS struct ks_lockrec *last;

static struct ks_lockrec *find_slow(const void *lock, int create, unsigned kind, const void *site);

/* The record of `lock`, created if `create` (NULL if absent, or the table
 * is full or missing). */
static inline __attribute__((always_inline)) struct ks_lockrec *find(const void *lock, int create, unsigned kind,
                                                             const void *site)
{
    struct ks_lockrec *r = last;
    if (KS_LIKELY(r && r->lock == lock))
        return r;
    r = find_slow(lock, create, kind, site);
    if (r)
        last = r;
    return r;
}

static struct ks_lockrec *find_slow(const void *lock, int create, unsigned kind, const void *site)
{
    struct ks_lockrec **t = get_table();
    if (!t)
        return NULL;
    struct ks_lockrec *mine = NULL;
    size_t i = hash(lock);
    /* At most MAX_PROBE slots: a nearly full table costs a bounded look,
     * not a walk of 65536 slots on every slow path. */
    for (size_t n = 0; n < MAX_PROBE; n++, i = (i + 1) & (TABLE_SIZE - 1)) {
        /* acquire: pairs with the release CAS that published the record */
        struct ks_lockrec *r = __atomic_load_n(&t[i], __ATOMIC_ACQUIRE);
        if (!r) {
            if (!create)
                return NULL;
            if (!mine) {
                mine = calloc(1, sizeof *mine);
                if (!mine) {
                    __atomic_fetch_add(&dropped, 1, __ATOMIC_RELAXED); /* a count: relaxed */
                    return NULL;
                }
                mine->lock = lock;
                mine->site = site;
                mine->kind = kind;
                /* an rwlock's read side takes the name given to the lock
                 * (ks_lock_name names both sides; this is for a name given
                 * before the read side was first seen) */
                if ((uintptr_t)lock & 1) {
                    struct ks_lockrec *base = find_slow((const char *)lock - 1, 0, 0, NULL);
                    if (base) /* acquire: pairs with ks_lock_name's release */
                        mine->name = __atomic_load_n(&base->name, __ATOMIC_ACQUIRE);
                    mine->rd_pool = calloc(RD_POOL, sizeof *mine->rd_pool); /* NULL: holds untimed */
                }
            }
            /* release: the record's fields before it is seen */
            if (__atomic_compare_exchange_n(&t[i], &r, mine, 0, __ATOMIC_RELEASE, __ATOMIC_ACQUIRE))
                return mine;
            /* lost the slot: r is the winner (acquired by the failed CAS) */
        }
        if (r->lock == lock) {
            if (mine)
                free(mine->rd_pool);
            free(mine);
            return r;
        }
    }
    if (mine)
        free(mine->rd_pool);
    free(mine);
    __atomic_fetch_add(&dropped, 1, __ATOMIC_RELAXED);
    return NULL;
}

/* ---- a thread's pending counts ---- */

#define SHARD_WAYS 4
#define FLUSH_EVERY 128

struct pend {
    struct ks_lockrec *r;
    uint32_t gen; /* the record's gen when these counts began */
    unsigned events;
    uint64_t acq, contended, wait_ticks, wait_max_ticks, holds, hold_ticks, hold_max_ticks;
    uint64_t hist[KS_LOCKSTAT_BUCKETS];
};

struct shard {
    struct pend p[SHARD_WAYS];
    unsigned next; /* the way the next miss evicts */
};

static KS_TLS struct shard *my;

/* Set while this thread is in here: a lock taken by what this code calls
 * (the allocator, when malloc is guarded by a ks_mutex, directly or through
 * the drop-in layer) is not recorded, instead of recursing. */
static KS_TLS int busy;


static void add(uint64_t *c, uint64_t v);
static void raise_to(uint64_t *c, uint64_t v);

static void flush_one(struct pend *p)
{
    struct ks_lockrec *r = p->r;
    if (!r || !p->events)
        return;
    /* relaxed: a reset or a new lock at this address meanwhile drops them
     * (a reset racing with this flush may keep one batch: a statistic) */
    if (p->gen != __atomic_load_n(&r->gen, __ATOMIC_RELAXED)) {
        memset(p, 0, sizeof *p);
        p->r = r;
        return;
    }
    if (p->acq)
        add(&r->acq, p->acq);
    if (p->contended) {
        add(&r->contended, p->contended);
        add(&r->wait_ticks, p->wait_ticks);
        raise_to(&r->wait_max_ticks, p->wait_max_ticks);
        for (unsigned b = 0; b < KS_LOCKSTAT_BUCKETS; b++)
            if (p->hist[b])
                add(&r->hist[b], p->hist[b]);
    }
    if (p->holds) {
        add(&r->holds, p->holds);
        add(&r->hold_ticks, p->hold_ticks);
        raise_to(&r->hold_max_ticks, p->hold_max_ticks);
    }
    uint32_t g = p->gen;
    memset(p, 0, sizeof *p);
    p->r = r;
    p->gen = g;
}

static void unstash(void);

static void flush_mine(void)
{
    unstash();
    struct shard *sh = my;
    if (sh)
        for (unsigned w = 0; w < SHARD_WAYS; w++)
            flush_one(&sh->p[w]);
}

static void shard_exit(void)
{
    flush_mine();
    free(my);
    my = NULL;
}

/* This thread's shard, made (and its exit hook armed) on first use; NULL
 * without memory or without an exit hook (then every event is added to
 * its record at once). */
static struct shard *my_shard(void)
{
    struct shard *sh = my;
    if (KS_UNLIKELY(!sh)) {
        sh = calloc(1, sizeof *sh);
        if (!sh)
            return NULL;
        if (ks_thread_at_exit(KS_EXIT_LOCKSTAT, shard_exit)) {
            free(sh);
            return NULL; /* no exit hook: counts would be lost at exit */
        }
        my = sh;
    }
    return sh;
}

/* This thread's pending counts for r (NULL: no shard; count directly). */
static struct pend *pending(struct ks_lockrec *r)
{
    struct shard *sh = my_shard();
    if (!sh)
        return NULL;
    uint32_t gen = __atomic_load_n(&r->gen, __ATOMIC_RELAXED); /* see flush_one */
    for (unsigned w = 0; w < SHARD_WAYS; w++)
        if (sh->p[w].r == r) {
            struct pend *p = &sh->p[w];
            if (p->gen != gen) {
                flush_one(p); /* drops them */
                p->gen = gen;
            }
            return p;
        }
    struct pend *p = &sh->p[sh->next];
    sh->next = (sh->next + 1) % SHARD_WAYS;
    flush_one(p);
    memset(p, 0, sizeof *p);
    p->r = r;
    p->gen = gen;
    return p;
}

static void add(uint64_t *c, uint64_t v)
{
    __atomic_fetch_add(c, v, __ATOMIC_RELAXED); /* a statistic: ordered by nothing */
}

static void raise_to(uint64_t *c, uint64_t v)
{
    uint64_t cur = __atomic_load_n(c, __ATOMIC_RELAXED); /* seeds the CAS */
    while (cur < v && !__atomic_compare_exchange_n(c, &cur, v, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

/* A record's counters to 0 (relaxed: counters). */
static void zero(struct ks_lockrec *r)
{
    uint64_t *c[] = {&r->acq, &r->contended, &r->wait_ticks, &r->wait_max_ticks, &r->holds, &r->hold_ticks,
                     &r->hold_max_ticks};
    for (size_t k = 0; k < sizeof c / sizeof *c; k++)
        __atomic_store_n(c[k], 0, __ATOMIC_RELAXED);
    for (unsigned b = 0; b < KS_LOCKSTAT_BUCKETS; b++)
        __atomic_store_n(&r->hist[b], 0, __ATOMIC_RELAXED);
}

/* ---- ticks to nanoseconds ----
 * src/spin.c's scale is measured once per process over 50 us: good to a
 * few percent, which is enough to size a spin but not to report a 50 ms
 * hold as 50 ms (a test read 47.3).  Statistics convert only when they are
 * read, so they keep a measure of their own: a (ticks, CLOCK_MONOTONIC)
 * pair taken when the table is made, and a fresh pair at each read; over a
 * baseline of 10 ms or more their ratio is good to a few parts per
 * million.  A read sooner than that uses spin.c's scale. */
static uint64_t base_ticks; /* written before the table is published: read after get_table's acquire */
static int64_t base_ns;

struct conv {
    uint64_t dk, dn; /* ticks and ns since the base; dk 0: spin.c's scale */
};

/* The tightest of a few (ticks, ns) pairs: the clock read between two tick
 * reads, the ticks taken as their midpoint. */
static int tick_pair(uint64_t *k, int64_t *ns)
{
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 8; i++) {
        struct timespec ts;
        uint64_t a = ks_ticks();
        if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
            return -1;
        uint64_t b = ks_ticks();
        if (b >= a && b - a < best) {
            best = b - a;
            *k = a + (b - a) / 2;
            *ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        }
    }
    return best == UINT64_MAX ? -1 : 0;
}

static uint64_t ticks_ns(uint64_t ticks);

static void conv_now(struct conv *c)
{
    uint64_t k;
    int64_t n;
    c->dk = c->dn = 0;
    if (get_table() && base_ticks && tick_pair(&k, &n) == 0 && n - base_ns >= 10000000 && k > base_ticks) {
        c->dk = k - base_ticks;
        c->dn = (uint64_t)(n - base_ns);
    }
}

static uint64_t conv_ns(const struct conv *c, uint64_t ticks)
{
    if (!c->dk)
        return ticks_ns(ticks);
    unsigned __int128 x = (unsigned __int128)ticks * c->dn / c->dk;
    return x > UINT64_MAX ? UINT64_MAX : (uint64_t)x;
}

/* ks_ticks() differences to ns with src/spin.c's scale, without its clamp
 * (waits and holds may last seconds): whole 100 ms chunks, then the rest. */
static uint64_t ticks_ns(uint64_t ticks)
{
    static uint64_t chunk_ticks; /* relaxed: the same value from every thread */
    uint64_t c = __atomic_load_n(&chunk_ticks, __ATOMIC_RELAXED);
    if (!c) {
        c = ks_spin_ns_to_ticks(100000000);
        if (!c)
            c = 1;
        __atomic_store_n(&chunk_ticks, c, __ATOMIC_RELAXED);
    }
    return ticks / c * 100000000 + ks_spin_ticks_to_ns(ticks % c);
}

/* The histogram's bounds in ticks: bound[b] = ticks of 2^b ns, so that a
 * wait is put in its bucket without a division.  Filled once (every thread
 * that fills them computes the same values; the last bound is published
 * with release); `shift` is log2 of ns per tick,
 * rounded, so that log2(ticks) + shift is the bucket or one off it. */
static uint64_t bound[KS_LOCKSTAT_BUCKETS];
static int shift;

static void fill_bounds(void)
{
    uint64_t b27 = ks_spin_ns_to_ticks(1ull << 27); /* spin.c converts up to 2^28 ns */
    int sh = 27 - (b27 ? 63 - __builtin_clzll(b27) : 0);
    __atomic_store_n(&shift, sh, __ATOMIC_RELAXED);
    for (unsigned b = 0; b + 1 < KS_LOCKSTAT_BUCKETS; b++)
        __atomic_store_n(&bound[b], b <= 27 ? ks_spin_ns_to_ticks(1ull << b) : b27 << (b - 27), __ATOMIC_RELAXED);
    /* release, last: pairs with the acquire in bucket_of_ticks, which then
     * sees shift and every other bound */
    __atomic_store_n(&bound[KS_LOCKSTAT_BUCKETS - 1], b27 << (KS_LOCKSTAT_BUCKETS - 1 - 27), __ATOMIC_RELEASE);
}

/* The last b with bound[b] <= ticks (bucket 0 also holds what is below). */
static unsigned bucket_of_ticks(uint64_t ticks)
{
    /* acquire: pairs with the release of the last bound in fill_bounds */
    if (KS_UNLIKELY(!__atomic_load_n(&bound[KS_LOCKSTAT_BUCKETS - 1], __ATOMIC_ACQUIRE)))
        fill_bounds();
    int b = (ticks ? 63 - __builtin_clzll(ticks) : 0) + __atomic_load_n(&shift, __ATOMIC_RELAXED);
    b = b < 0 ? 0 : b >= KS_LOCKSTAT_BUCKETS ? KS_LOCKSTAT_BUCKETS - 1 : b;
    /* the estimate is at most one off; walk to the right bucket */
    while (b > 0 && ticks < __atomic_load_n(&bound[b], __ATOMIC_RELAXED))
        b--;
    while (b + 1 < KS_LOCKSTAT_BUCKETS && ticks >= __atomic_load_n(&bound[b + 1], __ATOMIC_RELAXED))
        b++;
    return (unsigned)b;
}

void ks_ls_init(const void *lock, unsigned kind, const void *site)
{
    if (busy)
        return;
    busy = 1;
    struct ks_lockrec *r = find(lock, 1, kind, site);
    busy = 0;
    if (!r)
        return;
    /* A lock initialised again at this address: a new lock, a new class
     * (its name, if it has one, stays: ks_lock_name may come before init).
     * The generation drops what threads still have pending for the old one.
     * relaxed: counters and informative fields */
    __atomic_store_n(&r->site, site, __ATOMIC_RELAXED);
    __atomic_store_n(&r->inited, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&r->kind, kind, __ATOMIC_RELAXED);
    __atomic_fetch_add(&r->gen, 1, __ATOMIC_RELAXED);
    zero(r);
    if (r->rd_pool) { /* a new lock has no read holds; relaxed: nobody uses it meanwhile */
        for (unsigned i = 0; i < RD_POOL; i++)
            __atomic_store_n(&r->rd_pool[i], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&r->rd_count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&r->rd_lost, 0, __ATOMIC_RELAXED);
    }
    /* lock-order checking: the class is looked up again from the new site,
     * and nobody holds a lock that is being initialised */
    ks_ld_changed(r);
    __atomic_store_n(&r->ld_holder, 0, __ATOMIC_RELAXED);
}

/* Count one acquisition into this thread's shard (outside any critical
 * section: see ks_ls_acquired). */
static void stamp(struct ks_lockrec *r, uint64_t now);

static void count_acq(struct ks_lockrec *r, int contended, uint64_t wait_ticks)
{
    struct pend *p = pending(r);
    if (KS_UNLIKELY(!p)) {
        struct pend one = {.r = r, .gen = __atomic_load_n(&r->gen, __ATOMIC_RELAXED), .events = 1, .acq = 1};
        if (contended) {
            one.wait_ticks = one.wait_max_ticks = wait_ticks;
            one.contended = 1;
            one.hist[bucket_of_ticks(wait_ticks)] = 1;
        }
        flush_one(&one);
        return;
    }
    p->acq++;
    if (contended) {
        p->contended++;
        p->wait_ticks += wait_ticks;
        if (wait_ticks > p->wait_max_ticks)
            p->wait_max_ticks = wait_ticks;
        p->hist[bucket_of_ticks(wait_ticks)]++;
    }
    if (++p->events >= FLUSH_EVERY)
        flush_one(p);
}

/* The last acquisition of this thread, not yet counted: it is counted at
 * the thread's next lock statistics call outside a critical section (the
 * next slow-path entry, the release's second half, a read, the exit). */
static KS_TLS struct {
    struct ks_lockrec *r;
    uint32_t gen;
    uint64_t wait_ticks;
    int contended;
} stash;

/* ---- an rwlock's read-side hold stamps: a pool in the record ----
 *
 * A reader whose hold will reach a library unlock (src/rwlock.c, "Lock
 * statistics": the mark is set) puts its acquisition's ticks in a free
 * slot of the pool, after its acquiring CAS; every library read unlock
 * takes one stamp, any, before its releasing CAS.  So the pool never holds
 * more stamps than there are read holds, and it is empty whenever no
 * reader holds the lock: a stamp taken was put after the read side last
 * became free, and the hold it gives is at most the time the read side
 * has been held without a break.  Which reader's stamp a release takes does
 * not change the sum of the holds, only how it is split between them (the
 * maximum is that of such a split).
 *
 * A count of the stamps keeps the claim under races: a pop first reserves
 * a stamp by decrementing the count, then searches until it finds one (a
 * single pass could miss them all while others took stamps ahead of it and
 * new ones landed behind it, leaving a stamp in the pool of a free lock);
 * a push places its stamp, then counts it.  An empty pool costs a release
 * one load.  With the pool full (RD_POOL readers inside), a reader that
 * cannot stamp leaves a token instead, and the next release takes a token
 * before any stamp: the early releases go untimed, not the long holds.
 * Each thread starts its search at a slot of its own, so readers on
 * different CPUs seldom write the same line.  The slots: relaxed (a stamp
 * is a number, published by the count's release). */
static KS_TLS unsigned pool_start; /* 1 + this thread's first slot, 0 until chosen */

static unsigned pool_from(void)
{
    if (KS_UNLIKELY(!pool_start)) {
        static unsigned next; /* relaxed: only spreads threads over slots */
        pool_start = 1 + (__atomic_fetch_add(&next, 7, __ATOMIC_RELAXED) & (RD_POOL - 1));
    }
    return pool_start - 1;
}

static void rd_push(struct ks_lockrec *r, uint64_t t)
{
    unsigned i = pool_from();
    for (unsigned n = 0; n < RD_POOL; n++, i = (i + 1) & (RD_POOL - 1)) {
        uint64_t zero = 0;
        if (!__atomic_load_n(&r->rd_pool[i], __ATOMIC_RELAXED) &&
            __atomic_compare_exchange_n(&r->rd_pool[i], &zero, t ? t : 1, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            /* release: the stamp before its count (pairs with rd_pop's acquire) */
            __atomic_fetch_add(&r->rd_count, 1, __ATOMIC_RELEASE);
            return;
        }
    }
    __atomic_fetch_add(&r->rd_lost, 1, __ATOMIC_RELAXED); /* a token: a count, ordered by nothing */
}

static uint64_t rd_pop(struct ks_lockrec *r)
{
    /* a token first: this release goes untimed (relaxed: as in rd_push) */
    uint32_t lost = __atomic_load_n(&r->rd_lost, __ATOMIC_RELAXED);
    while (lost)
        if (__atomic_compare_exchange_n(&r->rd_lost, &lost, lost - 1, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return 0;
    /* reserve a stamp; acquire: pairs with rd_push's release, so the stamp
     * counted is in a slot (relaxed load: it seeds the CAS) */
    uint32_t c = __atomic_load_n(&r->rd_count, __ATOMIC_RELAXED);
    do {
        if (!c)
            return 0;
    } while (!__atomic_compare_exchange_n(&r->rd_count, &c, c - 1, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED));
    /* There are at least as many stamps in the slots as reservations not
     * yet served, so the search ends; the bound only guards a corrupted
     * pool (then this release goes untimed). */
    unsigned i = pool_from();
    for (unsigned n = 0; n < 1024 * RD_POOL; n++, i = (i + 1) & (RD_POOL - 1)) {
        uint64_t t = __atomic_load_n(&r->rd_pool[i], __ATOMIC_RELAXED);
        if (t && __atomic_compare_exchange_n(&r->rd_pool[i], &t, 0, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return t;
    }
    return 0;
}

static void unstash(void)
{
    struct ks_lockrec *r = stash.r;
    if (r) {
        stash.r = NULL;
        if (stash.gen == __atomic_load_n(&r->gen, __ATOMIC_RELAXED)) /* see flush_one */
            count_acq(r, stash.contended, stash.wait_ticks);
    }
}

void *ks_ls_enter(const void *lock, unsigned kind, const void *site)
{
    if (busy)
        return NULL;
    busy = 1;
    unstash();
    /* The shard now, outside the lock: its exit hook counts the stash of a
     * thread whose last acquisition's release never reaches a slow path. */
    (void)my_shard(); /* without one, counts go to the record at once */
    struct ks_lockrec *r = find(lock, 1, kind, site);
    if (r && !__atomic_load_n(&r->kind, __ATOMIC_RELAXED))
        __atomic_store_n(&r->kind, kind, __ATOMIC_RELAXED); /* named before it was seen: informative */
    busy = 0;
    return r;
}

void ks_ls_acquired(void *cookie, int contended, uint64_t wait_ticks, uint64_t now)
{
    struct ks_lockrec *r = cookie;
    if (!r)
        return;
    unstash(); /* nothing stashed since enter: a no-op kept for safety */
    if (KS_UNLIKELY(!my)) {
        /* no shard (no memory, or no exit hook): nothing would count a
         * stash at the thread's exit, so count now */
        count_acq(r, contended, wait_ticks);
    } else {
        stash.r = r;
        stash.gen = __atomic_load_n(&r->gen, __ATOMIC_RELAXED); /* see flush_one */
        stash.contended = contended;
        stash.wait_ticks = wait_ticks;
    }
    if ((uintptr_t)r->lock & 1) { /* an rwlock's read side: its pool, if it has one */
        if (now && r->rd_pool)
            rd_push(r, now);
    } else {
        stamp(r, now);
    }
}

/* The hold stamps of this thread: the locks it holds whose hold is timed,
 * with the ticks of the acquisition and the record's generation then.  In
 * the thread, not in the record: a stamp in the record was written by
 * every holder, which made the record's line a second contended line
 * beside the lock's (the contended counter at 16 threads paid for it).
 * A thread holds few timed locks at once; with more than STAMPS, the
 * oldest stamp gives way (that hold is not timed).  A second stamp for a
 * lock means the first one's release took the fast path: it is replaced.
 *
 * An rwlock's read side is different: its holds are anonymous (a program
 * on the drop-in layer may release a read lock that another thread took,
 * as glibc allows), so its stamps go to a pool in its record that any
 * releaser takes one from (rd_push, rd_pop). */
#define STAMPS 8
static KS_TLS struct stamp {
    const void *lock;
    struct ks_lockrec *r;
    uint32_t gen;
    uint64_t t;
} stamps[STAMPS];
static KS_TLS unsigned stamp_next;

static void stamp(struct ks_lockrec *r, uint64_t now)
{
    struct stamp *free_one = NULL;
    for (unsigned i = 0; i < STAMPS; i++) {
        if (stamps[i].lock == r->lock) {
            /* a stamp left for this lock (its release did not reach a
             * slow path, as after a mode change): replaced or dropped */
            stamps[i].lock = NULL;
            free_one = &stamps[i];
        } else if (!stamps[i].lock && !free_one) {
            free_one = &stamps[i];
        }
    }
    if (!now)
        return;
    if (!free_one) {
        free_one = &stamps[stamp_next];
        stamp_next = (stamp_next + 1) % STAMPS;
    }
    free_one->lock = r->lock;
    free_one->r = r;
    free_one->gen = __atomic_load_n(&r->gen, __ATOMIC_RELAXED); /* see flush_one */
    free_one->t = now;
}

uint64_t ks_ls_hold_end(const void *lock, void **cookie)
{
    *cookie = NULL;
    if (busy)
        return 0;
    if ((uintptr_t)lock & 1) { /* an rwlock's read side: its pool */
        busy = 1;
        struct ks_lockrec *r = find(lock, 0, 0, NULL);
        busy = 0;
        uint64_t t = r && r->rd_pool ? rd_pop(r) : 0;
        if (!t)
            return 0;
        uint64_t now = ks_ticks();
        *cookie = r;
        return now > t ? now - t : 0;
    }
    struct stamp *mine = NULL;
    for (unsigned i = 0; i < STAMPS; i++)
        if (stamps[i].lock == lock) {
            mine = &stamps[i];
            break;
        }
    if (!mine)
        return 0;
    struct stamp st = *mine;
    mine->lock = NULL;
    /* a new lock at this address since (init, reset): not its hold */
    if (st.gen != __atomic_load_n(&st.r->gen, __ATOMIC_RELAXED))
        return 0;
    uint64_t now = ks_ticks();
    *cookie = st.r;
    return now > st.t ? now - st.t : 0;
}

void ks_ls_hold_add(void *cookie, uint64_t v)
{
    if (busy)
        return;
    busy = 1;
    unstash();
    struct ks_lockrec *r = cookie;
    struct pend *p = pending(r);
    if (KS_UNLIKELY(!p)) {
        struct pend one = {.r = r, .gen = __atomic_load_n(&r->gen, __ATOMIC_RELAXED), .events = 1, .holds = 1,
                           .hold_ticks = v, .hold_max_ticks = v};
        flush_one(&one);
        busy = 0;
        return;
    }
    p->holds++;
    p->hold_ticks += v;
    if (v > p->hold_max_ticks)
        p->hold_max_ticks = v;
    if (++p->events >= FLUSH_EVERY)
        flush_one(p);
    busy = 0;
}

struct ks_lockrec *ks_lockrec_find(const void *lock, int create, unsigned kind, const void *site)
{
    return find(lock, create, kind, site);
}

int ks_lockstat_mode(void)
{
    return ks_ls_mode();
}

static int make_table(void)
{
    if (get_table())
        return 0;
    ks_mutex_lock(&setup);
    if (!get_table()) {
        struct ks_lockrec **t = calloc(TABLE_SIZE, sizeof *t);
        if (!t) {
            ks_mutex_unlock(&setup);
            return ENOMEM;
        }
        uint64_t k;
        int64_t n;
        if (tick_pair(&k, &n) == 0) { /* the base of the precise conversion, before the table is seen */
            base_ticks = k;
            base_ns = n;
        }
        __atomic_store_n(&table, t, __ATOMIC_RELEASE); /* release: pairs with get_table */
        __atomic_store_n(&ks_ls_ever_, 1, __ATOMIC_RELAXED); /* a hint for the slow paths */
    }
    ks_mutex_unlock(&setup);
    return 0;
}

int ks_lockrec_table(void)
{
    return make_table();
}

int ks_lockstat_set(int mode)
{
    if (mode != KS_LOCKSTAT_OFF && mode != KS_LOCKSTAT_CONTENTION && mode != KS_LOCKSTAT_ALL)
        return -EINVAL;
    if (mode != KS_LOCKSTAT_OFF && make_table())
        return -ENOMEM;
    /* relaxed: switches, ordered by nothing */
    if (mode == KS_LOCKSTAT_ALL)
        __atomic_fetch_or(&ks_trace_all_, KS_TRACE_LOCKSTAT, __ATOMIC_RELAXED);
    else
        __atomic_fetch_and(&ks_trace_all_, ~KS_TRACE_LOCKSTAT, __ATOMIC_RELAXED);
    return __atomic_exchange_n(&ks_ls_mode_, mode, __ATOMIC_RELAXED);
}

struct name_node {
    struct name_node *next;
    char s[];
};
static struct name_node *names;

int ks_lock_name(const void *lock, const char *name)
{
    if (!lock || !name)
        return EINVAL;
    if (make_table())
        return ENOMEM;
    struct ks_lockrec *r = find(lock, 1, 0, NULL);
    if (!r)
        return ENOSPC;
    size_t len = strlen(name);
    struct name_node *nn = malloc(sizeof *nn + len + 1);
    if (!nn)
        return ENOMEM;
    memcpy(nn->s, name, len + 1);
    /* Every name stays allocated for good, on one list: a reader may be
     * printing the old one when a lock is renamed or initialised again.
     * release: the node's bytes before it is on the list (nothing reads the
     * list; it keeps the names reachable) */
    nn->next = __atomic_load_n(&names, __ATOMIC_RELAXED); /* seeds the CAS */
    while (!__atomic_compare_exchange_n(&names, &nn->next, nn, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        ;
    /* release: the string's bytes before its pointer (pairs with snap and
     * src/lockdep.c's class_of) */
    __atomic_store_n(&r->name, nn->s, __ATOMIC_RELEASE);
    ks_ld_changed(r); /* a new name, a new class for lock-order checking */
    /* an rwlock's read side, if it has a record already (release: as above) */
    struct ks_lockrec *rd = find_slow(ks_ls_read_key(lock), 0, 0, NULL);
    if (rd)
        __atomic_store_n(&rd->name, nn->s, __ATOMIC_RELEASE);
    return 0;
}

static void snap(const struct ks_lockrec *r, struct ks_lockstat *o, const struct conv *cv)
{
    memset(o, 0, sizeof *o);
    /* an rwlock's read side is keyed by the address + 1 (ks_ls_read_key) */
    o->lock = (uintptr_t)r->lock & 1 ? (const char *)r->lock - 1 : r->lock;
    o->name = __atomic_load_n(&r->name, __ATOMIC_ACQUIRE); /* acquire: pairs with ks_lock_name */
    if (!o->name && ((uintptr_t)r->lock & 1)) {
        /* an rwlock's read side made while its lock was being named: the
         * record's creation and ks_lock_name may each miss the other; the
         * lock's own record has the name (acquire: as above) */
        struct ks_lockrec *base = find_slow(o->lock, 0, 0, NULL);
        if (base)
            o->name = __atomic_load_n(&base->name, __ATOMIC_ACQUIRE);
    }
    o->site = __atomic_load_n(&r->site, __ATOMIC_RELAXED);
    o->kind = __atomic_load_n(&r->kind, __ATOMIC_RELAXED);
    /* relaxed: a snapshot of counters */
    o->acquisitions = __atomic_load_n(&r->acq, __ATOMIC_RELAXED);
    o->contended = __atomic_load_n(&r->contended, __ATOMIC_RELAXED);
    o->wait_ns = conv_ns(cv, __atomic_load_n(&r->wait_ticks, __ATOMIC_RELAXED));
    o->wait_max_ns = conv_ns(cv, __atomic_load_n(&r->wait_max_ticks, __ATOMIC_RELAXED));
    o->holds = __atomic_load_n(&r->holds, __ATOMIC_RELAXED);
    o->hold_ns = conv_ns(cv, __atomic_load_n(&r->hold_ticks, __ATOMIC_RELAXED));
    o->hold_max_ns = conv_ns(cv, __atomic_load_n(&r->hold_max_ticks, __ATOMIC_RELAXED));
    for (unsigned b = 0; b < KS_LOCKSTAT_BUCKETS; b++)
        o->wait_hist[b] = __atomic_load_n(&r->hist[b], __ATOMIC_RELAXED);
}

size_t ks_lockstat_read(struct ks_lockstat *out, size_t max)
{
    flush_mine(); /* this thread's own counts are exact in what it reads */
    struct ks_lockrec **t = get_table();
    size_t n = 0;
    if (!t)
        return 0;
    struct conv cv;
    conv_now(&cv);
    for (size_t i = 0; i < TABLE_SIZE; i++) {
        struct ks_lockrec *r = __atomic_load_n(&t[i], __ATOMIC_ACQUIRE); /* acquire: as in find */
        if (!r)
            continue;
        if (out && n < max)
            snap(r, &out[n], &cv);
        n++;
    }
    return n;
}

void ks_lockstat_reset(void)
{
    flush_mine(); /* then zeroed with the rest */
    struct ks_lockrec **t = get_table();
    if (!t)
        return;
    for (size_t i = 0; i < TABLE_SIZE; i++) {
        struct ks_lockrec *r = __atomic_load_n(&t[i], __ATOMIC_ACQUIRE); /* acquire: as in find */
        if (!r)
            continue;
        /* what other threads still have pending is dropped (see flush_one) */
        __atomic_fetch_add(&r->gen, 1, __ATOMIC_RELAXED);
        zero(r);
    }
}

/* ---- the report: one row per class, the most contended first ---- */

struct cls {
    struct ks_lockstat s; /* sums (max for the maxima) */
    unsigned locks;
};

static int same_class(const struct ks_lockstat *a, const struct ks_lockstat *b)
{
    /* kind 0: a lock named before it was first used, of no kind yet */
    if (a->name || b->name)
        return a->name && b->name && strcmp(a->name, b->name) == 0 &&
               (a->kind == b->kind || !a->kind || !b->kind);
    return a->site == b->site && a->kind == b->kind;
}

static int by_contention(const void *pa, const void *pb)
{
    const struct cls *a = pa, *b = pb;
    if (a->s.contended != b->s.contended)
        return a->s.contended < b->s.contended ? 1 : -1;
    if (a->s.wait_ns != b->s.wait_ns)
        return a->s.wait_ns < b->s.wait_ns ? 1 : -1;
    return a->s.acquisitions < b->s.acquisitions ? 1 : a->s.acquisitions > b->s.acquisitions ? -1 : 0;
}

void ks_lockrec_describe(const char *name, const void *site, char *buf, size_t len)
{
    if (name) {
        snprintf(buf, len, "%s", name);
        return;
    }
    Dl_info di;
    if (site && dladdr(site, &di) && di.dli_sname)
        snprintf(buf, len, "%s+0x%lx", di.dli_sname, (unsigned long)((uintptr_t)site - (uintptr_t)di.dli_saddr));
    else if (site && dladdr(site, &di) && di.dli_fname)
        snprintf(buf, len, "%s+0x%lx", strrchr(di.dli_fname, '/') ? strrchr(di.dli_fname, '/') + 1 : di.dli_fname,
                 (unsigned long)((uintptr_t)site - (uintptr_t)di.dli_fbase));
    else
        snprintf(buf, len, "%p", site);
}

static void fmt_ns(char *b, size_t len, uint64_t ns)
{
    if (ns < 10000)
        snprintf(b, len, "%llu ns", (unsigned long long)ns);
    else if (ns < 10000000)
        snprintf(b, len, "%.1f us", (double)ns / 1e3);
    else if (ns < 10000000000ull)
        snprintf(b, len, "%.1f ms", (double)ns / 1e6);
    else
        snprintf(b, len, "%.1f s", (double)ns / 1e9);
}

/* The table by class, most contended first: *out (to be freed) gets the
 * classes, *locks the number of locks; the number of classes, or -1
 * without memory. */
static long by_class(struct cls **out, size_t *locks)
{
    size_t n = ks_lockstat_read(NULL, 0);
    struct ks_lockstat *all = n ? calloc(n, sizeof *all) : NULL;
    struct cls *c = n ? calloc(n, sizeof *c) : NULL;
    if (n && (!all || !c)) {
        free(all);
        free(c);
        return -1;
    }
    size_t now = ks_lockstat_read(all, n); /* records may have been added since: read what fits */
    if (now < n)
        n = now;
    size_t nc = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < nc && !same_class(&c[k].s, &all[i]))
            k++;
        if (k == nc) {
            c[nc].s = all[i];
            c[nc].locks = 1;
            nc++;
            continue;
        }
        struct ks_lockstat *s = &c[k].s;
        c[k].locks++;
        if (!s->kind)
            s->kind = all[i].kind;
        s->acquisitions += all[i].acquisitions;
        s->contended += all[i].contended;
        s->wait_ns += all[i].wait_ns;
        s->holds += all[i].holds;
        s->hold_ns += all[i].hold_ns;
        if (all[i].wait_max_ns > s->wait_max_ns)
            s->wait_max_ns = all[i].wait_max_ns;
        if (all[i].hold_max_ns > s->hold_max_ns)
            s->hold_max_ns = all[i].hold_max_ns;
        for (unsigned b = 0; b < KS_LOCKSTAT_BUCKETS; b++)
            s->wait_hist[b] += all[i].wait_hist[b];
    }
    if (nc > 1)
        qsort(c, nc, sizeof *c, by_contention);
    free(all);
    *out = c;
    *locks = n;
    return (long)nc;
}

static int report(FILE *f);

/* Not a cancellation point (docs/conventions.md): stdio writes may be one,
 * and a cancel acting there left the snapshot allocated. */
int ks_lockstat_report(FILE *f)
{
    const int c = ks_nocancel_begin();
    const int e = report(f);
    ks_nocancel_end(c);
    return e;
}

static int report(FILE *f)
{
    if (!f)
        return EINVAL;
    struct cls *c = NULL;
    size_t n = 0;
    long got = by_class(&c, &n);
    if (got < 0)
        return ENOMEM;
    size_t nc = (size_t)got;
    int mode = ks_ls_mode();
    fprintf(f, "ksync lockstat, pid %d, mode %s: %zu lock(s) in %zu class(es), most contended first%s\n",
            (int)getpid(), mode == KS_LOCKSTAT_ALL ? "all" : mode == KS_LOCKSTAT_CONTENTION ? "contention" : "off",
            n, nc, __atomic_load_n(&dropped, __ATOMIC_RELAXED) ? " (the table was full: some locks are missing)" : "");
    fprintf(f, "%-40s %-6s %5s %12s %12s %10s %10s %10s %10s %10s\n", "class (name or site)", "kind", "locks",
            "acquired", "contended", "wait", "wait max", "hold avg", "hold max", "holds");
    for (size_t k = 0; k < nc; k++) {
        const struct ks_lockstat *s = &c[k].s;
        char what[128], w[16], wm[16], ha[16], hm[16];
        ks_lockrec_describe(s->name, s->site, what, sizeof what);
        fmt_ns(w, sizeof w, s->wait_ns);
        fmt_ns(wm, sizeof wm, s->wait_max_ns);
        if (s->holds) {
            fmt_ns(ha, sizeof ha, s->hold_ns / s->holds);
            fmt_ns(hm, sizeof hm, s->hold_max_ns);
        } else { /* none timed (a semaphore has no holder) */
            snprintf(ha, sizeof ha, "-");
            snprintf(hm, sizeof hm, "-");
        }
        fprintf(f, "%-40.40s %-6s %5u %12llu %12llu %10s %10s %10s %10s %10llu\n", what, ks_lockstat_kind_name(s->kind),
                c[k].locks, (unsigned long long)s->acquisitions, (unsigned long long)s->contended, w, wm, ha, hm,
                (unsigned long long)s->holds);
        if (s->contended && k < 5) {
            /* the wait histogram of the five most contended: each non-empty
             * log2 bucket as its lower bound and count */
            fprintf(f, "%-40s   waits from:", "");
            for (unsigned b = 0; b < KS_LOCKSTAT_BUCKETS; b++)
                if (s->wait_hist[b]) {
                    char lo[16];
                    fmt_ns(lo, sizeof lo, b ? 1ull << b : 0);
                    fprintf(f, " %s:%llu", lo, (unsigned long long)s->wait_hist[b]);
                }
            fprintf(f, "\n");
        }
    }
    free(c);
    return ferror(f) ? EIO : 0;
}

/* ---- the live view: a page that ksync-top reads (ksync/lockstat.h) ----
 *
 * A thread of the process (started by ks_lockstat_publish, or by
 * KSYNC_LOCKSTAT) writes the table by class into a POSIX shared-memory
 * object, /ksync-lockstat.<pid>, every interval, under a sequence count:
 * odd while it writes, so a reader copies the page and keeps the copy only
 * if the count was even and unchanged around it (a seqlock).  Nothing in
 * the lock paths knows about it. */

static struct ks_lockstat_page *page;   /* the mapping; the publisher alone writes it */
static char page_name[40];
static pthread_t publisher;
static int pub_state;                   /* under setup: 0 none, 1 running, 2 asked to stop */
static int64_t pub_interval_ns;         /* relaxed: read by the publisher each round */
static ks_mutex_t pub_lock = KS_MUTEX_INIT; /* the publisher's sleep, and its stop */
static ks_cond_t pub_wake = KS_COND_INIT;

static void publish_once(void)
{
    struct cls *c = NULL;
    size_t n = 0;
    long nc = by_class(&c, &n);
    if (nc < 0)
        return;
    struct ks_lockstat_page *pg = page;
    /* The odd count must be visible before any row changes (a reader that
     * sees a new row sees the odd count): every store of the page below is
     * a release store, which orders the odd count's store before it (no
     * fence: ThreadSanitizer knows none; once a second, the cost is nil). */
    uint32_t seq = __atomic_load_n(&pg->seq, __ATOMIC_RELAXED);
    __atomic_store_n(&pg->seq, seq + 1, __ATOMIC_RELAXED);
    uint32_t rows = nc < KS_LOCKSTAT_PAGE_ROWS ? (uint32_t)nc : KS_LOCKSTAT_PAGE_ROWS;
    for (uint32_t k = 0; k < rows; k++) {
        struct ks_lockstat_row *r = &pg->row[k];
        const struct ks_lockstat *st = &c[k].s;
        char what[sizeof r->cls];
        ks_lockrec_describe(st->name, st->site, what, sizeof what);
        /* release: see above; read by the other process only as a copy
         * that it checks */
        for (size_t i = 0; i < sizeof r->cls; i++)
            __atomic_store_n(&r->cls[i], what[i], __ATOMIC_RELEASE);
        __atomic_store_n(&r->kind, st->kind, __ATOMIC_RELEASE);
        __atomic_store_n(&r->locks, c[k].locks, __ATOMIC_RELEASE);
        __atomic_store_n(&r->acquisitions, st->acquisitions, __ATOMIC_RELEASE);
        __atomic_store_n(&r->contended, st->contended, __ATOMIC_RELEASE);
        __atomic_store_n(&r->wait_ns, st->wait_ns, __ATOMIC_RELEASE);
        __atomic_store_n(&r->wait_max_ns, st->wait_max_ns, __ATOMIC_RELEASE);
        __atomic_store_n(&r->holds, st->holds, __ATOMIC_RELEASE);
        __atomic_store_n(&r->hold_ns, st->hold_ns, __ATOMIC_RELEASE);
        __atomic_store_n(&r->hold_max_ns, st->hold_max_ns, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&pg->rows, rows, __ATOMIC_RELEASE);
    __atomic_store_n(&pg->classes, (uint32_t)nc, __ATOMIC_RELEASE);
    __atomic_store_n(&pg->locks, (uint32_t)n, __ATOMIC_RELEASE);
    __atomic_store_n(&pg->mode, (uint32_t)ks_ls_mode(), __ATOMIC_RELEASE);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    __atomic_store_n(&pg->updated_ns, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec, __ATOMIC_RELEASE);
    __atomic_store_n(&pg->interval_ns, (uint64_t)__atomic_load_n(&pub_interval_ns, __ATOMIC_RELAXED),
                     __ATOMIC_RELEASE);
    /* release: the rows before the even count (pairs with the reader's
     * acquire load of the count after its copy) */
    __atomic_store_n(&pg->seq, seq + 2, __ATOMIC_RELEASE);
    free(c);
}

static void *publish_loop(void *arg)
{
    (void)arg;
    ks_mutex_lock(&pub_lock);
    while (__atomic_load_n(&pub_state, __ATOMIC_RELAXED) == 1) { /* under pub_lock for the stop */
        ks_mutex_unlock(&pub_lock);
        publish_once();
        ks_mutex_lock(&pub_lock);
        if (__atomic_load_n(&pub_state, __ATOMIC_RELAXED) == 1)
            ks_cond_timedwait(&pub_wake, &pub_lock,
                              ks_deadline_after(__atomic_load_n(&pub_interval_ns, __ATOMIC_RELAXED)));
    }
    ks_mutex_unlock(&pub_lock);
    return NULL;
}

static pid_t pub_pid; /* under setup: the process whose page it is */

/* A fork child has no publisher thread and must not remove its parent's
 * page: it forgets both (its copy of the mapping stays unused). */
static int publisher_here(void)
{
    if (pub_state && pub_pid != getpid()) {
        pub_state = 0;
        page = NULL;
        page_name[0] = 0;
    }
    return pub_state;
}

static void unpublish_at_exit(void)
{
    ks_mutex_lock(&setup);
    if (publisher_here() && page_name[0])
        shm_unlink(page_name);
    ks_mutex_unlock(&setup);
}

static int publish(int interval_ms)
{
    if (interval_ms < 0)
        return EINVAL;
    if (interval_ms > 0 && make_table())
        return ENOMEM;
    ks_mutex_lock(&setup);
    int e = 0;
    (void)publisher_here();
    if (interval_ms == 0) {
        if (pub_state == 1) {
            ks_mutex_lock(&pub_lock);
            __atomic_store_n(&pub_state, 2, __ATOMIC_RELAXED);
            ks_cond_signal(&pub_wake);
            ks_mutex_unlock(&pub_lock);
            pthread_join(publisher, NULL);
            pub_state = 0;
            munmap(page, sizeof *page);
            page = NULL;
            shm_unlink(page_name);
            page_name[0] = 0;
        }
        ks_mutex_unlock(&setup);
        return 0;
    }
    __atomic_store_n(&pub_interval_ns, (int64_t)interval_ms * 1000000, __ATOMIC_RELAXED);
    if (pub_state == 1) { /* running: a new interval only */
        ks_mutex_lock(&pub_lock);
        ks_cond_signal(&pub_wake);
        ks_mutex_unlock(&pub_lock);
        ks_mutex_unlock(&setup);
        return 0;
    }
    char name[sizeof page_name];
    snprintf(name, sizeof name, KS_LOCKSTAT_PAGE_PREFIX "%d", (int)getpid());
    int fd = shm_open(name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        e = errno;
    } else if (ftruncate(fd, sizeof *page) != 0) {
        e = errno;
        close(fd);
        shm_unlink(name);
    } else {
        void *p = mmap(NULL, sizeof *page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        e = p == MAP_FAILED ? errno : 0;
        close(fd);
        if (e) {
            shm_unlink(name);
        } else {
            page = p;
            page->magic = KS_LOCKSTAT_PAGE_MAGIC;
            page->version = KS_LOCKSTAT_PAGE_VERSION;
            page->rows_max = KS_LOCKSTAT_PAGE_ROWS;
            page->pid = (int32_t)getpid();
            snprintf(page->prog, sizeof page->prog, "%s", program_invocation_short_name);
            memcpy(page_name, name, sizeof name);
            pub_pid = getpid();
            ks_lock_name(&pub_lock, "ksync: lock statistics publisher"); /* not a site in the library */
            __atomic_store_n(&pub_state, 1, __ATOMIC_RELAXED); /* under setup; the thread reads it under pub_lock */
            /* the publisher takes no signal meant for the program */
            sigset_t all, old;
            sigfillset(&all);
            pthread_sigmask(SIG_SETMASK, &all, &old);
            e = pthread_create(&publisher, NULL, publish_loop, NULL);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            if (e) {
                pub_state = 0;
                munmap(page, sizeof *page);
                page = NULL;
                shm_unlink(page_name);
                page_name[0] = 0;
            } else {
                pthread_setname_np(publisher, "ksync-lockstat");
                static int at_exit_armed; /* under setup */
                if (!at_exit_armed && atexit(unpublish_at_exit) == 0)
                    at_exit_armed = 1;
            }
        }
    }
    ks_mutex_unlock(&setup);
    return e;
}

/* Not a cancellation point (docs/conventions.md): publish() joins the
 * publisher thread and opens and closes the page, all cancellation points,
 * while it holds `setup`; a cancel acting there left `setup` locked. */
int ks_lockstat_publish(int interval_ms)
{
    const int c = ks_nocancel_begin();
    const int e = publish(interval_ms);
    ks_nocancel_end(c);
    return e;
}

/* ---- KSYNC_LOCKSTAT: switched on before main, reported at exit ---- */

static void report_at_exit(void)
{
    const char *path = getenv("KSYNC_LOCKSTAT_FILE");
    FILE *f = path && *path ? fopen(path, "a") : stderr;
    if (!f)
        return;
    ks_lockstat_report(f);
    if (f != stderr)
        fclose(f);
}

__attribute__((constructor)) static void lockstat_from_env(void)
{
    const char *v = getenv("KSYNC_LOCKSTAT");
    if (!v || !*v)
        return;
    int mode;
    if (!strcasecmp(v, "all") || !strcmp(v, "2"))
        mode = KS_LOCKSTAT_ALL;
    else if (!strcmp(v, "1") || !strcasecmp(v, "on") || !strcasecmp(v, "yes") || !strcasecmp(v, "contention"))
        mode = KS_LOCKSTAT_CONTENTION;
    else {
        if (strcmp(v, "0") && strcasecmp(v, "off") && strcasecmp(v, "no"))
            fprintf(stderr, "ksync: KSYNC_LOCKSTAT=%s: not 0, 1, contention or all; statistics stay off\n", v);
        return;
    }
    if (ks_lockstat_set(mode) >= 0)
        atexit(report_at_exit);
    /* the live view for ksync-top: KSYNC_LOCKSTAT_TOP=0 turns it off, a
     * number of milliseconds sets its interval (default 1000) */
    const char *t = getenv("KSYNC_LOCKSTAT_TOP");
    long ms = t && *t ? strtol(t, NULL, 10) : 1000;
    if (ms > 0 && ms <= 3600000) {
        int e = ks_lockstat_publish((int)ms);
        if (e)
            fprintf(stderr, "ksync: lock statistics' live view: %s (ksync-top will not see this process)\n",
                    strerror(e));
    }
}

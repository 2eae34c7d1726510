/* src/pool.c - a fixed set of resources borrowed with a deadline.
 * Docs: docs/pool.md.
 *
 * Layout, one block (no pointers inside, so it may live in shared memory):
 *
 *   struct ks_pool   n, flags, offsets
 *   ks_queue_t       the free list: indices of resources not borrowed,
 *                    capacity n (a return can never find it full)
 *   n cells          the queue's ring
 *   slot[n]          by index: the resource value and its borrowed flag
 *   key[n]           (value, index) sorted by value: return's lookup
 *
 * Per resource index i the only transitions are
 *   free (i in the queue, slot[i].out == 0)
 *     --borrow: get i from the queue, out 0 -> 1-->  borrowed
 *     --return: out 1 -> 0, put i into the queue-->  free
 * The queue hands each index to exactly one get, so one borrower holds i;
 * the CAS on `out` refuses a second return of the same value (EPERM).
 * A borrow that times out took no index and has nothing to give back.
 */
#include "internal.h"

#include <ksync/pool.h>

#include <stdlib.h>
#include <string.h>

struct ks_pool_slot {
    uintptr_t res;
    uint32_t out; /* 1 while borrowed */
    uint32_t pad;
};

struct ks_pool_key {
    uintptr_t res;
    uint64_t index;
};

struct ks_pool {
    uint64_t n;
    uint64_t slot_off; /* byte offsets from the pool's address */
    uint64_t key_off;
    uint32_t flags;
    uint32_t owned;
    uint32_t borrowing; /* borrows past their first try, until their last access */
    uint32_t pad;
    ks_queue_t q; /* last: its ring's cells follow */
};

static size_t slot_off(size_t n)
{
    return offsetof(struct ks_pool, q) + ks_queue_bytes(n);
}

size_t ks_pool_bytes(size_t n)
{
    const size_t per = sizeof(struct ks_pool_slot) + sizeof(struct ks_pool_key);
    if (!ks_queue_bytes(n) || n > (SIZE_MAX - slot_off(n)) / per)
        return 0; /* the last test only matters where size_t is 32 bits */
    return slot_off(n) + n * (sizeof(struct ks_pool_slot) + sizeof(struct ks_pool_key));
}

static struct ks_pool_slot *slots(const ks_pool_t *p)
{
    return (struct ks_pool_slot *)((char *)p + p->slot_off);
}

static struct ks_pool_key *keys(const ks_pool_t *p)
{
    return (struct ks_pool_key *)((char *)p + p->key_off);
}

static int key_cmp(const void *a, const void *b)
{
    uintptr_t x = ((const struct ks_pool_key *)a)->res, y = ((const struct ks_pool_key *)b)->res;
    return x < y ? -1 : x > y;
}

/* Sorted keys of the n resources in `k`; EINVAL if two are equal. */
static int sort_keys(struct ks_pool_key *k, void *const *resources, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        k[i].res = (uintptr_t)resources[i];
        k[i].index = i;
    }
    qsort(k, n, sizeof *k, key_cmp);
    for (size_t i = 1; i < n; i++)
        if (k[i].res == k[i - 1].res)
            return EINVAL;
    return 0;
}

static int check(const void *p, void *const *resources, size_t n, unsigned flags)
{
    return !p || !resources || !ks_pool_bytes(n) || (flags & ~KS_FLAGS_VALID) ? EINVAL : 0;
}

/* Fill a pool whose key array is already sorted and checked. */
static void setup(ks_pool_t *p, void *const *resources, size_t n, unsigned flags, int owned)
{
    p->n = n;
    p->slot_off = slot_off(n);
    p->key_off = p->slot_off + n * sizeof(struct ks_pool_slot);
    p->flags = flags;
    p->owned = (uint32_t)owned;
    p->borrowing = 0;
    p->pad = 0;
    ks_queue_setup(&p->q, n, flags, 0);
    struct ks_pool_slot *s = slots(p);
    for (size_t i = 0; i < n; i++) {
        s[i].res = (uintptr_t)resources[i];
        s[i].out = 0;
        s[i].pad = 0;
        /* never blocks or fails: n free slots, single-threaded set-up */
        ks_mpmc_push_(&p->q.ring, i);
    }
}

int ks_pool_init(ks_pool_t *p, void *const *resources, size_t n, unsigned flags)
{
    int e = check(p, resources, n, flags);
    if (e || ((uintptr_t)p & (KS_MPMC_ALIGN - 1)))
        return EINVAL;
    /* Sort into the pool's own key array; a refusal must leave the caller's
     * memory as it was, so sort a scratch copy first. */
    struct ks_pool_key *k = malloc(n * sizeof *k);
    if (!k)
        return ENOMEM;
    if ((e = sort_keys(k, resources, n)) == 0) {
        setup(p, resources, n, flags, 0);
        memcpy(keys(p), k, n * sizeof *k);
    }
    free(k);
    return e;
}

int ks_pool_create(ks_pool_t **pp, void *const *resources, size_t n, unsigned flags)
{
    int e = check(pp, resources, n, flags);
    if (e)
        return e;
    ks_pool_t *p = ks_alloc_lines(ks_pool_bytes(n));
    if (!p)
        return ENOMEM;
    p->key_off = slot_off(n) + n * sizeof(struct ks_pool_slot);
    if ((e = sort_keys(keys(p), resources, n)) != 0) {
        free(p);
        return e;
    }
    setup(p, resources, n, flags, 1);
    *pp = p;
    return 0;
}

/* A borrower that had to wait is counted in `borrowing` from before its
 * wait until after its last access to the pool.  It must be looked at
 * first: a borrower woken by the return of the last resource is no longer
 * a sleeper of the queue, and until it has taken the index out every
 * resource looks free; the queue's destroy would then wait for it to leave
 * the queue and free the pool under its slot write (issue 17, item 1). */
int ks_pool_destroy(ks_pool_t *p)
{
    if (!p)
        return EINVAL;
    /* acquire: pairs with the release decrement at the end of a waiting
     * borrow, so that a borrow seen finished here is seen holding its
     * resource by the count of free ones below. */
    if (__atomic_load_n(&p->borrowing, __ATOMIC_ACQUIRE))
        return EBUSY;
    if (ks_pool_available(p) != p->n)
        return EBUSY;
    int e = ks_queue_destroy(&p->q); /* EBUSY if a borrower still sleeps */
    if (e)
        return e;
    if (p->owned)
        free(p);
    return 0;
}

static void take(ks_pool_t *p, uintptr_t i, void **res)
{
    struct ks_pool_slot *s = &slots(p)[i];
    /* relaxed: the queue's get (acquire) ordered us after the return that
     * freed this index; the flag only catches double returns. */
    __atomic_store_n(&s->out, 1, __ATOMIC_RELAXED);
    *res = (void *)s->res;
}

int ks_pool_borrow(ks_pool_t *p, int64_t deadline, void **res)
{
    if (!p || !res || deadline < 0)
        return EINVAL;
    uintptr_t i;
    /* First try, as the queue's own fast path (no count: a borrow that
     * never waited cannot be running while the caller destroys the pool
     * unless the caller races its own destroy). */
    if (KS_LIKELY(ks_mpmc_pop_(&p->q.ring, &i) == 0)) {
        ks_queue_wake_(&p->q, &p->q.putters); /* a return may wait behind a pop */
        take(p, i, res);
        return 0;
    }
    /* relaxed: a borrower that sleeps is ordered before the thread that
     * wakes it (and so before that thread's destroy) by the futex call; the
     * release decrement below is what destroy's acquire load pairs with. */
    __atomic_fetch_add(&p->borrowing, 1, __ATOMIC_RELAXED);
    void *v;
    int e = ks_queue_timedget(&p->q, &v, deadline);
    if (e == 0) /* ETIMEDOUT otherwise; EPIPE cannot happen: the pool's queue never closes */
        take(p, (uintptr_t)v, res);
    /* release: the last access; pairs with the acquire load in destroy */
    __atomic_fetch_sub(&p->borrowing, 1, __ATOMIC_RELEASE);
    return e;
}

int ks_pool_return(ks_pool_t *p, void *res)
{
    if (!p)
        return EINVAL;
    const struct ks_pool_key *k = keys(p);
    size_t lo = 0, hi = p->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (k[mid].res < (uintptr_t)res)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == p->n || k[lo].res != (uintptr_t)res)
        return EINVAL;
    uint64_t i = k[lo].index;
    uint32_t one = 1;
    /* relaxed: the CAS only arbitrates between two returns of one value;
     * the put below (release) orders the borrower's use before the next
     * borrow. */
    if (!__atomic_compare_exchange_n(&slots(p)[i].out, &one, 0, 0, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
        return EPERM;
    /* Never waits long: the queue has n slots and holds fewer than n indices
     * (at worst a get is mid-way through the slot we need). */
    return ks_queue_put(&p->q, (void *)(uintptr_t)i);
}

size_t ks_pool_available(const ks_pool_t *p)
{
    return p ? ks_queue_size(&p->q) : 0;
}

size_t ks_pool_size(const ks_pool_t *p)
{
    return p ? (size_t)p->n : 0;
}

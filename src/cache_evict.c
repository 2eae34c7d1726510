/* src/cache_evict.c - ks_cache's eviction policy (a cache given a capacity):
 * S3-FIFO's small and main queues and its ghost table, per shard.
 * Docs: docs/cache.md ("Bounded: S3-FIFO eviction"); the declarations and
 * fifo_push are in src/cache_internal.h.
 *
 * Each shard has two FIFO queues of its entries, `small` (new keys) and
 * `main` (keys read while in small, or seen in the ghost), doubly linked
 * through entry.u.fifo from the newest to the oldest entry, and a ghost
 * table of hashes recently evicted from small.  All of it is only touched
 * under the shard's write lock; the one field readers write is an entry's
 * 2-bit access counter `freq` (relaxed: a hint). */
#include "cache_internal.h"

#include <stdlib.h>

/* ---- S3-FIFO queues ------------------------------------------------------ */

static inline struct fifo *fifo_of(struct shard *s, struct entry *e)
{
    return e->where == FIFO_SMALL ? &s->small : &s->main;
}

void ks_cache_fifo_remove(struct shard *s, struct entry *e)
{
    struct fifo *q = fifo_of(s, e);
    if (e->u.fifo.newer)
        e->u.fifo.newer->u.fifo.older = e->u.fifo.older;
    else
        q->newest = e->u.fifo.older;
    if (e->u.fifo.older)
        e->u.fifo.older->u.fifo.newer = e->u.fifo.newer;
    else
        q->oldest = e->u.fifo.newer;
    q->n--;
    q->bytes -= esize(e);
    e->where = FIFO_NONE;
}

void ks_cache_fifo_replace(struct shard *s, struct entry *old, struct entry *n)
{
    struct fifo *q = fifo_of(s, old);
    n->where = old->where;
    n->u.fifo = old->u.fifo;
    if (n->u.fifo.newer)
        n->u.fifo.newer->u.fifo.older = n;
    else
        q->newest = n;
    if (n->u.fifo.older)
        n->u.fifo.older->u.fifo.newer = n;
    else
        q->oldest = n;
    q->bytes += esize(n);
    q->bytes -= esize(old);
}

/* ---- ghost table ---------------------------------------------------------- */

size_t ks_cache_ghost_bound(const struct shard *s)
{
    size_t gw = s->cap ? s->cap : s->cap_bytes / 256, gs = 64;
    while (gs < gw && gs < ((size_t)1 << 30))
        gs <<= 1;
    return gs;
}

void ks_cache_ghost_follow(struct shard *s)
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

/* ---- eviction ------------------------------------------------------------ */

/* Is the small queue over its tenth of the shard's share? */
static inline int small_over_tenth(const struct shard *s)
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
int ks_cache_evict_one(struct shard *s, uint64_t now, struct entry *keep, struct ks_epoch_node **g)
{
    size_t limit = 2 * (FREQ_MAX + 1) * (s->count + 1);
    for (size_t round = 0; round <= limit; round++) {
        int from_small = s->small.n && (small_over_tenth(s) || !s->main.n);
        struct fifo *q = from_small ? &s->small : &s->main;
        struct entry *e = q->oldest;
        if (!e)
            return 0;
        if (e == keep) {
            if (q->n == 1) { /* keep is all of q: look at the other queue */
                from_small = !from_small;
                q = from_small ? &s->small : &s->main;
                if (!(e = q->oldest))
                    return 0;
            } else { /* a fresh put: to main's newest end; not a round, and
                        the next oldest of q is another entry */
                ks_cache_fifo_remove(s, e);
                fifo_push(s, e, FIFO_MAIN);
                round--;
                continue;
            }
        }
        int dead = expired(e, now);
        uint8_t f = freq_of(e);
        if (!dead && f && round < limit) {
            ks_cache_fifo_remove(s, e);
            if (from_small) {
                freq_set(e, 0);
                fifo_push(s, e, FIFO_MAIN);
            } else {
                freq_set(e, (uint8_t)(f - 1));
                fifo_push(s, e, FIFO_MAIN);
            }
            continue;
        }
        if (from_small && !dead)
            *ghost_slot(s, e->hash) = e->hash | 1;
        ks_cache_unlink(s, link_to(s->t, e), e, g);
        stat_inc(dead ? &s->expirations : &s->evictions);
        return 1;
    }
    return 0;
}

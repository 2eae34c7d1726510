/* src/cache_table.c - ks_cache's sharded hash table: buckets, unlinking,
 * sweeping, growth, and the garbage list that frees what writers unlink.
 * Docs: docs/cache.md; the layout and the memory-order rules are at the top
 * of src/cache.c, the declarations in src/cache_internal.h.
 *
 * Everything here runs under the shard's write lock.  A lock-free reader
 * may be on any chain meanwhile, so a link is only ever changed by one
 * release store (link_store), an unlinked entry keeps its own `next`, and
 * nothing a reader may still reach is freed before ks_cache_dispose hands
 * it to the epoch after the lock. */
#include "cache_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- garbage: unlinked entries and tables, freed after the lock ---------- */

void ks_cache_free_entry(struct ks_epoch_node *n)
{
    free((char *)n - offsetof(struct entry, u.rcu));
}

void ks_cache_free_table(struct ks_epoch_node *n)
{
    free((char *)n - offsetof(struct table, rcu));
}

void ks_cache_dispose(const ks_cache_t *c, struct ks_epoch_node *g)
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

struct table *ks_cache_table_new(size_t nb)
{
    if (nb > (SIZE_MAX - sizeof(struct table)) / sizeof(struct entry *))
        return NULL;
    struct table *t = calloc(1, sizeof *t + nb * sizeof(struct entry *));
    if (t)
        t->mask = nb - 1;
    return t;
}

struct entry *ks_cache_find_locked(struct table *t, uint64_t h, const void *key, size_t klen,
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

/* ---- unlinking ----------------------------------------------------------- */

void ks_cache_unlink(struct shard *s, struct entry **p, struct entry *e, struct ks_epoch_node **g)
{
    link_store(p, link_load(&e->next)); /* readers on e keep e->next */
    if (e->where != FIFO_NONE)
        ks_cache_fifo_remove(s, e);
    set_size(&s->count, s->count - 1);
    set_size(&s->bytes, s->bytes - esize(e));
    if (e->deadline)
        s->timed--;
    garbage_add(g, &e->u.rcu, ks_cache_free_entry);
}

size_t ks_cache_sweep_locked(struct shard *s, size_t nb, uint64_t now, struct ks_epoch_node **g,
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
                ks_cache_unlink(s, p, e, g);
                stat_inc(&s->expirations);
                removed++;
            } else {
                p = &e->next;
            }
        }
    }
    return removed;
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
    n->where = FIFO_NONE;
    memcpy(n->data, e->data, esize(e));
}

void ks_cache_grow(const ks_cache_t *c, struct shard *s, struct ks_epoch_node **g)
{
    struct table *old = s->t;
    size_t nb = (old->mask + 1) * 2;
    if (nb < old->mask + 1)
        return;
    struct table *t = ks_cache_table_new(nb);
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
        garbage_add(g, &old->rcu, ks_cache_free_table);
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
            if (e->where != FIFO_NONE)
                ks_cache_fifo_replace(s, e, n);
            n->next = NULL;
            *chain_end(t, n->hash) = n; /* t is not published yet */
            garbage_add(g, &e->u.rcu, ks_cache_free_entry);
            e = next;
        }
    }
    /* release: the new table and every copy are written before readers
     * can load the pointer (pairs with the acquire load of s->t in lookup,
     * src/cache.c) */
    __atomic_store_n(&s->t, t, __ATOMIC_RELEASE);
    garbage_add(g, &old->rcu, ks_cache_free_table);
}

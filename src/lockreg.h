/* src/lockreg.h - the lock registry that lock statistics (src/lockstat.c)
 * and lock-order checking (src/lockdep.c) share: one record per lock,
 * found by the lock's address (docs/lockstat.md, docs/lockdep.md).
 *
 * The table lives in src/lockstat.c.  Records are made on demand, never
 * freed, and never change their lock; a lock initialised again at the same
 * address resets its record (new site, new class).  Fields are atomics
 * with the orders named beside them.
 */
#ifndef KS_LOCKREG_H
#define KS_LOCKREG_H

#include "internal.h"

#include <ksync/lockstat.h>

struct ks_ld_class;

struct ks_lockrec {
    const void *lock;
    uint32_t gen;            /* relaxed: moved by init and reset; pending counts of an older gen are dropped */
    const void *site;        /* relaxed: informative (lockdep reads it once per class lookup) */
    const char *name;        /* acquire/release: a string published whole (ks_lock_name) */
    unsigned kind;
    uint64_t acq, contended, holds;
    /* ks_ticks() units, converted when read: no division per event */
    uint64_t wait_ticks, wait_max_ticks, hold_ticks, hold_max_ticks;
    uint64_t hist[KS_LOCKSTAT_BUCKETS];
    /* lock-order checking (src/lockdep.c) */
    struct ks_ld_class *ld_class; /* seq_cst: the class, NULL until looked up or after a change (ks_ld_changed) */
    uint32_t ld_gen;         /* seq_cst: moved by every change of the lock's identity: init, destroy, name, nest */
    unsigned ld_sub;         /* relaxed: ks_lock_nest's subclass, 0 by default (read after ld_gen) */
    uint64_t ld_holder;      /* relaxed: (checking epoch << 32) | kernel tid of the thread seen taking it */
    int inited;              /* relaxed: `site` is an init site (ks_ls_init), not a first acquisition's */
    /* an rwlock's read side (odd key): the hold stamps of its readers, a
     * pool any releaser takes one from (src/lockstat.c); NULL otherwise or
     * without memory.  Set before the record is published, then constant. */
    uint64_t *rd_pool;
    uint32_t rd_count;       /* release/acquire: stamps in the pool (a pop reserves one first) */
    uint32_t rd_lost;        /* relaxed: read holds the full pool could not stamp, not yet released */
};

/* The record of `lock`, made if `create` (with `kind` and `site`); NULL if
 * absent, or when the table is full or missing. */
KS_HIDDEN struct ks_lockrec *ks_lockrec_find(const void *lock, int create, unsigned kind, const void *site);
/* The lock's identity changed (init, destroy, ks_lock_name, ks_lock_nest):
 * lock-order checking looks its class up again (src/lockdep.c). */
KS_HIDDEN void ks_ld_changed(struct ks_lockrec *r);
/* Makes the table: 0 or ENOMEM. */
KS_HIDDEN int ks_lockrec_table(void);
/* `name` (may be NULL) or `site` as text ("func+0x1c", "prog+0x1234", or
 * the address), for reports. */
KS_HIDDEN void ks_lockrec_describe(const char *name, const void *site, char *buf, size_t len);

#endif

/* src/mpmc.c - set-up and tear-down of the bounded MPMC ring.  The
 * operations are inline in include/ksync/mpmc.h; docs/mpmc.md has the
 * algorithm (Vyukov's bounded queue, half-step sequence numbers).
 *
 * Cell states, for the cell that ticket t maps to (c = capacity):
 *
 *   seq == 2t      free, waiting for the push holding ticket t
 *   seq == 2t + 1  holds ticket t's item, waiting for the pop holding ticket t
 *   seq == 2(t+c)  emptied by that pop: free for the push holding ticket t+c
 *
 *   push(t): sees 2t, CAS tail t -> t+1, writes the item, stores 2t+1 (release)
 *   pop(t):  sees 2t+1, CAS head t -> t+1, reads the item, stores 2(t+c) (release)
 *
 * Counting in half-steps keeps "holds ticket t's item" (2t+1) distinct from
 * "free for ticket t+c" (2t+2c) even for c == 1, where Vyukov's original
 * (t+1 for both) would let a second push overwrite an unread item.
 */
#include "internal.h"

#include <ksync/mpmc.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

size_t ks_mpmc_bytes(size_t capacity)
{
    if (capacity == 0 || (uint64_t)capacity > KS_MPMC_CAPACITY_MAX ||
        capacity > (SIZE_MAX - sizeof(ks_mpmc_t)) / sizeof(ks_mpmc_cell_t))
        return 0; /* the last test only matters where size_t is 32 bits */
    return sizeof(ks_mpmc_t) + capacity * sizeof(ks_mpmc_cell_t);
}

KS_HIDDEN void ks_mpmc_setup(ks_mpmc_t *q, size_t capacity, int owned)
{
    memset(q, 0, sizeof *q);
    q->cap = capacity;
    q->pow2 = (capacity & (capacity - 1)) == 0;
    q->mask = q->pow2 ? capacity - 1 : 0;
    q->owned = (uint32_t)owned;
    ks_mpmc_cell_t *c = (ks_mpmc_cell_t *)(q + 1);
    for (size_t i = 0; i < capacity; i++) {
        c[i].seq = 2 * (uint64_t)i; /* free for ticket i */
        c[i].item = 0;
    }
    /* Publication of the ring to other threads is the caller's business
     * (thread creation, a mutex, a release store of the pointer). */
}

int ks_mpmc_init(ks_mpmc_t *q, size_t capacity)
{
    if (!q || ((uintptr_t)q & (KS_MPMC_ALIGN - 1)) || !ks_mpmc_bytes(capacity))
        return EINVAL;
    ks_mpmc_setup(q, capacity, 0);
    return 0;
}

int ks_mpmc_create(ks_mpmc_t **qp, size_t capacity)
{
    size_t bytes = ks_mpmc_bytes(capacity);
    if (!qp || !bytes)
        return EINVAL;
    ks_mpmc_t *q = ks_alloc_lines(bytes);
    if (!q)
        return ENOMEM;
    ks_mpmc_setup(q, capacity, 1);
    *qp = q;
    return 0;
}

int ks_mpmc_destroy(ks_mpmc_t *q)
{
    if (!q)
        return EINVAL;
    if (q->owned)
        free(q);
    return 0;
}

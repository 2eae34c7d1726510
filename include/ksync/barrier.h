/* ksync/barrier.h - reusable barrier (pthread_barrier, Python's Barrier
 * without abort).  docs/barrier.md.
 *
 *   ks_barrier_t b;  ks_barrier_init(&b, nthreads, 0);
 *   int r = ks_barrier_wait(&b);   KS_BARRIER_SERIAL for exactly one caller
 *                                   of each phase, 0 for the others
 *
 *   static ks_barrier_t sb = KS_BARRIER_INIT(4);   static, process-private
 *
 * Unlike the other primitives, all zeros is not a usable barrier: a barrier
 * needs its count, so a zero-initialised one that was never given it
 * answers every wait with EINVAL (count 0) and changes
 * nothing.  KS_BARRIER_INIT(count) is the static initializer (count in
 * 1..KS_BARRIER_MAX; process-shared barriers use init with KS_SHARED).
 *
 * init: 0, EINVAL (NULL, count 0, count > KS_BARRIER_MAX, unknown flags;
 * the barrier is then untouched).
 * wait: KS_BARRIER_SERIAL, 0, EINVAL (NULL, or count 0: never initialised).
 * destroy: 0, EBUSY (a phase is partly filled), EINVAL (NULL).  Destroying
 * twice is 0 and harmless while the memory is still there; a destroyed
 * barrier may be given to init again.  Any thread whose wait of the last phase has
 * returned (typically the serial one) may destroy and free the barrier at
 * once: ks_barrier_destroy waits until the other threads released by that
 * phase have stopped touching it (POSIX's rule; docs/pitfalls.md item 25).  Waiters
 * spin briefly, then sleep.
 */
#ifndef KSYNC_BARRIER_H
#define KSYNC_BARRIER_H

#include <ksync/annotate.h>
#include <ksync/common.h>

#define KS_BARRIER_SERIAL (-1) /* same value as PTHREAD_BARRIER_SERIAL_THREAD */
#define KS_BARRIER_MAX 0x7fffffffu

typedef struct ks_barrier {
    uint32_t seq;     /* futex word: phase number << 1 | SLEEPERS */
    uint32_t arrived; /* threads arrived in the current phase */
    uint32_t count;   /* threads per phase; constant */
    uint32_t flags;   /* KS_SHARED or 0; constant */
    uint32_t leaving; /* released waiters not yet out (bit 31: destroy waits) */
} ks_barrier_t;

/* Static initializer: a private barrier for `count` threads, as
 * ks_barrier_init(&b, count, 0) would set it. */
#define KS_BARRIER_INIT(count) {0u, 0u, (uint32_t)(count), 0u, 0u}

KS_EXTERN_C_BEGIN

KS_API int ks_barrier_init(ks_barrier_t *b, unsigned count, unsigned flags);
KS_API int ks_barrier_destroy(ks_barrier_t *b);
KS_API int ks_barrier_wait(ks_barrier_t *b);

#if KS_ANNOTATING
/* What a race detector is told (ksync/annotate.h): what every thread did
 * before the barrier happens before what any does after it. */
static inline int ks_barrier_wait_annotated_(ks_barrier_t *b)
{
    if (b) {
        KS_ANN_OBJECT(b);
        KS_ANN_RELEASE(b);
    }
    int r = (ks_barrier_wait)(b);
    if ((r == 0 || r == KS_BARRIER_SERIAL) && b)
        KS_ANN_ACQUIRE(b);
    return r;
}
#define ks_barrier_wait(b) ks_barrier_wait_annotated_(b)
#endif

KS_EXTERN_C_END

#endif

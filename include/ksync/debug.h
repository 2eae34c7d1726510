/* ksync/debug.h - introspection: futex call counts, and the knobs of the
 * race-widening (KS_DEBUG_YIELD) build.
 *
 * The stress suite links a copy of the library built with -DKS_DEBUG_YIELD.
 * In that copy, the points inside each primitive where interleavings matter
 * randomly yield, spin or sleep a few microseconds with probability
 * permille/1000.  The normal library has no such points and does not export
 * these functions.
 */
#ifndef KSYNC_DEBUG_H
#define KSYNC_DEBUG_H

#include <ksync/common.h>

/* Counts of futex system calls made by the calling thread since it started,
 * for tests and benchmarks that show a fast path made none, or that a
 * wake-up policy saves wakes.  Always available.  Returns 0, or EINVAL
 * for a NULL out. */
struct ks_futex_stats {
    uint64_t waits; /* FUTEX_WAIT_BITSET calls made */
    uint64_t wakes; /* FUTEX_WAKE / FUTEX_CMP_REQUEUE calls made */
    uint64_t woken; /* threads those calls woke or requeued */
};

KS_EXTERN_C_BEGIN
KS_API int ks_futex_stats(struct ks_futex_stats *out);
#ifdef KS_DEBUG_YIELD
KS_API void ks_debug_yield_config(unsigned permille, uint64_t seed);
KS_API int ks_debug_yield_enabled(void);
#endif
KS_EXTERN_C_END

#endif

/* arch/generic/ks_arch.h - the plain C11 reference for ksync's arch layer.
 *
 * Every architecture header provides exactly this set, and must agree with
 * this one in meaning (tests/test_arch.c and the AArch64 self-test check the
 * observable parts).  <ksync/arch.h> picks the header; the generic version is
 * what ThreadSanitizer builds use: TSan models C11 atomic operations, not
 * inline asm.  It does not model stand-alone fences either (GCC warns with
 * -Wtsan), so <ksync/arch.h> replaces ks_fence_full and ks_fence_acquire
 * under TSan (its comment says how).  ksync's algorithms put their ordering
 * on the atomic operations wherever they can; the full fences that remain
 * are the store-load orderings of Dekker pairs (the queue's sleeper check,
 * the epoch's section entry and advance), which no acquire/release pair
 * gives.
 *
 *   ks_fence_full()      orders every earlier load/store before every later one
 *   ks_fence_acquire()   earlier loads before later loads and stores
 *   ks_fence_release()   earlier loads and stores before later stores
 *   ks_compiler_barrier() stops compiler reordering only
 *   ks_cpu_relax()       spin-wait hint (pause / yield); no memory effect
 *   ks_ticks()           a cheap, per-CPU-monotonic tick counter (unit varies)
 *   KS_CACHELINE         the size to pad independently written data to
 */
#ifndef KS_ARCH_INSIDE
#error "include <ksync/arch.h>, not an arch header directly"
#endif
#ifndef KS_ARCH_H
#define KS_ARCH_H

#include <stdint.h>
#include <time.h>

#define KS_ARCH_NAME "generic"
/* 128, not 64: adjacent-line prefetchers on x86 and many Arm cores pull
 * lines in pairs, so 64-byte padding still false-shares (the reasoning of
 * crossbeam's CachePadded).  The generic build cannot know the CPU. */
#define KS_CACHELINE 128

static inline void ks_compiler_barrier(void) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
static inline void ks_fence_full(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void ks_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void ks_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void ks_cpu_relax(void) { ks_compiler_barrier(); }

static inline uint64_t ks_ticks(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif

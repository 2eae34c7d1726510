/* arch/x86_64/ks_arch.h - ksync's arch layer for x86-64 (see arch/generic).
 *
 * x86-64 is TSO: loads are not reordered with older loads, stores not with
 * older stores or older loads.  Acquire and release fences therefore only
 * have to stop the compiler; the one hardware reordering left (a store
 * followed by a load from another address) needs a full fence.  Like
 * liburcu (include/urcu/arch/x86.h) we use a locked no-op add on the stack
 * rather than mfence: it is a full barrier for ordinary memory and cheaper
 * on most cores.  mfence is still needed for non-temporal stores, which
 * ksync does not use.
 */
#ifndef KS_ARCH_INSIDE
#error "include <ksync/arch.h>, not an arch header directly"
#endif
#ifndef KS_ARCH_H
#define KS_ARCH_H

#include <stdint.h>

#if !defined(__x86_64__)
#error "arch/x86_64 used on another CPU: build with ARCH=generic or the right ARCH"
#endif

#define KS_ARCH_NAME "x86_64"
/* Lines are 64 bytes, but the L2 spatial prefetcher fetches 128-byte pairs. */
#define KS_CACHELINE 128

static inline void ks_compiler_barrier(void) { __asm__ __volatile__("" ::: "memory"); }
static inline void ks_fence_full(void)
{
    __asm__ __volatile__("lock; addl $0, -128(%%rsp)" ::: "memory", "cc");
}
static inline void ks_fence_acquire(void) { ks_compiler_barrier(); }
static inline void ks_fence_release(void) { ks_compiler_barrier(); }
static inline void ks_cpu_relax(void) { __asm__ __volatile__("pause" ::: "memory"); }

static inline uint64_t ks_ticks(void)
{
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

#endif

/* arch/aarch64/ks_arch.h - ksync's arch layer for AArch64 (see arch/generic).
 *
 * AArch64 is weakly ordered, so every fence emits a barrier.  Only fences,
 * the spin hint and the counter are asm here: read-modify-write atomics are
 * left to the compiler's __atomic builtins, which pick LSE instructions or
 * outline-atomics (hand-written LL/SC sequences were a bug farm in CK:
 * ck PR 259, issue 85).
 *   full    dmb ish    (loads and stores, inner shareable domain)
 *   acquire dmb ishld  (earlier loads before later loads and stores)
 *   release dmb ish    (no lighter barrier orders load->store and store->store)
 */
#ifndef KS_ARCH_INSIDE
#error "include <ksync/arch.h>, not an arch header directly"
#endif
#ifndef KS_ARCH_H
#define KS_ARCH_H

#include <stdint.h>

#if !defined(__aarch64__)
#error "arch/aarch64 used on another CPU: build with ARCH=generic or the right ARCH"
#endif

#define KS_ARCH_NAME "aarch64"
/* 64-byte lines on most cores, 128 on Apple M-series and some Neoverse parts. */
#define KS_CACHELINE 128

static inline void ks_compiler_barrier(void) { __asm__ __volatile__("" ::: "memory"); }
static inline void ks_fence_full(void) { __asm__ __volatile__("dmb ish" ::: "memory"); }
static inline void ks_fence_acquire(void) { __asm__ __volatile__("dmb ishld" ::: "memory"); }
static inline void ks_fence_release(void) { __asm__ __volatile__("dmb ish" ::: "memory"); }
static inline void ks_cpu_relax(void) { __asm__ __volatile__("yield" ::: "memory"); }

/* The virtual counter: constant rate (CNTFRQ_EL0), readable from EL0 on Linux. */
static inline uint64_t ks_ticks(void)
{
    uint64_t v;
    __asm__ __volatile__("isb; mrs %0, cntvct_el0" : "=r"(v) :: "memory");
    return v;
}

#endif

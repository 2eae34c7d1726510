/* ksync/arch.h - the architecture layer: which arch/<cpu>/ks_arch.h to use,
 * and the ThreadSanitizer shim.  docs/arch.md.
 *
 * Every part of ksync that needs a fence, a spin-wait hint, the tick
 * counter or the cache-line size takes it from here: the library's sources
 * (through src/internal.h) and the public headers whose inline fast paths
 * need one (mpmc.h, queue.h).  The implementation is picked by compiler
 * macros, as Concurrency Kit's ck_pr.h and liburcu's urcu/arch.h do, so an
 * application compiles these headers with nothing but the include path:
 *
 *   ThreadSanitizer (__SANITIZE_THREAD__)  arch/generic: TSan models C11
 *                                          atomics, not inline asm
 *   KS_ARCH_GENERIC defined (make ARCH=generic)         arch/generic
 *   __x86_64__                             arch/x86_64
 *   __aarch64__                            arch/aarch64
 *   anything else                          arch/generic
 *
 * The arch headers live in arch/<cpu>/ks_arch.h (include/ksync/arch is a
 * link to ../../arch in the source tree; make install copies them to
 * <prefix>/include/ksync/arch/<cpu>/).  Each provides the set documented in
 * arch/generic/ks_arch.h: KS_CACHELINE, ks_compiler_barrier, ks_fence_full,
 * ks_fence_acquire, ks_fence_release, ks_cpu_relax, ks_ticks.
 *
 * ThreadSanitizer does not model stand-alone fences (GCC refuses them with
 * -Wtsan).  Under TSan, therefore, and only there:
 *   - ks_fence_full() is a seq_cst read-modify-write of one shared word
 *     (ks_arch_fence_word, in the library): every full fence in the
 *     process touches that word, so TSan sees the edges the fences make;
 *   - ks_fence_acquire() does nothing, and KS_FENCED_LOAD, the memory order
 *     for loads that a later ks_fence_acquire() orders, is acquire instead
 *     of relaxed: the loads carry the ordering themselves.
 */
#ifndef KSYNC_ARCH_H
#define KSYNC_ARCH_H

#include <stdint.h>

#include <ksync/common.h>

#define KS_ARCH_INSIDE 1
#if defined(__SANITIZE_THREAD__) || defined(KS_ARCH_GENERIC)
#include <ksync/arch/generic/ks_arch.h>
#elif defined(__x86_64__)
#include <ksync/arch/x86_64/ks_arch.h>
#elif defined(__aarch64__)
#include <ksync/arch/aarch64/ks_arch.h>
#else
#include <ksync/arch/generic/ks_arch.h>
#endif
#undef KS_ARCH_INSIDE

#if defined(__SANITIZE_THREAD__)
KS_EXTERN_C_BEGIN
KS_API extern uint32_t ks_arch_fence_word;
KS_EXTERN_C_END

#define ks_fence_full() ((void)__atomic_fetch_add(&ks_arch_fence_word, 0, __ATOMIC_SEQ_CST))

#define ks_fence_acquire() ((void)0)
#define KS_FENCED_LOAD __ATOMIC_ACQUIRE
#else
#define KS_FENCED_LOAD __ATOMIC_RELAXED
#endif

#endif

/* ksync/common.h - definitions shared by every ksync header.
 *
 * ksync's atomics are the GCC/Clang __atomic builtins, which are the C11
 * memory model's operations applied to plain integer objects.  Using them
 * (instead of _Atomic-qualified fields) is what lets every public header
 * compile as C11 and as C++17 with the same struct layout.
 */
#ifndef KSYNC_COMMON_H
#define KSYNC_COMMON_H

#include <errno.h>
#include <stdint.h>

#ifdef __cplusplus
#define KS_EXTERN_C_BEGIN extern "C" {
#define KS_EXTERN_C_END }
#else
#define KS_EXTERN_C_BEGIN
#define KS_EXTERN_C_END
#endif

/* Exported symbols; the library is built with -fvisibility=hidden. */
#define KS_API __attribute__((visibility("default")))

#define KS_LIKELY(x) __builtin_expect(!!(x), 1)
#define KS_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Object flags, passed to every *_init(). */
#define KS_PRIVATE 0u /* used by threads of one process only (default) */
#define KS_SHARED 1u  /* may live in shared memory used by several processes */
#define KS_FLAGS_VALID KS_SHARED

#endif

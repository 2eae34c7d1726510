/* ksync/time.h - deadlines.
 *
 * Every timed call in ksync takes an absolute deadline: nanoseconds on
 * CLOCK_MONOTONIC, as an int64_t.  A monotonic deadline is immune to
 * wall-clock steps, and retries after spurious wake-ups or EINTR keep it.
 *
 *   KS_FOREVER               never time out
 *   ks_now()                 the current CLOCK_MONOTONIC time in ns
 *   ks_deadline_after(ns)    now + ns (saturating at KS_FOREVER)
 *
 * A negative deadline is invalid and every timed call rejects it with EINVAL
 * (leaving the object unchanged); ks_deadline_after() of a negative relative
 * timeout returns -1 for that reason, as Python rejects a negative timeout.
 * A deadline in the past is valid: the call tries once and then reports
 * ETIMEDOUT without sleeping.
 */
#ifndef KSYNC_TIME_H
#define KSYNC_TIME_H

#include <ksync/common.h>

#define KS_FOREVER INT64_MAX
#define KS_NSEC_PER_SEC 1000000000LL

struct timespec;

KS_EXTERN_C_BEGIN

KS_API int64_t ks_now(void);
KS_API int64_t ks_deadline_after(int64_t ns);

/* Convert an absolute struct timespec on `clock` (CLOCK_MONOTONIC or
 * CLOCK_REALTIME) to a ksync deadline.  Returns EINVAL for tv_nsec outside
 * [0, 1e9), a negative tv_sec or another clock; 0 otherwise.  A REALTIME
 * time is converted once, at the call (a later wall-clock step is not
 * followed: see docs/futex.md). */
KS_API int ks_deadline_from_timespec(int clock, const struct timespec *ts, int64_t *deadline);

KS_EXTERN_C_END

#endif

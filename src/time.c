/* src/time.c - ksync's deadlines: absolute CLOCK_MONOTONIC nanoseconds. */
#include "internal.h"

#include <time.h>

int64_t ks_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * KS_NSEC_PER_SEC + ts.tv_nsec;
}

int64_t ks_deadline_after(int64_t ns)
{
    if (ns < 0)
        return -1; /* invalid: every timed call answers EINVAL */
    int64_t now = ks_now();
    if (ns >= KS_FOREVER - now)
        return KS_FOREVER;
    return now + ns;
}

int ks_deadline_from_timespec(int clock, const struct timespec *ts, int64_t *deadline)
{
    if (!ts || !deadline || ts->tv_nsec < 0 || ts->tv_nsec >= KS_NSEC_PER_SEC || ts->tv_sec < 0)
        return EINVAL;
    if (clock != CLOCK_MONOTONIC && clock != CLOCK_REALTIME)
        return EINVAL;
    int64_t sec = (int64_t)ts->tv_sec;
    if (sec > (KS_FOREVER - ts->tv_nsec) / KS_NSEC_PER_SEC - 1) {
        *deadline = KS_FOREVER;
        return 0;
    }
    int64_t t = sec * KS_NSEC_PER_SEC + ts->tv_nsec;
    if (clock == CLOCK_REALTIME) {
        struct timespec rt;
        clock_gettime(CLOCK_REALTIME, &rt);
        int64_t now_rt = (int64_t)rt.tv_sec * KS_NSEC_PER_SEC + rt.tv_nsec;
        int64_t now_mono = ks_now();
        /* The two clocks are unrelated: CLOCK_MONOTONIC may be ahead of
         * CLOCK_REALTIME (a wrong wall clock, a time namespace), so the
         * shift can overflow for a far-future t: saturate to KS_FOREVER.
         * Each clock reading is below 2^62 ns (146 years), so the
         * difference itself cannot overflow. */
        int64_t shift = now_mono - now_rt;
        if (__builtin_add_overflow(t, shift, &t))
            t = shift > 0 ? KS_FOREVER : 0;
        if (t < 0)
            t = 0; /* long past: immediate timeout, still a valid deadline */
    }
    *deadline = t;
    return 0;
}

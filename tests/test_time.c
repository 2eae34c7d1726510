/* tests/test_time.c - ks_now, ks_deadline_after, ks_deadline_from_timespec. */
#include "helpers.h"

#include <limits.h>

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * KS_NSEC_PER_SEC + ts.tv_nsec;
}

static int64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * KS_NSEC_PER_SEC + ts.tv_nsec;
}

Test(time, now_is_monotonic_and_on_clock_monotonic)
{
    int64_t prev = ks_now();
    cr_assert_gt(prev, 0);
    for (int i = 0; i < 200000; i++) {
        int64_t t = ks_now();
        cr_assert_geq(t, prev, "ks_now went backwards: %lld after %lld", (long long)t, (long long)prev);
        prev = t;
    }
    /* It is CLOCK_MONOTONIC: bracketed by direct reads of that clock. */
    int64_t a = mono_ns(), t = ks_now(), b = mono_ns();
    cr_assert(a <= t && t <= b, "ks_now %lld outside [%lld, %lld]", (long long)t, (long long)a,
              (long long)b);
    /* And it advances with time. */
    int64_t t0 = ks_now();
    kt_sleep_ns(10 * KT_MS);
    cr_assert_geq(ks_now() - t0, 10 * KT_MS);
}

Test(time, deadline_after_adds_to_now)
{
    int64_t before = ks_now();
    int64_t d = ks_deadline_after(KS_NSEC_PER_SEC);
    int64_t after = ks_now();
    cr_assert(d >= before + KS_NSEC_PER_SEC && d <= after + KS_NSEC_PER_SEC,
              "deadline %lld not now+1s in [%lld, %lld]", (long long)d, (long long)before,
              (long long)after);
    before = ks_now();
    d = ks_deadline_after(0);
    after = ks_now();
    cr_assert(d >= before && d <= after);
}

Test(time, deadline_after_saturates_at_forever)
{
    cr_assert_eq(ks_deadline_after(KS_FOREVER), KS_FOREVER);
    cr_assert_eq(ks_deadline_after(KS_FOREVER - 1), KS_FOREVER);
    cr_assert_eq(ks_deadline_after(KS_FOREVER - ks_now() / 2), KS_FOREVER);
    /* Large but not overflowing: exact-ish, and below KS_FOREVER. */
    int64_t ten_years = 10LL * 365 * 24 * 3600 * KS_NSEC_PER_SEC;
    int64_t d = ks_deadline_after(ten_years);
    cr_assert_lt(d, KS_FOREVER);
    cr_assert_geq(d, ten_years);
}

Test(time, deadline_after_negative_is_invalid)
{
    cr_assert_eq(ks_deadline_after(-1), -1);
    cr_assert_eq(ks_deadline_after(-KS_NSEC_PER_SEC), -1);
    cr_assert_eq(ks_deadline_after(INT64_MIN), -1);
}

static void expect_einval(int clock, const struct timespec *ts, const char *what)
{
    int64_t d = 0x5a5a5a5a;
    cr_assert_eq(ks_deadline_from_timespec(clock, ts, &d), EINVAL, "%s: not EINVAL", what);
    cr_assert_eq(d, 0x5a5a5a5a, "%s: output written on error", what);
}

Test(time, from_timespec_rejects_bad_input)
{
    int clocks[] = {CLOCK_MONOTONIC, CLOCK_REALTIME};
    for (int i = 0; i < 2; i++) {
        int c = clocks[i];
        struct timespec ts = {1, -1};
        expect_einval(c, &ts, "tv_nsec < 0");
        ts = (struct timespec){1, 1000000000L};
        expect_einval(c, &ts, "tv_nsec == 1e9");
        ts = (struct timespec){1, LONG_MAX};
        expect_einval(c, &ts, "tv_nsec == LONG_MAX");
        ts = (struct timespec){-1, 0};
        expect_einval(c, &ts, "tv_sec < 0");
        ts = (struct timespec){-1, 999999999L};
        expect_einval(c, &ts, "tv_sec < 0 with nsec");
        expect_einval(c, NULL, "NULL timespec");
        ts = (struct timespec){1, 0};
        cr_assert_eq(ks_deadline_from_timespec(c, &ts, NULL), EINVAL, "NULL output");
    }
    struct timespec ok = {1, 0};
    expect_einval(CLOCK_PROCESS_CPUTIME_ID, &ok, "CLOCK_PROCESS_CPUTIME_ID");
    expect_einval(CLOCK_THREAD_CPUTIME_ID, &ok, "CLOCK_THREAD_CPUTIME_ID");
    expect_einval(CLOCK_BOOTTIME, &ok, "CLOCK_BOOTTIME");
    expect_einval(CLOCK_MONOTONIC_RAW, &ok, "CLOCK_MONOTONIC_RAW");
    expect_einval(-1, &ok, "clock -1");
    expect_einval(12345, &ok, "clock 12345");
}

Test(time, from_timespec_monotonic_is_exact)
{
    int64_t d = -5;
    struct timespec ts = {5, 7};
    cr_assert_eq(ks_deadline_from_timespec(CLOCK_MONOTONIC, &ts, &d), 0);
    cr_assert_eq(d, 5 * KS_NSEC_PER_SEC + 7);

    ts = (struct timespec){0, 0};
    cr_assert_eq(ks_deadline_from_timespec(CLOCK_MONOTONIC, &ts, &d), 0);
    cr_assert_eq(d, 0);

    ts = (struct timespec){0, 999999999L};
    cr_assert_eq(ks_deadline_from_timespec(CLOCK_MONOTONIC, &ts, &d), 0);
    cr_assert_eq(d, 999999999LL);

    /* A real monotonic time round-trips. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    cr_assert_eq(ks_deadline_from_timespec(CLOCK_MONOTONIC, &ts, &d), 0);
    cr_assert_eq(d, (int64_t)ts.tv_sec * KS_NSEC_PER_SEC + ts.tv_nsec);
}

Test(time, from_timespec_realtime_converts_to_monotonic)
{
    const int64_t tol = 50 * KT_MS * KT_SLOW;
    for (int k = 0; k < 3; k++) {
        int64_t rel = (int64_t)k * 700 * KT_MS; /* 0, 0.7 s, 1.4 s ahead */
        int64_t rt = real_ns() + rel;
        struct timespec ts = {(time_t)(rt / KS_NSEC_PER_SEC), (long)(rt % KS_NSEC_PER_SEC)};
        int64_t d = -5;
        int64_t expect = ks_now() + rel;
        cr_assert_eq(ks_deadline_from_timespec(CLOCK_REALTIME, &ts, &d), 0);
        cr_assert(d > expect - tol && d < expect + tol,
                  "REALTIME now+%lld ns converted to %lld, expected about %lld", (long long)rel,
                  (long long)d, (long long)expect);
    }
    /* A wall-clock time long past is a valid deadline in the past. */
    struct timespec past = {0, 0};
    int64_t d = -5;
    cr_assert_eq(ks_deadline_from_timespec(CLOCK_REALTIME, &past, &d), 0);
    cr_assert_geq(d, 0);
    cr_assert_leq(d, ks_now());
    /* One second in the past: about now - 1 s on the monotonic clock (the
     * machine has been up longer than that). */
    int64_t rt = real_ns() - KS_NSEC_PER_SEC;
    struct timespec ts = {(time_t)(rt / KS_NSEC_PER_SEC), (long)(rt % KS_NSEC_PER_SEC)};
    int64_t expect = ks_now() - KS_NSEC_PER_SEC;
    cr_assert_eq(ks_deadline_from_timespec(CLOCK_REALTIME, &ts, &d), 0);
    if (expect > tol)
        cr_assert(d > expect - tol && d < expect + tol);
}

Test(time, from_timespec_saturates_far_future)
{
    struct timespec ts;
    int64_t d = 0;
    ts.tv_sec = (time_t)(INT64_MAX / KS_NSEC_PER_SEC) + 1;
    ts.tv_nsec = 0;
    cr_assert_eq(ks_deadline_from_timespec(CLOCK_MONOTONIC, &ts, &d), 0);
    cr_assert_eq(d, KS_FOREVER);
    d = 0;
    cr_assert_eq(ks_deadline_from_timespec(CLOCK_REALTIME, &ts, &d), 0);
    cr_assert_eq(d, KS_FOREVER);
    ts.tv_sec = (time_t)INT64_MAX;
    ts.tv_nsec = 999999999L;
    d = 0;
    cr_assert_eq(ks_deadline_from_timespec(CLOCK_MONOTONIC, &ts, &d), 0);
    cr_assert_eq(d, KS_FOREVER);
    /* A far but representable monotonic time is not saturated and does not
     * overflow: 100 years. */
    ts.tv_sec = (time_t)(100LL * 365 * 24 * 3600);
    ts.tv_nsec = 1;
    cr_assert_eq(ks_deadline_from_timespec(CLOCK_MONOTONIC, &ts, &d), 0);
    cr_assert_eq(d, (int64_t)ts.tv_sec * KS_NSEC_PER_SEC + 1);
}

#ifdef __SANITIZE_ADDRESS__
/* Criterion 2.4.1's parallel runner (the parent process, not a test) leaks
 * a few small blocks (Snaipe/Criterion PR 515 is still open), which makes
 * LeakSanitizer fail `make asan` after every test passed.  Suppress exactly
 * the leaks allocated under criterion_run_all_tests: the tests' own
 * allocations are made in worker processes, whose stacks do not contain it.
 * libcriterion has no frame pointers, so the suppression can only see that
 * frame with the slow (DWARF) unwinder on malloc; ASAN_OPTIONS overrides. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:criterion_run_all_tests\n"; }
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "fast_unwind_on_malloc=0"; }
#endif

/* Issue 10: the REALTIME conversion shifts by (MONOTONIC - REALTIME), which
 * is positive when the monotonic clock is ahead of the wall clock (a wrong
 * wall clock, a VM, a time namespace); for a far-future time the sum used
 * to overflow (undefined; in practice it wrapped negative and the far
 * future became "already past").  A time namespace whose CLOCK_MONOTONIC is
 * 3e9 s ahead makes that real: the child converts year 2255. */
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

static int child_converts_far_future(void *p)
{
    (void)p;
    struct timespec mono, rt;
    clock_gettime(CLOCK_MONOTONIC, &mono);
    clock_gettime(CLOCK_REALTIME, &rt);
    if (mono.tv_sec <= rt.tv_sec)
        return 1; /* the namespace did not move the clock */
    struct timespec far = {.tv_sec = 9000000000, .tv_nsec = 0};
    int64_t d = 0;
    if (ks_deadline_from_timespec(CLOCK_REALTIME, &far, &d) != 0)
        return 2;
    if (d != KS_FOREVER)
        return 3;
    /* A near time still converts exactly (within the clocks' jitter). */
    struct timespec soon = rt;
    soon.tv_sec += 10;
    if (ks_deadline_from_timespec(CLOCK_REALTIME, &soon, &d) != 0)
        return 4;
    int64_t want = ks_now() + 10 * KS_NSEC_PER_SEC;
    if (d < want - 100 * KT_MS || d > want + 100 * KT_MS)
        return 5;
    return 0;
}

Test(time, from_timespec_realtime_with_monotonic_far_ahead_saturates, .timeout = 30)
{
    if (unshare(CLONE_NEWTIME) != 0)
        cr_skip_test("no time namespaces here (unshare: %s)", strerror(errno));
    FILE *f = fopen("/proc/self/timens_offsets", "w");
    cr_assert_not_null(f, "timens_offsets: %s", strerror(errno));
    cr_assert_gt(fprintf(f, "monotonic 3000000000 0\n"), 0);
    cr_assert_eq(fclose(f), 0, "setting the monotonic offset: %s", strerror(errno));
    kt_wait_child(kt_fork(child_converts_far_future, NULL));
}

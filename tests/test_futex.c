/* tests/test_futex.c - the futex core (src/futex.c, hidden functions from
 * src/internal.h, reachable because the tests link the static library). */
#include "helpers.h"

#include "internal.h"

#include <limits.h>

static const unsigned both_flags[2] = {KS_PRIVATE, KS_SHARED};

Test(futex, stats_are_per_thread_and_start_at_zero)
{
    struct ks_futex_stats s = kt_futex_stats();
    uint32_t w = 0;
    ks_futex_wake(&w, 1, 0);
    struct ks_futex_stats t = kt_futex_stats();
    cr_assert_eq(t.wakes, s.wakes + 1);
    cr_assert_eq(t.woken, s.woken);
    cr_assert_eq(t.waits, s.waits);
}

Test(futex, stats_of_null_is_einval)
{
    cr_assert_eq(ks_futex_stats(NULL), EINVAL);
    struct ks_futex_stats st;
    cr_assert_eq(ks_futex_stats(&st), 0);
}

/* Issue 10: every requeue failure is reported (the condition variable then
 * wakes all); EFAULT and EINVAL used to read as "0 woken". */
Test(futex, requeue_reports_every_failure)
{
    uint32_t w = 7, to = 0;
    cr_assert_eq(ks_futex_requeue(&w, 8, 1, KS_WAKE_ALL, &to, 0), -EAGAIN);
    /* A process-shared target that is not mapped (the kernel must look the
     * page up to key a shared futex). */
    cr_assert_eq(ks_futex_requeue(&w, 7, 1, KS_WAKE_ALL, (const uint32_t *)(uintptr_t)8, KS_SHARED), -EFAULT);
    /* Misaligned word. */
    cr_assert_eq(ks_futex_requeue((const uint32_t *)((char *)&w + 1), 7, 1, KS_WAKE_ALL, &to, 0), -EINVAL);
    cr_assert_eq(ks_futex_requeue(&w, 7, 1, KS_WAKE_ALL, &to, 0), 0);
}

Test(futex, past_deadline_times_out_without_syscall)
{
    for (int f = 0; f < 2; f++) {
        uint32_t w = 0;
        struct ks_futex_stats a = kt_futex_stats();
        cr_assert_eq(ks_futex_wait(&w, 0, 0, both_flags[f]), ETIMEDOUT);
        cr_assert_eq(ks_futex_wait(&w, 0, 1, both_flags[f]), ETIMEDOUT);
        cr_assert_eq(ks_futex_wait(&w, 0, ks_now() - 1, both_flags[f]), ETIMEDOUT);
        cr_assert_eq(ks_futex_wait(&w, 0, ks_now(), both_flags[f]), ETIMEDOUT);
        /* Even when the value differs: the deadline is checked first. */
        cr_assert_eq(ks_futex_wait(&w, 7, ks_now() - KS_NSEC_PER_SEC, both_flags[f]), ETIMEDOUT);
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.waits, a.waits, "a past deadline made %llu futex calls",
                     (unsigned long long)(b.waits - a.waits));
    }
}

Test(futex, mismatching_value_returns_eagain)
{
    for (int f = 0; f < 2; f++) {
        uint32_t w = 1;
        struct ks_futex_stats a = kt_futex_stats();
        cr_assert_eq(ks_futex_wait(&w, 0, KS_FOREVER, both_flags[f]), EAGAIN);
        cr_assert_eq(ks_futex_wait(&w, 2, ks_deadline_after(10 * KS_NSEC_PER_SEC), both_flags[f]),
                     EAGAIN);
        w = 0xffffffffu;
        cr_assert_eq(ks_futex_wait(&w, 0x7fffffffu, KS_FOREVER, both_flags[f]), EAGAIN);
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.waits, a.waits + 3);
    }
}

Test(futex, wake_without_waiters_returns_zero)
{
    for (int f = 0; f < 2; f++) {
        uint32_t w = 0;
        struct ks_futex_stats a = kt_futex_stats();
        cr_assert_eq(ks_futex_wake(&w, 1, both_flags[f]), 0);
        cr_assert_eq(ks_futex_wake(&w, INT_MAX, both_flags[f]), 0);
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.wakes, a.wakes + 2);
        cr_assert_eq(b.woken, a.woken);
    }
}

/* ---- one or more sleepers ---------------------------------------------- */

struct sleeper {
    uint32_t *word;
    unsigned flags;
    int64_t deadline;
    pid_t tid;   /* published before sleeping */
    int ret;     /* ks_futex_wait's return */
    int64_t at;  /* when it returned */
};

static void *sleeper_main(void *p)
{
    struct sleeper *s = p;
    __atomic_store_n(&s->tid, kt_gettid(), __ATOMIC_RELEASE);
    s->ret = ks_futex_wait(s->word, 0, s->deadline, s->flags);
    s->at = ks_now();
    return NULL;
}

static pid_t wait_tid(struct sleeper *s)
{
    pid_t t;
    while (!(t = __atomic_load_n(&s->tid, __ATOMIC_ACQUIRE)))
        sched_yield();
    return t;
}

Test(futex, wake_wakes_a_sleeper, .timeout = 30)
{
    for (int f = 0; f < 2; f++) {
        uint32_t w = 0;
        struct sleeper s = {&w, both_flags[f], ks_deadline_after(20 * KS_NSEC_PER_SEC), 0, -1, 0};
        pthread_t t;
        kt_spawn(&t, sleeper_main, &s);
        cr_assert(kt_wait_in_futex(wait_tid(&s), 10 * KS_NSEC_PER_SEC), "sleeper never slept");
        int64_t t0 = ks_now();
        struct ks_futex_stats a = kt_futex_stats();
        int n = ks_futex_wake(&w, 1, both_flags[f]);
        struct ks_futex_stats b = kt_futex_stats();
        kt_join(t);
        cr_assert_eq(n, 1, "wake woke %d threads, not the sleeper (flags %u)", n, both_flags[f]);
        cr_assert_eq(b.woken, a.woken + 1);
        cr_assert_eq(s.ret, 0, "woken sleeper returned %d", s.ret);
        cr_assert_lt(s.at - t0, 5 * KS_NSEC_PER_SEC, "the sleeper stayed asleep after the wake");
    }
}

Test(futex, wake_n_wakes_n_sleepers, .timeout = 30)
{
    enum { N = 4 };
    for (int f = 0; f < 2; f++) {
        uint32_t w = 0;
        struct sleeper s[N];
        pthread_t t[N];
        for (int i = 0; i < N; i++) {
            s[i] = (struct sleeper){&w, both_flags[f], ks_deadline_after(20 * KS_NSEC_PER_SEC), 0, -1, 0};
            kt_spawn(&t[i], sleeper_main, &s[i]);
        }
        for (int i = 0; i < N; i++)
            cr_assert(kt_wait_in_futex(wait_tid(&s[i]), 10 * KS_NSEC_PER_SEC));
        int a = ks_futex_wake(&w, 1, both_flags[f]);
        int b = ks_futex_wake(&w, INT_MAX, both_flags[f]);
        for (int i = 0; i < N; i++)
            kt_join(t[i]);
        cr_assert_eq(a, 1);
        cr_assert_eq(b, N - 1);
        for (int i = 0; i < N; i++)
            cr_assert_eq(s[i].ret, 0);
    }
}

Test(futex, requeue_wakes_and_moves, .timeout = 30)
{
    uint32_t from = 0, to = 0;
    struct sleeper s[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        s[i] = (struct sleeper){&from, 0, ks_deadline_after(20 * KS_NSEC_PER_SEC), 0, -1, 0};
        kt_spawn(&t[i], sleeper_main, &s[i]);
    }
    for (int i = 0; i < 2; i++)
        cr_assert(kt_wait_in_futex(wait_tid(&s[i]), 10 * KS_NSEC_PER_SEC));
    /* Wrong expected value: nothing happens. */
    cr_assert_eq(ks_futex_requeue(&from, 1, 1, INT_MAX, &to, 0), -EAGAIN);
    /* Wake one, move the other to `to`. */
    cr_assert_eq(ks_futex_requeue(&from, 0, 1, INT_MAX, &to, 0), 2);
    /* The moved one is now only reachable through `to`. */
    kt_sleep_ns(20 * KT_MS);
    cr_assert_eq(ks_futex_wake(&from, INT_MAX, 0), 0);
    cr_assert_eq(ks_futex_wake(&to, INT_MAX, 0), 1);
    for (int i = 0; i < 2; i++) {
        kt_join(t[i]);
        cr_assert_eq(s[i].ret, 0);
    }
}

/* ---- timeouts ------------------------------------------------------------- */

Test(futex, timed_wait_is_not_early_nor_late, .timeout = 30)
{
    const int64_t rel[] = {1 * KT_MS, 20 * KT_MS, 100 * KT_MS};
    for (int f = 0; f < 2; f++)
        for (unsigned k = 0; k < sizeof rel / sizeof rel[0]; k++) {
            uint32_t w = 0;
            int64_t deadline = ks_deadline_after(rel[k]);
            int r, spurious = 0;
            while ((r = ks_futex_wait(&w, 0, deadline, both_flags[f])) == 0)
                spurious++;
            int64_t now = ks_now();
            cr_assert_eq(r, ETIMEDOUT, "timed wait returned %d", r);
            cr_assert_geq(now, deadline, "timed out %lld ns early", (long long)(deadline - now));
            cr_assert_lt(now, deadline + KT_LATE_NS, "timed out %lld ms late",
                         (long long)((now - deadline) / KT_MS));
            cr_assert_lt(spurious, 100);
        }
}

/* A KS_SHARED sleep ends within KS_PEER_RECHECK_NS as a spurious 0, so that
 * a wake lost with a killed peer process strands nobody (docs/shared.md);
 * the caller's deadline still ends the wait exactly, and a private sleep
 * is not cut.  Neither word is ever woken here. */
Test(futex, shared_sleeps_end_within_the_recheck_bound_private_ones_do_not, .timeout = 30)
{
    uint32_t w = 0;
    int64_t t0 = ks_now();
    cr_assert_eq(ks_futex_wait(&w, 0, KS_FOREVER, KS_SHARED), 0, "an untimed shared sleep ends as a spurious 0");
    int64_t took = ks_now() - t0;
    cr_assert_geq(took, KS_PEER_RECHECK_NS, "ended after %lld ms: woken?", (long long)(took / KT_MS));
    cr_assert_lt(took, KS_PEER_RECHECK_NS + KT_LATE_NS, "ended after %lld ms", (long long)(took / KT_MS));
    /* the same through the call that reports EINTR: the slice is not EINTR */
    cr_assert_eq(ks_futex_wait_intr(&w, 0, ks_deadline_after(KS_PEER_RECHECK_NS + 200 * KT_MS), KS_SHARED), 0);
    /* a deadline inside the slice is the caller's: ETIMEDOUT, on time */
    int64_t dl = ks_deadline_after(50 * KT_MS);
    int r;
    while ((r = ks_futex_wait(&w, 0, dl, KS_SHARED)) == 0)
        ;
    cr_assert_eq(r, ETIMEDOUT);
    cr_assert_geq(ks_now(), dl);
    /* a private sleep runs to its deadline past the bound */
    t0 = ks_now();
    dl = t0 + KS_PEER_RECHECK_NS + 300 * KT_MS;
    int zeros = 0;
    while ((r = ks_futex_wait(&w, 0, dl, KS_PRIVATE)) == 0)
        zeros++;
    cr_assert_eq(r, ETIMEDOUT);
    cr_assert_eq(zeros, 0, "a private sleep was cut");
    /* ks_futex_wait_exact is never cut: ks_queue counts its 0s as wakes */
    t0 = ks_now();
    dl = t0 + KS_PEER_RECHECK_NS + 300 * KT_MS;
    while ((r = ks_futex_wait_exact(&w, 0, dl, KS_SHARED, KS_MATCH_ANY)) == EINTR)
        ;
    cr_assert_eq(r, ETIMEDOUT, "exact wait: %d", r);
    cr_assert_geq(ks_now(), dl);
}

/* A signal handler without SA_RESTART interrupts FUTEX_WAIT with EINTR; the
 * futex core must report that as a spurious 0 and never as EINTR, and must
 * never report ETIMEDOUT before the deadline. */
struct sigwaiter {
    uint32_t word;
    unsigned flags;
    int64_t deadline;
    int done;
    int eintr, early, other, zeros;
    int64_t at;
};

static void *sigwaiter_main(void *p)
{
    struct sigwaiter *s = p;
    for (;;) {
        int r = ks_futex_wait(&s->word, 0, s->deadline, s->flags);
        if (r == EINTR) {
            s->eintr++;
            continue;
        }
        if (r == 0) {
            s->zeros++;
            continue;
        }
        if (r == ETIMEDOUT) {
            s->at = ks_now();
            if (s->at < s->deadline)
                s->early++;
            break;
        }
        s->other++;
        break;
    }
    __atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

Test(futex, signals_never_show_as_eintr_nor_shorten_the_deadline, .timeout = 30)
{
    kt_install_eintr_handler(SIGUSR1);
    for (int f = 0; f < 2; f++) {
        struct sigwaiter s;
        memset(&s, 0, sizeof s);
        s.flags = both_flags[f];
        s.deadline = ks_deadline_after(300 * KT_MS);
        int seen0 = kt_signals_seen;
        pthread_t t;
        kt_spawn(&t, sigwaiter_main, &s);
        long sent = kt_pummel(t, SIGUSR1, &s.done, 2 * KT_MS);
        kt_join(t);
        cr_assert_gt(sent, 0);
        cr_assert_gt(kt_signals_seen - seen0, 0, "no signal reached the waiter");
        cr_assert_eq(s.eintr, 0, "EINTR returned %d times", s.eintr);
        cr_assert_eq(s.other, 0);
        cr_assert_eq(s.early, 0, "ETIMEDOUT before the deadline");
        cr_assert_geq(s.at, s.deadline);
        cr_assert_lt(s.at, s.deadline + KT_LATE_NS, "%lld ms late",
                     (long long)((s.at - s.deadline) / KT_MS));
    }
}

/* ---- process-shared ------------------------------------------------------ */

struct shared_word {
    uint32_t word;
    uint32_t pad;
};

static int child_sleeps_until_woken(void *p)
{
    struct shared_word *sw = p;
    int r = ks_futex_wait(&sw->word, 0, ks_deadline_after(20 * KS_NSEC_PER_SEC), KS_SHARED);
    if (r == ETIMEDOUT)
        return 1;
    if (r != 0)
        return 2;
    return 0;
}

Test(futex, shared_wake_reaches_another_process, .timeout = 40)
{
    struct shared_word *sw = kt_shared_alloc(sizeof *sw);
    pid_t pid = kt_fork(child_sleeps_until_woken, sw);
    cr_assert(kt_wait_child_in_futex(pid, 10 * KS_NSEC_PER_SEC), "child never slept");
    int n = 0;
    /* The child is asleep in futex(2); one shared wake must reach it. */
    for (int i = 0; i < 100 && n == 0; i++) {
        n = ks_futex_wake(&sw->word, 1, KS_SHARED);
        if (!n)
            kt_sleep_ns(KT_MS); /* asleep, but perhaps in another futex */
    }
    kt_wait_child(pid);
    cr_assert_eq(n, 1, "shared wake woke %d waiters in the child", n);
    kt_shared_free(sw, sizeof *sw);
}

static int child_waits_for_value(void *p)
{
    struct shared_word *sw = p;
    int64_t deadline = ks_deadline_after(20 * KS_NSEC_PER_SEC);
    while (__atomic_load_n(&sw->word, __ATOMIC_ACQUIRE) == 0)
        if (ks_futex_wait(&sw->word, 0, deadline, KS_SHARED) == ETIMEDOUT)
            return 1;
    return __atomic_load_n(&sw->word, __ATOMIC_RELAXED) == 42 ? 0 : 2;
}

Test(futex, shared_value_change_and_wake_across_fork, .timeout = 40)
{
    struct shared_word *sw = kt_shared_alloc(sizeof *sw);
    pid_t pid = kt_fork(child_waits_for_value, sw);
    kt_sleep_ns(20 * KT_MS);
    __atomic_store_n(&sw->word, 42, __ATOMIC_RELEASE);
    ks_futex_wake(&sw->word, INT_MAX, KS_SHARED);
    kt_wait_child(pid);
    kt_shared_free(sw, sizeof *sw);
}

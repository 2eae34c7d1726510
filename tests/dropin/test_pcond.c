/* tests/dropin/test_pcond.c - pthread_cond_* as glibc 2.36 behaves: layout,
 * zero-filled and static initializers, signal and broadcast wake-ups,
 * a bounded buffer with 32 threads on signal only (no lost wake-up),
 * timedwait/clockwait deadlines on CLOCK_REALTIME (the default) and
 * CLOCK_MONOTONIC (condattr), the mutex held again on every return, broadcast
 * then destroy under the mutex, waits on recursive and errorcheck mutexes,
 * cancellation inside the wait (cleanup runs with the mutex held; a
 * cancelled waiter does not swallow a signal), process-shared use across
 * fork().  References: POSIX pthread_cond_wait, pthread_cond_destroy
 * ("It shall be safe to destroy an initialized condition variable upon which
 * no threads are currently blocked"), glibc nptl/pthread_cond_wait.c's
 * comment on confirming the wake-up before re-acquiring the mutex so that
 * pthread_cond_destroy may run under it. */
#include "helpers.h"

#include <stdalign.h>

#if defined(__x86_64__) || defined(__aarch64__)
_Static_assert(sizeof(pthread_cond_t) == 48, "glibc pthread_cond_t is 48 bytes");
_Static_assert(alignof(pthread_cond_t) == 8, "pthread_cond_t is 8-aligned");
#endif
#if defined(__x86_64__)
_Static_assert(sizeof(pthread_condattr_t) == 4, "glibc x86-64 pthread_condattr_t is 4 bytes");
#elif defined(__aarch64__)
_Static_assert(sizeof(pthread_condattr_t) == 8, "glibc aarch64 pthread_condattr_t is 8 bytes");
#endif

static void init_cond_clock(pthread_cond_t *c, clockid_t clk, int pshared)
{
    pthread_condattr_t a;
    clockid_t got = -1;
    cr_assert_eq(pthread_condattr_init(&a), 0);
    cr_assert_eq(pthread_condattr_getclock(&a, &got), 0);
    cr_assert_eq(got, CLOCK_REALTIME, "the default clock is CLOCK_REALTIME");
    cr_assert_eq(pthread_condattr_setclock(&a, clk), 0);
    cr_assert_eq(pthread_condattr_getclock(&a, &got), 0);
    cr_assert_eq(got, clk);
    if (pshared)
        cr_assert_eq(pthread_condattr_setpshared(&a, PTHREAD_PROCESS_SHARED), 0);
    cr_assert_eq(pthread_cond_init(c, &a), 0);
    cr_assert_eq(pthread_condattr_destroy(&a), 0);
}

/* ---- initializers ------------------------------------------------------------ */

static pthread_cond_t s_cond = PTHREAD_COND_INITIALIZER;
static pthread_cond_t s_zero; /* all zeros, never initialised */

static void expect_usable(pthread_cond_t *c, const char *what)
{
    pthread_mutex_t m = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
    cr_assert_eq(pthread_cond_signal(c), 0, "%s", what);
    cr_assert_eq(pthread_cond_broadcast(c), 0, "%s", what);
    cr_assert_eq(pthread_mutex_lock(&m), 0);
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 10 * DT_MS);
    cr_assert_eq(pthread_cond_timedwait(c, &m, &dl), ETIMEDOUT, "%s", what);
    dt_assert_not_early(CLOCK_REALTIME, dl, what);
    cr_assert_eq(pthread_mutex_lock(&m), EDEADLK, "%s: mutex not held after ETIMEDOUT", what);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(pthread_cond_destroy(c), 0, "%s", what);
}

Test(pcond, static_and_zero_filled_condition_variables_work_without_init, .timeout = 30)
{
    pthread_cond_t init = PTHREAD_COND_INITIALIZER;
    pthread_cond_t zero;
    memset(&zero, 0, sizeof zero);
    cr_assert_eq(memcmp(&init, &zero, sizeof zero), 0, "PTHREAD_COND_INITIALIZER is all zeros");
    expect_usable(&s_cond, "PTHREAD_COND_INITIALIZER");
    expect_usable(&s_zero, "zero-filled static");
    pthread_cond_t *h = calloc(1, sizeof *h);
    cr_assert_not_null(h);
    expect_usable(h, "calloc'd");
    free(h);
    pthread_cond_t c;
    memset(&c, 0xa5, sizeof c);
    cr_assert_eq(pthread_cond_init(&c, NULL), 0);
    expect_usable(&c, "pthread_cond_init");
}

Test(pcond, condattr_rejects_cpu_clocks, .timeout = 30)
{
    pthread_condattr_t a;
    clockid_t got = -1;
    int ps = -1;
    cr_assert_eq(pthread_condattr_init(&a), 0);
    cr_assert_eq(pthread_condattr_setclock(&a, CLOCK_PROCESS_CPUTIME_ID), EINVAL);
    cr_assert_eq(pthread_condattr_setclock(&a, CLOCK_THREAD_CPUTIME_ID), EINVAL);
    cr_assert_eq(pthread_condattr_getclock(&a, &got), 0);
    cr_assert_eq(got, CLOCK_REALTIME);
    cr_assert_eq(pthread_condattr_getpshared(&a, &ps), 0);
    cr_assert_eq(ps, PTHREAD_PROCESS_PRIVATE);
    cr_assert_eq(pthread_condattr_destroy(&a), 0);
}

/* ---- wake-ups ------------------------------------------------------------------ */

#define WAITERS 16

struct wake {
    pthread_mutex_t m;
    pthread_cond_t c;
    int waiting;  /* under m */
    int tokens;   /* under m */
    int go;       /* under m */
    int consumed; /* under m */
    int timeouts; /* atomic */
    int errors;   /* atomic */
};

static void *token_waiter(void *p)
{
    struct wake *s = p;
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 15 * DT_S);
    pthread_mutex_lock(&s->m);
    s->waiting++;
    while (s->tokens == 0) {
        int e = pthread_cond_timedwait(&s->c, &s->m, &dl);
        if (e == ETIMEDOUT) {
            __atomic_add_fetch(&s->timeouts, 1, __ATOMIC_RELAXED);
            pthread_mutex_unlock(&s->m);
            return NULL;
        }
        if (e != 0)
            __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
    }
    s->tokens--;
    s->consumed++;
    pthread_mutex_unlock(&s->m);
    return NULL;
}

static int all_waiting(void *p)
{
    struct wake *s = p;
    pthread_mutex_lock(&s->m);
    int n = s->waiting;
    pthread_mutex_unlock(&s->m);
    return n == WAITERS;
}

Test(pcond, each_signal_wakes_a_waiter, .timeout = 60)
{
    struct wake s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0};
    pthread_t t[WAITERS];
    for (int i = 0; i < WAITERS; i++)
        dt_spawn(&t[i], token_waiter, &s);
    cr_assert(dt_wait_for(all_waiting, &s, 10 * DT_S));
    /* One token and one signal at a time: each signal must wake somebody
     * who takes the token, with the mutex released in between. */
    for (int i = 0; i < WAITERS; i++) {
        pthread_mutex_lock(&s.m);
        s.tokens++;
        cr_assert_eq(pthread_cond_signal(&s.c), 0);
        pthread_mutex_unlock(&s.m);
        if (i & 1) {
            int64_t end = dt_now(CLOCK_MONOTONIC) + 10 * DT_S;
            for (;;) {
                pthread_mutex_lock(&s.m);
                int done = s.consumed == i + 1;
                pthread_mutex_unlock(&s.m);
                if (done)
                    break;
                cr_assert_lt(dt_now(CLOCK_MONOTONIC), end, "signal %d woke nobody", i);
                dt_sleep_ns(100000);
            }
        }
    }
    for (int i = 0; i < WAITERS; i++)
        dt_join(t[i]);
    cr_assert_eq(s.timeouts, 0, "%d waiters never woke", s.timeouts);
    cr_assert_eq(s.errors, 0);
    cr_assert_eq(s.consumed, WAITERS);
    cr_assert_eq(pthread_cond_destroy(&s.c), 0);
}

/* Waiters of several kinds: untimed, timed on the cond's clock, clockwait
 * on both clocks. */
static int wait_kind(pthread_cond_t *c, pthread_mutex_t *m, int kind, const struct timespec *rt,
                     const struct timespec *mono)
{
    switch (kind % 4) {
    case 0: return pthread_cond_wait(c, m);
    case 1: return pthread_cond_timedwait(c, m, rt);
    case 2: return pthread_cond_clockwait(c, m, CLOCK_MONOTONIC, mono);
    default: return pthread_cond_clockwait(c, m, CLOCK_REALTIME, rt);
    }
}

struct bcast_arg {
    struct wake *s;
    int kind;
};

static void *go_waiter(void *p)
{
    struct bcast_arg *a = p;
    struct wake *s = a->s;
    struct timespec rt = dt_deadline(CLOCK_REALTIME, 15 * DT_S);
    struct timespec mono = dt_deadline(CLOCK_MONOTONIC, 15 * DT_S);
    pthread_mutex_lock(&s->m);
    s->waiting++;
    while (!s->go) {
        int e = wait_kind(&s->c, &s->m, a->kind, &rt, &mono);
        if (e == ETIMEDOUT) {
            __atomic_add_fetch(&s->timeouts, 1, __ATOMIC_RELAXED);
            break;
        }
        if (e != 0)
            __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
    }
    /* the mutex is held on return: nobody else is in here */
    s->consumed++;
    pthread_mutex_unlock(&s->m);
    return NULL;
}

Test(pcond, broadcast_wakes_every_waiter, .timeout = 60)
{
    for (int round = 0; round < 10; round++) {
        struct wake s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0};
        struct bcast_arg a[WAITERS];
        pthread_t t[WAITERS];
        for (int i = 0; i < WAITERS; i++) {
            a[i].s = &s;
            a[i].kind = i + round;
            dt_spawn(&t[i], go_waiter, &a[i]);
        }
        cr_assert(dt_wait_for(all_waiting, &s, 10 * DT_S));
        pthread_mutex_lock(&s.m);
        s.go = 1;
        cr_assert_eq(pthread_cond_broadcast(&s.c), 0);
        pthread_mutex_unlock(&s.m);
        for (int i = 0; i < WAITERS; i++)
            dt_join(t[i]);
        cr_assert_eq(s.timeouts, 0, "round %d: %d waiters missed the broadcast", round, s.timeouts);
        cr_assert_eq(s.errors, 0);
        cr_assert_eq(s.consumed, WAITERS);
        cr_assert_eq(pthread_cond_destroy(&s.c), 0);
    }
}

/* ---- timeouts --------------------------------------------------------------------- */

/* An errorcheck mutex tells whether the caller holds it: relock is EDEADLK. */
static void expect_held_by_me(pthread_mutex_t *m, const char *what)
{
    cr_assert_eq(pthread_mutex_lock(m), EDEADLK, "%s: mutex not held on return", what);
    cr_assert_eq(dt_trylock_elsewhere(m), EBUSY, "%s", what);
}

Test(pcond, timedwait_times_out_not_early_on_each_clock_with_the_mutex_held, .timeout = 30)
{
    pthread_mutex_t m = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
    pthread_cond_t rt = PTHREAD_COND_INITIALIZER, mono;
    init_cond_clock(&mono, CLOCK_MONOTONIC, 0);
    cr_assert_eq(pthread_mutex_lock(&m), 0);

    struct timespec dl = dt_deadline(CLOCK_REALTIME, 50 * DT_MS);
    cr_assert_eq(pthread_cond_timedwait(&rt, &m, &dl), ETIMEDOUT);
    dt_assert_not_early(CLOCK_REALTIME, dl, "timedwait, CLOCK_REALTIME cond");
    expect_held_by_me(&m, "timedwait realtime");

    dl = dt_deadline(CLOCK_MONOTONIC, 50 * DT_MS);
    cr_assert_eq(pthread_cond_timedwait(&mono, &m, &dl), ETIMEDOUT);
    dt_assert_not_early(CLOCK_MONOTONIC, dl, "timedwait, CLOCK_MONOTONIC cond");
    expect_held_by_me(&m, "timedwait monotonic");

    /* clockwait takes its clock from the call, whatever the cond's clock. */
    pthread_cond_t *cs[] = {&rt, &mono};
    clockid_t clocks[] = {CLOCK_MONOTONIC, CLOCK_REALTIME};
    for (unsigned i = 0; i < 2; i++)
        for (unsigned k = 0; k < 2; k++) {
            dl = dt_deadline(clocks[k], 40 * DT_MS);
            cr_assert_eq(pthread_cond_clockwait(cs[i], &m, clocks[k], &dl), ETIMEDOUT);
            dt_assert_not_early(clocks[k], dl, "clockwait");
            expect_held_by_me(&m, "clockwait");
        }

    /* Deadlines in the past: ETIMEDOUT at once, mutex held. */
    dl.tv_sec = 0;
    dl.tv_nsec = 0;
    cr_assert_eq(pthread_cond_timedwait(&rt, &m, &dl), ETIMEDOUT);
    cr_assert_eq(pthread_cond_timedwait(&mono, &m, &dl), ETIMEDOUT);
    cr_assert_eq(pthread_cond_clockwait(&rt, &m, CLOCK_MONOTONIC, &dl), ETIMEDOUT);
    expect_held_by_me(&m, "past deadline");

    /* Bad arguments: EINVAL, and the mutex is still held. */
    dl = dt_bad_nsec(CLOCK_REALTIME);
    cr_assert_eq(pthread_cond_timedwait(&rt, &m, &dl), EINVAL);
    expect_held_by_me(&m, "bad tv_nsec");
    dl.tv_nsec = -1;
    cr_assert_eq(pthread_cond_timedwait(&rt, &m, &dl), EINVAL);
    dl = dt_deadline(CLOCK_MONOTONIC, DT_S);
    cr_assert_eq(pthread_cond_clockwait(&rt, &m, CLOCK_PROCESS_CPUTIME_ID, &dl), EINVAL);
    cr_assert_eq(pthread_cond_clockwait(&rt, &m, CLOCK_MONOTONIC_RAW, &dl), EINVAL);
    cr_assert_eq(pthread_cond_clockwait(&rt, &m, (clockid_t)12345, &dl), EINVAL);
    expect_held_by_me(&m, "bad clock");

    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(pthread_cond_destroy(&rt), 0);
    cr_assert_eq(pthread_cond_destroy(&mono), 0);
}

/* A CLOCK_MONOTONIC cond interprets timedwait's deadline on CLOCK_MONOTONIC:
 * a deadline 50 ms ahead on the monotonic clock is, read as a realtime date,
 * decades in the past (so a realtime interpretation returns at once). */
Test(pcond, monotonic_cond_reads_the_deadline_on_the_monotonic_clock, .timeout = 30)
{
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c;
    init_cond_clock(&c, CLOCK_MONOTONIC, 0);
    pthread_mutex_lock(&m);
    int64_t t0 = dt_now(CLOCK_MONOTONIC);
    struct timespec dl = dt_deadline(CLOCK_MONOTONIC, 50 * DT_MS);
    cr_assert_eq(pthread_cond_timedwait(&c, &m, &dl), ETIMEDOUT);
    cr_assert_geq(dt_now(CLOCK_MONOTONIC) - t0, 50 * DT_MS, "returned before 50 ms");
    /* And a realtime-clock deadline 50 ms ahead is, on the monotonic clock,
     * far in the future: clockwait with CLOCK_REALTIME reads it right. */
    t0 = dt_now(CLOCK_MONOTONIC);
    dl = dt_deadline(CLOCK_REALTIME, 50 * DT_MS);
    cr_assert_eq(pthread_cond_clockwait(&c, &m, CLOCK_REALTIME, &dl), ETIMEDOUT);
    cr_assert_lt(dt_now(CLOCK_MONOTONIC) - t0, 50 * DT_MS + DT_LATE_NS);
    dt_assert_not_early(CLOCK_REALTIME, dl, "clockwait realtime on a monotonic cond");
    pthread_mutex_unlock(&m);
    cr_assert_eq(pthread_cond_destroy(&c), 0);
}

/* A timed waiter woken before its deadline returns 0 with the mutex. */
struct timed_wake {
    pthread_mutex_t m;
    pthread_cond_t c;
    int tid;
    int flag;
    int ret;
    int relock;
    int64_t waited;
};

static void *timed_wake_fn(void *p)
{
    struct timed_wake *s = p;
    pthread_mutex_lock(&s->m);
    int64_t t0 = dt_now(CLOCK_MONOTONIC);
    struct timespec dl = dt_deadline(CLOCK_MONOTONIC, 10 * DT_S);
    dt_publish_tid(&s->tid);
    s->ret = 0;
    while (!s->flag && s->ret == 0)
        s->ret = pthread_cond_timedwait(&s->c, &s->m, &dl);
    s->waited = dt_now(CLOCK_MONOTONIC) - t0;
    s->relock = pthread_mutex_lock(&s->m);
    pthread_mutex_unlock(&s->m);
    return NULL;
}

Test(pcond, timed_waiter_woken_before_the_deadline_returns_0, .timeout = 30)
{
    struct timed_wake s;
    memset(&s, 0, sizeof s);
    pthread_mutex_t em = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
    s.m = em;
    init_cond_clock(&s.c, CLOCK_MONOTONIC, 0);
    pthread_t t;
    dt_spawn(&t, timed_wake_fn, &s);
    dt_wait_blocked(&s.tid, "timed waiter");
    pthread_mutex_lock(&s.m);
    s.flag = 1;
    cr_assert_eq(pthread_cond_signal(&s.c), 0);
    pthread_mutex_unlock(&s.m);
    dt_join(t);
    cr_assert_eq(s.ret, 0);
    cr_assert_eq(s.relock, EDEADLK);
    cr_assert_lt(s.waited, 5 * DT_S);
    cr_assert_eq(pthread_cond_destroy(&s.c), 0);
}

/* ---- broadcast, then destroy under the mutex ---------------------------------------- */

#define BD_WAITERS 24
#define BD_ROUNDS 50

struct bd {
    pthread_mutex_t m;
    pthread_cond_t *c;
    int waiting;
    int go;
    int done;
    int errors;
};

struct bd_arg {
    struct bd *s;
    int kind;
};

static void *bd_waiter(void *p)
{
    struct bd_arg *a = p;
    struct bd *s = a->s;
    struct timespec rt = dt_deadline(CLOCK_REALTIME, 15 * DT_S);
    struct timespec mono = dt_deadline(CLOCK_MONOTONIC, 15 * DT_S);
    pthread_mutex_lock(&s->m);
    pthread_cond_t *c = s->c;
    s->waiting++;
    while (!s->go) {
        int e = wait_kind(c, &s->m, a->kind, &rt, &mono);
        if (e != 0) {
            s->errors++;
            break;
        }
    }
    s->done++;
    pthread_mutex_unlock(&s->m);
    return NULL;
}

static int bd_all_waiting(void *p)
{
    struct bd *s = p;
    pthread_mutex_lock(&s->m);
    int n = s->waiting;
    pthread_mutex_unlock(&s->m);
    return n == BD_WAITERS;
}

/* POSIX allows destroying a cond as soon as no thread is blocked on it;
 * after a broadcast, none is (they only need the mutex back), so it can be
 * destroyed and its memory reused while the broadcaster still holds the
 * mutex.  The waiters must not touch the old cond after that. */
Test(pcond, broadcast_then_destroy_and_reuse_under_the_mutex, .timeout = 60)
{
    for (int round = 0; round < BD_ROUNDS; round++) {
        struct bd s;
        memset(&s, 0, sizeof s);
        pthread_mutex_init(&s.m, NULL);
        s.c = malloc(sizeof *s.c);
        cr_assert_not_null(s.c);
        if (round & 1)
            cr_assert_eq(pthread_cond_init(s.c, NULL), 0);
        else
            memset(s.c, 0, sizeof *s.c);
        struct bd_arg a[BD_WAITERS];
        pthread_t t[BD_WAITERS];
        for (int i = 0; i < BD_WAITERS; i++) {
            a[i].s = &s;
            a[i].kind = i + round;
            dt_spawn(&t[i], bd_waiter, &a[i]);
        }
        cr_assert(dt_wait_for(bd_all_waiting, &s, 10 * DT_S), "round %d: waiters never all waited", round);
        pthread_mutex_lock(&s.m);
        s.go = 1;
        cr_assert_eq(pthread_cond_broadcast(s.c), 0);
        cr_assert_eq(pthread_cond_destroy(s.c), 0, "round %d", round);
        memset(s.c, 0xa5, sizeof *s.c); /* "reuse": anything still reading it sees garbage */
        pthread_mutex_unlock(&s.m);
        for (int i = 0; i < BD_WAITERS; i++) {
            int e = dt_join_within(t[i], 15 * DT_S, NULL);
            cr_assert_eq(e, 0, "round %d: waiter %d stuck after broadcast+destroy", round, i);
        }
        cr_assert_eq(s.errors, 0, "round %d", round);
        cr_assert_eq(s.done, BD_WAITERS);
        free(s.c);
        pthread_mutex_destroy(&s.m);
    }
}

/* ---- waits on recursive and errorcheck mutexes -------------------------------------- */

struct typed_wait {
    pthread_mutex_t m;
    pthread_cond_t c;
    int tid;
    int flag;
    int ret;
    int after[4];
};

static void *recursive_waiter(void *p)
{
    struct typed_wait *s = p;
    pthread_mutex_lock(&s->m);
    dt_publish_tid(&s->tid);
    while (!s->flag && s->ret == 0)
        s->ret = pthread_cond_wait(&s->c, &s->m);
    /* held once: one more level, then two unlocks, then EPERM */
    s->after[0] = pthread_mutex_trylock(&s->m);
    s->after[1] = pthread_mutex_unlock(&s->m);
    s->after[2] = pthread_mutex_unlock(&s->m);
    s->after[3] = pthread_mutex_unlock(&s->m);
    return NULL;
}

static void *errorcheck_waiter(void *p)
{
    struct typed_wait *s = p;
    pthread_mutex_lock(&s->m);
    dt_publish_tid(&s->tid);
    while (!s->flag && s->ret == 0)
        s->ret = pthread_cond_wait(&s->c, &s->m);
    s->after[0] = pthread_mutex_lock(&s->m);
    s->after[1] = pthread_mutex_trylock(&s->m);
    s->after[2] = pthread_mutex_unlock(&s->m);
    s->after[3] = pthread_mutex_unlock(&s->m);
    return NULL;
}

static void typed_wait(pthread_mutex_t init, void *(*fn)(void *), const int expect[4], const char *what)
{
    struct typed_wait s;
    memset(&s, 0, sizeof s);
    s.m = init;
    pthread_cond_init(&s.c, NULL);
    pthread_t t;
    dt_spawn(&t, fn, &s);
    dt_wait_blocked(&s.tid, what);
    /* the waiter released the mutex while waiting */
    cr_assert_eq(pthread_mutex_lock(&s.m), 0, "%s", what);
    s.flag = 1;
    cr_assert_eq(pthread_cond_signal(&s.c), 0);
    cr_assert_eq(pthread_mutex_unlock(&s.m), 0);
    dt_join(t);
    cr_assert_eq(s.ret, 0, "%s", what);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(s.after[i], expect[i], "%s: step %d returned %d, not %d", what, i, s.after[i], expect[i]);
    cr_assert_eq(dt_trylock_elsewhere(&s.m), 0, "%s: left locked", what);
    cr_assert_eq(pthread_cond_destroy(&s.c), 0);
}

Test(pcond, waits_on_recursive_and_errorcheck_mutexes, .timeout = 30)
{
    static const int rec[4] = {0, 0, 0, EPERM};
    static const int err[4] = {EDEADLK, EBUSY, 0, EPERM};
    pthread_mutex_t r = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
    pthread_mutex_t e = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
    typed_wait(r, recursive_waiter, rec, "recursive");
    typed_wait(e, errorcheck_waiter, err, "errorcheck");
}

/* glibc's pthread_cond_wait unlocks the mutex with the mutex's own rules: an
 * errorcheck mutex the caller does not hold gives EPERM, at once. */
Test(pcond, wait_with_an_unheld_errorcheck_mutex_is_eperm, .timeout = 30)
{
    pthread_mutex_t m = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 5 * DT_S);
    cr_assert_eq(pthread_cond_timedwait(&c, &m, &dl), EPERM);
    cr_assert_eq(pthread_cond_wait(&c, &m), EPERM);
    cr_assert_eq(pthread_mutex_trylock(&m), 0);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(pthread_cond_destroy(&c), 0);
}

/* ---- cancellation --------------------------------------------------------------------- */

struct cancel_wait {
    pthread_mutex_t m; /* errorcheck */
    pthread_cond_t c;
    int kind;
    int tid;
    int main_released; /* set by main just before it unlocks m */
    int handler_ran;
    int saw_release;
    int relock;
    int trylock;
    int unlock;
};

static void cancel_cleanup(void *p)
{
    struct cancel_wait *s = p;
    s->handler_ran = 1;
    s->saw_release = __atomic_load_n(&s->main_released, __ATOMIC_ACQUIRE);
    s->relock = pthread_mutex_lock(&s->m);  /* EDEADLK: we hold it */
    s->trylock = pthread_mutex_trylock(&s->m); /* EBUSY */
    s->unlock = pthread_mutex_unlock(&s->m);
}

static void *cancel_waiter(void *p)
{
    struct cancel_wait *s = p;
    struct timespec rt = dt_deadline(CLOCK_REALTIME, 30 * DT_S);
    struct timespec mono = dt_deadline(CLOCK_MONOTONIC, 30 * DT_S);
    pthread_cleanup_push(cancel_cleanup, s);
    pthread_mutex_lock(&s->m);
    dt_publish_tid(&s->tid);
    for (;;)
        wait_kind(&s->c, &s->m, s->kind, &rt, &mono);
    pthread_cleanup_pop(0);
    return NULL;
}

Test(pcond, cancelled_waiter_runs_its_cleanup_with_the_mutex_held, .timeout = 30)
{
    for (int kind = 0; kind < 4; kind++) {
        struct cancel_wait s;
        memset(&s, 0, sizeof s);
        pthread_mutex_t em = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
        s.m = em;
        pthread_cond_init(&s.c, NULL);
        s.kind = kind;
        pthread_t t;
        dt_spawn(&t, cancel_waiter, &s);
        dt_wait_blocked(&s.tid, "cancel waiter");
        /* Cancel while we hold the mutex: the waiter must get it back before
         * its cleanup handler runs. */
        cr_assert_eq(pthread_mutex_lock(&s.m), 0);
        cr_assert_eq(pthread_cancel(t), 0);
        dt_sleep_ns(30 * DT_MS);
        __atomic_store_n(&s.main_released, 1, __ATOMIC_RELEASE);
        cr_assert_eq(pthread_mutex_unlock(&s.m), 0);
        void *r = dt_join(t);
        cr_assert_eq(r, PTHREAD_CANCELED, "kind %d", kind);
        cr_assert(s.handler_ran, "kind %d", kind);
        cr_assert(s.saw_release, "kind %d: cleanup ran before the mutex was re-acquired", kind);
        cr_assert_eq(s.relock, EDEADLK, "kind %d: the handler does not hold the mutex", kind);
        cr_assert_eq(s.trylock, EBUSY, "kind %d", kind);
        cr_assert_eq(s.unlock, 0, "kind %d", kind);
        cr_assert_eq(dt_trylock_elsewhere(&s.m), 0, "kind %d", kind);
        cr_assert_eq(pthread_cond_destroy(&s.c), 0, "kind %d", kind);
    }
}

/* POSIX pthread_cond_wait: "A thread that has been unblocked because it has
 * been canceled while blocked in a call to pthread_cond_timedwait() or
 * pthread_cond_wait() shall not consume any condition signal that may be
 * directed concurrently at the condition variable if there are other threads
 * blocked on the condition variable." */
struct swallow {
    pthread_mutex_t m;
    pthread_cond_t c;
    int tid[2];
    int tokens;
    int got;
    int timed_out;
};

static void unlock_cleanup(void *m) { pthread_mutex_unlock(m); }

static void *swallow_victim(void *p)
{
    struct swallow *s = p;
    pthread_cleanup_push(unlock_cleanup, &s->m);
    pthread_mutex_lock(&s->m);
    dt_publish_tid(&s->tid[0]);
    for (;;) {
        pthread_cond_wait(&s->c, &s->m); /* never takes a token */
        pthread_testcancel();
    }
    pthread_cleanup_pop(0);
    return NULL;
}

static void *swallow_other(void *p)
{
    struct swallow *s = p;
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 5 * DT_S);
    pthread_mutex_lock(&s->m);
    dt_publish_tid(&s->tid[1]);
    while (s->tokens == 0) {
        if (pthread_cond_timedwait(&s->c, &s->m, &dl) == ETIMEDOUT) {
            s->timed_out = 1;
            break;
        }
    }
    if (s->tokens > 0) {
        s->tokens--;
        s->got = 1;
    }
    pthread_mutex_unlock(&s->m);
    return NULL;
}

Test(pcond, cancelled_waiter_does_not_swallow_a_signal, .timeout = 60)
{
    for (int round = 0; round < 50; round++) {
        struct swallow s;
        memset(&s, 0, sizeof s);
        pthread_mutex_init(&s.m, NULL);
        pthread_cond_init(&s.c, NULL);
        pthread_t v, o;
        dt_spawn(&v, swallow_victim, &s);
        dt_wait_blocked(&s.tid[0], "victim");
        dt_spawn(&o, swallow_other, &s);
        dt_wait_blocked(&s.tid[1], "other waiter");
        pthread_mutex_lock(&s.m);
        s.tokens = 1;
        cr_assert_eq(pthread_cancel(v), 0);
        cr_assert_eq(pthread_cond_signal(&s.c), 0);
        pthread_mutex_unlock(&s.m);
        cr_assert_eq(dt_join(v), PTHREAD_CANCELED);
        dt_join(o);
        cr_assert_eq(s.timed_out, 0, "round %d: the signal went to the cancelled waiter", round);
        cr_assert_eq(s.got, 1, "round %d", round);
        cr_assert_eq(pthread_cond_destroy(&s.c), 0);
    }
}

/* ---- process-shared -------------------------------------------------------------------- */

#define PP_ROUNDS 300

struct pingpong {
    pthread_mutex_t m;
    pthread_cond_t c;
    int turn; /* 0: parent's, 1: child's */
    int count;
    int errors;
};

static int pingpong_side(struct pingpong *s, int me)
{
    for (int i = 0; i < PP_ROUNDS; i++) {
        struct timespec dl = dt_deadline(CLOCK_MONOTONIC, 10 * DT_S);
        if (pthread_mutex_lock(&s->m) != 0)
            return 2;
        while (s->turn != me) {
            int e = pthread_cond_timedwait(&s->c, &s->m, &dl);
            if (e != 0) {
                pthread_mutex_unlock(&s->m);
                return e == ETIMEDOUT ? 3 : 4;
            }
        }
        s->count++;
        s->turn = !me;
        if ((i & 1) ? pthread_cond_signal(&s->c) : pthread_cond_broadcast(&s->c))
            return 5;
        if (pthread_mutex_unlock(&s->m) != 0)
            return 6;
    }
    return 0;
}

static int pingpong_child(void *p) { return pingpong_side(p, 1); }

Test(pcond, process_shared_cond_and_mutex_across_fork, .timeout = 60)
{
    struct pingpong *s = dt_shared_alloc(sizeof *s);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    cr_assert_eq(pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED), 0);
    cr_assert_eq(pthread_mutex_init(&s->m, &ma), 0);
    pthread_mutexattr_destroy(&ma);
    init_cond_clock(&s->c, CLOCK_MONOTONIC, 1);
    pid_t pid = dt_fork(pingpong_child, s);
    int r = pingpong_side(s, 0);
    dt_wait_child_named(pid, "pshared cond child");
    cr_assert_eq(r, 0, "parent side failed: %d", r);
    cr_assert_eq(s->count, 2 * PP_ROUNDS);
    cr_assert_eq(pthread_cond_destroy(&s->c), 0);
    cr_assert_eq(pthread_mutex_destroy(&s->m), 0);
    dt_shared_free(s, sizeof *s);
}

/* A child blocked in an untimed wait is woken by the parent's broadcast. */
struct pwake {
    pthread_mutex_t m;
    pthread_cond_t c;
    int waiting;
    int flag;
};

static int pwake_child(void *p)
{
    struct pwake *s = p;
    DT_CHECK(pthread_mutex_lock(&s->m) == 0, 2);
    __atomic_store_n(&s->waiting, 1, __ATOMIC_RELEASE);
    while (!s->flag)
        DT_CHECK(pthread_cond_wait(&s->c, &s->m) == 0, 3);
    DT_CHECK(pthread_mutex_unlock(&s->m) == 0, 4);
    return 0;
}

Test(pcond, process_shared_cond_wakes_a_waiting_child, .timeout = 30)
{
    struct pwake *s = dt_shared_alloc(sizeof *s);
    pthread_mutexattr_t ma;
    pthread_condattr_t ca;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_condattr_init(&ca);
    cr_assert_eq(pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED), 0);
    int ps = 0;
    cr_assert_eq(pthread_condattr_getpshared(&ca, &ps), 0);
    cr_assert_eq(ps, PTHREAD_PROCESS_SHARED);
    cr_assert_eq(pthread_mutex_init(&s->m, &ma), 0);
    cr_assert_eq(pthread_cond_init(&s->c, &ca), 0);
    pid_t pid[3];
    for (int i = 0; i < 3; i++) {
        s->waiting = 0;
        pid[i] = dt_fork(pwake_child, s);
        cr_assert(dt_wait_int(&s->waiting, 1, 10 * DT_S));
        cr_assert(dt_wait_sleeping_in(pid[i], pid[i], 10 * DT_S));
    }
    pthread_mutex_lock(&s->m);
    s->flag = 1;
    cr_assert_eq(pthread_cond_broadcast(&s->c), 0);
    pthread_mutex_unlock(&s->m);
    for (int i = 0; i < 3; i++)
        dt_wait_child_named(pid[i], "pshared cond waiter");
    cr_assert_eq(pthread_cond_destroy(&s->c), 0);
    dt_shared_free(s, sizeof *s);
}

/* ---- signals ----------------------------------------------------------------------------- */

struct intr_wait {
    pthread_mutex_t m;
    pthread_cond_t c;
    int kind;
    int tid;
    int flag;
    int bad;
};

static void *intr_waiter(void *p)
{
    struct intr_wait *s = p;
    struct timespec rt = dt_deadline(CLOCK_REALTIME, 20 * DT_S);
    struct timespec mono = dt_deadline(CLOCK_MONOTONIC, 20 * DT_S);
    pthread_mutex_lock(&s->m);
    dt_publish_tid(&s->tid);
    while (!s->flag) {
        int e = wait_kind(&s->c, &s->m, s->kind, &rt, &mono);
        if (e != 0) { /* a spurious 0 is allowed; EINTR is not */
            s->bad = e;
            break;
        }
    }
    pthread_mutex_unlock(&s->m);
    return NULL;
}

/* POSIX pthread_cond_wait: "These functions shall not return an error code
 * of [EINTR]". */
Test(pcond, wait_is_not_interrupted_by_signals, .timeout = 30)
{
    for (int kind = 0; kind < 4; kind++) {
        struct intr_wait s;
        memset(&s, 0, sizeof s);
        pthread_mutex_init(&s.m, NULL);
        pthread_cond_init(&s.c, NULL);
        s.kind = kind;
        pthread_t t;
        dt_spawn(&t, intr_waiter, &s);
        dt_wait_blocked(&s.tid, "cond waiter");
        cr_assert_geq(dt_pummel(t, 10, 2 * DT_MS), 1, "no handler ran");
        pthread_mutex_lock(&s.m);
        s.flag = 1;
        cr_assert_eq(pthread_cond_signal(&s.c), 0);
        pthread_mutex_unlock(&s.m);
        dt_join(t);
        dt_pummel_end();
        cr_assert_eq(s.bad, 0, "kind %d: the wait returned %d on a signal", kind, s.bad);
        cr_assert_eq(pthread_cond_destroy(&s.c), 0);
    }
}

/* ---- no memory, and another mutex ------------------------------------------------------------- */

/* A signal or broadcast with no waiter is not remembered: a later waiter
 * times out. */
Test(pcond, signal_without_waiters_is_not_remembered, .timeout = 30)
{
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    for (int i = 0; i < 10; i++)
        cr_assert_eq(i & 1 ? pthread_cond_broadcast(&c) : pthread_cond_signal(&c), 0);
    pthread_mutex_lock(&m);
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 30 * DT_MS);
    int e;
    /* a spurious 0 is allowed, so wait until the deadline or a timeout */
    while ((e = pthread_cond_timedwait(&c, &m, &dl)) == 0)
        ;
    cr_assert_eq(e, ETIMEDOUT);
    dt_assert_not_early(CLOCK_REALTIME, dl, "after earlier signals");
    pthread_mutex_unlock(&m);
    cr_assert_eq(pthread_cond_destroy(&c), 0);
}

/* POSIX ties a cond to one mutex only while threads wait on it: once no
 * one waits, the cond can be used with another mutex. */
struct moving {
    pthread_mutex_t *m;
    pthread_cond_t *c;
    int tid;
    int flag;
    int ret;
    int relock;
};

static void *moving_waiter(void *p)
{
    struct moving *s = p;
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 10 * DT_S);
    pthread_mutex_lock(s->m);
    dt_publish_tid(&s->tid);
    while (!s->flag && s->ret == 0)
        s->ret = pthread_cond_timedwait(s->c, s->m, &dl);
    s->relock = pthread_mutex_lock(s->m);
    pthread_mutex_unlock(s->m);
    return NULL;
}

Test(pcond, a_cond_can_move_to_another_mutex_once_nobody_waits, .timeout = 30)
{
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    pthread_mutex_t ms[4];
    for (int round = 0; round < 4; round++) {
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
        cr_assert_eq(pthread_mutex_init(&ms[round], &a), 0);
        pthread_mutexattr_destroy(&a);
        struct moving s = {&ms[round], &c, 0, 0, 0, -1};
        pthread_t t;
        dt_spawn(&t, moving_waiter, &s);
        dt_wait_blocked(&s.tid, "waiter");
        pthread_mutex_lock(s.m);
        s.flag = 1;
        cr_assert_eq(round & 1 ? pthread_cond_broadcast(&c) : pthread_cond_signal(&c), 0);
        pthread_mutex_unlock(s.m);
        dt_join(t);
        cr_assert_eq(s.ret, 0, "round %d", round);
        cr_assert_eq(s.relock, EDEADLK, "round %d", round);
        /* and a timed wait of our own on yet another mutex */
        pthread_mutex_t other = PTHREAD_MUTEX_INITIALIZER;
        pthread_mutex_lock(&other);
        struct timespec dl = dt_deadline(CLOCK_MONOTONIC, 5 * DT_MS);
        int e;
        while ((e = pthread_cond_clockwait(&c, &other, CLOCK_MONOTONIC, &dl)) == 0)
            ;
        cr_assert_eq(e, ETIMEDOUT);
        pthread_mutex_unlock(&other);
        cr_assert_eq(pthread_mutex_destroy(&ms[round]), 0);
    }
    cr_assert_eq(pthread_cond_destroy(&c), 0);
}

/* ---- bounded buffer: 16 producers, 16 consumers, signal only ---------------------------- */

#define BB_SIZE 4
#define BB_SIDE 16
#define BB_ITEMS 2000 /* per producer */

struct bbuf {
    pthread_mutex_t m;
    pthread_cond_t not_full, not_empty;
    long items[BB_SIZE];
    int head, count;
    long sum_in, sum_out; /* under m */
    int stuck;            /* a wait hit its (long) deadline: a lost wake-up */
    int gate;
};

static int bb_wait(struct bbuf *b, pthread_cond_t *c, int i)
{
    struct timespec dl = dt_deadline(i & 1 ? CLOCK_REALTIME : CLOCK_MONOTONIC, 10 * DT_S);
    int e = i & 1 ? pthread_cond_timedwait(c, &b->m, &dl) : pthread_cond_clockwait(c, &b->m, CLOCK_MONOTONIC, &dl);
    if (e != 0) {
        b->stuck = 1;
        return -1;
    }
    return 0;
}

static void *bb_producer(void *p)
{
    struct bbuf *b = p;
    dt_gate_pass(&b->gate, 2 * BB_SIDE);
    for (int i = 0; i < BB_ITEMS; i++) {
        pthread_mutex_lock(&b->m);
        while (b->count == BB_SIZE && !b->stuck)
            if (bb_wait(b, &b->not_full, i) != 0)
                break;
        if (b->stuck) {
            pthread_mutex_unlock(&b->m);
            return NULL;
        }
        b->items[(b->head + b->count) % BB_SIZE] = i + 1;
        b->count++;
        b->sum_in += i + 1;
        pthread_cond_signal(&b->not_empty);
        pthread_mutex_unlock(&b->m);
    }
    return NULL;
}

static void *bb_consumer(void *p)
{
    struct bbuf *b = p;
    dt_gate_pass(&b->gate, 2 * BB_SIDE);
    for (int i = 0; i < BB_ITEMS; i++) {
        pthread_mutex_lock(&b->m);
        while (b->count == 0 && !b->stuck)
            if (bb_wait(b, &b->not_empty, i) != 0)
                break;
        if (b->stuck) {
            pthread_mutex_unlock(&b->m);
            return NULL;
        }
        b->sum_out += b->items[b->head];
        b->head = (b->head + 1) % BB_SIZE;
        b->count--;
        pthread_cond_signal(&b->not_full);
        pthread_mutex_unlock(&b->m);
    }
    return NULL;
}

Test(pcond, bounded_buffer_16_producers_16_consumers_signal_only, .timeout = 60)
{
    struct bbuf *b = calloc(1, sizeof *b);
    cr_assert_not_null(b);
    pthread_mutex_init(&b->m, NULL);
    pthread_cond_init(&b->not_full, NULL);
    pthread_cond_init(&b->not_empty, NULL);
    pthread_t t[2 * BB_SIDE];
    for (int i = 0; i < 2 * BB_SIDE; i++)
        dt_spawn(&t[i], i & 1 ? bb_producer : bb_consumer, b);
    for (int i = 0; i < 2 * BB_SIDE; i++)
        dt_join(t[i]);
    cr_assert_eq(b->stuck, 0, "a waiter slept 10 s with work available: lost wake-up");
    cr_assert_eq(b->count, 0);
    cr_assert_eq(b->sum_in, (long)BB_SIDE * BB_ITEMS * (BB_ITEMS + 1) / 2);
    cr_assert_eq(b->sum_out, b->sum_in);
    cr_assert_eq(pthread_cond_destroy(&b->not_full), 0);
    cr_assert_eq(pthread_cond_destroy(&b->not_empty), 0);
    free(b);
}

/* ---- PI and robust mutexes under a cond ------------------------------------------------ */

/* The layer hands PI and robust mutexes to glibc's code; a cond wait must
 * still release and re-acquire them (and time out holding them). */
static void init_special(pthread_mutex_t *m, int pi, int robust)
{
    pthread_mutexattr_t a;
    cr_assert_eq(pthread_mutexattr_init(&a), 0);
    cr_assert_eq(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK), 0);
    if (pi)
        cr_assert_eq(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT), 0);
    if (robust)
        cr_assert_eq(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST), 0);
    cr_assert_eq(pthread_mutex_init(m, &a), 0);
    cr_assert_eq(pthread_mutexattr_destroy(&a), 0);
}

/* glibc quirk, encoded because it is glibc's own code under the layer: the
 * owner's pthread_mutex_trylock on an errorcheck PI or robust mutex is
 * EDEADLK (on a plain errorcheck mutex it is EBUSY). */
Test(pcond, waits_on_pi_and_robust_mutexes, .timeout = 30)
{
    static const int err_pi[4] = {EDEADLK, EDEADLK, 0, EPERM};
    int combos[3][2] = {{1, 0}, {0, 1}, {1, 1}};
    for (int k = 0; k < 3; k++) {
        pthread_mutex_t m;
        init_special(&m, combos[k][0], combos[k][1]);
        /* signalled waiter */
        typed_wait(m, errorcheck_waiter, err_pi, combos[k][0] ? (combos[k][1] ? "PI robust" : "PI") : "robust");
        /* timed out, with the mutex held */
        pthread_cond_t c = PTHREAD_COND_INITIALIZER;
        init_special(&m, combos[k][0], combos[k][1]);
        cr_assert_eq(pthread_mutex_lock(&m), 0);
        struct timespec dl = dt_deadline(CLOCK_MONOTONIC, 20 * DT_MS);
        cr_assert_eq(pthread_cond_clockwait(&c, &m, CLOCK_MONOTONIC, &dl), ETIMEDOUT, "combo %d", k);
        dt_assert_not_early(CLOCK_MONOTONIC, dl, "clockwait on a PI/robust mutex");
        expect_held_by_me(&m, "PI/robust after ETIMEDOUT");
        cr_assert_eq(pthread_mutex_unlock(&m), 0);
        cr_assert_eq(pthread_mutex_destroy(&m), 0);
        cr_assert_eq(pthread_cond_destroy(&c), 0);
    }
}

/* ---- found by review: a wait with a glibc-kept mutex the caller does not hold ------ */

/* glibc's wait unlocks first and returns that EPERM without waiting; the
 * layer once ignored it, waited, and then locked a mutex the caller never
 * held.  Robust and priority-inheritance mutexes are the ones glibc keeps. */
static void unheld_glibc_mutex(int robust)
{
    pthread_mutexattr_t a;
    cr_assert_eq(pthread_mutexattr_init(&a), 0);
    cr_assert_eq(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK), 0);
    if (robust)
        cr_assert_eq(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST), 0);
    else
        cr_assert_eq(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT), 0);
    pthread_mutex_t m;
    cr_assert_eq(pthread_mutex_init(&m, &a), 0);
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 200 * DT_MS);
    int64_t t0 = dt_now(CLOCK_MONOTONIC);
    cr_assert_eq(pthread_cond_timedwait(&c, &m, &dl), EPERM);
    cr_assert_lt(dt_now(CLOCK_MONOTONIC) - t0, 150 * DT_MS, "it waited");
    cr_assert_eq(pthread_mutex_unlock(&m), EPERM, "the failed wait left the mutex locked");
    cr_assert_eq(pthread_mutex_trylock(&m), 0);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(pthread_cond_destroy(&c), 0);
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
    pthread_mutexattr_destroy(&a);
}

Test(pcond, wait_with_an_unheld_robust_mutex_is_eperm, .timeout = 30)
{
    unheld_glibc_mutex(1);
}

Test(pcond, wait_with_an_unheld_pi_mutex_is_eperm, .timeout = 30)
{
    unheld_glibc_mutex(0);
}

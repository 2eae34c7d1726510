/* tests/test_mutex.c - ks_mutex: API contract, mutual exclusion under
 * oversubscription, sleep-not-spin, starvation guard, destroy right after
 * unlock (glibc bug 13690), process-shared use across fork(). */
#include "helpers.h"

#include <limits.h>
#include <poll.h>

static uint32_t state_of(ks_mutex_t *m) { return __atomic_load_n(&m->state, __ATOMIC_RELAXED); }

/* ---- API contract ------------------------------------------------------------ */

Test(mutex, init_destroy)
{
    ks_mutex_t m;
    memset(&m, 0xa5, sizeof m);
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    cr_assert_eq(m.state, 0u);
    cr_assert_eq(m.flags, 0u);
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(ks_mutex_destroy(&m), 0);

    memset(&m, 0xa5, sizeof m);
    cr_assert_eq(ks_mutex_init(&m, KS_SHARED), 0);
    cr_assert_eq(m.state, 0u);
    cr_assert_eq(m.flags, KS_SHARED);
    cr_assert_eq(ks_mutex_trylock(&m), 0);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(ks_mutex_destroy(&m), 0);
}

static ks_mutex_t static_zero; /* all zeros, never initialised */

Test(mutex, static_initializers)
{
    ks_mutex_t a = KS_MUTEX_INIT;
    ks_mutex_t *ms[3];
    ks_mutex_t *heap = calloc(1, sizeof *heap);
    cr_assert_not_null(heap);
    ms[0] = &a;
    ms[1] = &static_zero;
    ms[2] = heap;
    for (int i = 0; i < 3; i++) {
        ks_mutex_t *m = ms[i];
        cr_assert_eq(ks_mutex_trylock(m), 0, "mutex %d", i);
        cr_assert_eq(ks_mutex_trylock(m), EBUSY);
        cr_assert_eq(ks_mutex_timedlock(m, 0), ETIMEDOUT);
        cr_assert_eq(ks_mutex_unlock(m), 0);
        cr_assert_eq(ks_mutex_lock(m), 0);
        cr_assert_eq(ks_mutex_unlock(m), 0);
        cr_assert_eq(ks_mutex_timedlock(m, ks_deadline_after(KS_NSEC_PER_SEC)), 0);
        cr_assert_eq(ks_mutex_unlock(m), 0);
        cr_assert_eq(ks_mutex_unlock(m), EPERM);
        cr_assert_eq(ks_mutex_destroy(m), 0);
    }
    free(heap);
}

Test(mutex, init_unknown_flags_is_einval_and_changes_nothing)
{
    const unsigned bad[] = {2u, 4u, 0x80u, 0x80000000u, ~0u, KS_SHARED | 2u};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ks_mutex_t m, copy;
        memset(&m, 0x5a, sizeof m);
        memcpy(&copy, &m, sizeof m);
        cr_assert_eq(ks_mutex_init(&m, bad[i]), EINVAL, "flags 0x%x accepted", bad[i]);
        cr_assert_eq(memcmp(&m, &copy, sizeof m), 0, "flags 0x%x: object changed", bad[i]);
    }
    /* A live mutex is not reset by a refused init either. */
    ks_mutex_t m = KS_MUTEX_INIT, copy;
    cr_assert_eq(ks_mutex_lock(&m), 0);
    memcpy(&copy, &m, sizeof m);
    cr_assert_eq(ks_mutex_init(&m, 8u), EINVAL);
    cr_assert_eq(memcmp(&m, &copy, sizeof m), 0);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
}

Test(mutex, null_is_einval_everywhere)
{
    cr_assert_eq(ks_mutex_init(NULL, 0), EINVAL);
    cr_assert_eq(ks_mutex_init(NULL, KS_SHARED), EINVAL);
    cr_assert_eq(ks_mutex_destroy(NULL), EINVAL);
    cr_assert_eq(ks_mutex_lock(NULL), EINVAL);
    cr_assert_eq(ks_mutex_trylock(NULL), EINVAL);
    cr_assert_eq(ks_mutex_timedlock(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_mutex_timedlock(NULL, 0), EINVAL);
    cr_assert_eq(ks_mutex_timedlock(NULL, -1), EINVAL);
    cr_assert_eq(ks_mutex_unlock(NULL), EINVAL);
    cr_assert_eq(ks_mutex_lock_slow(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_mutex_unlock_slow(NULL), EINVAL);
}

Test(mutex, timedlock_negative_deadline_is_einval_and_changes_nothing)
{
    const int64_t bad[] = {-1, -KS_NSEC_PER_SEC, INT64_MIN, ks_deadline_after(-5)};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ks_mutex_t m = KS_MUTEX_INIT, copy;
        memcpy(&copy, &m, sizeof m);
        struct ks_futex_stats a = kt_futex_stats();
        cr_assert_eq(ks_mutex_timedlock(&m, bad[i]), EINVAL, "free mutex, deadline %lld",
                     (long long)bad[i]);
        cr_assert_eq(memcmp(&m, &copy, sizeof m), 0, "free mutex changed");
        /* Held: the same, and no sleeping. */
        cr_assert_eq(ks_mutex_lock(&m), 0);
        memcpy(&copy, &m, sizeof m);
        cr_assert_eq(ks_mutex_timedlock(&m, bad[i]), EINVAL, "held mutex");
        cr_assert_eq(memcmp(&m, &copy, sizeof m), 0, "held mutex changed");
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.waits, a.waits);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
        cr_assert_eq(state_of(&m), 0u);
    }
}

static void *trylock_from_thread(void *p)
{
    return (void *)(intptr_t)ks_mutex_trylock(p);
}

Test(mutex, trylock_on_held_is_ebusy)
{
    ks_mutex_t m = KS_MUTEX_INIT;
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_mutex_trylock(&m), EBUSY);
    pthread_t t;
    kt_spawn(&t, trylock_from_thread, &m);
    cr_assert_eq((int)(intptr_t)kt_join(t), EBUSY);
    cr_assert_eq(state_of(&m), KS_MUTEX_LOCKED, "trylock changed the state");
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    kt_spawn(&t, trylock_from_thread, &m);
    cr_assert_eq((int)(intptr_t)kt_join(t), 0);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
}

Test(mutex, unlock_of_unlocked_is_eperm)
{
    ks_mutex_t m = KS_MUTEX_INIT, copy;
    memcpy(&copy, &m, sizeof m);
    cr_assert_eq(ks_mutex_unlock(&m), EPERM);
    cr_assert_eq(memcmp(&m, &copy, sizeof m), 0);
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(ks_mutex_unlock(&m), EPERM);
    cr_assert_eq(memcmp(&m, &copy, sizeof m), 0);
    /* Still a working mutex. */
    cr_assert_eq(ks_mutex_trylock(&m), 0);
    cr_assert_eq(ks_mutex_unlock(&m), 0);

    ks_mutex_t s;
    cr_assert_eq(ks_mutex_init(&s, KS_SHARED), 0);
    cr_assert_eq(ks_mutex_unlock(&s), EPERM);
    cr_assert_eq(state_of(&s), 0u);
}

/* A thread that blocks in lock() and reports how it went. */
struct blocker {
    ks_mutex_t *m;
    int64_t deadline; /* KS_FOREVER: ks_mutex_lock */
    pid_t tid;
    int ret;
    int64_t t0, t1;          /* around the call, ks_now() */
    int64_t cpu0, cpu1;      /* around the call, thread CPU time */
    int unlock_after;        /* unlock on success */
};

static void *blocker_main(void *p)
{
    struct blocker *b = p;
    b->cpu0 = kt_thread_cpu_ns();
    b->t0 = ks_now();
    __atomic_store_n(&b->tid, kt_gettid(), __ATOMIC_RELEASE);
    b->ret = b->deadline == KS_FOREVER ? ks_mutex_lock(b->m) : ks_mutex_timedlock(b->m, b->deadline);
    b->t1 = ks_now();
    b->cpu1 = kt_thread_cpu_ns();
    if (b->ret == 0 && b->unlock_after)
        ks_mutex_unlock(b->m);
    return NULL;
}

static pid_t blocker_tid(struct blocker *b)
{
    pid_t t;
    while (!(t = __atomic_load_n(&b->tid, __ATOMIC_ACQUIRE)))
        sched_yield();
    return t;
}

Test(mutex, destroy_of_locked_is_ebusy, .timeout = 30)
{
    ks_mutex_t m = KS_MUTEX_INIT;
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_mutex_destroy(&m), EBUSY);
    /* ... and still locked and usable. */
    cr_assert_eq(ks_mutex_trylock(&m), EBUSY);

    /* Held and waited on: still EBUSY, and the waiter is not disturbed. */
    struct blocker b = {.m = &m, .deadline = KS_FOREVER, .unlock_after = 1};
    pthread_t t;
    kt_spawn(&t, blocker_main, &b);
    cr_assert(kt_wait_in_futex(blocker_tid(&b), 10 * KS_NSEC_PER_SEC));
    cr_assert_eq(ks_mutex_destroy(&m), EBUSY);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    kt_join(t);
    cr_assert_eq(b.ret, 0);
    cr_assert_eq(ks_mutex_destroy(&m), 0);
}

Test(mutex, timedlock_on_held_times_out_not_early, .timeout = 30)
{
    ks_mutex_t m = KS_MUTEX_INIT;
    cr_assert_eq(ks_mutex_lock(&m), 0);

    /* A deadline already past: ETIMEDOUT at once, without sleeping. */
    struct ks_futex_stats a = kt_futex_stats();
    cr_assert_eq(ks_mutex_timedlock(&m, 0), ETIMEDOUT);
    cr_assert_eq(ks_mutex_timedlock(&m, ks_now()), ETIMEDOUT);
    struct ks_futex_stats s = kt_futex_stats();
    cr_assert_eq(s.waits, a.waits, "a past deadline slept");

    const int64_t rel[] = {1 * KT_MS, 50 * KT_MS, 150 * KT_MS};
    for (unsigned k = 0; k < sizeof rel / sizeof rel[0]; k++) {
        struct blocker b = {.m = &m, .deadline = ks_deadline_after(rel[k])};
        pthread_t t;
        kt_spawn(&t, blocker_main, &b);
        kt_join(t);
        cr_assert_eq(b.ret, ETIMEDOUT, "timedlock returned %d", b.ret);
        cr_assert_geq(b.t1, b.deadline, "timed out %lld ns early", (long long)(b.deadline - b.t1));
        cr_assert_lt(b.t1, b.deadline + KT_LATE_NS, "%lld ms late",
                     (long long)((b.t1 - b.deadline) / KT_MS));
        cr_assert(state_of(&m) & KS_MUTEX_LOCKED, "a timed-out waiter released the mutex");
        cr_assert_eq(state_of(&m) & KS_MUTEX_STARVING, 0u, "STARVING left behind");
    }
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(state_of(&m), 0u);
    /* A past deadline on a free mutex still takes it (the call tries once). */
    cr_assert_eq(ks_mutex_timedlock(&m, 0), 0);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(ks_mutex_destroy(&m), 0);
}

Test(mutex, unlock_hands_over_to_a_sleeper, .timeout = 30)
{
    for (int f = 0; f < 2; f++) {
        ks_mutex_t m;
        cr_assert_eq(ks_mutex_init(&m, f ? KS_SHARED : 0), 0);
        cr_assert_eq(ks_mutex_lock(&m), 0);
        struct blocker b = {.m = &m, .deadline = ks_deadline_after(20 * KS_NSEC_PER_SEC)};
        pthread_t t;
        kt_spawn(&t, blocker_main, &b);
        cr_assert(kt_wait_in_futex(blocker_tid(&b), 10 * KS_NSEC_PER_SEC));
        cr_assert(state_of(&m) & KS_MUTEX_CONTENDED, "a sleeper did not set CONTENDED");
        int64_t t_unlock = ks_now();
        cr_assert_eq(ks_mutex_unlock(&m), 0);
        kt_join(t);
        cr_assert_eq(b.ret, 0);
        cr_assert_geq(b.t1, t_unlock);
        cr_assert_lt(b.t1 - t_unlock, 5 * KS_NSEC_PER_SEC);
        /* The woken thread holds it now (it did not unlock). */
        cr_assert_eq(ks_mutex_trylock(&m), EBUSY);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
        cr_assert_eq(state_of(&m), 0u);
    }
}

/* ---- mutual exclusion, oversubscribed ------------------------------------------ */

#define COUNTER_TOTAL 200000

struct counter {
    ks_mutex_t m;
    long value;  /* plain: only touched under m */
    int inside;  /* atomic: threads inside the critical section */
    int overlap; /* atomic: times two were inside at once */
    int errors;  /* atomic: unexpected return codes */
    int iters;
    uint64_t futex_waits; /* atomic: summed over the threads */
    kt_gate_t gate;
};

static void *counter_main(void *p)
{
    struct counter *c = p;
    kt_gate_pass(&c->gate);
    for (int i = 0; i < c->iters; i++) {
        int r;
        switch (i % 8) {
        case 3:
            r = ks_mutex_timedlock(&c->m, ks_deadline_after(60 * KS_NSEC_PER_SEC));
            break;
        case 6:
            while ((r = ks_mutex_trylock(&c->m)) == EBUSY)
                sched_yield();
            break;
        default:
            r = ks_mutex_lock(&c->m);
        }
        if (r != 0) {
            __atomic_add_fetch(&c->errors, 1, __ATOMIC_RELAXED);
            continue;
        }
        if (__atomic_fetch_add(&c->inside, 1, __ATOMIC_RELAXED) != 0)
            __atomic_add_fetch(&c->overlap, 1, __ATOMIC_RELAXED);
        c->value++;
        /* Now and then hold it across a reschedule or a short sleep, long
         * enough for a waiter's bounded spin to give up: real contention. */
        if (i % 256 == 0)
            kt_sleep_ns(20000);
        else if (i % 64 == 0)
            sched_yield();
        __atomic_sub_fetch(&c->inside, 1, __ATOMIC_RELAXED);
        if (ks_mutex_unlock(&c->m) != 0)
            __atomic_add_fetch(&c->errors, 1, __ATOMIC_RELAXED);
    }
    struct ks_futex_stats st = kt_futex_stats();
    __atomic_add_fetch(&c->futex_waits, st.waits, __ATOMIC_RELAXED);
    return NULL;
}

static void run_counter(int nthreads)
{
    struct counter *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    cr_assert_eq(ks_mutex_init(&c->m, 0), 0);
    c->iters = COUNTER_TOTAL / nthreads;
    kt_gate_init(&c->gate, (unsigned)nthreads);
    pthread_t t[KT_MAX_THREADS];
    for (int i = 0; i < nthreads; i++)
        kt_spawn(&t[i], counter_main, c);
    for (int i = 0; i < nthreads; i++)
        kt_join(t[i]);
    cr_assert_eq(c->errors, 0, "%d lock/unlock calls failed", c->errors);
    cr_assert_eq(c->overlap, 0, "two threads were inside the lock %d times", c->overlap);
    cr_assert_eq(c->value, (long)c->iters * nthreads, "counter %ld, expected %ld", c->value,
                 (long)c->iters * nthreads);
    cr_assert_eq(state_of(&c->m), 0u, "state 0x%x left after all threads finished",
                 state_of(&c->m));
    /* The slow path was really exercised (threads slept on the futex). */
    cr_assert_gt(c->futex_waits, 0u, "no thread ever slept: the test did not contend");
    cr_log_info("%d threads: %llu futex waits", nthreads, (unsigned long long)c->futex_waits);
    cr_assert_eq(ks_mutex_destroy(&c->m), 0);
    kt_gate_destroy(&c->gate);
    free(c);
}

Test(mutex, exact_counter_2_threads, .timeout = 120) { run_counter(2); }
Test(mutex, exact_counter_8_threads, .timeout = 120) { run_counter(8); }
Test(mutex, exact_counter_32_threads, .timeout = 120) { run_counter(32); }
Test(mutex, exact_counter_64_threads, .timeout = 120) { run_counter(64); }

/* ---- fast paths make no system call -------------------------------------------- */

Test(mutex, uncontended_ops_make_no_futex_calls)
{
    for (int f = 0; f < 2; f++) {
        ks_mutex_t m;
        cr_assert_eq(ks_mutex_init(&m, f ? KS_SHARED : 0), 0);
        struct ks_futex_stats a = kt_futex_stats();
        for (int i = 0; i < 100000; i++) {
            cr_assert_eq(ks_mutex_lock(&m), 0);
            cr_assert_eq(ks_mutex_unlock(&m), 0);
            cr_assert_eq(ks_mutex_trylock(&m), 0);
            cr_assert_eq(ks_mutex_unlock(&m), 0);
            cr_assert_eq(ks_mutex_timedlock(&m, ks_deadline_after(KS_NSEC_PER_SEC)), 0);
            cr_assert_eq(ks_mutex_unlock(&m), 0);
            cr_assert_eq(ks_mutex_timedlock(&m, 0), 0);
            cr_assert_eq(ks_mutex_unlock(&m), 0);
        }
        /* Failing trylock is uncontended too. */
        cr_assert_eq(ks_mutex_lock(&m), 0);
        for (int i = 0; i < 1000; i++)
            cr_assert_eq(ks_mutex_trylock(&m), EBUSY);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.waits, a.waits, "%llu futex waits", (unsigned long long)(b.waits - a.waits));
        cr_assert_eq(b.wakes, a.wakes, "%llu futex wakes", (unsigned long long)(b.wakes - a.wakes));
    }
}

/* ---- a blocked waiter sleeps, it does not spin ------------------------------------ */

Test(mutex, blocked_waiter_sleeps_instead_of_spinning, .timeout = 30)
{
    ks_mutex_t m = KS_MUTEX_INIT;
    cr_assert_eq(ks_mutex_lock(&m), 0);
    struct blocker b = {.m = &m, .deadline = KS_FOREVER, .unlock_after = 1};
    pthread_t t;
    kt_spawn(&t, blocker_main, &b);
    blocker_tid(&b);
    kt_sleep_ns(300 * KT_MS);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    kt_join(t);
    cr_assert_eq(b.ret, 0);
    int64_t blocked = b.t1 - b.t0, cpu = b.cpu1 - b.cpu0;
    cr_assert_geq(blocked, 250 * KT_MS, "the waiter was only blocked %lld ms",
                  (long long)(blocked / KT_MS));
    cr_assert_lt(cpu * 10, blocked, "the waiter burned %lld ms of CPU while blocked %lld ms",
                 (long long)(cpu / KT_MS), (long long)(blocked / KT_MS));
}

/* ---- starvation guard ------------------------------------------------------------ */

struct hammer {
    ks_mutex_t m;
    int stop;
    long iters; /* under m */
    kt_gate_t gate;
};

static void *hammer_main(void *p)
{
    struct hammer *h = p;
    kt_gate_pass(&h->gate);
    while (!__atomic_load_n(&h->stop, __ATOMIC_RELAXED)) {
        ks_mutex_lock(&h->m);
        h->iters++;
        /* Hold it a few microseconds: longer than a woken waiter needs to
         * notice, shorter than it needs to get scheduled, so a pure barging
         * mutex hands it back and forth between the two hammers forever. */
        int64_t until = ks_now() + 3000;
        while (ks_now() < until)
            ; /* busy */
        ks_mutex_unlock(&h->m);
    }
    return NULL;
}

static long hammer_iters(struct hammer *h)
{
    ks_mutex_lock(&h->m);
    long n = h->iters;
    ks_mutex_unlock(&h->m);
    return n;
}

Test(mutex, third_thread_is_not_starved_by_two_hammering, .timeout = 60)
{
    struct hammer *h = calloc(1, sizeof *h);
    cr_assert_not_null(h);
    kt_gate_init(&h->gate, 2);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        kt_spawn(&t[i], hammer_main, h);
    /* Let them get going. */
    int64_t end = ks_now() + 10 * KS_NSEC_PER_SEC;
    while (hammer_iters(h) < 10000 && ks_now() < end)
        kt_sleep_ns(KT_MS);
    int64_t worst = 0;
    for (int k = 0; k < 10; k++) {
        int64_t t0 = ks_now();
        cr_assert_eq(ks_mutex_lock(&h->m), 0);
        int64_t w = ks_now() - t0;
        h->iters++;
        cr_assert_eq(ks_mutex_unlock(&h->m), 0);
        if (w > worst)
            worst = w;
        kt_sleep_ns(5 * KT_MS);
    }
    long before = hammer_iters(h);
    kt_sleep_ns(20 * KT_MS);
    long after = hammer_iters(h);
    __atomic_store_n(&h->stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 2; i++)
        kt_join(t[i]);
    cr_log_info("third thread: worst wait %lld us over 10 acquisitions", (long long)(worst / 1000));
    cr_assert_lt(worst, 1000 * KT_MS * KT_SLOW, "the third thread waited %lld ms for the lock",
                 (long long)(worst / KT_MS));
    cr_assert_gt(after, before, "the hammering threads stopped making progress");
    cr_assert_eq(state_of(&h->m), 0u);
    kt_gate_destroy(&h->gate);
    free(h);
}

/* A waiter that set STARVING and then timed out must clear it again, or the
 * mutex would refuse every newcomer for good. */
Test(mutex, timed_out_starving_waiter_clears_starving, .timeout = 60)
{
    int scenario = 0;
    for (int attempt = 0; attempt < 20 && !scenario; attempt++) {
        ks_mutex_t m = KS_MUTEX_INIT;
        cr_assert_eq(ks_mutex_lock(&m), 0);
        struct blocker b = {.m = &m, .deadline = ks_deadline_after(400 * KT_MS * KT_SLOW),
                            .unlock_after = 1};
        pthread_t t;
        kt_spawn(&t, blocker_main, &b);
        cr_assert(kt_wait_in_futex(blocker_tid(&b), 10 * KS_NSEC_PER_SEC));
        kt_sleep_ns(5 * KT_MS); /* the waiter has now waited > 1 ms */
        /* Barge: unlock (waking it) and take the lock straight back. */
        cr_assert_eq(ks_mutex_unlock(&m), 0);
        int r = ks_mutex_trylock(&m);
        if (r != 0) {
            kt_join(t); /* the waiter got it first: try again */
            continue;
        }
        /* The woken waiter finds it held and asks for a hand-off. */
        int64_t end = ks_now() + 200 * KT_MS;
        while (!(state_of(&m) & KS_MUTEX_STARVING) && ks_now() < end)
            kt_sleep_ns(100000);
        int saw_s = !!(state_of(&m) & KS_MUTEX_STARVING);
        kt_join(t); /* keep holding it until the waiter gives up */
        if (!saw_s)
            continue;
        scenario = 1;
        cr_assert_eq(b.ret, ETIMEDOUT);
        cr_assert_geq(b.t1, b.deadline);
        cr_assert_eq(state_of(&m) & KS_MUTEX_STARVING, 0u, "STARVING left set: 0x%x", state_of(&m));
        cr_assert_eq(ks_mutex_unlock(&m), 0);
        cr_assert_eq(state_of(&m), 0u);
        /* A newcomer gets it at once. */
        pthread_t t2;
        kt_spawn(&t2, trylock_from_thread, &m);
        cr_assert_eq((int)(intptr_t)kt_join(t2), 0);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
    }
    cr_assert(scenario, "could not make a waiter set STARVING in 20 attempts");
}

/* Issue 10 bug 4: after a starving waiter timed out, a free mutex nobody
 * waited on could stay marked CONTENDED, so trylock, ks_rmutex_trylock and
 * destroy answered EBUSY.  The sequence: W1 has set STARVING (L|C|S); the
 * kernel returns ETIMEDOUT to W1; the owner unlocks (state S, the wake
 * finds nobody); a newcomer N with a short deadline sets C, sleeps and
 * times out; W1 clears S and leaves C.  The window between W1 leaving the
 * kernel and clearing S is a few instructions, so the test holds W1 there:
 * W1 and the main thread share one CPU, and the main thread, SCHED_FIFO,
 * spins past W1's deadline so W1 cannot run; then it sends W1 a signal.
 * When W1 runs, its futex wait has both timed out and been interrupted, and
 * Linux reports the timeout (futex_wait checks it before pending signals)
 * and then runs the handler before W1's own code: the handler parks W1 in
 * read() until the main thread has played the owner and N. */
static int park_pipe[2];
static int parked;

static void park_handler(int sig)
{
    (void)sig;
    char c;
    __atomic_store_n(&parked, 1, __ATOMIC_RELEASE);
    while (read(park_pipe[0], &c, 1) < 0 && errno == EINTR)
        ;
}

struct starver {
    ks_mutex_t *m;
    int cpu;
    int64_t deadline;
    int ret;
    int done; /* set once ks_mutex_timedlock returned */
    pid_t tid;
};

static void *starver_main(void *p)
{
    struct starver *w = p;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(w->cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    __atomic_store_n(&w->tid, kt_gettid(), __ATOMIC_RELEASE);
    w->ret = ks_mutex_timedlock(w->m, w->deadline);
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static int set_fifo(int on)
{
    struct sched_param sp = {.sched_priority = on ? 1 : 0};
    return pthread_setschedparam(pthread_self(), on ? SCHED_FIFO : SCHED_OTHER, &sp);
}

Test(mutex, starving_waiter_timing_out_leaves_no_contended_bit_on_a_free_mutex, .timeout = 60)
{
    if (geteuid() != 0)
        cr_skip_test("needs SCHED_FIFO (root) to hold the waiter between its timeout and its exit");
    kt_install_eintr_handler(SIGUSR2);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = park_handler;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    cr_assert_eq(pipe(park_pipe), 0);
    cpu_set_t old;
    cr_assert_eq(pthread_getaffinity_np(pthread_self(), sizeof old, &old), 0);
    int cpu = sched_getcpu();
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    cr_assert_eq(pthread_setaffinity_np(pthread_self(), sizeof one, &one), 0);

    int reached = 0;
    for (int attempt = 0; attempt < 10 && !reached; attempt++) {
        ks_mutex_t m = KS_MUTEX_INIT;
        __atomic_store_n(&parked, 0, __ATOMIC_RELAXED);
        cr_assert_eq(ks_mutex_lock(&m), 0);
        struct starver w = {.m = &m, .cpu = cpu, .deadline = ks_deadline_after(300 * KT_MS * KT_SLOW)};
        pthread_t t;
        kt_spawn(&t, starver_main, &w);
        pid_t tid;
        while (!(tid = __atomic_load_n(&w.tid, __ATOMIC_ACQUIRE)))
            sched_yield();
        /* Each step below needs W1 still inside ks_mutex_timedlock.  On a
         * slow machine (sanitizers, 2 busy CPUs) the steps can outlast its
         * deadline; then the attempt is abandoned (`late`) and retried. */
        int late = !kt_wait_in_futex(tid, 10 * KS_NSEC_PER_SEC);
        if (!late) {
            /* W1 has waited > 1 ms: a spurious wake-up makes it set STARVING. */
            kt_sleep_ns(3 * KT_MS);
            cr_assert_eq(pthread_kill(t, SIGUSR2), 0);
            int64_t end = ks_now() + 5 * KS_NSEC_PER_SEC;
            while (state_of(&m) != (KS_MUTEX_LOCKED | KS_MUTEX_CONTENDED | KS_MUTEX_STARVING) &&
                   !__atomic_load_n(&w.done, __ATOMIC_ACQUIRE) && ks_now() < end)
                kt_sleep_ns(100000);
            late = state_of(&m) != (KS_MUTEX_LOCKED | KS_MUTEX_CONTENDED | KS_MUTEX_STARVING) ||
                   !kt_wait_in_futex(tid, 10 * KS_NSEC_PER_SEC);
        }
        int in_time = 0;
        if (!late) {
            /* Keep W1 off the CPU past its deadline, then make it park. */
            cr_assert_eq(set_fifo(1), 0, "SCHED_FIFO refused");
            in_time = ks_now() < w.deadline - 20 * KT_MS;
            while (ks_now() < w.deadline + 2 * KT_MS)
                ;
            cr_assert_eq(pthread_kill(t, SIGUSR1), 0);
            cr_assert_eq(set_fifo(0), 0);
            int64_t end = ks_now() + 5 * KS_NSEC_PER_SEC;
            while (!__atomic_load_n(&parked, __ATOMIC_ACQUIRE) && !__atomic_load_n(&w.done, __ATOMIC_ACQUIRE) &&
                   ks_now() < end)
                kt_sleep_ns(100000);
            late = !__atomic_load_n(&parked, __ATOMIC_ACQUIRE);
        }
        if (late) {
            /* W1 left ks_mutex_timedlock before the signal came, or is
             * about to.  SIGUSR1 may still reach it on its way out, so
             * release the handler in advance, reap W1, drop any byte the
             * handler did not read, and try again. */
            cr_assert_eq(write(park_pipe[1], "g", 1), 1);
            kt_join(t);
            cr_assert_eq(w.ret, ETIMEDOUT, "W1 got %d while the main thread held the mutex", w.ret);
            struct pollfd pfd = {.fd = park_pipe[0], .events = POLLIN};
            char c;
            if (poll(&pfd, 1, 0) == 1)
                cr_assert_eq(read(park_pipe[0], &c, 1), 1);
            cr_assert_eq(ks_mutex_unlock(&m), 0);
            continue;
        }
        if (in_time && state_of(&m) == (KS_MUTEX_LOCKED | KS_MUTEX_CONTENDED | KS_MUTEX_STARVING)) {
            /* W1 is out of the kernel with S still set.  The owner unlocks
             * (nobody to wake), and a newcomer sets C and times out. */
            cr_assert_eq(ks_mutex_unlock(&m), 0);
            cr_assert_eq(state_of(&m), KS_MUTEX_STARVING);
            cr_assert_eq(ks_mutex_timedlock(&m, ks_deadline_after(5 * KT_MS)), ETIMEDOUT);
            reached = state_of(&m) == (KS_MUTEX_STARVING | KS_MUTEX_CONTENDED);
        }
        cr_assert_eq(write(park_pipe[1], "g", 1), 1);
        kt_join(t);
        if (!reached) {
            /* W1 took the lock after all (it ran before the signal): undo. */
            if (w.ret == 0)
                continue;
            if (state_of(&m) & KS_MUTEX_LOCKED)
                ks_mutex_unlock(&m);
            continue;
        }
        cr_assert_eq(w.ret, ETIMEDOUT);
        cr_assert_eq(state_of(&m), 0u, "a free mutex nobody waits on was left in state 0x%x", state_of(&m));
        cr_assert_eq(ks_mutex_trylock(&m), 0);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
        cr_assert_eq(ks_mutex_destroy(&m), 0);
    }
    pthread_setaffinity_np(pthread_self(), sizeof old, &old);
    close(park_pipe[0]);
    close(park_pipe[1]);
    cr_assert(reached, "could not hold a timed-out starving waiter in its window in 10 attempts");
}

/* ---- destroy/free right after unlock (POSIX; glibc bug 13690) ---------------------- */

#define UAF_ROUNDS 3000

struct uaf {
    ks_mutex_t *m;  /* published by A for round `round` */
    int round;
    int done;       /* B finished round `done` (freed the mutex) */
    int errors;
};

static void *uaf_b(void *p)
{
    struct uaf *u = p;
    for (int i = 1; i <= UAF_ROUNDS; i++) {
        while (__atomic_load_n(&u->round, __ATOMIC_ACQUIRE) != i)
            sched_yield();
        ks_mutex_t *m = u->m;
        if (ks_mutex_lock(m) != 0)
            u->errors++;
        if (ks_mutex_unlock(m) != 0)
            u->errors++;
        if (ks_mutex_destroy(m) != 0)
            u->errors++;
        memset(m, 0xdd, sizeof *m);
        free(m);
        __atomic_store_n(&u->done, i, __ATOMIC_RELEASE);
    }
    return NULL;
}

Test(mutex, free_right_after_unlock_is_safe, .timeout = 120)
{
    struct uaf u = {0};
    pthread_t t;
    kt_spawn(&t, uaf_b, &u);
    int slept = 0;
    for (int i = 1; i <= UAF_ROUNDS; i++) {
        ks_mutex_t *m = malloc(sizeof *m);
        cr_assert_not_null(m);
        cr_assert_eq(ks_mutex_init(m, (i & 2) ? KS_SHARED : 0), 0);
        cr_assert_eq(ks_mutex_lock(m), 0);
        u.m = m;
        __atomic_store_n(&u.round, i, __ATOMIC_RELEASE);
        if (i % 4 != 0) {
            /* Mostly let B go to sleep, so unlock takes the waking path. */
            int64_t end = ks_now() + 200 * KT_MS;
            while (!(__atomic_load_n(&m->state, __ATOMIC_RELAXED) & KS_MUTEX_CONTENDED) &&
                   ks_now() < end)
                sched_yield();
            slept += !!(__atomic_load_n(&m->state, __ATOMIC_RELAXED) & KS_MUTEX_CONTENDED);
        }
        /* From here B may lock, unlock and free m while we are still inside. */
        cr_assert_eq(ks_mutex_unlock(m), 0);
        while (__atomic_load_n(&u.done, __ATOMIC_ACQUIRE) != i)
            sched_yield();
    }
    kt_join(t);
    cr_assert_eq(u.errors, 0);
    cr_assert_gt(slept, UAF_ROUNDS / 4, "B rarely slept (%d rounds): the test lost its point", slept);
}

/* ---- signals ------------------------------------------------------------------- */

struct sigblocker {
    struct blocker b;
    int done;
};

static void *sigblocker_main(void *p)
{
    struct sigblocker *s = p;
    blocker_main(&s->b);
    __atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

Test(mutex, signals_do_not_break_lock_or_timedlock, .timeout = 30)
{
    kt_install_eintr_handler(SIGUSR1);
    ks_mutex_t m = KS_MUTEX_INIT;
    cr_assert_eq(ks_mutex_lock(&m), 0);

    /* timedlock: ETIMEDOUT, never early, never EINTR. */
    struct sigblocker s = {.b = {.m = &m, .deadline = ks_deadline_after(200 * KT_MS)}};
    int seen0 = kt_signals_seen;
    pthread_t t;
    kt_spawn(&t, sigblocker_main, &s);
    kt_pummel(t, SIGUSR1, &s.done, 2 * KT_MS);
    kt_join(t);
    cr_assert_gt(kt_signals_seen, seen0);
    cr_assert_eq(s.b.ret, ETIMEDOUT, "timedlock returned %d under signals", s.b.ret);
    cr_assert_geq(s.b.t1, s.b.deadline, "timed out early");

    /* lock: keeps waiting through signals, returns 0 after the unlock. */
    struct sigblocker s2 = {.b = {.m = &m, .deadline = KS_FOREVER, .unlock_after = 1}};
    kt_spawn(&t, sigblocker_main, &s2);
    int64_t end = ks_now() + 150 * KT_MS;
    while (ks_now() < end) {
        pthread_kill(t, SIGUSR1);
        kt_sleep_ns(2 * KT_MS);
    }
    cr_assert_eq(__atomic_load_n(&s2.done, __ATOMIC_ACQUIRE), 0, "lock returned while held");
    int64_t t_unlock = ks_now();
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    kt_join(t);
    cr_assert_eq(s2.b.ret, 0);
    cr_assert_geq(s2.b.t1, t_unlock);
    cr_assert_eq(state_of(&m), 0u);
}

/* ---- process-shared across fork() ------------------------------------------------ */

#define SHARED_ITERS 50000

struct shm_counter {
    ks_mutex_t m;
    long value;
    int inside, overlap;
};

static int shm_worker(void *p)
{
    struct shm_counter *c = p;
    for (int i = 0; i < SHARED_ITERS; i++) {
        if (ks_mutex_lock(&c->m) != 0)
            return 1;
        if (__atomic_fetch_add(&c->inside, 1, __ATOMIC_RELAXED) != 0)
            __atomic_add_fetch(&c->overlap, 1, __ATOMIC_RELAXED);
        c->value++;
        /* Now and then hold it across a reschedule or a short sleep, long
         * enough for a waiter's bounded spin to give up: real contention. */
        if (i % 256 == 0)
            kt_sleep_ns(20000);
        else if (i % 64 == 0)
            sched_yield();
        __atomic_sub_fetch(&c->inside, 1, __ATOMIC_RELAXED);
        if (ks_mutex_unlock(&c->m) != 0)
            return 2;
    }
    return 0;
}

Test(mutex, process_shared_counter_across_fork, .timeout = 120)
{
    struct shm_counter *c = kt_shared_alloc(sizeof *c);
    cr_assert_eq(ks_mutex_init(&c->m, KS_SHARED), 0);
    pid_t kids[2];
    for (int i = 0; i < 2; i++)
        kids[i] = kt_fork(shm_worker, c);
    int mine = shm_worker(c);
    for (int i = 0; i < 2; i++)
        kt_wait_child(kids[i]);
    cr_assert_eq(mine, 0);
    cr_assert_eq(c->overlap, 0);
    cr_assert_eq(c->value, 3L * SHARED_ITERS, "shared counter %ld", c->value);
    cr_assert_eq(state_of(&c->m), 0u);
    cr_assert_eq(ks_mutex_destroy(&c->m), 0);
    kt_shared_free(c, sizeof *c);
}

static int shm_child_blocks(void *p)
{
    struct shm_counter *c = p;
    /* The parent holds the mutex: this sleeps until the parent unlocks. */
    if (ks_mutex_lock(&c->m) != 0)
        return 1;
    c->value = 7;
    if (ks_mutex_unlock(&c->m) != 0)
        return 2;
    return 0;
}

Test(mutex, process_shared_wake_reaches_child, .timeout = 60)
{
    struct shm_counter *c = kt_shared_alloc(sizeof *c);
    cr_assert_eq(ks_mutex_init(&c->m, KS_SHARED), 0);
    cr_assert_eq(ks_mutex_lock(&c->m), 0);
    pid_t pid = kt_fork(shm_child_blocks, c);
    cr_assert(kt_wait_child_in_futex(pid, 10 * KS_NSEC_PER_SEC), "child never blocked");
    cr_assert(state_of(&c->m) & KS_MUTEX_CONTENDED);
    /* The unlock's wake must reach the child: a shared sleep also ends on
     * its own within a second (src/futex.c), so a wake on the wrong futex
     * key would only slow the child down, unless the kernel's count is
     * checked. */
    struct ks_futex_stats st0 = kt_futex_stats();
    cr_assert_eq(ks_mutex_unlock(&c->m), 0);
    struct ks_futex_stats st1 = kt_futex_stats();
    cr_assert_eq(st1.wakes - st0.wakes, 1u);
    cr_assert_eq(st1.woken - st0.woken, 1u, "the unlock's wake reached %llu sleepers",
                 (unsigned long long)(st1.woken - st0.woken));
    kt_wait_child(pid);
    cr_assert_eq(c->value, 7);
    cr_assert_eq(state_of(&c->m), 0u);
    kt_shared_free(c, sizeof *c);
}

/* A KS_SHARED waiter looks again every second (a holder killed between its
 * unlock and its wake must not strand it), but the end of such a slice is
 * not a wake that found the mutex held again: it must not set STARVING.
 * Before that was told apart, a mutex merely held for over a second was
 * left reserved (S) at its unlock, and a trylock right after it, with
 * nobody holding the mutex, said EBUSY (a review's reproducer). */
struct slice_waiter {
    ks_mutex_t m;
    pid_t tid;
};

static void *slice_waiter_main(void *p)
{
    struct slice_waiter *w = p;
    /* release: pairs with the test's acquire load of tid */
    __atomic_store_n(&w->tid, kt_gettid(), __ATOMIC_RELEASE);
    cr_assert_eq(ks_mutex_lock(&w->m), 0);
    cr_assert_eq(ks_mutex_unlock(&w->m), 0);
    return NULL;
}

Test(mutex, shared_waiter_slices_do_not_set_starving, .timeout = 60)
{
    struct slice_waiter w;
    memset(&w, 0, sizeof w);
    cr_assert_eq(ks_mutex_init(&w.m, KS_SHARED), 0);
    cr_assert_eq(ks_mutex_lock(&w.m), 0);
    pthread_t t;
    kt_spawn(&t, slice_waiter_main, &w);
    while (!__atomic_load_n(&w.tid, __ATOMIC_ACQUIRE)) /* acquire: pairs with the waiter's release */
        kt_sleep_ns(KT_MS);
    cr_assert(kt_wait_in_futex(w.tid, 10 * KS_NSEC_PER_SEC), "the waiter never slept");
    kt_sleep_ns(2500 * KT_MS); /* two slices of 1 s */
    cr_assert_eq(state_of(&w.m) & KS_MUTEX_STARVING, 0u, "word %#x: S set with no wake", state_of(&w.m));
    cr_assert_eq(ks_mutex_unlock(&w.m), 0);
    kt_join(t);
    cr_assert_eq(state_of(&w.m), 0u);
    cr_assert_eq(ks_mutex_trylock(&w.m), 0);
    cr_assert_eq(ks_mutex_unlock(&w.m), 0);
}

/* ---- unlock touches nothing after the releasing CAS (hardware watchpoint) -------- */

static ks_mutex_t *watched_mutex;

static int mutex_released(void)
{
    return !(__atomic_load_n(&watched_mutex->state, __ATOMIC_RELAXED) & KS_MUTEX_LOCKED);
}

Test(mutex, unlock_touches_nothing_after_release)
{
    _Alignas(8) static ks_mutex_t m;
    watched_mutex = &m;
    struct kt_watch w = {.n = 0};
    if (kt_watch_add(&w, &m, 8) != 0)
        cr_skip_test("no hardware watchpoints here (perf_event_open: %s)", strerror(errno));

    /* Calibration: a deliberately wrong unlock (release, then read the
     * flags, as glibc did in bug 13690) is seen. */
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    __atomic_store_n(&m.state, KS_MUTEX_LOCKED | KS_MUTEX_CONTENDED, __ATOMIC_RELAXED);
    kt_watch_begin(&w, mutex_released);
    __atomic_store_n(&m.state, 0, __ATOMIC_RELEASE);
    (void)*(volatile uint32_t *)&m.flags;
    kt_watch_end(&w);
    cr_assert_eq(w.hits, 2, "the watchpoint saw %d accesses, not 2", w.hits);
    cr_assert_eq(w.after, 2, "the watchpoint missed an access after release");

    const uint32_t L = KS_MUTEX_LOCKED, C = KS_MUTEX_CONTENDED, S = KS_MUTEX_STARVING;
    const uint32_t states[] = {L, L | C, L | C | S, L | S};
    for (int f = 0; f < 2; f++)
        for (unsigned i = 0; i < sizeof states / sizeof states[0]; i++) {
            cr_assert_eq(ks_mutex_init(&m, f ? KS_SHARED : 0), 0);
            /* Held, with (for C and S) sleepers the wake will not find. */
            __atomic_store_n(&m.state, states[i], __ATOMIC_RELAXED);
            kt_watch_begin(&w, mutex_released);
            int r = ks_mutex_unlock(&m);
            kt_watch_end(&w);
            cr_assert_eq(r, 0);
            cr_assert_geq(w.hits, 1, "the watchpoint saw nothing");
            cr_assert_leq(w.after, 1,
                          "unlock (state 0x%x, flags %d) accessed the mutex %d more times after "
                          "the releasing atomic",
                          states[i], f, w.after - 1);
            cr_assert_eq(m.state, states[i] & S);
        }
    kt_watch_close(&w);
}

/* ---- ks_mutex_lock2: two at once in one global order (the bank transfer) ----------------- */

static int l2_lock(void *l) { return ks_mutex_lock(l); }
static int l2_unlock(void *l) { return ks_mutex_unlock(l); }
static int l2_trylock(void *l) { return ks_mutex_trylock(l); }
static int l2_lock2(void *a, void *b) { return ks_mutex_lock2(a, b); }
static int l2_timedlock2(void *a, void *b, int64_t d) { return ks_mutex_timedlock2(a, b, d); }
static int l2_unlock2(void *a, void *b) { return ks_mutex_unlock2(a, b); }
static const struct kt_lock2_ops l2_ops = {l2_lock, l2_unlock, l2_trylock, l2_lock2, l2_timedlock2, l2_unlock2};

Test(mutex, lock2_in_opposite_orders_does_not_deadlock, .timeout = 120)
{
    static ks_mutex_t locks[KT_ACCOUNTS] = {KS_MUTEX_INIT, KS_MUTEX_INIT, KS_MUTEX_INIT, KS_MUTEX_INIT};
    void *p[KT_ACCOUNTS] = {&locks[0], &locks[1], &locks[2], &locks[3]};
    kt_bank_run(&l2_ops, p, 16);
}

Test(mutex, timedlock2_gives_back_the_first_when_the_second_times_out, .timeout = 30)
{
    static ks_mutex_t x = KS_MUTEX_INIT, y = KS_MUTEX_INIT;
    kt_lock2_contract(&l2_ops, &x, &y);
}

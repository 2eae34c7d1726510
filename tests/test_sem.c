/* tests/test_sem.c - ks_sem: API contract, bounds, permit limit, exactly-once
 * consumption, no lost wake-ups, the WAKING wake economy, post-then-free
 * (glibc bug 12674 / tst-sem11), timeouts, process-shared use. */
#include "helpers.h"

static uint64_t state_of(ks_sem_t *s) { return __atomic_load_n(&s->state, __ATOMIC_RELAXED); }
static uint32_t waiters_of(ks_sem_t *s) { return (uint32_t)(state_of(s) >> 32); }

/* ---- API contract ------------------------------------------------------------ */

static void expect_init_einval(unsigned value, unsigned max, unsigned flags, int bounded)
{
    ks_sem_t s, copy;
    memset(&s, 0x5a, sizeof s);
    memcpy(&copy, &s, sizeof s);
    int e = bounded ? ks_sem_init_bounded(&s, value, max, flags) : ks_sem_init(&s, value, flags);
    cr_assert_eq(e, EINVAL, "init%s(value %u, max %u, flags 0x%x) returned %d",
                 bounded ? "_bounded" : "", value, max, flags, e);
    cr_assert_eq(memcmp(&s, &copy, sizeof s), 0, "refused init changed the object");
}

Test(sem, init_rejects_bad_bounds_and_changes_nothing)
{
    expect_init_einval(4, 3, 0, 1);                            /* value > max */
    expect_init_einval(0, 0, 0, 1);                            /* max 0 */
    expect_init_einval(1, 0, 0, 1);
    expect_init_einval(0, KS_SEM_VALUE_MAX + 1u, 0, 1);        /* max too big */
    expect_init_einval(0, ~0u, 0, 1);
    expect_init_einval((unsigned)-1, KS_SEM_VALUE_MAX, 0, 1);  /* "negative" value */
    expect_init_einval((unsigned)-1, 0, 0, 0);
    expect_init_einval(KS_SEM_VALUE_MAX + 1u, 0, 0, 0);
    expect_init_einval(0, 1, 2u, 1);                           /* unknown flags */
    expect_init_einval(0, 0, KS_SHARED | 0x10u, 0);
    cr_assert_eq(ks_sem_init(NULL, 0, 0), EINVAL);
    cr_assert_eq(ks_sem_init_bounded(NULL, 0, 1, 0), EINVAL);

    /* Edges that are valid. */
    ks_sem_t s;
    cr_assert_eq(ks_sem_init(&s, KS_SEM_VALUE_MAX, 0), 0);
    cr_assert_eq(ks_sem_value(&s), (int)KS_SEM_VALUE_MAX);
    cr_assert_eq(ks_sem_init_bounded(&s, 3, 3, KS_SHARED), 0);
    cr_assert_eq(ks_sem_value(&s), 3);
    cr_assert_eq(s.max, 3u);
    cr_assert_eq(s.flags, KS_SHARED);
    cr_assert_eq(ks_sem_init_bounded(&s, 0, 1, 0), 0);
    cr_assert_eq(ks_sem_value(&s), 0);
    cr_assert_eq(ks_sem_init_bounded(&s, KS_SEM_VALUE_MAX, KS_SEM_VALUE_MAX, 0), 0);
    cr_assert_eq(ks_sem_value(&s), (int)KS_SEM_VALUE_MAX);
}

static ks_sem_t static_zero;

Test(sem, static_initializers)
{
    ks_sem_t a = KS_SEM_INIT(2);
    cr_assert_eq(ks_sem_value(&a), 2);
    cr_assert_eq(ks_sem_trywait(&a), 0);
    cr_assert_eq(ks_sem_wait(&a), 0);
    cr_assert_eq(ks_sem_trywait(&a), EAGAIN);
    cr_assert_eq(ks_sem_post(&a), 0);
    cr_assert_eq(ks_sem_timedwait(&a, 0), 0);
    cr_assert_eq(ks_sem_destroy(&a), 0);

    ks_sem_t *zs[2] = {&static_zero, calloc(1, sizeof(ks_sem_t))};
    cr_assert_not_null(zs[1]);
    for (int i = 0; i < 2; i++) {
        ks_sem_t *s = zs[i];
        cr_assert_eq(ks_sem_value(s), 0);
        cr_assert_eq(ks_sem_trywait(s), EAGAIN);
        cr_assert_eq(ks_sem_post(s), 0);
        cr_assert_eq(ks_sem_post(s), 0);
        cr_assert_eq(ks_sem_value(s), 2);
        cr_assert_eq(ks_sem_wait(s), 0);
        cr_assert_eq(ks_sem_timedwait(s, ks_deadline_after(KS_NSEC_PER_SEC)), 0);
        cr_assert_eq(ks_sem_timedwait(s, 0), ETIMEDOUT);
        cr_assert_eq(ks_sem_destroy(s), 0);
    }
    free(zs[1]);
}

Test(sem, null_is_einval_everywhere)
{
    cr_assert_eq(ks_sem_destroy(NULL), EINVAL);
    cr_assert_eq(ks_sem_wait(NULL), EINVAL);
    cr_assert_eq(ks_sem_trywait(NULL), EINVAL);
    cr_assert_eq(ks_sem_timedwait(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_sem_timedwait(NULL, 0), EINVAL);
    cr_assert_eq(ks_sem_post(NULL), EINVAL);
    cr_assert_eq(ks_sem_value(NULL), -EINVAL);
    cr_assert_eq(ks_sem_wait_slow(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_sem_post_slow(NULL), EINVAL);
}

Test(sem, timedwait_negative_deadline_is_einval_and_changes_nothing)
{
    const int64_t bad[] = {-1, INT64_MIN, ks_deadline_after(-1)};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++)
        for (unsigned v = 0; v < 2; v++) {
            ks_sem_t s, copy;
            cr_assert_eq(ks_sem_init(&s, v, 0), 0);
            memcpy(&copy, &s, sizeof s);
            struct ks_futex_stats a = kt_futex_stats();
            cr_assert_eq(ks_sem_timedwait(&s, bad[i]), EINVAL, "value %u, deadline %lld", v,
                         (long long)bad[i]);
            struct ks_futex_stats b = kt_futex_stats();
            cr_assert_eq(memcmp(&s, &copy, sizeof s), 0, "value %u: object changed", v);
            cr_assert_eq(b.waits, a.waits);
        }
}

Test(sem, trywait_on_zero_is_eagain)
{
    ks_sem_t s;
    cr_assert_eq(ks_sem_init(&s, 0, 0), 0);
    cr_assert_eq(ks_sem_trywait(&s), EAGAIN);
    cr_assert_eq(state_of(&s), 0u);
    cr_assert_eq(ks_sem_post(&s), 0);
    cr_assert_eq(ks_sem_trywait(&s), 0);
    cr_assert_eq(ks_sem_trywait(&s), EAGAIN);
    cr_assert_eq(ks_sem_value(&s), 0);
}

struct waiter {
    ks_sem_t *s;
    int64_t deadline; /* KS_FOREVER: ks_sem_wait */
    int ret;
    int64_t t1;
    int *done;        /* atomic counter, incremented when it returns */
};

static void *waiter_main(void *p)
{
    struct waiter *w = p;
    w->ret = w->deadline == KS_FOREVER ? ks_sem_wait(w->s) : ks_sem_timedwait(w->s, w->deadline);
    w->t1 = ks_now();
    if (w->done)
        __atomic_add_fetch(w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

Test(sem, timedwait_times_out_not_early, .timeout = 30)
{
    ks_sem_t s;
    cr_assert_eq(ks_sem_init(&s, 0, 0), 0);
    struct ks_futex_stats a = kt_futex_stats();
    cr_assert_eq(ks_sem_timedwait(&s, 0), ETIMEDOUT);
    cr_assert_eq(ks_sem_timedwait(&s, ks_now()), ETIMEDOUT);
    struct ks_futex_stats b = kt_futex_stats();
    cr_assert_eq(b.waits, a.waits, "a past deadline slept");
    cr_assert_eq(state_of(&s), 0u, "a past-deadline wait left state 0x%llx",
                 (unsigned long long)state_of(&s));

    const int64_t rel[] = {1 * KT_MS, 50 * KT_MS, 150 * KT_MS};
    for (unsigned k = 0; k < sizeof rel / sizeof rel[0]; k++) {
        int64_t deadline = ks_deadline_after(rel[k]);
        int r = ks_sem_timedwait(&s, deadline);
        int64_t now = ks_now();
        cr_assert_eq(r, ETIMEDOUT);
        cr_assert_geq(now, deadline, "timed out %lld ns early", (long long)(deadline - now));
        cr_assert_lt(now, deadline + KT_LATE_NS, "%lld ms late", (long long)((now - deadline) / KT_MS));
        cr_assert_eq(state_of(&s), 0u, "state 0x%llx after a timeout", (unsigned long long)state_of(&s));
    }
}

Test(sem, bounded_post_at_max_is_eoverflow)
{
    ks_sem_t s;
    cr_assert_eq(ks_sem_init_bounded(&s, 1, 3, 0), 0);
    cr_assert_eq(ks_sem_post(&s), 0);
    cr_assert_eq(ks_sem_post(&s), 0);
    cr_assert_eq(ks_sem_value(&s), 3);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(ks_sem_post(&s), EOVERFLOW);
        cr_assert_eq(ks_sem_value(&s), 3, "a refused post changed the value");
    }
    cr_assert_eq(ks_sem_wait(&s), 0);
    cr_assert_eq(ks_sem_post(&s), 0);
    cr_assert_eq(ks_sem_post(&s), EOVERFLOW);
    cr_assert_eq(state_of(&s), 3u);

    ks_sem_t one;
    cr_assert_eq(ks_sem_init_bounded(&one, 0, 1, KS_SHARED), 0);
    cr_assert_eq(ks_sem_post(&one), 0);
    cr_assert_eq(ks_sem_post(&one), EOVERFLOW);
    cr_assert_eq(ks_sem_value(&one), 1);
}

Test(sem, counting_post_at_value_max_is_eoverflow)
{
    ks_sem_t a, b = KS_SEM_INIT(KS_SEM_VALUE_MAX);
    cr_assert_eq(ks_sem_init(&a, KS_SEM_VALUE_MAX - 1, 0), 0);
    cr_assert_eq(ks_sem_post(&a), 0);
    ks_sem_t *ss[2] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        ks_sem_t *s = ss[i];
        cr_assert_eq(ks_sem_value(s), (int)KS_SEM_VALUE_MAX);
        cr_assert_eq(ks_sem_post(s), EOVERFLOW);
        cr_assert_eq(ks_sem_value(s), (int)KS_SEM_VALUE_MAX, "value wrapped");
        cr_assert_eq(state_of(s), (uint64_t)KS_SEM_VALUE_MAX, "WAKING or waiters touched");
        cr_assert_eq(ks_sem_trywait(s), 0);
        cr_assert_eq(ks_sem_value(s), (int)KS_SEM_VALUE_MAX - 1);
    }
}

Test(sem, destroy_with_waiters_is_ebusy, .timeout = 30)
{
    ks_sem_t s = KS_SEM_INIT(0);
    struct waiter w = {&s, KS_FOREVER, -1, 0, NULL};
    pthread_t t;
    kt_spawn(&t, waiter_main, &w);
    int64_t end = ks_now() + 10 * KS_NSEC_PER_SEC;
    while (waiters_of(&s) == 0 && ks_now() < end)
        sched_yield();
    cr_assert_eq(waiters_of(&s), 1u);
    cr_assert_eq(ks_sem_destroy(&s), EBUSY);
    cr_assert_eq(ks_sem_post(&s), 0);
    kt_join(t);
    cr_assert_eq(w.ret, 0);
    cr_assert_eq(state_of(&s), 0u);
    cr_assert_eq(ks_sem_destroy(&s), 0);
}

Test(sem, uncontended_ops_make_no_futex_calls)
{
    ks_sem_t s;
    cr_assert_eq(ks_sem_init(&s, 0, 0), 0);
    struct ks_futex_stats a = kt_futex_stats();
    for (int i = 0; i < 100000; i++) {
        cr_assert_eq(ks_sem_post(&s), 0);
        cr_assert_eq(ks_sem_post(&s), 0);
        cr_assert_eq(ks_sem_wait(&s), 0);
        cr_assert_eq(ks_sem_timedwait(&s, ks_deadline_after(KS_NSEC_PER_SEC)), 0);
        cr_assert_eq(ks_sem_trywait(&s), EAGAIN);
    }
    struct ks_futex_stats b = kt_futex_stats();
    cr_assert_eq(b.waits, a.waits);
    cr_assert_eq(b.wakes, a.wakes);
}

/* ---- permit limit ------------------------------------------------------------------ */

#define PERMITS 3

struct permits {
    ks_sem_t s;
    int in_use, max_seen, violations, errors, iters;
    kt_gate_t gate;
};

static void *permit_main(void *p)
{
    struct permits *pm = p;
    kt_gate_pass(&pm->gate);
    for (int i = 0; i < pm->iters; i++) {
        int r;
        switch (i % 4) {
        case 1:
            r = ks_sem_timedwait(&pm->s, ks_deadline_after(60 * KS_NSEC_PER_SEC));
            break;
        case 2:
            while ((r = ks_sem_trywait(&pm->s)) == EAGAIN)
                sched_yield();
            break;
        default:
            r = ks_sem_wait(&pm->s);
        }
        if (r) {
            __atomic_add_fetch(&pm->errors, 1, __ATOMIC_RELAXED);
            continue;
        }
        int n = __atomic_add_fetch(&pm->in_use, 1, __ATOMIC_RELAXED);
        if (n > PERMITS)
            __atomic_add_fetch(&pm->violations, 1, __ATOMIC_RELAXED);
        int m = __atomic_load_n(&pm->max_seen, __ATOMIC_RELAXED);
        while (n > m && !__atomic_compare_exchange_n(&pm->max_seen, &m, n, 1, __ATOMIC_RELAXED,
                                                     __ATOMIC_RELAXED))
            ;
        if (i % 16 == 0)
            sched_yield(); /* hold the permit across a reschedule */
        __atomic_sub_fetch(&pm->in_use, 1, __ATOMIC_RELAXED);
        if (ks_sem_post(&pm->s))
            __atomic_add_fetch(&pm->errors, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void run_permits(int nthreads, unsigned flags, int bounded)
{
    struct permits *pm = calloc(1, sizeof *pm);
    cr_assert_not_null(pm);
    if (bounded)
        cr_assert_eq(ks_sem_init_bounded(&pm->s, PERMITS, PERMITS, flags), 0);
    else
        cr_assert_eq(ks_sem_init(&pm->s, PERMITS, flags), 0);
    pm->iters = 100000 / nthreads;
    kt_gate_init(&pm->gate, (unsigned)nthreads);
    pthread_t t[KT_MAX_THREADS];
    for (int i = 0; i < nthreads; i++)
        kt_spawn(&t[i], permit_main, pm);
    for (int i = 0; i < nthreads; i++)
        kt_join(t[i]);
    cr_assert_eq(pm->errors, 0);
    cr_assert_eq(pm->violations, 0, "more than %d permits in use %d times (max %d)", PERMITS,
                 pm->violations, pm->max_seen);
    cr_assert_leq(pm->max_seen, PERMITS);
    cr_assert_geq(pm->max_seen, 1);
    cr_assert_eq(ks_sem_value(&pm->s), PERMITS, "permits lost or created");
    cr_assert_eq(waiters_of(&pm->s), 0u);
    cr_assert_eq(ks_sem_destroy(&pm->s), 0);
    kt_gate_destroy(&pm->gate);
    free(pm);
}

Test(sem, permit_limit_16_threads, .timeout = 120) { run_permits(16, 0, 0); }
Test(sem, permit_limit_64_threads, .timeout = 120) { run_permits(64, 0, 0); }
Test(sem, permit_limit_64_threads_bounded_shared_flag, .timeout = 120) { run_permits(64, KS_SHARED, 1); }

/* ---- sleepers get turns while the others keep going ----------------------------------- *
 * The limiter of bench section 3: threads that keep posting and waiting re-take units
 * ahead of sleepers (docs/sem.md).  Every thread must reach FAIR_OPS operations while
 * all of them keep looping (a wake policy that leaves sleepers asleep for as long as
 * the running threads keep going would hang here), and when they stop, the sleepers
 * left in wait must all be released with the permits intact.  A liveness guard, not a
 * proof of fairness: ks_sem barges, and sleepers get turns because the value keeps
 * coming back to 0, where a post wakes one.  No timing is asserted; the deadline only
 * turns a hang into a failure. */

#define FAIR_THREADS 16
#define FAIR_OPS 50

struct fair {
    ks_sem_t s;
    int reached, stop, errors, inside, violations;
    uint64_t posts, wakes, waits; /* atomic sums over the threads, added at their end */
    kt_gate_t gate;
};

static void *fair_main(void *p)
{
    struct fair *f = p;
    int n = 0;
    kt_gate_pass(&f->gate);
    struct ks_futex_stats a = kt_futex_stats();
    /* acquire: pairs with the release store of stop; orders nothing else. */
    while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
        if (ks_sem_wait(&f->s)) {
            __atomic_add_fetch(&f->errors, 1, __ATOMIC_RELAXED);
            break;
        }
        if (__atomic_add_fetch(&f->inside, 1, __ATOMIC_RELAXED) > PERMITS)
            __atomic_add_fetch(&f->violations, 1, __ATOMIC_RELAXED);
        for (volatile int k = 0; k < 200; k++)
            ;
        __atomic_sub_fetch(&f->inside, 1, __ATOMIC_RELAXED);
        if (ks_sem_post(&f->s))
            __atomic_add_fetch(&f->errors, 1, __ATOMIC_RELAXED);
        if (++n == FAIR_OPS)
            __atomic_add_fetch(&f->reached, 1, __ATOMIC_RELAXED);
    }
    struct ks_futex_stats b = kt_futex_stats();
    __atomic_add_fetch(&f->posts, (uint64_t)n, __ATOMIC_RELAXED);
    __atomic_add_fetch(&f->wakes, b.wakes - a.wakes, __ATOMIC_RELAXED);
    __atomic_add_fetch(&f->waits, b.waits - a.waits, __ATOMIC_RELAXED);
    return NULL;
}

/* The fair workload: FAIR_THREADS threads running fair_main on PERMITS
 * permits, started together; fair_stop stops and joins them and checks
 * what every run of it must keep (no error, never more than PERMITS
 * holders, the permits all back, no waiter left). */
static struct fair *fair_start(pthread_t *t)
{
    struct fair *f = calloc(1, sizeof *f);
    cr_assert_not_null(f);
    cr_assert_eq(ks_sem_init(&f->s, PERMITS, 0), 0);
    kt_gate_init(&f->gate, FAIR_THREADS);
    for (int i = 0; i < FAIR_THREADS; i++)
        kt_spawn(&t[i], fair_main, f);
    return f;
}

static void fair_stop(struct fair *f, const pthread_t *t)
{
    /* release: pairs with the acquire loads in fair_main. */
    __atomic_store_n(&f->stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < FAIR_THREADS; i++)
        kt_join(t[i]);
    cr_assert_eq(f->errors, 0);
    cr_assert_eq(f->violations, 0, "more than %d holders at once", PERMITS);
    cr_assert_eq(ks_sem_value(&f->s), PERMITS, "permits lost or created");
    cr_assert_eq(waiters_of(&f->s), 0u);
}

Test(sem, sleepers_get_turns_while_the_others_keep_going, .timeout = 120)
{
    pthread_t t[FAIR_THREADS];
    struct fair *f = fair_start(t);
    int64_t end = ks_now() + 60 * KS_NSEC_PER_SEC;
    while (__atomic_load_n(&f->reached, __ATOMIC_RELAXED) < FAIR_THREADS && ks_now() < end)
        usleep(1000);
    int reached = __atomic_load_n(&f->reached, __ATOMIC_RELAXED);
    fair_stop(f, t);
    cr_assert_eq(reached, FAIR_THREADS, "only %d of %d threads reached %d operations in 60 s", reached,
                 FAIR_THREADS, FAIR_OPS);
    kt_gate_destroy(&f->gate);
    free(f);
}

/* ---- every posted unit is consumed exactly once -------------------------------------- */

#define UNITS 120000

struct prodcons {
    ks_sem_t s;
    int per_producer, per_consumer;
    int errors;
    long consumed; /* atomic */
    kt_gate_t gate;
};

static void *producer_main(void *p)
{
    struct prodcons *pc = p;
    kt_gate_pass(&pc->gate);
    for (int i = 0; i < pc->per_producer; i++) {
        int r;
        while ((r = ks_sem_post(&pc->s)) == EOVERFLOW) /* bounded variant: full */
            sched_yield();
        if (r)
            __atomic_add_fetch(&pc->errors, 1, __ATOMIC_RELAXED);
        if (i % 512 == 0)
            sched_yield();
    }
    return NULL;
}

static void *consumer_main(void *p)
{
    struct prodcons *pc = p;
    kt_gate_pass(&pc->gate);
    for (int i = 0; i < pc->per_consumer; i++) {
        int r = (i % 3 == 0) ? ks_sem_timedwait(&pc->s, ks_deadline_after(60 * KS_NSEC_PER_SEC))
                             : ks_sem_wait(&pc->s);
        if (r)
            __atomic_add_fetch(&pc->errors, 1, __ATOMIC_RELAXED);
        else
            __atomic_add_fetch(&pc->consumed, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void run_prodcons(int producers, int consumers, unsigned max)
{
    struct prodcons *pc = calloc(1, sizeof *pc);
    cr_assert_not_null(pc);
    cr_assert_eq(max ? ks_sem_init_bounded(&pc->s, 0, max, 0) : ks_sem_init(&pc->s, 0, 0), 0);
    pc->per_producer = UNITS / producers;
    pc->per_consumer = UNITS / consumers;
    cr_assert_eq(pc->per_producer * producers, pc->per_consumer * consumers);
    kt_gate_init(&pc->gate, (unsigned)(producers + consumers));
    pthread_t t[KT_MAX_THREADS];
    int n = 0;
    for (int i = 0; i < consumers; i++)
        kt_spawn(&t[n++], consumer_main, pc);
    for (int i = 0; i < producers; i++)
        kt_spawn(&t[n++], producer_main, pc);
    for (int i = 0; i < n; i++)
        kt_join(t[i]);
    cr_assert_eq(pc->errors, 0);
    cr_assert_eq(pc->consumed, (long)UNITS);
    cr_assert_eq(ks_sem_value(&pc->s), 0, "%d units left over", ks_sem_value(&pc->s));
    cr_assert_eq(ks_sem_trywait(&pc->s), EAGAIN);
    cr_assert_eq(waiters_of(&pc->s), 0u);
    kt_gate_destroy(&pc->gate);
    free(pc);
}

Test(sem, every_unit_consumed_once_counting, .timeout = 120) { run_prodcons(4, 12, 0); }
Test(sem, every_unit_consumed_once_bounded, .timeout = 120) { run_prodcons(6, 6, 4); }
Test(sem, every_unit_consumed_once_many_consumers, .timeout = 120) { run_prodcons(2, 48, 0); }

/* ---- no lost wake-up ------------------------------------------------------------------ */

#define LW_WAITERS 32
#define LW_ROUNDS 8

struct poster {
    ks_sem_t *s;
    int n;
};

static void *poster_main(void *p)
{
    struct poster *po = p;
    for (int i = 0; i < po->n; i++)
        ks_sem_post(po->s);
    return NULL;
}

Test(sem, no_lost_wakeup_with_many_waiters, .timeout = 120)
{
    for (int round = 0; round < LW_ROUNDS; round++) {
        ks_sem_t s = KS_SEM_INIT(0);
        int done = 0;
        struct waiter w[LW_WAITERS];
        pthread_t t[LW_WAITERS];
        for (int i = 0; i < LW_WAITERS; i++) {
            w[i] = (struct waiter){&s, (i % 2) ? KS_FOREVER : ks_deadline_after(60 * KS_NSEC_PER_SEC),
                                   -1, 0, &done};
            kt_spawn(&t[i], waiter_main, &w[i]);
        }
        if (round % 2 == 0) {
            /* All asleep (registered) first, then 32 posts in a burst. */
            int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
            while (waiters_of(&s) != LW_WAITERS && ks_now() < end)
                kt_sleep_ns(100000);
            cr_assert_eq(waiters_of(&s), (uint32_t)LW_WAITERS, "round %d: only %u registered", round,
                         waiters_of(&s));
        }
        /* One thread posts 32 times (in odd rounds while waiters arrive). */
        struct poster po = {&s, LW_WAITERS};
        pthread_t pt;
        kt_spawn(&pt, poster_main, &po);
        kt_join(pt);
        int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
        while (__atomic_load_n(&done, __ATOMIC_ACQUIRE) != LW_WAITERS && ks_now() < end)
            kt_sleep_ns(KT_MS);
        int d = __atomic_load_n(&done, __ATOMIC_ACQUIRE);
        cr_assert_eq(d, LW_WAITERS, "round %d: %d of %d waiters returned; state 0x%llx", round, d,
                     LW_WAITERS, (unsigned long long)state_of(&s));
        for (int i = 0; i < LW_WAITERS; i++) {
            kt_join(t[i]);
            cr_assert_eq(w[i].ret, 0);
        }
        cr_assert_eq(state_of(&s), 0u, "round %d: state 0x%llx", round,
                     (unsigned long long)state_of(&s));
    }
}

/* ---- WAKING keeps wakes below posts ------------------------------------------------- */

#define WK_POSTERS 2
#define WK_WAITERS 4
#define WK_POSTS 16000 /* per poster, in bursts */
#define WK_BURST 8

struct wk {
    ks_sem_t s;
    uint64_t poster_wakes; /* atomic: summed futex wakes of the posting threads */
    int errors;
    kt_gate_t gate;
};

static void *wk_poster(void *p)
{
    struct wk *k = p;
    kt_gate_pass(&k->gate);
    struct ks_futex_stats a = kt_futex_stats();
    for (int i = 0; i < WK_POSTS; i++) {
        if (ks_sem_post(&k->s))
            __atomic_add_fetch(&k->errors, 1, __ATOMIC_RELAXED);
        /* Pause between bursts, so the waiters drain the value and sleep. */
        if (i % WK_BURST == WK_BURST - 1)
            kt_sleep_ns(20000);
    }
    struct ks_futex_stats b = kt_futex_stats();
    __atomic_add_fetch(&k->poster_wakes, b.wakes - a.wakes, __ATOMIC_RELAXED);
    return NULL;
}

static void *wk_waiter(void *p)
{
    struct wk *k = p;
    kt_gate_pass(&k->gate);
    for (int i = 0; i < WK_POSTS * WK_POSTERS / WK_WAITERS; i++)
        if (ks_sem_wait(&k->s))
            __atomic_add_fetch(&k->errors, 1, __ATOMIC_RELAXED);
    return NULL;
}

Test(sem, waking_keeps_futex_wakes_below_posts, .timeout = 120)
{
    struct wk *k = calloc(1, sizeof *k);
    cr_assert_not_null(k);
    cr_assert_eq(ks_sem_init(&k->s, 0, 0), 0);
    kt_gate_init(&k->gate, WK_POSTERS + WK_WAITERS);
    pthread_t t[WK_POSTERS + WK_WAITERS];
    for (int i = 0; i < WK_WAITERS; i++)
        kt_spawn(&t[i], wk_waiter, k);
    for (int i = 0; i < WK_POSTERS; i++)
        kt_spawn(&t[WK_WAITERS + i], wk_poster, k);
    for (int i = 0; i < WK_POSTERS + WK_WAITERS; i++)
        kt_join(t[i]);
    const uint64_t posts = (uint64_t)WK_POSTERS * WK_POSTS;
    cr_assert_eq(k->errors, 0);
    cr_assert_eq(state_of(&k->s), 0u);
    cr_log_info("%llu posts, %llu futex wakes from the posting threads", (unsigned long long)posts,
                (unsigned long long)k->poster_wakes);
    /* The sleepers were really woken by posts (the waking path ran)... */
    cr_assert_gt(k->poster_wakes, 0u, "no post ever had to wake a sleeper: the test lost its point");
    /* ... but not once per post: a post that finds a wake already in flight
     * (WAKING) does not make another.  A wake-per-post design would make about
     * one wake per post here, since the waiters sleep between bursts. */
    cr_assert_lt(k->poster_wakes, posts, "%llu wakes for %llu posts",
                 (unsigned long long)k->poster_wakes, (unsigned long long)posts);
    cr_assert_lt(k->poster_wakes, posts / 2, "%llu wakes for %llu posts (bursts of %d)",
                 (unsigned long long)k->poster_wakes, (unsigned long long)posts, WK_BURST);
    free(k);
}

/* ---- the watch: a waiter woken to find no unit does not hand the next
 * post a wake to make (src/sem.c, wait_core) ------------------------------------------ */

#define BG_MS 300 /* how long the threads keep going */

/* 16 threads loop { wait; work; post } over 3 permits: the threads that hold
 * permits post and take them straight back, so a waiter that a post woke
 * mostly finds the unit gone.  Without the watch it cleared WAKING and slept,
 * and the next post (0 -> 1 again) woke another, to the same end: 0.13
 * futex wakes per post here on the Intel Xeon guest (2 vCPUs; 0.15-0.2 in
 * the bench's limiter).  With it, the woken waiter keeps WAKING while it
 * watches, and posts make no wake: 0.004 there.  The bound asserted, 1 in
 * 20, leaves room for slower machines and sanitizer builds, and is under
 * half the old rate. */
Test(sem, woken_waiter_that_finds_no_unit_watches_instead_of_making_posts_wake, .timeout = 120)
{
    /* The workload of sleepers_get_turns_while_the_others_keep_going, for a
     * fixed time. */
    pthread_t t[FAIR_THREADS];
    struct fair *f = fair_start(t);
    kt_sleep_ns(BG_MS * KT_MS);
    fair_stop(f, t);
    const uint64_t posts = f->posts;
    cr_log_info("%llu posts: %llu futex wakes, %llu futex waits", (unsigned long long)posts,
                (unsigned long long)f->wakes, (unsigned long long)f->waits);
    /* The threads did contend: some waited in the kernel (else the bound
     * below would say nothing about the waking policy). */
    cr_assert_gt(f->waits, 0u, "no thread ever slept: the test lost its point");
    cr_assert_lt(f->wakes * 20, posts, "%llu futex wakes for %llu posts", (unsigned long long)f->wakes,
                 (unsigned long long)posts);
    kt_gate_destroy(&f->gate);
    free(f);
}

/* A post wakes the one sleeper and the posting thread takes the unit back
 * at once (before the sleeper runs), 40 times, each once the sleeper has
 * settled again.  A private sleeper that finds the unit gone watches: four
 * timed sleeps (20..160 us) before it sleeps untimed again, four futex
 * waits more than a round whose unit the sleeper got.  A process-shared one must not (a killed watcher
 * would leave WAKING set and posts would wake nobody for up to a second,
 * docs/sem.md): none more. */
#define ST_ROUNDS 40

struct st {
    ks_sem_t s;
    int stop, got, errors;
    uint64_t waits; /* the sleeper's futex waits, written once at its end */
};

static void *st_sleeper(void *p)
{
    struct st *t = p;
    struct ks_futex_stats a = kt_futex_stats();
    /* acquire: pairs with the release store of stop in st_run. */
    while (!__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE)) {
        if (ks_sem_wait(&t->s))
            __atomic_add_fetch(&t->errors, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&t->got, 1, __ATOMIC_RELAXED);
    }
    struct ks_futex_stats b = kt_futex_stats();
    t->waits = b.waits - a.waits;
    return NULL;
}

/* Returns the sleeper's futex waits beyond one per round (and one for the
 * last unit) per round whose unit was taken back before the sleeper got it;
 * *rounds says how many such rounds there were.  (On a loaded machine the
 * woken sleeper often preempts the poster and wins the unit.) */
static double st_run(unsigned flags, int *rounds)
{
    struct st *t = calloc(1, sizeof *t);
    cr_assert_not_null(t);
    cr_assert_eq(ks_sem_init(&t->s, 0, flags), 0);
    pthread_t th;
    kt_spawn(&th, st_sleeper, t);
    int stolen = 0;
    for (int i = 0; i <= ST_ROUNDS; i++) {
        /* Wait until the sleeper is registered with WAKING clear: it sleeps
         * untimed (or is about to), any watch of the round before is over,
         * however slowly a loaded machine runs it. */
        int64_t end = ks_now() + 10 * KT_SLOW * KS_NSEC_PER_SEC;
        uint64_t v;
        while (((v = state_of(&t->s)) >> 32) != 1 || (v & KS_SEM_WAKING)) {
            cr_assert_lt(ks_now(), end, "round %d: the sleeper never settled (state 0x%llx)", i,
                         (unsigned long long)v);
            kt_sleep_ns(KT_MS / 10);
        }
        kt_sleep_ns(KT_MS);
        if (i == ST_ROUNDS)
            break;
        cr_assert_eq(ks_sem_post(&t->s), 0);
        if (ks_sem_trywait(&t->s) == 0)
            stolen++;
    }
    /* release: pairs with the acquire load in st_sleeper. */
    __atomic_store_n(&t->stop, 1, __ATOMIC_RELEASE);
    cr_assert_eq(ks_sem_post(&t->s), 0); /* the sleeper's last unit */
    kt_join(th);
    cr_assert_eq(t->errors, 0);
    cr_assert_eq(t->got, ST_ROUNDS - stolen + 1, "units lost or made up");
    cr_assert_eq(ks_sem_value(&t->s), 0);
    cr_assert_eq(waiters_of(&t->s), 0u);
    *rounds = stolen;
    double per = stolen ? ((double)t->waits - (ST_ROUNDS + 1)) / stolen : 0;
    free(t);
    return per;
}

Test(sem, a_private_sleeper_watches_after_a_stolen_wake_a_shared_one_does_not, .timeout = 60)
{
    int rp, rs;
    double wp = st_run(KS_PRIVATE, &rp);
    double ws = st_run(KS_SHARED, &rs);
    cr_log_info("extra futex waits per round whose unit was taken back: private %.2f (%d of %d rounds), "
                "shared %.2f (%d)", wp, rp, ST_ROUNDS, ws, rs);
    cr_assert_geq(rp, 4, "the unit was taken back in only %d of %d rounds", rp, ST_ROUNDS);
    cr_assert_geq(rs, 4, "the unit was taken back in only %d of %d rounds", rs, ST_ROUNDS);
    cr_assert_geq(wp, 2.5, "private: %.2f extra futex waits per stolen wake: no watch", wp);
    cr_assert_leq(ws, 1.0, "shared: %.2f extra futex waits per stolen wake: it watched", ws);
}

/* ---- post, then the waiter frees it (glibc bug 12674, tst-sem11) --------------------- */

#define PF_ROUNDS 3000

struct pf {
    ks_sem_t *s;
    int round, done, errors;
};

static void *pf_waiter(void *p)
{
    struct pf *f = p;
    for (int i = 1; i <= PF_ROUNDS; i++) {
        while (__atomic_load_n(&f->round, __ATOMIC_ACQUIRE) != i)
            sched_yield();
        ks_sem_t *s = f->s;
        int r = (i % 3 == 0) ? ks_sem_timedwait(s, ks_deadline_after(60 * KS_NSEC_PER_SEC)) : ks_sem_wait(s);
        if (r)
            f->errors++;
        if (ks_sem_destroy(s))
            f->errors++;
        memset(s, 0xdd, sizeof *s);
        free(s);
        __atomic_store_n(&f->done, i, __ATOMIC_RELEASE);
    }
    return NULL;
}

Test(sem, waiter_may_free_right_after_post, .timeout = 120)
{
    struct pf f = {0};
    pthread_t t;
    kt_spawn(&t, pf_waiter, &f);
    int slept = 0;
    for (int i = 1; i <= PF_ROUNDS; i++) {
        ks_sem_t *s = malloc(sizeof *s);
        cr_assert_not_null(s);
        cr_assert_eq(ks_sem_init(s, 0, (i & 2) ? KS_SHARED : 0), 0);
        f.s = s;
        __atomic_store_n(&f.round, i, __ATOMIC_RELEASE);
        if (i % 4 != 0) {
            /* Mostly wait until it is registered, so post takes the waking path. */
            int64_t end = ks_now() + 200 * KT_MS;
            while (waiters_of(s) == 0 && ks_now() < end)
                sched_yield();
            slept += waiters_of(s) != 0;
        }
        /* From here the waiter may return, destroy and free s under us. */
        cr_assert_eq(ks_sem_post(s), 0);
        while (__atomic_load_n(&f.done, __ATOMIC_ACQUIRE) != i)
            sched_yield();
    }
    kt_join(t);
    cr_assert_eq(f.errors, 0);
    cr_assert_gt(slept, PF_ROUNDS / 4, "the waiter rarely registered (%d): the test lost its point", slept);
}

/* ---- timed-out waiters leave it working -------------------------------------------- */

Test(sem, timed_out_waiters_leave_it_working, .timeout = 60)
{
    enum { N = 8 };
    ks_sem_t s = KS_SEM_INIT(0);
    struct waiter w[N];
    pthread_t t[N];
    int64_t deadline = ks_deadline_after(30 * KT_MS);
    for (int i = 0; i < N; i++) {
        w[i] = (struct waiter){&s, deadline, -1, 0, NULL};
        kt_spawn(&t[i], waiter_main, &w[i]);
    }
    for (int i = 0; i < N; i++) {
        kt_join(t[i]);
        cr_assert_eq(w[i].ret, ETIMEDOUT);
        cr_assert_geq(w[i].t1, deadline);
    }
    cr_assert_eq(waiters_of(&s), 0u, "%u waiters still registered", waiters_of(&s));
    cr_assert_eq(state_of(&s), 0u, "state 0x%llx", (unsigned long long)state_of(&s));
    /* It still works: a post is taken by a later wait, and a later sleeper is woken. */
    cr_assert_eq(ks_sem_post(&s), 0);
    cr_assert_eq(ks_sem_wait(&s), 0);
    int done = 0;
    struct waiter w2 = {&s, ks_deadline_after(20 * KS_NSEC_PER_SEC), -1, 0, &done};
    kt_spawn(&t[0], waiter_main, &w2);
    int64_t end = ks_now() + 10 * KS_NSEC_PER_SEC;
    while (waiters_of(&s) == 0 && ks_now() < end)
        sched_yield();
    cr_assert_eq(ks_sem_post(&s), 0);
    kt_join(t[0]);
    cr_assert_eq(w2.ret, 0);
    cr_assert_eq(state_of(&s), 0u);
    cr_assert_eq(ks_sem_destroy(&s), 0);
}

/* Timeouts racing with posts: nothing is lost or duplicated, and the waiter
 * count returns to zero. */
struct racer {
    ks_sem_t *s;
    int rounds;
    int got, timeouts, errors;
};

static void *racer_main(void *p)
{
    struct racer *r = p;
    for (int i = 0; i < r->rounds; i++) {
        int e = ks_sem_timedwait(r->s, ks_deadline_after((1 + i % 3) * KT_MS));
        if (e == 0)
            r->got++;
        else if (e == ETIMEDOUT)
            r->timeouts++;
        else
            r->errors++;
    }
    return NULL;
}

Test(sem, timeouts_racing_posts_lose_nothing, .timeout = 120)
{
    enum { N = 8, ROUNDS = 150 };
    ks_sem_t s = KS_SEM_INIT(0);
    struct racer r[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        r[i] = (struct racer){&s, ROUNDS, 0, 0, 0};
        kt_spawn(&t[i], racer_main, &r[i]);
    }
    long posts = 0;
    for (int i = 0; i < 400; i++) {
        for (int k = 0; k <= i % 3; k++) {
            cr_assert_eq(ks_sem_post(&s), 0);
            posts++;
        }
        kt_sleep_ns((i % 5) * 300000L);
    }
    int got = 0, timeouts = 0;
    for (int i = 0; i < N; i++) {
        kt_join(t[i]);
        cr_assert_eq(r[i].errors, 0);
        got += r[i].got;
        timeouts += r[i].timeouts;
    }
    cr_assert_eq(got + timeouts, N * ROUNDS);
    cr_assert_eq(waiters_of(&s), 0u, "%u waiters left registered", waiters_of(&s));
    cr_assert_eq(state_of(&s) & KS_SEM_WAKING, 0u, "WAKING left set with no waiters");
    cr_assert_eq((long)ks_sem_value(&s), posts - got, "posts %ld, taken %d, value %d", posts, got,
                 ks_sem_value(&s));
    cr_assert_gt(timeouts, 0);
    cr_assert_gt(got, 0);
}

/* ---- signals ------------------------------------------------------------------------ */

struct sigwaiter {
    struct waiter w;
    int done;
};

static void *sigwaiter_main(void *p)
{
    struct sigwaiter *sw = p;
    waiter_main(&sw->w);
    __atomic_store_n(&sw->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

Test(sem, signals_do_not_break_wait_or_timedwait, .timeout = 30)
{
    kt_install_eintr_handler(SIGUSR1);
    ks_sem_t s = KS_SEM_INIT(0);
    struct sigwaiter a = {.w = {&s, ks_deadline_after(200 * KT_MS), -1, 0, NULL}};
    int seen0 = kt_signals_seen;
    pthread_t t;
    kt_spawn(&t, sigwaiter_main, &a);
    kt_pummel(t, SIGUSR1, &a.done, 2 * KT_MS);
    kt_join(t);
    cr_assert_gt(kt_signals_seen, seen0);
    cr_assert_eq(a.w.ret, ETIMEDOUT, "timedwait returned %d under signals", a.w.ret);
    cr_assert_geq(a.w.t1, a.w.deadline, "timed out early");
    cr_assert_eq(state_of(&s), 0u);

    struct sigwaiter b = {.w = {&s, KS_FOREVER, -1, 0, NULL}};
    kt_spawn(&t, sigwaiter_main, &b);
    int64_t end = ks_now() + 150 * KT_MS;
    while (ks_now() < end) {
        pthread_kill(t, SIGUSR1);
        kt_sleep_ns(2 * KT_MS);
    }
    cr_assert_eq(__atomic_load_n(&b.done, __ATOMIC_ACQUIRE), 0, "wait returned with value 0");
    int64_t t_post = ks_now();
    cr_assert_eq(ks_sem_post(&s), 0);
    kt_join(t);
    cr_assert_eq(b.w.ret, 0);
    cr_assert_geq(b.w.t1, t_post);
    cr_assert_eq(state_of(&s), 0u);
}

/* ---- process-shared across fork() ----------------------------------------------------- */

struct shm_sems {
    ks_sem_t a, b; /* a: parent -> child, b: child -> parent */
};

static int wait_registered(ks_sem_t *s, int64_t timeout_ns)
{
    int64_t end = ks_now() + timeout_ns;
    while (waiters_of(s) == 0)
        if (ks_now() > end)
            return 0;
        else
            kt_sleep_ns(100000);
    return 1;
}

static int child_posts_after_parent_sleeps(void *p)
{
    struct shm_sems *ss = p;
    if (!wait_registered(&ss->b, 10 * KS_NSEC_PER_SEC))
        return 1;
    return ks_sem_post(&ss->b) == 0 ? 0 : 2;
}

static int child_waits(void *p)
{
    struct shm_sems *ss = p;
    int r = ks_sem_timedwait(&ss->a, ks_deadline_after(20 * KS_NSEC_PER_SEC));
    return r == 0 ? 0 : 3;
}

static int child_ping_pong(void *p)
{
    struct shm_sems *ss = p;
    for (int i = 0; i < 2000; i++) {
        if (ks_sem_timedwait(&ss->a, ks_deadline_after(20 * KS_NSEC_PER_SEC)))
            return 4;
        if (ks_sem_post(&ss->b))
            return 5;
    }
    return 0;
}

Test(sem, process_shared_across_fork, .timeout = 120)
{
    struct shm_sems *ss = kt_shared_alloc(sizeof *ss);
    cr_assert_eq(ks_sem_init(&ss->a, 0, KS_SHARED), 0);
    cr_assert_eq(ks_sem_init(&ss->b, 0, KS_SHARED), 0);

    /* The parent waits (asleep), the child posts. */
    pid_t pid = kt_fork(child_posts_after_parent_sleeps, ss);
    cr_assert_eq(ks_sem_timedwait(&ss->b, ks_deadline_after(20 * KS_NSEC_PER_SEC)), 0,
                 "the child's post never woke the parent");
    kt_wait_child(pid);

    /* The child waits (asleep), the parent posts. */
    pid = kt_fork(child_waits, ss);
    cr_assert(wait_registered(&ss->a, 10 * KS_NSEC_PER_SEC), "the child never waited");
    cr_assert(kt_wait_child_in_futex(pid, 10 * KS_NSEC_PER_SEC));
    /* the post's wake must reach the child (a shared sleep would also end
     * on its own within a second: only the kernel's count tells) */
    struct ks_futex_stats st0 = kt_futex_stats();
    cr_assert_eq(ks_sem_post(&ss->a), 0);
    cr_assert_eq(kt_futex_stats().woken - st0.woken, 1u, "the post's wake did not reach the child");
    kt_wait_child(pid);

    /* Ping-pong. */
    pid = kt_fork(child_ping_pong, ss);
    for (int i = 0; i < 2000; i++) {
        cr_assert_eq(ks_sem_post(&ss->a), 0);
        cr_assert_eq(ks_sem_timedwait(&ss->b, ks_deadline_after(20 * KS_NSEC_PER_SEC)), 0,
                     "round %d", i);
    }
    kt_wait_child(pid);
    cr_assert_eq(state_of(&ss->a), 0u);
    cr_assert_eq(state_of(&ss->b), 0u);
    kt_shared_free(ss, sizeof *ss);
}

/* ---- post touches nothing after the releasing CAS (hardware watchpoint) ---------- */

static ks_sem_t *watched_sem;
static uint64_t watched_value;

static int sem_released(void)
{
    return (__atomic_load_n(&watched_sem->state, __ATOMIC_RELAXED) & KS_SEM_VALUE_MASK) !=
           watched_value;
}

Test(sem, post_touches_nothing_after_release)
{
    _Alignas(16) static ks_sem_t s;
    watched_sem = &s;
    struct kt_watch w = {.n = 0};
    _Static_assert(sizeof(ks_sem_t) == 16, "two 8-byte watches cover the semaphore");
    if (kt_watch_add(&w, &s.state, 8) != 0 || kt_watch_add(&w, &s.max, 8) != 0)
        cr_skip_test("no hardware watchpoints here (perf_event_open: %s)", strerror(errno));

    /* Calibration: post, then read the flags (glibc bug 12674's pattern). */
    cr_assert_eq(ks_sem_init(&s, 0, 0), 0);
    watched_value = 0;
    kt_watch_begin(&w, sem_released);
    __atomic_store_n(&s.state, 1, __ATOMIC_RELEASE);
    (void)*(volatile uint32_t *)&s.flags;
    kt_watch_end(&w);
    cr_assert_eq(w.hits, 2, "the watchpoint saw %d accesses, not 2", w.hits);
    cr_assert_eq(w.after, 2, "the watchpoint missed an access after release");

    struct {
        unsigned value, max;   /* max 0: counting */
        uint64_t waiters, waking;
    } cases[] = {
        {0, 0, 0, 0},           /* fast path */
        {0, 0, 1, 0},           /* a sleeper: post must wake */
        {0, 0, 3, KS_SEM_WAKING}, /* a wake already in flight */
        {7, 0, 2, 0},
        {1, 3, 1, 0},           /* bounded, below max */
        {0, 1, 1, 0},
    };
    for (int f = 0; f < 2; f++)
        for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            if (cases[i].max)
                cr_assert_eq(ks_sem_init_bounded(&s, cases[i].value, cases[i].max, f ? KS_SHARED : 0), 0);
            else
                cr_assert_eq(ks_sem_init(&s, cases[i].value, f ? KS_SHARED : 0), 0);
            uint64_t before = cases[i].value | cases[i].waking | (cases[i].waiters << 32);
            __atomic_store_n(&s.state, before, __ATOMIC_RELAXED);
            watched_value = cases[i].value;
            kt_watch_begin(&w, sem_released);
            int r = ks_sem_post(&s);
            kt_watch_end(&w);
            uint64_t after = state_of(&s);
            cr_assert_eq(r, 0, "case %u: post returned %d", i, r);
            cr_assert_geq(w.hits, 1, "the watchpoint saw nothing");
            cr_assert_leq(w.after, 1,
                          "case %u (flags %d): post accessed the semaphore %d more times after "
                          "the releasing atomic",
                          i, f, w.after - 1);
            cr_assert_eq(after & KS_SEM_VALUE_MASK, (uint64_t)cases[i].value + 1);
            cr_assert_eq(after >> 32, cases[i].waiters);
            /* Taking the value from 0 to 1 with sleepers must leave a wake in
             * flight (sent by this post, or already on its way). */
            if (cases[i].waiters && cases[i].value == 0)
                cr_assert(after & KS_SEM_WAKING, "case %u: a 0 -> 1 post to sleepers sent no wake", i);
        }

    /* At the bound with a sleeper: EOVERFLOW, no release, nothing changes. */
    cr_assert_eq(ks_sem_init_bounded(&s, 2, 2, 0), 0);
    __atomic_store_n(&s.state, 2 | KS_SEM_ONE_WAITER, __ATOMIC_RELAXED);
    watched_value = 2;
    kt_watch_begin(&w, sem_released);
    int r = ks_sem_post(&s);
    kt_watch_end(&w);
    cr_assert_eq(r, EOVERFLOW);
    cr_assert_eq(w.after, 0);
    cr_assert_eq(state_of(&s), 2 | KS_SEM_ONE_WAITER);
    __atomic_store_n(&s.state, 0, __ATOMIC_RELAXED); /* the simulated waiter leaves */
    kt_watch_close(&w);
}

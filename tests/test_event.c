/* tests/test_event.c - ks_event: API contract, timeouts, no early release,
 * set-then-clear pulses that must not be lost (docs/pitfalls.md item 30), the
 * syscall economy of set/is_set, free right after the waits return, and
 * process-shared use across fork(). */
#include "helpers.h"

static uint32_t word_of(ks_event_t *e) { return __atomic_load_n(&e->word, __ATOMIC_RELAXED); }

/* ---- API contract ------------------------------------------------------------ */

static ks_event_t static_zero; /* all zeros, never initialised */

Test(event, initial_state_is_clear, .timeout = 30)
{
    ks_event_t a = KS_EVENT_INIT, b, c;
    ks_event_t *heap = calloc(1, sizeof *heap);
    cr_assert_not_null(heap);
    memset(&b, 0xa5, sizeof b);
    cr_assert_eq(ks_event_init(&b, 0), 0);
    cr_assert_eq(b.flags, 0u);
    memset(&c, 0xa5, sizeof c);
    cr_assert_eq(ks_event_init(&c, KS_SHARED), 0);
    cr_assert_eq(c.flags, KS_SHARED);
    ks_event_t *es[] = {&a, &static_zero, heap, &b, &c};
    for (unsigned i = 0; i < sizeof es / sizeof es[0]; i++) {
        ks_event_t *e = es[i];
        cr_assert_eq(ks_event_is_set(e), 0, "event %u starts set", i);
        cr_assert_eq(word_of(e), 0u, "event %u: word 0x%x", i, word_of(e));
        cr_assert_eq(ks_event_timedwait(e, 0), ETIMEDOUT, "event %u: a clear event released a wait", i);
        cr_assert_eq(ks_event_set(e), 0);
        cr_assert_eq(ks_event_is_set(e), 1);
        cr_assert_eq(ks_event_wait(e), 0);
        cr_assert_eq(ks_event_destroy(e), 0);
    }
    free(heap);
}

Test(event, set_is_set_clear, .timeout = 30)
{
    ks_event_t e = KS_EVENT_INIT;
    for (int round = 0; round < 3; round++) {
        cr_assert_eq(ks_event_is_set(&e), 0);
        cr_assert_eq(ks_event_set(&e), 0);
        cr_assert_eq(ks_event_is_set(&e), 1);
        cr_assert_eq(ks_event_set(&e), 0); /* idempotent */
        cr_assert_eq(ks_event_is_set(&e), 1);
        /* Manual reset: waits do not consume it. */
        cr_assert_eq(ks_event_wait(&e), 0);
        cr_assert_eq(ks_event_timedwait(&e, ks_deadline_after(KS_NSEC_PER_SEC)), 0);
        cr_assert_eq(ks_event_is_set(&e), 1, "a wait consumed the event");
        cr_assert_eq(ks_event_clear(&e), 0);
        cr_assert_eq(ks_event_is_set(&e), 0);
        cr_assert_eq(ks_event_clear(&e), 0); /* idempotent */
        cr_assert_eq(ks_event_is_set(&e), 0);
        cr_assert_eq(ks_event_timedwait(&e, 0), ETIMEDOUT, "a cleared event released a wait");
    }
    cr_assert_eq(ks_event_destroy(&e), 0);
}

Test(event, wait_on_set_event_returns_at_once_without_sleeping, .timeout = 30)
{
    for (int f = 0; f < 2; f++) {
        ks_event_t e;
        cr_assert_eq(ks_event_init(&e, f ? KS_SHARED : 0), 0);
        cr_assert_eq(ks_event_set(&e), 0);
        struct ks_futex_stats a = kt_futex_stats();
        int64_t t0 = ks_now();
        for (int i = 0; i < 10000; i++) {
            cr_assert_eq(ks_event_wait(&e), 0);
            cr_assert_eq(ks_event_timedwait(&e, KS_FOREVER), 0);
            cr_assert_eq(ks_event_timedwait(&e, ks_deadline_after(KS_NSEC_PER_SEC)), 0);
            /* A deadline already past still reports a set event as set. */
            cr_assert_eq(ks_event_timedwait(&e, 0), 0);
        }
        int64_t took = ks_now() - t0;
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.waits, a.waits, "%llu futex waits on a set event",
                     (unsigned long long)(b.waits - a.waits));
        cr_assert_lt(took, 1000 * KT_MS * KT_SLOW, "40000 waits on a set event took %lld ms",
                     (long long)(took / KT_MS));
    }
}

Test(event, null_is_einval_everywhere, .timeout = 30)
{
    cr_assert_eq(ks_event_init(NULL, 0), EINVAL);
    cr_assert_eq(ks_event_init(NULL, KS_SHARED), EINVAL);
    cr_assert_eq(ks_event_destroy(NULL), EINVAL);
    cr_assert_eq(ks_event_set(NULL), EINVAL);
    cr_assert_eq(ks_event_clear(NULL), EINVAL);
    cr_assert_eq(ks_event_is_set(NULL), 0);
    cr_assert_eq(ks_event_wait(NULL), EINVAL);
    cr_assert_eq(ks_event_timedwait(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_event_timedwait(NULL, 0), EINVAL);
    cr_assert_eq(ks_event_timedwait(NULL, -1), EINVAL);
}

Test(event, init_unknown_flags_is_einval_and_changes_nothing, .timeout = 30)
{
    const unsigned bad[] = {2u, 4u, 0x80u, 0x80000000u, ~0u, KS_SHARED | 2u};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ks_event_t e, copy;
        memset(&e, 0x5a, sizeof e);
        memcpy(&copy, &e, sizeof e);
        cr_assert_eq(ks_event_init(&e, bad[i]), EINVAL, "flags 0x%x accepted", bad[i]);
        cr_assert_eq(memcmp(&e, &copy, sizeof e), 0, "flags 0x%x: object changed", bad[i]);
    }
    /* A live, set event is not reset by a refused init. */
    ks_event_t e = KS_EVENT_INIT, copy;
    cr_assert_eq(ks_event_set(&e), 0);
    memcpy(&copy, &e, sizeof e);
    cr_assert_eq(ks_event_init(&e, 16u), EINVAL);
    cr_assert_eq(memcmp(&e, &copy, sizeof e), 0);
    cr_assert_eq(ks_event_is_set(&e), 1);
}

Test(event, timedwait_negative_deadline_is_einval_and_changes_nothing, .timeout = 30)
{
    const int64_t bad[] = {-1, -KS_NSEC_PER_SEC, INT64_MIN, ks_deadline_after(-1)};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++)
        for (int set = 0; set < 2; set++) {
            ks_event_t e = KS_EVENT_INIT, copy;
            if (set)
                cr_assert_eq(ks_event_set(&e), 0);
            memcpy(&copy, &e, sizeof e);
            struct ks_futex_stats a = kt_futex_stats();
            cr_assert_eq(ks_event_timedwait(&e, bad[i]), EINVAL, "%s event, deadline %lld",
                         set ? "set" : "clear", (long long)bad[i]);
            struct ks_futex_stats b = kt_futex_stats();
            cr_assert_eq(memcmp(&e, &copy, sizeof e), 0, "%s event changed", set ? "set" : "clear");
            cr_assert_eq(b.waits, a.waits);
        }
}

/* ---- timeouts ------------------------------------------------------------------- */

Test(event, timedwait_times_out_not_early_not_late, .timeout = 30)
{
    for (int f = 0; f < 2; f++) {
        ks_event_t e;
        cr_assert_eq(ks_event_init(&e, f ? KS_SHARED : 0), 0);

        /* A deadline already past: ETIMEDOUT at once, without sleeping. */
        struct ks_futex_stats a = kt_futex_stats();
        cr_assert_eq(ks_event_timedwait(&e, 0), ETIMEDOUT);
        cr_assert_eq(ks_event_timedwait(&e, ks_now()), ETIMEDOUT);
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.waits, a.waits, "a past deadline slept");

        const int64_t rel[] = {1 * KT_MS, 50 * KT_MS, 150 * KT_MS};
        for (unsigned k = 0; k < sizeof rel / sizeof rel[0]; k++) {
            int64_t deadline = ks_deadline_after(rel[k]);
            int r = ks_event_timedwait(&e, deadline);
            int64_t now = ks_now();
            cr_assert_eq(r, ETIMEDOUT, "timedwait returned %d", r);
            cr_assert_geq(now, deadline, "timed out %lld ns early", (long long)(deadline - now));
            cr_assert_lt(now, deadline + KT_LATE_NS, "%lld ms late",
                         (long long)((now - deadline) / KT_MS));
            cr_assert_eq(ks_event_is_set(&e), 0);
        }
        /* Still a working event. */
        cr_assert_eq(ks_event_set(&e), 0);
        cr_assert_eq(ks_event_timedwait(&e, ks_deadline_after(KS_NSEC_PER_SEC)), 0);
    }
}

/* ---- nobody passes before set() -------------------------------------------------- */

#define EW_WAITERS 32

struct ewaiter {
    ks_event_t *e;
    int64_t deadline; /* KS_FOREVER: ks_event_wait */
    pid_t tid;
    int ret;
    int64_t t1;
    const int *payload; /* written (plainly) before set(); read after the wait */
    int seen;
    int *done; /* atomic counter, incremented when it returns */
};

static void *ewaiter_main(void *p)
{
    struct ewaiter *w = p;
    __atomic_store_n(&w->tid, kt_gettid(), __ATOMIC_RELEASE);
    w->ret = w->deadline == KS_FOREVER ? ks_event_wait(w->e) : ks_event_timedwait(w->e, w->deadline);
    w->t1 = ks_now();
    if (w->payload)
        w->seen = *w->payload;
    if (w->done)
        __atomic_add_fetch(w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static pid_t ewaiter_tid(struct ewaiter *w)
{
    pid_t t;
    while (!(t = __atomic_load_n(&w->tid, __ATOMIC_ACQUIRE)))
        sched_yield();
    return t;
}

Test(event, no_waiter_passes_before_set, .timeout = 60)
{
    for (int f = 0; f < 2; f++) {
        ks_event_t e;
        cr_assert_eq(ks_event_init(&e, f ? KS_SHARED : 0), 0);
        int payload = 0, done = 0;
        struct ewaiter w[EW_WAITERS];
        pthread_t t[EW_WAITERS];
        for (int i = 0; i < EW_WAITERS; i++) {
            w[i] = (struct ewaiter){.e = &e,
                                    .deadline = (i % 2) ? KS_FOREVER
                                                        : ks_deadline_after(60 * KS_NSEC_PER_SEC),
                                    .ret = -1,
                                    .payload = &payload,
                                    .seen = -1,
                                    .done = &done};
            kt_spawn(&t[i], ewaiter_main, &w[i]);
        }
        for (int i = 0; i < EW_WAITERS; i++)
            cr_assert(kt_wait_in_futex(ewaiter_tid(&w[i]), 20 * KS_NSEC_PER_SEC),
                      "waiter %d never went to sleep", i);
        kt_sleep_ns(20 * KT_MS);
        cr_assert_eq(__atomic_load_n(&done, __ATOMIC_ACQUIRE), 0,
                     "%d waiters returned from a clear event", __atomic_load_n(&done, __ATOMIC_ACQUIRE));
        cr_assert(word_of(&e) & KS_EVENT_SLEEPERS, "sleepers did not announce themselves: 0x%x",
                  word_of(&e));
        payload = 42; /* published by set()'s release */
        int64_t t_set = ks_now();
        struct ks_futex_stats a = kt_futex_stats();
        cr_assert_eq(ks_event_set(&e), 0);
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.wakes - a.wakes, 1u, "set() made %llu futex wakes for %d sleepers",
                     (unsigned long long)(b.wakes - a.wakes), EW_WAITERS);
        for (int i = 0; i < EW_WAITERS; i++) {
            kt_join(t[i]);
            cr_assert_eq(w[i].ret, 0, "waiter %d returned %d", i, w[i].ret);
            cr_assert_geq(w[i].t1, t_set, "waiter %d returned before set()", i);
            cr_assert_eq(w[i].seen, 42, "waiter %d did not see what the setter wrote", i);
        }
        cr_assert_eq(ks_event_is_set(&e), 1);
        cr_assert_eq(word_of(&e) & KS_EVENT_SLEEPERS, 0u, "SLEEPERS left set after all woke");
    }
}

/* ---- a set-then-clear pulse releases every thread that was waiting (item 30) ------ */

#define PULSE_WAITERS 4
#define PULSE_ROUNDS 150

struct pulse {
    ks_event_t e;
    int round;    /* atomic: published by the main thread */
    int entered;  /* atomic: waiters about to call wait, cumulative */
    int returned; /* atomic: cumulative */
    int errors;   /* atomic */
    pid_t tid[PULSE_WAITERS];
    int idx; /* atomic: hands out indices */
};

static void *pulse_waiter(void *p)
{
    struct pulse *pu = p;
    int me = __atomic_fetch_add(&pu->idx, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&pu->tid[me], kt_gettid(), __ATOMIC_RELEASE);
    for (int r = 1; r <= PULSE_ROUNDS; r++) {
        while (__atomic_load_n(&pu->round, __ATOMIC_ACQUIRE) != r)
            sched_yield();
        __atomic_add_fetch(&pu->entered, 1, __ATOMIC_RELEASE);
        /* From here until the futex sleep there is no other futex call. */
        int ret = (r + me) % 2 ? ks_event_wait(&pu->e)
                               : ks_event_timedwait(&pu->e, ks_deadline_after(60 * KS_NSEC_PER_SEC));
        if (ret != 0)
            __atomic_add_fetch(&pu->errors, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&pu->returned, 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

Test(event, set_then_clear_pulse_releases_every_waiter, .timeout = 120)
{
    struct pulse *pu = calloc(1, sizeof *pu);
    cr_assert_not_null(pu);
    pthread_t t[PULSE_WAITERS];
    for (int i = 0; i < PULSE_WAITERS; i++)
        kt_spawn(&t[i], pulse_waiter, pu);
    for (int i = 0; i < PULSE_WAITERS; i++)
        while (!__atomic_load_n(&pu->tid[i], __ATOMIC_ACQUIRE))
            sched_yield();
    for (int r = 1; r <= PULSE_ROUNDS; r++) {
        /* The waiters are all parked on `round`: the event is ours to re-init. */
        cr_assert_eq(ks_event_init(&pu->e, (r % 3 == 0) ? KS_SHARED : 0), 0);
        __atomic_store_n(&pu->round, r, __ATOMIC_RELEASE);
        int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
        while (__atomic_load_n(&pu->entered, __ATOMIC_ACQUIRE) != r * PULSE_WAITERS && ks_now() < end)
            sched_yield();
        cr_assert_eq(__atomic_load_n(&pu->entered, __ATOMIC_ACQUIRE), r * PULSE_WAITERS);
        /* Every waiter is inside wait and asleep on the event. */
        for (int i = 0; i < PULSE_WAITERS; i++)
            cr_assert(kt_wait_in_futex(pu->tid[i], 20 * KS_NSEC_PER_SEC), "round %d: waiter %d never slept",
                      r, i);
        cr_assert_eq(__atomic_load_n(&pu->returned, __ATOMIC_ACQUIRE), (r - 1) * PULSE_WAITERS,
                     "round %d: a waiter passed a clear event", r);
        /* The pulse: set and at once clear (twice in some rounds). */
        cr_assert_eq(ks_event_set(&pu->e), 0);
        cr_assert_eq(ks_event_clear(&pu->e), 0);
        if (r % 4 == 0) {
            cr_assert_eq(ks_event_set(&pu->e), 0);
            cr_assert_eq(ks_event_clear(&pu->e), 0);
        }
        end = ks_now() + 20 * KS_NSEC_PER_SEC;
        while (__atomic_load_n(&pu->returned, __ATOMIC_ACQUIRE) != r * PULSE_WAITERS && ks_now() < end)
            kt_sleep_ns(50000);
        int got = __atomic_load_n(&pu->returned, __ATOMIC_ACQUIRE) - (r - 1) * PULSE_WAITERS;
        cr_assert_eq(got, PULSE_WAITERS, "round %d: the pulse released only %d of %d waiters (word 0x%x)",
                     r, got, PULSE_WAITERS, word_of(&pu->e));
        cr_assert_eq(ks_event_is_set(&pu->e), 0);
    }
    for (int i = 0; i < PULSE_WAITERS; i++)
        kt_join(t[i]);
    cr_assert_eq(pu->errors, 0);
    /* After the pulse the event is clear: a new waiter blocks. */
    cr_assert_eq(ks_event_timedwait(&pu->e, ks_deadline_after(10 * KT_MS)), ETIMEDOUT);
    free(pu);
}

/* ---- syscall economy ------------------------------------------------------------- */

Test(event, set_on_set_event_and_is_set_make_no_futex_calls, .timeout = 30)
{
    for (int f = 0; f < 2; f++) {
        ks_event_t e;
        cr_assert_eq(ks_event_init(&e, f ? KS_SHARED : 0), 0);
        cr_assert_eq(ks_event_set(&e), 0);
        uint32_t w0 = word_of(&e);
        struct ks_futex_stats a = kt_futex_stats();
        for (int i = 0; i < 100000; i++) {
            cr_assert_eq(ks_event_set(&e), 0);
            cr_assert_eq(ks_event_is_set(&e), 1);
        }
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.wakes, a.wakes, "%llu futex wakes", (unsigned long long)(b.wakes - a.wakes));
        cr_assert_eq(b.waits, a.waits);
        cr_assert_eq(word_of(&e), w0, "set on a set event changed the word 0x%x -> 0x%x", w0,
                     word_of(&e));
        cr_assert_eq(ks_event_clear(&e), 0);
        a = kt_futex_stats();
        for (int i = 0; i < 100000; i++)
            cr_assert_eq(ks_event_is_set(&e), 0);
        b = kt_futex_stats();
        cr_assert_eq(b.wakes, a.wakes);
        cr_assert_eq(b.waits, a.waits);
    }
}

Test(event, set_with_nobody_waiting_makes_no_futex_call, .timeout = 30)
{
    for (int f = 0; f < 2; f++) {
        ks_event_t e;
        cr_assert_eq(ks_event_init(&e, f ? KS_SHARED : 0), 0);
        struct ks_futex_stats a = kt_futex_stats();
        for (int i = 0; i < 100000; i++) {
            cr_assert_eq(ks_event_set(&e), 0);
            cr_assert_eq(ks_event_clear(&e), 0);
        }
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.wakes, a.wakes, "%llu futex wakes with nobody waiting",
                     (unsigned long long)(b.wakes - a.wakes));

        /* After a real wake-up cycle (a waiter slept and was released), the
         * next set with nobody waiting makes no call either. */
        struct ewaiter w = {.e = &e, .deadline = KS_FOREVER, .ret = -1};
        pthread_t t;
        kt_spawn(&t, ewaiter_main, &w);
        cr_assert(kt_wait_in_futex(ewaiter_tid(&w), 20 * KS_NSEC_PER_SEC));
        a = kt_futex_stats();
        cr_assert_eq(ks_event_set(&e), 0);
        b = kt_futex_stats();
        cr_assert_eq(b.wakes - a.wakes, 1u, "set() with a sleeper made %llu wakes",
                     (unsigned long long)(b.wakes - a.wakes));
        kt_join(t);
        cr_assert_eq(w.ret, 0);
        cr_assert_eq(ks_event_clear(&e), 0);
        a = kt_futex_stats();
        cr_assert_eq(ks_event_set(&e), 0);
        b = kt_futex_stats();
        cr_assert_eq(b.wakes, a.wakes, "set() after the sleeper left still made a futex wake");
    }
}

/* ---- destroy/free right after the waits return ---------------------------------------- */

#define EF_ROUNDS 2000
#define EF_WAITERS 3

struct efree {
    ks_event_t *e; /* published for round `round` */
    int round;
    int returned; /* atomic, per round: the waiter that makes it EF_WAITERS frees */
    int done;     /* last round whose event was freed */
    int errors;   /* atomic */
    int idx;
};

static void *efree_waiter(void *p)
{
    struct efree *f = p;
    int me = __atomic_fetch_add(&f->idx, 1, __ATOMIC_RELAXED);
    for (int r = 1; r <= EF_ROUNDS; r++) {
        while (__atomic_load_n(&f->round, __ATOMIC_ACQUIRE) != r)
            sched_yield();
        ks_event_t *e = f->e;
        int ret = (r + me) % 2 ? ks_event_wait(e) : ks_event_timedwait(e, ks_deadline_after(60 * KS_NSEC_PER_SEC));
        if (ret != 0)
            __atomic_add_fetch(&f->errors, 1, __ATOMIC_RELAXED);
        /* After its wait returned, a waiter never touches e again: the last
         * one to get here frees it while set() may still be running. */
        if (__atomic_add_fetch(&f->returned, 1, __ATOMIC_ACQ_REL) == EF_WAITERS) {
            __atomic_store_n(&f->returned, 0, __ATOMIC_RELAXED);
            if (ks_event_destroy(e) != 0)
                __atomic_add_fetch(&f->errors, 1, __ATOMIC_RELAXED);
            memset(e, 0xdd, sizeof *e);
            free(e);
            __atomic_store_n(&f->done, r, __ATOMIC_RELEASE);
        }
    }
    return NULL;
}

Test(event, free_right_after_the_waits_return, .timeout = 120)
{
    struct efree *f = calloc(1, sizeof *f);
    cr_assert_not_null(f);
    pthread_t t[EF_WAITERS];
    for (int i = 0; i < EF_WAITERS; i++)
        kt_spawn(&t[i], efree_waiter, f);
    int slept = 0;
    for (int r = 1; r <= EF_ROUNDS; r++) {
        ks_event_t *e = malloc(sizeof *e);
        cr_assert_not_null(e);
        cr_assert_eq(ks_event_init(e, (r & 2) ? KS_SHARED : 0), 0);
        f->e = e;
        __atomic_store_n(&f->round, r, __ATOMIC_RELEASE);
        if (r % 4 != 0) {
            /* Mostly let them sleep, so set() takes the waking path. */
            int64_t end = ks_now() + 200 * KT_MS;
            while (!(word_of(e) & KS_EVENT_SLEEPERS) && ks_now() < end)
                sched_yield();
            slept += !!(word_of(e) & KS_EVENT_SLEEPERS);
        }
        /* From here the waiters may return, destroy and free e under us. */
        cr_assert_eq(ks_event_set(e), 0);
        int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
        while (__atomic_load_n(&f->done, __ATOMIC_ACQUIRE) != r && ks_now() < end)
            sched_yield();
        cr_assert_eq(__atomic_load_n(&f->done, __ATOMIC_ACQUIRE), r, "round %d: waiters stuck", r);
    }
    for (int i = 0; i < EF_WAITERS; i++)
        kt_join(t[i]);
    cr_assert_eq(f->errors, 0);
    cr_assert_gt(slept, EF_ROUNDS / 4, "the waiters rarely slept (%d): the test lost its point", slept);
    free(f);
}

/* ---- process-shared across fork() -------------------------------------------------- */

struct shm_event {
    ks_event_t go;   /* parent -> child */
    ks_event_t back; /* child -> parent */
    int payload;
};

static int child_waits_for_go(void *p)
{
    struct shm_event *s = p;
    alarm(60); /* never outlive a hung test */
    int r = ks_event_timedwait(&s->go, ks_deadline_after(30 * KS_NSEC_PER_SEC));
    if (r != 0)
        return 1;
    if (s->payload != 7)
        return 2;
    return 0;
}

static int child_sets_back(void *p)
{
    struct shm_event *s = p;
    alarm(60);
    int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
    while (!(__atomic_load_n(&s->back.word, __ATOMIC_RELAXED) & KS_EVENT_SLEEPERS))
        if (ks_now() > end)
            return 3;
        else
            kt_sleep_ns(100000);
    s->payload = 9;
    return ks_event_set(&s->back) == 0 ? 0 : 4;
}

Test(event, process_shared_across_fork, .timeout = 120)
{
    struct shm_event *s = kt_shared_alloc(sizeof *s);
    cr_assert_eq(ks_event_init(&s->go, KS_SHARED), 0);
    cr_assert_eq(ks_event_init(&s->back, KS_SHARED), 0);

    /* The child sleeps, the parent sets. */
    pid_t pid = kt_fork(child_waits_for_go, s);
    cr_assert(kt_wait_child_in_futex(pid, 20 * KS_NSEC_PER_SEC), "the child never slept");
    cr_assert(word_of(&s->go) & KS_EVENT_SLEEPERS);
    s->payload = 7;
    cr_assert_eq(ks_event_set(&s->go), 0);
    kt_wait_child(pid);

    /* The child sleeps, the parent pulses (set, then clear at once). */
    cr_assert_eq(ks_event_clear(&s->go), 0);
    pid = kt_fork(child_waits_for_go, s);
    cr_assert(kt_wait_child_in_futex(pid, 20 * KS_NSEC_PER_SEC), "the child never slept");
    cr_assert(word_of(&s->go) & KS_EVENT_SLEEPERS);
    cr_assert_eq(ks_event_set(&s->go), 0);
    cr_assert_eq(ks_event_clear(&s->go), 0);
    kt_wait_child(pid);

    /* The parent sleeps, the child sets. */
    pid = kt_fork(child_sets_back, s);
    cr_assert_eq(ks_event_timedwait(&s->back, ks_deadline_after(30 * KS_NSEC_PER_SEC)), 0,
                 "the child's set never woke the parent");
    cr_assert_eq(s->payload, 9);
    kt_wait_child(pid);
    cr_assert_eq(ks_event_is_set(&s->back), 1);
    kt_shared_free(s, sizeof *s);
}

/* ---- set and wait touch nothing after the release (hardware watchpoint) ---------------- */

static ks_event_t *watched_event;
static uint32_t watched_gen;

/* "Released" for the event: set (or a set happened since watched_gen). */
static int event_released(void)
{
    uint32_t v = __atomic_load_n(&watched_event->word, __ATOMIC_RELAXED);
    return (v & KS_EVENT_SET) || (v & ~(KS_EVENT_SET | KS_EVENT_SLEEPERS)) != watched_gen;
}

Test(event, set_touches_nothing_after_release, .timeout = 30)
{
    _Alignas(8) static ks_event_t e;
    watched_event = &e;
    struct kt_watch w = {.n = 0};
    _Static_assert(sizeof(ks_event_t) == 8, "one 8-byte watch covers the event");
    if (kt_watch_add(&w, &e, 8) != 0)
        cr_skip_test("no hardware watchpoints here (perf_event_open: %s)", strerror(errno));

    /* Calibration: set, then read the flags (the order set() must avoid). */
    cr_assert_eq(ks_event_init(&e, 0), 0);
    watched_gen = 0;
    kt_watch_begin(&w, event_released);
    __atomic_store_n(&e.word, KS_EVENT_GEN | KS_EVENT_SET, __ATOMIC_RELEASE);
    (void)*(volatile uint32_t *)&e.flags;
    kt_watch_end(&w);
    cr_assert_eq(w.hits, 2, "the watchpoint saw %d accesses, not 2", w.hits);
    cr_assert_eq(w.after, 2, "the watchpoint missed an access after release");

    /* Clear events, with and without (simulated) sleepers the wake will not find. */
    const uint32_t words[] = {0, KS_EVENT_SLEEPERS, 5 * KS_EVENT_GEN, 5 * KS_EVENT_GEN | KS_EVENT_SLEEPERS};
    for (int f = 0; f < 2; f++)
        for (unsigned i = 0; i < sizeof words / sizeof words[0]; i++) {
            cr_assert_eq(ks_event_init(&e, f ? KS_SHARED : 0), 0);
            __atomic_store_n(&e.word, words[i], __ATOMIC_RELAXED);
            watched_gen = words[i] & ~KS_EVENT_SLEEPERS;
            kt_watch_begin(&w, event_released);
            int r = ks_event_set(&e);
            kt_watch_end(&w);
            cr_assert_eq(r, 0);
            cr_assert_geq(w.hits, 1, "the watchpoint saw nothing");
            cr_assert_leq(w.after, 1,
                          "set (word 0x%x, flags %d) accessed the event %d more times after the "
                          "releasing CAS",
                          words[i], f, w.after - 1);
            cr_assert_eq(e.word, watched_gen + KS_EVENT_GEN + KS_EVENT_SET, "word 0x%x after set", e.word);
        }
    kt_watch_close(&w);
}

/* A waiter's last access is the load that saw the event set (or pulsed). */
struct watched_waiter {
    ks_event_t *e;
    int ret;
    struct kt_watched w;
};

static void *watched_event_waiter(void *p)
{
    struct watched_waiter *ww = p;
    struct kt_watch w;
    if (kt_watched_open(&ww->w, &w, ww->e, sizeof *ww->e) != 0)
        return NULL;
    kt_watch_begin(&w, event_released);
    kt_watched_ready(&ww->w);
    ww->ret = ks_event_wait(ww->e);
    kt_watch_end(&w);
    kt_watched_close(&ww->w, &w);
    return NULL;
}

Test(event, waiter_touches_nothing_after_seeing_set, .timeout = 60)
{
    KT_SKIP_WATCH_UNDER_TSAN();
    _Alignas(8) static ks_event_t e;
    watched_event = &e;
    for (int pulse = 0; pulse < 2; pulse++)
        for (int f = 0; f < 2; f++) {
            cr_assert_eq(ks_event_init(&e, f ? KS_SHARED : 0), 0);
            watched_gen = 0;
            struct watched_waiter ww = {.e = &e, .ret = -1};
            pthread_t t;
            kt_spawn(&t, watched_event_waiter, &ww);
            pid_t tid = KT_WATCHED_TID(&ww.w, t);
            cr_assert(kt_wait_in_futex(tid, 20 * KS_NSEC_PER_SEC));
            cr_assert_eq(ks_event_set(&e), 0);
            if (pulse)
                cr_assert_eq(ks_event_clear(&e), 0);
            kt_join(t);
            cr_assert_eq(ww.ret, 0);
            cr_assert_geq(ww.w.hits, 2, "the watchpoint saw %d accesses", ww.w.hits);
            cr_assert_eq(ww.w.after, 1,
                         "the waiter accessed the event %d times after seeing it set (pulse %d, flags %d)",
                         ww.w.after, pulse, f);
        }
}

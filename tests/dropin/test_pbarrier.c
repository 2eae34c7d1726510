/* tests/dropin/test_pbarrier.c - pthread_barrier_* as glibc 2.36 behaves:
 * layout, exactly one PTHREAD_BARRIER_SERIAL_THREAD per round over many
 * rounds with 16 threads on 2 CPUs, nobody leaves a round early, EINVAL for
 * a count of 0, destroy right after the last wait returns in one thread
 * (glibc's pthread_barrier_destroy waits for the other threads to leave:
 * nptl/pthread_barrier_destroy.c), process-shared use across fork().
 * Reference: POSIX pthread_barrier_wait, pthread_barrier_init. */
#include "helpers.h"

#include <limits.h>
#include <stdalign.h>

#if defined(__x86_64__) || defined(__aarch64__)
_Static_assert(sizeof(pthread_barrier_t) == 32, "glibc pthread_barrier_t is 32 bytes");
_Static_assert(alignof(pthread_barrier_t) == 8, "pthread_barrier_t is 8-aligned");
#endif
#if defined(__x86_64__)
_Static_assert(sizeof(pthread_barrierattr_t) == 4, "glibc x86-64 pthread_barrierattr_t is 4 bytes");
#elif defined(__aarch64__)
_Static_assert(sizeof(pthread_barrierattr_t) == 8, "glibc aarch64 pthread_barrierattr_t is 8 bytes");
#endif

Test(pbarrier, count_zero_is_einval_and_one_is_always_serial, .timeout = 30)
{
    pthread_barrier_t b;
    cr_assert_eq(pthread_barrier_init(&b, NULL, 0), EINVAL);
    /* glibc refuses counts from INT_MAX up (found by review: the layer took INT_MAX) */
    cr_assert_eq(pthread_barrier_init(&b, NULL, INT_MAX), EINVAL);
    cr_assert_eq(pthread_barrier_init(&b, NULL, UINT_MAX), EINVAL);
    cr_assert_eq(pthread_barrier_init(&b, NULL, 1), 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(pthread_barrier_wait(&b), PTHREAD_BARRIER_SERIAL_THREAD);
    cr_assert_eq(pthread_barrier_destroy(&b), 0);
    pthread_barrierattr_t a;
    int ps = -1;
    cr_assert_eq(pthread_barrierattr_init(&a), 0);
    cr_assert_eq(pthread_barrierattr_getpshared(&a, &ps), 0);
    cr_assert_eq(ps, PTHREAD_PROCESS_PRIVATE);
    cr_assert_eq(pthread_barrierattr_setpshared(&a, 12345), EINVAL);
    cr_assert_eq(pthread_barrier_init(&b, &a, 0), EINVAL);
    cr_assert_eq(pthread_barrierattr_destroy(&a), 0);
}

#define BT 16
#define ROUNDS 300

struct rounds {
    pthread_barrier_t b;
    int serial[ROUNDS];  /* atomic */
    int arrived[ROUNDS]; /* atomic: incremented before the wait */
    int early;           /* a thread left a round before all arrived */
    int errors;
};

static void *rounds_worker(void *p)
{
    struct rounds *s = p;
    for (int r = 0; r < ROUNDS; r++) {
        __atomic_add_fetch(&s->arrived[r], 1, __ATOMIC_RELAXED);
        if (r % 37 == 0)
            sched_yield();
        int e = pthread_barrier_wait(&s->b);
        if (e == PTHREAD_BARRIER_SERIAL_THREAD)
            __atomic_add_fetch(&s->serial[r], 1, __ATOMIC_RELAXED);
        else if (e != 0)
            __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
        if (__atomic_load_n(&s->arrived[r], __ATOMIC_RELAXED) != BT)
            __atomic_store_n(&s->early, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

Test(pbarrier, exactly_one_serial_thread_per_round_16_threads, .timeout = 60)
{
    struct rounds *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    cr_assert_eq(pthread_barrier_init(&s->b, NULL, BT), 0);
    pthread_t t[BT];
    for (int i = 0; i < BT; i++)
        dt_spawn(&t[i], rounds_worker, s);
    for (int i = 0; i < BT; i++)
        dt_join(t[i]);
    cr_assert_eq(s->errors, 0);
    cr_assert_eq(s->early, 0, "a thread left a round before every thread arrived");
    for (int r = 0; r < ROUNDS; r++)
        cr_assert_eq(s->serial[r], 1, "round %d had %d serial threads", r, s->serial[r]);
    cr_assert_eq(pthread_barrier_destroy(&s->b), 0);
    free(s);
}

/* Destroy as soon as the wait returns in one thread (the serial one here,
 * or the main thread in the other variant), then scribble over the memory:
 * the others must still return properly. */
#define DT_N 8

struct destroy_round {
    pthread_barrier_t *b;
    int destroy_ret;
    int rets[DT_N];
    int serial;
    int destroyer; /* index of the thread that destroys, -1 = the serial one */
};

struct destroy_arg {
    struct destroy_round *s;
    int idx;
};

static void *destroy_worker(void *p)
{
    struct destroy_arg *a = p;
    struct destroy_round *s = a->s;
    pthread_barrier_t *b = s->b;
    int e = pthread_barrier_wait(b);
    s->rets[a->idx] = e;
    if (e == PTHREAD_BARRIER_SERIAL_THREAD)
        __atomic_add_fetch(&s->serial, 1, __ATOMIC_RELAXED);
    if ((s->destroyer < 0 && e == PTHREAD_BARRIER_SERIAL_THREAD) || s->destroyer == a->idx) {
        s->destroy_ret = pthread_barrier_destroy(b);
        memset(b, 0xa5, sizeof *b);
    }
    return NULL;
}

Test(pbarrier, destroy_right_after_the_wait_returns_in_one_thread, .timeout = 60)
{
    for (int round = 0; round < 200; round++) {
        struct destroy_round s;
        memset(&s, 0, sizeof s);
        s.b = malloc(sizeof *s.b);
        cr_assert_not_null(s.b);
        cr_assert_eq(pthread_barrier_init(s.b, NULL, DT_N), 0);
        s.destroy_ret = -1;
        s.destroyer = round % 3 == 0 ? -1 : round % DT_N;
        struct destroy_arg a[DT_N];
        pthread_t t[DT_N];
        for (int i = 0; i < DT_N; i++) {
            a[i].s = &s;
            a[i].idx = i;
            dt_spawn(&t[i], destroy_worker, &a[i]);
        }
        for (int i = 0; i < DT_N; i++) {
            int e = dt_join_within(t[i], 15 * DT_S, NULL);
            cr_assert_eq(e, 0, "round %d: thread %d stuck after the destroy", round, i);
        }
        cr_assert_eq(s.destroy_ret, 0, "round %d", round);
        cr_assert_eq(s.serial, 1, "round %d", round);
        for (int i = 0; i < DT_N; i++)
            cr_assert(s.rets[i] == 0 || s.rets[i] == PTHREAD_BARRIER_SERIAL_THREAD, "round %d: wait returned %d",
                      round, s.rets[i]);
        free(s.b);
    }
}

/* A barrier can be re-initialised after destroy and reused with another count. */
Test(pbarrier, reinit_with_another_count, .timeout = 30)
{
    pthread_barrier_t b;
    struct rounds *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    cr_assert_eq(pthread_barrier_init(&b, NULL, 1), 0);
    cr_assert_eq(pthread_barrier_wait(&b), PTHREAD_BARRIER_SERIAL_THREAD);
    cr_assert_eq(pthread_barrier_destroy(&b), 0);
    cr_assert_eq(pthread_barrier_init(&s->b, NULL, BT), 0);
    pthread_t t[BT];
    for (int i = 0; i < BT; i++)
        dt_spawn(&t[i], rounds_worker, s);
    for (int i = 0; i < BT; i++)
        dt_join(t[i]);
    for (int r = 0; r < ROUNDS; r++)
        cr_assert_eq(s->serial[r], 1);
    cr_assert_eq(pthread_barrier_destroy(&s->b), 0);
    free(s);
}

/* ---- process-shared ------------------------------------------------------------- */

#define P_ROUNDS 200

struct pbar {
    pthread_barrier_t b;
    int serial[P_ROUNDS];
    int arrived[P_ROUNDS];
    int early;
};

static int pbar_worker(void *p)
{
    struct pbar *s = p;
    for (int r = 0; r < P_ROUNDS; r++) {
        __atomic_add_fetch(&s->arrived[r], 1, __ATOMIC_RELAXED);
        int e = pthread_barrier_wait(&s->b);
        if (e == PTHREAD_BARRIER_SERIAL_THREAD)
            __atomic_add_fetch(&s->serial[r], 1, __ATOMIC_RELAXED);
        else if (e != 0)
            return 2;
        if (__atomic_load_n(&s->arrived[r], __ATOMIC_RELAXED) != 3)
            __atomic_store_n(&s->early, 1, __ATOMIC_RELAXED);
    }
    return 0;
}

Test(pbarrier, process_shared_barrier_across_fork, .timeout = 60)
{
    struct pbar *s = dt_shared_alloc(sizeof *s);
    pthread_barrierattr_t a;
    int ps = -1;
    cr_assert_eq(pthread_barrierattr_init(&a), 0);
    cr_assert_eq(pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_SHARED), 0);
    cr_assert_eq(pthread_barrierattr_getpshared(&a, &ps), 0);
    cr_assert_eq(ps, PTHREAD_PROCESS_SHARED);
    cr_assert_eq(pthread_barrier_init(&s->b, &a, 3), 0);
    cr_assert_eq(pthread_barrierattr_destroy(&a), 0);
    pid_t pid[2];
    for (int i = 0; i < 2; i++)
        pid[i] = dt_fork(pbar_worker, s);
    cr_assert_eq(pbar_worker(s), 0);
    for (int i = 0; i < 2; i++)
        dt_wait_child_named(pid[i], "pshared barrier child");
    cr_assert_eq(s->early, 0);
    for (int r = 0; r < P_ROUNDS; r++)
        cr_assert_eq(s->serial[r], 1, "round %d", r);
    cr_assert_eq(pthread_barrier_destroy(&s->b), 0);
    dt_shared_free(s, sizeof *s);
}

/* ---- signals ----------------------------------------------------------------------------- */

struct intr_bar {
    pthread_barrier_t b;
    int tid;
    int ret;
    int returned;
};

static void *intr_bar_fn(void *p)
{
    struct intr_bar *s = p;
    dt_publish_tid(&s->tid);
    s->ret = pthread_barrier_wait(&s->b);
    __atomic_store_n(&s->returned, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* POSIX pthread_barrier_wait: "This function shall not return an error code
 * of [EINTR]"; a handler interrupting the wait does not release it. */
Test(pbarrier, wait_is_not_interrupted_by_signals, .timeout = 30)
{
    struct intr_bar s;
    memset(&s, 0, sizeof s);
    s.ret = -1;
    cr_assert_eq(pthread_barrier_init(&s.b, NULL, 2), 0);
    pthread_t t;
    dt_spawn(&t, intr_bar_fn, &s);
    dt_wait_blocked(&s.tid, "barrier waiter");
    cr_assert_geq(dt_pummel(t, 10, 2 * DT_MS), 1, "no handler ran");
    dt_sleep_ns(5 * DT_MS);
    cr_assert_eq(__atomic_load_n(&s.returned, __ATOMIC_ACQUIRE), 0, "the wait returned %d on a signal", s.ret);
    int mine = pthread_barrier_wait(&s.b);
    dt_join(t);
    dt_pummel_end();
    cr_assert(mine == 0 || mine == PTHREAD_BARRIER_SERIAL_THREAD);
    cr_assert(s.ret == 0 || s.ret == PTHREAD_BARRIER_SERIAL_THREAD);
    cr_assert_neq(mine, s.ret, "exactly one of the two is the serial thread");
    cr_assert_eq(pthread_barrier_destroy(&s.b), 0);
}

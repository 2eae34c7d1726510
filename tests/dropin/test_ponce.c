/* tests/dropin/test_ponce.c - pthread_once as glibc 2.36 behaves: layout,
 * exactly one run with 16 racing threads and no caller returning before the
 * run completed, a cancelled init_routine lets a later (or waiting) caller
 * run it again, and a forked child can run an init_routine that another
 * thread of the parent was inside of at the fork (glibc keeps a fork
 * generation in the once word: nptl/pthread_once.c).  Reference: POSIX
 * pthread_once ("If an init_routine is a cancellation point and is
 * canceled, the effect on once_control shall be as if pthread_once() was
 * never called"). */
#include "helpers.h"

#include <stdalign.h>

#if defined(__x86_64__) || defined(__aarch64__)
_Static_assert(sizeof(pthread_once_t) == 4, "glibc pthread_once_t is 4 bytes");
_Static_assert(alignof(pthread_once_t) == 4, "pthread_once_t is 4-aligned");
#endif

/* ---- exactly once ---------------------------------------------------------------- */

#define OT 16
#define CONTROLS 200

static pthread_once_t race_once[CONTROLS];
static int race_runs[CONTROLS];
static int race_done[CONTROLS];
static int race_gate;
static int race_not_done;

/* One routine per control, so that the routine knows which it is. */
#define ROUTINE(n)                                                                          \
    static void race_routine_##n(void)                                                      \
    {                                                                                       \
        __atomic_add_fetch(&race_runs[n], 1, __ATOMIC_RELAXED);                             \
        sched_yield();                                                                      \
        __atomic_store_n(&race_done[n], 1, __ATOMIC_RELAXED);        \
    }
ROUTINE(0)
ROUTINE(1)
ROUTINE(2)
ROUTINE(3)
static void (*const race_routines[4])(void) = {race_routine_0, race_routine_1, race_routine_2, race_routine_3};

static void *race_worker(void *p)
{
    (void)p;
    dt_gate_pass(&race_gate, OT);
    for (int i = 0; i < CONTROLS; i++) {
        /* routine k serves controls k, k + 4, ...: race_runs[k] sums them */
        if (pthread_once(&race_once[i], race_routines[i % 4]) != 0)
            __atomic_store_n(&race_not_done, 1, __ATOMIC_RELAXED);
        if (!__atomic_load_n(&race_done[i % 4], __ATOMIC_RELAXED))
            __atomic_store_n(&race_not_done, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

Test(ponce, runs_exactly_once_with_16_racing_threads, .timeout = 60)
{
    pthread_once_t init = PTHREAD_ONCE_INIT;
    cr_assert_eq(init, 0, "PTHREAD_ONCE_INIT is 0 in glibc");
    pthread_t t[OT];
    for (int i = 0; i < OT; i++)
        dt_spawn(&t[i], race_worker, NULL);
    for (int i = 0; i < OT; i++)
        dt_join(t[i]);
    cr_assert_eq(race_not_done, 0, "a pthread_once returned before its routine finished");
    for (int k = 0; k < 4; k++)
        cr_assert_eq(race_runs[k], CONTROLS / 4, "routine %d ran %d times for %d controls", k, race_runs[k],
                     CONTROLS / 4);
    /* Later calls do nothing. */
    for (int i = 0; i < CONTROLS; i++)
        cr_assert_eq(pthread_once(&race_once[i], race_routines[i % 4]), 0);
    for (int k = 0; k < 4; k++)
        cr_assert_eq(race_runs[k], CONTROLS / 4);
}

/* The routine's effects are visible to every caller when pthread_once
 * returns, even when the routine is slow and everybody else waits. */
static pthread_once_t slow_once = PTHREAD_ONCE_INIT;
static int slow_runs;
static long slow_data[64];
static int slow_gate;
static int slow_bad;

static void slow_routine(void)
{
    __atomic_add_fetch(&slow_runs, 1, __ATOMIC_RELAXED);
    dt_sleep_ns(30 * DT_MS);
    for (int i = 0; i < 64; i++)
        slow_data[i] = i + 1;
}

static void *slow_worker(void *p)
{
    (void)p;
    dt_gate_pass(&slow_gate, OT);
    if (pthread_once(&slow_once, slow_routine) != 0)
        __atomic_store_n(&slow_bad, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 64; i++)
        if (slow_data[i] != i + 1)
            __atomic_store_n(&slow_bad, 1, __ATOMIC_RELAXED);
    return NULL;
}

Test(ponce, callers_wait_for_a_slow_routine, .timeout = 30)
{
    pthread_t t[OT];
    for (int i = 0; i < OT; i++)
        dt_spawn(&t[i], slow_worker, NULL);
    for (int i = 0; i < OT; i++)
        dt_join(t[i]);
    cr_assert_eq(slow_runs, 1);
    cr_assert_eq(slow_bad, 0, "a caller returned before the routine's effects");
}

/* ---- cancellation --------------------------------------------------------------------- */

static pthread_once_t cancel_once = PTHREAD_ONCE_INIT;
static int cancel_runs;
static int cancel_entered;

static void cancel_routine(void)
{
    int n = __atomic_add_fetch(&cancel_runs, 1, __ATOMIC_ACQ_REL);
    if (n == 1) {
        __atomic_store_n(&cancel_entered, 1, __ATOMIC_RELEASE);
        for (;;)
            dt_sleep_ns(DT_MS); /* nanosleep is a cancellation point */
    }
}

static void *cancel_first(void *p)
{
    (void)p;
    pthread_once(&cancel_once, cancel_routine);
    return (void *)1; /* not reached when cancelled */
}

struct later {
    int tid;
    int ret;
};

static void *cancel_later(void *p)
{
    struct later *l = p;
    dt_publish_tid(&l->tid);
    l->ret = pthread_once(&cancel_once, cancel_routine);
    return NULL;
}

Test(ponce, cancelled_routine_lets_a_waiting_caller_run_it, .timeout = 30)
{
    pthread_t a, b;
    struct later l = {0, -1};
    dt_spawn(&a, cancel_first, NULL);
    cr_assert(dt_wait_int(&cancel_entered, 1, 10 * DT_S));
    /* b waits inside pthread_once for a's run */
    dt_spawn(&b, cancel_later, &l);
    dt_wait_blocked(&l.tid, "second caller");
    cr_assert_eq(__atomic_load_n(&cancel_runs, __ATOMIC_ACQUIRE), 1, "ran twice at once");
    cr_assert_eq(pthread_cancel(a), 0);
    cr_assert_eq(dt_join(a), PTHREAD_CANCELED);
    dt_join(b);
    cr_assert_eq(l.ret, 0);
    cr_assert_eq(cancel_runs, 2, "the waiting caller did not run the routine after the cancel");
    cr_assert_eq(pthread_once(&cancel_once, cancel_routine), 0);
    cr_assert_eq(cancel_runs, 2);
}

static pthread_once_t cancel2_once = PTHREAD_ONCE_INIT;
static int cancel2_runs;
static int cancel2_entered;

static void cancel2_routine(void)
{
    int n = __atomic_add_fetch(&cancel2_runs, 1, __ATOMIC_ACQ_REL);
    if (n == 1) {
        __atomic_store_n(&cancel2_entered, 1, __ATOMIC_RELEASE);
        for (;;)
            pthread_testcancel(), sched_yield();
    }
}

static void *cancel2_first(void *p)
{
    (void)p;
    pthread_once(&cancel2_once, cancel2_routine);
    return NULL;
}

Test(ponce, cancelled_routine_lets_a_later_caller_run_it, .timeout = 30)
{
    pthread_t a;
    dt_spawn(&a, cancel2_first, NULL);
    cr_assert(dt_wait_int(&cancel2_entered, 1, 10 * DT_S));
    cr_assert_eq(pthread_cancel(a), 0);
    cr_assert_eq(dt_join(a), PTHREAD_CANCELED);
    cr_assert_eq(cancel2_runs, 1);
    cr_assert_eq(pthread_once(&cancel2_once, cancel2_routine), 0);
    cr_assert_eq(cancel2_runs, 2);
    cr_assert_eq(pthread_once(&cancel2_once, cancel2_routine), 0);
    cr_assert_eq(cancel2_runs, 2);
}

/* ---- fork ------------------------------------------------------------------------------- */

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static int fork_runs;    /* per process */
static int fork_entered; /* per process */
static int fork_release;
static int fork_child_runs;

static void fork_parent_routine(void)
{
    __atomic_add_fetch(&fork_runs, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&fork_entered, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&fork_release, __ATOMIC_ACQUIRE))
        dt_sleep_ns(200000);
}

static void fork_child_routine(void) { fork_child_runs++; }

static void *fork_runner(void *p)
{
    (void)p;
    pthread_once(&fork_once, fork_parent_routine);
    return NULL;
}

static int fork_child(void *p)
{
    (void)p;
    /* The parent's thread that was running the routine does not exist here:
     * the child's call runs it (instead of waiting forever). */
    DT_CHECK(pthread_once(&fork_once, fork_child_routine) == 0, 2);
    DT_CHECK(fork_child_runs == 1, 3);
    DT_CHECK(pthread_once(&fork_once, fork_child_routine) == 0, 4);
    DT_CHECK(fork_child_runs == 1, 5);
    return 0;
}

Test(ponce, child_forked_while_a_thread_runs_the_routine_can_run_it, .timeout = 30)
{
    pthread_t t;
    dt_spawn(&t, fork_runner, NULL);
    cr_assert(dt_wait_int(&fork_entered, 1, 10 * DT_S));
    pid_t pid = dt_fork(fork_child, NULL);
    int st = dt_reap(pid);
    __atomic_store_n(&fork_release, 1, __ATOMIC_RELEASE);
    dt_join(t);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: %s %d",
              WIFEXITED(st) ? "failed check" : "killed by signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    cr_assert_eq(fork_runs, 1);
    cr_assert_eq(fork_child_runs, 0, "the child's run leaked into the parent");
    cr_assert_eq(pthread_once(&fork_once, fork_child_routine), 0);
    cr_assert_eq(fork_child_runs, 0);
}

/* A once that completed before the fork stays done in the child. */
static pthread_once_t done_once = PTHREAD_ONCE_INIT;
static int done_runs;
static void done_routine(void) { done_runs++; }

static int done_child(void *p)
{
    (void)p;
    DT_CHECK(pthread_once(&done_once, done_routine) == 0, 2);
    DT_CHECK(done_runs == 1, 3);
    return 0;
}

Test(ponce, completed_once_stays_done_in_a_child, .timeout = 30)
{
    cr_assert_eq(pthread_once(&done_once, done_routine), 0);
    cr_assert_eq(done_runs, 1);
    dt_wait_child_named(dt_fork(done_child, NULL), "done once in the child");
}

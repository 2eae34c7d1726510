/* tests/test_once.c - ks_once: the function runs exactly once with 32
 * concurrent callers and every caller returns only after it finished (and
 * sees what it wrote), completed calls make no syscall, static and zero
 * initialisers, bad arguments, and KS_ONCE_INIT_SHARED across fork(). */
#include "helpers.h"

static uint32_t state_of(ks_once_t *o) { return __atomic_load_n(&o->state, __ATOMIC_RELAXED); }

/* Each test runs in its own process, so these globals are per test. */
static int calls;    /* atomic: times the init function ran */
static int finished; /* plain: written by the init function, last */
static int payload;  /* plain: written by the init function */

static void init_fn(void)
{
    __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
    payload = 1234;
    finished = 1;
}

static void slow_init_fn(void)
{
    __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
    kt_sleep_ns(10 * KT_MS); /* the other callers arrive while it runs */
    payload = 1234;
    finished = 1;
}

/* ---- API contract ------------------------------------------------------------ */

static ks_once_t static_once = KS_ONCE_INIT;
static ks_once_t static_zero; /* all zeros */

Test(once, initialisers_work_and_run_once, .timeout = 30)
{
    ks_once_t local = KS_ONCE_INIT;
    ks_once_t shared_init = KS_ONCE_INIT_SHARED;
    ks_once_t *heap = calloc(1, sizeof *heap);
    cr_assert_not_null(heap);
    ks_once_t *os[] = {&static_once, &static_zero, &local, heap, &shared_init};
    for (unsigned i = 0; i < sizeof os / sizeof os[0]; i++) {
        calls = 0;
        finished = 0;
        cr_assert_eq(state_of(os[i]), KS_ONCE_NEW, "once %u does not start NEW", i);
        cr_assert_eq(ks_once(os[i], init_fn), 0);
        cr_assert_eq(calls, 1, "once %u: fn ran %d times", i, calls);
        cr_assert_eq(finished, 1);
        cr_assert_eq(state_of(os[i]), KS_ONCE_DONE);
        for (int k = 0; k < 100; k++)
            cr_assert_eq(ks_once(os[i], init_fn), 0);
        cr_assert_eq(calls, 1, "once %u: fn ran again (%d times)", i, calls);
    }
    cr_assert_eq(shared_init.flags, KS_SHARED);
    free(heap);
}

static int other_calls;
static void other_fn(void) { __atomic_add_fetch(&other_calls, 1, __ATOMIC_RELAXED); }

Test(once, a_completed_once_ignores_a_different_function, .timeout = 30)
{
    ks_once_t o = KS_ONCE_INIT;
    cr_assert_eq(ks_once(&o, init_fn), 0);
    cr_assert_eq(ks_once(&o, other_fn), 0);
    cr_assert_eq(calls, 1);
    cr_assert_eq(other_calls, 0, "a second function ran on a completed once");
    /* Independent objects are independent. */
    ks_once_t p = KS_ONCE_INIT;
    cr_assert_eq(ks_once(&p, other_fn), 0);
    cr_assert_eq(other_calls, 1);
}

Test(once, null_is_einval_and_changes_nothing, .timeout = 30)
{
    ks_once_t o = KS_ONCE_INIT, copy;
    memcpy(&copy, &o, sizeof o);
    cr_assert_eq(ks_once(NULL, init_fn), EINVAL);
    cr_assert_eq(ks_once(&o, NULL), EINVAL);
    cr_assert_eq(ks_once(NULL, NULL), EINVAL);
    cr_assert_eq(ks_once_slow(NULL, init_fn), EINVAL);
    cr_assert_eq(ks_once_slow(&o, NULL), EINVAL);
    cr_assert_eq(memcmp(&o, &copy, sizeof o), 0, "a refused call changed the object");
    cr_assert_eq(calls, 0, "fn ran on a refused call");
    /* Still usable, and a NULL fn on a completed once is still EINVAL. */
    cr_assert_eq(ks_once(&o, init_fn), 0);
    cr_assert_eq(calls, 1);
    cr_assert_eq(ks_once(&o, NULL), EINVAL);
    cr_assert_eq(state_of(&o), KS_ONCE_DONE);
}

Test(once, completed_calls_make_no_futex_calls, .timeout = 30)
{
    ks_once_t o = KS_ONCE_INIT;
    cr_assert_eq(ks_once(&o, init_fn), 0);
    struct ks_futex_stats a = kt_futex_stats();
    for (int i = 0; i < 100000; i++)
        cr_assert_eq(ks_once(&o, init_fn), 0);
    struct ks_futex_stats b = kt_futex_stats();
    cr_assert_eq(b.waits, a.waits);
    cr_assert_eq(b.wakes, a.wakes);
    cr_assert_eq(calls, 1);
    /* The first call with nobody else waiting made no wake either. */
    ks_once_t p = KS_ONCE_INIT;
    a = kt_futex_stats();
    cr_assert_eq(ks_once(&p, other_fn), 0);
    b = kt_futex_stats();
    cr_assert_eq(b.waits, a.waits);
    cr_assert_eq(b.wakes, a.wakes, "an uncontended first call made a futex wake");
}

/* ---- 32 concurrent callers ------------------------------------------------------ */

#define OC_CALLERS 32
#define OC_ROUNDS 20

struct ocall {
    ks_once_t *o;
    int ret;
    int saw_finished, saw_payload, saw_calls;
    uint64_t futex_waits;
    kt_gate_t *gate;
    int *started; /* atomic, shared by the callers of one round */
};

static void *ocall_main(void *p)
{
    struct ocall *c = p;
    kt_gate_pass(c->gate);
    /* Tighter than the gate: everybody is running before anybody calls. */
    __atomic_add_fetch(c->started, 1, __ATOMIC_RELAXED);
    while (__atomic_load_n(c->started, __ATOMIC_RELAXED) < OC_CALLERS)
        sched_yield();
    struct ks_futex_stats a = kt_futex_stats();
    c->ret = ks_once(c->o, slow_init_fn);
    /* ks_once returned: fn has finished and everything it wrote is visible. */
    c->saw_finished = finished;
    c->saw_payload = payload;
    c->saw_calls = __atomic_load_n(&calls, __ATOMIC_RELAXED);
    struct ks_futex_stats b = kt_futex_stats();
    c->futex_waits = b.waits - a.waits;
    /* A later call from the same thread makes no syscall. */
    a = kt_futex_stats();
    for (int i = 0; i < 1000; i++)
        if (ks_once(c->o, slow_init_fn) != 0)
            c->ret = -1;
    b = kt_futex_stats();
    if (b.waits != a.waits || b.wakes != a.wakes)
        c->ret = -2;
    return NULL;
}

Test(once, runs_exactly_once_with_32_concurrent_callers, .timeout = 60)
{
    uint64_t slept = 0;
    for (int round = 0; round < OC_ROUNDS; round++) {
        calls = 0;
        finished = 0;
        payload = 0;
        ks_once_t *o = malloc(sizeof *o);
        cr_assert_not_null(o);
        *o = (round % 2) ? (ks_once_t)KS_ONCE_INIT_SHARED : (ks_once_t)KS_ONCE_INIT;
        kt_gate_t gate;
        kt_gate_init(&gate, OC_CALLERS);
        int started = 0;
        struct ocall c[OC_CALLERS];
        pthread_t t[OC_CALLERS];
        for (int i = 0; i < OC_CALLERS; i++) {
            c[i] = (struct ocall){.o = o, .ret = -3, .gate = &gate, .started = &started};
            kt_spawn(&t[i], ocall_main, &c[i]);
        }
        for (int i = 0; i < OC_CALLERS; i++)
            kt_join(t[i]);
        cr_assert_eq(calls, 1, "round %d: fn ran %d times", round, calls);
        for (int i = 0; i < OC_CALLERS; i++) {
            cr_assert_eq(c[i].ret, 0, "round %d caller %d: %d", round, i, c[i].ret);
            cr_assert_eq(c[i].saw_finished, 1, "round %d: caller %d returned before fn finished", round, i);
            cr_assert_eq(c[i].saw_payload, 1234, "round %d: caller %d did not see fn's writes", round, i);
            cr_assert_eq(c[i].saw_calls, 1);
            slept += c[i].futex_waits;
        }
        cr_assert_eq(state_of(o), KS_ONCE_DONE);
        kt_gate_destroy(&gate);
        free(o);
    }
    /* The callers really arrived while fn ran, and slept rather than spun. */
    cr_assert_gt(slept, 0u, "no caller ever slept while fn ran: the test lost its point");
}

/* ---- KS_ONCE_INIT_SHARED across fork() --------------------------------------------- */

#define SH_ROUNDS 20
#define SH_PROCS 3 /* parent + 2 children */

struct shm_once {
    ks_once_t o[SH_ROUNDS];
    int ready[SH_ROUNDS];   /* atomic: processes waiting at the start line */
    int counter[SH_ROUNDS]; /* atomic: times fn ran */
    int done[SH_ROUNDS];    /* written by fn, last */
};

static struct shm_once *shm; /* inherited by the children */
static int shm_round;        /* the round fn belongs to (set by each process) */

static void shm_fn(void)
{
    __atomic_add_fetch(&shm->counter[shm_round], 1, __ATOMIC_RELAXED);
    kt_sleep_ns(5 * KT_MS); /* the other processes arrive and sleep */
    shm->done[shm_round] = 1;
}

static int shm_race(void)
{
    for (int r = 0; r < SH_ROUNDS; r++) {
        shm_round = r;
        __atomic_add_fetch(&shm->ready[r], 1, __ATOMIC_RELEASE);
        int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
        while (__atomic_load_n(&shm->ready[r], __ATOMIC_ACQUIRE) != SH_PROCS)
            if (ks_now() > end)
                return 1;
            else
                sched_yield();
        if (ks_once(&shm->o[r], shm_fn) != 0)
            return 2;
        if (!shm->done[r])
            return 3; /* returned before fn finished */
        if (__atomic_load_n(&shm->counter[r], __ATOMIC_RELAXED) != 1)
            return 4;
    }
    return 0;
}

static int shm_child(void *p)
{
    (void)p;
    alarm(60); /* never outlive a hung test */
    return shm_race();
}

Test(once, shared_once_runs_once_across_processes, .timeout = 120)
{
    shm = kt_shared_alloc(sizeof *shm);
    for (int r = 0; r < SH_ROUNDS; r++)
        shm->o[r] = (ks_once_t)KS_ONCE_INIT_SHARED;
    pid_t pid[SH_PROCS - 1];
    for (int i = 0; i < SH_PROCS - 1; i++)
        pid[i] = kt_fork(shm_child, NULL);
    int mine = shm_race();
    for (int i = 0; i < SH_PROCS - 1; i++)
        kt_wait_child(pid[i]);
    cr_assert_eq(mine, 0, "parent failed check %d", mine);
    for (int r = 0; r < SH_ROUNDS; r++) {
        cr_assert_eq(shm->counter[r], 1, "round %d: fn ran %d times", r, shm->counter[r]);
        cr_assert_eq(state_of(&shm->o[r]), KS_ONCE_DONE);
    }
    kt_shared_free(shm, sizeof *shm);
}

/* ---- the runner and a waiter touch nothing after completion (hardware watchpoint) -------- */

static ks_once_t watched_once __attribute__((aligned(8)));

static int once_done(void) { return __atomic_load_n(&watched_once.state, __ATOMIC_RELAXED) == KS_ONCE_DONE; }

static void announce_waiter_fn(void)
{
    /* As a caller arriving now would: it announces that it sleeps. */
    __atomic_store_n(&watched_once.state, KS_ONCE_WAITED, __ATOMIC_RELAXED);
}

static void plain_fn(void) {}

Test(once, runner_touches_nothing_after_completion, .timeout = 30)
{
    struct kt_watch w = {.n = 0};
    _Static_assert(sizeof(ks_once_t) == 8, "one 8-byte watch covers the once object");
    if (kt_watch_add(&w, &watched_once, 8) != 0)
        cr_skip_test("no hardware watchpoints here (perf_event_open: %s)", strerror(errno));

    /* Calibration: complete, then read the flags. */
    watched_once = (ks_once_t)KS_ONCE_INIT;
    kt_watch_begin(&w, once_done);
    __atomic_store_n(&watched_once.state, KS_ONCE_DONE, __ATOMIC_RELEASE);
    (void)*(volatile uint32_t *)&watched_once.flags;
    kt_watch_end(&w);
    cr_assert_eq(w.hits, 2, "the watchpoint saw %d accesses, not 2", w.hits);
    cr_assert_eq(w.after, 2, "the watchpoint missed an access after release");

    for (int f = 0; f < 2; f++)
        for (int waited = 0; waited < 2; waited++) {
            watched_once = f ? (ks_once_t)KS_ONCE_INIT_SHARED : (ks_once_t)KS_ONCE_INIT;
            kt_watch_begin(&w, once_done);
            int r = ks_once(&watched_once, waited ? announce_waiter_fn : plain_fn);
            kt_watch_end(&w);
            cr_assert_eq(r, 0);
            cr_assert_geq(w.hits, 2, "the watchpoint saw %d accesses", w.hits);
            cr_assert_eq(w.after, 1,
                         "the runner accessed the once object %d times after completing it "
                         "(waiters %d, flags %d)",
                         w.after - 1, waited, f);
            cr_assert_eq(watched_once.state, KS_ONCE_DONE);
        }
    kt_watch_close(&w);
}

static pid_t waiter_tid;  /* atomic */
static int runner_inside; /* atomic */

static void wait_for_waiter_fn(void)
{
    __atomic_store_n(&runner_inside, 1, __ATOMIC_RELEASE);
    pid_t t;
    while (!(t = __atomic_load_n(&waiter_tid, __ATOMIC_ACQUIRE)))
        sched_yield();
    if (t > 0)
        kt_wait_in_futex(t, 20 * KS_NSEC_PER_SEC);
}

struct watched_owaiter {
    int ret, hits, after;
};

static void *watched_once_waiter(void *p)
{
    struct watched_owaiter *ww = p;
    struct kt_watch w = {.n = 0};
    while (!__atomic_load_n(&runner_inside, __ATOMIC_ACQUIRE))
        sched_yield();
    if (kt_watch_add(&w, &watched_once, 8) != 0) {
        __atomic_store_n(&waiter_tid, -1, __ATOMIC_RELEASE);
        ww->ret = -1;
        return NULL;
    }
    kt_watch_begin(&w, once_done);
    __atomic_store_n(&waiter_tid, kt_gettid(), __ATOMIC_RELEASE);
    ww->ret = ks_once(&watched_once, plain_fn);
    kt_watch_end(&w);
    kt_watch_close(&w);
    ww->hits = w.hits;
    ww->after = w.after;
    return NULL;
}

Test(once, waiter_touches_nothing_after_completion, .timeout = 60)
{
    KT_SKIP_WATCH_UNDER_TSAN();
    for (int f = 0; f < 2; f++) {
        watched_once = f ? (ks_once_t)KS_ONCE_INIT_SHARED : (ks_once_t)KS_ONCE_INIT;
        waiter_tid = 0;
        runner_inside = 0;
        struct watched_owaiter ww = {.ret = -2};
        pthread_t t;
        kt_spawn(&t, watched_once_waiter, &ww);
        cr_assert_eq(ks_once(&watched_once, wait_for_waiter_fn), 0);
        kt_join(t);
        if (waiter_tid < 0)
            cr_skip_test("no hardware watchpoints here");
        cr_assert_eq(ww.ret, 0);
        cr_assert_geq(ww.hits, 2, "the watchpoint saw %d accesses", ww.hits);
        cr_assert_eq(ww.after, 1, "the waiter accessed the once object %d times after seeing it done (flags %d)",
                     ww.after - 1, f);
    }
}

/* ---- fork while another thread runs the function (issue 10) -------------------------------- */

/* A thread of the parent is inside init_fn when the main thread forks.  That
 * thread does not exist in the child, whose copy of the object says
 * "running" for good: every caller in the child used to block forever.  Now
 * the child's first caller runs init_fn itself (glibc's pthread_once does
 * the same), whatever kind of fork made the child. */
static ks_once_t fork_once;
static pid_t fork_parent;
static int fork_in_fn;     /* the parent's runner is inside fn */
static int fork_release;   /* the parent's runner may return */
static int fork_runs;      /* runs of fn in this process image */

static void fork_fn(void)
{
    __atomic_add_fetch(&fork_runs, 1, __ATOMIC_RELAXED);
    if (getpid() != fork_parent)
        return;
    __atomic_store_n(&fork_in_fn, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&fork_release, __ATOMIC_ACQUIRE))
        kt_sleep_ns(100000);
}

static void *fork_runner(void *p)
{
    (void)p;
    ks_once(&fork_once, fork_fn);
    return NULL;
}

static int fork_child_calls_once(void *p)
{
    (void)p;
    alarm(10); /* a hang kills the child: the parent sees a signal, not exit 0 */
    if (ks_once(&fork_once, fork_fn) != 0)
        return 1;
    if (__atomic_load_n(&fork_runs, __ATOMIC_RELAXED) != 2) /* the parent's start + ours */
        return 2;
    if (ks_once(&fork_once, fork_fn) != 0 || fork_runs != 2)
        return 3;
    if (__atomic_load_n(&fork_once.state, __ATOMIC_RELAXED) != KS_ONCE_DONE)
        return 4;
    return 0;
}

Test(once, fork_child_runs_the_function_a_vanished_runner_was_running, .timeout = 60)
{
    fork_parent = getpid();
    for (int k = 0; k < KT_FORK_KINDS; k++) {
        fork_once = (ks_once_t)KS_ONCE_INIT;
        fork_in_fn = fork_release = fork_runs = 0;
        pthread_t t;
        kt_spawn(&t, fork_runner, NULL);
        while (!__atomic_load_n(&fork_in_fn, __ATOMIC_ACQUIRE))
            sched_yield();
        pid_t pid = kt_fork_as((enum kt_fork_kind)k, fork_child_calls_once, NULL);
        kt_wait_child_named(pid, kt_fork_names[k]);
        /* The parent's runner is unaffected and completes normally. */
        __atomic_store_n(&fork_release, 1, __ATOMIC_RELEASE);
        kt_join(t);
        cr_assert_eq(fork_runs, 1);
        cr_assert_eq(ks_once(&fork_once, fork_fn), 0);
        cr_assert_eq(fork_runs, 1);
    }
}

/* In the same process nobody takes over: a second caller waits for the
 * runner, however long it takes. */
static void *second_caller(void *p)
{
    *(int *)p = ks_once(&fork_once, fork_fn) == 0 ? 1 : -1;
    return NULL;
}

Test(once, same_process_callers_wait_for_the_runner, .timeout = 60)
{
    fork_parent = getpid();
    fork_once = (ks_once_t)KS_ONCE_INIT;
    fork_in_fn = fork_release = fork_runs = 0;
    pthread_t t, t2;
    kt_spawn(&t, fork_runner, NULL);
    while (!__atomic_load_n(&fork_in_fn, __ATOMIC_ACQUIRE))
        sched_yield();
    int done = 0;
    kt_spawn(&t2, second_caller, &done);
    kt_sleep_ns(50 * KT_MS);
    cr_assert_eq(__atomic_load_n(&done, __ATOMIC_RELAXED), 0, "the second caller did not wait");
    cr_assert_eq(fork_once.state & 3u, KS_ONCE_WAITED);
    __atomic_store_n(&fork_release, 1, __ATOMIC_RELEASE);
    kt_join(t);
    kt_join(t2);
    cr_assert_eq(done, 1);
    cr_assert_eq(fork_runs, 1);
}

/* A caller blocked in ks_once (the word WAITED) whose signal handler forks:
 * in the child it comes back into the once's loop, where the runner does not
 * exist.  The generation used to be computed once per call, so the child
 * slept for ever; it is looked at again after every wait (glibc's
 * pthread_once re-reads its fork generation the same way). */
static pid_t handler_child;

static void fork_in_handler(int sig)
{
    (void)sig;
    pid_t c = fork();
    if (c == 0)
        alarm(10); /* the child hangs in the once without the fix: die instead */
    else
        __atomic_store_n(&handler_child, c, __ATOMIC_RELEASE);
}

struct kick {
    pthread_t target;
    pid_t tid;
    int status; /* the child's wait status */
    int reaped;
};

/* Kick the main thread once it sleeps in the once, reap the child its
 * handler forks, then let the parent's runner finish. */
static void *kick_when_asleep(void *p)
{
    struct kick *k = p;
    kt_wait_in_futex(k->tid, 10 * KS_NSEC_PER_SEC);
    pthread_kill(k->target, SIGUSR1);
    int64_t end = ks_now() + 10 * KS_NSEC_PER_SEC;
    while (__atomic_load_n(&handler_child, __ATOMIC_ACQUIRE) <= 0 && ks_now() < end)
        kt_sleep_ns(100000);
    pid_t c = __atomic_load_n(&handler_child, __ATOMIC_ACQUIRE);
    if (c > 0 && waitpid(c, &k->status, 0) == c)
        k->reaped = 1;
    __atomic_store_n(&fork_release, 1, __ATOMIC_RELEASE);
    return NULL;
}

Test(once, a_waiter_whose_signal_handler_forks_takes_over_in_the_child, .timeout = 60)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fork_in_handler; /* no SA_RESTART: the wait returns after it */
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    fork_parent = getpid();
    fork_once = (ks_once_t)KS_ONCE_INIT;
    fork_in_fn = fork_release = fork_runs = 0;
    handler_child = -1;
    pthread_t runner, kicker;
    kt_spawn(&runner, fork_runner, NULL);
    while (!__atomic_load_n(&fork_in_fn, __ATOMIC_ACQUIRE))
        sched_yield();
    struct kick k = {.target = pthread_self(), .tid = kt_gettid()};
    kt_spawn(&kicker, kick_when_asleep, &k);
    /* We wait in the once; the handler forks; in the child we return here. */
    int r = ks_once(&fork_once, fork_fn);
    if (getpid() != fork_parent) {
        alarm(0);
        _exit(r == 0 && fork_runs == 2 ? 0 : 1); /* the parent's start + ours */
    }
    kt_join(kicker);
    kt_join(runner);
    cr_assert_eq(r, 0);
    cr_assert(k.reaped, "the handler did not fork, or its child was not reaped");
    cr_assert(WIFEXITED(k.status) && WEXITSTATUS(k.status) == 0, "child made in the handler: %s %d",
              WIFEXITED(k.status) ? "failed check" : "killed by signal",
              WIFEXITED(k.status) ? WEXITSTATUS(k.status) : WTERMSIG(k.status));
}

/* ---- a cancelled init function (POSIX pthread_once) ------------------------------- */

static ks_once_t cancel_once = KS_ONCE_INIT;
static int cancel_started; /* atomic */
static int cancel_runs;    /* atomic: completed runs */

static void blocking_fn(void)
{
    __atomic_store_n(&cancel_started, 1, __ATOMIC_RELEASE);
    for (;;)
        pause(); /* a cancellation point */
}

static void counting_fn(void)
{
    __atomic_add_fetch(&cancel_runs, 1, __ATOMIC_RELAXED);
}

static void *cancelled_runner(void *p)
{
    (void)p;
    ks_once(&cancel_once, blocking_fn);
    return NULL;
}

static void *late_caller(void *p)
{
    (void)p;
    return (void *)(intptr_t)ks_once(&cancel_once, counting_fn);
}

Test(once, a_cancelled_fn_leaves_the_once_to_be_run_again, .timeout = 60)
{
    pthread_t r, w;
    kt_spawn(&r, cancelled_runner, NULL);
    while (!__atomic_load_n(&cancel_started, __ATOMIC_ACQUIRE))
        kt_sleep_ns(100000);
    /* A second caller sleeps behind the running fn. */
    kt_spawn(&w, late_caller, NULL);
    kt_sleep_ns(20 * KT_MS);
    cr_assert_eq(__atomic_load_n(&cancel_once.state, __ATOMIC_RELAXED) & 3u, KS_ONCE_WAITED,
                 "the second caller did not sleep behind the runner");
    cr_assert_eq(pthread_cancel(r), 0);
    void *res;
    cr_assert_eq(pthread_join(r, &res), 0);
    cr_assert_eq(res, PTHREAD_CANCELED);
    /* The sleeper woke and ran its own function, once. */
    cr_assert_eq((intptr_t)kt_join(w), 0);
    cr_assert_eq(__atomic_load_n(&cancel_runs, __ATOMIC_RELAXED), 1);
    cr_assert_eq(__atomic_load_n(&cancel_once.state, __ATOMIC_RELAXED), KS_ONCE_DONE);
    cr_assert_eq(ks_once(&cancel_once, counting_fn), 0);
    cr_assert_eq(__atomic_load_n(&cancel_runs, __ATOMIC_RELAXED), 1);
}

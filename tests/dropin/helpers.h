/* tests/dropin/helpers.h - fixtures shared by the drop-in layer's tests
 * (build/tests/dropin-tests).  These tests are plain pthread programs: they
 * never include ksync's headers, so the same binary runs on glibc and with
 * build/libksync-pthread.so preloaded, and encodes glibc's behaviour.
 *
 * Criterion asserts are made only from the test's main thread; worker
 * threads and forked children report through memory or the child's exit
 * status (0 = fine, anything else names the failed check), and the main
 * thread asserts on that.  Every wait is bounded: threads are joined with
 * pthread_timedjoin_np, children are reaped with a deadline (and carry an
 * alarm()), and every test has a Criterion .timeout.
 */
#ifndef DT_HELPERS_H
#define DT_HELPERS_H

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- time ---------------------------------------------------------------
 * A timed call must never return before its deadline (checked exactly,
 * against the clock the deadline was given on) and must not be seconds late
 * (checked with a generous bound: tests run two at a time on 2 shared cores). */
#define DT_MS 1000000LL
#define DT_S 1000000000LL
#define DT_LATE_NS (3 * DT_S)

static inline int64_t dt_ts_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * DT_S + ts->tv_nsec;
}

static inline int64_t dt_now(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return dt_ts_ns(&ts);
}

static inline struct timespec dt_ns_ts(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / DT_S), (long)(ns % DT_S)};
    return ts;
}

/* An absolute deadline ns from now on clock c. */
static inline struct timespec dt_deadline(clockid_t c, int64_t ns)
{
    return dt_ns_ts(dt_now(c) + ns);
}

/* A deadline whose tv_nsec is out of range (1e9), about a second ahead. */
static inline struct timespec dt_bad_nsec(clockid_t c)
{
    struct timespec ts = dt_deadline(c, 0);
    ts.tv_nsec = 1000000000L;
    return ts;
}

static inline void dt_sleep_ns(int64_t ns)
{
    struct timespec ts = dt_ns_ts(ns);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Assert that a timed call that just returned ETIMEDOUT did not return
 * before `dl` on clock c, nor absurdly late. */
#define dt_assert_not_early(c, dl, what)                                                  \
    do {                                                                                  \
        int64_t now_ = dt_now(c), dl_ = dt_ts_ns(&(dl));                                  \
        cr_assert_geq(now_, dl_, "%s: returned %lld ns before the deadline", (what),      \
                      (long long)(dl_ - now_));                                           \
        cr_assert_lt(now_ - dl_, DT_LATE_NS, "%s: %lld ms late", (what),                  \
                     (long long)((now_ - dl_) / DT_MS));                                  \
    } while (0)

static inline pid_t dt_gettid(void) { return (pid_t)syscall(SYS_gettid); }

/* ---- threads -------------------------------------------------------------- */

#define DT_MAX_THREADS 64
#define DT_JOIN_NS (20 * DT_S) /* default bound on a join */

static inline void dt_spawn(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int e = pthread_create(t, NULL, fn, arg);
    cr_assert_eq(e, 0, "pthread_create: %s", strerror(e));
}

/* Join t within ns; returns 0 (and *ret) or ETIMEDOUT (the thread still runs). */
static inline int dt_join_within(pthread_t t, int64_t ns, void **ret)
{
    struct timespec dl = dt_deadline(CLOCK_REALTIME, ns);
    void *r = NULL;
    int e = pthread_timedjoin_np(t, &r, &dl);
    if (e == 0 && ret)
        *ret = r;
    return e;
}

/* Join t (bounded) and return its value; a thread that does not finish
 * within DT_JOIN_NS fails the test. */
static inline void *dt_join(pthread_t t)
{
    void *r = NULL;
    int e = dt_join_within(t, DT_JOIN_NS, &r);
    cr_assert_eq(e, 0, "join: %s (a thread is stuck)", strerror(e));
    return r;
}

/* Run n copies of fn, the i-th with args + i * argsize, and join them. */
static inline void dt_run_threads(int n, void *(*fn)(void *), void *args, size_t argsize)
{
    pthread_t t[DT_MAX_THREADS];
    cr_assert_leq(n, DT_MAX_THREADS);
    for (int i = 0; i < n; i++)
        dt_spawn(&t[i], fn, (char *)args + (size_t)i * argsize);
    for (int i = 0; i < n; i++)
        dt_join(t[i]);
}

/* A start gate on an atomic counter (not on a pthread object: those are
 * what is under test).  n threads call dt_gate_pass(); all leave together. */
static inline void dt_gate_pass(int *gate, int n)
{
    __atomic_add_fetch(gate, 1, __ATOMIC_ACQ_REL);
    while (__atomic_load_n(gate, __ATOMIC_ACQUIRE) < n)
        sched_yield();
}

/* Poll cond(arg) until it holds or ns pass; returns whether it holds. */
static inline int dt_wait_for(int (*cond)(void *), void *arg, int64_t ns)
{
    int64_t end = dt_now(CLOCK_MONOTONIC) + ns;
    for (;;) {
        if (cond(arg))
            return 1;
        if (dt_now(CLOCK_MONOTONIC) > end)
            return 0;
        dt_sleep_ns(100000);
    }
}

/* Poll until the int at p reaches at least v (acquire), within ns. */
static inline int dt_wait_int(const int *p, int v, int64_t ns)
{
    int64_t end = dt_now(CLOCK_MONOTONIC) + ns;
    while (__atomic_load_n(p, __ATOMIC_ACQUIRE) < v) {
        if (dt_now(CLOCK_MONOTONIC) > end)
            return 0;
        dt_sleep_ns(100000);
    }
    return 1;
}

/* The scheduler state of task tid of process pid ('R', 'S', ...), from
 * /proc/<pid>/task/<tid>/stat; 0 if it cannot be read. */
static inline char dt_task_state(pid_t pid, pid_t tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", (int)pid, (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : 0;
}

/* Wait until task tid sleeps (state S, as in a futex wait after whatever
 * spinning the implementation does), seen twice 1 ms apart.  Returns whether
 * it was seen asleep within ns; if /proc cannot tell, waits 100 ms and says
 * yes.  Callers use it to know a thread has blocked in the call under test;
 * it is the thread's published tid that says it reached that call. */
static inline int dt_wait_sleeping_in(pid_t pid, pid_t tid, int64_t ns)
{
    int64_t end = dt_now(CLOCK_MONOTONIC) + ns;
    int seen = 0;
    for (;;) {
        char s = dt_task_state(pid, tid);
        if (s == 0) {
            dt_sleep_ns(100 * DT_MS);
            return 1;
        }
        seen = s == 'S' ? seen + 1 : 0;
        if (seen >= 2)
            return 1;
        if (dt_now(CLOCK_MONOTONIC) > end)
            return 0;
        dt_sleep_ns(DT_MS);
    }
}

static inline int dt_wait_sleeping(pid_t tid, int64_t ns)
{
    return dt_wait_sleeping_in(getpid(), tid, ns);
}

/* Wait for the tid a thread publishes at *tidp, then for it to sleep. */
static inline void dt_wait_blocked(const int *tidp, const char *what)
{
    cr_assert(dt_wait_int(tidp, 1, 10 * DT_S), "%s: thread never started", what);
    cr_assert(dt_wait_sleeping((pid_t)__atomic_load_n(tidp, __ATOMIC_ACQUIRE), 10 * DT_S),
              "%s: thread never blocked", what);
}

static inline void dt_publish_tid(int *tidp)
{
    __atomic_store_n(tidp, (int)dt_gettid(), __ATOMIC_RELEASE);
}

/* ---- processes ----------------------------------------------------------- */

/* Anonymous memory shared with fork()ed children, zero-filled. */
static inline void *dt_shared_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(p, MAP_FAILED, "mmap: %s", strerror(errno));
    return p;
}

static inline void dt_shared_free(void *p, size_t size) { munmap(p, size); }

/* fork(); the child arms alarm(20) (a hang becomes SIGALRM), runs fn(arg)
 * and _exit()s with its return value: 0 = ok, anything else names the check
 * that failed. */
static inline pid_t dt_fork(int (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        alarm(20);
        _exit(fn(arg));
    }
    return pid;
}

/* Reap pid within 30 s (else SIGKILL it and fail) and return its raw wait
 * status. */
static inline int dt_reap(pid_t pid)
{
    int st = 0;
    int64_t end = dt_now(CLOCK_MONOTONIC) + 30 * DT_S;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        cr_assert(r == 0 || (r < 0 && errno == EINTR), "waitpid: %s", strerror(errno));
        if (dt_now(CLOCK_MONOTONIC) > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            cr_assert_fail("child %d did not exit within 30 s", (int)pid);
        }
        dt_sleep_ns(DT_MS);
    }
}

/* Reap the child and assert it exited 0, naming `what` and telling a failed
 * check (its exit code) from a kill (its signal). */
static inline void dt_wait_child_named(pid_t pid, const char *what)
{
    int st = dt_reap(pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: %s %d", what,
              WIFEXITED(st) ? "child failed check" : "child killed by signal",
              WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

static inline void dt_wait_child(pid_t pid) { dt_wait_child_named(pid, "child"); }

/* In a child: fail with code `code` unless cond holds. */
#define DT_CHECK(cond, code)                                                              \
    do {                                                                                  \
        if (!(cond))                                                                      \
            return (code);                                                                \
    } while (0)

/* ---- signals --------------------------------------------------------------- */

static volatile sig_atomic_t dt_signals_seen __attribute__((unused));

static inline void dt_count_signal(int sig)
{
    (void)sig;
    dt_signals_seen++;
}

/* Install dt_count_signal for sig, with or without SA_RESTART. */
static inline void dt_install_handler(int sig, int restart)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = dt_count_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = restart ? SA_RESTART : 0;
    cr_assert_eq(sigaction(sig, &sa, NULL), 0);
}

/* Install dt_count_signal for SIGUSR1 without SA_RESTART, then send it to
 * thread t n times, period_ns apart: a blocking call there sees its futex
 * wait (or whatever it sleeps in) fail with EINTR, which POSIX lets only a
 * few functions report (sem_wait, sem_timedwait, ...): pthread_mutex_lock,
 * pthread_cond_wait, pthread_rwlock_*lock and pthread_barrier_wait "shall
 * not return an error code of [EINTR]".  Returns how many handler runs were
 * seen; the caller restores SIG_DFL with dt_pummel_end(). */
static inline int dt_pummel(pthread_t t, int n, int64_t period_ns)
{
    dt_install_handler(SIGUSR1, 0);
    dt_signals_seen = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_eq(pthread_kill(t, SIGUSR1), 0);
        dt_sleep_ns(period_ns);
    }
    int64_t end = dt_now(CLOCK_MONOTONIC) + 5 * DT_S;
    while (dt_signals_seen == 0 && dt_now(CLOCK_MONOTONIC) < end)
        dt_sleep_ns(DT_MS);
    return dt_signals_seen;
}

static inline void dt_pummel_end(void) { signal(SIGUSR1, SIG_DFL); }

/* ---- small things ------------------------------------------------------------ */

/* The result of f(arg) run in a fresh thread: another thread's view of an
 * object (EBUSY from a trylock there means "held by someone"). */
static inline int dt_in_thread(void *(*f)(void *), void *arg)
{
    pthread_t t;
    dt_spawn(&t, f, arg);
    return (int)(intptr_t)dt_join(t);
}

/* pthread_mutex_trylock from another thread; unlocks again if it got it. */
static inline void *dt_trylock_release_fn(void *m)
{
    int e = pthread_mutex_trylock(m);
    if (e == 0)
        pthread_mutex_unlock(m);
    return (void *)(intptr_t)e;
}

static inline int dt_trylock_elsewhere(pthread_mutex_t *m) { return dt_in_thread(dt_trylock_release_fn, m); }

#define DT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif

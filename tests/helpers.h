/* tests/helpers.h - small fixtures shared by ksync's Criterion tests:
 * threads released together through a start gate, MAP_SHARED anonymous
 * memory for fork() tests, per-thread CPU time, timing slack and a few
 * waiting helpers.  No test framework of its own: assertions are Criterion's.
 *
 * Criterion asserts are only made from the test's main thread; worker
 * threads and forked children report results through memory (or the child's
 * exit status) and the main thread asserts on them.
 */
#ifndef KS_TEST_HELPERS_H
#define KS_TEST_HELPERS_H

#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/hw_breakpoint.h>
#include <linux/perf_event.h>

#include <ksync.h>

/* A test that makes a peer "die" by hand keeps its handle for good (closing
 * it would give back a slot the test already had reaped): tell
 * LeakSanitizer that the handle is left on purpose. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define KT_LEAK_OK(p) __lsan_ignore_object(p)
#else
#define KT_LEAK_OK(p) ((void)(p))
#endif

/* ---- timing slack -------------------------------------------------------
 * Timed calls must never return before their deadline (checked exactly) and
 * must not be seconds late (checked with a generous bound: the suite runs
 * tests in parallel on 2 cores, and sanitizer builds are several times
 * slower). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KT_SANITIZED 1
#define KT_SLOW 4 /* multiply iteration-independent bounds by this */
#else
#define KT_SANITIZED 0
#define KT_SLOW 1
#endif
#define KT_MS 1000000LL
#define KT_LATE_NS (250 * KT_MS * KT_SLOW) /* "not seconds late" */

static inline int64_t kt_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void kt_sleep_ns(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static inline pid_t kt_gettid(void) { return (pid_t)syscall(SYS_gettid); }

/* The calling thread's futex call counts (ksync/debug.h). */
static inline struct ks_futex_stats kt_futex_stats(void)
{
    struct ks_futex_stats s;
    ks_futex_stats(&s);
    return s;
}

/* ---- threads -------------------------------------------------------------- */

#define KT_MAX_THREADS 128

/* A start gate: every worker calls kt_gate_pass() first, so all of them start
 * their loops together (and, with oversubscription, are all runnable). */
typedef struct kt_gate {
    pthread_barrier_t barrier;
} kt_gate_t;

static inline void kt_gate_init(kt_gate_t *g, unsigned n)
{
    cr_assert_eq(pthread_barrier_init(&g->barrier, NULL, n), 0);
}
static inline void kt_gate_pass(kt_gate_t *g) { pthread_barrier_wait(&g->barrier); }
static inline void kt_gate_destroy(kt_gate_t *g) { pthread_barrier_destroy(&g->barrier); }

static inline void kt_spawn(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int e = pthread_create(t, NULL, fn, arg);
    cr_assert_eq(e, 0, "pthread_create: %s", strerror(e));
}

static inline void *kt_join(pthread_t t)
{
    void *ret = NULL;
    int e = pthread_join(t, &ret);
    cr_assert_eq(e, 0, "pthread_join: %s", strerror(e));
    return ret;
}

/* Run n copies of fn, each with args + i * argsize, released together. */
static inline void kt_run_threads(int n, void *(*fn)(void *), void *args, size_t argsize)
{
    pthread_t t[KT_MAX_THREADS];
    cr_assert_leq(n, KT_MAX_THREADS);
    for (int i = 0; i < n; i++)
        kt_spawn(&t[i], fn, (char *)args + (size_t)i * argsize);
    for (int i = 0; i < n; i++)
        kt_join(t[i]);
}

/* Poll cond(arg) until it holds or timeout_ns passes; returns whether it holds.
 * Yields between polls (2 cores, many threads). */
static inline int kt_wait_for(int (*cond)(void *), void *arg, int64_t timeout_ns)
{
    int64_t end = ks_now() + timeout_ns;
    for (;;) {
        if (cond(arg))
            return 1;
        if (ks_now() > end)
            return 0;
        sched_yield();
    }
}

/* Is task `tid` (a thread of this process, or with tgid != 0 a process)
 * blocked inside the futex system call right now?  /proc/.../syscall starts
 * with the syscall number for a task blocked in a syscall.  Returns -1 if
 * the file cannot be read. */
static inline int kt_in_futex_at(const char *path)
{
    char buf[128];
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    if (n == 0)
        return -1;
    buf[n] = 0;
    char *end;
    long nr = strtol(buf, &end, 10);
    if (end == buf)
        return 0; /* "running" */
    return nr == SYS_futex || nr == 449 /* futex_waitv */
#ifdef SYS_futex_time64
           || nr == SYS_futex_time64
#endif
        ;
}

static inline int kt_in_futex(pid_t tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    return kt_in_futex_at(path);
}

static inline int kt_wait_in_futex_at(const char *path, int64_t timeout_ns)
{
    int64_t end = ks_now() + timeout_ns;
    for (;;) {
        int r = kt_in_futex_at(path);
        if (r < 0) {
            kt_sleep_ns(100 * KT_MS);
            return 1;
        }
        if (r)
            return 1;
        if (ks_now() > end)
            return 0;
        kt_sleep_ns(200000);
    }
}

/* Wait until thread `tid` of this process sleeps in futex(2) (or, if /proc
 * cannot tell us, give it 100 ms).  Returns whether it was seen asleep. */
static inline int kt_wait_in_futex(pid_t tid, int64_t timeout_ns)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    return kt_wait_in_futex_at(path, timeout_ns);
}

/* The same for a child process (its main thread). */
static inline int kt_wait_child_in_futex(pid_t pid, int64_t timeout_ns)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    return kt_wait_in_futex_at(path, timeout_ns);
}

/* ---- processes ----------------------------------------------------------- */

/* Anonymous memory shared with fork()ed children. */
static inline void *kt_shared_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(p, MAP_FAILED, "mmap: %s", strerror(errno));
    memset(p, 0, size);
    return p;
}

static inline void kt_shared_free(void *p, size_t size) { munmap(p, size); }

/* fork(); the child runs fn(arg) and _exit()s with its return value (0 = ok,
 * anything else names the check that failed). */
/* The kinds of fork a careless (or careful) program uses.  Only fork()
 * runs pthread_atfork handlers; _Fork() (POSIX 2024, glibc 2.34) and a raw
 * clone without CLONE_VM make the same kind of child without them, so a
 * library that resets per-process state only in an atfork handler leaves
 * the child with the parent's. */
enum kt_fork_kind { KT_FORK, KT_UFORK, KT_RAW_CLONE, KT_FORK_KINDS };

static inline pid_t kt_fork_as(enum kt_fork_kind kind, int (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid;
    switch (kind) {
    case KT_FORK: pid = fork(); break;
    case KT_UFORK: pid = _Fork(); break;
    default: pid = (pid_t)syscall(SYS_clone, (long)SIGCHLD, 0L, 0L, 0L, 0L); break;
    }
    cr_assert_geq(pid, 0, "fork kind %d: %s", (int)kind, strerror(errno));
    if (pid == 0)
        _exit(fn(arg));
    return pid;
}

static const char *const kt_fork_names[] __attribute__((unused)) = {"fork", "_Fork", "clone"};

static inline pid_t kt_fork(int (*fn)(void *), void *arg) { return kt_fork_as(KT_FORK, fn, arg); }

/* Reap the child and assert it exited with status 0, naming `what` and
 * telling a failed check (its exit code) from a kill (its signal: an
 * alarm() in the child turns a hang into SIGALRM). */
static inline void kt_wait_child_named(pid_t pid, const char *what)
{
    int st = 0;
    pid_t r;
    while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
        ;
    cr_assert_eq(r, pid, "waitpid: %s", strerror(errno));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: %s %d", what,
              WIFEXITED(st) ? "failed check" : "killed by signal",
              WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

/* Reap the child and assert it exited with status 0. */
static inline void kt_wait_child(pid_t pid) { kt_wait_child_named(pid, "child"); }

/* Reap a child whatever its end; its raw wait status (for WIFSIGNALED). */
static inline int kt_reap(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return st;
}

/* ---- signals --------------------------------------------------------------- */

/* A handler installed without SA_RESTART, so a blocking syscall interrupted
 * by it returns EINTR to the library, which must hide it. */
static volatile sig_atomic_t kt_signals_seen __attribute__((unused));

static inline void kt_count_signal(int sig)
{
    (void)sig;
    kt_signals_seen++;
}

static inline void kt_install_eintr_handler(int sig)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = kt_count_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART */
    cr_assert_eq(sigaction(sig, &sa, NULL), 0);
}

/* Send `sig` to thread t every period_ns until *done becomes nonzero. */
static inline long kt_pummel(pthread_t t, int sig, const int *done, int64_t period_ns)
{
    long sent = 0;
    while (!__atomic_load_n(done, __ATOMIC_ACQUIRE)) {
        if (pthread_kill(t, sig) == 0)
            sent++;
        kt_sleep_ns(period_ns);
    }
    return sent;
}

/* ---- hardware watchpoints ---------------------------------------------------
 * "Touches nothing after the releasing atomic" (docs/pitfalls.md) is a property
 * of single instructions, which no amount of racing reliably catches.  A
 * debug-register watchpoint on the object (perf_event_open with sigtrap,
 * Linux >= 5.13) traps after every user-space load or store to it; the
 * handler asks the test whether the object has already been released at
 * that moment.  The releasing atomic itself is the one access allowed to
 * see "released" (the trap comes after the instruction); any other is an
 * access after release, the bug behind glibc 13690 and 12674. */
struct kt_watch {
    int fd[4];
    int n;
    int (*released)(void); /* called in the handler, with the watch disabled */
    volatile int hits;     /* accesses seen */
    volatile int after;    /* accesses that saw the object released */
};

static struct kt_watch *kt_watch_cur __attribute__((unused));

static inline void kt_watch_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)si;
    (void)uc;
    struct kt_watch *w = kt_watch_cur;
    int e = errno;
    for (int i = 0; i < w->n; i++)
        ioctl(w->fd[i], PERF_EVENT_IOC_DISABLE, 0);
    w->hits++;
    if (w->released())
        w->after++;
    for (int i = 0; i < w->n; i++)
        ioctl(w->fd[i], PERF_EVENT_IOC_ENABLE, 0);
    errno = e;
}

/* Set up a watch of the calling thread's accesses to [addr, addr+len), len 1,
 * 2, 4 or 8 and addr aligned to it.  Returns 0, or -1 when the system has no
 * usable hardware breakpoints (the caller then skips). */
static inline int kt_watch_add(struct kt_watch *w, const void *addr, int len)
{
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.type = PERF_TYPE_BREAKPOINT;
    a.size = sizeof a;
    a.bp_type = HW_BREAKPOINT_RW;
    a.bp_addr = (uint64_t)(uintptr_t)addr;
    a.bp_len = (uint64_t)len;
    a.sample_period = 1;
    a.disabled = 1;
    a.exclude_kernel = 1; /* the futex syscall may use the address */
    a.exclude_hv = 1;
    a.sigtrap = 1;
    a.remove_on_exec = 1;
    int fd = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0)
        return -1;
    w->fd[w->n++] = fd;
    return 0;
}

/* Enable the watch with `handler` for its traps (kt_watch_handler, which
 * counts accesses after release, unless a test needs another). */
static inline void kt_watch_begin_with(struct kt_watch *w, int (*released)(void),
                                       void (*handler)(int, siginfo_t *, void *))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTRAP, &sa, NULL);
    w->released = released;
    w->hits = 0;
    w->after = 0;
    kt_watch_cur = w;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    for (int i = 0; i < w->n; i++)
        ioctl(w->fd[i], PERF_EVENT_IOC_ENABLE, 0);
}

static inline void kt_watch_begin(struct kt_watch *w, int (*released)(void))
{
    kt_watch_begin_with(w, released, kt_watch_handler);
}

static inline void kt_watch_end(struct kt_watch *w)
{
    for (int i = 0; i < w->n; i++)
        ioctl(w->fd[i], PERF_EVENT_IOC_DISABLE, 0);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

static inline void kt_watch_close(struct kt_watch *w)
{
    for (int i = 0; i < w->n; i++)
        close(w->fd[i]);
    w->n = 0;
}


/* The frame of the "a waiter touches nothing after X" tests: a waiter
 * thread watches the object, publishes its tid, makes the watched call and
 * reports what the watch saw; the test thread waits for the tid (a
 * negative one: no hardware watchpoints, skip) and releases the waiter.
 *   waiter:  if (kt_watched_open(&ww->w, &w, obj, sizeof *obj)) return NULL;
 *            kt_watch_begin(&w, released); kt_watched_ready(&ww->w);
 *            ...the call...; kt_watch_end(&w); kt_watched_close(&ww->w, &w);
 *   test:    KT_SKIP_WATCH_UNDER_TSAN(); ... pid_t tid = KT_WATCHED_TID(&ww.w, t);
 * kt_watched_open watches len bytes at obj in 8-byte pieces and a 4-byte
 * tail (obj aligned to 8). */
struct kt_watched {
    int hits, after; /* copied from the watch when the waiter is done */
    pid_t tid;       /* 0 until watched, -1 if there is no watchpoint */
};

static inline int kt_watched_open(struct kt_watched *ww, struct kt_watch *w, const void *obj, int len)
{
    w->n = 0;
    for (int off = 0; off < len; off += 8)
        if (kt_watch_add(w, (const char *)obj + off, len - off >= 8 ? 8 : 4) != 0) {
            kt_watch_close(w);
            __atomic_store_n(&ww->tid, -1, __ATOMIC_RELEASE);
            return -1;
        }
    return 0;
}

static inline void kt_watched_ready(struct kt_watched *ww)
{
    __atomic_store_n(&ww->tid, kt_gettid(), __ATOMIC_RELEASE);
}

static inline void kt_watched_close(struct kt_watched *ww, struct kt_watch *w)
{
    kt_watch_close(w);
    ww->hits = w->hits;
    ww->after = w->after;
}

/* The waiter's tid once it is watched; skips the test (after joining the
 * waiter) where there are no hardware watchpoints. */
#define KT_WATCHED_TID(ww, thread)                                                          \
    ({                                                                                      \
        pid_t tid_;                                                                         \
        while (!(tid_ = __atomic_load_n(&(ww)->tid, __ATOMIC_ACQUIRE)))                     \
            sched_yield();                                                                  \
        if (tid_ < 0) {                                                                     \
            kt_join(thread);                                                                \
            cr_skip_test("no hardware watchpoints here");                                   \
        }                                                                                   \
        tid_;                                                                               \
    })

/* TSan runs the atomics inside its runtime and defers signal handlers, so a
 * watchpoint's verdict can come after the other thread's release. */
#ifdef __SANITIZE_THREAD__
#define KT_SKIP_WATCH_UNDER_TSAN() cr_skip_test("watchpoint verdicts are not timely under ThreadSanitizer")
#else
#define KT_SKIP_WATCH_UNDER_TSAN() ((void)0)
#endif


/* ---- allocation failure ------------------------------------------------
 * A capacity that passes validation but cannot be allocated (16 TiB) must
 * give ENOMEM.  Outside sanitizers the address-space limit is lowered to
 * 4 TiB meanwhile, so that a host with overcommit_memory=1 refuses too
 * (instead of the library touching 16 TiB); under ASan the allocator's
 * maximum allocation size refuses it (make asan sets
 * allocator_may_return_null=1). */
static inline void kt_limit_address_space(struct rlimit *old)
{
    cr_assert_eq(getrlimit(RLIMIT_AS, old), 0);
    if (KT_SANITIZED)
        return;
    struct rlimit lim = *old;
    lim.rlim_cur = 4ull << 40;
    if (old->rlim_cur == RLIM_INFINITY || old->rlim_cur > lim.rlim_cur)
        cr_assert_eq(setrlimit(RLIMIT_AS, &lim), 0);
}

static inline void kt_restore_address_space(const struct rlimit *old)
{
    if (!KT_SANITIZED)
        setrlimit(RLIMIT_AS, old);
}

/* Join t if it returns by `deadline` (CLOCK_MONOTONIC ns); 0 if it did not
 * (a lost wake-up then fails the test instead of hanging it). */
static inline int kt_join_by(pthread_t t, int64_t deadline)
{
    struct timespec ts = {(time_t)(deadline / KS_NSEC_PER_SEC), (long)(deadline % KS_NSEC_PER_SEC)};
    int e = pthread_clockjoin_np(t, NULL, CLOCK_MONOTONIC, &ts);
    cr_assert(e == 0 || e == ETIMEDOUT, "pthread_clockjoin_np: %s", strerror(e));
    return e == 0;
}

/* ---- two locks at once: the course's bank transfer (ks_*_lock2) ------------------- */

/* One primitive's calls through void *, so that the mutex, rmutex and
 * rwlock tests of lock2 share the two fixtures below. */
struct kt_lock2_ops {
    int (*lock)(void *l);
    int (*unlock)(void *l);
    int (*trylock)(void *l);
    int (*lock2)(void *a, void *b);
    int (*timedlock2)(void *a, void *b, int64_t deadline);
    int (*unlock2)(void *a, void *b);
};

/* 16 threads on 2 CPUs move money between KT_ACCOUNTS accounts, each
 * transfer taking lock[from] and lock[to] in the order the arguments come
 * (opposite orders between threads; from == to sometimes), which with
 * plain lock(from); lock(to) is the AB-BA deadlock; the total must be
 * conserved, every balance being touched only under its lock. */
#define KT_ACCOUNTS 4
struct kt_bank {
    const struct kt_lock2_ops *ops;
    void *lock[KT_ACCOUNTS];
    long balance[KT_ACCOUNTS];
    int rounds;
};

static inline void *kt_bank_worker(void *p)
{
    struct kt_bank *b = p;
    unsigned r = (unsigned)(uintptr_t)&r;
    for (int i = 0; i < b->rounds; i++) {
        r = r * 1103515245u + 12345u;
        int from = (int)((r >> 8) % KT_ACCOUNTS), to = (int)((r >> 16) % KT_ACCOUNTS);
        cr_assert_eq(b->ops->lock2(b->lock[from], b->lock[to]), 0);
        b->balance[from] -= 7;
        b->balance[to] += 7;
        cr_assert_eq(b->ops->unlock2(b->lock[to], b->lock[from]), 0); /* either order */
    }
    return NULL;
}

/* locks: KT_ACCOUNTS initialised objects. */
static inline void kt_bank_run(const struct kt_lock2_ops *ops, void *const *locks, int threads)
{
    struct kt_bank b = {.ops = ops, .rounds = 20000};
    pthread_t t[KT_MAX_THREADS];
    for (int i = 0; i < KT_ACCOUNTS; i++) {
        b.lock[i] = locks[i];
        b.balance[i] = 1000;
    }
    for (int i = 0; i < threads; i++)
        kt_spawn(&t[i], kt_bank_worker, &b);
    for (int i = 0; i < threads; i++)
        kt_join(t[i]);
    long total = 0;
    for (int i = 0; i < KT_ACCOUNTS; i++)
        total += b.balance[i];
    cr_assert_eq(total, 1000L * KT_ACCOUNTS, "money created or lost: %ld", total);
}

struct kt_lock2_hold {
    const struct kt_lock2_ops *ops;
    void *l;
    int held, release; /* flags: the holder has it; it may let go */
};

static inline void *kt_lock2_holder(void *p)
{
    struct kt_lock2_hold *h = p;
    cr_assert_eq(h->ops->lock(h->l), 0);
    __atomic_store_n(&h->held, 1, __ATOMIC_RELEASE); /* pairs with kt_lock2_is_held */
    while (!__atomic_load_n(&h->release, __ATOMIC_ACQUIRE)) /* pairs with the store in the contract */
        kt_sleep_ns(KT_MS);
    cr_assert_eq(h->ops->unlock(h->l), 0);
    return NULL;
}

static inline int kt_lock2_is_held(void *p)
{
    return __atomic_load_n(&((struct kt_lock2_hold *)p)->held, __ATOMIC_ACQUIRE);
}

/* x and y: two free objects.  A timed lock2 whose second lock (the higher
 * address) stays held by another thread times out and gives the first
 * back; the same object twice is taken and released once; NULL and a
 * negative deadline are EINVAL and take nothing. */
static inline void kt_lock2_contract(const struct kt_lock2_ops *o, void *x, void *y)
{
    void *hi = (uintptr_t)x < (uintptr_t)y ? y : x, *lo = hi == x ? y : x;
    struct kt_lock2_hold h = {o, hi, 0, 0};
    pthread_t t;
    kt_spawn(&t, kt_lock2_holder, &h); /* the one taken second */
    /* held for sure before the timed lock2 (a fixed sleep was not, under
     * ASan on a loaded machine) */
    cr_assert(kt_wait_for(kt_lock2_is_held, &h, 10 * KS_NSEC_PER_SEC), "the holder never took it");
    cr_assert_eq(o->timedlock2(hi, lo, ks_deadline_after(20 * KT_MS)), ETIMEDOUT);
    cr_assert_eq(o->trylock(lo), 0, "the first was given back");
    cr_assert_eq(o->unlock(lo), 0);
    __atomic_store_n(&h.release, 1, __ATOMIC_RELEASE); /* pairs with the holder's acquire */
    kt_join(t);
    cr_assert_eq(o->lock2(x, x), 0, "the same lock twice is taken once");
    cr_assert_eq(o->unlock2(x, x), 0);
    cr_assert_eq(o->trylock(x), 0, "and released once");
    cr_assert_eq(o->unlock(x), 0);
    cr_assert_eq(o->lock2(NULL, x), EINVAL);
    cr_assert_eq(o->lock2(x, NULL), EINVAL);
    cr_assert_eq(o->unlock2(NULL, x), EINVAL);
    cr_assert_eq(o->timedlock2(x, y, -1), EINVAL);
    cr_assert_eq(o->trylock(x), 0, "a refused call took nothing");
    cr_assert_eq(o->unlock(x), 0);
}

/* ---- "not a cancellation point" ------------------------------------------
 * Run calls(arg) on a new thread, then that thread's own
 * pthread_testcancel(); calls() makes a cancel pending (pthread_cancel of
 * pthread_self()) before the call under test.  Returns 1 if calls()
 * returned (the pending cancel did not act inside it) and the thread then
 * ended cancelled at its own pthread_testcancel().  calls() is reached
 * through a pointer and the trampoline has no local whose address is taken:
 * under ASan the frames a cancel unwinds keep their stack redzones
 * poisoned, and the thread's exit then writes there. */
struct kt_cancel_run {
    void (*calls)(void *);
    void *arg;
    int returned;
};

static inline void *kt_cancel_trampoline(void *p)
{
    struct kt_cancel_run *r = p;
    r->calls(r->arg);
    __atomic_store_n(&r->returned, 1, __ATOMIC_RELEASE); /* read after the join */
    pthread_testcancel();
    return NULL;
}

static inline int kt_returned_then_cancelled(void (*calls)(void *), void *arg)
{
    struct kt_cancel_run r = {calls, arg, 0};
    pthread_t t;
    kt_spawn(&t, kt_cancel_trampoline, &r);
    void *res = kt_join(t);
    return __atomic_load_n(&r.returned, __ATOMIC_ACQUIRE) && res == PTHREAD_CANCELED;
}

#endif

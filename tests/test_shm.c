/* tests/test_shm.c - the KS_SHARED objects between unrelated processes, and
 * what a peer's death leaves behind (docs/shared.md).
 *
 * Every test makes one shm_open segment and starts this binary again
 * (posix_spawn of /proc/self/exe, its role in the environment) as the other
 * process or processes: they share nothing with the test but the segment's
 * name.  A helper maps the segment after a spacer, and maps it again if it
 * still landed where the test has it, so the two sides always use different
 * addresses for the same objects (asserted by every spawn): the futex keys
 * of a shared mapping are (inode, offset), not addresses.
 *
 *  - Each blocking primitive between processes, with a checked invariant:
 *    ks_mutex and ks_rmutex (a non-atomic counter), ks_cond with ks_mutex
 *    (ping-pong, each step seen in order), ks_sem (producer/consumer,
 *    values and checksum), ks_event (set/wait rounds), ks_barrier (three
 *    processes, no overtaking, one serial per phase), ks_rwlock (a two-word
 *    value never seen torn, both policies), ks_robust (owner SIGKILLed while
 *    holding: EOWNERDEAD, then consistent), ks_queue, ks_pool and ks_once
 *    (items in order and join, exclusive resources, one run); a sleeper in
 *    one process woken from the other for each; a KS_PRIVATE object in the
 *    segment shown not to wake the other process (why KS_SHARED).
 *  - A peer SIGKILLed at the worst moments (docs/shared.md's table): while
 *    waiting in a cond, sem, event or barrier, in a mutex (in its first
 *    sleep, and after it set STARVING: a gap, shown) or in an rwlock's
 *    write lock (readers locked out: shown); while holding the cond's mutex
 *    (and a mutex, rmutex, rwlock); between a sem post's CAS and its wake,
 *    an event set's CAS and its wake, a cond signal's increment and its
 *    wake, a barrier's last arrival and its wake (a hardware watchpoint
 *    kills the helper right after the instruction, as tests/test_robust.c
 *    does); and a storm of kills of a posting process.  Where the design
 *    promises survival the survivor's call carries a deadline, so a hang
 *    fails the test instead of blocking it; where it cannot survive (a
 *    barrier waits for ever), the test shows the blocked process still
 *    asleep and kills it.
 */
#include "helpers.h"

#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <sys/stat.h>

extern char **environ;

#define SEG_BYTES 65536
#define NPROC 8
#define NO_WATCH 77               /* a helper's exit status: no hardware watchpoints here */
#define LONG_NS (20000 * KT_MS)   /* "should not hang": a helper's own deadline */
#define WOKEN_NS (2000 * KT_MS * KT_SLOW) /* a wake across processes arrives within this */
/* A deadline the test gives a helper that must not be woken before it:
 * room for spawning a few helpers and seeing them asleep. */
#define MARGIN_NS ((1000 + 250 * KT_SLOW) * KT_MS)

/* ---- the segment ---------------------------------------------------------------- */

/* Every segment starts with this header; a test's objects follow it. */
struct hdr {
    uintptr_t addr[NPROC];  /* where process i mapped the segment (0: the test) */
    uint32_t go;            /* the start gate of the helpers that use one */
    uint32_t fire;          /* go for a watched helper's call */
    uint32_t step[NPROC];   /* progress marks of helper i (release/acquire) */
    int rc[NPROC];          /* what helper i's call returned */
    int64_t t_ret[NPROC];   /* when it returned (CLOCK_MONOTONIC: one clock for all) */
    int64_t deadline;       /* a deadline the test hands its helpers */
    char fail[NPROC][160];  /* the first check helper i saw fail */
};

/* Non-atomic: a read, a pause, a write, so that two unprotected increments
 * lose one (volatile keeps both accesses). */
static void slow_increment(volatile long *c, int i)
{
    long v = *c;
    if ((i & 255) == 0)
        sched_yield();
    else
        for (int k = 0; k < 8; k++)
            ks_cpu_relax();
    *c = v + 1;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

/* A failed check of process idx: the message goes to the segment, for the
 * test to print. */
__attribute__((format(printf, 4, 5))) static int h_fail(struct hdr *h, int idx, int line, const char *fmt, ...)
{
    if (h->fail[idx][0])
        return 1;
    int n = snprintf(h->fail[idx], sizeof h->fail[idx], "line %d: ", line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->fail[idx] + n, sizeof h->fail[idx] - (size_t)n, fmt, ap);
    va_end(ap);
    return 1;
}
#define CHECK(h, idx, cond, ...)                             \
    do {                                                     \
        if (!(cond))                                         \
            return h_fail((h), (idx), __LINE__, __VA_ARGS__); \
    } while (0)

static void mark(struct hdr *h, int idx, uint32_t v)
{
    /* release: pairs with wait_step's acquire, so what was written before is seen */
    __atomic_store_n(&h->step[idx], v, __ATOMIC_RELEASE);
}

/* A helper's result, then its mark 9 ("returned"). */
static void result(struct hdr *h, int idx, int rc)
{
    h->t_ret[idx] = ks_now();
    h->rc[idx] = rc;
    mark(h, idx, 9);
}

static void wait_flag(const uint32_t *f)
{
    /* acquire: pairs with the test's release store of the flag */
    while (!__atomic_load_n(f, __ATOMIC_ACQUIRE))
        kt_sleep_ns(50000);
}

static void raise_flag(uint32_t *f)
{
    __atomic_store_n(f, 1, __ATOMIC_RELEASE); /* release: pairs with wait_flag */
}

/* ---- the test's side: segment, helpers, reaping ---------------------------------- */

static char seg_name[64];
static struct hdr *cur;
static pid_t kids[NPROC];

static void *seg_new(void)
{
    static int counter;
    snprintf(seg_name, sizeof seg_name, "/ksync-test-shm-%d-%d", (int)getpid(), ++counter);
    shm_unlink(seg_name);
    int fd = shm_open(seg_name, O_RDWR | O_CREAT | O_EXCL, 0600);
    cr_assert_geq(fd, 0, "shm_open %s: %s", seg_name, strerror(errno));
    cr_assert_eq(ftruncate(fd, SEG_BYTES), 0);
    void *p = mmap(NULL, SEG_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    cr_assert_neq(p, MAP_FAILED, "mmap: %s", strerror(errno));
    cur = p;
    cur->addr[0] = (uintptr_t)p;
    return p;
}

/* Kill and reap whatever helper is left, unlink the segment: after every
 * test, failed or not. */
static void shm_fini(void)
{
    for (int i = 0; i < NPROC; i++)
        if (kids[i] > 0) {
            kill(kids[i], SIGKILL);
            waitpid(kids[i], NULL, 0);
            kids[i] = 0;
        }
    if (seg_name[0])
        shm_unlink(seg_name);
    seg_name[0] = 0;
    if (cur)
        munmap(cur, SEG_BYTES);
    cur = NULL;
}

TestSuite(shm, .fini = shm_fini);

/* Non-blocking reap: the status, or -1 while it runs. */
static int try_reap(int idx)
{
    int st = 0;
    pid_t r = waitpid(kids[idx], &st, WNOHANG);
    if (r == 0)
        return -1;
    cr_assert_eq(r, kids[idx], "waitpid: %s", strerror(errno));
    kids[idx] = 0;
    return st;
}

/* Criterion runs no .fini after a skip: clean up first. */
static void skip_no_watch(void)
{
    shm_fini();
    cr_skip_test("no hardware watchpoints here");
}

static void died(int idx, int st, const char *what)
{
    if (WIFEXITED(st) && WEXITSTATUS(st) == NO_WATCH)
        skip_no_watch();
    cr_assert_fail("%s (helper %d) ended early: %s %d; %s", what, idx, WIFEXITED(st) ? "exit" : "signal",
            WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), cur->fail[idx][0] ? cur->fail[idx] : "-");
}

/* Start helper idx in role `role`, and wait until it has mapped the
 * segment somewhere else. */
static pid_t spawn(const char *role, int idx)
{
    char e1[96], e2[64], e3[32];
    cur->addr[idx] = 0; /* this helper's slots, cleared of an earlier one's */
    cur->step[idx] = 0;
    cur->rc[idx] = 0;
    cur->t_ret[idx] = 0;
    cur->fail[idx][0] = 0;
    snprintf(e1, sizeof e1, "KT_SHM_NAME=%s", seg_name);
    snprintf(e2, sizeof e2, "KT_SHM_ROLE=%s", role);
    snprintf(e3, sizeof e3, "KT_SHM_INDEX=%d", idx);
    int n = 0;
    while (environ[n])
        n++;
    char **env = calloc((size_t)n + 4, sizeof *env);
    cr_assert_not_null(env);
    memcpy(env, environ, (size_t)n * sizeof *env); /* ASAN_OPTIONS and the rest */
    env[n] = e1;
    env[n + 1] = e2;
    env[n + 2] = e3;
    char *argv[] = {"ksync-shm-helper", (char *)role, NULL};
    pid_t pid;
    int e = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, env);
    free(env);
    cr_assert_eq(e, 0, "posix_spawn: %s", strerror(e));
    kids[idx] = pid;
    int64_t end = ks_now() + 10000 * KT_MS * KT_SLOW;
    /* acquire: pairs with the helper's release store of its address */
    while (!__atomic_load_n(&cur->addr[idx], __ATOMIC_ACQUIRE)) {
        int st = try_reap(idx);
        if (st != -1)
            died(idx, st, role);
        cr_assert_lt(ks_now(), end, "%s: not mapped after 10 s", role);
        kt_sleep_ns(100000);
    }
    cr_assert_neq(cur->addr[idx], cur->addr[0], "%s mapped the segment where the test has it", role);
    return pid;
}

static void wait_step(int idx, uint32_t v, const char *what)
{
    int64_t end = ks_now() + 10000 * KT_MS * KT_SLOW;
    /* acquire: pairs with mark()'s release */
    while (__atomic_load_n(&cur->step[idx], __ATOMIC_ACQUIRE) < v) {
        int st = try_reap(idx);
        if (st != -1)
            died(idx, st, what);
        cr_assert_lt(ks_now(), end, "%s: step %u not reached in 10 s", what, v);
        kt_sleep_ns(100000);
    }
}

/* Reap helper idx by `deadline`: its status, or -1 if it still runs. */
static int reap_by(int idx, int64_t deadline)
{
    for (;;) {
        int st = try_reap(idx);
        if (st != -1 || ks_now() >= deadline)
            return st;
        kt_sleep_ns(200000);
    }
}

/* The helper must exit 0 within 30 s (its own checks carry deadlines). */
static void expect_ok(int idx, const char *what)
{
    int st = reap_by(idx, ks_now() + 30000 * KT_MS);
    cr_assert_neq(st, -1, "%s (helper %d) still runs after 30 s", what, idx);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        died(idx, st, what);
}

static void kill_kid(int idx)
{
    pid_t pid = kids[idx];
    cr_assert_gt(pid, 0);
    kill(pid, SIGKILL);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    kids[idx] = 0;
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "helper %d: status %#x (%s)", idx, st,
              cur->fail[idx]);
}

/* The watched helper idx must die by SIGKILL (its own). */
static void expect_killed(int idx, const char *what)
{
    int st = reap_by(idx, ks_now() + 10000 * KT_MS * KT_SLOW);
    cr_assert_neq(st, -1, "%s: still running", what);
    if (WIFEXITED(st) && WEXITSTATUS(st) == NO_WATCH)
        skip_no_watch();
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: status %#x (%s)", what, st, cur->fail[idx]);
}

static void in_futex(int idx, const char *what)
{
    cr_assert(kt_wait_child_in_futex(kids[idx], 5000 * KT_MS * KT_SLOW), "%s: not asleep in futex(2)", what);
}

/* Helper idx is still blocked: alive, and asleep in futex(2). */
static void still_asleep(int idx, const char *what)
{
    int st = try_reap(idx);
    if (st != -1)
        cr_assert_fail("%s: returned (status %#x, rc %d)", what, st, cur->rc[idx]);
    /* A KS_SHARED sleep ends every KS_PEER_RECHECK_NS (src/futex.c) and
     * sleeps again at once: look for up to 200 ms. */
    cr_assert(kt_wait_child_in_futex(kids[idx], 200 * KT_MS * KT_SLOW), "%s: alive but not in futex(2)", what);
}

/* ---- hardware watchpoints: die right after an instruction ------------------------- */

/* A helper arms a watch on one word of an object; after each access of
 * its own the handler asks `moment` whether that access was the one to
 * die after (the word shows it), and SIGKILLs its own process if so. */
static struct {
    struct kt_watch w;
    int (*moment)(void);
    const void *obj;
    uint32_t before;
} dw;

static void dw_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig, (void)si, (void)uc;
    for (int i = 0; i < dw.w.n; i++)
        ioctl(dw.w.fd[i], PERF_EVENT_IOC_DISABLE, 0);
    if (dw.moment())
        kill(getpid(), SIGKILL);
    for (int i = 0; i < dw.w.n; i++)
        ioctl(dw.w.fd[i], PERF_EVENT_IOC_ENABLE, 0);
}

static int dw_unused(void) { return 0; }

/* Arm (0) or NO_WATCH. */
static int dw_arm(const void *word, int len, int (*moment)(void))
{
    dw.w.n = 0;
    dw.moment = moment;
    return kt_watch_add(&dw.w, word, len) ? NO_WATCH : 0;
}

static void dw_begin(void) { kt_watch_begin_with(&dw.w, dw_unused, dw_handler); }

/* ================================================================================ */
/* 1. Each primitive between two unrelated processes                                 */
/* ================================================================================ */

/* ---- ks_mutex, ks_rmutex: a non-atomic counter ---------------------------------- */

#define MX_ITERS 30000

struct mx_seg {
    struct hdr h;
    ks_mutex_t m;
    ks_rmutex_t r;
    volatile long counter;
};

/* lock, timedlock and a trylock loop in turn */
static int mx_lock(ks_mutex_t *m, int i)
{
    int e;
    switch (i % 3) {
    case 0: return ks_mutex_lock(m);
    case 1: return ks_mutex_timedlock(m, ks_deadline_after(LONG_NS));
    default:
        while ((e = ks_mutex_trylock(m)) == EBUSY)
            sched_yield();
        return e;
    }
}

static int mutex_count(struct mx_seg *s, int me)
{
    for (int i = 0; i < MX_ITERS; i++) {
        int e = mx_lock(&s->m, i);
        CHECK(&s->h, me, e == 0, "lock %d: %d", i, e);
        slow_increment(&s->counter, i);
        CHECK(&s->h, me, (e = ks_mutex_unlock(&s->m)) == 0, "unlock: %d", e);
    }
    return 0;
}

/* Recursive: the count is bumped at depth 2, and the other process's id is
 * never taken for this one's. */
static int rmutex_count(struct mx_seg *s, int me)
{
    for (int i = 0; i < MX_ITERS; i++) {
        int e = (i & 1) ? ks_rmutex_lock(&s->r) : ks_rmutex_timedlock(&s->r, ks_deadline_after(LONG_NS));
        CHECK(&s->h, me, e == 0, "lock %d: %d", i, e);
        CHECK(&s->h, me, (e = ks_rmutex_lock(&s->r)) == 0, "relock: %d", e);
        slow_increment(&s->counter, i);
        CHECK(&s->h, me, (e = ks_rmutex_unlock(&s->r)) == 0, "unlock 2: %d", e);
        CHECK(&s->h, me, (e = ks_rmutex_unlock(&s->r)) == 0, "unlock 1: %d", e);
    }
    return 0;
}

/* Asleep in lock while the test holds it; returns once the test unlocks. */
static int role_mutex_wait(void *p, int me)
{
    struct mx_seg *s = p;
    mark(&s->h, me, 1);
    int e = ks_mutex_timedlock(&s->m, ks_deadline_after(LONG_NS));
    result(&s->h, me, e);
    CHECK(&s->h, me, e == 0, "timedlock: %d", e);
    slow_increment(&s->counter, 0);
    return ks_mutex_unlock(&s->m);
}

static int role_mutex_count(void *p, int me)
{
    struct mx_seg *s = p;
    wait_flag(&s->h.go);
    return mutex_count(s, me);
}

/* The test holds r: this process's trylock is EBUSY and its unlock EPERM;
 * then it sleeps in lock until the test lets go, then counts. */
static int role_rmutex(void *p, int me)
{
    struct mx_seg *s = p;
    int e;
    CHECK(&s->h, me, (e = ks_rmutex_trylock(&s->r)) == EBUSY, "trylock of the test's: %d", e);
    CHECK(&s->h, me, (e = ks_rmutex_unlock(&s->r)) == EPERM, "unlock of the test's: %d", e);
    mark(&s->h, me, 1);
    e = ks_rmutex_timedlock(&s->r, ks_deadline_after(LONG_NS));
    result(&s->h, me, e);
    CHECK(&s->h, me, e == 0, "timedlock: %d", e);
    CHECK(&s->h, me, (e = ks_rmutex_unlock(&s->r)) == 0, "unlock: %d", e);
    wait_flag(&s->h.go);
    return rmutex_count(s, me);
}

Test(shm, mutex_counter_between_unrelated_processes, .timeout = 60)
{
    struct mx_seg *s = seg_new();
    cr_assert_eq(ks_mutex_init(&s->m, KS_SHARED), 0);
    /* a sleeper there, woken from here */
    cr_assert_eq(ks_mutex_lock(&s->m), 0);
    spawn("mutex_wait", 1);
    wait_step(1, 1, "mutex_wait");
    in_futex(1, "mutex_wait");
    int64_t t0 = ks_now();
    cr_assert_eq(ks_mutex_unlock(&s->m), 0);
    expect_ok(1, "mutex_wait");
    cr_assert_lt(s->h.t_ret[1] - t0, WOKEN_NS, "woken after %lld ms", (long long)((s->h.t_ret[1] - t0) / KT_MS));
    /* both count */
    spawn("mutex_count", 2);
    raise_flag(&s->h.go);
    cr_assert_eq(mutex_count(s, 0), 0, "%s", s->h.fail[0]);
    expect_ok(2, "mutex_count");
    cr_assert_eq(s->counter, 1 + 2L * MX_ITERS, "counter %ld: updates lost", s->counter);
    cr_assert_eq(ks_mutex_destroy(&s->m), 0);
}

Test(shm, rmutex_counter_between_unrelated_processes, .timeout = 60)
{
    struct mx_seg *s = seg_new();
    cr_assert_eq(ks_rmutex_init(&s->r, KS_SHARED), 0);
    cr_assert_eq(ks_rmutex_lock(&s->r), 0);
    cr_assert_eq(ks_rmutex_lock(&s->r), 0);
    spawn("rmutex", 1);
    wait_step(1, 1, "rmutex");
    in_futex(1, "rmutex");
    int64_t t0 = ks_now();
    cr_assert_eq(ks_rmutex_unlock(&s->r), 0);
    cr_assert_eq(ks_rmutex_trylock(&s->r), 0, "still ours at depth 1");
    cr_assert_eq(ks_rmutex_unlock(&s->r), 0);
    cr_assert_eq(ks_rmutex_unlock(&s->r), 0);
    wait_step(1, 9, "rmutex");
    cr_assert_eq(s->h.rc[1], 0);
    cr_assert_lt(s->h.t_ret[1] - t0, WOKEN_NS);
    raise_flag(&s->h.go);
    cr_assert_eq(rmutex_count(s, 0), 0, "%s", s->h.fail[0]);
    expect_ok(1, "rmutex");
    cr_assert_eq(s->counter, 2L * MX_ITERS, "counter %ld: updates lost", s->counter);
    cr_assert_eq(ks_rmutex_destroy(&s->r), 0);
}

/* ---- ks_cond with ks_mutex: ping-pong ---------------------------------------------- */

#define CV_ROUNDS 2000

struct cv_seg {
    struct hdr h;
    ks_mutex_t m;
    ks_cond_t c;
    int turn;   /* whose step it is: 0 the test, 1 the helper */
    long value; /* 2 * round + whose step: each step sees the other's */
    long steps[NPROC];
    int pred;
};

/* me: the process (0 the test); its side of the game is 0 for the test, 1
 * for any helper. */
static int cond_pingpong(struct cv_seg *s, int me, int rounds)
{
    const int side = me ? 1 : 0;
    const int64_t dl = ks_deadline_after(LONG_NS);
    for (int r = 0; r < rounds; r++) {
        int e;
        CHECK(&s->h, me, (e = ks_mutex_lock(&s->m)) == 0, "lock: %d", e);
        while (s->turn != side) {
            e = ks_cond_timedwait(&s->c, &s->m, dl);
            CHECK(&s->h, me, e == 0, "round %d: timedwait %d (a lost signal waits for the deadline)", r, e);
        }
        CHECK(&s->h, me, s->value == 2L * r + side, "round %d: value %ld, want %ld", r, s->value,
              2L * r + side);
        s->value++;
        s->steps[me]++;
        s->turn = 1 - side;
        e = (r & 1) ? ks_cond_broadcast(&s->c) : ks_cond_signal(&s->c);
        CHECK(&s->h, me, e == 0, "signal: %d", e);
        CHECK(&s->h, me, (e = ks_mutex_unlock(&s->m)) == 0, "unlock: %d", e);
    }
    return 0;
}

/* Lock, wait for pred (deadline: LONG_NS, or the test's h.deadline if set),
 * unlock. */
static int role_cond_wait(void *p, int me)
{
    struct cv_seg *s = p;
    int64_t dl = s->h.deadline ? s->h.deadline : ks_deadline_after(LONG_NS);
    int e = ks_mutex_lock(&s->m);
    CHECK(&s->h, me, e == 0, "lock: %d", e);
    mark(&s->h, me, 1);
    while (!s->pred && e == 0)
        e = ks_cond_timedwait(&s->c, &s->m, dl);
    result(&s->h, me, e);
    CHECK(&s->h, me, ks_mutex_unlock(&s->m) == 0, "unlock after the wait (rc %d)", e);
    return 0;
}

static int role_cond_pingpong(void *p, int me)
{
    struct cv_seg *s = p;
    wait_flag(&s->h.go);
    return cond_pingpong(s, me, CV_ROUNDS);
}

static void cv_setup(struct cv_seg *s)
{
    cr_assert_eq(ks_mutex_init(&s->m, KS_SHARED), 0);
    cr_assert_eq(ks_cond_init(&s->c, KS_SHARED), 0);
}

/* Asleep in helper 1: the test sets pred and signals (or broadcasts). */
static void cv_wake_one(struct cv_seg *s, int broadcast)
{
    s->pred = 0;
    spawn("cond_wait", 1);
    wait_step(1, 1, "cond_wait");
    in_futex(1, "cond_wait");
    cr_assert_eq(ks_mutex_lock(&s->m), 0);
    s->pred = 1;
    int64_t t0 = ks_now();
    cr_assert_eq(broadcast ? ks_cond_broadcast(&s->c) : ks_cond_signal(&s->c), 0);
    cr_assert_eq(ks_mutex_unlock(&s->m), 0);
    expect_ok(1, "cond_wait");
    cr_assert_eq(s->h.rc[1], 0);
    cr_assert_lt(s->h.t_ret[1] - t0, WOKEN_NS, "woken after %lld ms", (long long)((s->h.t_ret[1] - t0) / KT_MS));
}

Test(shm, cond_pingpong_between_unrelated_processes, .timeout = 60)
{
    struct cv_seg *s = seg_new();
    cv_setup(s);
    cv_wake_one(s, 0);
    cv_wake_one(s, 1);
    spawn("cond_pingpong", 2);
    raise_flag(&s->h.go);
    cr_assert_eq(cond_pingpong(s, 0, CV_ROUNDS), 0, "%s", s->h.fail[0]);
    expect_ok(2, "cond_pingpong");
    cr_assert_eq(s->steps[0], CV_ROUNDS);
    cr_assert_eq(s->steps[2], CV_ROUNDS);
    cr_assert_eq(s->value, 2L * CV_ROUNDS);
    cr_assert_eq(ks_cond_destroy(&s->c), 0);
    cr_assert_eq(ks_mutex_destroy(&s->m), 0);
}

/* ---- ks_sem: producer/consumer ----------------------------------------------------- */

#define SEM_ITEMS 40000
#define SEM_RING 8

struct sem_seg {
    struct hdr h;
    ks_sem_t items, slots;
    uint64_t ring[SEM_RING];
    uint64_t sum_put;
    /* the death tests' */
    ks_sem_t sem;
    uint64_t posted; /* posts that returned, by the storm's posters */
};

/* wait, timedwait and a trywait loop in turn */
static int sem_take(ks_sem_t *s, int i)
{
    int e;
    switch (i % 3) {
    case 0: return ks_sem_wait(s);
    case 1: return ks_sem_timedwait(s, ks_deadline_after(LONG_NS));
    default:
        while ((e = ks_sem_trywait(s)) == EAGAIN)
            sched_yield();
        return e;
    }
}

static int role_sem_producer(void *p, int me)
{
    struct sem_seg *s = p;
    wait_flag(&s->h.go);
    for (int i = 0; i < SEM_ITEMS; i++) {
        int e = sem_take(&s->slots, i);
        CHECK(&s->h, me, e == 0, "slot %d: %d", i, e);
        s->ring[i % SEM_RING] = mix((uint64_t)i + 1);
        s->sum_put += mix((uint64_t)i + 1);
        CHECK(&s->h, me, (e = ks_sem_post(&s->items)) == 0, "post: %d", e);
    }
    return 0;
}

/* One unit of s->sem, with h.deadline if set. */
static int role_sem_wait(void *p, int me)
{
    struct sem_seg *s = p;
    mark(&s->h, me, 1);
    int e = s->h.deadline ? ks_sem_timedwait(&s->sem, s->h.deadline) : ks_sem_wait(&s->sem);
    result(&s->h, me, e);
    return 0;
}

Test(shm, sem_producer_consumer_between_unrelated_processes, .timeout = 60)
{
    struct sem_seg *s = seg_new();
    cr_assert_eq(ks_sem_init(&s->items, 0, KS_SHARED), 0);
    cr_assert_eq(ks_sem_init_bounded(&s->slots, SEM_RING, SEM_RING, KS_SHARED), 0);
    cr_assert_eq(ks_sem_init(&s->sem, 0, KS_SHARED), 0);
    /* a sleeper there, woken by a post here */
    spawn("sem_wait", 1);
    wait_step(1, 1, "sem_wait");
    in_futex(1, "sem_wait");
    int64_t t0 = ks_now();
    cr_assert_eq(ks_sem_post(&s->sem), 0);
    expect_ok(1, "sem_wait");
    cr_assert_eq(s->h.rc[1], 0);
    cr_assert_lt(s->h.t_ret[1] - t0, WOKEN_NS);
    /* the helper produces, this process consumes, in order */
    spawn("sem_producer", 2);
    raise_flag(&s->h.go);
    uint64_t sum = 0;
    for (int i = 0; i < SEM_ITEMS; i++) {
        cr_assert_eq(sem_take(&s->items, i), 0);
        uint64_t v = s->ring[i % SEM_RING];
        cr_assert_eq(v, mix((uint64_t)i + 1), "item %d: %#llx", i, (unsigned long long)v);
        sum += v;
        cr_assert_eq(ks_sem_post(&s->slots), 0);
    }
    expect_ok(2, "sem_producer");
    cr_assert_eq(sum, s->sum_put, "checksums differ");
    cr_assert_eq(ks_sem_value(&s->items), 0);
    cr_assert_eq(ks_sem_value(&s->slots), SEM_RING);
    cr_assert_eq(ks_sem_post(&s->slots), EOVERFLOW, "bounded across processes too");
    cr_assert_eq(ks_sem_destroy(&s->items), 0);
    cr_assert_eq(ks_sem_destroy(&s->slots), 0);
}

/* ---- ks_event: set/wait rounds ----------------------------------------------------- */

#define EV_ROUNDS 2000

struct ev_seg {
    struct hdr h;
    ks_event_t ping, pong;
    long data, reply;
    ks_event_t e; /* the single-event tests' */
};

static int role_event_pong(void *p, int me)
{
    struct ev_seg *s = p;
    int e;
    /* a timed wait on the unset event times out, not early */
    int64_t dl = ks_deadline_after(20 * KT_MS);
    CHECK(&s->h, me, (e = ks_event_timedwait(&s->ping, dl)) == ETIMEDOUT, "unset: %d", e);
    CHECK(&s->h, me, ks_now() >= dl, "timed out %lld ns early", (long long)(dl - ks_now()));
    mark(&s->h, me, 1);
    wait_flag(&s->h.go);
    for (long r = 1; r <= EV_ROUNDS; r++) {
        e = (r & 1) ? ks_event_wait(&s->ping) : ks_event_timedwait(&s->ping, ks_deadline_after(LONG_NS));
        CHECK(&s->h, me, e == 0, "round %ld: wait %d", r, e);
        CHECK(&s->h, me, s->data == r, "round %ld: data %ld (set before the write?)", r, s->data);
        CHECK(&s->h, me, ks_event_clear(&s->ping) == 0, "clear");
        s->reply = r;
        CHECK(&s->h, me, ks_event_set(&s->pong) == 0, "set");
    }
    return 0;
}

/* Wait for s->e: with h.deadline if set, else untimed. */
static int role_event_wait(void *p, int me)
{
    struct ev_seg *s = p;
    mark(&s->h, me, 1);
    int e = s->h.deadline ? ks_event_timedwait(&s->e, s->h.deadline) : ks_event_wait(&s->e);
    result(&s->h, me, e);
    return 0;
}

Test(shm, event_rounds_between_unrelated_processes, .timeout = 60)
{
    struct ev_seg *s = seg_new();
    cr_assert_eq(ks_event_init(&s->ping, KS_SHARED), 0);
    cr_assert_eq(ks_event_init(&s->pong, KS_SHARED), 0);
    cr_assert_eq(ks_event_init(&s->e, KS_SHARED), 0);
    spawn("event_wait", 1);
    wait_step(1, 1, "event_wait");
    in_futex(1, "event_wait");
    int64_t t0 = ks_now();
    cr_assert_eq(ks_event_set(&s->e), 0);
    expect_ok(1, "event_wait");
    cr_assert_eq(s->h.rc[1], 0);
    cr_assert_lt(s->h.t_ret[1] - t0, WOKEN_NS);

    spawn("event_pong", 2);
    wait_step(2, 1, "event_pong");
    raise_flag(&s->h.go);
    for (long r = 1; r <= EV_ROUNDS; r++) {
        s->data = r;
        cr_assert_eq(ks_event_set(&s->ping), 0);
        int e = ks_event_timedwait(&s->pong, ks_deadline_after(LONG_NS));
        cr_assert_eq(e, 0, "round %ld: pong %d (%s)", r, e, s->h.fail[2]);
        cr_assert_eq(s->reply, r);
        cr_assert_eq(ks_event_clear(&s->pong), 0);
    }
    expect_ok(2, "event_pong");
}

/* A KS_PRIVATE object in shared memory: the futex ops are the private
 * ones, keyed by (process, address), so a set() here does not wake the
 * sleeper there; it sees the event only when its deadline ends the sleep.
 * Why every object in a segment needs KS_SHARED. */
Test(shm, private_flag_in_shared_memory_does_not_wake_the_other_process, .timeout = 60)
{
    struct ev_seg *s = seg_new();
    cr_assert_eq(ks_event_init(&s->e, KS_PRIVATE), 0);
    s->h.deadline = ks_now() + MARGIN_NS;
    spawn("event_wait", 1);
    wait_step(1, 1, "event_wait");
    in_futex(1, "event_wait");
    cr_assert_eq(ks_event_set(&s->e), 0);
    expect_ok(1, "event_wait");
    cr_assert_eq(s->h.rc[1], 0, "it sees SET once it looks");
    cr_assert_geq(s->h.t_ret[1], s->h.deadline, "woken %lld ms before its deadline: a private wake crossed",
                  (long long)((s->h.deadline - s->h.t_ret[1]) / KT_MS));
}

/* ---- ks_barrier: three processes --------------------------------------------------- */

#define BAR_PHASES 1000
#define BAR_N 3

struct bar_seg {
    struct hdr h;
    ks_barrier_t b;
    uint32_t slot[BAR_N];
    uint32_t serial[BAR_N];
};

static int barrier_phases(struct bar_seg *s, int me)
{
    for (uint32_t p = 1; p <= BAR_PHASES; p++) {
        s->slot[me] = p;
        for (int half = 0; half < 2; half++) {
            int r = ks_barrier_wait(&s->b);
            CHECK(&s->h, me, r == 0 || r == KS_BARRIER_SERIAL, "phase %u: %d", p, r);
            s->serial[me] += r == KS_BARRIER_SERIAL;
            if (half == 0)
                for (int j = 0; j < BAR_N; j++)
                    CHECK(&s->h, me, s->slot[j] == p, "phase %u: process %d shows %u (overtaken)", p, j,
                          s->slot[j]);
        }
    }
    return 0;
}

static int role_barrier_phases(void *p, int me)
{
    struct bar_seg *s = p;
    wait_flag(&s->h.go);
    return barrier_phases(s, me);
}

/* One arrival; its result. */
static int role_barrier_once(void *p, int me)
{
    struct bar_seg *s = p;
    mark(&s->h, me, 1);
    int r = ks_barrier_wait(&s->b);
    result(&s->h, me, r);
    return 0;
}

Test(shm, barrier_phases_between_three_unrelated_processes, .timeout = 60)
{
    struct bar_seg *s = seg_new();
    /* a sleeper there, released by the arrival here */
    cr_assert_eq(ks_barrier_init(&s->b, 2, KS_SHARED), 0);
    spawn("barrier_once", 1);
    wait_step(1, 1, "barrier_once");
    in_futex(1, "barrier_once");
    int64_t t0 = ks_now();
    cr_assert_eq(ks_barrier_wait(&s->b), KS_BARRIER_SERIAL);
    expect_ok(1, "barrier_once");
    cr_assert_eq(s->h.rc[1], 0);
    cr_assert_lt(s->h.t_ret[1] - t0, WOKEN_NS);
    cr_assert_eq(ks_barrier_destroy(&s->b), 0);

    cr_assert_eq(ks_barrier_init(&s->b, BAR_N, KS_SHARED), 0);
    spawn("barrier_phases", 1);
    spawn("barrier_phases", 2);
    raise_flag(&s->h.go);
    cr_assert_eq(barrier_phases(s, 0), 0, "%s", s->h.fail[0]);
    expect_ok(1, "barrier_phases 1");
    expect_ok(2, "barrier_phases 2");
    cr_assert_eq(s->serial[0] + s->serial[1] + s->serial[2], 2u * BAR_PHASES, "serial %u + %u + %u",
                 s->serial[0], s->serial[1], s->serial[2]);
    cr_assert_eq(ks_barrier_destroy(&s->b), 0);
}

/* ---- ks_rwlock: a two-word value never seen torn ------------------------------------- */

#define RW_OPS 40000

struct rw_seg {
    struct hdr h;
    ks_rwlock_t l;
    volatile uint64_t a, b; /* a == b outside a write */
    uint64_t writes[NPROC];
    uint64_t reads[NPROC];
};

static int rw_mix(struct rw_seg *s, int me, int write_every)
{
    uint64_t last = 0;
    for (int i = 0; i < RW_OPS; i++) {
        int e;
        if (i % write_every == 0) {
            switch (i % 3) {
            case 0: e = ks_rwlock_wrlock(&s->l); break;
            case 1: e = ks_rwlock_timedwrlock(&s->l, ks_deadline_after(LONG_NS)); break;
            default:
                while ((e = ks_rwlock_trywrlock(&s->l)) == EBUSY)
                    sched_yield();
            }
            CHECK(&s->h, me, e == 0, "wrlock %d: %d", i, e);
            uint64_t v = s->b + 1;
            s->a = v;
            for (int k = 0; k < 16; k++)
                ks_cpu_relax();
            s->b = v;
            s->writes[me]++;
        } else {
            switch (i % 3) {
            case 0: e = ks_rwlock_rdlock(&s->l); break;
            case 1: e = ks_rwlock_timedrdlock(&s->l, ks_deadline_after(LONG_NS)); break;
            default:
                while ((e = ks_rwlock_tryrdlock(&s->l)) == EBUSY)
                    sched_yield();
            }
            CHECK(&s->h, me, e == 0, "rdlock %d: %d", i, e);
            uint64_t a = s->a;
            for (int k = 0; k < 8; k++)
                ks_cpu_relax();
            uint64_t b = s->b;
            CHECK(&s->h, me, a == b, "torn read: %llu / %llu", (unsigned long long)a, (unsigned long long)b);
            CHECK(&s->h, me, a >= last, "went back from %llu to %llu", (unsigned long long)last,
                  (unsigned long long)a);
            last = a;
            s->reads[me]++;
        }
        CHECK(&s->h, me, (e = ks_rwlock_unlock(&s->l)) == 0, "unlock: %d", e);
    }
    return 0;
}

static int role_rw_mix(void *p, int me)
{
    struct rw_seg *s = p;
    wait_flag(&s->h.go);
    return rw_mix(s, me, 2);
}

/* Asleep in rdlock while the test holds the write lock. */
static int role_rw_read(void *p, int me)
{
    struct rw_seg *s = p;
    mark(&s->h, me, 1);
    int e = ks_rwlock_timedrdlock(&s->l, ks_deadline_after(LONG_NS));
    result(&s->h, me, e);
    CHECK(&s->h, me, e == 0, "timedrdlock: %d", e);
    CHECK(&s->h, me, s->a == 1 && s->b == 1, "saw %llu/%llu", (unsigned long long)s->a, (unsigned long long)s->b);
    return ks_rwlock_unlock(&s->l);
}

static void rw_run(unsigned flags)
{
    struct rw_seg *s = seg_new();
    cr_assert_eq(ks_rwlock_init(&s->l, KS_SHARED | flags), 0);
    cr_assert_eq(ks_rwlock_wrlock(&s->l), 0);
    spawn("rw_read", 1);
    wait_step(1, 1, "rw_read");
    in_futex(1, "rw_read");
    s->a = 1;
    s->b = 1;
    int64_t t0 = ks_now();
    cr_assert_eq(ks_rwlock_unlock(&s->l), 0);
    expect_ok(1, "rw_read");
    cr_assert_lt(s->h.t_ret[1] - t0, WOKEN_NS);

    spawn("rw_mix", 2);
    raise_flag(&s->h.go);
    cr_assert_eq(rw_mix(s, 0, 10), 0, "%s", s->h.fail[0]);
    expect_ok(2, "rw_mix");
    uint64_t w = s->writes[0] + s->writes[2];
    cr_assert_eq(s->a, 1 + w, "a %llu after %llu writes", (unsigned long long)s->a, (unsigned long long)w);
    cr_assert_eq(s->b, 1 + w);
    cr_assert_eq(s->reads[0] + s->reads[2] + w, 2u * RW_OPS);
    cr_assert_eq(ks_rwlock_destroy(&s->l), 0);
}

Test(shm, rwlock_never_torn_between_unrelated_processes, .timeout = 60) { rw_run(0); }
Test(shm, rwlock_prefer_reader_never_torn_between_unrelated_processes, .timeout = 60)
{
    rw_run(KS_RWLOCK_PREFER_READER);
}

/* ---- ks_robust: the owner SIGKILLed while holding it --------------------------------- */

struct rb_seg {
    struct hdr h;
    ks_robust_t m;
    volatile long a, b; /* a == b outside the lock */
    long repairs;
    volatile long counter;
};

/* Lock, start an update (a moves, b not yet), and wait to be killed. */
static int role_robust_hold(void *p, int me)
{
    struct rb_seg *s = p;
    int e = ks_robust_lock(&s->m);
    CHECK(&s->h, me, e == 0, "lock: %d", e);
    s->a = s->b + 1;
    mark(&s->h, me, 1);
    for (;;)
        pause();
}

/* Asleep in lock until the holder dies: EOWNERDEAD, repair, consistent. */
static int role_robust_lock(void *p, int me)
{
    struct rb_seg *s = p;
    mark(&s->h, me, 1);
    int e = ks_robust_timedlock(&s->m, ks_deadline_after(LONG_NS));
    result(&s->h, me, e);
    CHECK(&s->h, me, e == EOWNERDEAD, "timedlock: %d, want EOWNERDEAD", e);
    CHECK(&s->h, me, s->a != s->b, "the dead owner's half update is not there");
    s->a = s->b;
    s->repairs++;
    CHECK(&s->h, me, (e = ks_robust_consistent(&s->m)) == 0, "consistent: %d", e);
    CHECK(&s->h, me, (e = ks_robust_unlock(&s->m)) == 0, "unlock: %d", e);
    return 0;
}

static int robust_count(struct rb_seg *s, int me)
{
    for (int i = 0; i < MX_ITERS; i++) {
        int e = ks_robust_lock(&s->m);
        CHECK(&s->h, me, e == 0, "lock %d: %d", i, e);
        slow_increment(&s->counter, i);
        CHECK(&s->h, me, (e = ks_robust_unlock(&s->m)) == 0, "unlock: %d", e);
    }
    return 0;
}

static int role_robust_count(void *p, int me)
{
    struct rb_seg *s = p;
    wait_flag(&s->h.go);
    return robust_count(s, me);
}

struct killer {
    pid_t sleeper_tid; /* wait until this thread of ours sleeps, then kill victim */
    pid_t victim;
};

static void *killer_main(void *p)
{
    struct killer *k = p;
    kt_wait_in_futex(k->sleeper_tid, 5000 * KT_MS * KT_SLOW);
    kt_sleep_ns(10 * KT_MS);
    kill(k->victim, SIGKILL);
    return NULL;
}

Test(shm, robust_owner_killed_gives_eownerdead_to_another_process, .timeout = 60)
{
    struct rb_seg *s = seg_new();
    cr_assert_eq(ks_robust_init(&s->m, KS_SHARED), 0);

    /* 1. helper 1 holds it and is killed while helper 2 (another process
     * again) sleeps in lock: helper 2 gets EOWNERDEAD and repairs */
    spawn("robust_hold", 1);
    wait_step(1, 1, "robust_hold");
    spawn("robust_lock", 2);
    wait_step(2, 1, "robust_lock");
    in_futex(2, "robust_lock");
    kill_kid(1);
    expect_ok(2, "robust_lock");
    cr_assert_eq(s->repairs, 1);
    cr_assert_eq(ks_robust_lock(&s->m), 0, "consistent made it clean");
    cr_assert_eq(s->a, s->b);
    cr_assert_eq(ks_robust_unlock(&s->m), 0);

    /* 2. this process sleeps in lock while the holder is killed */
    spawn("robust_hold", 1);
    wait_step(1, 1, "robust_hold");
    struct killer k = {kt_gettid(), kids[1]};
    pthread_t t;
    kt_spawn(&t, killer_main, &k);
    int e = ks_robust_lock(&s->m);
    kt_join(t);
    cr_assert_eq(e, EOWNERDEAD);
    cr_assert_neq(s->a, s->b);
    s->a = s->b;
    cr_assert_eq(ks_robust_consistent(&s->m), 0);
    cr_assert_eq(ks_robust_unlock(&s->m), 0);
    int st = 0;
    waitpid(kids[1], &st, 0);
    kids[1] = 0;
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    /* 3. and it still excludes: a counter from both sides */
    spawn("robust_count", 2);
    raise_flag(&s->h.go);
    cr_assert_eq(robust_count(s, 0), 0, "%s", s->h.fail[0]);
    expect_ok(2, "robust_count");
    cr_assert_eq(s->counter, 2L * MX_ITERS);
    cr_assert_eq(ks_robust_destroy(&s->m), 0);
}

/* ---- ks_queue, ks_pool, ks_once ---------------------------------------------------------- */

#define Q_ITEMS 20000
#define Q_CAP 8
#define POOL_OPS 5000

struct q_seg {
    struct hdr h;
    _Alignas(KS_MPMC_ALIGN) unsigned char q[4096];    /* a ks_queue_t of Q_CAP */
    _Alignas(KS_MPMC_ALIGN) unsigned char pool[4096]; /* a ks_pool_t of 2 */
    int holder[3];            /* who uses pool resource 1 or 2 (0: nobody) */
    long uses[NPROC];
    ks_once_t once;
    int runs, done, seen_done[NPROC];
};

/* Items are small integers: a pointer would mean nothing in the other
 * process. */
static int role_queue_producer(void *p, int me)
{
    struct q_seg *s = p;
    ks_queue_t *q = (ks_queue_t *)s->q;
    for (uintptr_t i = 1; i <= Q_ITEMS; i++) {
        int e = (i & 1) ? ks_queue_put(q, (void *)i) : ks_queue_timedput(q, (void *)i, ks_deadline_after(LONG_NS));
        CHECK(&s->h, me, e == 0, "put %lu: %d", (unsigned long)i, e);
    }
    int e = ks_queue_timedjoin(q, ks_deadline_after(LONG_NS));
    CHECK(&s->h, me, e == 0, "join: %d (%llu unfinished)", e, (unsigned long long)ks_queue_unfinished(q));
    return ks_queue_close(q);
}

/* Borrow and return each resource in turn; nobody else holds it meanwhile. */
static int pool_use(struct q_seg *s, int me)
{
    ks_pool_t *pl = (ks_pool_t *)s->pool;
    for (int i = 0; i < POOL_OPS; i++) {
        void *r = NULL;
        int e = ks_pool_borrow(pl, ks_deadline_after(LONG_NS), &r);
        CHECK(&s->h, me, e == 0, "borrow %d: %d", i, e);
        uintptr_t k = (uintptr_t)r;
        CHECK(&s->h, me, k == 1 || k == 2, "borrowed %lu", (unsigned long)k);
        CHECK(&s->h, me, s->holder[k] == 0, "resource %lu held by process %d too", (unsigned long)k,
              s->holder[k]);
        s->holder[k] = me + 1;
        if ((i & 63) == 0)
            sched_yield();
        s->uses[me]++;
        s->holder[k] = 0;
        CHECK(&s->h, me, (e = ks_pool_return(pl, r)) == 0, "return: %d", e);
    }
    return 0;
}

static int role_pool_use(void *p, int me)
{
    struct q_seg *s = p;
    wait_flag(&s->h.go);
    return pool_use(s, me);
}

static struct q_seg *once_seg; /* init_fn takes no argument */
static void once_fn(void)
{
    once_seg->runs++;
    kt_sleep_ns(100 * KT_MS); /* the others arrive meanwhile and wait */
    once_seg->done = 1;
}

static int role_once(void *p, int me)
{
    struct q_seg *s = p;
    once_seg = s;
    wait_flag(&s->h.go);
    int e = ks_once(&s->once, once_fn);
    CHECK(&s->h, me, e == 0, "ks_once: %d", e);
    s->seen_done[me] = s->done;
    return 0;
}

Test(shm, queue_pool_once_between_unrelated_processes, .timeout = 60)
{
    struct q_seg *s = seg_new();
    ks_queue_t *q = (ks_queue_t *)s->q;
    cr_assert_leq(ks_queue_bytes(Q_CAP), sizeof s->q);
    cr_assert_eq(ks_queue_init(q, Q_CAP, KS_SHARED), 0);
    void *const res[2] = {(void *)1, (void *)2};
    cr_assert_leq(ks_pool_bytes(2), sizeof s->pool);
    cr_assert_eq(ks_pool_init((ks_pool_t *)s->pool, res, 2, KS_SHARED), 0);
    s->once = (ks_once_t)KS_ONCE_INIT_SHARED;

    /* queue: the helper puts, joins, closes; this process gets, task_done,
     * and sees EPIPE once the queue is closed and drained */
    spawn("queue_producer", 1);
    for (uintptr_t i = 1; i <= Q_ITEMS; i++) {
        void *it = NULL;
        int e = (i & 1) ? ks_queue_get(q, &it) : ks_queue_timedget(q, &it, ks_deadline_after(LONG_NS));
        cr_assert_eq(e, 0, "get %lu: %d (%s)", (unsigned long)i, e, s->h.fail[1]);
        cr_assert_eq((uintptr_t)it, i, "item %lu: %lu", (unsigned long)i, (unsigned long)(uintptr_t)it);
        cr_assert_eq(ks_queue_task_done(q), 0);
    }
    void *it;
    cr_assert_eq(ks_queue_timedget(q, &it, ks_deadline_after(LONG_NS)), EPIPE, "closed and drained");
    expect_ok(1, "queue_producer");
    cr_assert_eq(ks_queue_destroy(q), 0);

    /* pool: two processes share two resources */
    spawn("pool_use", 2);
    /* once: three processes race; one runs it, the others wait for it */
    spawn("once", 3);
    once_seg = s;
    raise_flag(&s->h.go);
    cr_assert_eq(pool_use(s, 0), 0, "%s", s->h.fail[0]);
    cr_assert_eq(ks_once(&s->once, once_fn), 0);
    s->seen_done[0] = s->done;
    expect_ok(2, "pool_use");
    expect_ok(3, "once");
    cr_assert_eq(s->uses[0] + s->uses[2], 2L * POOL_OPS);
    cr_assert_eq(ks_pool_available((ks_pool_t *)s->pool), 2u);
    cr_assert_eq(ks_pool_destroy((ks_pool_t *)s->pool), 0);
    cr_assert_eq(s->runs, 1, "init_fn ran %d times", s->runs);
    cr_assert(s->seen_done[0] && s->seen_done[3], "a caller returned before init_fn finished");
}

/* ================================================================================ */
/* 2. A peer SIGKILLed at the worst moments                                          */
/* ================================================================================ */

/* Run `fn(arg)` in a fork child (the segment is MAP_SHARED, so the child
 * works on the real objects) and show it still blocked after 300 ms: for
 * the calls that a death makes wait for ever (destroy). */
static void blocks_for_good(int (*fn)(void *), void *arg, const char *what)
{
    pid_t pid = kt_fork(fn, arg);
    kt_sleep_ns(300 * KT_MS);
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "%s returned (status %#x)", what, st);
    cr_assert(kt_wait_child_in_futex(pid, 5000 * KT_MS), "%s: not asleep", what);
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
}

/* ---- ks_cond ---------------------------------------------------------------------- */

static int cond_destroy_child(void *p)
{
    ks_cond_destroy(p);
    return 0;
}

/* A waiter SIGKILLed asleep in the wait.  It had released the mutex, so the
 * mutex is free; its counts stay (waiters, sleepers), which costs later
 * signals a FUTEX_WAKE each; the others are signalled as before.  What does
 * not survive: ks_cond_destroy waits for the dead waiter to leave. */
Test(shm, cond_waiter_killed_others_still_signalled, .timeout = 60)
{
    struct cv_seg *s = seg_new();
    cv_setup(s);
    spawn("cond_wait", 2);
    wait_step(2, 1, "cond_wait");
    in_futex(2, "cond_wait");
    kill_kid(2);
    cr_assert_eq(ks_mutex_trylock(&s->m), 0, "the dead waiter does not hold the mutex");
    cr_assert_eq(ks_mutex_unlock(&s->m), 0);
    cv_wake_one(s, 0);
    cv_wake_one(s, 1);
    /* and the cond still carries a ping-pong */
    spawn("cond_pingpong", 3);
    s->turn = 0;
    s->value = 0;
    raise_flag(&s->h.go);
    cr_assert_eq(cond_pingpong(s, 0, CV_ROUNDS), 0, "%s", s->h.fail[0]);
    expect_ok(3, "cond_pingpong");
    /* relaxed: every process that used the cond has been reaped or is dead */
    cr_assert_eq(__atomic_load_n(&s->c.waiters, __ATOMIC_RELAXED), 1u, "the dead waiter still counts");
    blocks_for_good(cond_destroy_child, &s->c, "ks_cond_destroy after a waiter died");
}

/* Lock the mutex and be killed holding it. */
static int role_cond_mutex_hold(void *p, int me)
{
    struct cv_seg *s = p;
    int e = ks_mutex_lock(&s->m);
    CHECK(&s->h, me, e == 0, "lock: %d", e);
    mark(&s->h, me, 1);
    for (;;)
        pause();
}

/* A peer SIGKILLed holding the cond's mutex: ks_mutex is not robust, so
 * the mutex stays locked.  A timed lock here returns ETIMEDOUT (no hang);
 * signal still returns; but a waiter whose timed wait expires must re-take
 * the mutex before it returns (the condition variable's contract), and
 * waits there for ever. */
Test(shm, cond_mutex_holder_killed_waiter_cannot_return, .timeout = 60)
{
    struct cv_seg *s = seg_new();
    cv_setup(s);
    s->h.deadline = ks_now() + MARGIN_NS;
    spawn("cond_wait", 1);
    wait_step(1, 1, "cond_wait");
    in_futex(1, "cond_wait");
    spawn("cond_mutex_hold", 2);
    wait_step(2, 1, "cond_mutex_hold");
    kill_kid(2);
    cr_assert_eq(ks_mutex_timedlock(&s->m, ks_deadline_after(50 * KT_MS)), ETIMEDOUT);
    cr_assert_eq(ks_mutex_trylock(&s->m), EBUSY);
    cr_assert_eq(ks_cond_signal(&s->c), 0);
    cr_assert_eq(ks_cond_broadcast(&s->c), 0);
    int64_t now = ks_now();
    if (now < s->h.deadline + 500 * KT_MS)
        kt_sleep_ns(s->h.deadline + 500 * KT_MS - now);
    still_asleep(1, "a cond waiter past its deadline, re-taking the dead holder's mutex");
    cr_assert_eq(s->h.step[1], 1u);
    kill_kid(1);
}

static int moment_cond_seq_moved(void)
{
    const ks_cond_t *c = dw.obj;
    /* relaxed: the trap follows this thread's own access; nothing pairs */
    return __atomic_load_n(&c->seq, __ATOMIC_RELAXED) != dw.before;
}

/* Set pred under the mutex, unlock, then signal (outside the mutex, so the
 * death does not take the mutex with it) and die right after the signal's
 * increment of seq, before its FUTEX_WAKE. */
static int role_cond_signal_dies(void *p, int me)
{
    struct cv_seg *s = p;
    int e = ks_mutex_lock(&s->m);
    CHECK(&s->h, me, e == 0, "lock: %d", e);
    s->pred = 1;
    CHECK(&s->h, me, ks_mutex_unlock(&s->m) == 0, "unlock");
    dw.obj = &s->c;
    if (dw_arm(&s->c.seq, 4, moment_cond_seq_moved))
        return NO_WATCH;
    mark(&s->h, me, 1);
    wait_flag(&s->h.fire);
    dw.before = __atomic_load_n(&s->c.seq, __ATOMIC_RELAXED); /* relaxed: nobody else signals */
    dw_begin();
    ks_cond_signal(&s->c);
    kt_watch_end(&dw.w);
    return 3; /* should have died */
}

/* The signaller dies between its increment and its wake: the wake is
 * lost with it, but the sleeper's shared sleep ends within
 * KS_PEER_RECHECK_NS (1 s, src/futex.c), and it sees seq moved and returns
 * as signalled.  Before that bound it slept until the next signal. */
Test(shm, cond_signaller_killed_before_its_wake_sleeper_returns_within_a_second, .timeout = 60)
{
    KT_SKIP_WATCH_UNDER_TSAN();
    struct cv_seg *s = seg_new();
    cv_setup(s);
    spawn("cond_wait", 1);
    wait_step(1, 1, "cond_wait");
    in_futex(1, "cond_wait");
    uint32_t seq0 = s->c.seq;
    spawn("cond_signal_dies", 2);
    wait_step(2, 1, "cond_signal_dies");
    raise_flag(&s->h.fire);
    expect_killed(2, "cond_signal_dies");
    int64_t t_kill = ks_now();
    cr_assert_eq(s->c.seq, seq0 + 1, "died after the increment");
    expect_ok(1, "cond_wait");
    cr_assert_eq(s->h.rc[1], 0);
    cr_assert_lt(s->h.t_ret[1] - t_kill, 1000 * KT_MS + WOKEN_NS, "returned %lld ms after the death",
                 (long long)((s->h.t_ret[1] - t_kill) / KT_MS));
    /* and the condition variable goes on: a new waiter, a new signal */
    s->pred = 0; /* nobody else uses the segment now */
    spawn("cond_wait", 3);
    wait_step(3, 1, "cond_wait 3");
    in_futex(3, "cond_wait 3");
    int64_t t0 = ks_now();
    cr_assert_eq(ks_mutex_lock(&s->m), 0);
    s->pred = 1;
    cr_assert_eq(ks_mutex_unlock(&s->m), 0);
    cr_assert_eq(ks_cond_signal(&s->c), 0);
    expect_ok(3, "cond_wait 3");
    cr_assert_eq(s->h.rc[3], 0);
    cr_assert_lt(s->h.t_ret[3] - t0, WOKEN_NS);
}

/* ---- ks_sem ------------------------------------------------------------------------ */

/* A waiter SIGKILLed asleep stays registered: destroy answers EBUSY for
 * good and posts that find the value 0 make a FUTEX_WAKE; every other
 * waiter is served as before. */
Test(shm, sem_waiter_killed_others_still_served, .timeout = 60)
{
    struct sem_seg *s = seg_new();
    cr_assert_eq(ks_sem_init(&s->sem, 0, KS_SHARED), 0);
    spawn("sem_wait", 1);
    wait_step(1, 1, "sem_wait");
    in_futex(1, "sem_wait");
    kill_kid(1);
    cr_assert_eq(s->sem.state >> 32, 1u, "the dead waiter stays registered");
    for (int round = 0; round < 20; round++) {
        int idx = 2 + round % 2;
        spawn("sem_wait", idx);
        wait_step(idx, 1, "sem_wait");
        in_futex(idx, "sem_wait");
        int64_t t0 = ks_now();
        cr_assert_eq(ks_sem_post(&s->sem), 0);
        expect_ok(idx, "sem_wait");
        cr_assert_eq(s->h.rc[idx], 0);
        cr_assert_lt(s->h.t_ret[idx] - t0, WOKEN_NS, "round %d: woken after %lld ms", round,
                     (long long)((s->h.t_ret[idx] - t0) / KT_MS));
    }
    cr_assert_eq(ks_sem_post(&s->sem), 0);
    cr_assert_eq(ks_sem_trywait(&s->sem), 0);
    cr_assert_eq(ks_sem_value(&s->sem), 0);
    cr_assert_eq(ks_sem_destroy(&s->sem), EBUSY, "destroy sees the dead waiter for good");
}

static int moment_sem_waking(void)
{
    const ks_sem_t *sem = dw.obj;
    /* relaxed: the trap follows this thread's own access; nothing pairs */
    return (__atomic_load_n(&sem->state, __ATOMIC_RELAXED) & KS_SEM_WAKING) != 0;
}

/* Post, dying right after the CAS that set WAKING, before the FUTEX_WAKE. */
static int role_sem_post_dies(void *p, int me)
{
    struct sem_seg *s = p;
    dw.obj = &s->sem;
    if (dw_arm(&s->sem.state, 8, moment_sem_waking))
        return NO_WATCH;
    mark(&s->h, me, 1);
    wait_flag(&s->h.fire);
    CHECK(&s->h, me, !(s->sem.state & KS_SEM_WAKING), "WAKING set before the post: %#llx",
          (unsigned long long)s->sem.state);
    dw_begin();
    ks_sem_post(&s->sem);
    kt_watch_end(&dw.w);
    return 3;
}

/* The poster dies between its CAS and its wake: the unit is there and
 * WAKING says a wake is on its way, so later posts do not wake either.
 * The sleepers' shared sleeps end within KS_PEER_RECHECK_NS (1 s,
 * src/futex.c): the first to look takes a unit and chains the wake to the
 * next, timed or not.  Before that bound, untimed waiters slept until the
 * value went back to 0 and a waiter registered again. */
Test(shm, sem_poster_killed_between_cas_and_wake_served_within_a_second, .timeout = 60)
{
    KT_SKIP_WATCH_UNDER_TSAN();
    struct sem_seg *s = seg_new();
    cr_assert_eq(ks_sem_init(&s->sem, 0, KS_SHARED), 0);
    spawn("sem_post_dies", 1);
    wait_step(1, 1, "sem_post_dies");
    s->h.deadline = ks_now() + LONG_NS;
    spawn("sem_wait", 2); /* timed, with a deadline far away */
    wait_step(2, 1, "sem_wait timed");
    in_futex(2, "sem_wait timed");
    s->h.deadline = 0;
    spawn("sem_wait", 3); /* untimed */
    wait_step(3, 1, "sem_wait");
    in_futex(3, "sem_wait");
    cr_assert_eq(s->sem.state >> 32, 2u);
    raise_flag(&s->h.fire);
    expect_killed(1, "sem_post_dies");
    int64_t t_kill = ks_now();
    uint64_t st = s->sem.state;
    /* (a waiter whose slice ended in between may already have taken it) */
    cr_assert(st == (2 * KS_SEM_ONE_WAITER | KS_SEM_WAKING | 1) || (st >> 32) < 2, "state %#llx",
              (unsigned long long)st);
    cr_assert_eq(ks_sem_post(&s->sem), 0, "a second unit");
    expect_ok(2, "sem_wait timed");
    expect_ok(3, "sem_wait");
    cr_assert_eq(s->h.rc[2], 0);
    cr_assert_eq(s->h.rc[3], 0);
    for (int k = 2; k <= 3; k++)
        cr_assert_lt(s->h.t_ret[k] - t_kill, 1000 * KT_MS + WOKEN_NS, "waiter %d served %lld ms after the death", k,
                     (long long)((s->h.t_ret[k] - t_kill) / KT_MS));
    cr_assert_eq(s->sem.state, 0u, "state %#llx", (unsigned long long)s->sem.state);
    cr_assert_eq(ks_sem_destroy(&s->sem), 0);
}

/* Post for ever, a pause between posts so that the consumer sleeps and
 * most posts take the slow path (CAS, then FUTEX_WAKE). */
static int role_sem_poster(void *p, int me)
{
    struct sem_seg *s = p;
    (void)me;
    uint64_t r = (uint64_t)getpid();
    for (;;) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        int spins = (int)((r >> 33) % 3000);
        for (int i = 0; i < spins; i++)
            ks_cpu_relax();
        if ((r >> 60) == 0)
            sched_yield();
        ks_sem_post(&s->sem);
        /* release: the count is read by the test after reaping us */
        __atomic_add_fetch(&s->posted, 1, __ATOMIC_RELEASE);
    }
    return 0; /* not reached: the test kills it */
}

/* The poster SIGKILLed at random moments of a tight post loop (the window
 * between the CAS and the wake is nanoseconds wide; the watchpoint test
 * above hits it for sure, this one rarely): every timed wait returns by its
 * deadline, and after each kill the units taken are the posts that
 * returned, or one more (the post the kill interrupted after its CAS). */
Test(shm, sem_poster_killed_in_a_post_loop_no_unit_lost_no_wait_hangs, .timeout = 90)
{
    struct sem_seg *s = seg_new();
    cr_assert_eq(ks_sem_init(&s->sem, 0, KS_SHARED), 0);
    uint64_t seed = (uint64_t)ks_now();
    const int64_t wait_ns = 30 * KT_MS;
    long taken_total = 0, late = 0, in_flight = 0;
    int64_t worst = 0;
    for (int k = 0; k < 25; k++) {
        s->posted = 0;
        spawn("sem_poster", 1);
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int64_t until = ks_now() + 2 * KT_MS + (int64_t)((seed >> 33) % (20 * KT_MS));
        long taken = 0;
        while (ks_now() < until) {
            int64_t dl = ks_now() + wait_ns;
            int e = ks_sem_timedwait(&s->sem, dl);
            int64_t now = ks_now();
            cr_assert(e == 0 || e == ETIMEDOUT, "timedwait: %d", e);
            worst = now - dl > worst ? now - dl : worst;
            cr_assert_lt(now - dl, 1000 * KT_MS * KT_SLOW, "a timed wait returned %lld ms after its deadline",
                         (long long)((now - dl) / KT_MS));
            taken += e == 0;
            late += e == 0 && now >= dl; /* the unit was found at the deadline */
        }
        kill_kid(1);
        /* drain: the poster is gone; wait until a timed wait finds nothing */
        for (;;) {
            int64_t dl = ks_now() + wait_ns;
            int e = ks_sem_timedwait(&s->sem, dl);
            cr_assert_lt(ks_now() - dl, 1000 * KT_MS * KT_SLOW);
            if (e == ETIMEDOUT)
                break;
            cr_assert_eq(e, 0);
            taken++;
        }
        uint64_t posted = __atomic_load_n(&s->posted, __ATOMIC_ACQUIRE); /* acquire: the poster's release */
        cr_assert((uint64_t)taken == posted || (uint64_t)taken == posted + 1,
                  "kill %d: %ld units taken, %llu posts returned", k, taken, (unsigned long long)posted);
        in_flight += (uint64_t)taken == posted + 1;
        taken_total += taken;
        cr_assert_eq(s->sem.state, 0u, "kill %d: state %#llx after the drain", k, (unsigned long long)s->sem.state);
    }
    cr_log_info("sem storm: 25 kills, %ld units, %ld killed after the CAS, %ld units found at a deadline, "
                "worst lateness %lld us",
                taken_total, in_flight, late, (long long)(worst / 1000));
    cr_assert_eq(ks_sem_destroy(&s->sem), 0);
}

/* ---- ks_event ------------------------------------------------------------------------ */

/* A waiter SIGKILLed asleep leaves SLEEPERS set: the next set() makes one
 * FUTEX_WAKE for it; everyone else is released as before. */
Test(shm, event_waiter_killed_others_still_released, .timeout = 60)
{
    struct ev_seg *s = seg_new();
    cr_assert_eq(ks_event_init(&s->e, KS_SHARED), 0);
    cr_assert_eq(ks_event_init(&s->ping, KS_SHARED), 0);
    cr_assert_eq(ks_event_init(&s->pong, KS_SHARED), 0);
    spawn("event_wait", 1);
    wait_step(1, 1, "event_wait");
    in_futex(1, "event_wait");
    kill_kid(1);
    cr_assert(s->e.word & KS_EVENT_SLEEPERS);
    for (int round = 0; round < 10; round++) {
        int idx = 2 + round % 2;
        spawn("event_wait", idx);
        wait_step(idx, 1, "event_wait");
        in_futex(idx, "event_wait");
        int64_t t0 = ks_now();
        cr_assert_eq(ks_event_set(&s->e), 0);
        expect_ok(idx, "event_wait");
        cr_assert_eq(s->h.rc[idx], 0);
        cr_assert_lt(s->h.t_ret[idx] - t0, WOKEN_NS);
        cr_assert_eq(ks_event_clear(&s->e), 0);
    }
    cr_assert_eq(ks_event_destroy(&s->e), 0);
}

static int moment_event_set(void)
{
    const ks_event_t *e = dw.obj;
    /* relaxed: the trap follows this thread's own access; nothing pairs */
    return (__atomic_load_n(&e->word, __ATOMIC_RELAXED) & KS_EVENT_SET) != 0;
}

static int role_event_set_dies(void *p, int me)
{
    struct ev_seg *s = p;
    dw.obj = &s->e;
    if (dw_arm(&s->e.word, 4, moment_event_set))
        return NO_WATCH;
    mark(&s->h, me, 1);
    wait_flag(&s->h.fire);
    CHECK(&s->h, me, !(s->e.word & KS_EVENT_SET), "set before the set: %#x", s->e.word);
    dw_begin();
    ks_event_set(&s->e);
    kt_watch_end(&dw.w);
    return 3;
}

/* The setter dies between its CAS (SET, SLEEPERS cleared) and its wake:
 * another set() does not wake the sleepers (the event is set, and SLEEPERS
 * was cleared by the dead setter's CAS), but their shared sleeps end within
 * KS_PEER_RECHECK_NS (1 s, src/futex.c) and they see SET, timed or not.
 * Before that bound an untimed waiter slept until a set() found SLEEPERS
 * again, after a clear() and a new sleeper. */
Test(shm, event_setter_killed_before_its_wake_sleepers_return_within_a_second, .timeout = 60)
{
    KT_SKIP_WATCH_UNDER_TSAN();
    struct ev_seg *s = seg_new();
    cr_assert_eq(ks_event_init(&s->e, KS_SHARED), 0);
    spawn("event_set_dies", 1);
    wait_step(1, 1, "event_set_dies");
    s->h.deadline = ks_now() + LONG_NS;
    spawn("event_wait", 2); /* timed, with a deadline far away */
    wait_step(2, 1, "event_wait timed");
    in_futex(2, "event_wait timed");
    s->h.deadline = 0;
    spawn("event_wait", 3); /* untimed */
    wait_step(3, 1, "event_wait");
    in_futex(3, "event_wait");
    raise_flag(&s->h.fire);
    expect_killed(1, "event_set_dies");
    int64_t t_kill = ks_now();
    cr_assert_eq(s->e.word & (KS_EVENT_SET | KS_EVENT_SLEEPERS), KS_EVENT_SET, "word %#x", s->e.word);
    cr_assert_eq(ks_event_set(&s->e), 0, "set again: a no-op, no wake");
    expect_ok(2, "event_wait timed");
    expect_ok(3, "event_wait");
    for (int k = 2; k <= 3; k++) {
        cr_assert_eq(s->h.rc[k], 0, "waiter %d: SET seen", k);
        cr_assert_lt(s->h.t_ret[k] - t_kill, 1000 * KT_MS + WOKEN_NS, "waiter %d returned %lld ms after the death",
                     k, (long long)((s->h.t_ret[k] - t_kill) / KT_MS));
    }
}

/* ---- ks_barrier ----------------------------------------------------------------------- */

static int role_idle(void *p, int me)
{
    struct hdr *h = p;
    mark(h, me, 1);
    for (;;)
        pause();
    return 0; /* not reached: the test kills it */
}

/* A party SIGKILLed before it arrives: ks_barrier has no timed wait, so
 * the others wait for ever.  The barrier counts arrivals, not processes:
 * a stand-in that arrives in the dead one's place releases them. */
Test(shm, barrier_party_killed_before_arriving, .timeout = 60)
{
    struct bar_seg *s = seg_new();
    cr_assert_eq(ks_barrier_init(&s->b, 2, KS_SHARED), 0);
    spawn("idle", 2);
    wait_step(2, 1, "idle");
    spawn("barrier_once", 1);
    wait_step(1, 1, "barrier_once");
    in_futex(1, "barrier_once");
    kill_kid(2);
    kt_sleep_ns(300 * KT_MS);
    still_asleep(1, "the party whose peer died before arriving");
    spawn("barrier_once", 3); /* the stand-in */
    expect_ok(3, "stand-in");
    expect_ok(1, "barrier_once");
    cr_assert(s->h.rc[1] + s->h.rc[3] == KS_BARRIER_SERIAL, "one serial: %d %d", s->h.rc[1], s->h.rc[3]);
    cr_assert_eq(ks_barrier_destroy(&s->b), 0);
}

static int barrier_destroy_child(void *p)
{
    ks_barrier_destroy(p);
    return 0;
}

/* A party SIGKILLed asleep after it arrived: its arrival counts, so the
 * phase completes when the others come; the next phase lacks it (a
 * stand-in again), and ks_barrier_destroy waits for good for the dead one
 * to leave the phase it was released from. */
Test(shm, barrier_party_killed_while_waiting, .timeout = 60)
{
    struct bar_seg *s = seg_new();
    cr_assert_eq(ks_barrier_init(&s->b, 2, KS_SHARED), 0);
    spawn("barrier_once", 1);
    wait_step(1, 1, "barrier_once");
    in_futex(1, "barrier_once");
    kill_kid(1);
    cr_assert_eq(ks_barrier_wait(&s->b), KS_BARRIER_SERIAL, "the dead party's arrival counts");
    cr_assert_eq(s->b.leaving, 1u, "the dead party never leaves");
    spawn("barrier_once", 2);
    wait_step(2, 1, "barrier_once 2");
    in_futex(2, "barrier_once 2");
    kt_sleep_ns(300 * KT_MS);
    still_asleep(2, "the next phase, one party short");
    cr_assert_eq(ks_barrier_wait(&s->b), KS_BARRIER_SERIAL, "this process stands in");
    expect_ok(2, "barrier_once 2");
    blocks_for_good(barrier_destroy_child, &s->b, "ks_barrier_destroy after a party died");
}

static int moment_barrier_opened(void)
{
    const ks_barrier_t *b = dw.obj;
    /* relaxed: the trap follows this thread's own access; nothing pairs */
    return (__atomic_load_n(&b->seq, __ATOMIC_RELAXED) & ~1u) != dw.before;
}

/* Arrive last, dying right after the exchange that opens the next phase,
 * before the FUTEX_WAKE. */
static int role_barrier_arrive_dies(void *p, int me)
{
    struct bar_seg *s = p;
    dw.obj = &s->b;
    if (dw_arm(&s->b.seq, 4, moment_barrier_opened))
        return NO_WATCH;
    mark(&s->h, me, 1);
    wait_flag(&s->h.fire);
    dw.before = __atomic_load_n(&s->b.seq, __ATOMIC_RELAXED) & ~1u; /* relaxed: the phase cannot move without us */
    dw_begin();
    ks_barrier_wait(&s->b);
    kt_watch_end(&dw.w);
    return 3;
}

/* The last arriver dies between opening the phase and its wake: the
 * sleepers' phase is over and nobody wakes them, but their shared sleeps
 * end within KS_PEER_RECHECK_NS (1 s, src/futex.c) and they see the phase
 * moved.  Before that bound they slept for good: only a later phase's wake
 * could reach them, and that phase needs them. */
Test(shm, barrier_last_arriver_killed_before_its_wake_sleepers_leave_within_a_second, .timeout = 60)
{
    KT_SKIP_WATCH_UNDER_TSAN();
    struct bar_seg *s = seg_new();
    cr_assert_eq(ks_barrier_init(&s->b, 2, KS_SHARED), 0);
    spawn("barrier_once", 1);
    wait_step(1, 1, "barrier_once");
    in_futex(1, "barrier_once");
    uint32_t phase0 = s->b.seq & ~1u;
    spawn("barrier_arrive_dies", 2);
    wait_step(2, 1, "barrier_arrive_dies");
    raise_flag(&s->h.fire);
    expect_killed(2, "barrier_arrive_dies");
    int64_t t_kill = ks_now();
    cr_assert_eq(s->b.seq & ~1u, phase0 + 2, "the phase was opened");
    cr_assert_eq(s->b.arrived, 0u);
    expect_ok(1, "barrier_once");
    cr_assert(s->h.rc[1] == 0 || s->h.rc[1] == KS_BARRIER_SERIAL, "rc %d", s->h.rc[1]);
    cr_assert_lt(s->h.t_ret[1] - t_kill, 1000 * KT_MS + WOKEN_NS, "left %lld ms after the death",
                 (long long)((s->h.t_ret[1] - t_kill) / KT_MS));
}

/* ---- mutex, rmutex, rwlock: a holder SIGKILLed ------------------------------------------ */

struct hold_seg {
    struct hdr h;
    ks_mutex_t m;
    ks_rmutex_t r;
    ks_rwlock_t w; /* write-held */
    ks_rwlock_t rd; /* read-held */
};

static int role_hold_all(void *p, int me)
{
    struct hold_seg *s = p;
    CHECK(&s->h, me, ks_mutex_lock(&s->m) == 0, "mutex");
    CHECK(&s->h, me, ks_rmutex_lock(&s->r) == 0, "rmutex");
    CHECK(&s->h, me, ks_rwlock_wrlock(&s->w) == 0, "wrlock");
    CHECK(&s->h, me, ks_rwlock_rdlock(&s->rd) == 0, "rdlock");
    mark(&s->h, me, 1);
    for (;;)
        pause();
}

/* None of these is robust: what the dead process held stays held.  The
 * timed calls of the others return ETIMEDOUT (no hang), readers still
 * share a lock a dead reader holds, and nothing ever gives it back
 * (ks_robust is the mutex that survives, docs/robust.md). */
Test(shm, holders_killed_leave_mutex_rmutex_rwlock_held, .timeout = 60)
{
    struct hold_seg *s = seg_new();
    cr_assert_eq(ks_mutex_init(&s->m, KS_SHARED), 0);
    cr_assert_eq(ks_rmutex_init(&s->r, KS_SHARED), 0);
    cr_assert_eq(ks_rwlock_init(&s->w, KS_SHARED), 0);
    cr_assert_eq(ks_rwlock_init(&s->rd, KS_SHARED), 0);
    spawn("hold_all", 1);
    wait_step(1, 1, "hold_all");
    kill_kid(1);
    const int64_t t = 50 * KT_MS;
    cr_assert_eq(ks_mutex_timedlock(&s->m, ks_deadline_after(t)), ETIMEDOUT);
    cr_assert_eq(ks_rmutex_timedlock(&s->r, ks_deadline_after(t)), ETIMEDOUT);
    cr_assert_eq(ks_rmutex_unlock(&s->r), EPERM, "the dead owner's id is not ours");
    cr_assert_eq(ks_rwlock_timedrdlock(&s->w, ks_deadline_after(t)), ETIMEDOUT);
    cr_assert_eq(ks_rwlock_timedwrlock(&s->w, ks_deadline_after(t)), ETIMEDOUT);
    cr_assert_eq(ks_rwlock_timedwrlock(&s->rd, ks_deadline_after(t)), ETIMEDOUT);
    cr_assert_eq(ks_rwlock_tryrdlock(&s->rd), 0, "readers still share with the dead reader");
    cr_assert_eq(ks_rwlock_unlock(&s->rd), 0);
    cr_assert_eq(ks_mutex_destroy(&s->m), EBUSY);
    cr_assert_eq(ks_rwlock_destroy(&s->rd), EBUSY);
}

/* ---- a waiter SIGKILLed: ks_mutex, ks_rwlock ----------------------------------------------- */

static void on_usr1(int sig) { (void)sig; }

/* Lock (with h.deadline if set, else LONG_NS); a SIGUSR1 handler without
 * SA_RESTART, so that the test can end one futex sleep of the wait. */
static int role_mutex_starve(void *p, int me)
{
    struct mx_seg *s = p;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    mark(&s->h, me, 1);
    int e = ks_mutex_timedlock(&s->m, s->h.deadline ? s->h.deadline : ks_deadline_after(LONG_NS));
    result(&s->h, me, e);
    if (e == 0)
        ks_mutex_unlock(&s->m);
    return 0;
}

/* A waiter SIGKILLed in its first sleep leaves CONTENDED: the unlock makes
 * one FUTEX_WAKE that finds nobody, and the mutex goes on as before. */
Test(shm, mutex_waiter_killed_in_its_first_sleep_is_harmless, .timeout = 60)
{
    struct mx_seg *s = seg_new();
    cr_assert_eq(ks_mutex_init(&s->m, KS_SHARED), 0);
    cr_assert_eq(ks_mutex_lock(&s->m), 0);
    spawn("mutex_starve", 1);
    wait_step(1, 1, "mutex_starve");
    in_futex(1, "mutex_starve");
    kill_kid(1);
    cr_assert_eq(s->m.state, KS_MUTEX_LOCKED | KS_MUTEX_CONTENDED);
    cr_assert_eq(ks_mutex_unlock(&s->m), 0);
    cr_assert_eq(s->m.state, 0u);
    spawn("mutex_count", 2);
    raise_flag(&s->h.go);
    cr_assert_eq(mutex_count(s, 0), 0, "%s", s->h.fail[0]);
    expect_ok(2, "mutex_count");
    cr_assert_eq(s->counter, 2L * MX_ITERS);
}

/* A waiter that has waited more than 1 ms, was woken and found the mutex
 * held again sets STARVING, which reserves the next free mutex for a thread
 * that has slept, and only that waiter clears it.  SIGKILLed then, it once
 * left the mutex free but reserved for ever (newcomers slept, nobody woke
 * them; timed locks timed out though no process held it).  Now a thread
 * that has slept 10 ms on a free reserved mutex takes the reservation over
 * (src/mutex.c, KS_MUTEX_ORPHAN_NS).  (Here a signal ends the waiter's sleep
 * after 20 ms, as a wake-up lost to a barging thread would.) */
Test(shm, mutex_waiter_killed_after_setting_starving_is_taken_over, .timeout = 60)
{
    struct mx_seg *s = seg_new();
    cr_assert_eq(ks_mutex_init(&s->m, KS_SHARED), 0);
    cr_assert_eq(ks_mutex_lock(&s->m), 0);
    spawn("mutex_starve", 1);
    wait_step(1, 1, "mutex_starve");
    in_futex(1, "mutex_starve");
    kt_sleep_ns(20 * KT_MS);
    kill(kids[1], SIGUSR1);
    int64_t end = ks_now() + 5000 * KT_MS;
    while (!(__atomic_load_n(&s->m.state, __ATOMIC_RELAXED) & KS_MUTEX_STARVING) && ks_now() < end)
        kt_sleep_ns(100000); /* relaxed: polling a flag only the helper sets */
    cr_assert(s->m.state & KS_MUTEX_STARVING, "the waiter did not set S: state %#x", s->m.state);
    in_futex(1, "mutex_starve, asleep again");
    kill_kid(1);
    cr_assert_eq(ks_mutex_unlock(&s->m), 0);
    cr_assert_eq(s->m.state, KS_MUTEX_STARVING, "free, and reserved for the dead waiter");
    cr_assert_eq(ks_mutex_trylock(&s->m), EBUSY, "a trylock does not wait for the reservation");
    int64_t t0 = ks_now();
    cr_assert_eq(ks_mutex_timedlock(&s->m, ks_deadline_after(2000 * KT_MS)), 0, "taken over");
    int64_t took = ks_now() - t0;
    cr_assert_geq(took, 10 * KT_MS, "not before the reservation's 10 ms");
    cr_assert_lt(took, 10 * KT_MS + KT_LATE_NS);
    cr_assert_eq(s->m.state & KS_MUTEX_STARVING, 0u, "S cleared by the taker");
    cr_assert_eq(ks_mutex_unlock(&s->m), 0);
    cr_assert_eq(ks_mutex_trylock(&s->m), 0, "usable by anyone again");
    cr_assert_eq(ks_mutex_unlock(&s->m), 0);
    s->h.deadline = ks_now() + 300 * KT_MS;
    spawn("mutex_starve", 2); /* another process: it gets it at once */
    expect_ok(2, "mutex_starve 2");
    cr_assert_eq(s->h.rc[2], 0, "rc %d", s->h.rc[2]);
}

/* Wait for the write lock (the test holds a read lock); killed there. */
static int role_rw_write_wait(void *p, int me)
{
    struct rw_seg *s = p;
    mark(&s->h, me, 1);
    int e = ks_rwlock_timedwrlock(&s->l, ks_deadline_after(LONG_NS));
    result(&s->h, me, e);
    if (e == 0)
        ks_rwlock_unlock(&s->l);
    return 0;
}

static void rw_writer_dies(unsigned flags)
{
    struct rw_seg *s = seg_new();
    cr_assert_eq(ks_rwlock_init(&s->l, KS_SHARED | flags), 0);
    cr_assert_eq(ks_rwlock_rdlock(&s->l), 0);
    spawn("rw_write_wait", 1);
    wait_step(1, 1, "rw_write_wait");
    in_futex(1, "rw_write_wait");
    cr_assert_eq(s->l.state >> 32, 1u, "one writer registered");
    kill_kid(1);
    const int64_t t = 50 * KT_MS;
    if (flags & KS_RWLOCK_PREFER_READER) {
        cr_assert_eq(ks_rwlock_tryrdlock(&s->l), 0, "with a reader inside, readers still enter");
        cr_assert_eq(ks_rwlock_unlock(&s->l), 0);
    } else {
        cr_assert_eq(ks_rwlock_tryrdlock(&s->l), EBUSY, "new readers defer to the dead writer");
    }
    cr_assert_eq(ks_rwlock_unlock(&s->l), 0);
    cr_assert_eq(ks_rwlock_timedwrlock(&s->l, ks_deadline_after(t)), 0, "writers still get it");
    cr_assert_eq(ks_rwlock_unlock(&s->l), 0);
    cr_assert_eq(ks_rwlock_tryrdlock(&s->l), EBUSY, "no reader inside: readers wait for the dead writer");
    cr_assert_eq(ks_rwlock_timedrdlock(&s->l, ks_deadline_after(t)), ETIMEDOUT);
    cr_assert_eq(s->l.state >> 32, 1u, "the dead writer stays registered");
    cr_assert_eq(ks_rwlock_destroy(&s->l), EBUSY);
}

/* A writer SIGKILLed while waiting stays registered (WRITER_WAITS for good):
 * writers still take the lock, but readers defer to the dead writer for
 * ever; under reader preference they still enter while other readers are
 * inside, never into a free lock. */
Test(shm, rwlock_writer_killed_while_waiting_locks_readers_out, .timeout = 60) { rw_writer_dies(0); }
Test(shm, rwlock_prefer_reader_writer_killed_while_waiting_locks_readers_out, .timeout = 60)
{
    rw_writer_dies(KS_RWLOCK_PREFER_READER);
}

/* ---- the helper's side -------------------------------------------------------------- */

struct role {
    const char *name;
    int (*fn)(void *seg, int me);
};

static const struct role roles[] = {
    {"mutex_wait", role_mutex_wait},
    {"mutex_count", role_mutex_count},
    {"rmutex", role_rmutex},
    {"cond_wait", role_cond_wait},
    {"cond_pingpong", role_cond_pingpong},
    {"cond_mutex_hold", role_cond_mutex_hold},
    {"cond_signal_dies", role_cond_signal_dies},
    {"sem_producer", role_sem_producer},
    {"sem_wait", role_sem_wait},
    {"sem_post_dies", role_sem_post_dies},
    {"sem_poster", role_sem_poster},
    {"event_pong", role_event_pong},
    {"event_wait", role_event_wait},
    {"event_set_dies", role_event_set_dies},
    {"barrier_phases", role_barrier_phases},
    {"barrier_once", role_barrier_once},
    {"barrier_arrive_dies", role_barrier_arrive_dies},
    {"rw_mix", role_rw_mix},
    {"rw_read", role_rw_read},
    {"robust_hold", role_robust_hold},
    {"robust_lock", role_robust_lock},
    {"robust_count", role_robust_count},
    {"hold_all", role_hold_all},
    {"mutex_starve", role_mutex_starve},
    {"queue_producer", role_queue_producer},
    {"pool_use", role_pool_use},
    {"once", role_once},
    {"rw_write_wait", role_rw_write_wait},
    {"idle", role_idle},
};

/* This binary started by spawn() (KT_SHM_NAME, KT_SHM_ROLE, KT_SHM_INDEX in
 * its environment) runs its role here and exits before Criterion's main:
 * a process that shares nothing with the test but the segment's name.  It
 * maps the segment after a spacer, and again if it still landed where the
 * test has it, so the addresses always differ. */
__attribute__((constructor)) static void shm_helper(void)
{
    const char *name = getenv("KT_SHM_NAME"), *role = getenv("KT_SHM_ROLE"), *ix = getenv("KT_SHM_INDEX");
    if (!name || !role || !ix)
        return;
    int me = atoi(ix);
    if (me < 1 || me >= NPROC)
        _exit(89);
    alarm(60); /* a helper left behind by a crashed test ends by itself */
    int fd = shm_open(name, O_RDWR, 0);
    if (fd < 0)
        _exit(90);
    void *spacer = mmap(NULL, 64 * SEG_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    (void)spacer;
    struct hdr *h = mmap(NULL, SEG_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (h != MAP_FAILED && (uintptr_t)h == h->addr[0]) {
        struct hdr *again = mmap(NULL, SEG_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        munmap(h, SEG_BYTES);
        h = again;
    }
    close(fd);
    if (h == MAP_FAILED)
        _exit(91);
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (!strcmp(roles[i].name, role)) {
            /* release: pairs with spawn()'s acquire */
            __atomic_store_n(&h->addr[me], (uintptr_t)h, __ATOMIC_RELEASE);
            _exit(roles[i].fn(h, me));
        }
    _exit(92);
}

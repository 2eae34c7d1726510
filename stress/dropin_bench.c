/* stress/dropin_bench.c - the drop-in layer's figures (docs/dropin.md).
 *
 * A plain pthread program: it includes no ksync header and links only
 * against glibc, so the same binary measures glibc's primitives when run as
 * it is and ksync's when run as `build/ksync-run -- dropin-bench ...`.
 * tools/bench-dropin.sh runs it both ways and prints the ratios.
 *
 *   dropin-bench --uncontended N   N pairs pthread_mutex_lock+unlock on one
 *                                  thread, in the noinline function
 *                                  loop_mutex (for callgrind's
 *                                  --toggle-collect=loop_mutex)
 *   dropin-bench --empty N         the same loop without the calls
 *                                  (loop_empty), to subtract
 *   dropin-bench --threads T --seconds S
 *                                  contended counter: T threads loop
 *                                  { lock; counter++; unlock } for S seconds;
 *                                  handoffs_per_op: the share of increments
 *                                  made by another thread than the one
 *                                  before (how often the lock changed hands)
 *   dropin-bench --handoff --seconds S
 *                                  two threads pass a token back and forth
 *                                  through one mutex and two condvars
 *   dropin-bench --rwlock --threads T --seconds S [--write-every K]
 *                                  read-mostly rwlock: each thread takes the
 *                                  write lock on every K-th operation
 *                                  (default 100), the read lock otherwise
 *   dropin-bench --limiter [--timed] --threads T --seconds S [--permits P]
 *                                  T threads through a P-permit sem_t
 *                                  (default 3): sem_wait (--timed:
 *                                  sem_timedwait, deadline 1 h after the
 *                                  run); 300
 *                                  ns of work (timed on the clock); sem_post
 *
 * Each measurement prints one line, "NAME key=value ...", with the rate as
 * ops_per_s (handoff: round trips per second).  The program checks what it
 * can (the counter equals the sum of the threads' counts; readers never see
 * a half-done write) and exits 1 when a check fails.
 *
 * Before any measurement the program creates and joins one thread: glibc's
 * pthread_mutex_lock skips its atomic instruction in a process that never
 * created one (__libc_single_threaded), which no multi-threaded program
 * ever sees.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LINE 128

static void die(const char *what, int err)
{
    fprintf(stderr, "dropin-bench: %s: %s\n", what, strerror(err));
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *nothing(void *arg)
{
    return arg;
}

/* Leave glibc's single-threaded mode for good (see the header comment). */
static void go_multithreaded(void)
{
    pthread_t t;
    int e = pthread_create(&t, NULL, nothing, NULL);
    if (e)
        die("pthread_create", e);
    pthread_join(t, NULL);
}

/* ---- (a) uncontended lock+unlock ---------------------------------------- */

static pthread_mutex_t unc_mutex = PTHREAD_MUTEX_INITIALIZER;

/* The measured loops.  noinline and with these names, so that callgrind's
 * --toggle-collect=loop_mutex counts this loop and what it calls, nothing
 * else.  The empty asm keeps the compiler from dropping the empty loop. */
__attribute__((noinline)) void loop_mutex(pthread_mutex_t *m, uint64_t n);
__attribute__((noinline)) void loop_empty(pthread_mutex_t *m, uint64_t n);

__attribute__((noinline)) void loop_mutex(pthread_mutex_t *m, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        pthread_mutex_lock(m);
        pthread_mutex_unlock(m);
    }
}

__attribute__((noinline)) void loop_empty(pthread_mutex_t *m, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        __asm__ __volatile__("" : : "r"(m) : "memory");
}

static int run_uncontended(uint64_t n, int empty)
{
    void (*loop)(pthread_mutex_t *, uint64_t) = empty ? loop_empty : loop_mutex;
    loop_mutex(&unc_mutex, 1000); /* warm-up: lazy binding, first-use setup */
    double t0 = now_s();
    loop(&unc_mutex, n);
    double t1 = now_s();
    printf("%s pairs=%llu ns_per_pair=%.2f\n", empty ? "empty" : "uncontended",
           (unsigned long long)n, n ? (t1 - t0) * 1e9 / (double)n : 0.0);
    return 0;
}

/* ---- shared start/stop for the timed measurements ------------------------- */

static atomic_int ready, go, stop;

struct thr {
    pthread_t id;
    int index;
    uint64_t ops;
    int bad;
} __attribute__((aligned(LINE)));

static void wait_go(void)
{
    atomic_fetch_add(&ready, 1);
    while (!atomic_load_explicit(&go, memory_order_acquire))
        sched_yield();
}

static int stopped(void)
{
    return atomic_load_explicit(&stop, memory_order_relaxed);
}

/* Start nthr threads on fn, let them run for seconds, stop them, join them;
 * return the time from the start signal to the last join. */
static double run_timed(struct thr *t, int nthr, void *(*fn)(void *), double seconds)
{
    atomic_store(&ready, 0);
    atomic_store(&go, 0);
    atomic_store(&stop, 0);
    for (int i = 0; i < nthr; i++) {
        t[i].index = i;
        int e = pthread_create(&t[i].id, NULL, fn, &t[i]);
        if (e)
            die("pthread_create", e);
    }
    while (atomic_load(&ready) < nthr)
        sched_yield();
    double t0 = now_s();
    atomic_store_explicit(&go, 1, memory_order_release);
    struct timespec d = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&d, &d) == -1 && errno == EINTR)
        ;
    atomic_store(&stop, 1);
    for (int i = 0; i < nthr; i++)
        pthread_join(t[i].id, NULL);
    return now_s() - t0;
}

/* nthr zeroed per-thread records, one cache line each */
static struct thr *new_threads(int nthr)
{
    struct thr *t = aligned_alloc(LINE, sizeof *t * (size_t)nthr);
    if (!t)
        die("aligned_alloc", ENOMEM);
    memset(t, 0, sizeof *t * (size_t)nthr);
    return t;
}

/* Sum and extremes of the threads' counts; returns 1 if a thread saw a
 * failed check (its `bad`). */
static int spread(const struct thr *t, int nthr, uint64_t *total, uint64_t *lo, uint64_t *hi)
{
    int bad = 0;
    *total = 0;
    *lo = UINT64_MAX;
    *hi = 0;
    for (int i = 0; i < nthr; i++) {
        *total += t[i].ops;
        if (t[i].ops < *lo)
            *lo = t[i].ops;
        if (t[i].ops > *hi)
            *hi = t[i].ops;
        bad |= t[i].bad;
    }
    return bad;
}

/* ---- (b) contended counter ------------------------------------------------ */

/* The lock beside the data it guards, as in a program. */
static struct {
    pthread_mutex_t lock;
    uint64_t counter;  /* guarded by lock */
    uint64_t handoffs; /* guarded by lock: increments made by another thread than the one before */
    int last;          /* guarded by lock: 1 + the index of the thread that made the last increment */
} __attribute__((aligned(LINE))) ctr = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};

static void *counter_body(void *arg)
{
    struct thr *t = arg;
    const int me = t->index + 1;
    uint64_t n = 0;
    wait_go();
    while (!stopped()) {
        pthread_mutex_lock(&ctr.lock);
        ctr.counter++;
        if (ctr.last != me) {
            ctr.handoffs++;
            ctr.last = me;
        }
        pthread_mutex_unlock(&ctr.lock);
        n++;
    }
    t->ops = n;
    return NULL;
}

static int run_counter(int nthr, double seconds)
{
    struct thr *t = new_threads(nthr);
    ctr.counter = 0;
    ctr.handoffs = 0;
    ctr.last = 0;
    double el = run_timed(t, nthr, counter_body, seconds);
    uint64_t total, lo, hi;
    spread(t, nthr, &total, &lo, &hi);
    printf("counter threads=%d seconds=%.2f ops=%llu ops_per_s=%.0f fairness=%.2f handoffs_per_op=%.3f\n", nthr,
           el, (unsigned long long)total, (double)total / el, hi ? (double)lo / (double)hi : 0.0,
           total ? (double)ctr.handoffs / (double)total : 0.0);
    free(t);
    if (ctr.counter != total) {
        fprintf(stderr, "dropin-bench: counter %llu != sum of the threads' counts %llu\n",
                (unsigned long long)ctr.counter, (unsigned long long)total);
        return 1;
    }
    return 0;
}

/* ---- (c) cond hand-off ---------------------------------------------------- */

static pthread_mutex_t ho_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ho_cv[2] = {PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};
static int ho_turn;   /* guarded by ho_lock: whose turn, 0 or 1 */
static int ho_done;   /* guarded by ho_lock */

static void *handoff_body(void *arg)
{
    struct thr *t = arg;
    int me = t->index;
    uint64_t n = 0;
    wait_go();
    pthread_mutex_lock(&ho_lock);
    for (;;) {
        while (ho_turn != me && !ho_done)
            pthread_cond_wait(&ho_cv[me], &ho_lock);
        if (ho_done)
            break;
        if (stopped())
            ho_done = 1;
        else
            n++;
        ho_turn = !me;
        pthread_cond_signal(&ho_cv[!me]);
    }
    pthread_mutex_unlock(&ho_lock);
    t->ops = n;
    return NULL;
}

static int run_handoff(double seconds)
{
    struct thr t[2];
    memset(t, 0, sizeof t);
    ho_turn = 0;
    ho_done = 0;
    double el = run_timed(t, 2, handoff_body, seconds);
    /* thread 0 moves first, so it has as many passes as thread 1 or one more */
    uint64_t diff = t[0].ops - t[1].ops;
    printf("handoff threads=2 seconds=%.2f round_trips=%llu ops_per_s=%.0f\n", el,
           (unsigned long long)t[1].ops, (double)t[1].ops / el);
    if (diff > 1) {
        fprintf(stderr, "dropin-bench: handoff: passes %llu and %llu differ by more than one\n",
                (unsigned long long)t[0].ops, (unsigned long long)t[1].ops);
        return 1;
    }
    return 0;
}

/* ---- (c) read-mostly rwlock ----------------------------------------------- */

static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
static uint64_t rw_a, rw_b; /* guarded by rw: a writer sets both to the same value */
static int rw_every = 100;

static void *rwlock_body(void *arg)
{
    struct thr *t = arg;
    uint64_t n = 0;
    wait_go();
    while (!stopped()) {
        if (n % (uint64_t)rw_every == (uint64_t)t->index % (uint64_t)rw_every) {
            pthread_rwlock_wrlock(&rw);
            uint64_t v = rw_a + 1;
            __atomic_store_n(&rw_a, v, __ATOMIC_RELAXED);
            __asm__ __volatile__("" ::: "memory");
            __atomic_store_n(&rw_b, v, __ATOMIC_RELAXED);
            pthread_rwlock_unlock(&rw);
        } else {
            pthread_rwlock_rdlock(&rw);
            uint64_t a = __atomic_load_n(&rw_a, __ATOMIC_RELAXED);
            uint64_t b = __atomic_load_n(&rw_b, __ATOMIC_RELAXED);
            pthread_rwlock_unlock(&rw);
            if (a != b)
                t->bad = 1;
        }
        n++;
    }
    t->ops = n;
    return NULL;
}

static int run_rwlock(int nthr, double seconds)
{
    struct thr *t = new_threads(nthr);
    double el = run_timed(t, nthr, rwlock_body, seconds);
    uint64_t total, lo, hi;
    const int bad = spread(t, nthr, &total, &lo, &hi);
    printf("rwlock threads=%d write_every=%d seconds=%.2f ops=%llu ops_per_s=%.0f fairness=%.2f\n",
           nthr, rw_every, el, (unsigned long long)total, (double)total / el,
           hi ? (double)lo / (double)hi : 0.0);
    free(t);
    if (bad) {
        fprintf(stderr, "dropin-bench: rwlock: a reader saw a half-done write\n");
        return 1;
    }
    return 0;
}

/* ---- (d) semaphore limiter ------------------------------------------------ */

static sem_t lim;
static int lim_timed, lim_permits = 3;
static double lim_seconds;
static atomic_int lim_inside;

static void *limiter_body(void *arg)
{
    struct thr *t = arg;
    uint64_t n = 0;
    struct timespec far; /* an hour past the end of the run */
    clock_gettime(CLOCK_REALTIME, &far);
    far.tv_sec += 3600 + (time_t)lim_seconds;
    wait_go();
    while (!stopped()) {
        int r = lim_timed ? sem_timedwait(&lim, &far) : sem_wait(&lim);
        if (r != 0) {
            if (errno == EINTR)
                continue;
            die(lim_timed ? "sem_timedwait" : "sem_wait", errno);
        }
        if (atomic_fetch_add_explicit(&lim_inside, 1, memory_order_relaxed) >= lim_permits)
            t->bad = 1;
        const double until = now_s() + 300e-9;
        while (now_s() < until)
            ;
        atomic_fetch_sub_explicit(&lim_inside, 1, memory_order_relaxed);
        if (sem_post(&lim) != 0)
            die("sem_post", errno);
        n++;
    }
    t->ops = n;
    return NULL;
}

static int run_limiter(int nthr, double seconds)
{
    struct thr *t = new_threads(nthr);
    lim_seconds = seconds;
    if (sem_init(&lim, 0, (unsigned)lim_permits) != 0)
        die("sem_init", errno);
    double el = run_timed(t, nthr, limiter_body, seconds);
    uint64_t total, lo, hi;
    const int bad = spread(t, nthr, &total, &lo, &hi);
    int v = -1;
    sem_getvalue(&lim, &v);
    printf("limiter threads=%d permits=%d wait=%s seconds=%.2f ops=%llu ops_per_s=%.0f fairness=%.2f\n", nthr,
           lim_permits, lim_timed ? "sem_timedwait" : "sem_wait", el, (unsigned long long)total,
           (double)total / el, hi ? (double)lo / (double)hi : 0.0);
    free(t);
    sem_destroy(&lim);
    if (bad || v != lim_permits) {
        fprintf(stderr, "dropin-bench: limiter: more than %d threads inside, or %d permits at the end\n",
                lim_permits, v);
        return 1;
    }
    return 0;
}

/* ---- options -------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: dropin-bench --uncontended N | --empty N\n"
            "       dropin-bench [--threads T] [--seconds S]            (contended counter)\n"
            "       dropin-bench --handoff [--seconds S]\n"
            "       dropin-bench --rwlock [--threads T] [--seconds S] [--write-every K]\n"
            "       dropin-bench --limiter [--timed] [--threads T] [--seconds S] [--permits P]\n");
    exit(2);
}

static unsigned long long num(const char *s, unsigned long long lo, unsigned long long hi)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        usage();
    return v;
}

int main(int argc, char **argv)
{
    enum { COUNTER, UNCONTENDED, EMPTY, HANDOFF, RWLOCK, LIMITER } mode = COUNTER;
    uint64_t iters = 0;
    int nthr = 2;
    double seconds = 1.0;
    int limiter_opts = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--uncontended") && v) {
            mode = UNCONTENDED;
            iters = num(v, 0, 1ULL << 40);
            i++;
        } else if (!strcmp(a, "--empty") && v) {
            mode = EMPTY;
            iters = num(v, 0, 1ULL << 40);
            i++;
        } else if (!strcmp(a, "--threads") && v) {
            nthr = (int)num(v, 1, 4096);
            i++;
        } else if (!strcmp(a, "--seconds") && v) {
            char *end;
            seconds = strtod(v, &end);
            if (end == v || *end || !(seconds > 0 && seconds <= 3600))
                usage();
            i++;
        } else if (!strcmp(a, "--write-every") && v) {
            rw_every = (int)num(v, 1, 1000000);
            i++;
        } else if (!strcmp(a, "--handoff")) {
            mode = HANDOFF;
        } else if (!strcmp(a, "--rwlock")) {
            mode = RWLOCK;
        } else if (!strcmp(a, "--limiter")) {
            mode = LIMITER;
        } else if (!strcmp(a, "--timed")) {
            lim_timed = 1;
            limiter_opts = 1;
        } else if (!strcmp(a, "--permits") && v) {
            lim_permits = (int)num(v, 1, 1000);
            limiter_opts = 1;
            i++;
        } else {
            usage();
        }
    }

    if (limiter_opts && mode != LIMITER)
        usage(); /* --timed and --permits belong to --limiter */
    go_multithreaded();
    int rc;
    switch (mode) {
    case UNCONTENDED: rc = run_uncontended(iters, 0); break;
    case EMPTY: rc = run_uncontended(iters, 1); break;
    case HANDOFF: rc = run_handoff(seconds); break;
    case RWLOCK: rc = run_rwlock(nthr, seconds); break;
    case LIMITER: rc = run_limiter(nthr, seconds); break;
    default: rc = run_counter(nthr, seconds); break;
    }
    fflush(stdout);
    return rc;
}

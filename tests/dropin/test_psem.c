/* tests/dropin/test_psem.c - POSIX semaphores as glibc 2.36 behaves: layout,
 * counting, sem_trywait EAGAIN, sem_timedwait / sem_clockwait deadlines and
 * EINVAL, EOVERFLOW at SEM_VALUE_MAX, sem_init EINVAL above it, interrupted
 * waits (EINTR with and without SA_RESTART), sem_wait as a cancellation
 * point, process-shared semaphores across fork(), and named semaphores
 * (sem_open / sem_close / sem_unlink) seen by this process, a forked child
 * and a freshly exec'd process.  References: POSIX sem_wait, sem_timedwait,
 * sem_post, sem_init, sem_open, sem_unlink; signal(7) for which waits
 * SA_RESTART restarts. */
#include "helpers.h"

#include <stdalign.h>
#include <sys/stat.h>

#if defined(__x86_64__) || defined(__aarch64__)
_Static_assert(sizeof(sem_t) == 32, "glibc sem_t is 32 bytes");
_Static_assert(alignof(sem_t) == 8, "sem_t is 8-aligned");
_Static_assert(SEM_VALUE_MAX == INT_MAX, "glibc's SEM_VALUE_MAX");
#endif

static int value_of(sem_t *s)
{
    int v = -12345;
    cr_assert_eq(sem_getvalue(s, &v), 0);
    return v;
}

/* -1 and errno, as one number: 0 on success, the errno value on failure. */
static int err_of(int r) { return r == 0 ? 0 : r == -1 ? errno : -1000 - r; }

/* ---- counting -------------------------------------------------------------------- */

Test(psem, counting_trywait_and_getvalue, .timeout = 30)
{
    sem_t s;
    cr_assert_eq(sem_init(&s, 0, 3), 0);
    cr_assert_eq(value_of(&s), 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(sem_trywait(&s), 0);
    errno = 0;
    cr_assert_eq(sem_trywait(&s), -1);
    cr_assert_eq(errno, EAGAIN);
    cr_assert_eq(value_of(&s), 0);
    cr_assert_eq(sem_post(&s), 0);
    cr_assert_eq(sem_post(&s), 0);
    cr_assert_eq(value_of(&s), 2);
    cr_assert_eq(sem_wait(&s), 0);
    struct timespec dl = dt_deadline(CLOCK_REALTIME, DT_S);
    cr_assert_eq(sem_timedwait(&s, &dl), 0);
    cr_assert_eq(value_of(&s), 0);
    cr_assert_eq(err_of(sem_trywait(&s)), EAGAIN);
    cr_assert_eq(sem_destroy(&s), 0);
    /* sem_init on garbage */
    memset(&s, 0xa5, sizeof s);
    cr_assert_eq(sem_init(&s, 0, 0), 0);
    cr_assert_eq(value_of(&s), 0);
    cr_assert_eq(err_of(sem_trywait(&s)), EAGAIN);
    cr_assert_eq(sem_destroy(&s), 0);
}

Test(psem, value_limits, .timeout = 30)
{
    sem_t s;
    errno = 0;
    cr_assert_eq(sem_init(&s, 0, (unsigned)SEM_VALUE_MAX + 1u), -1);
    cr_assert_eq(errno, EINVAL);
    cr_assert_eq(err_of(sem_init(&s, 0, ~0u)), EINVAL);
    cr_assert_eq(sem_init(&s, 0, SEM_VALUE_MAX), 0);
    cr_assert_eq(value_of(&s), SEM_VALUE_MAX);
    errno = 0;
    cr_assert_eq(sem_post(&s), -1);
    cr_assert_eq(errno, EOVERFLOW);
    cr_assert_eq(value_of(&s), SEM_VALUE_MAX, "a refused post changed the value");
    cr_assert_eq(sem_trywait(&s), 0);
    cr_assert_eq(sem_post(&s), 0);
    cr_assert_eq(err_of(sem_post(&s)), EOVERFLOW);
    cr_assert_eq(sem_destroy(&s), 0);
    cr_assert_eq(sem_init(&s, 1, SEM_VALUE_MAX - 1), 0);
    cr_assert_eq(sem_post(&s), 0);
    cr_assert_eq(err_of(sem_post(&s)), EOVERFLOW);
    cr_assert_eq(sem_destroy(&s), 0);
}

/* ---- deadlines ---------------------------------------------------------------------- */

Test(psem, timedwait_and_clockwait_time_out_not_early, .timeout = 30)
{
    sem_t s;
    cr_assert_eq(sem_init(&s, 0, 0), 0);
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 50 * DT_MS);
    errno = 0;
    cr_assert_eq(sem_timedwait(&s, &dl), -1);
    cr_assert_eq(errno, ETIMEDOUT);
    dt_assert_not_early(CLOCK_REALTIME, dl, "sem_timedwait");
    clockid_t clocks[] = {CLOCK_MONOTONIC, CLOCK_REALTIME};
    for (unsigned i = 0; i < 2; i++) {
        dl = dt_deadline(clocks[i], 50 * DT_MS);
        cr_assert_eq(err_of(sem_clockwait(&s, clocks[i], &dl)), ETIMEDOUT, "clock %d", (int)clocks[i]);
        dt_assert_not_early(clocks[i], dl, "sem_clockwait");
    }
    dl.tv_sec = 0;
    dl.tv_nsec = 0;
    cr_assert_eq(err_of(sem_timedwait(&s, &dl)), ETIMEDOUT);
    cr_assert_eq(err_of(sem_clockwait(&s, CLOCK_MONOTONIC, &dl)), ETIMEDOUT);
    /* A value present: taken whatever the (valid) deadline. */
    cr_assert_eq(sem_post(&s), 0);
    cr_assert_eq(sem_timedwait(&s, &dl), 0);
    cr_assert_eq(sem_post(&s), 0);
    cr_assert_eq(sem_clockwait(&s, CLOCK_MONOTONIC, &dl), 0);
    cr_assert_eq(value_of(&s), 0);
    cr_assert_eq(sem_destroy(&s), 0);
}

/* glibc checks the clock id and tv_nsec before looking at the value: EINVAL
 * even when the semaphore could be taken, and nothing is taken. */
Test(psem, bad_deadline_or_clock_is_einval, .timeout = 30)
{
    sem_t s;
    cr_assert_eq(sem_init(&s, 0, 0), 0);
    for (int avail = 0; avail < 2; avail++) {
        struct timespec bad = dt_bad_nsec(CLOCK_REALTIME);
        errno = 0;
        cr_assert_eq(sem_timedwait(&s, &bad), -1, "value %d", avail);
        cr_assert_eq(errno, EINVAL, "value %d", avail);
        bad.tv_nsec = -1;
        cr_assert_eq(err_of(sem_timedwait(&s, &bad)), EINVAL, "value %d", avail);
        bad = dt_bad_nsec(CLOCK_MONOTONIC);
        cr_assert_eq(err_of(sem_clockwait(&s, CLOCK_MONOTONIC, &bad)), EINVAL, "value %d", avail);
        struct timespec dl = dt_deadline(CLOCK_MONOTONIC, DT_S);
        cr_assert_eq(err_of(sem_clockwait(&s, CLOCK_PROCESS_CPUTIME_ID, &dl)), EINVAL, "value %d", avail);
        cr_assert_eq(err_of(sem_clockwait(&s, CLOCK_MONOTONIC_RAW, &dl)), EINVAL, "value %d", avail);
        cr_assert_eq(err_of(sem_clockwait(&s, (clockid_t)12345, &dl)), EINVAL, "value %d", avail);
        cr_assert_eq(value_of(&s), avail, "a refused wait changed the value");
        cr_assert_eq(sem_post(&s), 0);
    }
    cr_assert_eq(sem_destroy(&s), 0);
}

/* ---- many threads -------------------------------------------------------------------------- */

#define PRODUCERS 8
#define CONSUMERS 8
#define PER 3000

struct pc {
    sem_t s;
    int consumed;
    int errors;
    int gate;
};

static void *producer(void *p)
{
    struct pc *c = p;
    dt_gate_pass(&c->gate, PRODUCERS + CONSUMERS);
    for (int i = 0; i < PER; i++) {
        if (sem_post(&c->s) != 0)
            __atomic_add_fetch(&c->errors, 1, __ATOMIC_RELAXED);
        if ((i & 127) == 0)
            sched_yield();
    }
    return NULL;
}

static void *consumer(void *p)
{
    struct pc *c = p;
    dt_gate_pass(&c->gate, PRODUCERS + CONSUMERS);
    for (int i = 0; i < PER; i++) {
        int r;
        switch (i % 4) {
        case 0: r = sem_wait(&c->s); break;
        case 1: {
            struct timespec dl = dt_deadline(CLOCK_REALTIME, 15 * DT_S);
            r = sem_timedwait(&c->s, &dl);
            break;
        }
        case 2: {
            struct timespec dl = dt_deadline(CLOCK_MONOTONIC, 15 * DT_S);
            r = sem_clockwait(&c->s, CLOCK_MONOTONIC, &dl);
            break;
        }
        default:
            while ((r = sem_trywait(&c->s)) != 0 && errno == EAGAIN)
                sched_yield();
        }
        if (r != 0)
            __atomic_add_fetch(&c->errors, 1, __ATOMIC_RELAXED);
        else
            __atomic_add_fetch(&c->consumed, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

Test(psem, producers_and_consumers_16_threads, .timeout = 60)
{
    struct pc c;
    memset(&c, 0, sizeof c);
    cr_assert_eq(sem_init(&c.s, 0, 0), 0);
    pthread_t t[PRODUCERS + CONSUMERS];
    for (int i = 0; i < PRODUCERS + CONSUMERS; i++)
        dt_spawn(&t[i], i & 1 ? producer : consumer, &c);
    for (int i = 0; i < PRODUCERS + CONSUMERS; i++)
        dt_join(t[i]);
    cr_assert_eq(c.errors, 0);
    cr_assert_eq(c.consumed, CONSUMERS * PER);
    cr_assert_eq(value_of(&c.s), 0);
    cr_assert_eq(sem_destroy(&c.s), 0);
}

/* ---- signals ------------------------------------------------------------------------------- */

struct intr {
    sem_t s;
    int timed;
    int tid;
    int ret;
    int err;
    int returned;
};

static void *intr_waiter(void *p)
{
    struct intr *w = p;
    dt_publish_tid(&w->tid);
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 20 * DT_S);
    if (w->timed == 2) { /* an abstime too far for a 64-bit ns count */
        dl.tv_sec = (time_t)10000000000LL;
        dl.tv_nsec = 0;
    }
    int r = w->timed ? sem_timedwait(&w->s, &dl) : sem_wait(&w->s);
    w->err = r == 0 ? 0 : errno;
    w->ret = r;
    __atomic_store_n(&w->returned, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void interrupted(int restart, int timed, int expect_eintr, int pshared)
{
    struct intr w;
    memset(&w, 0, sizeof w);
    cr_assert_eq(sem_init(&w.s, pshared, 0), 0);
    w.timed = timed;
    dt_install_handler(SIGUSR1, restart);
    dt_signals_seen = 0;
    pthread_t t;
    dt_spawn(&t, intr_waiter, &w);
    dt_wait_blocked(&w.tid, "sem waiter");
    cr_assert_eq(pthread_kill(t, SIGUSR1), 0);
    if (expect_eintr) {
        cr_assert_eq(dt_join_within(t, 5 * DT_S, NULL), 0, "SA_RESTART %d timed %d: not interrupted", restart,
                     timed);
        cr_assert_eq(dt_signals_seen, 1, "the handler did not run");
        cr_assert_eq(w.ret, -1, "SA_RESTART %d timed %d: not interrupted", restart, timed);
        cr_assert_eq(w.err, EINTR);
        cr_assert_eq(value_of(&w.s), 0);
    } else {
        /* The handler runs, the wait goes on. */
        int64_t end = dt_now(CLOCK_MONOTONIC) + 10 * DT_S;
        while (dt_signals_seen == 0 && dt_now(CLOCK_MONOTONIC) < end)
            dt_sleep_ns(DT_MS);
        cr_assert_eq(dt_signals_seen, 1, "the handler did not run");
        cr_assert(dt_wait_sleeping((pid_t)w.tid, 10 * DT_S), "waiter not waiting again");
        cr_assert_eq(__atomic_load_n(&w.returned, __ATOMIC_ACQUIRE), 0,
                     "SA_RESTART %d timed %d: returned %d errno %d", restart, timed, w.ret, w.err);
        cr_assert_eq(sem_post(&w.s), 0);
        dt_join(t);
        cr_assert_eq(w.ret, 0);
        cr_assert_eq(value_of(&w.s), 0);
    }
    signal(SIGUSR1, SIG_DFL);
    cr_assert_eq(sem_destroy(&w.s), 0);
}

/* sem_wait fails with EINTR when a handler installed without SA_RESTART
 * interrupts it (POSIX sem_wait: "[EINTR] A signal interrupted this
 * function").  With SA_RESTART glibc's sem_wait is restarted (its untimed
 * futex wait is one of the calls SA_RESTART restarts, signal(7): the
 * kernel restarts it and the handler's run is invisible to the caller) and
 * returns only for a post. */
Test(psem, sem_wait_interrupted_by_a_handler, .timeout = 30)
{
    interrupted(0, 0, 1, 0);
    interrupted(1, 0, 0, 0);
}

/* The same with pshared = 1.  ksync cuts its process-shared sleeps into
 * one-second slices (a poster killed before its wake must not strand the
 * waiters, docs/shared.md), and a slice is a timed futex wait, which the
 * kernel does not restart under SA_RESTART: the layer's untimed sem_wait
 * must not be cut (a review's reproducer returned EINTR here). */
Test(psem, shared_sem_wait_interrupted_by_a_handler, .timeout = 30)
{
    interrupted(0, 0, 1, 1);
    interrupted(1, 0, 0, 1);
}

/* sem_timedwait: EINTR without SA_RESTART, and with SA_RESTART too.  This
 * is what glibc 2.36 does on Linux, although signal(7) lists sem_timedwait
 * among the calls SA_RESTART restarts: Linux's futex wait with a timeout
 * ends with ERESTART_RESTARTBLOCK (kernel/futex/waitwake.c, futex_wait),
 * which becomes EINTR whenever a handler ran, SA_RESTART or not.  POSIX
 * allows EINTR here ("A signal interrupted this function"). */
Test(psem, sem_timedwait_interrupted_by_a_handler, .timeout = 30)
{
    interrupted(0, 1, 1, 0);
    interrupted(1, 1, 1, 0);
}

/* A process-shared sem_timedwait whose abstime is too far to count (the
 * layer's deadline is then KS_FOREVER, as sem_wait's) is still a timed
 * wait: EINTR under an SA_RESTART handler too, as glibc's (a review found
 * it taken for an untimed sem_wait, which the kernel restarts). */
Test(psem, shared_far_sem_timedwait_interrupted_by_a_handler, .timeout = 30)
{
    interrupted(1, 2, 1, 1);
}

/* The same, private: the layer's deadline was KS_FOREVER, and a private
 * semaphore sleeps unsliced, so its sleep was one untimed futex wait, which
 * the kernel restarted under SA_RESTART (a review found it: restarted 20
 * times in 20, where glibc returned EINTR every time). */
Test(psem, far_sem_timedwait_interrupted_by_a_handler, .timeout = 30)
{
    interrupted(1, 2, 1, 0);
}

/* A limiter of timed waits under a storm of signals.  sem_timedwait and
 * sem_clockwait watch (src/sem.c, "The watch": a waiter woken into no unit
 * keeps WAKING set and sleeps short timed sleeps instead of letting the
 * next post wake another); a handler (no SA_RESTART) that ends a watch
 * ends the call with EINTR.  A smoke test of that under load: 12 threads
 * on 3 permits, for 1 s, rounds of wait; work; post, retrying on EINTR,
 * while the main thread signals one of them every 20 us: no more than 3
 * inside at once, every thread out within its bound once told to stop, no
 * error but EINTR, some EINTR (the storm did interrupt waits), the 3 units
 * back at the end.  It cannot catch a watcher that keeps WAKING on its way
 * out (a review's mutant passed it 8 times in 8): with 12 threads another
 * waiter soon goes to sleep, which clears WAKING.  The test after it can. */
#define LIM_THREADS 12
#define LIM_PERMITS 3

struct lim {
    sem_t s;
    int inside, max_inside, stop, errors;
    uint64_t eintr, rounds;
};

static void *lim_worker(void *p)
{
    struct lim *l = p;
    uint64_t i = 0;
    while (!__atomic_load_n(&l->stop, __ATOMIC_RELAXED)) { /* relaxed: a flag polled */
        int r;
        if (i & 1) {
            struct timespec dl = dt_deadline(CLOCK_MONOTONIC, 15 * DT_S);
            r = sem_clockwait(&l->s, CLOCK_MONOTONIC, &dl);
        } else {
            struct timespec dl = dt_deadline(CLOCK_REALTIME, 15 * DT_S);
            r = sem_timedwait(&l->s, &dl);
        }
        if (r != 0) {
            if (errno == EINTR)
                __atomic_add_fetch(&l->eintr, 1, __ATOMIC_RELAXED);
            else
                __atomic_add_fetch(&l->errors, 1, __ATOMIC_RELAXED);
            continue;
        }
        /* The semaphore orders these; relaxed is enough for a count. */
        int in = __atomic_add_fetch(&l->inside, 1, __ATOMIC_RELAXED);
        int m = __atomic_load_n(&l->max_inside, __ATOMIC_RELAXED);
        while (in > m && !__atomic_compare_exchange_n(&l->max_inside, &m, in, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            ;
        for (volatile int k = 0; k < 200; k++)
            ;
        __atomic_sub_fetch(&l->inside, 1, __ATOMIC_RELAXED);
        if (sem_post(&l->s) != 0)
            __atomic_add_fetch(&l->errors, 1, __ATOMIC_RELAXED);
        i++;
    }
    __atomic_add_fetch(&l->rounds, i, __ATOMIC_RELAXED);
    return NULL;
}

Test(psem, timed_waits_limiter_under_a_signal_storm, .timeout = 60)
{
    static struct lim l;
    memset(&l, 0, sizeof l);
    cr_assert_eq(sem_init(&l.s, 0, LIM_PERMITS), 0);
    dt_install_handler(SIGUSR1, 0);
    dt_signals_seen = 0;
    pthread_t t[LIM_THREADS];
    for (int i = 0; i < LIM_THREADS; i++)
        dt_spawn(&t[i], lim_worker, &l);
    unsigned x = 12345;
    const int64_t end = dt_now(CLOCK_MONOTONIC) + DT_S;
    while (dt_now(CLOCK_MONOTONIC) < end) {
        x = x * 1103515245u + 12345u;
        cr_assert_eq(pthread_kill(t[(x >> 16) % LIM_THREADS], SIGUSR1), 0);
        dt_sleep_ns(20000);
    }
    __atomic_store_n(&l.stop, 1, __ATOMIC_RELAXED); /* relaxed: see the worker */
    for (int i = 0; i < LIM_THREADS; i++)
        dt_join(t[i]);
    signal(SIGUSR1, SIG_DFL);
    cr_assert_eq(l.errors, 0, "%d waits or posts failed other than with EINTR", l.errors);
    cr_assert_leq(l.max_inside, LIM_PERMITS, "%d threads inside a %d-permit limiter", l.max_inside, LIM_PERMITS);
    cr_assert_gt(l.eintr, 0, "no wait was interrupted (%d signals handled, %llu rounds)", (int)dt_signals_seen,
                 (unsigned long long)l.rounds);
    cr_assert_eq(value_of(&l.s), LIM_PERMITS);
    cr_assert_eq(sem_destroy(&l.s), 0);
}

/* The same, pinned down: A sleeps, then B; a post wakes A (the first
 * sleeper) and the main thread takes the unit first, so A, finding none,
 * starts watching with WAKING set; a signal ends A's call with EINTR.  A
 * post must then wake B.  Had A left WAKING set, that post (0 -> 1, WAKING
 * seen) would wake nobody and B would sleep to its deadline.  The signal
 * does not always land inside A's watch (300 us at most), so 40 rounds,
 * at delays that sweep it. */
struct wpair {
    sem_t s;
    int tid[2], ret[2], err[2];
};
struct wside {
    struct wpair *p;
    int i;
};

static void *wpair_waiter(void *arg)
{
    struct wside *w = arg;
    dt_publish_tid(&w->p->tid[w->i]);
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 10 * DT_S);
    int r = sem_timedwait(&w->p->s, &dl);
    w->p->err[w->i] = r == 0 ? 0 : errno;
    w->p->ret[w->i] = r;
    return NULL;
}

Test(psem, a_timed_waiter_interrupted_in_its_watch_lets_the_next_post_wake_another, .timeout = 120)
{
    dt_install_handler(SIGUSR1, 0);
    int eintr = 0;
    for (int round = 0; round < 40; round++) {
        static struct wpair p;
        memset(&p, 0, sizeof p);
        cr_assert_eq(sem_init(&p.s, 0, 0), 0);
        struct wside a = {&p, 0}, b = {&p, 1};
        pthread_t ta, tb;
        dt_spawn(&ta, wpair_waiter, &a);
        dt_wait_blocked(&p.tid[0], "A");
        dt_spawn(&tb, wpair_waiter, &b);
        dt_wait_blocked(&p.tid[1], "B");
        cr_assert_eq(sem_post(&p.s), 0);
        int stolen = sem_trywait(&p.s) == 0;
        /* Into A's watch: the first signal 0 to 285 us after the theft
         * (busy-waited: a sleep that short is mostly timer slack).  One
         * that lands while A runs interrupts nothing: again, until A
         * returns. */
        const int64_t at = dt_now(CLOCK_MONOTONIC) + (round % 20) * 15000;
        while (dt_now(CLOCK_MONOTONIC) < at)
            ;
        int joined = 0;
        for (int k = 0; k < 5000 && !joined; k++) {
            cr_assert_eq(pthread_kill(ta, SIGUSR1), 0);
            joined = dt_join_within(ta, DT_MS, NULL) == 0;
        }
        cr_assert(joined, "round %d: A never returned", round);
        cr_assert(p.ret[0] == 0 ? !stolen : p.err[0] == EINTR, "round %d: A returned %d, errno %d", round,
                  p.ret[0], p.err[0]);
        eintr += p.ret[0] != 0;
        cr_assert_eq(sem_post(&p.s), 0);
        cr_assert_eq(dt_join_within(tb, 2 * DT_S, NULL), 0, "round %d: a post woke nobody (A: %s)", round,
                     p.ret[0] ? "EINTR" : "took the unit");
        cr_assert_eq(p.ret[1], 0, "round %d: B returned %d, errno %d", round, p.ret[1], p.err[1]);
        cr_assert_eq(value_of(&p.s), 0);
        cr_assert_eq(sem_destroy(&p.s), 0);
    }
    signal(SIGUSR1, SIG_DFL);
    cr_assert_gt(eintr, 0, "no round interrupted A");
}

/* ---- cancellation ---------------------------------------------------------------------------- */

struct canc {
    sem_t s;
    int tid;
    int kind;
    int cancel_pending_first;
    int after; /* set if sem_wait returned */
};

static void *canc_waiter(void *p)
{
    struct canc *c = p;
    if (c->cancel_pending_first) {
        /* let the cancel arrive while disabled, then call with a value
         * available: sem_wait "shall" be a cancellation point */
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
        dt_publish_tid(&c->tid);
        while (!__atomic_load_n(&c->kind, __ATOMIC_ACQUIRE) || !__atomic_load_n(&c->after, __ATOMIC_ACQUIRE))
            dt_sleep_ns(200000);
        __atomic_store_n(&c->after, 0, __ATOMIC_RELEASE);
        pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
    } else {
        dt_publish_tid(&c->tid);
    }
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 20 * DT_S);
    struct timespec mono = dt_deadline(CLOCK_MONOTONIC, 20 * DT_S);
    switch (c->kind % 3) {
    case 0: sem_wait(&c->s); break;
    case 1: sem_timedwait(&c->s, &dl); break;
    default: sem_clockwait(&c->s, CLOCK_MONOTONIC, &mono); break;
    }
    __atomic_store_n(&c->after, 1, __ATOMIC_RELEASE);
    return NULL;
}

Test(psem, blocked_sem_wait_is_a_cancellation_point, .timeout = 30)
{
    for (int kind = 1; kind <= 3; kind++) {
        struct canc c;
        memset(&c, 0, sizeof c);
        c.kind = kind;
        cr_assert_eq(sem_init(&c.s, 0, 0), 0);
        pthread_t t;
        dt_spawn(&t, canc_waiter, &c);
        dt_wait_blocked(&c.tid, "sem waiter");
        cr_assert_eq(pthread_cancel(t), 0);
        cr_assert_eq(dt_join(t), PTHREAD_CANCELED, "kind %d", kind);
        cr_assert_eq(c.after, 0);
        /* the cancelled waiter took nothing: a post is there for us */
        cr_assert_eq(sem_post(&c.s), 0);
        cr_assert_eq(value_of(&c.s), 1);
        cr_assert_eq(sem_trywait(&c.s), 0);
        cr_assert_eq(sem_destroy(&c.s), 0);
    }
}

/* glibc acts on a pending cancellation at the start of sem_wait and
 * sem_timedwait even when the value is available (POSIX: cancellation
 * points "shall occur" there; glibc's sem_wait.c calls __pthread_testcancel
 * first), and the value stays.  glibc 2.36's sem_clockwait has no such call
 * (it takes an available value and returns 0), a quirk not encoded here. */
Test(psem, pending_cancel_acts_in_sem_wait_even_with_a_value, .timeout = 30)
{
    for (int kind = 1; kind <= 3; kind += 2) { /* 1: sem_timedwait, 3: sem_wait */
        struct canc c;
        memset(&c, 0, sizeof c);
        c.cancel_pending_first = 1;
        cr_assert_eq(sem_init(&c.s, 0, 1), 0);
        pthread_t t;
        dt_spawn(&t, canc_waiter, &c);
        cr_assert(dt_wait_int(&c.tid, 1, 10 * DT_S));
        cr_assert_eq(pthread_cancel(t), 0);
        __atomic_store_n(&c.after, 1, __ATOMIC_RELEASE);
        __atomic_store_n(&c.kind, kind, __ATOMIC_RELEASE);
        cr_assert_eq(dt_join(t), PTHREAD_CANCELED, "kind %d", kind);
        cr_assert_eq(c.after, 0, "kind %d: the wait returned", kind);
        cr_assert_eq(value_of(&c.s), 1, "kind %d: the cancelled call took the value", kind);
        cr_assert_eq(sem_destroy(&c.s), 0);
    }
}

/* ---- process-shared ------------------------------------------------------------------------------ */

#define PSEM_ROUNDS 300

struct psem {
    sem_t ping, pong, count;
};

static int psem_child(void *p)
{
    struct psem *s = p;
    for (int i = 0; i < PSEM_ROUNDS; i++) {
        struct timespec dl = dt_deadline(CLOCK_MONOTONIC, 10 * DT_S);
        DT_CHECK(sem_clockwait(&s->ping, CLOCK_MONOTONIC, &dl) == 0, 2);
        DT_CHECK(sem_post(&s->pong) == 0, 3);
    }
    for (int i = 0; i < 100; i++)
        DT_CHECK(sem_post(&s->count) == 0, 4);
    return 0;
}

Test(psem, process_shared_semaphores_across_fork, .timeout = 60)
{
    struct psem *s = dt_shared_alloc(sizeof *s);
    cr_assert_eq(sem_init(&s->ping, 1, 0), 0);
    cr_assert_eq(sem_init(&s->pong, 1, 0), 0);
    cr_assert_eq(sem_init(&s->count, 1, 0), 0);
    pid_t pid[2];
    pid[0] = dt_fork(psem_child, s);
    for (int i = 0; i < PSEM_ROUNDS; i++) {
        cr_assert_eq(sem_post(&s->ping), 0);
        struct timespec dl = dt_deadline(CLOCK_REALTIME, 10 * DT_S);
        cr_assert_eq(sem_timedwait(&s->pong, &dl), 0, "round %d: %s", i, strerror(errno));
    }
    dt_wait_child_named(pid[0], "pshared sem ping-pong child");
    cr_assert_eq(value_of(&s->count), 100);
    /* The parent blocks in sem_wait; a child's post wakes it. */
    for (int i = 0; i < 100; i++)
        cr_assert_eq(sem_trywait(&s->count), 0);
    cr_assert_eq(err_of(sem_trywait(&s->count)), EAGAIN);
    for (int i = 0; i < PSEM_ROUNDS; i++)
        cr_assert_eq(sem_post(&s->ping), 0);
    pid[1] = dt_fork(psem_child, s);
    for (int i = 0; i < PSEM_ROUNDS; i++)
        cr_assert_eq(sem_wait(&s->pong), 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(sem_wait(&s->count), 0);
    dt_wait_child_named(pid[1], "pshared sem child 2");
    cr_assert_eq(value_of(&s->count), 0);
    cr_assert_eq(sem_destroy(&s->ping), 0);
    cr_assert_eq(sem_destroy(&s->pong), 0);
    cr_assert_eq(sem_destroy(&s->count), 0);
    dt_shared_free(s, sizeof *s);
}

/* ---- named semaphores -------------------------------------------------------------------------- */

#define EXEC_ENV_NAME "KSYNC_DTEST_SEM_NAME"
#define EXEC_ENV_VALUE "KSYNC_DTEST_SEM_VALUE"

/* When the test binary is exec'd with these variables set, it is the
 * "unrelated process" of the named-semaphore test: it opens the name,
 * checks the value, posts once and exits before Criterion starts. */
__attribute__((constructor)) static void exec_sem_child(void)
{
    const char *name = getenv(EXEC_ENV_NAME);
    const char *val = getenv(EXEC_ENV_VALUE);
    if (!name || !val)
        return;
    sem_t *s = sem_open(name, 0);
    if (s == SEM_FAILED)
        _exit(20);
    int v = -1;
    if (sem_getvalue(s, &v) != 0)
        _exit(21);
    if (v != atoi(val))
        _exit(22);
    if (sem_trywait(s) != 0)
        _exit(23);
    if (sem_post(s) != 0 || sem_post(s) != 0)
        _exit(24);
    if (sem_close(s) != 0)
        _exit(25);
    _exit(0);
}

static void sem_name(char *buf, size_t n, const char *tag)
{
    snprintf(buf, n, "/ksync-dropin-test-%d-%s", (int)getpid(), tag);
    sem_unlink(buf);
}

struct named_child {
    const char *name;
    sem_t *inherited;
};

static int named_child(void *p)
{
    struct named_child *c = p;
    int v = -1;
    /* the handle inherited across fork */
    DT_CHECK(sem_getvalue(c->inherited, &v) == 0 && v == 3, 2);
    /* and the name, opened again */
    sem_t *s = sem_open(c->name, 0);
    DT_CHECK(s != SEM_FAILED, 3);
    DT_CHECK(sem_getvalue(s, &v) == 0 && v == 3, 4);
    DT_CHECK(sem_wait(s) == 0, 5);
    DT_CHECK(sem_close(s) == 0, 6);
    return 0;
}

Test(psem, named_semaphore_open_close_unlink_and_other_processes, .timeout = 60)
{
    char name[96];
    sem_name(name, sizeof name, "a");

    errno = 0;
    cr_assert_eq(sem_open(name, 0), SEM_FAILED, "opened a name that does not exist");
    cr_assert_eq(errno, ENOENT);

    sem_t *a = sem_open(name, O_CREAT | O_EXCL, 0600, 2);
    cr_assert_neq(a, SEM_FAILED, "sem_open O_CREAT|O_EXCL: %s", strerror(errno));
    cr_assert_eq(value_of(a), 2);
    errno = 0;
    cr_assert_eq(sem_open(name, O_CREAT | O_EXCL, 0600, 0), SEM_FAILED);
    cr_assert_eq(errno, EEXIST);

    /* The same name opened again in one process: the same address, and
     * O_CREAT without O_EXCL does not reset the value. */
    sem_t *b = sem_open(name, 0);
    cr_assert_eq(b, a, "second sem_open of the name: %p, first %p", (void *)b, (void *)a);
    sem_t *c = sem_open(name, O_CREAT, 0600, 77);
    cr_assert_eq(c, a);
    cr_assert_eq(value_of(a), 2);
    cr_assert_eq(sem_post(b), 0);
    cr_assert_eq(value_of(a), 3);

    /* A forked child sees the value, through its inherited handle and by name. */
    struct named_child nc = {name, a};
    dt_wait_child_named(dt_fork(named_child, &nc), "named sem, forked child");
    cr_assert_eq(value_of(a), 2);

    /* A freshly exec'd process (this binary, caught by the constructor above). */
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        setenv(EXEC_ENV_NAME, name, 1);
        setenv(EXEC_ENV_VALUE, "2", 1);
        alarm(20);
        char *argv[] = {(char *)"dropin-tests-sem-child", NULL};
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    dt_wait_child_named(pid, "named sem, exec'd process");
    cr_assert_eq(value_of(a), 3, "the exec'd process's posts are not visible");

    /* Close the extra references; the first handle still works. */
    cr_assert_eq(sem_close(c), 0);
    cr_assert_eq(sem_close(b), 0);
    cr_assert_eq(sem_trywait(a), 0);
    cr_assert_eq(value_of(a), 2);

    /* Unlink: the name is gone, the open semaphore stays usable. */
    cr_assert_eq(sem_unlink(name), 0);
    errno = 0;
    cr_assert_eq(sem_open(name, 0), SEM_FAILED);
    cr_assert_eq(errno, ENOENT);
    errno = 0;
    cr_assert_eq(sem_unlink(name), -1);
    cr_assert_eq(errno, ENOENT);
    cr_assert_eq(sem_post(a), 0);
    cr_assert_eq(value_of(a), 3);
    /* A new semaphore under the old name is another one. */
    sem_t *d = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
    cr_assert_neq(d, SEM_FAILED);
    cr_assert_neq(d, a);
    cr_assert_eq(value_of(d), 0);
    cr_assert_eq(value_of(a), 3);
    cr_assert_eq(sem_close(d), 0);
    cr_assert_eq(sem_unlink(name), 0);
    cr_assert_eq(sem_close(a), 0);
}

Test(psem, named_semaphore_bad_names_and_values, .timeout = 30)
{
    char name[96];
    sem_name(name, sizeof name, "b");
    errno = 0;
    cr_assert_eq(sem_open("/ksync-dropin/inner-slash", O_CREAT, 0600, 0), SEM_FAILED);
    cr_assert_eq(errno, EINVAL);
    errno = 0;
    cr_assert_eq(sem_open("ksync-dropin/inner-slash", O_CREAT, 0600, 0), SEM_FAILED);
    cr_assert_eq(errno, EINVAL);
    errno = 0;
    cr_assert_eq(sem_open(name, O_CREAT, 0600, (unsigned)SEM_VALUE_MAX + 1u), SEM_FAILED);
    cr_assert_eq(errno, EINVAL);
    errno = 0;
    cr_assert_eq(sem_open(name, 0), SEM_FAILED, "the refused O_CREAT created it");
    cr_assert_eq(errno, ENOENT);
}

/* A thread blocked on a named semaphore is woken by another's post. */
struct named_wait {
    sem_t *s;
    int tid;
    int ret;
};

static void *named_waiter(void *p)
{
    struct named_wait *w = p;
    dt_publish_tid(&w->tid);
    struct timespec dl = dt_deadline(CLOCK_MONOTONIC, 15 * DT_S);
    w->ret = err_of(sem_clockwait(w->s, CLOCK_MONOTONIC, &dl));
    return NULL;
}

Test(psem, named_semaphore_blocks_and_wakes, .timeout = 30)
{
    char name[96];
    sem_name(name, sizeof name, "c");
    sem_t *s = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
    cr_assert_neq(s, SEM_FAILED);
    cr_assert_eq(sem_unlink(name), 0);
    struct named_wait w = {s, 0, -1};
    pthread_t t;
    dt_spawn(&t, named_waiter, &w);
    dt_wait_blocked(&w.tid, "named sem waiter");
    cr_assert_eq(sem_post(s), 0);
    dt_join(t);
    cr_assert_eq(w.ret, 0);
    cr_assert_eq(value_of(s), 0);
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 30 * DT_MS);
    cr_assert_eq(err_of(sem_timedwait(s, &dl)), ETIMEDOUT);
    dt_assert_not_early(CLOCK_REALTIME, dl, "named sem_timedwait");
    cr_assert_eq(sem_close(s), 0);
}

/* ---- sem_post from a signal handler ---------------------------------------------------------- */

static sem_t handler_sem;

static void posting_handler(int sig)
{
    (void)sig;
    int e = errno;
    sem_post(&handler_sem); /* async-signal-safe (POSIX sem_post) */
    errno = e;
}

struct handler_wait {
    int tid;
    int ret;
    int err;
};

static void *handler_waiter(void *p)
{
    struct handler_wait *w = p;
    dt_publish_tid(&w->tid);
    int r = sem_wait(&handler_sem);
    w->err = r == 0 ? 0 : errno;
    w->ret = r;
    return NULL;
}

/* sem_post is async-signal-safe: a post from a handler that interrupts the
 * waiter itself is seen, exactly once.  With SA_RESTART the wait restarts
 * and takes it (0).  Without, glibc 2.36's sem_wait fails with EINTR and
 * leaves the post (value 1); taking the post instead (0, value 0) is as
 * good (POSIX only says EINTR means "a signal interrupted this function"),
 * so both are accepted: what is checked is that the post is neither lost
 * nor taken twice. */
Test(psem, sem_post_from_a_signal_handler_is_seen, .timeout = 30)
{
    for (int restart = 0; restart < 2; restart++) {
        cr_assert_eq(sem_init(&handler_sem, 0, 0), 0);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = posting_handler;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = restart ? SA_RESTART : 0;
        cr_assert_eq(sigaction(SIGUSR2, &sa, NULL), 0);
        struct handler_wait w = {0, -2, 0};
        pthread_t t;
        dt_spawn(&t, handler_waiter, &w);
        dt_wait_blocked(&w.tid, "sem waiter");
        cr_assert_eq(pthread_kill(t, SIGUSR2), 0);
        cr_assert_eq(dt_join_within(t, 10 * DT_S, NULL), 0, "SA_RESTART %d: the handler's post was lost", restart);
        if (restart) {
            cr_assert_eq(w.ret, 0);
            cr_assert_eq(value_of(&handler_sem), 0);
        } else if (w.ret == -1) {
            cr_assert_eq(w.err, EINTR);
            cr_assert_eq(value_of(&handler_sem), 1, "EINTR, and the handler's post is gone");
        } else {
            cr_assert_eq(w.ret, 0);
            cr_assert_eq(value_of(&handler_sem), 0, "took the handler's post and left it too");
        }
        signal(SIGUSR2, SIG_DFL);
        cr_assert_eq(sem_destroy(&handler_sem), 0);
    }
}

/* ---- found by review: the umask, reopening with a large value, "." ---------------- */

/* POSIX: the permission bits of a new named semaphore are mode less the
 * umask (the layer once set them with fchmod, which ignores the umask). */
Test(psem, named_semaphore_mode_honours_the_umask, .timeout = 30)
{
    char name[96], path[160];
    sem_name(name, sizeof name, "u");
    snprintf(path, sizeof path, "/dev/shm/sem.%s", name + 1);
    mode_t old = umask(022);
    sem_t *s = sem_open(name, O_CREAT | O_EXCL, 0666, 1);
    umask(old);
    cr_assert_neq(s, SEM_FAILED, "sem_open: %s", strerror(errno));
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
    cr_assert_eq(st.st_mode & 0777, 0644u, "mode %o", (unsigned)(st.st_mode & 0777));
    cr_assert_eq(sem_close(s), 0);
    cr_assert_eq(sem_unlink(name), 0);
}

/* The value is only checked when a semaphore is made: O_CREAT on an
 * existing name opens it whatever the value says, as glibc. */
Test(psem, named_semaphore_reopened_with_a_huge_value, .timeout = 30)
{
    char name[96];
    sem_name(name, sizeof name, "h");
    sem_t *a = sem_open(name, O_CREAT | O_EXCL, 0600, 2);
    cr_assert_neq(a, SEM_FAILED, "sem_open: %s", strerror(errno));
    sem_t *b = sem_open(name, O_CREAT, 0600, (unsigned)SEM_VALUE_MAX + 1u);
    cr_assert_eq(b, a, "reopen: %s", b == SEM_FAILED ? strerror(errno) : "another address");
    cr_assert_eq(value_of(a), 2);
    cr_assert_eq(sem_close(b), 0);
    cr_assert_eq(sem_close(a), 0);
    cr_assert_eq(sem_unlink(name), 0);
}

/* "." and ".." are names like any other for glibc (/dev/shm/sem..). */
Test(psem, named_semaphore_dot_names, .timeout = 30)
{
    const char *names[] = {"/.", "/.."};
    for (unsigned i = 0; i < DT_ARRAY_LEN(names); i++) {
        sem_unlink(names[i]);
        sem_t *s = sem_open(names[i], O_CREAT | O_EXCL, 0600, 0);
        cr_assert_neq(s, SEM_FAILED, "%s: %s", names[i], strerror(errno));
        cr_assert_eq(sem_close(s), 0);
        cr_assert_eq(sem_unlink(names[i]), 0);
    }
}

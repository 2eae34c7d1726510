/* stress/selftest.c - ksync-selftest: a quick, self-contained check of
 * ks_mutex, ks_rmutex and ks_sem semantics and error codes, single- and
 * multi-threaded, plus ks_epoch, ks_queue and ks_channel (threads of one
 * process, each with its own handle, copying and zero-copy) under
 * threads, and the two
 * lifetime bugs of issue 17 (a pool destroyed while a woken borrower is
 * still inside it; a retire function run off the orphan list that calls
 * ks_epoch_barrier), and ks_rwlock with lock statistics switched on and off
 * under its readers and writers, with no test framework.  Besides qemu it is what
 * ThreadSanitizer runs (make tsan), since Criterion cannot start under
 * TSan: a use of the freed pool is a TSan report there.  It exists for targets where the
 * Criterion suite does not run, such as the AArch64 build under qemu-user
 * (make check-aarch64); it links the plain library (no KS_DEBUG_YIELD).
 *
 * Prints one line per failed check and, last, exactly
 *     selftest: N passed, M failed
 * and exits non-zero if M > 0.
 */
#include <ksync/channel.h>
#include <ksync/epoch.h>
#include <ksync/lockstat.h>
#include <ksync/mutex.h>
#include <ksync/pool.h>
#include <ksync/queue.h>
#include <ksync/rmutex.h>
#include <ksync/robust_rwlock.h>
#include <ksync/rwlock.h>
#include <ksync/sem.h>
#include <ksync/time.h>
#include <ksync/wait_any.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static unsigned passed;
static atomic_uint failed; /* checks may fail in helper threads */
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void check(int ok, const char *what, long got, int line)
{
    if (ok) {
        pthread_mutex_lock(&out_lock);
        passed++;
        pthread_mutex_unlock(&out_lock);
        return;
    }
    atomic_fetch_add(&failed, 1);
    pthread_mutex_lock(&out_lock);
    fprintf(stderr, "FAIL selftest.c:%d: %s (got %ld)\n", line, what, got);
    pthread_mutex_unlock(&out_lock);
}

/* EQ(expr, want): expr must equal want. */
#define EQ(expr, want)                                                                            \
    do {                                                                                      \
        long got_ = (long)(expr);                                                             \
        check(got_ == (long)(want), #expr " == " #want, got_, __LINE__);                      \
    } while (0)
#define TRUE(cond) check(!!(cond), #cond, 0, __LINE__)

#define MS 1000000LL

/* Start fn(arg); returns 1 if the thread runs (and must be joined). */
static int run_thread(void *(*fn)(void *), void *arg, pthread_t *tid)
{
    int e = pthread_create(tid, NULL, fn, arg);
    check(e == 0, "pthread_create", e, __LINE__);
    return e == 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- time ------------------------------------------------------------------- */

static void test_time(void)
{
    int64_t a = ks_now(), b = ks_now();
    TRUE(a > 0 && b >= a);
    EQ(ks_deadline_after(-1), -1);
    EQ(ks_deadline_after(KS_FOREVER) == KS_FOREVER, 1);
    int64_t d = ks_deadline_after(5 * MS);
    TRUE(d >= b + 5 * MS);
    struct timespec bad = {1, 1000000000L};
    int64_t out;
    EQ(ks_deadline_from_timespec(CLOCK_MONOTONIC, &bad, &out), EINVAL);
}

/* ---- mutex ------------------------------------------------------------------- */

static ks_mutex_t held_m = KS_MUTEX_INIT;

static void *try_held_mutex(void *arg)
{
    (void)arg;
    EQ(ks_mutex_trylock(&held_m), EBUSY);
    int64_t t0 = ks_now();
    EQ(ks_mutex_timedlock(&held_m, ks_deadline_after(30 * MS)), ETIMEDOUT);
    TRUE(ks_now() - t0 >= 30 * MS);
    EQ(ks_mutex_timedlock(&held_m, ks_now()), ETIMEDOUT);
    return NULL;
}

static void *lock_when_released(void *arg)
{
    (void)arg;
    /* Blocks until the main thread unlocks, well before this deadline. */
    EQ(ks_mutex_timedlock(&held_m, ks_deadline_after(10000 * MS)), 0);
    EQ(ks_mutex_unlock(&held_m), 0);
    return NULL;
}

static void test_mutex_single(void)
{
    ks_mutex_t m = KS_MUTEX_INIT;
    EQ(ks_mutex_init(NULL, 0), EINVAL);
    EQ(ks_mutex_init(&m, 0x80), EINVAL);
    EQ(ks_mutex_init(&m, KS_PRIVATE), 0);
    EQ(ks_mutex_lock(&m), 0);
    EQ(ks_mutex_trylock(&m), EBUSY);
    EQ(ks_mutex_destroy(&m), EBUSY);
    EQ(ks_mutex_timedlock(&m, ks_now()), ETIMEDOUT);
    EQ(ks_mutex_unlock(&m), 0);
    EQ(ks_mutex_unlock(&m), EPERM); /* not locked: refused, nothing changes */
    EQ(ks_mutex_trylock(&m), 0);
    EQ(ks_mutex_unlock(&m), 0);
    EQ(ks_mutex_timedlock(&m, -1), EINVAL);
    EQ(ks_mutex_timedlock(&m, ks_deadline_after(MS)), 0);
    EQ(ks_mutex_unlock(&m), 0);
    EQ(ks_mutex_lock(NULL), EINVAL);
    EQ(ks_mutex_unlock(NULL), EINVAL);
    EQ(ks_mutex_trylock(NULL), EINVAL);
    EQ(ks_mutex_destroy(&m), 0);
    ks_mutex_t s;
    EQ(ks_mutex_init(&s, KS_SHARED), 0);
    EQ(ks_mutex_lock(&s), 0);
    EQ(ks_mutex_unlock(&s), 0);
    EQ(ks_mutex_destroy(&s), 0);
}

static void test_mutex_threads(void)
{
    pthread_t t;
    /* A held mutex: another thread's trylock is EBUSY, its timedlock times out. */
    EQ(ks_mutex_lock(&held_m), 0);
    if (run_thread(try_held_mutex, NULL, &t))
        pthread_join(t, NULL);
    /* A blocked locker is woken by the unlock (no lost wake-up). */
    if (run_thread(lock_when_released, NULL, &t)) {
        sleep_ms(20);
        EQ(ks_mutex_unlock(&held_m), 0);
        pthread_join(t, NULL);
    } else {
        ks_mutex_unlock(&held_m);
    }
    EQ(ks_mutex_destroy(&held_m), 0);
}

/* ---- counters under contention ------------------------------------------------------ */

#define NTHR 4
#define NINC 20000

static ks_mutex_t cm = KS_MUTEX_INIT;
static ks_rmutex_t cr = KS_RMUTEX_INIT;
static long counter_m, counter_r;

static void *count_mutex(void *arg)
{
    (void)arg;
    for (int i = 0; i < NINC; i++) {
        if (ks_mutex_lock(&cm))
            return NULL;
        counter_m++;
        ks_mutex_unlock(&cm);
    }
    return NULL;
}

static void *count_rmutex(void *arg)
{
    (void)arg;
    for (int i = 0; i < NINC / 2; i++) {
        if (ks_rmutex_lock(&cr))
            return NULL;
        if (ks_rmutex_lock(&cr) == 0) { /* re-entry: the seed's log() */
            counter_r++;
            ks_rmutex_unlock(&cr);
        }
        ks_rmutex_unlock(&cr);
    }
    return NULL;
}

static void run_n(void *(*fn)(void *))
{
    pthread_t t[NTHR];
    int n = 0;
    for (; n < NTHR; n++)
        if (!run_thread(fn, NULL, &t[n]))
            break;
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
}

static void test_counters(void)
{
    run_n(count_mutex);
    EQ(counter_m, (long)NTHR * NINC);
    run_n(count_rmutex);
    EQ(counter_r, (long)NTHR * (NINC / 2));
    EQ(ks_mutex_destroy(&cm), 0);
    EQ(ks_rmutex_destroy(&cr), 0);
}

/* ---- recursive mutex ----------------------------------------------------------------- */

static ks_rmutex_t held_r = KS_RMUTEX_INIT;
static uint64_t main_id;

static void *poke_held_rmutex(void *arg)
{
    (void)arg;
    TRUE(ks_thread_id() != 0 && ks_thread_id() != main_id);
    EQ(ks_rmutex_trylock(&held_r), EBUSY);
    EQ(ks_rmutex_unlock(&held_r), EPERM); /* not the owner */
    EQ(ks_rmutex_timedlock(&held_r, ks_deadline_after(20 * MS)), ETIMEDOUT);
    return NULL;
}

static void test_rmutex(void)
{
    ks_rmutex_t r;
    main_id = ks_thread_id();
    TRUE(main_id != 0 && main_id == ks_thread_id());
    EQ(ks_rmutex_init(NULL, 0), EINVAL);
    EQ(ks_rmutex_init(&r, KS_PRIVATE), 0);
    EQ(ks_rmutex_unlock(&r), EPERM);
    EQ(ks_rmutex_lock(&r), 0);
    EQ(ks_rmutex_lock(&r), 0);
    EQ(ks_rmutex_trylock(&r), 0);
    EQ(ks_rmutex_timedlock(&r, ks_now()), 0); /* re-entry never waits */
    EQ(ks_rmutex_destroy(&r), EBUSY);
    for (int i = 0; i < 4; i++)
        EQ(ks_rmutex_unlock(&r), 0);
    EQ(ks_rmutex_unlock(&r), EPERM);
    EQ(ks_rmutex_timedlock(&r, -1), EINVAL);
    EQ(ks_rmutex_destroy(&r), 0);

    pthread_t t;
    EQ(ks_rmutex_lock(&held_r), 0);
    EQ(ks_rmutex_lock(&held_r), 0);
    if (run_thread(poke_held_rmutex, NULL, &t))
        pthread_join(t, NULL);
    EQ(ks_rmutex_unlock(&held_r), 0);
    EQ(ks_rmutex_unlock(&held_r), 0);
    EQ(ks_rmutex_trylock(&held_r), 0); /* the refused unlocks changed nothing */
    EQ(ks_rmutex_unlock(&held_r), 0);
    EQ(ks_rmutex_destroy(&held_r), 0);
}

/* ---- semaphore ------------------------------------------------------------------------ */

static ks_sem_t ping = KS_SEM_INIT(0), pong = KS_SEM_INIT(0);
#define ROUNDS 5000

static void *ponger(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        if (ks_sem_wait(&ping) || ks_sem_post(&pong))
            return NULL;
    }
    return NULL;
}

static ks_sem_t limit;
static atomic_int in_use, over;

static void *use_limited(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5000; i++) {
        if (ks_sem_wait(&limit))
            return NULL;
        if (atomic_fetch_add_explicit(&in_use, 1, memory_order_relaxed) + 1 > 2)
            atomic_fetch_add(&over, 1);
        atomic_fetch_sub_explicit(&in_use, 1, memory_order_relaxed);
        ks_sem_post(&limit);
    }
    return NULL;
}

static ks_sem_t late = KS_SEM_INIT(0);

static void *wait_for_late_post(void *arg)
{
    (void)arg;
    int64_t t0 = ks_now();
    EQ(ks_sem_timedwait(&late, ks_deadline_after(10000 * MS)), 0);
    TRUE(ks_now() - t0 < 10000 * MS);
    return NULL;
}

static void test_sem(void)
{
    ks_sem_t s, b;
    EQ(ks_sem_init(NULL, 0, 0), EINVAL);
    EQ(ks_sem_init(&s, 0, 0x80), EINVAL);
    EQ(ks_sem_init_bounded(&b, 4, 3, 0), EINVAL);
    EQ(ks_sem_init_bounded(&b, 0, 0, 0), EINVAL);
    EQ(ks_sem_init_bounded(&b, 0, KS_SEM_VALUE_MAX + 1u, 0), EINVAL);
    EQ(ks_sem_value(NULL), -EINVAL);

    EQ(ks_sem_init(&s, 0, KS_PRIVATE), 0);
    EQ(ks_sem_trywait(&s), EAGAIN);
    EQ(ks_sem_timedwait(&s, ks_now()), ETIMEDOUT);
    EQ(ks_sem_timedwait(&s, -1), EINVAL);
    int64_t t0 = ks_now();
    EQ(ks_sem_timedwait(&s, ks_deadline_after(30 * MS)), ETIMEDOUT);
    TRUE(ks_now() - t0 >= 30 * MS);
    EQ(ks_sem_value(&s), 0);
    EQ(ks_sem_post(&s), 0);
    EQ(ks_sem_post(&s), 0);
    EQ(ks_sem_value(&s), 2);
    EQ(ks_sem_wait(&s), 0);
    EQ(ks_sem_timedwait(&s, ks_deadline_after(MS)), 0);
    EQ(ks_sem_value(&s), 0);
    EQ(ks_sem_destroy(&s), 0);

    EQ(ks_sem_init_bounded(&b, 2, 2, KS_PRIVATE), 0);
    EQ(ks_sem_post(&b), EOVERFLOW);
    EQ(ks_sem_value(&b), 2); /* the refused post changed nothing */
    EQ(ks_sem_trywait(&b), 0);
    EQ(ks_sem_post(&b), 0);
    EQ(ks_sem_post(&b), EOVERFLOW);
    EQ(ks_sem_value(&b), 2);
    EQ(ks_sem_destroy(&b), 0);

    /* Ping-pong: every round sleeps and wakes through the futex. */
    pthread_t t;
    int rounds = 0;
    if (run_thread(ponger, NULL, &t)) {
        for (; rounds < ROUNDS; rounds++)
            if (ks_sem_post(&ping) || ks_sem_wait(&pong))
                break;
        pthread_join(t, NULL);
    }
    EQ(rounds, ROUNDS);
    EQ(ks_sem_value(&ping) + ks_sem_value(&pong), 0);

    /* Two permits, four threads: never more than two inside. */
    EQ(ks_sem_init(&limit, 2, KS_PRIVATE), 0);
    run_n(use_limited);
    EQ(atomic_load(&over), 0);
    EQ(ks_sem_value(&limit), 2);
    EQ(ks_sem_destroy(&limit), 0);

    /* A timed wait is satisfied by a post that comes before the deadline. */
    if (run_thread(wait_for_late_post, NULL, &t)) {
        sleep_ms(20);
        EQ(ks_sem_post(&late), 0);
        pthread_join(t, NULL);
    }
    EQ(ks_sem_value(&late), 0);
}

/* ---- ks_epoch: readers never see a reclaimed object ----------------------
 * Writers swap objects in and retire the old ones with a function that
 * poisons and frees them; readers inside a section must never see poison
 * (and under TSan/ASan no access to freed memory may happen). */
enum { EP_LIVE = 0x1151, EP_DEAD = 0xdead, EP_SLOTS = 4, EP_READERS = 6, EP_WRITERS = 2 };

struct ep_obj {
    int magic;
    long payload[4];
    struct ks_epoch_node rcu;
};

static struct ep_obj *ep_slot[EP_SLOTS];
static atomic_int ep_stop;
static atomic_long ep_dead_seen, ep_alloc, ep_freed;

static void ep_free(struct ks_epoch_node *n)
{
    struct ep_obj *o = (struct ep_obj *)((char *)n - offsetof(struct ep_obj, rcu));
    o->magic = EP_DEAD;
    atomic_fetch_add(&ep_freed, 1);
    free(o);
}

static struct ep_obj *ep_new(long v)
{
    struct ep_obj *o = malloc(sizeof *o);
    if (!o)
        abort();
    o->magic = EP_LIVE;
    for (int i = 0; i < 4; i++)
        o->payload[i] = v;
    atomic_fetch_add(&ep_alloc, 1);
    return o;
}

static void *ep_reader(void *arg)
{
    (void)arg;
    unsigned i = 0;
    while (!atomic_load(&ep_stop)) {
        ks_epoch_enter();
        /* acquire: pairs with the writers' exchange, which publishes the object */
        struct ep_obj *o = __atomic_load_n(&ep_slot[i++ % EP_SLOTS], __ATOMIC_ACQUIRE);
        if (o->magic != EP_LIVE || o->payload[0] != o->payload[3])
            atomic_fetch_add(&ep_dead_seen, 1);
        ks_epoch_exit();
    }
    return NULL;
}

static void *ep_writer(void *arg)
{
    long v = (long)(intptr_t)arg;
    for (int k = 0; k < 20000 && !atomic_load(&ep_stop); k++) {
        struct ep_obj *o = ep_new(v++);
        /* acq_rel: release publishes the new object; acquire orders our
         * retire after whatever the old one's writer did */
        struct ep_obj *old = __atomic_exchange_n(&ep_slot[k % EP_SLOTS], o, __ATOMIC_ACQ_REL);
        EQ(ks_epoch_retire(&old->rcu, ep_free), 0);
    }
    EQ(ks_epoch_barrier(), 0);
    return NULL;
}

static void test_epoch(void)
{
    pthread_t r[EP_READERS], w[EP_WRITERS];
    for (int i = 0; i < EP_SLOTS; i++)
        ep_slot[i] = ep_new(i);
    for (int i = 0; i < EP_READERS; i++)
        EQ(run_thread(ep_reader, NULL, &r[i]), 1);
    for (int i = 0; i < EP_WRITERS; i++)
        EQ(run_thread(ep_writer, (void *)(intptr_t)(i * 1000000), &w[i]), 1);
    for (int i = 0; i < EP_WRITERS; i++)
        pthread_join(w[i], NULL);
    atomic_store(&ep_stop, 1);
    for (int i = 0; i < EP_READERS; i++)
        pthread_join(r[i], NULL);
    EQ(atomic_load(&ep_dead_seen), 0);
    for (int i = 0; i < EP_SLOTS; i++)
        EQ(ks_epoch_retire(&ep_slot[i]->rcu, ep_free), 0);
    EQ(ks_epoch_barrier(), 0);
    EQ(atomic_load(&ep_alloc) - atomic_load(&ep_freed), 0);
}

/* ---- ks_queue: many producers and consumers, exactly once, then close ---- */
enum { QS_P = 4, QS_C = 4, QS_N = 20000 };
static ks_queue_t *qs;
static atomic_long qs_sum, qs_count;

static void *qs_producer(void *arg)
{
    long base = (long)(intptr_t)arg;
    for (long i = 1; i <= QS_N; i++)
        EQ(ks_queue_put(qs, (void *)(intptr_t)(base + i)), 0);
    return NULL;
}

/* arg 1: a ks_wait_any watcher of the getters' side, which then tries */
static void *qs_consumer(void *arg)
{
    int watcher = arg != NULL;
    struct ks_any set[] = {{KS_ANY_GET, qs}};
    void *v;
    int e;
    for (;;) {
        if (watcher) {
            unsigned i;
            EQ(ks_wait_any(set, 1, KS_FOREVER, &i), 0);
            e = ks_queue_tryget(qs, &v);
            if (e == EAGAIN)
                continue; /* another consumer took it */
        } else {
            e = ks_queue_get(qs, &v);
        }
        if (e)
            break;
        atomic_fetch_add(&qs_sum, (long)(intptr_t)v);
        atomic_fetch_add(&qs_count, 1);
        EQ(ks_queue_task_done(qs), 0);
    }
    EQ(e, EPIPE);
    return NULL;
}

static void test_queue(void)
{
    EQ(ks_queue_create(&qs, 3, 0), 0);
    pthread_t p[QS_P], c[QS_C];
    for (int i = 0; i < QS_C; i++)
        EQ(run_thread(qs_consumer, (void *)(intptr_t)(i & 1), &c[i]), 1);
    for (int i = 0; i < QS_P; i++)
        EQ(run_thread(qs_producer, (void *)(intptr_t)((long)i * 1000000), &p[i]), 1);
    for (int i = 0; i < QS_P; i++)
        pthread_join(p[i], NULL);
    EQ(ks_queue_join(qs), 0);
    EQ(ks_queue_close(qs), 0);
    for (int i = 0; i < QS_C; i++)
        pthread_join(c[i], NULL);
    long want = 0;
    for (long i = 0; i < QS_P; i++)
        want += i * 1000000 * QS_N + (long)QS_N * (QS_N + 1) / 2;
    EQ(atomic_load(&qs_count), (long)QS_P * QS_N);
    EQ(atomic_load(&qs_sum), want);
    EQ(ks_queue_destroy(qs), 0);
}

/* ---- ks_robust_rwlock: readers and writers, and a writer thread that
 * exits inside (the next locker repairs).  Not the dying writer under
 * ThreadSanitizer: what orders the dead thread's writes before the next
 * owner's is the kernel's update of the futex word at the thread's death,
 * which TSan does not see (it reports the repair as a race with the dead
 * thread's writes, and the new owner's list insert as one with the dead
 * owner's). ---- */
enum { RR_R = 4, RR_W = 2, RR_N = 3000 };
#if defined(__SANITIZE_THREAD__)
enum { RR_DIE = 0 };
#else
enum { RR_DIE = 1 };
#endif
static ks_robust_rwlock_t rr = KS_ROBUST_RWLOCK_INIT;
static long rr_a, rr_b, rr_repairs;
static atomic_long rr_torn;

static void rr_repair_if(int e)
{
    if (e == EOWNERDEAD) {
        rr_b = rr_a;
        rr_repairs++;
        EQ(ks_robust_rwlock_consistent(&rr), 0);
    } else {
        EQ(e, 0);
    }
}

static void *rr_reader(void *arg)
{
    (void)arg;
    for (int n = 0; n < RR_N; n++) {
        int e = ks_robust_rwlock_rdlock(&rr);
        rr_repair_if(e);
        if (rr_a != rr_b)
            atomic_fetch_add(&rr_torn, 1);
        EQ(ks_robust_rwlock_unlock(&rr), 0);
    }
    return NULL;
}

static void *rr_writer(void *arg)
{
    int die = arg != NULL;
    for (int n = 0; n < (die ? 1 : RR_N); n++) {
        rr_repair_if(ks_robust_rwlock_wrlock(&rr));
        rr_a++;
        if (die)
            return NULL; /* exits inside, a == b + 1 */
        rr_b = rr_a;
        EQ(ks_robust_rwlock_unlock(&rr), 0);
    }
    return NULL;
}

static void test_robust_rwlock(void)
{
    int e = ks_robust_rwlock_init(&rr, 0);
    if (e == ENOTSUP) {
        /* qemu-user gives its guest threads no robust-futex list (the
         * channel's ENOSYS below), and a robust lock refuses to pretend */
        printf("selftest: ks_robust_rwlock not run: no robust-futex list here (ENOTSUP)\n");
        return;
    }
    EQ(e, 0);
    pthread_t r[RR_R], w[RR_W + 1];
    for (int i = 0; i < RR_R; i++)
        EQ(run_thread(rr_reader, NULL, &r[i]), 1);
    for (int i = 0; i < RR_W; i++)
        EQ(run_thread(rr_writer, NULL, &w[i]), 1);
    if (RR_DIE)
        EQ(run_thread(rr_writer, (void *)1, &w[RR_W]), 1);
    for (int i = 0; i < RR_R; i++)
        pthread_join(r[i], NULL);
    for (int i = 0; i < RR_W + RR_DIE; i++)
        pthread_join(w[i], NULL);
    rr_repair_if(ks_robust_rwlock_wrlock(&rr)); /* the dying writer may have been last */
    EQ(rr_a, rr_b);
    EQ(rr_repairs, RR_DIE);
    EQ(ks_robust_rwlock_unlock(&rr), 0);
    EQ(atomic_load(&rr_torn), 0);
}

/* ---- ks_channel: senders and receivers as threads, each with a handle ---- */
enum { CH_P = 4, CH_C = 4, CH_N = 5000 };
static ks_channel_t *ch_base;
static atomic_long ch_sum, ch_count;

static void *ch_sender(void *arg)
{
    long id = (long)(intptr_t)arg;
    ks_channel_t *h;
    EQ(ks_channel_open_fd(ks_channel_fd(ch_base), KS_CHANNEL_SEND, &h), 0);
    for (long i = 0; i < CH_N; i++) {
        long m[8] = {id, i, id * i, 0, 0, 0, 0, ~i};
        size_t len = sizeof(long) * (size_t)(3 + i % 6); /* 3..8 longs: id, i, ..., ~i */
        m[len / sizeof(long) - 1] = ~i;
        if (i % 2) {
            void *p;
            EQ(ks_channel_reserve(h, len, &p, KS_FOREVER), 0);
            __builtin_memcpy(p, m, len);
            EQ(ks_channel_commit(h, len), 0);
        } else {
            EQ(ks_channel_send(h, m, len, KS_FOREVER), 0);
        }
    }
    EQ(ks_channel_close(h), 0);
    return NULL;
}

static void *ch_receiver(void *arg)
{
    (void)arg;
    ks_channel_t *h;
    long next[CH_P] = {0};
    EQ(ks_channel_open_fd(ks_channel_fd(ch_base), KS_CHANNEL_RECV, &h), 0);
    for (unsigned k = 0;; k++) {
        long m[8];
        size_t len;
        const void *p = m;
        int peek = k % 2;
        int e = peek ? ks_channel_peek(h, &p, &len, KS_FOREVER) : ks_channel_recv(h, m, sizeof m, &len, KS_FOREVER);
        if (e == EPIPE)
            break;
        EQ(e, 0);
        if (e)
            break;
        long c[8];
        int ok = len >= 3 * sizeof(long) && len <= sizeof c && len % sizeof(long) == 0;
        TRUE(ok);
        if (ok) {
            __builtin_memcpy(c, p, len); /* from the ring itself when peeked */
            long id = c[0], i = c[1];
            int good = id >= 0 && id < CH_P && i >= next[id] && c[len / sizeof(long) - 1] == ~i;
            TRUE(good);
            if (good)
                next[id] = i + 1;
            atomic_fetch_add(&ch_sum, i);
            atomic_fetch_add(&ch_count, 1);
        }
        if (peek)
            EQ(ks_channel_release(h), 0);
    }
    EQ(ks_channel_close(h), 0);
    return NULL;
}

static void test_channel(void)
{
    int e = ks_channel_create(NULL, 4096, 64, KS_CHANNEL_RECV, &ch_base);
    if (e == ENOSYS) {
        /* qemu-user implements no robust-futex list (set_robust_list is
         * ENOSYS there), which the channel's peer-death detection needs */
        printf("selftest: ks_channel not run: no robust-futex list here (ENOSYS)\n");
        return;
    }
    EQ(e, 0);
    pthread_t p[CH_P], c[CH_C];
    for (int i = 0; i < CH_C; i++)
        EQ(run_thread(ch_receiver, NULL, &c[i]), 1);
    sleep_ms(20); /* the receivers attach first: a sender alone would not block */
    for (int i = 0; i < CH_P; i++)
        EQ(run_thread(ch_sender, (void *)(intptr_t)i, &p[i]), 1);
    for (int i = 0; i < CH_P; i++)
        pthread_join(p[i], NULL);
    for (int i = 0; i < CH_C; i++)
        pthread_join(c[i], NULL);
    EQ(atomic_load(&ch_count), (long)CH_P * CH_N);
    EQ(atomic_load(&ch_sum), (long)CH_P * CH_N * (CH_N - 1) / 2);
    EQ(ks_channel_close(ch_base), 0);
}

/* ---- issue 17, item 1: destroy while a woken borrower is inside the pool -- */

struct pl_round {
    ks_pool_t *pool;
    atomic_int asleep; /* the borrower is about to block */
    atomic_int tried;  /* the holder has called destroy */
};

static void *pl_borrower(void *arg)
{
    struct pl_round *r = arg;
    void *res;
    atomic_store(&r->asleep, 1);
    EQ(ks_pool_borrow(r->pool, KS_FOREVER, &res), 0);
    *(long *)res += 1; /* the borrower uses what it borrowed */
    /* pool.h: every return must have returned before a destroy, so this one
     * waits for the holder's destroy attempt */
    while (!atomic_load(&r->tried))
        sched_yield();
    EQ(ks_pool_return(r->pool, res), 0);
    return NULL;
}

/* The holder returns the only resource to a sleeping borrower and calls
 * destroy at once, while the borrow is still on its way out: destroy must
 * answer EBUSY (before the fix it returned 0 and freed the pool under the
 * borrower, whose slot write was then a use after free: a TSan or ASan
 * report). */
static void test_pool_destroy_lifetime(void)
{
    static long resource;
    void *res[1] = {&resource};
    for (int round = 0; round < 40; round++) {
        struct pl_round r = {0};
        EQ(ks_pool_create(&r.pool, res, 1, 0), 0);
        void *held;
        EQ(ks_pool_borrow(r.pool, 0, &held), 0);
        pthread_t t;
        if (!run_thread(pl_borrower, &r, &t))
            return;
        while (!atomic_load(&r.asleep))
            sched_yield();
        sleep_ms(1); /* most rounds: the borrower is asleep in the queue */
        EQ(ks_pool_return(r.pool, held), 0);
        EQ(ks_pool_destroy(r.pool), EBUSY);
        atomic_store(&r.tried, 1);
        pthread_join(t, NULL);
        EQ(ks_pool_destroy(r.pool), 0);
    }
    EQ(resource, 40);
}

/* ---- issue 17, item 2: a retire function run off the orphan list calls the barrier -- */

static atomic_int orph_ran, orph_ret = -1;
static struct ks_epoch_node orph_node;

static void orph_free(struct ks_epoch_node *n)
{
    (void)n;
    atomic_store(&orph_ret, ks_epoch_barrier()); /* hung for ever before the fix */
    atomic_store(&orph_ran, 1);
}

static void *orph_retirer(void *arg)
{
    (void)arg;
    EQ(ks_epoch_retire(&orph_node, orph_free), 0);
    return NULL; /* exits with the node pending: it becomes an orphan */
}

static void test_epoch_barrier_from_orphan(void)
{
    pthread_t t;
    if (!run_thread(orph_retirer, NULL, &t))
        return;
    pthread_join(t, NULL);
    EQ(ks_epoch_barrier(), 0); /* runs the orphan, whose function calls the barrier */
    EQ(atomic_load(&orph_ran), 1);
    EQ(atomic_load(&orph_ret), 0);
}

/* ---- ks_rwlock under lock statistics: the mode switched while readers and
 * writers run (exclusion must hold, the plain data below is what
 * ThreadSanitizer checks), then exact counts with the mode left on ---- */

enum { RW_READERS = 4, RW_WRITERS = 2, RW_READS = 6000, RW_WRITES = 1500 };
static ks_rwlock_t rwl;
static long rw_a, rw_b;   /* plain: written under the write lock, read under the read lock */
static atomic_long rw_torn;
static atomic_int rw_stop;

static void *rw_reader(void *arg)
{
    (void)arg;
    for (int i = 0; i < RW_READS; i++) {
        int e;
        if (i % 3 == 1)
            while ((e = ks_rwlock_tryrdlock(&rwl)) == EBUSY)
                sched_yield();
        else if (i % 3 == 2)
            e = ks_rwlock_timedrdlock(&rwl, ks_deadline_after(60000 * MS));
        else
            e = ks_rwlock_rdlock(&rwl);
        EQ(e, 0);
        if (rw_a != rw_b)
            atomic_fetch_add(&rw_torn, 1);
        EQ(ks_rwlock_unlock(&rwl), 0);
    }
    return NULL;
}

static void *rw_writer(void *arg)
{
    (void)arg;
    for (int i = 0; i < RW_WRITES; i++) {
        int e;
        if (i % 3 == 1)
            while ((e = ks_rwlock_trywrlock(&rwl)) == EBUSY)
                sched_yield();
        else if (i % 3 == 2)
            e = ks_rwlock_timedwrlock(&rwl, ks_deadline_after(60000 * MS));
        else
            e = ks_rwlock_wrlock(&rwl);
        EQ(e, 0);
        rw_a++;
        rw_b++;
        EQ(ks_rwlock_unlock(&rwl), 0);
    }
    return NULL;
}

static void *rw_switcher(void *arg)
{
    (void)arg;
    static const int modes[] = {KS_LOCKSTAT_CONTENTION, KS_LOCKSTAT_ALL, KS_LOCKSTAT_OFF, KS_LOCKSTAT_ALL,
                                KS_LOCKSTAT_CONTENTION};
    struct ks_lockstat buf[8];
    for (unsigned k = 0; !atomic_load(&rw_stop); k++) {
        TRUE(ks_lockstat_set(modes[k % 5]) >= 0);
        if (k % 7 == 6)
            ks_lockstat_reset();
        ks_lockstat_read(buf, 8);
        sleep_ms(1);
    }
    return NULL;
}

static void rw_run(int switching)
{
    pthread_t t[RW_READERS + RW_WRITERS + 1];
    int n = 0;
    rw_a = rw_b = 0;
    atomic_store(&rw_stop, 0);
    for (int i = 0; i < RW_READERS; i++)
        n += run_thread(rw_reader, NULL, &t[n]);
    for (int i = 0; i < RW_WRITERS; i++)
        n += run_thread(rw_writer, NULL, &t[n]);
    pthread_t sw;
    int have_sw = switching && run_thread(rw_switcher, NULL, &sw);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    atomic_store(&rw_stop, 1);
    if (have_sw)
        pthread_join(sw, NULL);
    EQ(atomic_load(&rw_torn), 0);
    EQ(rw_a, (long)RW_WRITERS * RW_WRITES);
}

static void test_rwlock_stats(void)
{
    for (int pref = 0; pref <= 1; pref++) {
        EQ(ks_rwlock_init(&rwl, pref ? KS_RWLOCK_PREFER_READER : 0), 0);
        rw_run(1);
        EQ(ks_lockstat_set(KS_LOCKSTAT_OFF) >= 0, 1);
        EQ(ks_rwlock_destroy(&rwl), 0);
    }
    /* left on: every acquisition of each side counted, every hold timed */
    EQ(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    EQ(ks_rwlock_init(&rwl, 0), 0);
    rw_run(0);
    struct ks_lockstat buf[64];
    size_t got = ks_lockstat_read(buf, 64);
    uint64_t rd = 0, wr = 0, rdh = 0, wrh = 0;
    for (size_t i = 0; i < got && i < 64; i++)
        if (buf[i].lock == &rwl && buf[i].kind == KS_LOCK_RWLOCK_READ)
            rd = buf[i].acquisitions, rdh = buf[i].holds;
        else if (buf[i].lock == &rwl && buf[i].kind == KS_LOCK_RWLOCK_WRITE)
            wr = buf[i].acquisitions, wrh = buf[i].holds;
    EQ(rd, (long)RW_READERS * RW_READS);
    EQ(rdh, (long)RW_READERS * RW_READS);
    EQ(wr, (long)RW_WRITERS * RW_WRITES);
    EQ(wrh, (long)RW_WRITERS * RW_WRITES);
    EQ(ks_lockstat_set(KS_LOCKSTAT_OFF), KS_LOCKSTAT_ALL);
    EQ(ks_rwlock_destroy(&rwl), 0);
}

int main(void)
{
    test_time();
    test_mutex_single();
    test_mutex_threads();
    test_counters();
    test_rmutex();
    test_sem();
    test_epoch();
    test_queue();
    test_robust_rwlock();
    test_rwlock_stats();
    test_channel();
    test_pool_destroy_lifetime();
    test_epoch_barrier_from_orphan();
    unsigned f = atomic_load(&failed);
    printf("selftest: %u passed, %u failed\n", passed, f);
    return f ? 1 : 0;
}

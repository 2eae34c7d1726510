/* tools/dropin/rwsem.c - a plain pthread program (no ksync header) whose
 * rwlocks, semaphores and spinlock tools/check-stat-rwsem.sh counts through
 * the drop-in layer under "ksync-run --stat=all" (docs/lockstat.md).
 *
 *   table   a statically initialised rwlock (PTHREAD_RWLOCK_INITIALIZER)
 *   routes  a writer-preferring rwlock made by pthread_rwlock_init
 *   slots, items   a bounded buffer's two semaphores (sem_init)
 *   tally   a spinlock (pthread_spin_init) around the buffer's counters
 *
 * Readers and writers use every form of lock: plain, try (until it
 * succeeds), timed.  Producers and consumers use sem_wait, sem_trywait (until
 * it succeeds) and sem_timedwait.  The program checks its own invariants
 * (no reader sees a writer's half-done update, every item arrives once) and
 * prints the acquisitions it made of each lock, as "expect KIND COUNT" lines
 * that the check compares with the exit report.  Exit status 0 when its
 * checks pass.  Arguments: none.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { READERS = 6, WRITERS = 2, RD_ROUNDS = 900, WR_ROUNDS = 300 };
enum { PRODUCERS = 2, CONSUMERS = 3, ITEMS = 1200, SLOTS = 4 }; /* ITEMS: a multiple of both */

static pthread_rwlock_t table = PTHREAD_RWLOCK_INITIALIZER;
static pthread_rwlock_t routes;
static long table_a, table_b, routes_a, routes_b; /* equal outside a write */
static long torn;                                 /* reads that saw them differ (under a read lock: atomics) */

static sem_t slots, items;
static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static int ring[SLOTS], head, tail;
static long sum_taken;
static pthread_spinlock_t tally;
static long tally_put, tally_taken; /* under tally */

static void die(const char *what, int e)
{
    fprintf(stderr, "rwsem: %s: %d\n", what, e);
    exit(1);
}

static struct timespec in_a_minute(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 60;
    return ts;
}

static void rd(pthread_rwlock_t *l, int how)
{
    int e;
    if (how == 1) {
        while ((e = pthread_rwlock_tryrdlock(l)) == EBUSY)
            sched_yield();
    } else if (how == 2) {
        struct timespec ts = in_a_minute();
        e = pthread_rwlock_timedrdlock(l, &ts);
    } else {
        e = pthread_rwlock_rdlock(l);
    }
    if (e)
        die("read lock", e);
}

static void wr(pthread_rwlock_t *l, int how)
{
    int e;
    if (how == 1) {
        while ((e = pthread_rwlock_trywrlock(l)) == EBUSY)
            sched_yield();
    } else if (how == 2) {
        struct timespec ts = in_a_minute();
        e = pthread_rwlock_timedwrlock(l, &ts);
    } else {
        e = pthread_rwlock_wrlock(l);
    }
    if (e)
        die("write lock", e);
}

static void *reader(void *arg)
{
    (void)arg;
    for (int i = 0; i < RD_ROUNDS; i++) {
        rd(&table, i % 3);
        if (__atomic_load_n(&table_a, __ATOMIC_RELAXED) != __atomic_load_n(&table_b, __ATOMIC_RELAXED))
            __atomic_fetch_add(&torn, 1, __ATOMIC_RELAXED);
        pthread_rwlock_unlock(&table);
        if (i % 2 == 0) {
            rd(&routes, i % 3);
            if (__atomic_load_n(&routes_a, __ATOMIC_RELAXED) != __atomic_load_n(&routes_b, __ATOMIC_RELAXED))
                __atomic_fetch_add(&torn, 1, __ATOMIC_RELAXED);
            pthread_rwlock_unlock(&routes);
        }
    }
    return NULL;
}

static void *writer(void *arg)
{
    (void)arg;
    for (int i = 0; i < WR_ROUNDS; i++) {
        wr(&table, i % 3);
        __atomic_store_n(&table_a, table_a + 1, __ATOMIC_RELAXED);
        for (volatile int k = 0; k < 200; k++)
            ;
        __atomic_store_n(&table_b, table_b + 1, __ATOMIC_RELAXED);
        pthread_rwlock_unlock(&table);
        if (i % 3 == 0) {
            wr(&routes, i % 2);
            __atomic_store_n(&routes_a, routes_a + 1, __ATOMIC_RELAXED);
            __atomic_store_n(&routes_b, routes_b + 1, __ATOMIC_RELAXED);
            pthread_rwlock_unlock(&routes);
        }
    }
    return NULL;
}

static void sem_take(sem_t *s, int how)
{
    int e = 0;
    if (how == 1) {
        while (sem_trywait(s) != 0)
            if (errno != EAGAIN)
                die("sem_trywait", errno);
            else
                sched_yield();
    } else if (how == 2) {
        struct timespec ts = in_a_minute();
        while ((e = sem_timedwait(s, &ts)) != 0 && errno == EINTR)
            ;
    } else {
        while ((e = sem_wait(s)) != 0 && errno == EINTR)
            ;
    }
    if (e)
        die("sem wait", errno);
}

static void *producer(void *arg)
{
    long base = (long)arg * (ITEMS / PRODUCERS);
    for (int i = 0; i < ITEMS / PRODUCERS; i++) {
        sem_take(&slots, i % 3);
        pthread_mutex_lock(&ring_lock);
        ring[tail] = (int)(base + i + 1);
        tail = (tail + 1) % SLOTS;
        pthread_mutex_unlock(&ring_lock);
        sem_post(&items);
        if (i % 2) {
            while (pthread_spin_trylock(&tally) == EBUSY)
                sched_yield();
        } else {
            pthread_spin_lock(&tally);
        }
        tally_put++;
        pthread_spin_unlock(&tally);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    (void)arg;
    for (int i = 0; i < ITEMS / CONSUMERS; i++) {
        sem_take(&items, i % 3);
        pthread_mutex_lock(&ring_lock);
        sum_taken += ring[head];
        head = (head + 1) % SLOTS;
        pthread_mutex_unlock(&ring_lock);
        sem_post(&slots);
        pthread_spin_lock(&tally);
        tally_taken++;
        pthread_spin_unlock(&tally);
    }
    return NULL;
}

int main(void)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    if (pthread_rwlock_init(&routes, &a))
        die("pthread_rwlock_init", 0);
    pthread_rwlockattr_destroy(&a);
    if (sem_init(&slots, 0, SLOTS) || sem_init(&items, 0, 0))
        die("sem_init", errno);
    if (pthread_spin_init(&tally, PTHREAD_PROCESS_PRIVATE))
        die("pthread_spin_init", 0);
    pthread_t t[READERS + WRITERS + PRODUCERS + CONSUMERS];
    int n = 0;
    for (int i = 0; i < READERS; i++)
        pthread_create(&t[n++], NULL, reader, NULL);
    for (int i = 0; i < WRITERS; i++)
        pthread_create(&t[n++], NULL, writer, NULL);
    for (long i = 0; i < PRODUCERS; i++)
        pthread_create(&t[n++], NULL, producer, (void *)i);
    for (int i = 0; i < CONSUMERS; i++)
        pthread_create(&t[n++], NULL, consumer, NULL);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    long want_sum = (long)ITEMS * (ITEMS + 1) / 2;
    if (torn || table_a != WRITERS * WR_ROUNDS || sum_taken != want_sum || tally_put != ITEMS ||
        tally_taken != ITEMS) {
        fprintf(stderr, "rwsem: FAIL: torn reads %ld, writes %ld of %d, sum %ld of %ld, tally %ld and %ld of %d\n",
                torn, table_a, WRITERS * WR_ROUNDS, sum_taken, want_sum, tally_put, tally_taken, ITEMS);
        return 1;
    }
    /* what the exit report must show, one line per lock side */
    printf("expect rw-rd %d table\n", READERS * RD_ROUNDS);
    printf("expect rw-wr %d table\n", WRITERS * WR_ROUNDS);
    printf("expect rw-rd %d routes\n", READERS * ((RD_ROUNDS + 1) / 2));
    printf("expect rw-wr %d routes\n", WRITERS * ((WR_ROUNDS + 2) / 3));
    printf("expect sem %d slots\n", ITEMS);
    printf("expect sem %d items\n", ITEMS);
    printf("expect spin %d tally\n", 2 * ITEMS);
    printf("rwsem: checks passed\n");
    return 0;
}

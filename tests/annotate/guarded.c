/* tests/annotate/guarded.c - plain data guarded by ksync's locks, for race
 * detectors (docs/annotate.md).  Built with -fsanitize=thread (or
 * -DKSYNC_HELGRIND / -DKSYNC_DRD for valgrind) and linked against the
 * library as it is installed, uninstrumented: build/libksync.a.
 *
 * Every shared variable below is a plain int, read and written only under
 * its lock, so there is no data race.  A detector that does not know the
 * locks (this file built with -DKS_NO_ANNOTATIONS) cannot see the
 * acquisitions and releases that happen inside the library's slow paths,
 * and reports races anyway; with the annotations it must report nothing.
 *
 *   a ks_mutex counter, 4 threads (contended: the slow paths run)
 *   a ks_cond hand-off of values through a one-slot buffer
 *   a ks_rwlock table, 3 readers and 1 writer
 *   a ks_rmutex counter, taken twice (recursively) by 4 threads
 *   a value handed through a ks_sem (post, then wait), and through a
 *   ks_event (set, then wait)
 *   a ks_barrier between two phases of 4 threads writing and reading an array
 * Exit status 0 when the counts are right (the detector has its own). */
#include <ksync.h>

#include <pthread.h>
#include <stdio.h>

enum { THREADS = 4, ROUNDS = 20000, ITEMS = 5000 };

static ks_mutex_t m = KS_MUTEX_INIT;
static long counter; /* under m */

static ks_mutex_t bm = KS_MUTEX_INIT;
static ks_cond_t not_empty = KS_COND_INIT, not_full = KS_COND_INIT;
static int slot, full; /* under bm */
static long got_sum;

static ks_rwlock_t rw;
static int table[16]; /* under rw */
static long read_sum[THREADS];

static ks_rmutex_t rm;
static long rcounter; /* under rm */

static ks_sem_t sem;
static ks_event_t ev;
static long handed_sem, handed_ev; /* written before post / set, read after wait */

static ks_barrier_t bar;
static int phase1[THREADS]; /* written before the barrier, read by others after */
static long phase2_sum;      /* under m */

static void *rcount(void *p)
{
    (void)p;
    for (int i = 0; i < ROUNDS / 4; i++) {
        ks_rmutex_lock(&rm);
        ks_rmutex_lock(&rm);
        rcounter++;
        ks_rmutex_unlock(&rm);
        ks_rmutex_unlock(&rm);
    }
    return NULL;
}

static void *hand_over(void *p)
{
    (void)p;
    handed_sem = 42;
    ks_sem_post(&sem);
    handed_ev = 43;
    ks_event_set(&ev);
    return NULL;
}

static void *phases(void *p)
{
    int id = (int)(long)p;
    phase1[id] = id + 1;
    ks_barrier_wait(&bar);
    long sum = 0;
    for (int k = 0; k < THREADS; k++)
        sum += phase1[k];
    ks_mutex_lock(&m);
    phase2_sum += sum;
    ks_mutex_unlock(&m);
    return NULL;
}

static void *count(void *p)
{
    (void)p;
    for (int i = 0; i < ROUNDS; i++) {
        ks_mutex_lock(&m);
        counter++;
        ks_mutex_unlock(&m);
    }
    return NULL;
}

static void *produce(void *p)
{
    (void)p;
    for (int i = 1; i <= ITEMS; i++) {
        ks_mutex_lock(&bm);
        while (full)
            ks_cond_wait(&not_full, &bm);
        slot = i;
        full = 1;
        ks_cond_signal(&not_empty);
        ks_mutex_unlock(&bm);
    }
    return NULL;
}

static void *consume(void *p)
{
    (void)p;
    for (int i = 1; i <= ITEMS; i++) {
        ks_mutex_lock(&bm);
        while (!full)
            ks_cond_timedwait(&not_empty, &bm, ks_deadline_after(KS_NSEC_PER_SEC));
        got_sum += slot;
        full = 0;
        ks_cond_signal(&not_full);
        ks_mutex_unlock(&bm);
    }
    return NULL;
}

static void *use_table(void *p)
{
    int id = (int)(long)p;
    for (int i = 0; i < ROUNDS / 4; i++) {
        if (id == 0) {
            ks_rwlock_wrlock(&rw);
            for (int k = 0; k < 16; k++)
                table[k]++;
            ks_rwlock_unlock(&rw);
        } else {
            ks_rwlock_rdlock(&rw);
            for (int k = 0; k < 16; k++)
                read_sum[id] += table[k];
            ks_rwlock_unlock(&rw);
        }
    }
    return NULL;
}

int main(void)
{
    pthread_t t[THREADS], pc[2];
    if (ks_rwlock_init(&rw, 0))
        return 2;
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, count, NULL);
    pthread_create(&pc[0], NULL, produce, NULL);
    pthread_create(&pc[1], NULL, consume, NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_join(pc[0], NULL);
    pthread_join(pc[1], NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, use_table, (void *)(long)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    if (ks_rmutex_init(&rm, 0) || ks_sem_init(&sem, 0, 0) || ks_event_init(&ev, 0) ||
        ks_barrier_init(&bar, THREADS, 0))
        return 2;
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, rcount, NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_create(&pc[0], NULL, hand_over, NULL);
    ks_sem_wait(&sem);
    long got_sem = handed_sem;
    ks_event_wait(&ev);
    long got_ev = handed_ev;
    pthread_join(pc[0], NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, phases, (void *)(long)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    long want = (long)ITEMS * (ITEMS + 1) / 2;
    int ok = counter == (long)THREADS * ROUNDS && got_sum == want && table[0] == ROUNDS / 4 &&
             rcounter == (long)THREADS * (ROUNDS / 4) && got_sem == 42 && got_ev == 43 &&
             phase2_sum == (long)THREADS * (THREADS * (THREADS + 1) / 2);
    printf("counter %ld, hand-off sum %ld (want %ld), table %d, rcounter %ld, sem %ld, event %ld, phases %ld: %s\n",
           counter, got_sum, want, table[0], rcounter, got_sem, got_ev, phase2_sum, ok ? "right" : "WRONG");
    return ok ? 0 : 1;
}

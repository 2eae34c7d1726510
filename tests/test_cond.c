/* tests/test_cond.c - ks_cond with ks_mutex: API contract, bounded-buffer
 * producer/consumer (also oversubscribed), timeouts that re-acquire the
 * mutex, no lost wake-ups, signals not stolen by later waiters (glibc bug
 * 13165), broadcast by requeue (one wake call, docs/pitfalls.md item 19), destroy
 * right after broadcast (item 20), process-shared use across fork(). */
#include "helpers.h"

static uint32_t sleepers_of(ks_cond_t *c) { return __atomic_load_n(&c->sleepers, __ATOMIC_RELAXED); }
static uint32_t waiters_of(ks_cond_t *c) { return __atomic_load_n(&c->waiters, __ATOMIC_RELAXED); }

static void *trylock_from_thread(void *p)
{
    return (void *)(intptr_t)ks_mutex_trylock(p);
}

/* Another thread's view of the mutex: EBUSY if held (by anyone). */
static int trylock_elsewhere(ks_mutex_t *m)
{
    pthread_t t;
    kt_spawn(&t, trylock_from_thread, m);
    return (int)(intptr_t)kt_join(t);
}

/* ---- API contract ------------------------------------------------------------ */

static ks_cond_t static_zero; /* all zeros, never initialised */

Test(cond, init_destroy_and_static_initializers, .timeout = 30)
{
    ks_cond_t a = KS_COND_INIT, b;
    ks_cond_t *heap = calloc(1, sizeof *heap);
    cr_assert_not_null(heap);
    memset(&b, 0xa5, sizeof b);
    cr_assert_eq(ks_cond_init(&b, 0), 0);
    cr_assert_eq(b.seq, 0u);
    cr_assert_eq(b.waiters, 0u);
    cr_assert_eq(b.sleepers, 0u);
    cr_assert_eq(b.flags, 0u);
    cr_assert_null(b.mutex);
    ks_cond_t *cs[] = {&a, &static_zero, heap, &b};
    ks_mutex_t m = KS_MUTEX_INIT;
    for (unsigned i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        ks_cond_t *c = cs[i];
        cr_assert_eq(ks_cond_signal(c), 0);
        cr_assert_eq(ks_cond_broadcast(c), 0);
        cr_assert_eq(ks_mutex_lock(&m), 0);
        cr_assert_eq(ks_cond_timedwait(c, &m, ks_deadline_after(KT_MS)), ETIMEDOUT, "cond %u", i);
        cr_assert_eq(trylock_elsewhere(&m), EBUSY);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
        cr_assert_eq(waiters_of(c), 0u);
        cr_assert_eq(sleepers_of(c), 0u);
        cr_assert_eq(ks_cond_destroy(c), 0);
    }
    memset(&b, 0xa5, sizeof b);
    cr_assert_eq(ks_cond_init(&b, KS_SHARED), 0);
    cr_assert_eq(b.flags, KS_SHARED);
    cr_assert_eq(ks_cond_destroy(&b), 0);
    free(heap);
}

Test(cond, null_is_einval_everywhere, .timeout = 30)
{
    ks_cond_t c = KS_COND_INIT;
    ks_mutex_t m = KS_MUTEX_INIT;
    cr_assert_eq(ks_cond_init(NULL, 0), EINVAL);
    cr_assert_eq(ks_cond_init(NULL, KS_SHARED), EINVAL);
    cr_assert_eq(ks_cond_destroy(NULL), EINVAL);
    cr_assert_eq(ks_cond_signal(NULL), EINVAL);
    cr_assert_eq(ks_cond_broadcast(NULL), EINVAL);
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_cond_wait(NULL, &m), EINVAL);
    cr_assert_eq(ks_cond_wait(&c, NULL), EINVAL);
    cr_assert_eq(ks_cond_wait(NULL, NULL), EINVAL);
    cr_assert_eq(ks_cond_timedwait(NULL, &m, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_cond_timedwait(&c, NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_cond_timedwait(NULL, &m, 0), EINVAL);
    /* None of that released the mutex. */
    cr_assert_eq(trylock_elsewhere(&m), EBUSY);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(waiters_of(&c), 0u);
}

Test(cond, init_unknown_flags_is_einval_and_changes_nothing, .timeout = 30)
{
    const unsigned bad[] = {2u, 4u, 0x80u, 0x80000000u, ~0u, KS_SHARED | 2u};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ks_cond_t c, copy;
        memset(&c, 0x5a, sizeof c);
        memcpy(&copy, &c, sizeof c);
        cr_assert_eq(ks_cond_init(&c, bad[i]), EINVAL, "flags 0x%x accepted", bad[i]);
        cr_assert_eq(memcmp(&c, &copy, sizeof c), 0, "flags 0x%x: object changed", bad[i]);
    }
}

Test(cond, timedwait_negative_deadline_is_einval_and_changes_nothing, .timeout = 30)
{
    const int64_t bad[] = {-1, -KS_NSEC_PER_SEC, INT64_MIN, ks_deadline_after(-1)};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ks_cond_t c = KS_COND_INIT, ccopy;
        ks_mutex_t m = KS_MUTEX_INIT, mcopy;
        cr_assert_eq(ks_mutex_lock(&m), 0);
        memcpy(&ccopy, &c, sizeof c);
        memcpy(&mcopy, &m, sizeof m);
        struct ks_futex_stats a = kt_futex_stats();
        cr_assert_eq(ks_cond_timedwait(&c, &m, bad[i]), EINVAL, "deadline %lld", (long long)bad[i]);
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(memcmp(&c, &ccopy, sizeof c), 0, "cond changed");
        cr_assert_eq(memcmp(&m, &mcopy, sizeof m), 0, "mutex changed");
        cr_assert_eq(b.waits, a.waits);
        cr_assert_eq(b.wakes, a.wakes);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
    }
}

Test(cond, wait_with_unlocked_mutex_is_eperm, .timeout = 30)
{
    for (int f = 0; f < 2; f++) {
        ks_cond_t c, ccopy;
        ks_mutex_t m, mcopy;
        cr_assert_eq(ks_cond_init(&c, f ? KS_SHARED : 0), 0);
        cr_assert_eq(ks_mutex_init(&m, f ? KS_SHARED : 0), 0);
        memcpy(&ccopy, &c, sizeof c);
        memcpy(&mcopy, &m, sizeof m);
        struct ks_futex_stats a = kt_futex_stats();
        cr_assert_eq(ks_cond_wait(&c, &m), EPERM);
        cr_assert_eq(ks_cond_timedwait(&c, &m, KS_FOREVER), EPERM);
        cr_assert_eq(ks_cond_timedwait(&c, &m, ks_deadline_after(KS_NSEC_PER_SEC)), EPERM);
        cr_assert_eq(ks_cond_timedwait(&c, &m, 0), EPERM);
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.waits, a.waits, "an EPERM wait slept");
        cr_assert_eq(memcmp(&c, &ccopy, sizeof c), 0, "cond changed");
        cr_assert_eq(memcmp(&m, &mcopy, sizeof m), 0, "mutex changed");
        /* The mutex is still free. */
        cr_assert_eq(trylock_elsewhere(&m), 0);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
    }
}

Test(cond, signal_and_broadcast_without_waiters_make_no_futex_calls, .timeout = 30)
{
    for (int f = 0; f < 2; f++) {
        ks_cond_t c;
        ks_mutex_t m = KS_MUTEX_INIT;
        cr_assert_eq(ks_cond_init(&c, f ? KS_SHARED : 0), 0);
        struct ks_futex_stats a = kt_futex_stats();
        for (int i = 0; i < 100000; i++) {
            cr_assert_eq(ks_cond_signal(&c), 0);
            cr_assert_eq(ks_cond_broadcast(&c), 0);
        }
        /* Also under the mutex, as is usual. */
        cr_assert_eq(ks_mutex_lock(&m), 0);
        for (int i = 0; i < 1000; i++) {
            cr_assert_eq(ks_cond_signal(&c), 0);
            cr_assert_eq(ks_cond_broadcast(&c), 0);
        }
        cr_assert_eq(ks_mutex_unlock(&m), 0);
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.wakes, a.wakes, "%llu futex wakes with nobody waiting",
                     (unsigned long long)(b.wakes - a.wakes));
        cr_assert_eq(b.waits, a.waits);
        /* Nothing was remembered either: a later wait still times out. */
        cr_assert_eq(ks_mutex_lock(&m), 0);
        cr_assert_eq(ks_cond_timedwait(&c, &m, ks_deadline_after(20 * KT_MS)), ETIMEDOUT,
                     "a signal sent with no waiters released a later wait");
        cr_assert_eq(ks_mutex_unlock(&m), 0);
    }
}

/* ---- timeouts ------------------------------------------------------------------- */

Test(cond, timedwait_times_out_not_early_with_mutex_reacquired, .timeout = 30)
{
    for (int f = 0; f < 2; f++) {
        ks_cond_t c;
        ks_mutex_t m;
        cr_assert_eq(ks_cond_init(&c, f ? KS_SHARED : 0), 0);
        cr_assert_eq(ks_mutex_init(&m, f ? KS_SHARED : 0), 0);
        cr_assert_eq(ks_mutex_lock(&m), 0);

        /* A deadline already past: ETIMEDOUT without sleeping, mutex held. */
        struct ks_futex_stats a = kt_futex_stats();
        cr_assert_eq(ks_cond_timedwait(&c, &m, 0), ETIMEDOUT);
        cr_assert_eq(ks_cond_timedwait(&c, &m, ks_now()), ETIMEDOUT);
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.waits, a.waits, "a past deadline slept");
        cr_assert_eq(trylock_elsewhere(&m), EBUSY, "past-deadline timedwait returned without the mutex");

        const int64_t rel[] = {1 * KT_MS, 50 * KT_MS, 150 * KT_MS};
        for (unsigned k = 0; k < sizeof rel / sizeof rel[0]; k++) {
            int64_t deadline = ks_deadline_after(rel[k]);
            int r = ks_cond_timedwait(&c, &m, deadline);
            int64_t now = ks_now();
            cr_assert_eq(r, ETIMEDOUT, "timedwait returned %d", r);
            cr_assert_geq(now, deadline, "timed out %lld ns early", (long long)(deadline - now));
            cr_assert_lt(now, deadline + KT_LATE_NS, "%lld ms late", (long long)((now - deadline) / KT_MS));
            cr_assert_eq(trylock_elsewhere(&m), EBUSY, "timedwait returned ETIMEDOUT without the mutex");
        }
        cr_assert_eq(waiters_of(&c), 0u);
        cr_assert_eq(sleepers_of(&c), 0u);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
        cr_assert_eq(trylock_elsewhere(&m), 0);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
        cr_assert_eq(ks_cond_destroy(&c), 0);
    }
}

/* While the deadline passes another thread holds the mutex: the timed-out
 * wait returns only once it has the mutex again. */
struct holder {
    ks_mutex_t *m;
    int64_t hold_ns;
    int64_t t_unlock;
    int ret;
    pid_t tid;
};

static void *holder_main(void *p)
{
    struct holder *h = p;
    __atomic_store_n(&h->tid, kt_gettid(), __ATOMIC_RELEASE);
    h->ret = ks_mutex_lock(h->m);
    kt_sleep_ns(h->hold_ns);
    h->t_unlock = ks_now();
    if (h->ret == 0)
        h->ret = ks_mutex_unlock(h->m);
    return NULL;
}

/* A KS_SHARED wait looks again every second (src/futex.c: a signaller
 * killed before its wake must not strand it), but it does not return to
 * the caller without a signal: a loop that re-arms a relative timeout on
 * each return would never time out (a review's reproducer: pshared
 * pthread_cond_wait returned 0 after 1.00 s with no signal). */
Test(cond, shared_wait_does_not_return_at_a_slice_without_a_signal, .timeout = 30)
{
    ks_mutex_t m;
    ks_cond_t c;
    cr_assert_eq(ks_mutex_init(&m, KS_SHARED), 0);
    cr_assert_eq(ks_cond_init(&c, KS_SHARED), 0);
    cr_assert_eq(ks_mutex_lock(&m), 0);
    int64_t t0 = ks_now();
    int64_t deadline = t0 + 1800 * KT_MS; /* past one slice of 1 s (KS_PEER_RECHECK_NS) */
    int e = ks_cond_timedwait(&c, &m, deadline);
    int64_t t1 = ks_now();
    cr_assert_eq(e, ETIMEDOUT, "returned %d after %lld ms with nobody signalling", e,
                 (long long)((t1 - t0) / KT_MS));
    cr_assert_geq(t1, deadline);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(ks_cond_destroy(&c), 0);
    cr_assert_eq(ks_mutex_destroy(&m), 0);
}

Test(cond, timed_out_wait_returns_only_with_the_mutex, .timeout = 30)
{
    ks_cond_t c = KS_COND_INIT;
    ks_mutex_t m = KS_MUTEX_INIT;
    cr_assert_eq(ks_mutex_lock(&m), 0);
    struct holder h = {&m, 300 * KT_MS * KT_SLOW, 0, -1, 0};
    pthread_t t;
    kt_spawn(&t, holder_main, &h); /* blocks on m until we wait */
    pid_t tid;
    while (!(tid = __atomic_load_n(&h.tid, __ATOMIC_ACQUIRE)))
        sched_yield();
    cr_assert(kt_wait_in_futex(tid, 20 * KS_NSEC_PER_SEC), "the holder never blocked on the mutex");
    int64_t deadline = ks_deadline_after(50 * KT_MS * KT_SLOW);
    int r = ks_cond_timedwait(&c, &m, deadline);
    int64_t now = ks_now();
    cr_assert_eq(r, ETIMEDOUT);
    cr_assert_geq(now, deadline);
    kt_join(t);
    cr_assert_eq(h.ret, 0);
    cr_assert_geq(now, h.t_unlock, "timedwait returned while another thread held the mutex");
    cr_assert_eq(trylock_elsewhere(&m), EBUSY);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
}

/* ---- bounded buffer ---------------------------------------------------------------- */

#define BB_CAP 3

struct bb {
    ks_mutex_t m;
    ks_cond_t not_full, not_empty;
    int buf[BB_CAP];
    int count, head, tail;      /* under m */
    int max_count, violations;  /* under m */
    int per_producer, per_consumer;
    int errors;                 /* atomic */
    long long sum;              /* atomic */
    unsigned char *seen;        /* atomic bytes: times each item was consumed */
    int next_producer;          /* atomic */
    kt_gate_t gate;
};

static int bb_wait(ks_cond_t *c, ks_mutex_t *m, int i)
{
    return (i % 3 == 0) ? ks_cond_timedwait(c, m, ks_deadline_after(60 * KS_NSEC_PER_SEC)) : ks_cond_wait(c, m);
}

static void *bb_producer(void *p)
{
    struct bb *b = p;
    int me = __atomic_fetch_add(&b->next_producer, 1, __ATOMIC_RELAXED);
    kt_gate_pass(&b->gate);
    for (int i = 0; i < b->per_producer; i++) {
        int item = me * b->per_producer + i + 1;
        ks_mutex_lock(&b->m);
        while (b->count == BB_CAP)
            if (bb_wait(&b->not_full, &b->m, i) != 0) {
                __atomic_add_fetch(&b->errors, 1, __ATOMIC_RELAXED);
                break;
            }
        if (b->count < 0 || b->count >= BB_CAP)
            b->violations++;
        b->buf[b->tail] = item;
        b->tail = (b->tail + 1) % BB_CAP;
        b->count++;
        if (b->count > b->max_count)
            b->max_count = b->count;
        if (i % 7 == 0) {
            ks_mutex_unlock(&b->m); /* signal outside the mutex now and then */
            ks_cond_signal(&b->not_empty);
        } else {
            ks_cond_signal(&b->not_empty);
            ks_mutex_unlock(&b->m);
        }
    }
    return NULL;
}

static void *bb_consumer(void *p)
{
    struct bb *b = p;
    long long sum = 0;
    kt_gate_pass(&b->gate);
    for (int i = 0; i < b->per_consumer; i++) {
        ks_mutex_lock(&b->m);
        while (b->count == 0)
            if (bb_wait(&b->not_empty, &b->m, i) != 0) {
                __atomic_add_fetch(&b->errors, 1, __ATOMIC_RELAXED);
                break;
            }
        if (b->count <= 0 || b->count > BB_CAP)
            b->violations++;
        int item = b->buf[b->head];
        b->head = (b->head + 1) % BB_CAP;
        b->count--;
        if (i % 11 == 0)
            ks_cond_broadcast(&b->not_full);
        else
            ks_cond_signal(&b->not_full);
        ks_mutex_unlock(&b->m);
        sum += item;
        __atomic_add_fetch(&b->seen[item - 1], 1, __ATOMIC_RELAXED);
    }
    __atomic_add_fetch(&b->sum, sum, __ATOMIC_RELAXED);
    return NULL;
}

static void run_bounded_buffer(int producers, int consumers, int items)
{
    struct bb *b = calloc(1, sizeof *b);
    cr_assert_not_null(b);
    b->seen = calloc((size_t)items, 1);
    cr_assert_not_null(b->seen);
    cr_assert_eq(ks_mutex_init(&b->m, 0), 0);
    cr_assert_eq(ks_cond_init(&b->not_full, 0), 0);
    cr_assert_eq(ks_cond_init(&b->not_empty, 0), 0);
    b->per_producer = items / producers;
    b->per_consumer = items / consumers;
    cr_assert_eq(b->per_producer * producers, items);
    cr_assert_eq(b->per_consumer * consumers, items);
    kt_gate_init(&b->gate, (unsigned)(producers + consumers));
    pthread_t t[KT_MAX_THREADS];
    int n = 0;
    for (int i = 0; i < consumers; i++)
        kt_spawn(&t[n++], bb_consumer, b);
    for (int i = 0; i < producers; i++)
        kt_spawn(&t[n++], bb_producer, b);
    for (int i = 0; i < n; i++)
        kt_join(t[i]);
    cr_assert_eq(b->errors, 0, "%d waits failed", b->errors);
    cr_assert_eq(b->violations, 0, "the buffer count left [0, %d] %d times", BB_CAP, b->violations);
    cr_assert_leq(b->max_count, BB_CAP);
    cr_assert_eq(b->count, 0);
    for (int i = 0; i < items; i++)
        cr_assert_eq(b->seen[i], 1, "item %d consumed %d times", i + 1, b->seen[i]);
    cr_assert_eq(b->sum, (long long)items * (items + 1) / 2, "checksum %lld", b->sum);
    cr_assert_eq(waiters_of(&b->not_full), 0u);
    cr_assert_eq(waiters_of(&b->not_empty), 0u);
    cr_assert_eq(sleepers_of(&b->not_full), 0u);
    cr_assert_eq(sleepers_of(&b->not_empty), 0u);
    cr_assert_eq(ks_cond_destroy(&b->not_full), 0);
    cr_assert_eq(ks_cond_destroy(&b->not_empty), 0);
    cr_assert_eq(ks_mutex_destroy(&b->m), 0);
    kt_gate_destroy(&b->gate);
    free(b->seen);
    free(b);
}

Test(cond, bounded_buffer_2_producers_2_consumers, .timeout = 120)
{
    run_bounded_buffer(2, 2, 40000 / KT_SLOW);
}

Test(cond, bounded_buffer_16_producers_16_consumers, .timeout = 120)
{
    run_bounded_buffer(16, 16, 32000 / KT_SLOW);
}

/* ---- no lost wake-up ----------------------------------------------------------------- */

#define PP_ROUNDS 20000

struct pingpong {
    ks_mutex_t m;
    ks_cond_t c;
    int turn;   /* under m: whose turn (0 or 1) */
    long count; /* under m */
    int errors; /* atomic */
    int idx;
};

static void *pingpong_main(void *p)
{
    struct pingpong *pp = p;
    int me = __atomic_fetch_add(&pp->idx, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < PP_ROUNDS / KT_SLOW; i++) {
        ks_mutex_lock(&pp->m);
        while (pp->turn != me) {
            /* A lost wake-up shows as a timeout, not a hang. */
            if (ks_cond_timedwait(&pp->c, &pp->m, ks_deadline_after(20 * KS_NSEC_PER_SEC)) == ETIMEDOUT) {
                __atomic_add_fetch(&pp->errors, 1, __ATOMIC_RELAXED);
                break;
            }
        }
        pp->turn = !me;
        pp->count++;
        if (i % 2)
            ks_cond_signal(&pp->c);
        ks_mutex_unlock(&pp->m);
        if (!(i % 2))
            ks_cond_signal(&pp->c);
    }
    return NULL;
}

Test(cond, ping_pong_loses_no_signal, .timeout = 120)
{
    struct pingpong *pp = calloc(1, sizeof *pp);
    cr_assert_not_null(pp);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        kt_spawn(&t[i], pingpong_main, pp);
    for (int i = 0; i < 2; i++)
        kt_join(t[i]);
    cr_assert_eq(pp->errors, 0, "%d waits timed out: a signal was lost", pp->errors);
    cr_assert_eq(pp->count, 2L * (PP_ROUNDS / KT_SLOW));
    cr_assert_eq(waiters_of(&pp->c), 0u);
    free(pp);
}

#define TK_CONSUMERS 4
#define TK_TOKENS 40000

struct tokens {
    ks_mutex_t m;
    ks_cond_t c;
    int tokens;   /* under m: the predicate counter */
    long taken;   /* atomic */
    int timeouts; /* atomic */
    int stop;     /* under m */
    kt_gate_t gate;
};

static void *token_consumer(void *p)
{
    struct tokens *tk = p;
    kt_gate_pass(&tk->gate);
    for (;;) {
        ks_mutex_lock(&tk->m);
        while (tk->tokens == 0 && !tk->stop)
            if (ks_cond_timedwait(&tk->c, &tk->m, ks_deadline_after(20 * KS_NSEC_PER_SEC)) == ETIMEDOUT) {
                __atomic_add_fetch(&tk->timeouts, 1, __ATOMIC_RELAXED);
                break;
            }
        if (tk->tokens == 0) {
            int stop = tk->stop;
            ks_mutex_unlock(&tk->m);
            if (stop)
                return NULL;
            continue;
        }
        tk->tokens--;
        ks_mutex_unlock(&tk->m);
        __atomic_add_fetch(&tk->taken, 1, __ATOMIC_RELAXED);
    }
}

Test(cond, one_signal_per_token_loses_none, .timeout = 120)
{
    struct tokens *tk = calloc(1, sizeof *tk);
    cr_assert_not_null(tk);
    kt_gate_init(&tk->gate, TK_CONSUMERS + 1);
    pthread_t t[TK_CONSUMERS];
    for (int i = 0; i < TK_CONSUMERS; i++)
        kt_spawn(&t[i], token_consumer, tk);
    kt_gate_pass(&tk->gate);
    const int total = TK_TOKENS / KT_SLOW;
    for (int i = 0; i < total; i++) {
        cr_assert_eq(ks_mutex_lock(&tk->m), 0);
        tk->tokens++;
        if (i % 2) {
            cr_assert_eq(ks_cond_signal(&tk->c), 0);
            cr_assert_eq(ks_mutex_unlock(&tk->m), 0);
        } else {
            cr_assert_eq(ks_mutex_unlock(&tk->m), 0);
            cr_assert_eq(ks_cond_signal(&tk->c), 0);
        }
        /* Pause now and then so the consumers drain the tokens and sleep. */
        if (i % 64 == 63)
            kt_sleep_ns(20000);
    }
    /* Every token is taken without any further signal. */
    int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
    while (__atomic_load_n(&tk->taken, __ATOMIC_RELAXED) != total && ks_now() < end)
        kt_sleep_ns(KT_MS);
    long taken = __atomic_load_n(&tk->taken, __ATOMIC_RELAXED);
    ks_mutex_lock(&tk->m);
    tk->stop = 1;
    ks_cond_broadcast(&tk->c);
    ks_mutex_unlock(&tk->m);
    for (int i = 0; i < TK_CONSUMERS; i++)
        kt_join(t[i]);
    cr_assert_eq(taken, (long)total, "only %ld of %d tokens were taken: a signal was lost", taken, total);
    cr_assert_eq(tk->timeouts, 0);
    cr_assert_eq(tk->tokens, 0);
    kt_gate_destroy(&tk->gate);
    free(tk);
}

/* ---- a signal is not stolen by a later waiter (glibc bug 13165) ---------------------- */

struct cwaiter {
    ks_cond_t *c;
    ks_mutex_t *m;
    int64_t deadline;
    pid_t tid;
    int entered; /* atomic: set under m just before waiting */
    int ret;
    int64_t t1;
    int done; /* atomic */
};

/* One wait call, no predicate: returns how that single wait ended. */
static void *cwaiter_once(void *p)
{
    struct cwaiter *w = p;
    __atomic_store_n(&w->tid, kt_gettid(), __ATOMIC_RELEASE);
    ks_mutex_lock(w->m);
    __atomic_store_n(&w->entered, 1, __ATOMIC_RELEASE);
    w->ret = ks_cond_timedwait(w->c, w->m, w->deadline);
    w->t1 = ks_now();
    ks_mutex_unlock(w->m);
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

Test(cond, signal_is_not_stolen_by_a_later_waiter, .timeout = 120)
{
    int later_returned = 0;
    for (int round = 0; round < 20; round++) {
        ks_cond_t c = KS_COND_INIT;
        ks_mutex_t m = KS_MUTEX_INIT;
        /* W1 waits (asleep in most rounds, maybe still spinning in others). */
        struct cwaiter w1 = {&c, &m, ks_deadline_after(30 * KS_NSEC_PER_SEC), 0, 0, -1, 0, 0};
        pthread_t t1, t2;
        kt_spawn(&t1, cwaiter_once, &w1);
        while (!__atomic_load_n(&w1.entered, __ATOMIC_ACQUIRE))
            sched_yield();
        cr_assert_eq(ks_mutex_lock(&m), 0); /* W1 is inside wait once we get m */
        if (round % 4 != 3) {
            cr_assert_eq(ks_mutex_unlock(&m), 0);
            cr_assert(kt_wait_in_futex(w1.tid, 20 * KS_NSEC_PER_SEC));
            cr_assert_eq(sleepers_of(&c), 1u);
            cr_assert_eq(ks_mutex_lock(&m), 0);
        }
        /* The signal is sent; W2 arrives afterwards and waits too. */
        cr_assert_eq(ks_cond_signal(&c), 0);
        struct cwaiter w2 = {&c, &m, 0, 0, 0, -1, 0, 0};
        w2.deadline = ks_deadline_after(30 * KT_MS * KT_SLOW);
        kt_spawn(&t2, cwaiter_once, &w2);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
        while (!__atomic_load_n(&w2.entered, __ATOMIC_ACQUIRE))
            sched_yield();
        /* W1 must be released by that signal, long before its own deadline. */
        int64_t end = ks_now() + 10 * KS_NSEC_PER_SEC;
        while (!__atomic_load_n(&w1.done, __ATOMIC_ACQUIRE) && ks_now() < end)
            kt_sleep_ns(100000);
        cr_assert(__atomic_load_n(&w1.done, __ATOMIC_ACQUIRE),
                  "round %d: the first waiter was not released by the signal (W2 done %d)", round,
                  __atomic_load_n(&w2.done, __ATOMIC_ACQUIRE));
        kt_join(t1);
        kt_join(t2);
        cr_assert_eq(w1.ret, 0, "round %d: W1 returned %d", round, w1.ret);
        cr_assert(w2.ret == 0 || w2.ret == ETIMEDOUT, "W2 returned %d", w2.ret);
        later_returned += w2.ret == 0;
        cr_assert_eq(waiters_of(&c), 0u);
        cr_assert_eq(sleepers_of(&c), 0u);
    }
    /* Spurious returns of W2 are allowed by the contract; just report them. */
    cr_log_info("the later waiter returned 0 in %d of 20 rounds", later_returned);
}

/* ---- broadcast: every sleeper returns, by one requeue (item 19) --------------------------- */

/* The futex word thread `tid` of this process is blocked on right now (the
 * first argument of its futex call, from /proc), or NULL if it is not blocked
 * in futex(2).  A requeued waiter is still inside the call it made on the
 * condition variable's word; a woken one that went back to sleep on the
 * mutex made a new call on the mutex's word. */
static const void *futex_word_of(pid_t tid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *end;
    long nr = strtol(buf, &end, 10);
    if (end == buf || nr != SYS_futex)
        return NULL;
    return (const void *)(uintptr_t)strtoull(end, NULL, 16);
}

#define BC_WAITERS 16

struct bcast {
    ks_mutex_t m;
    ks_cond_t c;
    int go;      /* under m */
    int entered; /* under m */
    int returned; /* atomic */
    int errors;  /* atomic */
    pid_t tid[BC_WAITERS];
    int idx;
};

static void *bcast_waiter(void *p)
{
    struct bcast *b = p;
    int me = __atomic_fetch_add(&b->idx, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&b->tid[me], kt_gettid(), __ATOMIC_RELEASE);
    ks_mutex_lock(&b->m);
    b->entered++;
    while (!b->go) {
        int r = (me % 2) ? ks_cond_wait(&b->c, &b->m)
                         : ks_cond_timedwait(&b->c, &b->m, ks_deadline_after(60 * KS_NSEC_PER_SEC));
        if (r != 0) {
            __atomic_add_fetch(&b->errors, 1, __ATOMIC_RELAXED);
            break;
        }
    }
    ks_mutex_unlock(&b->m);
    __atomic_add_fetch(&b->returned, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void run_broadcast(unsigned flags)
{
    struct bcast *b = calloc(1, sizeof *b);
    cr_assert_not_null(b);
    cr_assert_eq(ks_mutex_init(&b->m, flags), 0);
    cr_assert_eq(ks_cond_init(&b->c, flags), 0);
    pthread_t t[BC_WAITERS];
    for (int i = 0; i < BC_WAITERS; i++)
        kt_spawn(&t[i], bcast_waiter, b);
    /* All 16 are inside wait, counted as sleepers, and asleep in the kernel. */
    int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
    while (sleepers_of(&b->c) != BC_WAITERS && ks_now() < end)
        kt_sleep_ns(100000);
    cr_assert_eq(sleepers_of(&b->c), (uint32_t)BC_WAITERS, "only %u sleepers", sleepers_of(&b->c));
    for (int i = 0; i < BC_WAITERS; i++) {
        pid_t tid;
        while (!(tid = __atomic_load_n(&b->tid[i], __ATOMIC_ACQUIRE)))
            sched_yield();
        cr_assert(kt_wait_in_futex(tid, 20 * KS_NSEC_PER_SEC), "waiter %d never slept", i);
    }
    cr_assert_eq(ks_mutex_lock(&b->m), 0);
    cr_assert_eq(b->entered, BC_WAITERS);
    cr_assert_eq(__atomic_load_n(&b->returned, __ATOMIC_ACQUIRE), 0);
    b->go = 1;
    struct ks_futex_stats a = kt_futex_stats();
    cr_assert_eq(ks_cond_broadcast(&b->c), 0);
    struct ks_futex_stats s = kt_futex_stats();
    if (!(flags & KS_SHARED)) {
        /* No stampede: while we still hold the mutex, two waiters were
         * woken (one if the process has a single usable CPU: src/cond.c,
         * requeue_wakes) and now sleep on the mutex word, and the others
         * were moved without waking: they are still in the call they made
         * on c.seq. */
        cpu_set_t cpus;
        cr_assert_eq(sched_getaffinity(getpid(), sizeof cpus, &cpus), 0);
        const int woken = CPU_COUNT(&cpus) >= 2 ? 2 : 1;
        int on_cond = 0, on_mutex = 0;
        int64_t end2 = ks_now() + 10 * KS_NSEC_PER_SEC;
        do {
            kt_sleep_ns(5 * KT_MS);
            on_cond = on_mutex = 0;
            for (int i = 0; i < BC_WAITERS; i++) {
                const void *w = futex_word_of(b->tid[i]);
                on_cond += w == (const void *)&b->c.seq;
                on_mutex += w == (const void *)&b->m.state;
            }
        } while (on_cond + on_mutex != BC_WAITERS && ks_now() < end2);
        cr_assert_eq(on_cond + on_mutex, BC_WAITERS, "only %d waiters blocked after the broadcast",
                     on_cond + on_mutex);
        cr_assert_eq(on_cond, BC_WAITERS - woken,
                     "%d waiters woke up and went to sleep on the mutex: broadcast did not requeue",
                     on_mutex);
    }
    cr_assert_eq(ks_mutex_unlock(&b->m), 0);
    for (int i = 0; i < BC_WAITERS; i++)
        kt_join(t[i]);
    cr_assert_eq(b->errors, 0);
    cr_assert_eq(b->returned, BC_WAITERS, "only %d of %d waiters returned", b->returned, BC_WAITERS);
    cr_assert_eq(s.wakes - a.wakes, 1u, "broadcast made %llu futex wake calls for %d sleepers",
                 (unsigned long long)(s.wakes - a.wakes), BC_WAITERS);
    cr_assert_eq(s.woken - a.woken, (uint64_t)BC_WAITERS,
                 "broadcast woke or moved %llu of %d sleepers", (unsigned long long)(s.woken - a.woken),
                 BC_WAITERS);
    cr_assert_eq(waiters_of(&b->c), 0u);
    cr_assert_eq(sleepers_of(&b->c), 0u);
    cr_assert_eq(ks_cond_destroy(&b->c), 0);
    cr_assert_eq(__atomic_load_n(&b->m.state, __ATOMIC_RELAXED), 0u, "mutex state 0x%x left",
                 __atomic_load_n(&b->m.state, __ATOMIC_RELAXED));
    free(b);
}

Test(cond, broadcast_releases_16_sleepers_with_one_requeue, .timeout = 60) { run_broadcast(0); }
Test(cond, broadcast_shared_releases_16_sleepers_with_one_wake, .timeout = 60) { run_broadcast(KS_SHARED); }

/* ---- destroy and free right after broadcast (item 20) ------------------------------------ */

#define DB_WAITERS 4
#define DB_ROUNDS 1000

struct dbcast {
    ks_mutex_t m;
    ks_cond_t *c; /* under m: this round's cond */
    int round;    /* atomic */
    int go;       /* under m: the round that may leave */
    int entered;  /* under m */
    int left;     /* atomic, cumulative */
    int errors;   /* atomic */
    int idx;
};

static void *dbcast_waiter(void *p)
{
    struct dbcast *d = p;
    int me = __atomic_fetch_add(&d->idx, 1, __ATOMIC_RELAXED);
    for (int r = 1; r <= DB_ROUNDS; r++) {
        while (__atomic_load_n(&d->round, __ATOMIC_ACQUIRE) != r)
            sched_yield();
        ks_mutex_lock(&d->m);
        ks_cond_t *c = d->c;
        d->entered++;
        while (d->go != r) {
            int e = (r + me) % 2 ? ks_cond_wait(c, &d->m)
                                 : ks_cond_timedwait(c, &d->m, ks_deadline_after(60 * KS_NSEC_PER_SEC));
            if (e != 0) {
                __atomic_add_fetch(&d->errors, 1, __ATOMIC_RELAXED);
                break;
            }
        }
        /* From here this thread must not touch c: it may be freed. */
        ks_mutex_unlock(&d->m);
        __atomic_add_fetch(&d->left, 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

Test(cond, destroy_and_free_right_after_broadcast, .timeout = 120)
{
    struct dbcast *d = calloc(1, sizeof *d);
    cr_assert_not_null(d);
    pthread_t t[DB_WAITERS];
    for (int i = 0; i < DB_WAITERS; i++)
        kt_spawn(&t[i], dbcast_waiter, d);
    int asleep = 0;
    for (int r = 1; r <= DB_ROUNDS; r++) {
        ks_cond_t *c = malloc(sizeof *c);
        cr_assert_not_null(c);
        cr_assert_eq(ks_cond_init(c, (r % 5 == 0) ? KS_SHARED : 0), 0);
        ks_mutex_lock(&d->m);
        d->c = c;
        d->entered = 0;
        ks_mutex_unlock(&d->m);
        __atomic_store_n(&d->round, r, __ATOMIC_RELEASE);
        /* Wait until all of them are inside wait (they hold m to count). */
        int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
        for (;;) {
            ks_mutex_lock(&d->m);
            if (d->entered == DB_WAITERS)
                break;
            ks_mutex_unlock(&d->m);
            cr_assert_lt(ks_now(), end, "round %d: only %d waiters entered", r, d->entered);
            sched_yield();
        }
        if (r % 2) {
            /* Let them fall asleep, so the broadcast wakes/requeues sleepers. */
            ks_mutex_unlock(&d->m);
            end = ks_now() + 200 * KT_MS;
            while (sleepers_of(c) != DB_WAITERS && ks_now() < end)
                sched_yield();
            asleep += sleepers_of(c) == DB_WAITERS;
            ks_mutex_lock(&d->m);
        }
        d->go = r;
        if (r % 3 == 0) {
            ks_mutex_unlock(&d->m);
            cr_assert_eq(ks_cond_broadcast(c), 0);
        } else if (r % 3 == 1) {
            cr_assert_eq(ks_cond_broadcast(c), 0);
            ks_mutex_unlock(&d->m);
        } else {
            for (int i = 0; i < DB_WAITERS; i++)
                cr_assert_eq(ks_cond_signal(c), 0);
            ks_mutex_unlock(&d->m);
        }
        /* The waiters may still be on their way out of wait(). */
        cr_assert_eq(ks_cond_destroy(c), 0);
        memset(c, 0xdd, sizeof *c);
        free(c);
        end = ks_now() + 20 * KS_NSEC_PER_SEC;
        while (__atomic_load_n(&d->left, __ATOMIC_ACQUIRE) != r * DB_WAITERS && ks_now() < end)
            sched_yield();
        cr_assert_eq(__atomic_load_n(&d->left, __ATOMIC_ACQUIRE), r * DB_WAITERS, "round %d: waiters stuck",
                     r);
    }
    for (int i = 0; i < DB_WAITERS; i++)
        kt_join(t[i]);
    cr_assert_eq(d->errors, 0);
    cr_assert_gt(asleep, DB_ROUNDS / 4, "the waiters rarely slept (%d rounds): the test lost its point",
                 asleep);
    free(d);
}

/* ---- process-shared across fork() ---------------------------------------------------------- */

struct shm_cond {
    ks_mutex_t m;
    ks_cond_t c;
    int flag;  /* under m */
    int ready; /* under m: children inside their wait loop */
};

static int child_waits_for_flag(void *p)
{
    struct shm_cond *s = p;
    alarm(60); /* never outlive a hung test */
    if (ks_mutex_lock(&s->m) != 0)
        return 1;
    s->ready++;
    while (!s->flag) {
        int r = ks_cond_timedwait(&s->c, &s->m, ks_deadline_after(30 * KS_NSEC_PER_SEC));
        if (r == ETIMEDOUT) {
            ks_mutex_unlock(&s->m);
            return 2;
        }
        if (r != 0)
            return 3;
    }
    if (ks_mutex_unlock(&s->m) != 0)
        return 4;
    return 0;
}

static void shm_round(struct shm_cond *s, int nchildren, int broadcast)
{
    pid_t pid[4];
    s->flag = 0;
    s->ready = 0;
    for (int i = 0; i < nchildren; i++)
        pid[i] = kt_fork(child_waits_for_flag, s);
    int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
    while (sleepers_of(&s->c) != (uint32_t)nchildren && ks_now() < end)
        kt_sleep_ns(100000);
    cr_assert_eq(sleepers_of(&s->c), (uint32_t)nchildren, "only %u children asleep", sleepers_of(&s->c));
    for (int i = 0; i < nchildren; i++)
        cr_assert(kt_wait_child_in_futex(pid[i], 20 * KS_NSEC_PER_SEC));
    cr_assert_eq(ks_mutex_lock(&s->m), 0);
    cr_assert_eq(s->ready, nchildren);
    s->flag = 1;
    if (broadcast)
        cr_assert_eq(ks_cond_broadcast(&s->c), 0);
    else
        for (int i = 0; i < nchildren; i++)
            cr_assert_eq(ks_cond_signal(&s->c), 0);
    cr_assert_eq(ks_mutex_unlock(&s->m), 0);
    for (int i = 0; i < nchildren; i++)
        kt_wait_child(pid[i]);
    cr_assert_eq(waiters_of(&s->c), 0u);
    cr_assert_eq(sleepers_of(&s->c), 0u);
}

Test(cond, process_shared_across_fork, .timeout = 120)
{
    struct shm_cond *s = kt_shared_alloc(sizeof *s);
    cr_assert_eq(ks_mutex_init(&s->m, KS_SHARED), 0);
    cr_assert_eq(ks_cond_init(&s->c, KS_SHARED), 0);
    shm_round(s, 1, 0); /* one child, signal */
    shm_round(s, 3, 1); /* three children, broadcast */
    shm_round(s, 3, 0); /* three children, three signals */
    cr_assert_eq(ks_cond_destroy(&s->c), 0);
    kt_shared_free(s, sizeof *s);
}

/* ---- a waiter touches nothing after leaving (hardware watchpoint; item 20) --------------- */

static ks_cond_t *watched_cond;
static int watched_registered;

/* "Released" for one waiter: it has been counted in `waiters` and is no
 * longer (its decrement is its last access; destroy may free after it). */
static int cond_waiter_left(void)
{
    uint32_t w = __atomic_load_n(&watched_cond->waiters, __ATOMIC_RELAXED) & 0x7fffffffu;
    if (w)
        watched_registered = 1;
    return watched_registered && w == 0;
}

struct watched_cwaiter {
    ks_cond_t *c;
    ks_mutex_t *m;
    int ret;
    struct kt_watched w;
};

static void *watched_cond_waiter(void *p)
{
    struct watched_cwaiter *ww = p;
    struct kt_watch w;
    _Static_assert(sizeof(ks_cond_t) == 24, "three 8-byte watches cover the condition variable");
    if (kt_watched_open(&ww->w, &w, ww->c, sizeof *ww->c) != 0)
        return NULL;
    ks_mutex_lock(ww->m);
    watched_registered = 0;
    kt_watch_begin(&w, cond_waiter_left);
    kt_watched_ready(&ww->w);
    ww->ret = ks_cond_timedwait(ww->c, ww->m, ks_deadline_after(30 * KS_NSEC_PER_SEC));
    kt_watch_end(&w);
    ks_mutex_unlock(ww->m);
    kt_watched_close(&ww->w, &w);
    return NULL;
}

Test(cond, waiter_touches_nothing_after_leaving, .timeout = 60)
{
    KT_SKIP_WATCH_UNDER_TSAN();
    _Alignas(8) static ks_cond_t c;
    watched_cond = &c;
    /* how: 0 signal, 1 broadcast, 2 broadcast then destroy at once, 3 signal then destroy */
    for (int f = 0; f < 2; f++)
        for (int how = 0; how < 4; how++) {
            ks_mutex_t m;
            cr_assert_eq(ks_mutex_init(&m, f ? KS_SHARED : 0), 0);
            cr_assert_eq(ks_cond_init(&c, f ? KS_SHARED : 0), 0);
            struct watched_cwaiter ww = {.c = &c, .m = &m, .ret = -1};
            pthread_t t;
            kt_spawn(&t, watched_cond_waiter, &ww);
            pid_t tid = KT_WATCHED_TID(&ww.w, t);
            int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
            while (sleepers_of(&c) != 1 && ks_now() < end)
                sched_yield();
            cr_assert(kt_wait_in_futex(tid, 20 * KS_NSEC_PER_SEC));
            cr_assert_eq(ks_mutex_lock(&m), 0);
            cr_assert_eq((how % 2) ? ks_cond_broadcast(&c) : ks_cond_signal(&c), 0);
            cr_assert_eq(ks_mutex_unlock(&m), 0);
            if (how >= 2)
                cr_assert_eq(ks_cond_destroy(&c), 0);
            kt_join(t);
            cr_assert_eq(ww.ret, 0);
            cr_assert_geq(ww.w.hits, 3, "the watchpoint saw %d accesses", ww.w.hits);
            cr_assert_eq(ww.w.after, 1,
                         "the waiter accessed the condition variable %d times after leaving (how %d, "
                         "flags %d)",
                         ww.w.after - 1, how, f);
        }
}

/* ---- issue 10: destroy with the mutex held, and waiters with different mutexes -------- */

struct dh_waiter {
    ks_cond_t *c;
    ks_mutex_t *m;
    int *go; /* under *m */
    int timed;
    int ret;
    pid_t tid;
};

static void *dh_waiter_main(void *p)
{
    struct dh_waiter *w = p;
    ks_mutex_lock(w->m);
    __atomic_store_n(&w->tid, kt_gettid(), __ATOMIC_RELEASE);
    while (!*w->go && w->ret == 0)
        w->ret = w->timed ? ks_cond_timedwait(w->c, w->m, ks_deadline_after(60 * KS_NSEC_PER_SEC))
                          : ks_cond_wait(w->c, w->m);
    ks_mutex_unlock(w->m);
    return NULL;
}

/* Start waiter w and return once it sleeps in the kernel inside wait. */
static void dh_start(pthread_t *t, struct dh_waiter *w, uint32_t sleepers_before)
{
    kt_spawn(t, dh_waiter_main, w);
    pid_t tid;
    while (!(tid = __atomic_load_n(&w->tid, __ATOMIC_ACQUIRE)))
        sched_yield();
    int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
    while (sleepers_of(w->c) != sleepers_before + 1 && ks_now() < end)
        kt_sleep_ns(100000);
    cr_assert_eq(sleepers_of(w->c), sleepers_before + 1, "waiter never counted as a sleeper");
    cr_assert(kt_wait_in_futex(tid, 20 * KS_NSEC_PER_SEC), "waiter never slept");
}

struct dh_destroyer {
    ks_cond_t *c;
    ks_mutex_t *m;
    int *go;
    int how; /* 0 broadcast, 1 one signal per waiter, 2 broadcast then a wait with m2 */
    int nwaiters;
    ks_mutex_t *m2;
    int destroy_ret;
};

/* lock(m); go = 1; broadcast (or signals); destroy(c); unlock(m): POSIX
 * allows destroy here, since no thread is blocked on c any more. */
static void *dh_destroyer_main(void *p)
{
    struct dh_destroyer *d = p;
    ks_mutex_lock(d->m);
    *d->go = 1;
    if (d->how == 1)
        for (int i = 0; i < d->nwaiters; i++)
            ks_cond_signal(d->c);
    else
        ks_cond_broadcast(d->c);
    if (d->how == 2) {
        /* A wait with another mutex, timing out at once, tags the field. */
        ks_mutex_lock(d->m2);
        ks_cond_timedwait(d->c, d->m2, ks_now());
        ks_mutex_unlock(d->m2);
    }
    d->destroy_ret = ks_cond_destroy(d->c);
    ks_mutex_unlock(d->m);
    return NULL;
}

#define DH_WAITERS 3

/* Issue 10 bug 1: the broadcast requeued W2 and W3 onto m's word; they
 * still counted as waiters and could leave only once m was unlocked, which
 * the destroyer did after destroy returned: destroy hung forever. */
static void run_destroy_holding_mutex(unsigned flags, int how)
{
    for (int round = 0; round < 4; round++) {
        ks_mutex_t m;
        cr_assert_eq(ks_mutex_init(&m, flags), 0);
        ks_cond_t *c = malloc(sizeof *c);
        cr_assert_not_null(c);
        cr_assert_eq(ks_cond_init(c, flags), 0);
        int go = 0;
        struct dh_waiter w[DH_WAITERS];
        pthread_t t[DH_WAITERS];
        for (int i = 0; i < DH_WAITERS; i++) {
            w[i] = (struct dh_waiter){.c = c, .m = &m, .go = &go, .timed = (round + i) % 2};
            dh_start(&t[i], &w[i], (uint32_t)i);
        }
        struct dh_destroyer d = {.c = c, .m = &m, .go = &go, .how = how, .nwaiters = DH_WAITERS,
                                 .destroy_ret = -1};
        pthread_t dt;
        kt_spawn(&dt, dh_destroyer_main, &d);
        cr_assert(kt_join_by(dt, ks_now() + 10 * KS_NSEC_PER_SEC),
                  "destroy under the mutex right after %s never returned (flags %u, round %d)",
                  how ? "signals" : "broadcast", flags, round);
        cr_assert_eq(d.destroy_ret, 0);
        memset(c, 0xdd, sizeof *c); /* no waiter may touch it any more */
        free(c);
        for (int i = 0; i < DH_WAITERS; i++) {
            cr_assert(kt_join_by(t[i], ks_now() + 10 * KS_NSEC_PER_SEC), "waiter %d stuck", i);
            cr_assert_eq(w[i].ret, 0);
        }
        cr_assert_eq(ks_mutex_trylock(&m), 0, "mutex left marked 0x%x", m.state);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
        cr_assert_eq(ks_mutex_destroy(&m), 0);
    }
}

Test(cond, destroy_holding_the_mutex_right_after_broadcast, .timeout = 120)
{
    run_destroy_holding_mutex(0, 0);
}
Test(cond, destroy_holding_the_mutex_right_after_signals, .timeout = 120)
{
    run_destroy_holding_mutex(0, 1);
}
Test(cond, shared_destroy_holding_the_mutex_right_after_broadcast, .timeout = 120)
{
    run_destroy_holding_mutex(KS_SHARED, 0);
}

/* Issue 10 bug 2: W1 waits with m2, W2 with m1, W3 with m2.  The broadcast
 * used to requeue onto the mutex of the latest waiter (m2): W1 woke, W2 and
 * W3 moved to m2's word; W1's unlock of m2 woke W2, which went on with m1
 * and never touched m2 again, and W3 slept on m2 for good with m2 free. */
Test(cond, broadcast_to_waiters_of_different_mutexes_wakes_them_all, .timeout = 120)
{
    for (int round = 0; round < 4; round++) {
        ks_mutex_t m1 = KS_MUTEX_INIT, m2 = KS_MUTEX_INIT;
        ks_cond_t c = KS_COND_INIT;
        int go1 = 0, go2 = 0;
        ks_mutex_t *mx[DH_WAITERS] = {&m2, &m1, &m2};
        int *gx[DH_WAITERS] = {&go2, &go1, &go2};
        struct dh_waiter w[DH_WAITERS];
        pthread_t t[DH_WAITERS];
        for (int i = 0; i < DH_WAITERS; i++) {
            w[i] = (struct dh_waiter){.c = &c, .m = mx[i], .go = gx[i], .timed = (round + i) % 2};
            dh_start(&t[i], &w[i], (uint32_t)i);
        }
        cr_assert((uintptr_t)c.mutex & KS_COND_MIXED);
        ks_mutex_lock(&m1);
        go1 = 1;
        ks_mutex_unlock(&m1);
        ks_mutex_lock(&m2);
        go2 = 1;
        if (round % 2)
            ks_mutex_unlock(&m2); /* broadcast without the mutex, or with m2 held */
        cr_assert_eq(ks_cond_broadcast(&c), 0);
        if (!(round % 2))
            ks_mutex_unlock(&m2);
        for (int i = 0; i < DH_WAITERS; i++) {
            cr_assert(kt_join_by(t[i], ks_now() + 10 * KS_NSEC_PER_SEC),
                      "waiter %d (mutex m%d) never returned after the broadcast (round %d)", i,
                      mx[i] == &m1 ? 1 : 2, round);
            cr_assert_eq(w[i].ret, 0);
        }
        cr_assert_eq(m1.state, 0u);
        cr_assert_eq(m2.state, 0u);
        cr_assert_eq(ks_cond_destroy(&c), 0);
    }
}

/* One mutex at a time, but not the same one each time (legal in POSIX): the
 * second set of waiters must not be requeued onto the first set's mutex. */
Test(cond, sequential_waiter_sets_with_different_mutexes, .timeout = 120)
{
    ks_cond_t c = KS_COND_INIT;
    ks_mutex_t ms[3] = {KS_MUTEX_INIT, KS_MUTEX_INIT, KS_MUTEX_INIT};
    for (int set = 0; set < 3; set++) {
        ks_mutex_t *m = &ms[set];
        int go = 0;
        struct dh_waiter w[DH_WAITERS];
        pthread_t t[DH_WAITERS];
        for (int i = 0; i < DH_WAITERS; i++) {
            w[i] = (struct dh_waiter){.c = &c, .m = m, .go = &go, .timed = i % 2};
            dh_start(&t[i], &w[i], (uint32_t)i);
        }
        cr_assert_eq((uintptr_t)c.mutex, (uintptr_t)&ms[0] | (set ? KS_COND_MIXED : 0));
        ks_mutex_lock(m);
        go = 1;
        cr_assert_eq(ks_cond_broadcast(&c), 0);
        ks_mutex_unlock(m);
        for (int i = 0; i < DH_WAITERS; i++) {
            cr_assert(kt_join_by(t[i], ks_now() + 10 * KS_NSEC_PER_SEC), "set %d waiter %d stuck", set, i);
            cr_assert_eq(w[i].ret, 0);
        }
        cr_assert_eq(m->state, 0u);
    }
    cr_assert_eq(ks_cond_destroy(&c), 0);
    /* Initialised again, it requeues again. */
    cr_assert_eq(ks_cond_init(&c, 0), 0);
    cr_assert_null(c.mutex);
}

/* A private condition variable used with a KS_SHARED mutex: the two live in
 * different futex namespaces, so broadcast must never requeue between them. */
Test(cond, private_cond_with_shared_mutex_never_requeues, .timeout = 60)
{
    ks_cond_t c = KS_COND_INIT;
    ks_mutex_t m;
    cr_assert_eq(ks_mutex_init(&m, KS_SHARED), 0);
    int go = 0;
    struct dh_waiter w[DH_WAITERS];
    pthread_t t[DH_WAITERS];
    for (int i = 0; i < DH_WAITERS; i++) {
        w[i] = (struct dh_waiter){.c = &c, .m = &m, .go = &go};
        dh_start(&t[i], &w[i], (uint32_t)i);
    }
    cr_assert((uintptr_t)c.mutex & KS_COND_MIXED);
    ks_mutex_lock(&m);
    go = 1;
    cr_assert_eq(ks_cond_broadcast(&c), 0);
    ks_mutex_unlock(&m);
    for (int i = 0; i < DH_WAITERS; i++)
        cr_assert(kt_join_by(t[i], ks_now() + 10 * KS_NSEC_PER_SEC), "waiter %d stuck", i);
    cr_assert_eq(ks_cond_destroy(&c), 0);
}

/* ---- issue 10 review: waiters that join between a broadcast's decision and its requeue ------
 * W1 (m1) sleeps.  Broadcast B increments seq, sees one sleeper and reads
 * `mutex` == m1.  Before B's FUTEX_CMP_REQUEUE, W2 (m2) and W3 (m1) enter
 * wait: W2 tags `mutex`, both read the new seq and sleep on it, so the
 * requeue (which expects that value) moves both onto m1's word.  W1 relocks
 * m1 and its unlock wakes W2, which goes back to m2 and never unlocks m1:
 * W3 slept on m1 for good with m1 free.  B is held between its read of
 * `mutex` and the requeue by a hardware watchpoint on `mutex`: its handler
 * blocks on the first access until W2 and W3 sleep. */
static int rq_pipe[2];
static int rq_hits;

static int rq_never(void) { return 0; }

static void rq_trap(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)si;
    (void)uc;
    int e = errno;
    if (++rq_hits == 1) {
        char ch;
        while (read(rq_pipe[0], &ch, 1) < 0 && errno == EINTR)
            ;
    }
    errno = e;
}

struct rq_bcast {
    ks_cond_t *c;
    int skip;
    int ready;
};

static void *rq_broadcaster(void *p)
{
    struct rq_bcast *b = p;
    struct kt_watch w = {.n = 0};
    if (kt_watch_add(&w, &b->c->mutex, 8) != 0) {
        b->skip = 1;
        __atomic_store_n(&b->ready, 1, __ATOMIC_RELEASE);
        return NULL;
    }
    kt_watch_begin_with(&w, rq_never, rq_trap); /* rq_trap parks at the first access */
    __atomic_store_n(&b->ready, 1, __ATOMIC_RELEASE);
    ks_cond_broadcast(b->c);
    kt_watch_end(&w);
    kt_watch_close(&w);
    return NULL;
}

struct rq_waiter {
    ks_cond_t *c;
    ks_mutex_t *m;
    int ret;
    pid_t tid;
};

static void *rq_wait_once(void *p)
{
    struct rq_waiter *w = p;
    ks_mutex_lock(w->m);
    __atomic_store_n(&w->tid, kt_gettid(), __ATOMIC_RELEASE);
    w->ret = ks_cond_wait(w->c, w->m); /* one wait: any wake-up ends it */
    ks_mutex_unlock(w->m);
    return NULL;
}

static void rq_start(pthread_t *t, struct rq_waiter *w)
{
    kt_spawn(t, rq_wait_once, w);
    pid_t tid;
    while (!(tid = __atomic_load_n(&w->tid, __ATOMIC_ACQUIRE)))
        sched_yield();
    cr_assert(kt_wait_in_futex(tid, 20 * KS_NSEC_PER_SEC), "waiter never slept");
}

Test(cond, waiter_of_another_mutex_joining_during_a_broadcast_is_not_stranded, .timeout = 60)
{
    KT_SKIP_WATCH_UNDER_TSAN();
    for (int round = 0; round < 3; round++) {
        _Alignas(8) static ks_cond_t c;
        c = (ks_cond_t)KS_COND_INIT;
        ks_mutex_t m1 = KS_MUTEX_INIT, m2 = KS_MUTEX_INIT;
        cr_assert_eq(pipe(rq_pipe), 0);
        rq_hits = 0;
        struct rq_waiter w1 = {.c = &c, .m = &m1}, w2 = {.c = &c, .m = &m2}, w3 = {.c = &c, .m = &m1};
        pthread_t t1, t2, t3, tb;
        rq_start(&t1, &w1);
        struct rq_bcast b = {.c = &c};
        kt_spawn(&tb, rq_broadcaster, &b);
        while (!__atomic_load_n(&b.ready, __ATOMIC_ACQUIRE))
            sched_yield();
        if (b.skip) {
            kt_join(tb);
            cr_skip_test("no hardware watchpoints here");
        }
        /* B is parked in its handler, past its read of `mutex`. */
        int64_t end = ks_now() + 10 * KS_NSEC_PER_SEC;
        while (!__atomic_load_n(&rq_hits, __ATOMIC_RELAXED) && ks_now() < end)
            kt_sleep_ns(100000);
        cr_assert_eq(rq_hits, 1, "the broadcaster never read the mutex field");
        rq_start(&t2, &w2);
        rq_start(&t3, &w3);
        cr_assert_eq(write(rq_pipe[1], "g", 1), 1);
        kt_join(tb);
        struct rq_waiter *ws[3] = {&w1, &w2, &w3};
        pthread_t ts[3] = {t1, t2, t3};
        for (int i = 0; i < 3; i++) {
            cr_assert(kt_join_by(ts[i], ks_now() + 10 * KS_NSEC_PER_SEC),
                      "waiter %d never returned (round %d; m1 state 0x%x): a wake-up was lost", i + 1,
                      round, m1.state);
            cr_assert_eq(ws[i]->ret, 0);
        }
        cr_assert_eq(m1.state, 0u);
        cr_assert_eq(m2.state, 0u);
        cr_assert_eq(ks_cond_destroy(&c), 0);
        close(rq_pipe[0]);
        close(rq_pipe[1]);
    }
}

/* A requeue onto m1, then a wait with m2 tags the condition variable: the
 * destroy that follows, still holding m1, must still wake the waiter moved
 * onto m1 (it used to look only at an untagged field, and hung). */
Test(cond, destroy_holding_the_mutex_after_the_condvar_became_mixed, .timeout = 60)
{
    for (int round = 0; round < 4; round++) {
        ks_cond_t c = KS_COND_INIT;
        ks_mutex_t m1 = KS_MUTEX_INIT, m2 = KS_MUTEX_INIT;
        int go = 0;
        struct dh_waiter w[2];
        pthread_t t[2];
        for (int i = 0; i < 2; i++) {
            w[i] = (struct dh_waiter){.c = &c, .m = &m1, .go = &go, .timed = (round + i) % 2};
            dh_start(&t[i], &w[i], (uint32_t)i);
        }
        struct dh_destroyer d = {.c = &c, .m = &m1, .go = &go, .how = 2, .m2 = &m2, .destroy_ret = -1};
        pthread_t dt;
        kt_spawn(&dt, dh_destroyer_main, &d);
        cr_assert(kt_join_by(dt, ks_now() + 10 * KS_NSEC_PER_SEC),
                  "destroy holding m1 after a requeue and a wait with m2 never returned (round %d)", round);
        cr_assert_eq(d.destroy_ret, 0);
        for (int i = 0; i < 2; i++)
            cr_assert(kt_join_by(t[i], ks_now() + 10 * KS_NSEC_PER_SEC), "waiter %d stuck", i);
        cr_assert_eq(m1.state, 0u);
    }
}

/* ---- oversubscribed: many waiters, one or two mutexes, destroy under the mutex -------------
 * 24 waiters on 2 CPUs, half of the rounds on one mutex (broadcast requeues),
 * half split over two (the field is tagged: broadcast wakes all), some timed;
 * the main thread sets the predicates, broadcasts and destroys the condition
 * variable while still holding the mutexes, then frees it.  Every round must
 * end with every waiter out and both mutexes free.  (On the code before
 * issue 10 the first round's destroy never returned.) */
#define OS_WAITERS 24
#define OS_ROUNDS 60

struct os_round {
    ks_cond_t *c;
    ks_mutex_t m[2];
    int go[2];      /* under m[i] */
    int entered[2]; /* under m[i] */
    int left;       /* atomic */
    int errors;     /* atomic */
};

struct os_waiter {
    struct os_round *r;
    int mi;
    int timed;
};

static void *os_waiter_main(void *p)
{
    struct os_waiter *w = p;
    struct os_round *r = w->r;
    ks_mutex_t *m = &r->m[w->mi];
    ks_mutex_lock(m);
    r->entered[w->mi]++;
    ks_cond_t *c = r->c;
    while (!r->go[w->mi]) {
        int e = w->timed ? ks_cond_timedwait(c, m, ks_deadline_after(60 * KS_NSEC_PER_SEC)) : ks_cond_wait(c, m);
        if (e) {
            __atomic_add_fetch(&r->errors, 1, __ATOMIC_RELAXED);
            break;
        }
    }
    ks_mutex_unlock(m);
    __atomic_add_fetch(&r->left, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void *os_destroyer(void *p)
{
    struct os_round *r = p;
    ks_mutex_lock(&r->m[0]);
    ks_mutex_lock(&r->m[1]);
    r->go[0] = r->go[1] = 1;
    ks_cond_broadcast(r->c);
    ks_cond_destroy(r->c);
    ks_mutex_unlock(&r->m[1]);
    ks_mutex_unlock(&r->m[0]);
    return NULL;
}

Test(cond, oversubscribed_waiters_mixed_mutexes_destroy_under_the_mutex, .timeout = 240)
{
    int slept = 0;
    for (int round = 0; round < OS_ROUNDS; round++) {
        struct os_round *r = calloc(1, sizeof *r);
        cr_assert_not_null(r);
        r->c = malloc(sizeof *r->c);
        cr_assert_not_null(r->c);
        cr_assert_eq(ks_cond_init(r->c, 0), 0);
        const int mixed = round % 2;
        struct os_waiter w[OS_WAITERS];
        pthread_t t[OS_WAITERS];
        int want[2] = {0, 0};
        for (int i = 0; i < OS_WAITERS; i++) {
            w[i] = (struct os_waiter){.r = r, .mi = mixed ? i % 2 : 0, .timed = (i + round) % 3 == 0};
            want[w[i].mi]++;
            kt_spawn(&t[i], os_waiter_main, &w[i]);
        }
        /* All inside wait (they count under their mutex), most asleep. */
        int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
        for (int k = 0; k < 2; k++)
            for (;;) {
                ks_mutex_lock(&r->m[k]);
                int n = r->entered[k];
                ks_mutex_unlock(&r->m[k]);
                if (n == want[k])
                    break;
                cr_assert_lt(ks_now(), end, "round %d: waiters never entered", round);
                sched_yield();
            }
        if (round % 4 < 2)
            kt_sleep_ns(2 * KT_MS); /* let them fall asleep, or not */
        slept += __atomic_load_n(&r->c->sleepers, __ATOMIC_RELAXED) > 0;
        pthread_t d;
        kt_spawn(&d, os_destroyer, r);
        cr_assert(kt_join_by(d, ks_now() + 10 * KS_NSEC_PER_SEC),
                  "round %d (%s): destroy under the mutexes never returned", round, mixed ? "two mutexes" : "one");
        memset(r->c, 0xdd, sizeof *r->c);
        free(r->c);
        for (int i = 0; i < OS_WAITERS; i++)
            cr_assert(kt_join_by(t[i], ks_now() + 10 * KS_NSEC_PER_SEC), "round %d: waiter %d stuck", round, i);
        cr_assert_eq(r->errors, 0);
        cr_assert_eq(r->left, OS_WAITERS);
        cr_assert_eq(r->m[0].state, 0u, "round %d: m0 left 0x%x", round, r->m[0].state);
        cr_assert_eq(r->m[1].state, 0u, "round %d: m1 left 0x%x", round, r->m[1].state);
        free(r);
    }
    cr_assert_gt(slept, OS_ROUNDS / 4, "waiters slept in only %d rounds: the test lost its point", slept);
}

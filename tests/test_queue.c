/* tests/test_queue.c - ks_queue, the blocking bounded MPMC queue: API
 * contract, capacity edges (exactly `capacity` items fit), NULL items, timed
 * put/get/join (not early, not seconds late; a past deadline is a try),
 * blocked puts and gets woken by the other side, close() (wakes every
 * blocked put with EPIPE and every blocked get; gets drain in order, then
 * EPIPE), task_done/join (scenarios S10, S11), destroy while a thread is
 * blocked, exactly-once per-producer-FIFO delivery with many producers and
 * consumers including 64 threads on 2 cores, release/acquire, and a
 * process-shared queue across fork(). */
#include "helpers.h"

#include <ksync/queue.h>

#include <linux/futex.h>
#include <sys/resource.h>

static ks_queue_t *make(size_t cap, unsigned flags)
{
    ks_queue_t *q = NULL;
    int e = ks_queue_create(&q, cap, flags);
    cr_assert_eq(e, 0, "create(%zu, 0x%x) returned %d", cap, flags, e);
    cr_assert_not_null(q);
    return q;
}

/* Caller memory for ks_queue_init. */
static void *queue_mem(size_t cap, size_t *bytes)
{
    size_t b = ks_queue_bytes(cap);
    cr_assert_gt(b, 0u);
    b = (b + KS_MPMC_ALIGN - 1) / KS_MPMC_ALIGN * KS_MPMC_ALIGN;
    void *p = aligned_alloc(KS_MPMC_ALIGN, b);
    cr_assert_not_null(p);
    memset(p, 0, b);
    if (bytes)
        *bytes = b;
    return p;
}

/* What a stalled queue looks like, for the failure message. */
static const char *queue_state(const ks_queue_t *q)
{
    static char buf[256];
    snprintf(buf, sizeof buf,
             "size %zu, unfinished %llu, closed %d; getters seq %u sleepers %u; putters seq %u sleepers %u; "
             "head %llu tail %llu",
             ks_queue_size(q), (unsigned long long)ks_queue_unfinished(q), ks_queue_is_closed(q),
             q->getters.seq, q->getters.sleepers, q->putters.seq, q->putters.sleepers,
             (unsigned long long)q->ring.head, (unsigned long long)(q->ring.tail & ~KS_MPMC_CLOSED));
    return buf;
}

/* ---- one blocking call in a thread of its own -------------------------------------- */

enum { OP_GET, OP_TIMEDGET, OP_PUT, OP_TIMEDPUT, OP_JOIN, OP_TIMEDJOIN };

struct call {
    ks_queue_t *q;
    int op;
    void *item;       /* put: the item */
    int64_t deadline; /* timed ops */
    pid_t tid;
    int ret;
    void *got;
    int64_t t1;
    int done;                /* set when the call returned */
    const uint64_t *payload; /* read after the call returns */
    uint64_t seen;
};

static void *call_main(void *p)
{
    struct call *c = p;
    __atomic_store_n(&c->tid, kt_gettid(), __ATOMIC_RELEASE); /* pairs with call_tid's acquire */
    switch (c->op) {
    case OP_GET:
        c->ret = ks_queue_get(c->q, &c->got);
        break;
    case OP_TIMEDGET:
        c->ret = ks_queue_timedget(c->q, &c->got, c->deadline);
        break;
    case OP_PUT:
        c->ret = ks_queue_put(c->q, c->item);
        break;
    case OP_TIMEDPUT:
        c->ret = ks_queue_timedput(c->q, c->item, c->deadline);
        break;
    case OP_JOIN:
        c->ret = ks_queue_join(c->q);
        break;
    default:
        c->ret = ks_queue_timedjoin(c->q, c->deadline);
    }
    c->t1 = ks_now();
    if (c->payload)
        c->seen = *c->payload;
    __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE); /* pairs with is_done's acquire */
    return NULL;
}

static int is_done(struct call *c) { return __atomic_load_n(&c->done, __ATOMIC_ACQUIRE); }

static pid_t call_tid(struct call *c)
{
    pid_t t;
    while (!(t = __atomic_load_n(&c->tid, __ATOMIC_ACQUIRE))) /* pairs with call_main's release */
        sched_yield();
    return t;
}

static void start_reading(struct call *c, pthread_t *t, ks_queue_t *q, int op, void *item,
                          const uint64_t *payload)
{
    *c = (struct call){.q = q, .op = op, .item = item, .ret = -1, .got = (void *)0x5a5a, .payload = payload};
    c->deadline = ks_deadline_after(20 * KS_NSEC_PER_SEC);
    kt_spawn(t, call_main, c);
}

static void start(struct call *c, pthread_t *t, ks_queue_t *q, int op, void *item)
{
    start_reading(c, t, q, op, item, NULL);
}

/* Wait until the call sleeps in futex(2); it must not have returned. */
static void asleep(struct call *c, const char *what)
{
    cr_assert(kt_wait_in_futex(call_tid(c), 10 * KS_NSEC_PER_SEC), "%s never went to sleep", what);
    cr_assert_eq(is_done(c), 0, "%s returned %d instead of blocking", what, c->ret);
}

/* ---- API contract -------------------------------------------------------------------- */

Test(queue, bad_arguments_are_einval, .timeout = 30)
{
    ks_queue_t *sentinel = (ks_queue_t *)(uintptr_t)0xdeadbeef, *q = sentinel;
    cr_assert_eq(ks_queue_create(NULL, 4, 0), EINVAL);
    cr_assert_eq(ks_queue_create(&q, 0, 0), EINVAL);
    cr_assert_eq(ks_queue_create(&q, (size_t)KS_MPMC_CAPACITY_MAX + 1, 0), EINVAL);
    cr_assert_eq(ks_queue_create(&q, SIZE_MAX, KS_SHARED), EINVAL);
    const unsigned bad_flags[] = {2u, 4u, 0x80u, 0x80000000u, ~0u, KS_SHARED | 2u};
    for (unsigned i = 0; i < sizeof bad_flags / sizeof bad_flags[0]; i++)
        cr_assert_eq(ks_queue_create(&q, 4, bad_flags[i]), EINVAL, "flags 0x%x accepted", bad_flags[i]);
    cr_assert_eq(q, sentinel, "a refused create wrote the out pointer");

    cr_assert_eq(ks_queue_bytes(0), 0u);
    cr_assert_eq(ks_queue_bytes((size_t)KS_MPMC_CAPACITY_MAX + 1), 0u);
    cr_assert_geq(ks_queue_bytes(1), sizeof(ks_queue_t) + sizeof(ks_mpmc_cell_t));
    cr_assert_geq(ks_queue_bytes(1000), sizeof(ks_queue_t) + 1000 * sizeof(ks_mpmc_cell_t));

    /* init: refused, and the memory is left as it was. */
    size_t bytes;
    unsigned char *mem = queue_mem(8, &bytes);
    unsigned char *copy = malloc(bytes);
    cr_assert_not_null(copy);
    memset(mem, 0x5a, bytes);
    memcpy(copy, mem, bytes);
    cr_assert_eq(ks_queue_init(NULL, 8, 0), EINVAL);
    cr_assert_eq(ks_queue_init((ks_queue_t *)(void *)mem, 0, 0), EINVAL);
    cr_assert_eq(ks_queue_init((ks_queue_t *)(void *)mem, (size_t)KS_MPMC_CAPACITY_MAX + 1, 0), EINVAL);
    for (unsigned i = 0; i < sizeof bad_flags / sizeof bad_flags[0]; i++)
        cr_assert_eq(ks_queue_init((ks_queue_t *)(void *)mem, 8, bad_flags[i]), EINVAL);
    cr_assert_eq(memcmp(mem, copy, bytes), 0, "a refused init changed the memory");
    free(copy);
    free(mem);
    /* (aligned_alloc wants a multiple of the alignment: ASan enforces it) */
    unsigned char *raw = aligned_alloc(KS_MPMC_ALIGN, (ks_queue_bytes(4) / KS_MPMC_ALIGN + 3) * KS_MPMC_ALIGN);
    cr_assert_not_null(raw);
    cr_assert_eq(ks_queue_init((ks_queue_t *)(void *)(raw + 64), 4, 0), EINVAL, "misaligned memory");
    cr_assert_eq(ks_queue_init((ks_queue_t *)(void *)(raw + 8), 4, KS_SHARED), EINVAL);
    cr_assert_eq(ks_queue_init((ks_queue_t *)(void *)(raw + KS_MPMC_ALIGN), 4, 0), 0);
    free(raw);

    /* NULL everywhere. */
    void *v = (void *)0x77;
    cr_assert_eq(ks_queue_destroy(NULL), EINVAL);
    cr_assert_eq(ks_queue_put(NULL, v), EINVAL);
    cr_assert_eq(ks_queue_tryput(NULL, v), EINVAL);
    cr_assert_eq(ks_queue_timedput(NULL, v, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_queue_timedput(NULL, v, 0), EINVAL);
    cr_assert_eq(ks_queue_get(NULL, &v), EINVAL);
    cr_assert_eq(ks_queue_tryget(NULL, &v), EINVAL);
    cr_assert_eq(ks_queue_timedget(NULL, &v, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_queue_timedget(NULL, &v, 0), EINVAL);
    cr_assert_eq(ks_queue_task_done(NULL), EINVAL);
    cr_assert_eq(ks_queue_join(NULL), EINVAL);
    cr_assert_eq(ks_queue_timedjoin(NULL, 0), EINVAL);
    cr_assert_eq(ks_queue_timedjoin(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_queue_close(NULL), EINVAL);
    cr_assert_eq(ks_queue_capacity(NULL), 0u);
    cr_assert_eq(ks_queue_size(NULL), 0u);
    cr_assert_eq(ks_queue_is_closed(NULL), 0);
    cr_assert_eq(ks_queue_unfinished(NULL), 0u);
    cr_assert_eq((uintptr_t)v, 0x77u);

    q = make(4, 0);
    cr_assert_eq(ks_queue_put(q, (void *)1), 0);
    cr_assert_eq(ks_queue_get(q, NULL), EINVAL);
    cr_assert_eq(ks_queue_tryget(q, NULL), EINVAL);
    cr_assert_eq(ks_queue_timedget(q, NULL, 0), EINVAL);
    cr_assert_eq(ks_queue_timedget(q, NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_queue_size(q), 1u, "a refused get took the item");

    /* Negative deadlines: EINVAL, nothing queued, taken or finished. */
    const int64_t bad[] = {-1, -KS_NSEC_PER_SEC, INT64_MIN, ks_deadline_after(-1)};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct ks_futex_stats a = kt_futex_stats();
        cr_assert_eq(ks_queue_timedput(q, (void *)2, bad[i]), EINVAL, "deadline %lld", (long long)bad[i]);
        cr_assert_eq(ks_queue_timedget(q, &v, bad[i]), EINVAL);
        cr_assert_eq(ks_queue_timedjoin(q, bad[i]), EINVAL);
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.waits, a.waits);
        cr_assert_eq((uintptr_t)v, 0x77u, "a refused get wrote the item");
        cr_assert_eq(ks_queue_size(q), 1u);
        cr_assert_eq(ks_queue_unfinished(q), 1u);
    }
    cr_assert_eq(ks_queue_get(q, &v), 0);
    cr_assert_eq((uintptr_t)v, 1u);
    cr_assert_eq(ks_queue_destroy(q), 0);
}

Test(queue, unallocatable_capacity_is_enomem, .timeout = 30)
{
    struct rlimit old;
    kt_limit_address_space(&old);
    ks_queue_t *sentinel = (ks_queue_t *)(uintptr_t)0xdeadbeef, *q = sentinel;
    int e = ks_queue_create(&q, (size_t)KS_MPMC_CAPACITY_MAX, 0);
    int e2 = ks_queue_create(&q, (size_t)KS_MPMC_CAPACITY_MAX - 1, KS_SHARED);
    kt_restore_address_space(&old);
    cr_assert_eq(e, ENOMEM, "create(KS_MPMC_CAPACITY_MAX) returned %d", e);
    cr_assert_eq(e2, ENOMEM, "create(KS_MPMC_CAPACITY_MAX - 1, KS_SHARED) returned %d", e2);
    cr_assert_eq(q, sentinel, "a failed create wrote the out pointer");
    q = make(3, 0);
    cr_assert_eq(ks_queue_destroy(q), 0);
}

/* ---- capacity -------------------------------------------------------------------------- */

static void fill_and_drain(ks_queue_t *q, size_t cap, uintptr_t base)
{
    uint64_t unf = ks_queue_unfinished(q);
    for (size_t i = 0; i < cap; i++) {
        /* every kind of put; none of them may block here */
        int e = (i % 3 == 0) ? ks_queue_tryput(q, (void *)(base + i))
                : (i % 3 == 1) ? ks_queue_put(q, (void *)(base + i))
                               : ks_queue_timedput(q, (void *)(base + i), ks_deadline_after(KS_NSEC_PER_SEC));
        cr_assert_eq(e, 0, "cap %zu: put %zu returned %d", cap, i, e);
        if (cap <= 4096 || i % 4096 == 0)
            cr_assert_eq(ks_queue_size(q), i + 1, "cap %zu: size %zu after %zu puts", cap, ks_queue_size(q),
                         i + 1);
    }
    cr_assert_eq(ks_queue_size(q), cap);
    cr_assert_eq(ks_queue_tryput(q, (void *)base), EAGAIN, "cap %zu: a put past capacity", cap);
    cr_assert_eq(ks_queue_timedput(q, NULL, 0), ETIMEDOUT);
    cr_assert_eq(ks_queue_size(q), cap, "a refused put changed the size");
    cr_assert_eq(ks_queue_unfinished(q), unf + cap, "a refused put counts as unfinished");
    for (size_t i = 0; i < cap; i++) {
        void *v = (void *)1;
        int e = (i % 3 == 0) ? ks_queue_tryget(q, &v)
                : (i % 3 == 1) ? ks_queue_get(q, &v)
                               : ks_queue_timedget(q, &v, ks_deadline_after(KS_NSEC_PER_SEC));
        cr_assert_eq(e, 0, "cap %zu: get %zu returned %d", cap, i, e);
        cr_assert_eq((uintptr_t)v, base + i, "cap %zu: get %zu gave %#lx", cap, i, (unsigned long)(uintptr_t)v);
        if (cap <= 4096 || i % 4096 == 0)
            cr_assert_eq(ks_queue_size(q), cap - i - 1);
    }
    void *v = (void *)0x1234;
    cr_assert_eq(ks_queue_tryget(q, &v), EAGAIN);
    cr_assert_eq(ks_queue_timedget(q, &v, 0), ETIMEDOUT);
    cr_assert_eq((uintptr_t)v, 0x1234u, "a refused get wrote the item");
    cr_assert_eq(ks_queue_size(q), 0u);
}

Test(queue, exactly_capacity_items_fit, .timeout = 60)
{
    const size_t caps[] = {1, 2, 3, 5, 64, 1000};
    for (int f = 0; f < 2; f++)
        for (unsigned k = 0; k < sizeof caps / sizeof caps[0]; k++) {
            ks_queue_t *q = make(caps[k], f ? KS_SHARED : 0);
            cr_assert_eq(ks_queue_capacity(q), caps[k]);
            cr_assert_eq(ks_queue_size(q), 0u);
            cr_assert_eq(ks_queue_unfinished(q), 0u);
            cr_assert_eq(ks_queue_is_closed(q), 0);
            for (int round = 0; round < 4; round++)
                fill_and_drain(q, caps[k], ((uintptr_t)round << 32) + 1);
            cr_assert_eq(ks_queue_unfinished(q), 4 * caps[k]);
            cr_assert_eq(ks_queue_destroy(q), 0);
        }
    /* In caller memory; destroy leaves the memory to its owner (ASan would
     * catch a free of it). */
    ks_queue_t *m = queue_mem(3, NULL);
    cr_assert_eq(ks_queue_init(m, 3, 0), 0);
    fill_and_drain(m, 3, 9);
    cr_assert_eq(ks_queue_destroy(m), 0);
    free(m);
}

Test(queue, huge_capacity, .timeout = 60)
{
    const size_t cap = (size_t)1 << 22;
    ks_queue_t *q = make(cap, 0);
    cr_assert_eq(ks_queue_capacity(q), cap);
    fill_and_drain(q, cap, 1);
    cr_assert_eq(ks_queue_destroy(q), 0);
}

Test(queue, null_items_round_trip, .timeout = 30)
{
    ks_queue_t *q = make(3, 0);
    const uintptr_t items[] = {0, 0, UINTPTR_MAX, 0, 1, (uintptr_t)KS_MPMC_CLOSED};
    for (int round = 0; round < 3; round++) {
        for (unsigned i = 0; i < sizeof items / sizeof items[0]; i++) {
            cr_assert_eq(ks_queue_put(q, (void *)items[i]), 0);
            void *v = (void *)0x99;
            cr_assert_eq(ks_queue_get(q, &v), 0);
            cr_assert_eq((uintptr_t)v, items[i]);
        }
        cr_assert_eq(ks_queue_put(q, NULL), 0);
        cr_assert_eq(ks_queue_tryput(q, NULL), 0);
        cr_assert_eq(ks_queue_timedput(q, NULL, 0), 0);
        cr_assert_eq(ks_queue_tryput(q, NULL), EAGAIN);
        for (int i = 0; i < 3; i++) {
            void *v = (void *)0x99;
            cr_assert_eq(ks_queue_tryget(q, &v), 0);
            cr_assert_null(v);
        }
    }
    cr_assert_eq(ks_queue_destroy(q), 0);
}

/* tryput/tryget report EAGAIN (never the ring's EBUSY) when a slot is hidden
 * by a thread stopped mid-operation, simulated as in test_mpmc.c. */
Test(queue, try_ops_behind_a_stalled_peer_are_eagain, .timeout = 30)
{
    ks_queue_t *q = make(3, 0);
    ks_mpmc_t *r = &q->ring;
    void *v = NULL;
    /* A consumer stopped after taking its ticket: the queue is not full, but
     * the free slot cannot be written yet. */
    for (uintptr_t i = 0; i < 3; i++)
        cr_assert_eq(ks_queue_put(q, (void *)(10 + i)), 0);
    uint64_t h = __atomic_load_n(&r->head, __ATOMIC_SEQ_CST);
    cr_assert(__atomic_compare_exchange_n(&r->head, &h, h + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    int e = ks_queue_tryput(q, (void *)99);
    cr_assert_eq(e, EAGAIN, "tryput behind a stalled get returned %d", e);
    int64_t d = ks_deadline_after(20 * KT_MS);
    e = ks_queue_timedput(q, (void *)99, d);
    cr_assert_eq(e, ETIMEDOUT, "timedput behind a stalled get returned %d", e);
    cr_assert_geq(ks_now(), d);
    cr_assert_eq(ks_queue_size(q), 2u);
    ks_mpmc_cell_t *c = ks_mpmc_cell_(r, h);
    cr_assert_eq(c->item, 10u);
    __atomic_store_n(&c->seq, 2 * (h + 3), __ATOMIC_SEQ_CST); /* the consumer finishes */
    cr_assert_eq(ks_queue_tryput(q, (void *)13), 0);
    for (uintptr_t i = 1; i < 4; i++) {
        cr_assert_eq(ks_queue_tryget(q, &v), 0);
        cr_assert_eq((uintptr_t)v, 10 + i);
    }
    /* A producer stopped after taking its ticket: not empty, but the item is
     * not there yet. */
    uint64_t t = __atomic_load_n(&r->tail, __ATOMIC_SEQ_CST);
    cr_assert(__atomic_compare_exchange_n(&r->tail, &t, t + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    v = (void *)0x42;
    e = ks_queue_tryget(q, &v);
    cr_assert_eq(e, EAGAIN, "tryget behind a stalled put returned %d", e);
    d = ks_deadline_after(20 * KT_MS);
    e = ks_queue_timedget(q, &v, d);
    cr_assert_eq(e, ETIMEDOUT, "timedget behind a stalled put returned %d", e);
    cr_assert_geq(ks_now(), d);
    cr_assert_eq((uintptr_t)v, 0x42u);
    c = ks_mpmc_cell_(r, t);
    c->item = 77;
    __atomic_store_n(&c->seq, 2 * t + 1, __ATOMIC_SEQ_CST); /* the producer finishes */
    cr_assert_eq(ks_queue_tryget(q, &v), 0);
    cr_assert_eq((uintptr_t)v, 77u);
    cr_assert_eq(ks_queue_tryget(q, &v), EAGAIN);
    cr_assert_eq(ks_queue_destroy(q), 0);
}

/* ---- deadlines --------------------------------------------------------------------------- */

Test(queue, past_deadline_is_a_try_and_does_not_sleep, .timeout = 30)
{
    for (int f = 0; f < 2; f++) {
        ks_queue_t *q = make(2, f ? KS_SHARED : 0);
        void *v = NULL;
        struct ks_futex_stats a = kt_futex_stats();
        cr_assert_eq(ks_queue_timedget(q, &v, 0), ETIMEDOUT);
        cr_assert_eq(ks_queue_timedget(q, &v, ks_now()), ETIMEDOUT);
        cr_assert_eq(ks_queue_timedjoin(q, 0), 0, "nothing put: join has nothing to wait for");
        cr_assert_eq(ks_queue_timedput(q, (void *)1, 0), 0, "a past deadline with room must put");
        cr_assert_eq(ks_queue_timedput(q, (void *)2, ks_now()), 0);
        cr_assert_eq(ks_queue_timedput(q, (void *)3, 0), ETIMEDOUT);
        cr_assert_eq(ks_queue_timedput(q, (void *)3, ks_now()), ETIMEDOUT);
        cr_assert_eq(ks_queue_timedjoin(q, 0), ETIMEDOUT);
        cr_assert_eq(ks_queue_timedget(q, &v, 0), 0, "a past deadline with an item must get");
        cr_assert_eq((uintptr_t)v, 1u);
        cr_assert_eq(ks_queue_timedget(q, &v, ks_now()), 0);
        cr_assert_eq((uintptr_t)v, 2u);
        cr_assert_eq(ks_queue_task_done(q), 0);
        cr_assert_eq(ks_queue_timedjoin(q, ks_now()), ETIMEDOUT);
        cr_assert_eq(ks_queue_task_done(q), 0);
        cr_assert_eq(ks_queue_timedjoin(q, 0), 0);
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.waits, a.waits, "a past deadline slept (%llu futex waits)",
                     (unsigned long long)(b.waits - a.waits));
        cr_assert_eq(b.wakes, a.wakes, "no sleeper, yet %llu futex wakes",
                     (unsigned long long)(b.wakes - a.wakes));
        cr_assert_eq(ks_queue_destroy(q), 0);
    }
}

#define CHECK_TIMEOUT(expr, deadline)                                                              \
    do {                                                                                           \
        int r_ = (expr);                                                                           \
        int64_t now_ = ks_now();                                                                   \
        cr_assert_eq(r_, ETIMEDOUT, "%s returned %d", #expr, r_);                                 \
        cr_assert_geq(now_, (deadline), "%s timed out %lld ns early", #expr,                      \
                      (long long)((deadline) - now_));                                             \
        cr_assert_lt(now_, (deadline) + KT_LATE_NS, "%s: %lld ms late", #expr,                    \
                     (long long)((now_ - (deadline)) / KT_MS));                                    \
    } while (0)

Test(queue, timed_ops_time_out_not_early_not_late, .timeout = 30)
{
    const int64_t rel[] = {1 * KT_MS, 20 * KT_MS, 60 * KT_MS};
    for (int f = 0; f < 2; f++) {
        ks_queue_t *q = make(1, f ? KS_SHARED : 0);
        void *v = (void *)0x31;
        for (unsigned k = 0; k < sizeof rel / sizeof rel[0]; k++) {
            int64_t d = ks_deadline_after(rel[k]);
            CHECK_TIMEOUT(ks_queue_timedget(q, &v, d), d);
            cr_assert_eq((uintptr_t)v, 0x31u, "a timed-out get wrote the item");
        }
        cr_assert_eq(ks_queue_put(q, (void *)5), 0);
        for (unsigned k = 0; k < sizeof rel / sizeof rel[0]; k++) {
            int64_t d = ks_deadline_after(rel[k]);
            CHECK_TIMEOUT(ks_queue_timedput(q, (void *)6, d), d);
            cr_assert_eq(ks_queue_size(q), 1u);
            d = ks_deadline_after(rel[k]);
            CHECK_TIMEOUT(ks_queue_timedjoin(q, d), d);
            cr_assert_eq(ks_queue_unfinished(q), 1u);
        }
        /* Still a working queue. */
        cr_assert_eq(ks_queue_get(q, &v), 0);
        cr_assert_eq((uintptr_t)v, 5u, "a timed-out put replaced the item");
        cr_assert_eq(ks_queue_task_done(q), 0);
        cr_assert_eq(ks_queue_timedjoin(q, ks_deadline_after(KS_NSEC_PER_SEC)), 0);
        cr_assert_eq(ks_queue_destroy(q), 0);
    }
}

/* ---- blocking and waking --------------------------------------------------------------- */

Test(queue, blocked_get_is_woken_by_put, .timeout = 30)
{
    for (int f = 0; f < 2; f++)
        for (int op = OP_GET; op <= OP_TIMEDGET; op++) {
            ks_queue_t *q = make(2, f ? KS_SHARED : 0);
            static uint64_t payload;
            struct call c;
            pthread_t t;
            start_reading(&c, &t, q, op, NULL, &payload);
            asleep(&c, "get on an empty queue");
            payload = 1000 + (uint64_t)op; /* plain store, published by the put */
            int64_t t_put = ks_now();
            cr_assert_eq(ks_queue_put(q, (void *)(uintptr_t)(op + 1)), 0);
            kt_join(t);
            cr_assert_eq(c.ret, 0);
            cr_assert_eq((uintptr_t)c.got, (uintptr_t)(op + 1));
            cr_assert_geq(c.t1, t_put);
            cr_assert_eq(c.seen, 1000 + (uint64_t)op, "the getter did not see what the putter wrote");
            cr_assert_eq(ks_queue_size(q), 0u);
            cr_assert_eq(ks_queue_destroy(q), 0, "a sleeper was left counted after its wake-up");
        }
}

Test(queue, blocked_put_is_woken_by_get, .timeout = 30)
{
    for (int f = 0; f < 2; f++)
        for (int op = OP_PUT; op <= OP_TIMEDPUT; op++) {
            ks_queue_t *q = make(1, f ? KS_SHARED : 0);
            cr_assert_eq(ks_queue_put(q, (void *)1), 0);
            struct call c;
            pthread_t t;
            start(&c, &t, q, op, (void *)2);
            asleep(&c, "put on a full queue");
            cr_assert_eq(ks_queue_size(q), 1u);
            int64_t t_get = ks_now();
            void *v = NULL;
            cr_assert_eq(ks_queue_get(q, &v), 0);
            cr_assert_eq((uintptr_t)v, 1u);
            kt_join(t);
            cr_assert_eq(c.ret, 0);
            cr_assert_geq(c.t1, t_get);
            cr_assert_eq(ks_queue_tryget(q, &v), 0);
            cr_assert_eq((uintptr_t)v, 2u);
            cr_assert_eq(ks_queue_destroy(q), 0, "a sleeper was left counted after its wake-up");
        }
}

/* Several blocked getters: each put wakes one, and each item goes to exactly
 * one of them. */
Test(queue, each_put_feeds_one_blocked_getter, .timeout = 30)
{
    enum { N = 8 };
    ks_queue_t *q = make(4, 0);
    struct call c[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++)
        start(&c[i], &t[i], q, i % 2 ? OP_GET : OP_TIMEDGET, NULL);
    for (int i = 0; i < N; i++)
        asleep(&c[i], "get on an empty queue");
    uint64_t seen = 0;
    for (int k = 1; k <= N; k++) {
        cr_assert_eq(ks_queue_put(q, (void *)(uintptr_t)k), 0);
        /* Exactly k getters return, eventually. */
        int64_t end = ks_now() + 10 * KS_NSEC_PER_SEC;
        int n;
        for (;;) {
            n = 0;
            for (int i = 0; i < N; i++)
                n += is_done(&c[i]);
            if (n >= k || ks_now() > end)
                break;
            sched_yield();
        }
        cr_assert_eq(n, k, "after %d puts %d getters returned", k, n);
    }
    for (int i = 0; i < N; i++) {
        kt_join(t[i]);
        cr_assert_eq(c[i].ret, 0);
        uintptr_t g = (uintptr_t)c[i].got;
        cr_assert(g >= 1 && g <= N, "getter %d got %lu", i, (unsigned long)g);
        cr_assert_eq(seen & (1ull << g), 0u, "item %lu was got twice", (unsigned long)g);
        seen |= 1ull << g;
    }
    cr_assert_eq(ks_queue_size(q), 0u);
    cr_assert_eq(ks_queue_destroy(q), 0);
}

/* ---- close --------------------------------------------------------------------------------- */

Test(queue, close_wakes_blocked_getters_with_epipe, .timeout = 30)
{
    enum { N = 8 };
    for (int f = 0; f < 2; f++) {
        ks_queue_t *q = make(3, f ? KS_SHARED : 0);
        struct call c[N];
        pthread_t t[N];
        for (int i = 0; i < N; i++)
            start(&c[i], &t[i], q, i % 2 ? OP_GET : OP_TIMEDGET, NULL);
        for (int i = 0; i < N; i++)
            asleep(&c[i], "get on an empty queue");
        int64_t t_close = ks_now();
        cr_assert_eq(ks_queue_close(q), 0);
        for (int i = 0; i < N; i++) {
            kt_join(t[i]);
            cr_assert_eq(c[i].ret, EPIPE, "getter %d returned %d after close", i, c[i].ret);
            cr_assert_eq((uintptr_t)c[i].got, 0x5a5au, "a refused get wrote the item");
            cr_assert_lt(c[i].t1, t_close + KT_LATE_NS, "getter %d woke %lld ms after close", i,
                         (long long)((c[i].t1 - t_close) / KT_MS));
        }
        cr_assert_eq(ks_queue_destroy(q), 0);
    }
}

Test(queue, close_wakes_blocked_putters_with_epipe_and_queues_nothing, .timeout = 30)
{
    enum { N = 8 };
    for (int f = 0; f < 2; f++) {
        ks_queue_t *q = make(2, f ? KS_SHARED : 0);
        cr_assert_eq(ks_queue_put(q, (void *)1), 0);
        cr_assert_eq(ks_queue_put(q, (void *)2), 0);
        struct call c[N];
        pthread_t t[N];
        for (int i = 0; i < N; i++)
            start(&c[i], &t[i], q, i % 2 ? OP_PUT : OP_TIMEDPUT, (void *)(uintptr_t)(100 + i));
        for (int i = 0; i < N; i++)
            asleep(&c[i], "put on a full queue");
        int64_t t_close = ks_now();
        cr_assert_eq(ks_queue_close(q), 0);
        for (int i = 0; i < N; i++) {
            kt_join(t[i]);
            cr_assert_eq(c[i].ret, EPIPE, "putter %d returned %d after close", i, c[i].ret);
            cr_assert_lt(c[i].t1, t_close + KT_LATE_NS);
        }
        cr_assert_eq(ks_queue_size(q), 2u, "a put refused by close queued its item");
        cr_assert_eq(ks_queue_unfinished(q), 2u);
        void *v = NULL;
        cr_assert_eq(ks_queue_get(q, &v), 0);
        cr_assert_eq((uintptr_t)v, 1u);
        cr_assert_eq(ks_queue_get(q, &v), 0);
        cr_assert_eq((uintptr_t)v, 2u);
        cr_assert_eq(ks_queue_get(q, &v), EPIPE);
        cr_assert_eq(ks_queue_destroy(q), 0);
    }
}

Test(queue, gets_drain_in_order_after_close_then_epipe, .timeout = 30)
{
    for (int f = 0; f < 2; f++) {
        ks_queue_t *q = make(5, f ? KS_SHARED : 0);
        for (uintptr_t i = 0; i < 5; i++)
            cr_assert_eq(ks_queue_put(q, (void *)i), 0); /* item 0 is NULL */
        cr_assert_eq(ks_queue_is_closed(q), 0);
        cr_assert_eq(ks_queue_close(q), 0);
        cr_assert_eq(ks_queue_is_closed(q), 1);
        cr_assert_eq(ks_queue_close(q), 0, "closing twice");
        cr_assert_eq(ks_queue_is_closed(q), 1);
        /* No more puts, of any kind, full or not. */
        cr_assert_eq(ks_queue_put(q, (void *)9), EPIPE);
        cr_assert_eq(ks_queue_tryput(q, (void *)9), EPIPE);
        cr_assert_eq(ks_queue_timedput(q, (void *)9, 0), EPIPE);
        cr_assert_eq(ks_queue_timedput(q, (void *)9, ks_deadline_after(KS_NSEC_PER_SEC)), EPIPE);
        cr_assert_eq(ks_queue_size(q), 5u);
        cr_assert_eq(ks_queue_unfinished(q), 5u);
        /* The items left come out in order, through every kind of get. */
        for (uintptr_t i = 0; i < 5; i++) {
            void *v = (void *)0x99;
            int e = (i % 3 == 0) ? ks_queue_get(q, &v)
                    : (i % 3 == 1) ? ks_queue_tryget(q, &v)
                                   : ks_queue_timedget(q, &v, ks_deadline_after(KS_NSEC_PER_SEC));
            cr_assert_eq(e, 0, "get %lu after close returned %d", (unsigned long)i, e);
            cr_assert_eq((uintptr_t)v, i);
            if (i == 2) {
                cr_assert_eq(ks_queue_put(q, (void *)9), EPIPE, "room again, still closed");
                cr_assert_eq(ks_queue_close(q), 0);
            }
        }
        /* Then EPIPE at once, from every kind of get. */
        void *v = (void *)0x99;
        int64_t t0 = ks_now();
        cr_assert_eq(ks_queue_get(q, &v), EPIPE);
        cr_assert_eq(ks_queue_tryget(q, &v), EPIPE);
        cr_assert_eq(ks_queue_timedget(q, &v, 0), EPIPE);
        cr_assert_eq(ks_queue_timedget(q, &v, ks_deadline_after(5 * KS_NSEC_PER_SEC)), EPIPE);
        cr_assert_lt(ks_now() - t0, KT_LATE_NS, "EPIPE was not immediate");
        cr_assert_eq((uintptr_t)v, 0x99u);
        cr_assert_eq(ks_queue_size(q), 0u);
        /* task_done/join still work on a closed queue. */
        cr_assert_eq(ks_queue_unfinished(q), 5u);
        for (int i = 0; i < 5; i++)
            cr_assert_eq(ks_queue_task_done(q), 0);
        cr_assert_eq(ks_queue_task_done(q), EINVAL);
        cr_assert_eq(ks_queue_join(q), 0);
        cr_assert_eq(ks_queue_destroy(q), 0);
    }
    /* Closing an empty queue: get is EPIPE at once. */
    ks_queue_t *q = make(1, 0);
    cr_assert_eq(ks_queue_close(q), 0);
    void *v;
    cr_assert_eq(ks_queue_get(q, &v), EPIPE);
    cr_assert_eq(ks_queue_put(q, NULL), EPIPE);
    cr_assert_eq(ks_queue_join(q), 0);
    cr_assert_eq(ks_queue_destroy(q), 0);
}

/* Blocked getters woken by close while items remain: they take the items,
 * then the rest get EPIPE. */
Test(queue, close_with_items_left_and_getters_blocked_loses_nothing, .timeout = 30)
{
    enum { N = 6 };
    ks_queue_t *q = make(4, 0);
    struct call c[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++)
        start(&c[i], &t[i], q, OP_GET, NULL);
    for (int i = 0; i < N; i++)
        asleep(&c[i], "get");
    /* Two puts and close, back to back: two getters get items, four EPIPE. */
    cr_assert_eq(ks_queue_put(q, (void *)1), 0);
    cr_assert_eq(ks_queue_put(q, (void *)2), 0);
    cr_assert_eq(ks_queue_close(q), 0);
    int got = 0, pipe = 0;
    uintptr_t sum = 0;
    for (int i = 0; i < N; i++) {
        kt_join(t[i]);
        if (c[i].ret == 0) {
            got++;
            sum += (uintptr_t)c[i].got;
        } else {
            cr_assert_eq(c[i].ret, EPIPE);
            pipe++;
        }
    }
    cr_assert_eq(got, 2);
    cr_assert_eq(pipe, N - 2);
    cr_assert_eq(sum, 3u);
    cr_assert_eq(ks_queue_destroy(q), 0);
}

/* ---- task_done / join ------------------------------------------------------------------------ */

struct slow_worker {
    ks_queue_t *q;
    int items;
    int finished;           /* plain: published by task_done's release */
    int64_t t_last;         /* just before the last task_done */
    int pause_before_last;  /* atomic: the worker waits here for the main thread */
    int errors;
};

static void *slow_worker_main(void *p)
{
    struct slow_worker *w = p;
    for (int i = 0; i < w->items; i++) {
        void *v;
        if (ks_queue_get(w->q, &v))
            w->errors++;
        kt_sleep_ns(10 * KT_MS); /* the "work" */
        if (i == w->items - 1) {
            __atomic_store_n(&w->pause_before_last, 1, __ATOMIC_SEQ_CST);
            while (__atomic_load_n(&w->pause_before_last, __ATOMIC_SEQ_CST) == 1)
                kt_sleep_ns(KT_MS);
            kt_sleep_ns(30 * KT_MS);
            w->t_last = ks_now();
        }
        w->finished++;
        if (ks_queue_task_done(w->q))
            w->errors++;
    }
    return NULL;
}

Test(queue, join_returns_only_after_every_task_done, .timeout = 30)
{
    enum { ITEMS = 4, JOINERS = 4 };
    for (int f = 0; f < 2; f++) {
        ks_queue_t *q = make(ITEMS, f ? KS_SHARED : 0);
        cr_assert_eq(ks_queue_join(q), 0, "join on a fresh queue");
        for (uintptr_t i = 0; i < ITEMS; i++)
            cr_assert_eq(ks_queue_put(q, (void *)i), 0);
        struct call c[JOINERS];
        pthread_t t[JOINERS], wt;
        struct slow_worker w = {.q = q, .items = ITEMS};
        for (int i = 0; i < JOINERS; i++) {
            start(&c[i], &t[i], q, i % 2 ? OP_JOIN : OP_TIMEDJOIN, NULL);
        }
        for (int i = 0; i < JOINERS; i++)
            asleep(&c[i], "join with unfinished tasks");
        kt_spawn(&wt, slow_worker_main, &w);
        /* All items taken, all but one task done: the joiners still wait. */
        while (__atomic_load_n(&w.pause_before_last, __ATOMIC_SEQ_CST) != 1)
            kt_sleep_ns(KT_MS);
        kt_sleep_ns(10 * KT_MS);
        cr_assert_eq(ks_queue_size(q), 0u);
        cr_assert_eq(ks_queue_unfinished(q), 1u);
        for (int i = 0; i < JOINERS; i++)
            cr_assert_eq(is_done(&c[i]), 0, "joiner %d returned %d with a task unfinished", i, c[i].ret);
        cr_assert_eq(ks_queue_timedjoin(q, 0), ETIMEDOUT);
        __atomic_store_n(&w.pause_before_last, 2, __ATOMIC_SEQ_CST);
        /* The main thread joins too. */
        cr_assert_eq(ks_queue_timedjoin(q, ks_deadline_after(10 * KS_NSEC_PER_SEC)), 0);
        int64_t t_main = ks_now();
        cr_assert_eq(w.finished, ITEMS, "join returned before the work it waits for was visible");
        cr_assert_geq(t_main, w.t_last, "join returned before the last task_done");
        for (int i = 0; i < JOINERS; i++) {
            kt_join(t[i]);
            cr_assert_eq(c[i].ret, 0, "joiner %d returned %d", i, c[i].ret);
            cr_assert_geq(c[i].t1, w.t_last, "joiner %d returned before the last task_done", i);
        }
        kt_join(wt);
        cr_assert_eq(w.errors, 0);
        cr_assert_eq(ks_queue_unfinished(q), 0u);
        cr_assert_eq(ks_queue_destroy(q), 0, "a joiner was left counted after its wake-up");
    }
}

/* S11: a consumer that forgets task_done.  timedjoin times out and says how
 * many are missing, instead of hanging. */
struct forgetful {
    ks_queue_t *q;
    int items, done_every; /* task_done for every done_every-th item only */
    int errors;
};

static void *forgetful_main(void *p)
{
    struct forgetful *fc = p;
    for (int i = 0; i < fc->items; i++) {
        void *v;
        if (ks_queue_get(fc->q, &v) != 0)
            fc->errors++;
        if (i % fc->done_every == 0 && ks_queue_task_done(fc->q) != 0)
            fc->errors++;
    }
    return NULL;
}

Test(queue, timedjoin_reports_outstanding_count_s11, .timeout = 30)
{
    ks_queue_t *q = make(5, 0);
    struct forgetful fc = {.q = q, .items = 12, .done_every = 3};
    pthread_t t;
    kt_spawn(&t, forgetful_main, &fc);
    for (uintptr_t i = 0; i < 12; i++)
        cr_assert_eq(ks_queue_put(q, (void *)i), 0);
    kt_join(t);
    cr_assert_eq(fc.errors, 0);
    cr_assert_eq(ks_queue_size(q), 0u);
    int64_t d = ks_deadline_after(50 * KT_MS);
    CHECK_TIMEOUT(ks_queue_timedjoin(q, d), d);
    cr_assert_eq(ks_queue_unfinished(q), 8u, "12 puts, 4 task_done: %llu unfinished",
                 (unsigned long long)ks_queue_unfinished(q));
    cr_assert_eq(ks_queue_timedjoin(q, 0), ETIMEDOUT);
    /* More puts raise it; the missing task_done calls bring it to zero. */
    cr_assert_eq(ks_queue_put(q, NULL), 0);
    cr_assert_eq(ks_queue_unfinished(q), 9u);
    for (int i = 0; i < 9; i++) {
        cr_assert_eq(ks_queue_timedjoin(q, 0), ETIMEDOUT);
        cr_assert_eq(ks_queue_task_done(q), 0);
        cr_assert_eq(ks_queue_unfinished(q), (uint64_t)(8 - i));
    }
    cr_assert_eq(ks_queue_timedjoin(q, 0), 0);
    cr_assert_eq(ks_queue_join(q), 0);
    cr_assert_eq(ks_queue_destroy(q), 0);
}

Test(queue, task_done_more_than_puts_is_einval_and_changes_nothing, .timeout = 30)
{
    ks_queue_t *q = make(4, 0);
    cr_assert_eq(ks_queue_task_done(q), EINVAL, "task_done with nothing put");
    cr_assert_eq(ks_queue_unfinished(q), 0u);
    cr_assert_eq(ks_queue_put(q, (void *)1), 0);
    cr_assert_eq(ks_queue_put(q, (void *)2), 0);
    cr_assert_eq(ks_queue_put(q, (void *)3), 0);
    /* As Python: task_done counts against puts, got or not. */
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ks_queue_task_done(q), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(ks_queue_task_done(q), EINVAL);
        cr_assert_eq(ks_queue_unfinished(q), 0u, "a refused task_done changed the count");
    }
    cr_assert_eq(ks_queue_size(q), 3u, "task_done took items");
    cr_assert_eq(ks_queue_join(q), 0);
    /* The next put is unfinished again: the refused calls were not banked. */
    cr_assert_eq(ks_queue_put(q, (void *)4), 0);
    cr_assert_eq(ks_queue_unfinished(q), 1u);
    cr_assert_eq(ks_queue_timedjoin(q, 0), ETIMEDOUT);
    cr_assert_eq(ks_queue_task_done(q), 0);
    cr_assert_eq(ks_queue_task_done(q), EINVAL);
    cr_assert_eq(ks_queue_destroy(q), 0);
}

/* Racing task_done calls: exactly as many succeed as there were puts. */
struct td_race {
    ks_queue_t *q;
    int calls, ok, einval, other;
    kt_gate_t *gate;
};

static void *td_race_main(void *p)
{
    struct td_race *r = p;
    kt_gate_pass(r->gate);
    for (int i = 0; i < r->calls; i++) {
        int e = ks_queue_task_done(r->q);
        if (e == 0)
            r->ok++;
        else if (e == EINVAL)
            r->einval++;
        else
            r->other++;
    }
    return NULL;
}

Test(queue, racing_task_done_calls_never_overshoot, .timeout = 30)
{
    enum { T = 8, PUTS = 1000, CALLS = 200 };
    ks_queue_t *q = make(PUTS, 0);
    for (int i = 0; i < PUTS; i++)
        cr_assert_eq(ks_queue_put(q, NULL), 0);
    kt_gate_t gate;
    kt_gate_init(&gate, T);
    struct td_race r[T];
    for (int i = 0; i < T; i++)
        r[i] = (struct td_race){.q = q, .calls = CALLS, .gate = &gate};
    kt_run_threads(T, td_race_main, r, sizeof r[0]);
    int ok = 0, einval = 0;
    for (int i = 0; i < T; i++) {
        cr_assert_eq(r[i].other, 0);
        ok += r[i].ok;
        einval += r[i].einval;
    }
    cr_assert_eq(ok, PUTS, "%d task_done calls accepted for %d puts", ok, PUTS);
    cr_assert_eq(einval, T * CALLS - PUTS);
    cr_assert_eq(ks_queue_unfinished(q), 0u);
    cr_assert_eq(ks_queue_join(q), 0);
    kt_gate_destroy(&gate);
    cr_assert_eq(ks_queue_destroy(q), 0);
}

/* ---- destroy --------------------------------------------------------------------------------- */

Test(queue, destroy_is_ebusy_while_a_thread_is_blocked, .timeout = 30)
{
    for (int op = 0; op < 3; op++) {
        ks_queue_t *q = make(1, 0);
        if (op == 1)
            cr_assert_eq(ks_queue_put(q, (void *)1), 0); /* full: put blocks; unfinished: join blocks */
        if (op == 2) {
            cr_assert_eq(ks_queue_put(q, (void *)1), 0);
            void *v;
            cr_assert_eq(ks_queue_get(q, &v), 0);
        }
        struct call c;
        pthread_t t;
        const int ops[] = {OP_GET, OP_PUT, OP_JOIN};
        const char *names[] = {"get", "put", "join"};
        start(&c, &t, q, ops[op], (void *)2);
        asleep(&c, names[op]);
        for (int i = 0; i < 3; i++)
            cr_assert_eq(ks_queue_destroy(q), EBUSY, "destroy with a thread blocked in %s", names[op]);
        /* Nothing was freed: the queue still works (ASan checks the memory). */
        void *v = NULL;
        if (op == 0)
            cr_assert_eq(ks_queue_put(q, (void *)7), 0);
        else if (op == 1)
            cr_assert_eq(ks_queue_get(q, &v), 0);
        else
            cr_assert_eq(ks_queue_task_done(q), 0);
        kt_join(t);
        cr_assert_eq(c.ret, 0);
        if (op == 0)
            cr_assert_eq((uintptr_t)c.got, 7u);
        cr_assert_eq(ks_queue_destroy(q), 0, "%s has returned: destroy must succeed", names[op]);
    }
}

/* ---- many producers and consumers (S10) -------------------------------------------------------- */

#define QP_MAX_PRODUCERS 64

struct qp_run {
    ks_queue_t *q;
    int producers, consumers;
    int blocking_only; /* only put/get and timed calls with a deadline nobody reaches */
    uint64_t per_producer;
    uint64_t *seen;    /* bitmap; atomic fetch_or */
    uint64_t consumed; /* atomic: items got, counted before their task_done */
    kt_gate_t gate;
};

struct qp_thread {
    struct qp_run *r;
    int id, producer;
    uint64_t count, sum;
    uint64_t dups, fifo, bad, errors, timeouts;
    int last; /* the error that ended a consumer's loop */
};

static uintptr_t qp_item(int producer, uint64_t seq)
{
    return ((uintptr_t)(producer + 1) << 40) | (uintptr_t)seq;
}

static void *qp_producer(void *p)
{
    struct qp_thread *a = p;
    struct qp_run *r = a->r;
    kt_gate_pass(&r->gate);
    for (uint64_t s = 0; s < r->per_producer; s++) {
        void *it = (void *)qp_item(a->id, s);
        int e;
        switch (r->blocking_only ? 3 + a->id % 2 : a->id % 3) {
        case 0:
        case 3:
            e = ks_queue_put(r->q, it);
            break;
        case 4:
            /* a missed wake-up shows as ETIMEDOUT, an error here */
            e = ks_queue_timedput(r->q, it, ks_deadline_after(10 * KS_NSEC_PER_SEC));
            break;
        case 1:
            while ((e = ks_queue_timedput(r->q, it, ks_deadline_after((int64_t)(s % 4) * 250000))) == ETIMEDOUT)
                a->timeouts++;
            break;
        default:
            while ((e = ks_queue_tryput(r->q, it)) == EAGAIN) {
                a->timeouts++;
                sched_yield();
            }
        }
        if (e) {
            a->errors++;
            return NULL;
        }
        a->count++;
        a->sum += (uintptr_t)it;
    }
    return NULL;
}

static void *qp_consumer(void *p)
{
    struct qp_thread *a = p;
    struct qp_run *r = a->r;
    int64_t last[QP_MAX_PRODUCERS];
    for (int i = 0; i < QP_MAX_PRODUCERS; i++)
        last[i] = -1;
    kt_gate_pass(&r->gate);
    for (uint64_t k = 0;; k++) {
        void *v;
        int e;
        switch (r->blocking_only ? 3 + a->id % 2 : a->id % 3) {
        case 0:
        case 3:
            e = ks_queue_get(r->q, &v);
            break;
        case 4:
            e = ks_queue_timedget(r->q, &v, ks_deadline_after(10 * KS_NSEC_PER_SEC));
            break;
        case 1:
            while ((e = ks_queue_timedget(r->q, &v, ks_deadline_after((int64_t)(k % 4) * 250000))) == ETIMEDOUT)
                a->timeouts++;
            break;
        default:
            while ((e = ks_queue_tryget(r->q, &v)) == EAGAIN) {
                a->timeouts++;
                sched_yield();
            }
        }
        if (e) {
            a->last = e;
            if (e != EPIPE)
                a->errors++;
            return NULL;
        }
        uintptr_t it = (uintptr_t)v;
        uint64_t prod = (it >> 40) - 1, seq = it & (((uintptr_t)1 << 40) - 1);
        if ((it >> 40) == 0 || prod >= (uint64_t)r->producers || seq >= r->per_producer) {
            a->bad++;
        } else {
            uint64_t bit = prod * r->per_producer + seq;
            uint64_t old = __atomic_fetch_or(&r->seen[bit / 64], 1ull << (bit % 64), __ATOMIC_SEQ_CST);
            if (old & (1ull << (bit % 64)))
                a->dups++;
            if ((int64_t)seq <= last[prod])
                a->fifo++;
            last[prod] = (int64_t)seq;
        }
        a->count++;
        a->sum += it;
        __atomic_add_fetch(&r->consumed, 1, __ATOMIC_SEQ_CST);
        if (ks_queue_task_done(r->q))
            a->errors++;
    }
}

static void qp_run_mode(int blocking_only, size_t cap, unsigned flags, int producers, int consumers,
                        uint64_t per_producer)
{
    cr_assert_leq(producers, QP_MAX_PRODUCERS);
    cr_assert_leq(producers + consumers, KT_MAX_THREADS);
    struct qp_run r = {.producers = producers, .consumers = consumers, .per_producer = per_producer,
                       .blocking_only = blocking_only};
    r.q = make(cap, flags);
    uint64_t total = per_producer * (uint64_t)producers;
    r.seen = calloc((size_t)(total + 63) / 64, sizeof(uint64_t));
    cr_assert_not_null(r.seen);
    kt_gate_init(&r.gate, (unsigned)(producers + consumers));
    int n = producers + consumers;
    struct qp_thread *a = calloc((size_t)n, sizeof *a);
    cr_assert_not_null(a);
    pthread_t t[KT_MAX_THREADS];
    int64_t t0 = ks_now();
    for (int i = 0, pi = 0, ci = 0; i < n; i++) {
        int prod = (i % 2 == 0 && pi < producers) || ci >= consumers;
        a[i].r = &r;
        a[i].id = prod ? pi++ : ci++;
        a[i].producer = prod;
        kt_spawn(&t[i], prod ? qp_producer : qp_consumer, &a[i]);
    }
    /* A lost wake-up stalls everything: give up after 10 s, dump the state,
     * and let close() release the sleepers, so the test fails cleanly. */
    int64_t limit = ks_deadline_after(10 * KS_NSEC_PER_SEC * KT_SLOW);
    int stalled = 0;
    for (int i = 0; i < n; i++)
        if (a[i].producer && !stalled && !kt_join_by(t[i], limit))
            stalled = 1;
    /* Every put has returned: join waits for the consumers' task_done. */
    int e = stalled ? -1 : ks_queue_timedjoin(r.q, limit);
    if (stalled || e) {
        char state[256];
        snprintf(state, sizeof state, "%s", queue_state(r.q));
        ks_queue_close(r.q);
        for (int i = 0; i < n; i++)
            kt_join(t[i]);
        cr_assert_fail("%s stalled for 10 s (a lost wake-up?): %s",
                       stalled ? "producers" : "join", state);
    }
    uint64_t consumed = __atomic_load_n(&r.consumed, __ATOMIC_SEQ_CST);
    cr_assert_eq(consumed, total, "join returned with %llu of %llu items consumed",
                 (unsigned long long)consumed, (unsigned long long)total);
    cr_assert_eq(ks_queue_close(r.q), 0);
    for (int i = 0; i < n; i++)
        if (!a[i].producer && !kt_join_by(t[i], limit)) {
            char state[256];
            snprintf(state, sizeof state, "%s", queue_state(r.q));
            cr_assert_fail("consumers still blocked 10 s after close(): %s", state);
        }
    int64_t took = ks_now() - t0;
    uint64_t pcount = 0, psum = 0, ccount = 0, csum = 0, timeouts = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_eq(a[i].errors, 0u, "%s %d: unexpected errors", a[i].producer ? "producer" : "consumer",
                     a[i].id);
        timeouts += a[i].timeouts;
        if (a[i].producer) {
            pcount += a[i].count;
            psum += a[i].sum;
            continue;
        }
        cr_assert_eq(a[i].last, EPIPE, "consumer %d stopped on %d, not EPIPE", a[i].id, a[i].last);
        cr_assert_eq(a[i].bad, 0u, "consumer %d got %llu items nobody put", a[i].id, (unsigned long long)a[i].bad);
        cr_assert_eq(a[i].dups, 0u, "consumer %d got %llu duplicates", a[i].id, (unsigned long long)a[i].dups);
        cr_assert_eq(a[i].fifo, 0u, "consumer %d got %llu items out of their producer's order", a[i].id,
                     (unsigned long long)a[i].fifo);
        ccount += a[i].count;
        csum += a[i].sum;
    }
    cr_assert_eq(pcount, total);
    cr_assert_eq(ccount, total, "put %llu, got %llu", (unsigned long long)total, (unsigned long long)ccount);
    cr_assert_eq(csum, psum, "checksum: put %#llx, got %#llx", (unsigned long long)psum, (unsigned long long)csum);
    uint64_t set = 0;
    for (uint64_t w = 0; w < (total + 63) / 64; w++)
        set += (uint64_t)__builtin_popcountll(r.seen[w]);
    cr_assert_eq(set, total, "%llu distinct items of %llu", (unsigned long long)set, (unsigned long long)total);
    cr_assert_eq(ks_queue_size(r.q), 0u);
    cr_assert_eq(ks_queue_unfinished(r.q), 0u);
    cr_log_info("%s, cap %zu, flags %u, %d producers x %d consumers, %llu items: %lld ms, %llu timeouts/EAGAIN",
                blocking_only ? "blocking" : "mixed", cap, flags, producers, consumers, (unsigned long long)total, (long long)(took / KT_MS),
                (unsigned long long)timeouts);
    cr_assert_eq(ks_queue_destroy(r.q), 0, "destroy after every thread returned: EBUSY (%s; joiners sleepers %u)",
                 queue_state(r.q), r.q->joiners.sleepers);
    kt_gate_destroy(&r.gate);
    free(a);
    free(r.seen);
}

static void qp_run(size_t cap, unsigned flags, int producers, int consumers, uint64_t per_producer)
{
    qp_run_mode(0, cap, flags, producers, consumers, per_producer);
}

/* Only blocking calls: a lost wake-up leaves a thread asleep with nobody left
 * to wake it (cap 1, one of each side), which shows as a 10 s timeout. */
Test(queue, blocking_only_no_lost_wakeups, .timeout = 120)
{
    qp_run_mode(1, 1, 0, 1, 1, 20000 / KT_SLOW);
    qp_run_mode(1, 1, KS_SHARED, 2, 2, 10000 / KT_SLOW);
    qp_run_mode(1, 2, 0, 1, 3, 20000 / KT_SLOW);
    qp_run_mode(1, 3, 0, 16, 16, 600 / KT_SLOW);
}

Test(queue, s10_producers_consumers_exactly_once_fifo_join, .timeout = 60)
{
    qp_run(5, 0, 2, 2, 10000 / KT_SLOW);
    qp_run(5, KS_SHARED, 3, 3, 10000 / KT_SLOW);
    qp_run(1, 0, 3, 3, 5000 / KT_SLOW);
    qp_run(3, 0, 1, 4, 20000 / KT_SLOW);
    qp_run(1000, 0, 4, 1, 10000 / KT_SLOW);
}

Test(queue, oversubscribed_64_threads_exactly_once_fifo_join, .timeout = 120)
{
    qp_run(1, 0, 32, 32, 200 / KT_SLOW);
    qp_run(5, 0, 32, 32, 600 / KT_SLOW);
    qp_run(3, KS_SHARED, 32, 32, 300 / KT_SLOW);
    qp_run(1000, 0, 48, 16, 1000 / KT_SLOW);
}

/* ---- release/acquire -------------------------------------------------------------------------------- */

#define RA_ITEMS (20000 / KT_SLOW)

struct ra_payload {
    uint64_t a, b, c;
};

struct ra_run {
    ks_queue_t *q;
    struct ra_payload *pl;
    uint64_t *result; /* written by consumers before task_done, read after join */
    uint64_t bad[2];
};

struct ra_arg {
    struct ra_run *r;
    int id;
};

static void *ra_producer(void *p)
{
    struct ra_arg *a = p;
    for (uint64_t i = (uint64_t)a->id; i < RA_ITEMS; i += 2) {
        struct ra_payload *x = &a->r->pl[i];
        x->a = i; /* plain stores, published by the put's release */
        x->b = ~i;
        x->c = i * 0x9e3779b97f4a7c15ull;
        if (ks_queue_put(a->r->q, x))
            a->r->bad[a->id]++;
    }
    return NULL;
}

static void *ra_consumer(void *p)
{
    struct ra_arg *a = p;
    for (;;) {
        void *v;
        if (ks_queue_get(a->r->q, &v))
            return NULL; /* EPIPE: closed and drained */
        const struct ra_payload *x = v;
        uint64_t i = (uint64_t)(x - a->r->pl);
        if (x->a != i || x->b != ~i || x->c != i * 0x9e3779b97f4a7c15ull)
            a->r->bad[a->id]++;
        a->r->result[i] = x->c ^ 1; /* plain store, published by task_done's release */
        ks_queue_task_done(a->r->q);
    }
}

Test(queue, put_get_and_task_done_join_publish_plain_writes, .timeout = 60)
{
    struct ra_run r = {0};
    r.q = make(4, 0);
    r.pl = calloc(RA_ITEMS, sizeof *r.pl);
    r.result = calloc(RA_ITEMS, sizeof *r.result);
    cr_assert_not_null(r.pl);
    cr_assert_not_null(r.result);
    struct ra_arg args[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct ra_arg){&r, i / 2};
        kt_spawn(&t[i], i % 2 ? ra_consumer : ra_producer, &args[i]);
    }
    int64_t limit = ks_deadline_after(10 * KS_NSEC_PER_SEC * KT_SLOW);
    int joined[4] = {0};
    joined[0] = kt_join_by(t[0], limit);
    joined[2] = joined[0] && kt_join_by(t[2], limit);
    if (!joined[2] || ks_queue_timedjoin(r.q, limit) != 0) {
        char state[256];
        snprintf(state, sizeof state, "%s", queue_state(r.q));
        ks_queue_close(r.q); /* releases every sleeper */
        for (int i = 0; i < 4; i++)
            if (!joined[i])
                kt_join(t[i]);
        cr_assert_fail("stalled for 10 s (a lost wake-up?): %s", state);
    }
    uint64_t missing = 0;
    for (uint64_t i = 0; i < RA_ITEMS; i++)
        missing += r.result[i] != ((i * 0x9e3779b97f4a7c15ull) ^ 1);
    cr_assert_eq(missing, 0u, "%llu results written before task_done not visible after join",
                 (unsigned long long)missing);
    cr_assert_eq(ks_queue_close(r.q), 0);
    kt_join(t[1]);
    kt_join(t[3]);
    cr_assert_eq(r.bad[0] + r.bad[1], 0u, "%llu payloads incomplete after get", (unsigned long long)(r.bad[0] + r.bad[1]));
    cr_assert_eq(ks_queue_destroy(r.q), 0);
    free(r.pl);
    free(r.result);
}

/* ---- process-shared across fork() ---------------------------------------------------------------- */

#define SH_CAP 4
#define SH_ITEMS 20000

struct sh_area {
    pid_t parent_tid;
    int phase;
    _Alignas(KS_MPMC_ALIGN) unsigned char mem[];
};

/* The child produces the integers 1..SH_ITEMS, waits for the parent's
 * task_done calls, then closes. */
static int sh_child(void *p)
{
    struct sh_area *s = p;
    ks_queue_t *q = (ks_queue_t *)(void *)s->mem;
    char path[64];
    /* (if /proc will not tell, kt_wait_in_futex_at gives it 100 ms) */
    snprintf(path, sizeof path, "/proc/%d/task/%d/syscall", (int)getppid(), (int)s->parent_tid);
    if (!kt_wait_in_futex_at(path, 10 * KS_NSEC_PER_SEC))
        return 1; /* the parent never blocked in get */
    for (uintptr_t i = 1; i <= SH_ITEMS; i++) {
        int e = (i % 2) ? ks_queue_put(q, (void *)i) : ks_queue_timedput(q, (void *)i, ks_deadline_after(20 * KS_NSEC_PER_SEC));
        if (e)
            return 2;
    }
    if (ks_queue_timedjoin(q, ks_deadline_after(20 * KS_NSEC_PER_SEC)))
        return 3;
    if (ks_queue_unfinished(q) != 0)
        return 4;
    if (ks_queue_close(q))
        return 5;
    return 0;
}

Test(queue, process_shared_child_produces_parent_consumes, .timeout = 60)
{
    size_t size = sizeof(struct sh_area) + ks_queue_bytes(SH_CAP);
    struct sh_area *s = kt_shared_alloc(size);
    ks_queue_t *q = (ks_queue_t *)(void *)s->mem;
    cr_assert_eq((uintptr_t)q % KS_MPMC_ALIGN, 0u);
    cr_assert_eq(ks_queue_init(q, SH_CAP, KS_SHARED), 0);
    s->parent_tid = kt_gettid();
    pid_t pid = kt_fork(sh_child, s);
    /* The first get sleeps until the child's first put wakes it. */
    void *v = NULL;
    cr_assert_eq(ks_queue_timedget(q, &v, ks_deadline_after(20 * KS_NSEC_PER_SEC)), 0);
    cr_assert_eq((uintptr_t)v, 1u);
    cr_assert_eq(ks_queue_task_done(q), 0);
    /* Let the child fill the queue and sleep in put: our gets wake it. */
    cr_assert(kt_wait_child_in_futex(pid, 10 * KS_NSEC_PER_SEC), "the child never blocked in put");
    cr_assert_eq(ks_queue_size(q), SH_CAP);
    for (uintptr_t i = 2; i <= SH_ITEMS; i++) {
        int e = (i % 2) ? ks_queue_get(q, &v) : ks_queue_timedget(q, &v, ks_deadline_after(20 * KS_NSEC_PER_SEC));
        cr_assert_eq(e, 0, "get %lu returned %d", (unsigned long)i, e);
        cr_assert_eq((uintptr_t)v, i, "item %lu arrived as %lu", (unsigned long)i, (unsigned long)(uintptr_t)v);
        cr_assert_eq(ks_queue_task_done(q), 0);
    }
    /* The child's close wakes this get. */
    cr_assert_eq(ks_queue_timedget(q, &v, ks_deadline_after(20 * KS_NSEC_PER_SEC)), EPIPE);
    kt_wait_child(pid);
    cr_assert_eq(ks_queue_is_closed(q), 1);
    cr_assert_eq(ks_queue_unfinished(q), 0u);
    cr_assert_eq(ks_queue_destroy(q), 0);
    kt_shared_free(s, size);
}

/* A FUTEX_WAKE that no waker of this queue sent (a late wake from an object
 * that used this memory before: docs/pitfalls.md item 2) leaves the woken getter
 * counted as a sleeper.  Later puts must still return, and destroy must not
 * hang (review finding: a wake-up loop keyed on "sleepers && work" spun
 * forever here). */
Test(queue, stray_futex_wake_does_not_hang_later_puts, .timeout = 30)
{
    ks_queue_t *q = make(4, 0);
    struct call c;
    pthread_t t;
    start_reading(&c, &t, q, OP_GET, NULL, NULL);
    asleep(&c, "get on an empty queue");
    long woke = syscall(SYS_futex, &q->getters.seq, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    cr_assert_eq(woke, 1, "the stray FUTEX_WAKE found no getter asleep");
    cr_assert_eq(ks_queue_put(q, (void *)7), 0);
    kt_join(t);
    cr_assert_eq(c.ret, 0);
    cr_assert_eq((uintptr_t)c.got, 7u);
    /* The getter may now be counted twice over; with nobody asleep, every
     * put and get must still complete. */
    for (uintptr_t i = 1; i <= 100; i++) {
        void *v = NULL;
        cr_assert_eq(ks_queue_put(q, (void *)i), 0);
        cr_assert_eq(ks_queue_get(q, &v), 0);
        cr_assert_eq((uintptr_t)v, i);
    }
    cr_assert_eq(ks_queue_close(q), 0);
    void *v = NULL;
    cr_assert_eq(ks_queue_get(q, &v), EPIPE);
    cr_assert_eq(ks_queue_put(q, &v), EPIPE);
    /* The getter the stray wake-up woke is still counted (it took the 0
     * return for a real wake-up), but nobody is inside the queue: destroy
     * succeeds (it used to answer EBUSY for good: issue 10 review). */
    cr_assert_eq(ks_queue_destroy(q), 0);
}

/* tests/test_mpmc.c - ks_mpmc, the bounded lock-free ring: API contract,
 * capacity edges (1, 2, non-powers of two, 1<<22; exactly `capacity` items
 * fit), NULL items, the EAGAIN/EBUSY verdicts, per-producer FIFO and
 * exactly-once delivery (count, checksum and a seen-bitmap) with many
 * producers and consumers including 64 threads on 2 cores, release/acquire
 * publication of what the producer wrote, caller memory and a ring mapped
 * at two addresses, and allocation failure. */
#include "helpers.h"

#include <ksync/mpmc.h>

#include <sys/resource.h>

/* ---- helpers ------------------------------------------------------------------- */

/* Caller memory for ks_mpmc_init: aligned, zeroed. */
static ks_mpmc_t *ring_alloc(size_t cap)
{
    size_t bytes = ks_mpmc_bytes(cap);
    cr_assert_gt(bytes, 0u, "ks_mpmc_bytes(%zu) is 0", cap);
    bytes = (bytes + KS_MPMC_ALIGN - 1) / KS_MPMC_ALIGN * KS_MPMC_ALIGN;
    void *p = aligned_alloc(KS_MPMC_ALIGN, bytes);
    cr_assert_not_null(p);
    memset(p, 0, bytes);
    return p;
}

/* Fill to capacity, check the next push is EAGAIN, drain in order, check the
 * next pop is EAGAIN.  `base` makes each round's items different. */
static void fill_and_drain(ks_mpmc_t *q, size_t cap, uintptr_t base)
{
    for (size_t i = 0; i < cap; i++) {
        int e = ks_mpmc_try_push(q, (void *)(base + i));
        cr_assert_eq(e, 0, "cap %zu: push %zu of %zu returned %d", cap, i, cap, e);
        if (cap <= 4096 || i % 4096 == 0)
            cr_assert_eq(ks_mpmc_size(q), i + 1, "cap %zu: size %zu after %zu pushes", cap,
                         ks_mpmc_size(q), i + 1);
    }
    cr_assert_eq(ks_mpmc_size(q), cap);
    cr_assert_eq(ks_mpmc_try_push(q, (void *)base), EAGAIN, "cap %zu: a push past capacity", cap);
    cr_assert_eq(ks_mpmc_try_push(q, NULL), EAGAIN);
    cr_assert_eq(ks_mpmc_size(q), cap, "a refused push changed the size");
    for (size_t i = 0; i < cap; i++) {
        void *v = (void *)1;
        int e = ks_mpmc_try_pop(q, &v);
        cr_assert_eq(e, 0, "cap %zu: pop %zu returned %d", cap, i, e);
        cr_assert_eq((uintptr_t)v, base + i, "cap %zu: pop %zu gave %#lx, not %#lx", cap, i,
                     (unsigned long)(uintptr_t)v, (unsigned long)(base + i));
        if (cap <= 4096 || i % 4096 == 0)
            cr_assert_eq(ks_mpmc_size(q), cap - i - 1);
    }
    void *v = (void *)0x1234;
    cr_assert_eq(ks_mpmc_try_pop(q, &v), EAGAIN, "cap %zu: a pop from an empty ring", cap);
    cr_assert_eq((uintptr_t)v, 0x1234u, "a refused pop wrote the item");
    cr_assert_eq(ks_mpmc_size(q), 0u);
}

/* ---- API contract ------------------------------------------------------------------ */

Test(mpmc, bad_arguments_are_einval, .timeout = 30)
{
    ks_mpmc_t *sentinel = (ks_mpmc_t *)(uintptr_t)0xdeadbeef, *q = sentinel;
    cr_assert_eq(ks_mpmc_create(NULL, 4), EINVAL);
    cr_assert_eq(ks_mpmc_create(&q, 0), EINVAL);
    cr_assert_eq(q, sentinel, "a refused create wrote the out pointer");
    cr_assert_eq(ks_mpmc_create(&q, (size_t)KS_MPMC_CAPACITY_MAX + 1), EINVAL);
    cr_assert_eq(ks_mpmc_create(&q, SIZE_MAX), EINVAL);
    cr_assert_eq(q, sentinel);

    cr_assert_eq(ks_mpmc_bytes(0), 0u);
    cr_assert_eq(ks_mpmc_bytes((size_t)KS_MPMC_CAPACITY_MAX + 1), 0u);
    cr_assert_eq(ks_mpmc_bytes(SIZE_MAX), 0u);
    cr_assert_geq(ks_mpmc_bytes(1), sizeof(ks_mpmc_t) + sizeof(ks_mpmc_cell_t));
    cr_assert_geq(ks_mpmc_bytes(1000), sizeof(ks_mpmc_t) + 1000 * sizeof(ks_mpmc_cell_t));
    cr_assert_geq(ks_mpmc_bytes((size_t)KS_MPMC_CAPACITY_MAX),
                  (size_t)KS_MPMC_CAPACITY_MAX * sizeof(ks_mpmc_cell_t));

    cr_assert_eq(ks_mpmc_init(NULL, 4), EINVAL);
    ks_mpmc_t *mem = ring_alloc(8);
    size_t bytes = ks_mpmc_bytes(8);
    unsigned char *copy = malloc(bytes);
    cr_assert_not_null(copy);
    memset(mem, 0x5a, bytes);
    memcpy(copy, mem, bytes);
    cr_assert_eq(ks_mpmc_init(mem, 0), EINVAL);
    cr_assert_eq(ks_mpmc_init(mem, (size_t)KS_MPMC_CAPACITY_MAX + 1), EINVAL);
    cr_assert_eq(memcmp(mem, copy, bytes), 0, "a refused init changed the memory");
    free(copy);
    free(mem);

    /* Memory not aligned to KS_MPMC_ALIGN. */
    /* (aligned_alloc wants a multiple of the alignment: ASan enforces it) */
    unsigned char *raw = aligned_alloc(KS_MPMC_ALIGN, (ks_mpmc_bytes(4) / KS_MPMC_ALIGN + 3) * KS_MPMC_ALIGN);
    cr_assert_not_null(raw);
    const size_t offs[] = {8, 16, 64, KS_MPMC_ALIGN / 2, KS_MPMC_ALIGN - 8};
    for (unsigned i = 0; i < sizeof offs / sizeof offs[0]; i++)
        cr_assert_eq(ks_mpmc_init((ks_mpmc_t *)(void *)(raw + offs[i]), 4), EINVAL,
                     "init accepted memory at offset %zu from a %d-byte boundary", offs[i],
                     KS_MPMC_ALIGN);
    cr_assert_eq(ks_mpmc_init((ks_mpmc_t *)(void *)(raw + KS_MPMC_ALIGN), 4), 0);
    free(raw);

    cr_assert_eq(ks_mpmc_destroy(NULL), EINVAL);
    void *v = NULL;
    cr_assert_eq(ks_mpmc_try_push(NULL, v), EINVAL);
    cr_assert_eq(ks_mpmc_try_pop(NULL, &v), EINVAL);
    cr_assert_eq(ks_mpmc_capacity(NULL), 0u);
    cr_assert_eq(ks_mpmc_size(NULL), 0u);

    cr_assert_eq(ks_mpmc_create(&q, 4), 0);
    cr_assert_neq(q, sentinel);
    cr_assert_not_null(q);
    cr_assert_eq((uintptr_t)q % KS_MPMC_ALIGN, 0u, "create returned a misaligned ring");
    cr_assert_eq(ks_mpmc_try_pop(q, NULL), EINVAL);
    cr_assert_eq(ks_mpmc_try_push(q, (void *)7), 0);
    cr_assert_eq(ks_mpmc_try_pop(q, NULL), EINVAL, "NULL out pointer with an item there");
    cr_assert_eq(ks_mpmc_size(q), 1u, "a refused pop took the item");
    cr_assert_eq(ks_mpmc_try_pop(q, &v), 0);
    cr_assert_eq((uintptr_t)v, 7u);
    cr_assert_eq(ks_mpmc_destroy(q), 0);
}

/* A capacity that passes validation but cannot be allocated (16 TiB of cells):
 * ENOMEM, out pointer unchanged (kt_limit_address_space explains how). */
Test(mpmc, unallocatable_capacity_is_enomem, .timeout = 30)
{
    struct rlimit old;
    kt_limit_address_space(&old);
    ks_mpmc_t *sentinel = (ks_mpmc_t *)(uintptr_t)0xdeadbeef, *q = sentinel;
    int e = ks_mpmc_create(&q, (size_t)KS_MPMC_CAPACITY_MAX);
    int e2 = ks_mpmc_create(&q, (size_t)KS_MPMC_CAPACITY_MAX / 2 + 3);
    kt_restore_address_space(&old);
    cr_assert_eq(e, ENOMEM, "create(KS_MPMC_CAPACITY_MAX) returned %d", e);
    cr_assert_eq(e2, ENOMEM, "create(KS_MPMC_CAPACITY_MAX / 2 + 3) returned %d", e2);
    cr_assert_eq(q, sentinel, "a failed create wrote the out pointer");
    /* And allocation works again afterwards. */
    cr_assert_eq(ks_mpmc_create(&q, 3), 0);
    cr_assert_eq(ks_mpmc_destroy(q), 0);
}

/* ---- capacity ---------------------------------------------------------------------- */

Test(mpmc, exactly_capacity_items_fit, .timeout = 60)
{
    const size_t caps[] = {1, 2, 3, 5, 7, 64, 100, 1000, 1024, 4097};
    for (unsigned k = 0; k < sizeof caps / sizeof caps[0]; k++) {
        size_t cap = caps[k];
        ks_mpmc_t *q = NULL;
        cr_assert_eq(ks_mpmc_create(&q, cap), 0, "create(%zu)", cap);
        cr_assert_eq(ks_mpmc_capacity(q), cap, "capacity %zu, asked %zu", ks_mpmc_capacity(q), cap);
        cr_assert_eq(ks_mpmc_size(q), 0u);
        /* Several full rounds, so tickets wrap the cell array repeatedly. */
        for (int round = 0; round < 5; round++)
            fill_and_drain(q, cap, ((uintptr_t)round << 40) | 0x10000u);
        /* Partial fills of every length walk the ring off the cell boundary. */
        uintptr_t next_in = 1, next_out = 1;
        for (size_t r = 0; r < 3 * cap + 7 && r < 3000; r++) {
            size_t n = r % cap + 1;
            for (size_t i = 0; i < n; i++)
                cr_assert_eq(ks_mpmc_try_push(q, (void *)next_in++), 0);
            cr_assert_eq(ks_mpmc_size(q), n);
            if (n == cap)
                cr_assert_eq(ks_mpmc_try_push(q, (void *)0), EAGAIN);
            for (size_t i = 0; i < n; i++) {
                void *v = NULL;
                cr_assert_eq(ks_mpmc_try_pop(q, &v), 0);
                cr_assert_eq((uintptr_t)v, next_out, "cap %zu: got %lu, expected %lu", cap,
                             (unsigned long)(uintptr_t)v, (unsigned long)next_out);
                next_out++;
            }
            void *v = NULL;
            cr_assert_eq(ks_mpmc_try_pop(q, &v), EAGAIN);
        }
        cr_assert_eq(ks_mpmc_destroy(q), 0);
    }
}

Test(mpmc, huge_capacity, .timeout = 60)
{
    const size_t cap = (size_t)1 << 22;
    ks_mpmc_t *q = NULL;
    cr_assert_eq(ks_mpmc_create(&q, cap), 0);
    cr_assert_eq(ks_mpmc_capacity(q), cap);
    fill_and_drain(q, cap, 1);
    cr_assert_eq(ks_mpmc_destroy(q), 0);

    /* A huge non-power-of-two, in caller memory. */
    const size_t cap2 = ((size_t)1 << 22) - 3;
    ks_mpmc_t *m = ring_alloc(cap2);
    cr_assert_eq(ks_mpmc_init(m, cap2), 0);
    cr_assert_eq(ks_mpmc_capacity(m), cap2);
    fill_and_drain(m, cap2, (uintptr_t)1 << 33);
    cr_assert_eq(ks_mpmc_destroy(m), 0);
    free(m); /* destroy must not have freed caller memory (ASan would report a double free) */
}

Test(mpmc, null_and_extreme_items_round_trip, .timeout = 30)
{
    const uintptr_t items[] = {0, 1, UINTPTR_MAX, UINTPTR_MAX - 1, (uintptr_t)1 << 63, 0, 0x8000,
                               (uintptr_t)KS_MPMC_CLOSED | 1};
    const size_t n = sizeof items / sizeof items[0];
    const size_t caps[] = {1, 3, 8, 100};
    for (unsigned k = 0; k < sizeof caps / sizeof caps[0]; k++) {
        ks_mpmc_t *q;
        cr_assert_eq(ks_mpmc_create(&q, caps[k]), 0);
        for (int round = 0; round < 3; round++) {
            size_t in = 0, out = 0;
            while (out < n) {
                while (in < n && ks_mpmc_try_push(q, (void *)items[in]) == 0)
                    in++;
                void *v = (void *)0x5555;
                cr_assert_eq(ks_mpmc_try_pop(q, &v), 0);
                cr_assert_eq((uintptr_t)v, items[out], "cap %zu: item %zu came back as %#lx", caps[k],
                             out, (unsigned long)(uintptr_t)v);
                out++;
            }
            cr_assert_eq(in, n);
            void *v = NULL;
            cr_assert_eq(ks_mpmc_try_pop(q, &v), EAGAIN);
        }
        cr_assert_eq(ks_mpmc_destroy(q), 0);
    }
}

/* ---- EAGAIN versus EBUSY ----------------------------------------------------------------
 * A thread stopped inside an operation is simulated by doing that operation's
 * first half (the ticket CAS) by hand, as the inline code in mpmc.h does. */

Test(mpmc, pop_behind_a_stalled_push_is_ebusy_not_eagain, .timeout = 30)
{
    const size_t caps[] = {1, 3, 4};
    for (unsigned k = 0; k < sizeof caps / sizeof caps[0]; k++) {
        ks_mpmc_t *q;
        cr_assert_eq(ks_mpmc_create(&q, caps[k]), 0);
        /* Move off ticket 0 first. */
        void *v = NULL;
        cr_assert_eq(ks_mpmc_try_push(q, (void *)11), 0);
        cr_assert_eq(ks_mpmc_try_pop(q, &v), 0);
        /* A producer takes ticket t and stops before writing its cell. */
        uint64_t t = __atomic_load_n(&q->tail, __ATOMIC_SEQ_CST);
        cr_assert(__atomic_compare_exchange_n(&q->tail, &t, t + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
        cr_assert_eq(ks_mpmc_try_pop(q, &v), EBUSY, "cap %zu: an unfinished push reads as %d", caps[k],
                     ks_mpmc_try_pop(q, &v));
        /* Later producers are not blocked by it (when there is room). */
        if (caps[k] > 1) {
            cr_assert_eq(ks_mpmc_try_push(q, (void *)22), 0);
            cr_assert_eq(ks_mpmc_try_pop(q, &v), EBUSY, "the oldest item is still being written");
        }
        /* The producer resumes: its item comes out first. */
        ks_mpmc_cell_t *c = ks_mpmc_cell_(q, t);
        c->item = 33;
        __atomic_store_n(&c->seq, 2 * t + 1, __ATOMIC_SEQ_CST);
        cr_assert_eq(ks_mpmc_try_pop(q, &v), 0);
        cr_assert_eq((uintptr_t)v, 33u);
        if (caps[k] > 1) {
            cr_assert_eq(ks_mpmc_try_pop(q, &v), 0);
            cr_assert_eq((uintptr_t)v, 22u);
        }
        cr_assert_eq(ks_mpmc_try_pop(q, &v), EAGAIN);
        fill_and_drain(q, caps[k], 100);
        cr_assert_eq(ks_mpmc_destroy(q), 0);
    }
}

Test(mpmc, push_behind_a_stalled_pop_is_ebusy_not_eagain, .timeout = 30)
{
    const size_t caps[] = {1, 3, 4};
    for (unsigned k = 0; k < sizeof caps / sizeof caps[0]; k++) {
        size_t cap = caps[k];
        ks_mpmc_t *q;
        cr_assert_eq(ks_mpmc_create(&q, cap), 0);
        for (size_t i = 0; i < cap; i++)
            cr_assert_eq(ks_mpmc_try_push(q, (void *)(100 + i)), 0);
        cr_assert_eq(ks_mpmc_try_push(q, (void *)1), EAGAIN, "full");
        /* A consumer takes ticket h and stops before reading its cell. */
        uint64_t h = __atomic_load_n(&q->head, __ATOMIC_SEQ_CST);
        cr_assert(__atomic_compare_exchange_n(&q->head, &h, h + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
        cr_assert_eq(ks_mpmc_try_push(q, (void *)1), EBUSY,
                     "cap %zu: not full, but the free slot is still being read: got %d", cap,
                     ks_mpmc_try_push(q, (void *)1));
        cr_assert_eq(ks_mpmc_size(q), cap - 1);
        /* Other consumers go on. */
        void *v = NULL;
        if (cap > 1) {
            cr_assert_eq(ks_mpmc_try_pop(q, &v), 0);
            cr_assert_eq((uintptr_t)v, 101u);
        }
        /* The consumer resumes. */
        ks_mpmc_cell_t *c = ks_mpmc_cell_(q, h);
        cr_assert_eq(c->item, 100u);
        __atomic_store_n(&c->seq, 2 * (h + cap), __ATOMIC_SEQ_CST);
        cr_assert_eq(ks_mpmc_try_push(q, (void *)200), 0);
        for (size_t i = 2; i < cap; i++) {
            cr_assert_eq(ks_mpmc_try_pop(q, &v), 0);
            cr_assert_eq((uintptr_t)v, 100 + i);
        }
        cr_assert_eq(ks_mpmc_try_pop(q, &v), 0);
        cr_assert_eq((uintptr_t)v, 200u);
        cr_assert_eq(ks_mpmc_try_pop(q, &v), EAGAIN);
        cr_assert_eq(ks_mpmc_destroy(q), 0);
    }
}

/* ---- many producers and consumers: FIFO per producer, each item exactly once ---------- */

#define MP_MAX_PRODUCERS 64

struct mp_run {
    ks_mpmc_t *q;
    int producers, consumers;
    uint64_t per_producer;
    uint64_t *seen; /* bitmap, producers * per_producer bits; atomic fetch_or */
    kt_gate_t gate;
};

struct mp_thread {
    struct mp_run *r;
    int id, producer;
    uint64_t count, sum;          /* items moved and their sum (mod 2^64) */
    uint64_t dups, fifo, bad;     /* violations */
    uint64_t eagain, ebusy, other; /* retries, and unexpected errors */
};

static uintptr_t mp_item(int producer, uint64_t seq)
{
    return ((uintptr_t)(producer + 1) << 40) | (uintptr_t)seq;
}

static void *mp_producer(void *p)
{
    struct mp_thread *a = p;
    struct mp_run *r = a->r;
    kt_gate_pass(&r->gate);
    for (uint64_t s = 0; s < r->per_producer; s++) {
        uintptr_t it = mp_item(a->id, s);
        int e;
        while ((e = ks_mpmc_try_push(r->q, (void *)it)) != 0) {
            if (e == EAGAIN)
                a->eagain++;
            else if (e == EBUSY)
                a->ebusy++;
            else {
                a->other++;
                return NULL;
            }
            sched_yield();
        }
        a->count++;
        a->sum += it;
    }
    return NULL;
}

static void *mp_consumer(void *p)
{
    struct mp_thread *a = p;
    struct mp_run *r = a->r;
    int64_t last[MP_MAX_PRODUCERS];
    for (int i = 0; i < MP_MAX_PRODUCERS; i++)
        last[i] = -1;
    uint64_t quota = r->per_producer * (uint64_t)r->producers / (uint64_t)r->consumers;
    kt_gate_pass(&r->gate);
    for (uint64_t k = 0; k < quota; k++) {
        void *v = NULL;
        int e;
        while ((e = ks_mpmc_try_pop(r->q, &v)) != 0) {
            if (e == EAGAIN)
                a->eagain++;
            else if (e == EBUSY)
                a->ebusy++;
            else {
                a->other++;
                return NULL;
            }
            sched_yield();
        }
        uintptr_t it = (uintptr_t)v;
        uint64_t prod = (it >> 40) - 1, seq = it & (((uintptr_t)1 << 40) - 1);
        if ((it >> 40) == 0 || prod >= (uint64_t)r->producers || seq >= r->per_producer) {
            a->bad++;
            continue;
        }
        uint64_t bit = prod * r->per_producer + seq;
        uint64_t old = __atomic_fetch_or(&r->seen[bit / 64], 1ull << (bit % 64), __ATOMIC_SEQ_CST);
        if (old & (1ull << (bit % 64)))
            a->dups++;
        if ((int64_t)seq <= last[prod])
            a->fifo++;
        last[prod] = (int64_t)seq;
        a->count++;
        a->sum += it;
    }
    return NULL;
}

static void mp_run(size_t cap, int producers, int consumers, uint64_t per_producer)
{
    cr_assert_leq(producers, MP_MAX_PRODUCERS);
    cr_assert_leq(producers + consumers, KT_MAX_THREADS);
    cr_assert_eq(per_producer * (uint64_t)producers % (uint64_t)consumers, 0u);
    struct mp_run r = {.producers = producers, .consumers = consumers, .per_producer = per_producer};
    cr_assert_eq(ks_mpmc_create(&r.q, cap), 0);
    uint64_t total = per_producer * (uint64_t)producers;
    r.seen = calloc((size_t)(total + 63) / 64, sizeof(uint64_t));
    cr_assert_not_null(r.seen);
    kt_gate_init(&r.gate, (unsigned)(producers + consumers));
    struct mp_thread *a = calloc((size_t)(producers + consumers), sizeof *a);
    cr_assert_not_null(a);
    pthread_t t[KT_MAX_THREADS];
    int64_t t0 = ks_now();
    /* Interleave the spawns, so that neither side is all started first. */
    for (int i = 0, pi = 0, ci = 0; i < producers + consumers; i++) {
        int prod = (i % 2 == 0 && pi < producers) || ci >= consumers;
        a[i].r = &r;
        a[i].id = prod ? pi++ : ci++;
        a[i].producer = prod;
        kt_spawn(&t[i], prod ? mp_producer : mp_consumer, &a[i]);
    }
    for (int i = 0; i < producers + consumers; i++)
        kt_join(t[i]);
    int64_t took = ks_now() - t0;
    uint64_t pcount = 0, psum = 0, ccount = 0, csum = 0, eagain = 0, ebusy = 0;
    for (int i = 0; i < producers + consumers; i++) {
        cr_assert_eq(a[i].other, 0u, "thread %d: unexpected error", i);
        eagain += a[i].eagain;
        ebusy += a[i].ebusy;
        if (a[i].producer) {
            pcount += a[i].count;
            psum += a[i].sum;
        } else {
            cr_assert_eq(a[i].bad, 0u, "consumer %d popped %llu items nobody pushed", a[i].id,
                         (unsigned long long)a[i].bad);
            cr_assert_eq(a[i].dups, 0u, "consumer %d popped %llu duplicates", a[i].id,
                         (unsigned long long)a[i].dups);
            cr_assert_eq(a[i].fifo, 0u, "consumer %d saw %llu items out of their producer's order",
                         a[i].id, (unsigned long long)a[i].fifo);
            ccount += a[i].count;
            csum += a[i].sum;
        }
    }
    cr_assert_eq(pcount, total);
    cr_assert_eq(ccount, total, "pushed %llu, popped %llu", (unsigned long long)total,
                 (unsigned long long)ccount);
    cr_assert_eq(csum, psum, "checksum: pushed %#llx, popped %#llx", (unsigned long long)psum,
                 (unsigned long long)csum);
    uint64_t set = 0;
    for (uint64_t w = 0; w < (total + 63) / 64; w++)
        set += (uint64_t)__builtin_popcountll(r.seen[w]);
    cr_assert_eq(set, total, "%llu distinct items seen of %llu", (unsigned long long)set,
                 (unsigned long long)total);
    void *v = NULL;
    cr_assert_eq(ks_mpmc_try_pop(r.q, &v), EAGAIN, "items left over");
    cr_assert_eq(ks_mpmc_size(r.q), 0u);
    cr_log_info("cap %zu, %d producers x %d consumers, %llu items: %lld ms, %llu EAGAIN, %llu EBUSY", cap,
                producers, consumers, (unsigned long long)total, (long long)(took / KT_MS),
                (unsigned long long)eagain, (unsigned long long)ebusy);
    cr_assert_eq(ks_mpmc_destroy(r.q), 0);
    kt_gate_destroy(&r.gate);
    free(a);
    free(r.seen);
}

Test(mpmc, two_by_two_exactly_once_and_fifo, .timeout = 60)
{
    mp_run(1, 2, 2, 50000 / KT_SLOW);
    mp_run(2, 2, 2, 50000 / KT_SLOW);
    mp_run(3, 2, 2, 50000 / KT_SLOW);
    mp_run(1000, 2, 2, 200000 / KT_SLOW);
    mp_run(64, 1, 3, 90000 / KT_SLOW);
    mp_run(5, 3, 1, 30000 / KT_SLOW);
}

Test(mpmc, oversubscribed_64_threads_exactly_once_and_fifo, .timeout = 120)
{
    mp_run(1, 32, 32, 2000 / KT_SLOW);
    mp_run(3, 32, 32, 3000 / KT_SLOW);
    mp_run(64, 32, 32, 6000 / KT_SLOW);
    mp_run(1000, 48, 16, 6000 / KT_SLOW);
}

/* ---- release/acquire: what the producer wrote before the push is seen after the pop --- */

#define RA_ITEMS (100000 / KT_SLOW)

struct ra_payload {
    uint64_t a, b, c, d;
};

struct ra_run {
    ks_mpmc_t *q;
    struct ra_payload *pl;
    uint64_t bad[2];
    kt_gate_t gate;
};

struct ra_arg {
    struct ra_run *r;
    int id;
};

static void *ra_producer(void *p)
{
    struct ra_arg *a = p;
    struct ra_run *r = a->r;
    kt_gate_pass(&r->gate);
    for (uint64_t i = (uint64_t)a->id; i < RA_ITEMS; i += 2) {
        struct ra_payload *x = &r->pl[i];
        x->a = i; /* plain stores, published by the push's release */
        x->b = ~i;
        x->c = i * 2654435761u;
        x->d = 0x600dULL << 48 | i;
        while (ks_mpmc_try_push(r->q, x) != 0)
            sched_yield();
    }
    return NULL;
}

static void *ra_consumer(void *p)
{
    struct ra_arg *a = p;
    struct ra_run *r = a->r;
    kt_gate_pass(&r->gate);
    for (uint64_t k = 0; k < RA_ITEMS / 2; k++) {
        void *v = NULL;
        while (ks_mpmc_try_pop(r->q, &v) != 0)
            sched_yield();
        const struct ra_payload *x = v;
        uint64_t i = (uint64_t)(x - r->pl);
        if (x->a != i || x->b != ~i || x->c != i * 2654435761u || x->d != (0x600dULL << 48 | i))
            r->bad[a->id]++;
    }
    return NULL;
}

Test(mpmc, push_releases_what_the_producer_wrote, .timeout = 60)
{
    _Static_assert(RA_ITEMS % 2 == 0, "two producers and two consumers split the items");
    struct ra_run r = {0};
    cr_assert_eq(ks_mpmc_create(&r.q, 8), 0);
    r.pl = calloc(RA_ITEMS, sizeof *r.pl);
    cr_assert_not_null(r.pl);
    kt_gate_init(&r.gate, 4);
    struct ra_arg args[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct ra_arg){&r, i / 2};
        kt_spawn(&t[i], i % 2 ? ra_consumer : ra_producer, &args[i]);
    }
    for (int i = 0; i < 4; i++)
        kt_join(t[i]);
    cr_assert_eq(r.bad[0] + r.bad[1], 0u, "%llu payloads read incomplete after the pop",
                 (unsigned long long)(r.bad[0] + r.bad[1]));
    cr_assert_eq(ks_mpmc_size(r.q), 0u);
    cr_assert_eq(ks_mpmc_destroy(r.q), 0);
    kt_gate_destroy(&r.gate);
    free(r.pl);
}

/* ---- caller memory: one ring, two mappings, two processes ----------------------------- */

Test(mpmc, ring_works_through_two_mappings_at_different_addresses, .timeout = 30)
{
    const size_t cap = 5;
    size_t bytes = ks_mpmc_bytes(cap);
    int fd = memfd_create("ks_mpmc_test", MFD_CLOEXEC);
    cr_assert_geq(fd, 0, "memfd_create: %s", strerror(errno));
    cr_assert_eq(ftruncate(fd, (off_t)bytes), 0);
    void *m1 = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    void *m2 = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    cr_assert_neq(m1, MAP_FAILED);
    cr_assert_neq(m2, MAP_FAILED);
    cr_assert_neq(m1, m2);
    ks_mpmc_t *a = m1, *b = m2;
    cr_assert_eq(ks_mpmc_init(a, cap), 0);
    cr_assert_eq(ks_mpmc_capacity(b), cap);
    for (uintptr_t i = 0; i < 3000; i++) {
        ks_mpmc_t *in = (i % 3) ? a : b, *out = (i % 3) ? b : a;
        cr_assert_eq(ks_mpmc_try_push(in, (void *)(i * 7)), 0);
        if (i % 4 == 3) {
            for (int k = 0; k < 4; k++) {
                void *v = NULL;
                cr_assert_eq(ks_mpmc_try_pop(out, &v), 0);
                cr_assert_eq((uintptr_t)v, (i - 3 + (uintptr_t)k) * 7);
            }
        }
    }
    cr_assert_eq(ks_mpmc_size(a), 0u);
    cr_assert_eq(ks_mpmc_destroy(a), 0);
    munmap(m1, bytes);
    munmap(m2, bytes);
    close(fd);
}

#define SH_ITEMS 100000

struct sh_ring {
    uint64_t child_sum;
    _Alignas(KS_MPMC_ALIGN) unsigned char mem[];
};

static int sh_child_pushes(void *p)
{
    struct sh_ring *s = p;
    ks_mpmc_t *q = (ks_mpmc_t *)(void *)s->mem;
    uint64_t sum = 0;
    int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
    for (uintptr_t i = 1; i <= SH_ITEMS; i++) {
        int e;
        while ((e = ks_mpmc_try_push(q, (void *)i)) != 0) {
            if ((e != EAGAIN && e != EBUSY) || ks_now() > end)
                return 1;
            sched_yield();
        }
        sum += i;
    }
    s->child_sum = sum;
    return 0;
}

Test(mpmc, process_shared_child_pushes_parent_pops, .timeout = 60)
{
    const size_t cap = 7;
    size_t size = sizeof(struct sh_ring) + ks_mpmc_bytes(cap);
    struct sh_ring *s = kt_shared_alloc(size);
    ks_mpmc_t *q = (ks_mpmc_t *)(void *)s->mem;
    cr_assert_eq((uintptr_t)q % KS_MPMC_ALIGN, 0u);
    cr_assert_eq(ks_mpmc_init(q, cap), 0);
    pid_t pid = kt_fork(sh_child_pushes, s);
    uint64_t sum = 0;
    int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
    for (uintptr_t i = 1; i <= SH_ITEMS; i++) {
        void *v = NULL;
        int e;
        while ((e = ks_mpmc_try_pop(q, &v)) != 0) {
            cr_assert(e == EAGAIN || e == EBUSY, "pop returned %d", e);
            cr_assert_lt(ks_now(), end, "stuck at item %lu", (unsigned long)i);
            sched_yield();
        }
        cr_assert_eq((uintptr_t)v, i, "item %lu arrived as %lu", (unsigned long)i, (unsigned long)(uintptr_t)v);
        sum += (uintptr_t)v;
    }
    kt_wait_child(pid);
    cr_assert_eq(sum, s->child_sum);
    void *v = NULL;
    cr_assert_eq(ks_mpmc_try_pop(q, &v), EAGAIN);
    cr_assert_eq(ks_mpmc_destroy(q), 0);
    kt_shared_free(s, size);
}

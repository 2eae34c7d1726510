/* tests/test_pool.c - ks_pool: API contract (duplicates, NULL, unknown
 * flags, negative deadlines, allocation failure), borrow/return semantics
 * (FIFO of returns, a value not from the pool is EINVAL, a second return
 * EPERM), a timed-out borrow takes nothing and leaves *res alone, a blocked
 * borrower is handed the returned resource, destroy with a resource out is
 * EBUSY, exclusivity with 16-64 threads and short deadlines (scenario S12),
 * and a process-shared pool across fork(). */
#include "helpers.h"

#include <ksync/pool.h>

#include <sys/resource.h>

/* ---- helpers ----------------------------------------------------------------------- */

static ks_pool_t *make(void *const *res, size_t n, unsigned flags)
{
    ks_pool_t *p = NULL;
    int e = ks_pool_create(&p, res, n, flags);
    cr_assert_eq(e, 0, "create(n %zu, flags 0x%x) returned %d", n, flags, e);
    cr_assert_not_null(p);
    return p;
}

#define SENTINEL ((void *)(uintptr_t)0x5e5e5e5e)

/* ---- API contract -------------------------------------------------------------------- */

Test(pool, bad_arguments_are_einval, .timeout = 30)
{
    void *res[4] = {(void *)1, (void *)2, (void *)3, (void *)4};
    ks_pool_t *sentinel = (ks_pool_t *)(uintptr_t)0xdeadbeef, *p = sentinel;
    cr_assert_eq(ks_pool_create(NULL, res, 4, 0), EINVAL);
    cr_assert_eq(ks_pool_create(&p, NULL, 4, 0), EINVAL);
    cr_assert_eq(ks_pool_create(&p, res, 0, 0), EINVAL);
    cr_assert_eq(ks_pool_create(&p, res, (size_t)KS_MPMC_CAPACITY_MAX + 1, 0), EINVAL);
    cr_assert_eq(ks_pool_create(&p, res, SIZE_MAX, 0), EINVAL);
    const unsigned bad_flags[] = {2u, 4u, 0x80u, 0x80000000u, ~0u, KS_SHARED | 2u};
    for (unsigned i = 0; i < sizeof bad_flags / sizeof bad_flags[0]; i++)
        cr_assert_eq(ks_pool_create(&p, res, 4, bad_flags[i]), EINVAL, "flags 0x%x accepted", bad_flags[i]);
    cr_assert_eq(p, sentinel, "a refused create wrote the out pointer");

    cr_assert_eq(ks_pool_bytes(0), 0u);
    cr_assert_eq(ks_pool_bytes((size_t)KS_MPMC_CAPACITY_MAX + 1), 0u);
    cr_assert_gt(ks_pool_bytes(1), 0u);
    cr_assert_geq(ks_pool_bytes(1000), ks_queue_bytes(1000) + 1000 * sizeof(void *));

    /* NULL everywhere. */
    void *r = SENTINEL;
    cr_assert_eq(ks_pool_destroy(NULL), EINVAL);
    cr_assert_eq(ks_pool_borrow(NULL, 0, &r), EINVAL);
    cr_assert_eq(ks_pool_borrow(NULL, KS_FOREVER, &r), EINVAL);
    cr_assert_eq(ks_pool_return(NULL, res[0]), EINVAL);
    cr_assert_eq(ks_pool_return(NULL, NULL), EINVAL);
    cr_assert_eq(ks_pool_available(NULL), 0u);
    cr_assert_eq(ks_pool_size(NULL), 0u);
    cr_assert_eq(r, SENTINEL);

    p = make(res, 4, 0);
    cr_assert_eq(ks_pool_borrow(p, 0, NULL), EINVAL);
    cr_assert_eq(ks_pool_borrow(p, KS_FOREVER, NULL), EINVAL);
    cr_assert_eq(ks_pool_available(p), 4u, "a refused borrow took a resource");
    /* Negative deadlines: EINVAL, nothing taken, *res untouched. */
    const int64_t bad[] = {-1, -KS_NSEC_PER_SEC, INT64_MIN, ks_deadline_after(-1)};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(ks_pool_borrow(p, bad[i], &r), EINVAL, "deadline %lld", (long long)bad[i]);
        cr_assert_eq(r, SENTINEL);
        cr_assert_eq(ks_pool_available(p), 4u);
    }
    cr_assert_eq(ks_pool_destroy(p), 0);
}

Test(pool, duplicates_are_einval, .timeout = 30)
{
    int x;
    void *cases[][5] = {
        {(void *)1, (void *)1, (void *)2, (void *)3, (void *)4}, /* adjacent */
        {(void *)1, (void *)2, (void *)3, (void *)4, (void *)1}, /* first and last */
        {NULL, (void *)2, NULL, (void *)4, (void *)5},           /* two NULLs */
        {&x, &x, &x, &x, &x},                                    /* all the same */
        {(void *)UINTPTR_MAX, (void *)0, (void *)1, (void *)UINTPTR_MAX, (void *)7},
    };
    for (unsigned c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int f = 0; f < 2; f++) {
            ks_pool_t *sentinel = (ks_pool_t *)(uintptr_t)0xdeadbeef, *p = sentinel;
            cr_assert_eq(ks_pool_create(&p, cases[c], 5, f ? KS_SHARED : 0), EINVAL, "case %u accepted", c);
            cr_assert_eq(p, sentinel);
        }
    void *two[2] = {(void *)9, (void *)9};
    ks_pool_t *p = NULL;
    cr_assert_eq(ks_pool_create(&p, two, 2, 0), EINVAL);
    cr_assert_eq(ks_pool_create(&p, two, 1, 0), 0, "one resource cannot be a duplicate");
    cr_assert_eq(ks_pool_destroy(p), 0);

    /* A large set with a single duplicate far apart. */
    enum { N = 1000 };
    void **big = malloc(N * sizeof *big);
    cr_assert_not_null(big);
    for (uintptr_t i = 0; i < N; i++)
        big[i] = (void *)(i * 7919 % 100003 + 1); /* distinct */
    p = make(big, N, 0);
    cr_assert_eq(ks_pool_destroy(p), 0);
    big[N - 1] = big[0];
    p = (ks_pool_t *)(uintptr_t)0xdeadbeef;
    cr_assert_eq(ks_pool_create(&p, big, N, 0), EINVAL);
    cr_assert_eq(p, (ks_pool_t *)(uintptr_t)0xdeadbeef);
    free(big);
}

Test(pool, init_refusals_leave_memory_alone, .timeout = 30)
{
    void *res[3] = {(void *)10, (void *)20, (void *)30};
    void *dup[3] = {(void *)10, (void *)20, (void *)10};
    size_t bytes = (ks_pool_bytes(3) + KS_MPMC_ALIGN - 1) / KS_MPMC_ALIGN * KS_MPMC_ALIGN;
    unsigned char *mem = aligned_alloc(KS_MPMC_ALIGN, bytes + KS_MPMC_ALIGN);
    unsigned char *copy = malloc(bytes + KS_MPMC_ALIGN);
    cr_assert_not_null(mem);
    cr_assert_not_null(copy);
    memset(mem, 0x5a, bytes + KS_MPMC_ALIGN);
    memcpy(copy, mem, bytes + KS_MPMC_ALIGN);
    ks_pool_t *p = (ks_pool_t *)(void *)mem;
    cr_assert_eq(ks_pool_init(NULL, res, 3, 0), EINVAL);
    cr_assert_eq(ks_pool_init(p, NULL, 3, 0), EINVAL);
    cr_assert_eq(ks_pool_init(p, res, 0, 0), EINVAL);
    cr_assert_eq(ks_pool_init(p, res, (size_t)KS_MPMC_CAPACITY_MAX + 1, 0), EINVAL);
    cr_assert_eq(ks_pool_init(p, res, 3, 2u), EINVAL);
    cr_assert_eq(ks_pool_init(p, dup, 3, 0), EINVAL);
    cr_assert_eq(ks_pool_init(p, dup, 3, KS_SHARED), EINVAL);
    cr_assert_eq(ks_pool_init((ks_pool_t *)(void *)(mem + 64), res, 3, 0), EINVAL, "misaligned memory");
    cr_assert_eq(memcmp(mem, copy, bytes + KS_MPMC_ALIGN), 0, "a refused init changed the memory");
    /* And a good one works, in caller memory that destroy does not free. */
    cr_assert_eq(ks_pool_init(p, res, 3, 0), 0);
    cr_assert_eq(ks_pool_size(p), 3u);
    cr_assert_eq(ks_pool_available(p), 3u);
    void *r;
    cr_assert_eq(ks_pool_borrow(p, 0, &r), 0);
    cr_assert_eq(ks_pool_return(p, r), 0);
    cr_assert_eq(ks_pool_destroy(p), 0);
    free(mem); /* ASan would report a double free had destroy freed it */
    free(copy);
}

/* A count that passes validation but cannot be allocated: ENOMEM, out
 * pointer unchanged.  The resources sit in front of an inaccessible page, so
 * a create that read all 2^40 of them before allocating would crash here. */
Test(pool, unallocatable_size_is_enomem, .timeout = 30)
{
    long pg = sysconf(_SC_PAGESIZE);
    void **res = mmap(NULL, 2 * (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq((void *)res, MAP_FAILED);
    for (long i = 0; i < pg / (long)sizeof(void *); i++)
        res[i] = (void *)(uintptr_t)(i + 1);
    cr_assert_eq(mprotect((char *)res + pg, (size_t)pg, PROT_NONE), 0);

    struct rlimit old;
    kt_limit_address_space(&old);
    ks_pool_t *sentinel = (ks_pool_t *)(uintptr_t)0xdeadbeef, *p = sentinel;
    int e = ks_pool_create(&p, res, (size_t)KS_MPMC_CAPACITY_MAX, 0);
    kt_restore_address_space(&old);
    cr_assert_eq(e, ENOMEM, "create(KS_MPMC_CAPACITY_MAX resources) returned %d", e);
    cr_assert_eq(p, sentinel, "a failed create wrote the out pointer");
    p = make(res, 8, 0);
    cr_assert_eq(ks_pool_destroy(p), 0);
    munmap(res, 2 * (size_t)pg);
}

/* ---- borrow / return ----------------------------------------------------------------------- */

Test(pool, borrow_and_return_semantics, .timeout = 30)
{
    static int obj;
    void *res[4] = {NULL, &obj, (void *)3, (void *)UINTPTR_MAX};
    for (int f = 0; f < 2; f++) {
        ks_pool_t *p = make(res, 4, f ? KS_SHARED : 0);
        cr_assert_eq(ks_pool_size(p), 4u);
        cr_assert_eq(ks_pool_available(p), 4u);
        void *got[4];
        unsigned seen = 0;
        for (int i = 0; i < 4; i++) {
            got[i] = SENTINEL;
            cr_assert_eq(ks_pool_borrow(p, i % 2 ? 0 : ks_deadline_after(KS_NSEC_PER_SEC), &got[i]), 0);
            int k = -1;
            for (int j = 0; j < 4; j++)
                if (got[i] == res[j])
                    k = j;
            cr_assert_geq(k, 0, "borrow returned %p, not one of the pool's", got[i]);
            cr_assert_eq(seen & (1u << k), 0u, "resource %d handed out twice", k);
            seen |= 1u << k;
            cr_assert_eq(ks_pool_available(p), (size_t)(3 - i));
        }
        /* None left: a try times out, takes nothing, writes nothing. */
        void *r = SENTINEL;
        cr_assert_eq(ks_pool_borrow(p, 0, &r), ETIMEDOUT);
        cr_assert_eq(ks_pool_borrow(p, ks_now(), &r), ETIMEDOUT);
        cr_assert_eq(r, SENTINEL, "a timed-out borrow wrote *res");
        cr_assert_eq(ks_pool_available(p), 0u);
        /* Not from the pool: EINVAL, nothing changes. */
        const uintptr_t strangers[] = {1, 2, 4, UINTPTR_MAX - 1, (uintptr_t)&obj + 1, (uintptr_t)SENTINEL};
        for (unsigned i = 0; i < sizeof strangers / sizeof strangers[0]; i++)
            cr_assert_eq(ks_pool_return(p, (void *)strangers[i]), EINVAL, "returned a stranger %#lx",
                         (unsigned long)strangers[i]);
        cr_assert_eq(ks_pool_available(p), 0u);
        /* Returns in the order c, a, d, b come back out in that order (FIFO). */
        const int order[4] = {2, 0, 3, 1};
        for (int i = 0; i < 4; i++) {
            cr_assert_eq(ks_pool_return(p, got[order[i]]), 0);
            cr_assert_eq(ks_pool_return(p, got[order[i]]), EPERM, "a second return of %p", got[order[i]]);
            cr_assert_eq(ks_pool_available(p), (size_t)(i + 1), "a refused return changed the count");
        }
        for (int i = 0; i < 4; i++) {
            cr_assert_eq(ks_pool_borrow(p, 0, &r), 0);
            cr_assert_eq(r, got[order[i]], "borrow %d: %p, expected the returned-%d-th %p", i, r, i,
                         got[order[i]]);
        }
        for (int i = 0; i < 4; i++)
            cr_assert_eq(ks_pool_return(p, res[i]), 0);
        /* Never borrowed since its return: EPERM (it is the pool's, but not out). */
        for (int i = 0; i < 4; i++)
            cr_assert_eq(ks_pool_return(p, res[i]), EPERM);
        cr_assert_eq(ks_pool_available(p), 4u);
        cr_assert_eq(ks_pool_destroy(p), 0);
    }
}

Test(pool, one_and_many_resources, .timeout = 30)
{
    /* One resource. */
    void *one[1] = {NULL};
    ks_pool_t *p = make(one, 1, 0);
    for (int i = 0; i < 1000; i++) {
        void *r = SENTINEL;
        cr_assert_eq(ks_pool_borrow(p, 0, &r), 0);
        cr_assert_null(r);
        cr_assert_eq(ks_pool_borrow(p, 0, &r), ETIMEDOUT);
        cr_assert_eq(ks_pool_return(p, NULL), 0);
        cr_assert_eq(ks_pool_return(p, NULL), EPERM);
    }
    cr_assert_eq(ks_pool_destroy(p), 0);

    /* Many, not a power of two, given out of order: every one is handed out
     * exactly once, and return finds each (values between them are strangers). */
    enum { N = 4099 };
    void **res = malloc(N * sizeof *res);
    void **got = malloc(N * sizeof *got);
    uint8_t *seen = calloc(N, 1);
    cr_assert(res && got && seen);
    for (uintptr_t i = 0; i < N; i++)
        res[i] = (void *)(((i * 2654435761u) % N) * 2 + 2); /* even values 2 .. 2N, shuffled */
    p = make(res, N, KS_SHARED);
    cr_assert_eq(ks_pool_size(p), (size_t)N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(ks_pool_borrow(p, 0, &got[i]), 0);
        uintptr_t v = (uintptr_t)got[i];
        cr_assert(v >= 2 && v <= 2 * N && v % 2 == 0, "borrowed %#lx", (unsigned long)v);
        cr_assert_eq(seen[v / 2 - 1], 0, "%#lx handed out twice", (unsigned long)v);
        seen[v / 2 - 1] = 1;
    }
    void *r = SENTINEL;
    cr_assert_eq(ks_pool_borrow(p, 0, &r), ETIMEDOUT);
    cr_assert_eq(ks_pool_available(p), 0u);
    for (uintptr_t v = 1; v <= 2 * N + 1; v += 2)
        cr_assert_eq(ks_pool_return(p, (void *)v), EINVAL, "the stranger %#lx was accepted", (unsigned long)v);
    cr_assert_eq(ks_pool_return(p, (void *)0), EINVAL);
    for (int i = N - 1; i >= 0; i--)
        cr_assert_eq(ks_pool_return(p, got[i]), 0);
    cr_assert_eq(ks_pool_available(p), (size_t)N);
    cr_assert_eq(ks_pool_destroy(p), 0);
    free(res);
    free(got);
    free(seen);
}

/* ---- deadlines and blocking ------------------------------------------------------------ */

Test(pool, timed_out_borrow_takes_nothing_not_early_not_late, .timeout = 30)
{
    void *res[2] = {(void *)100, (void *)200};
    const int64_t rel[] = {1 * KT_MS, 20 * KT_MS, 60 * KT_MS};
    for (int f = 0; f < 2; f++) {
        ks_pool_t *p = make(res, 2, f ? KS_SHARED : 0);
        void *a, *b;
        cr_assert_eq(ks_pool_borrow(p, 0, &a), 0);
        cr_assert_eq(ks_pool_borrow(p, 0, &b), 0);
        for (unsigned k = 0; k < sizeof rel / sizeof rel[0]; k++) {
            void *r = SENTINEL;
            int64_t d = ks_deadline_after(rel[k]);
            int e = ks_pool_borrow(p, d, &r);
            int64_t now = ks_now();
            cr_assert_eq(e, ETIMEDOUT, "borrow returned %d", e);
            cr_assert_geq(now, d, "timed out %lld ns early", (long long)(d - now));
            cr_assert_lt(now, d + KT_LATE_NS, "%lld ms late", (long long)((now - d) / KT_MS));
            cr_assert_eq(r, SENTINEL, "a timed-out borrow wrote *res");
            cr_assert_eq(ks_pool_available(p), 0u, "a timed-out borrow changed the count");
        }
        /* Nothing leaked (S12's seed returned a connection it never got). */
        cr_assert_eq(ks_pool_return(p, a), 0);
        cr_assert_eq(ks_pool_available(p), 1u);
        cr_assert_eq(ks_pool_return(p, b), 0);
        cr_assert_eq(ks_pool_available(p), 2u);
        cr_assert_eq(ks_pool_destroy(p), 0);
    }
}

struct borrower {
    ks_pool_t *p;
    int64_t deadline;
    pid_t tid;
    int ret, done;
    void *got;
    int64_t t1;
};

static void *borrower_main(void *arg)
{
    struct borrower *b = arg;
    __atomic_store_n(&b->tid, kt_gettid(), __ATOMIC_RELEASE); /* pairs with borrower_tid's acquire */
    b->ret = ks_pool_borrow(b->p, b->deadline, &b->got);
    b->t1 = ks_now();
    __atomic_store_n(&b->done, 1, __ATOMIC_RELEASE); /* pairs with the main thread's acquire */
    return NULL;
}

static pid_t borrower_tid(struct borrower *b)
{
    pid_t t;
    while (!(t = __atomic_load_n(&b->tid, __ATOMIC_ACQUIRE))) /* pairs with borrower_main's release */
        sched_yield();
    return t;
}

Test(pool, blocked_borrower_gets_the_returned_resource, .timeout = 30)
{
    void *res[3] = {(void *)11, (void *)22, (void *)33};
    for (int f = 0; f < 2; f++) {
        ks_pool_t *p = make(res, 3, f ? KS_SHARED : 0);
        void *r[3];
        for (int i = 0; i < 3; i++)
            cr_assert_eq(ks_pool_borrow(p, 0, &r[i]), 0);
        struct borrower b = {.p = p, .deadline = ks_deadline_after(20 * KS_NSEC_PER_SEC), .ret = -1, .got = SENTINEL};
        pthread_t t;
        kt_spawn(&t, borrower_main, &b);
        cr_assert(kt_wait_in_futex(borrower_tid(&b), 10 * KS_NSEC_PER_SEC), "the borrower never slept");
        cr_assert_eq(__atomic_load_n(&b.done, __ATOMIC_ACQUIRE), 0, "borrow returned %d with none free", b.ret);
        /* Destroy now: resources out and a borrower waiting. */
        cr_assert_eq(ks_pool_destroy(p), EBUSY);
        int64_t t_ret = ks_now();
        cr_assert_eq(ks_pool_return(p, r[1]), 0);
        cr_assert(kt_join_by(t, ks_deadline_after(10 * KS_NSEC_PER_SEC)), "the return did not wake the borrower");
        cr_assert_eq(b.ret, 0);
        cr_assert_eq(b.got, r[1], "the borrower got %p, not the one returned (%p)", b.got, r[1]);
        cr_assert_geq(b.t1, t_ret);
        cr_assert_eq(ks_pool_available(p), 0u);
        cr_assert_eq(ks_pool_return(p, r[0]), 0);
        cr_assert_eq(ks_pool_return(p, b.got), 0);
        cr_assert_eq(ks_pool_destroy(p), EBUSY, "one resource still out");
        cr_assert_eq(ks_pool_return(p, r[2]), 0);
        cr_assert_eq(ks_pool_destroy(p), 0);
    }
}

Test(pool, destroy_with_a_resource_out_is_ebusy, .timeout = 30)
{
    void *res[3] = {(void *)1, (void *)2, (void *)3};
    ks_pool_t *p = make(res, 3, 0);
    void *r;
    cr_assert_eq(ks_pool_borrow(p, 0, &r), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ks_pool_destroy(p), EBUSY);
    /* Nothing was freed: the pool still works (ASan checks the memory). */
    cr_assert_eq(ks_pool_size(p), 3u);
    cr_assert_eq(ks_pool_available(p), 2u);
    void *r2;
    cr_assert_eq(ks_pool_borrow(p, 0, &r2), 0);
    cr_assert_neq(r2, r);
    cr_assert_eq(ks_pool_return(p, r), 0);
    cr_assert_eq(ks_pool_destroy(p), EBUSY);
    cr_assert_eq(ks_pool_return(p, r2), 0);
    cr_assert_eq(ks_pool_destroy(p), 0);
}

/* Issue 17, item 1: a borrower woken by the return of the last resource is
 * no longer counted as a sleeper, and before it has taken the index out of
 * the queue the pool looks idle (every resource free, nobody asleep); destroy
 * then returned 0 and the borrower went on to write the slot's "out" flag in
 * memory the caller had freed.  Destroy right after that return must answer
 * EBUSY: the borrower is about to hold a resource.  The pool lives in caller
 * memory (init), so a wrong 0 here is counted instead of freeing anything;
 * before the fix it came back in nearly every round. */
Test(pool, destroy_right_after_waking_a_borrower_is_ebusy, .timeout = 60)
{
    void *res[1] = {(void *)7};
    size_t bytes = ks_pool_bytes(1);
    ks_pool_t *p = aligned_alloc(KS_MPMC_ALIGN, (bytes + KS_MPMC_ALIGN - 1) / KS_MPMC_ALIGN * KS_MPMC_ALIGN);
    cr_assert_not_null(p);
    const int rounds = 40;
    int wrong = 0, first_wrong = -1;
    for (int round = 0; round < rounds; round++) {
        cr_assert_eq(ks_pool_init(p, res, 1, round % 2 ? KS_SHARED : 0), 0);
        void *r;
        cr_assert_eq(ks_pool_borrow(p, 0, &r), 0);
        struct borrower b = {.p = p, .deadline = ks_deadline_after(20 * KS_NSEC_PER_SEC), .ret = -1, .got = SENTINEL};
        pthread_t t;
        kt_spawn(&t, borrower_main, &b);
        cr_assert(kt_wait_in_futex(borrower_tid(&b), 10 * KS_NSEC_PER_SEC), "the borrower never slept");
        cr_assert_eq(ks_pool_return(p, r), 0);
        int e = ks_pool_destroy(p); /* the borrower is awake but has not taken it yet */
        cr_assert(kt_join_by(t, ks_deadline_after(10 * KS_NSEC_PER_SEC)), "the borrower never returned");
        cr_assert_eq(b.ret, 0);
        cr_assert_eq(b.got, res[0]);
        if (e == 0) {
            if (!wrong++)
                first_wrong = round;
            continue; /* destroyed with a resource out: re-init next round */
        }
        cr_assert_eq(e, EBUSY, "destroy returned %d", e);
        cr_assert_eq(ks_pool_destroy(p), EBUSY, "the borrower holds the resource");
        cr_assert_eq(ks_pool_return(p, b.got), 0);
        cr_assert_eq(ks_pool_destroy(p), 0);
    }
    free(p);
    cr_assert_eq(wrong, 0, "destroy returned 0 while a woken borrower was about to hold a resource "
                 "in %d of %d rounds (first: round %d)", wrong, rounds, first_wrong);
}

/* ---- exclusivity with many threads and short deadlines (S12) -------------------------------- */

struct excl_res {
    int holders;   /* atomic: borrowers holding it now; must never exceed 1 */
    int owner;     /* plain: the holder writes its id, and checks it before returning */
    uint64_t uses; /* plain: +1 per borrow; exact only if borrows are exclusive and ordered */
};

struct excl_run {
    ks_pool_t *p;
    struct excl_res *res;
    int nres, iters;
    kt_gate_t gate;
};

struct excl_thread {
    struct excl_run *r;
    int id;
    uint64_t ok, timeouts, overlaps, stolen, wrote_res, strangers, errors;
};

static void *excl_main(void *arg)
{
    struct excl_thread *a = arg;
    struct excl_run *r = a->r;
    unsigned seed = (unsigned)a->id * 2654435761u + 1;
    kt_gate_pass(&r->gate);
    for (int i = 0; i < r->iters; i++) {
        seed = seed * 1103515245u + 12345u;
        int64_t rel = (int64_t)((seed >> 8) % 2000000); /* 0 .. 2 ms; 0 is a try */
        void *v = SENTINEL;
        int e = ks_pool_borrow(r->p, rel ? ks_deadline_after(rel) : 0, &v);
        if (e == ETIMEDOUT) {
            a->timeouts++;
            if (v != SENTINEL)
                a->wrote_res++;
            continue;
        }
        if (e) {
            a->errors++;
            continue;
        }
        uintptr_t off = (uintptr_t)v - (uintptr_t)r->res;
        if ((uintptr_t)v < (uintptr_t)r->res || off % sizeof *r->res || off / sizeof *r->res >= (uintptr_t)r->nres) {
            a->strangers++;
            continue;
        }
        struct excl_res *x = v;
        if (__atomic_fetch_add(&x->holders, 1, __ATOMIC_SEQ_CST) != 0)
            a->overlaps++;
        x->owner = a->id;
        x->uses++;
        if (seed & 0x100)
            sched_yield(); /* hold it across a reschedule */
        else
            for (volatile int s = 0; s < 50; s++)
                ;
        if (x->owner != a->id)
            a->stolen++;
        __atomic_fetch_sub(&x->holders, 1, __ATOMIC_SEQ_CST);
        if (ks_pool_return(r->p, x))
            a->errors++;
        a->ok++;
    }
    return NULL;
}

static void excl_run(int nres, int nthreads, int iters, unsigned flags)
{
    struct excl_run r = {.nres = nres, .iters = iters};
    r.res = calloc((size_t)nres, sizeof *r.res);
    void **vals = malloc((size_t)nres * sizeof *vals);
    struct excl_thread *a = calloc((size_t)nthreads, sizeof *a);
    cr_assert(r.res && vals && a);
    for (int i = 0; i < nres; i++)
        vals[i] = &r.res[i];
    r.p = make(vals, (size_t)nres, flags);
    kt_gate_init(&r.gate, (unsigned)nthreads);
    pthread_t t[KT_MAX_THREADS];
    cr_assert_leq(nthreads, KT_MAX_THREADS);
    int64_t t0 = ks_now();
    for (int i = 0; i < nthreads; i++) {
        a[i] = (struct excl_thread){.r = &r, .id = i + 1};
        kt_spawn(&t[i], excl_main, &a[i]);
    }
    int64_t limit = ks_deadline_after(20 * KS_NSEC_PER_SEC * KT_SLOW);
    for (int i = 0; i < nthreads; i++)
        cr_assert(kt_join_by(t[i], limit), "thread %d still running after 20 s (available %zu)", i,
                  ks_pool_available(r.p));
    int64_t took = ks_now() - t0;
    uint64_t ok = 0, timeouts = 0, uses = 0;
    for (int i = 0; i < nthreads; i++) {
        cr_assert_eq(a[i].errors, 0u, "thread %d: errors", i);
        cr_assert_eq(a[i].strangers, 0u, "thread %d borrowed values not in the pool", i);
        cr_assert_eq(a[i].overlaps, 0u, "thread %d found its resource already held %llu times", i,
                     (unsigned long long)a[i].overlaps);
        cr_assert_eq(a[i].stolen, 0u, "thread %d: another holder wrote its resource %llu times", i,
                     (unsigned long long)a[i].stolen);
        cr_assert_eq(a[i].wrote_res, 0u, "thread %d: a timed-out borrow wrote *res", i);
        ok += a[i].ok;
        timeouts += a[i].timeouts;
    }
    for (int i = 0; i < nres; i++) {
        cr_assert_eq(r.res[i].holders, 0);
        uses += r.res[i].uses;
    }
    cr_assert_eq(ok + timeouts, (uint64_t)nthreads * (uint64_t)iters);
    cr_assert_eq(uses, ok, "%llu borrows counted %llu uses: two holders at once, or a stale view",
                 (unsigned long long)ok, (unsigned long long)uses);
    cr_assert_gt(ok, 0u);
    cr_assert_gt(timeouts, 0u, "no borrow ever timed out: the test lost its point");
    cr_assert_eq(ks_pool_available(r.p), (size_t)nres, "resources leaked");
    cr_log_info("%d resources, %d threads, flags %u: %llu borrows, %llu timeouts, %lld ms", nres, nthreads,
                flags, (unsigned long long)ok, (unsigned long long)timeouts, (long long)(took / KT_MS));
    cr_assert_eq(ks_pool_destroy(r.p), 0);
    kt_gate_destroy(&r.gate);
    free(a);
    free(vals);
    free(r.res);
}

Test(pool, exclusive_under_16_threads_short_deadlines, .timeout = 60)
{
    excl_run(1, 16, 2000 / KT_SLOW, 0);
    excl_run(3, 16, 2000 / KT_SLOW, KS_SHARED);
    excl_run(4, 16, 2000 / KT_SLOW, 0);
}

Test(pool, exclusive_under_64_threads_short_deadlines, .timeout = 120)
{
    excl_run(1, 64, 300 / KT_SLOW, 0);
    excl_run(5, 64, 500 / KT_SLOW, 0);
    excl_run(16, 64, 500 / KT_SLOW, KS_SHARED);
}

/* ---- process-shared across fork() ------------------------------------------------------------- */

#define SH_N 3
#define SH_ITERS 3000

struct sh_pool {
    int holders[SH_N + 1]; /* by resource value 1..SH_N; atomic */
    int overlaps[2];       /* parent, child */
    int child_got;         /* atomic: what the child's first borrow got */
    int last_error[2];     /* the unexpected return value behind a failed check */
    _Alignas(KS_MPMC_ALIGN) unsigned char mem[];
};

static int sh_hammer(struct sh_pool *s, ks_pool_t *p, int who)
{
    for (int i = 0; i < SH_ITERS; i++) {
        void *v;
        int e = ks_pool_borrow(p, i % 3 ? ks_deadline_after(i % 7 * 100000) : ks_deadline_after(20 * KS_NSEC_PER_SEC), &v);
        if (e == ETIMEDOUT)
            continue;
        if (e) {
            s->last_error[who] = e;
            return 10;
        }
        uintptr_t k = (uintptr_t)v;
        if (k < 1 || k > SH_N)
            return 11;
        if (__atomic_fetch_add(&s->holders[k], 1, __ATOMIC_SEQ_CST) != 0)
            s->overlaps[who]++;
        if (i % 8 == 0)
            sched_yield();
        __atomic_fetch_sub(&s->holders[k], 1, __ATOMIC_SEQ_CST);
        if ((e = ks_pool_return(p, v)) != 0) {
            s->last_error[who] = e;
            return 12;
        }
    }
    return 0;
}

static int sh_child(void *arg)
{
    struct sh_pool *s = arg;
    ks_pool_t *p = (ks_pool_t *)(void *)s->mem;
    void *v = NULL;
    /* Every resource is out: this sleeps until the parent returns one. */
    if (ks_pool_borrow(p, ks_deadline_after(20 * KS_NSEC_PER_SEC), &v))
        return 1;
    if (ks_pool_return(p, v))
        return 2;
    /* The parent borrows nothing until child_got is set: nobody can have
     * borrowed v again, so a second return is refused (once v circulates,
     * a stale second return cannot be told from a good one: docs/pool.md). */
    if (ks_pool_return(p, v) != EPERM)
        return 3;
    __atomic_store_n(&s->child_got, (int)(uintptr_t)v, __ATOMIC_SEQ_CST);
    return sh_hammer(s, p, 1);
}

Test(pool, process_shared_across_fork, .timeout = 60)
{
    size_t size = sizeof(struct sh_pool) + ks_pool_bytes(SH_N);
    struct sh_pool *s = kt_shared_alloc(size);
    ks_pool_t *p = (ks_pool_t *)(void *)s->mem;
    void *vals[SH_N];
    for (uintptr_t i = 0; i < SH_N; i++)
        vals[i] = (void *)(i + 1); /* resources are plain integers */
    cr_assert_eq(ks_pool_init(p, vals, SH_N, KS_SHARED), 0);
    void *out[SH_N];
    for (int i = 0; i < SH_N; i++)
        cr_assert_eq(ks_pool_borrow(p, 0, &out[i]), 0);
    pid_t pid = kt_fork(sh_child, s);
    cr_assert(kt_wait_child_in_futex(pid, 10 * KS_NSEC_PER_SEC), "the child never blocked in borrow");
    cr_assert_eq(__atomic_load_n(&s->child_got, __ATOMIC_SEQ_CST), 0);
    cr_assert_eq(ks_pool_return(p, out[1]), 0);
    int64_t end = ks_now() + 10 * KS_NSEC_PER_SEC;
    while (!__atomic_load_n(&s->child_got, __ATOMIC_SEQ_CST) && ks_now() < end)
        kt_sleep_ns(100000);
    cr_assert_eq(__atomic_load_n(&s->child_got, __ATOMIC_SEQ_CST), (int)(uintptr_t)out[1],
                 "the child got %d, not the one the parent returned", s->child_got);
    cr_assert_eq(ks_pool_return(p, out[0]), 0);
    cr_assert_eq(ks_pool_return(p, out[2]), 0);
    int hr = sh_hammer(s, p, 0);
    cr_assert_eq(hr, 0, "the parent's loop failed check %d (errno %d)", hr, s->last_error[0]);
    kt_wait_child(pid);
    cr_assert_eq(s->overlaps[0] + s->overlaps[1], 0, "a resource was held by two processes at once");
    cr_assert_eq(ks_pool_available(p), (size_t)SH_N);
    cr_assert_eq(ks_pool_destroy(p), 0);
    kt_shared_free(s, size);
}

/* tests/test_arch.c - the observable parts of the arch layer (<ksync/arch.h>):
 * the tick counter, the fences and cpu_relax, KS_CACHELINE.
 *
 * The fence tests are litmus tests that fail if the fence is missing on
 * this CPU: store buffering (SB) needs a full fence even on x86-64, and
 * message passing (MP) needs acquire/release fences on weakly ordered CPUs.
 */
#include "helpers.h"

/* GCC (>= 11) refuses atomic_thread_fence under -fsanitize=thread with
 * -Wtsan, and the generic arch header (the one TSan builds use) is made of
 * them.  TSan does not model stand-alone fences; the tests below still run
 * the real fence instructions, and under TSan they keep every shared access
 * atomic so that no race report can come from the missing model. */
#ifdef __SANITIZE_THREAD__
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtsan"
#endif
#include <ksync/arch.h>
#ifdef __SANITIZE_THREAD__
#pragma GCC diagnostic pop
#endif

#include <stdalign.h>

_Static_assert((KS_CACHELINE & (KS_CACHELINE - 1)) == 0, "KS_CACHELINE is a power of two");
_Static_assert(KS_CACHELINE >= 64, "KS_CACHELINE is at least 64");

Test(arch, cacheline_is_power_of_two_at_least_64)
{
    unsigned long cl = KS_CACHELINE;
    cr_assert_geq(cl, 64ul);
    cr_assert_eq(cl & (cl - 1), 0ul, "KS_CACHELINE %lu is not a power of two", cl);
    /* Never smaller than what the machine reports for L1d. */
    long sys = sysconf(_SC_LEVEL1_DCACHE_LINESIZE);
    if (sys > 0)
        cr_assert_geq(cl, (unsigned long)sys);
    cr_assert_str_not_empty(KS_ARCH_NAME);
}

static void *ticks_thread(void *arg)
{
    long *bad = arg;
    /* Pin to the CPU we are on: the contract is per-CPU monotonic. */
    int cpu = sched_getcpu();
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    }
    uint64_t prev = ks_ticks();
    for (int i = 0; i < 500000; i++) {
        uint64_t t = ks_ticks();
        if (t < prev)
            (*bad)++;
        prev = t;
    }
    return NULL;
}

Test(arch, ticks_nondecreasing_on_one_thread)
{
    long bad = 0;
    pthread_t t;
    kt_spawn(&t, ticks_thread, &bad);
    kt_join(t);
    cr_assert_eq(bad, 0, "ks_ticks went backwards %ld times", bad);

    /* Also unpinned, in this thread, across a sleep: it advances. */
    uint64_t a = ks_ticks();
    kt_sleep_ns(5 * KT_MS);
    uint64_t b = ks_ticks();
    cr_assert_gt(b, a, "ks_ticks did not advance over 5 ms");
}

Test(arch, fences_and_relax_are_callable)
{
    /* They compile, link and return; ks_compiler_barrier and the fences
     * force a re-read of memory the compiler could otherwise cache. */
    volatile int sink = 0;
    int x = 1;
    for (int i = 0; i < 1000; i++) {
        ks_cpu_relax();
        ks_compiler_barrier();
        ks_fence_acquire();
        ks_fence_release();
        ks_fence_full();
        x += i;
    }
    sink = x;
    cr_assert_eq(sink, 1 + 999 * 1000 / 2);
}

/* ---- store buffering: x = 1; fence; r1 = y  ||  y = 1; fence; r2 = x.
 * Without a full fence r1 == r2 == 0 is allowed (and seen on x86). */
#define SB_ROUNDS 20000

struct sb {
    alignas(KS_CACHELINE) int x;
    alignas(KS_CACHELINE) int y;
    alignas(KS_CACHELINE) int round; /* main releases round i */
    alignas(KS_CACHELINE) int done[2];
    int r[2];
    long both_zero;
};

static void sb_wait_round(const int *p, int want)
{
    int spins = 0;
    while (__atomic_load_n(p, __ATOMIC_ACQUIRE) != want)
        if (++spins > 64) {
            sched_yield();
            spins = 0;
        } else {
            ks_cpu_relax();
        }
}

struct sb_arg {
    struct sb *sb;
    int me;
};

static void *sb_thread(void *p)
{
    struct sb_arg *a = p;
    struct sb *sb = a->sb;
    int *mine = a->me ? &sb->y : &sb->x;
    int *other = a->me ? &sb->x : &sb->y;
    for (int i = 1; i <= SB_ROUNDS; i++) {
        sb_wait_round(&sb->round, i);
        __atomic_store_n(mine, 1, __ATOMIC_RELAXED);
        ks_fence_full();
        sb->r[a->me] = __atomic_load_n(other, __ATOMIC_RELAXED);
        __atomic_store_n(&sb->done[a->me], i, __ATOMIC_RELEASE);
    }
    return NULL;
}

Test(arch, fence_full_orders_store_before_load, .timeout = 60)
{
    static struct sb sb;
    struct sb_arg args[2] = {{&sb, 0}, {&sb, 1}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        kt_spawn(&t[i], sb_thread, &args[i]);
    for (int i = 1; i <= SB_ROUNDS; i++) {
        __atomic_store_n(&sb.x, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&sb.y, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&sb.round, i, __ATOMIC_RELEASE);
        sb_wait_round(&sb.done[0], i);
        sb_wait_round(&sb.done[1], i);
        if (sb.r[0] == 0 && sb.r[1] == 0)
            sb.both_zero++;
    }
    for (int i = 0; i < 2; i++)
        kt_join(t[i]);
    cr_assert_eq(sb.both_zero, 0, "store buffering observed %ld times across ks_fence_full",
                 sb.both_zero);
}

/* ---- message passing: data = i; release fence; flag = i  ||
 *      flag == i; acquire fence; data == i. */
#define MP_ROUNDS 200000

struct mp {
    alignas(KS_CACHELINE) int data;
    alignas(KS_CACHELINE) int flag;
    alignas(KS_CACHELINE) int ack;
    long bad;
};

static void *mp_reader(void *p)
{
    struct mp *mp = p;
    for (int i = 1; i <= MP_ROUNDS; i++) {
        int spins = 0;
        while (__atomic_load_n(&mp->flag, __ATOMIC_RELAXED) != i)
            if (++spins > 64) {
                sched_yield();
                spins = 0;
            } else {
                ks_cpu_relax();
            }
        ks_fence_acquire();
#ifdef __SANITIZE_THREAD__
        int d = __atomic_load_n(&mp->data, __ATOMIC_RELAXED);
#else
        int d = *(volatile int *)&mp->data;
#endif
        if (d != i)
            mp->bad++;
        /* release: our data load is done before the writer's next store. */
        __atomic_store_n(&mp->ack, i, __ATOMIC_RELEASE);
    }
    return NULL;
}

Test(arch, fence_release_acquire_pass_messages, .timeout = 60)
{
    static struct mp mp;
    pthread_t t;
    kt_spawn(&t, mp_reader, &mp);
    for (int i = 1; i <= MP_ROUNDS; i++) {
#ifdef __SANITIZE_THREAD__
        __atomic_store_n(&mp.data, i, __ATOMIC_RELAXED);
#else
        *(volatile int *)&mp.data = i;
#endif
        ks_fence_release();
        __atomic_store_n(&mp.flag, i, __ATOMIC_RELAXED);
        int spins = 0;
        while (__atomic_load_n(&mp.ack, __ATOMIC_ACQUIRE) != i)
            if (++spins > 64) {
                sched_yield();
                spins = 0;
            } else {
                ks_cpu_relax();
            }
    }
    kt_join(t);
    cr_assert_eq(mp.bad, 0, "reader saw stale data %ld times after the acquire fence", mp.bad);
}

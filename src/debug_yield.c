/* src/debug_yield.c - race widening for the stress build (like liburcu's
 * DEBUG_YIELD).  Compiled only with -DKS_DEBUG_YIELD: at each
 * KS_RACE_POINT() inside a primitive, with probability permille/1000, the
 * thread yields the CPU, spins a random short while, or sleeps a few
 * microseconds, so that a 2-core machine explores interleavings that
 * otherwise need 64 cores and hours. */
#ifdef KS_DEBUG_YIELD
#include "internal.h"

#include <ksync/debug.h>
#include <sched.h>
#include <pthread.h>
#include <time.h>

static unsigned yield_permille; /* relaxed: a tuning knob, no data hangs on it */
static uint64_t yield_seed;     /* relaxed: read once per thread */
static uint64_t thread_counter; /* relaxed: only needs distinct values */
static _Thread_local uint64_t rng;

void ks_debug_yield_config(unsigned permille, uint64_t seed)
{
    __atomic_store_n(&yield_seed, seed, __ATOMIC_RELAXED);
    __atomic_store_n(&yield_permille, permille > 1000 ? 1000 : permille, __ATOMIC_RELAXED);
}

int ks_debug_yield_enabled(void) { return 1; }

static uint64_t next(void)
{
    if (rng == 0) {
        uint64_t n = __atomic_add_fetch(&thread_counter, 1, __ATOMIC_RELAXED);
        rng = (__atomic_load_n(&yield_seed, __ATOMIC_RELAXED) ^ (n * 0x9e3779b97f4a7c15ull)) | 1;
    }
    /* xorshift64* */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
}

void ks_race_point(void)
{
    unsigned p = __atomic_load_n(&yield_permille, __ATOMIC_RELAXED);
    if (p == 0)
        return;
    uint64_t r = next();
    if (r % 1000 >= p)
        return;
    switch ((r >> 20) % 8) {
    case 0: case 1: case 2: case 3:
        sched_yield();
        break;
    case 4: case 5: case 6: {
        unsigned n = (unsigned)((r >> 32) % 2000);
        while (n--)
            ks_cpu_relax();
        break;
    }
    default: {
        /* nanosleep is a cancellation point, and a race point is not one
         * in the real build: a cancel acting here, between a waiter's
         * registration and its cleanup handler, would leak the waiter. */
        struct timespec ts = {0, (long)(1000 + (r >> 40) % 50000)};
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        nanosleep(&ts, NULL);
        pthread_setcancelstate(old, &old);
        break;
    }
    }
}
#else
typedef int ks_debug_yield_unused; /* ISO C forbids an empty translation unit */
#endif

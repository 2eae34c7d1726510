/* tools/dropin/early.c - a preloaded library whose constructor uses the
 * layer before libksync-pthread.so's own constructor has run (the dynamic
 * linker runs the constructors of LD_PRELOAD="layer early.so" in reverse:
 * early.so first).  tools/dropin-own.sh builds it, checks that order with
 * LD_DEBUG=files, and compares the line it prints with the expected one. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

static pthread_mutex_t m = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int ran;

static void run_once(void)
{
    ran++;
}

__attribute__((constructor)) static void early(void)
{
    int a = pthread_mutex_lock(&m);
    int b = pthread_mutex_lock(&m);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int w = pthread_cond_clockwait(&c, &m, CLOCK_MONOTONIC, &ts);
    int u = pthread_mutex_unlock(&m);
    int u2 = pthread_mutex_unlock(&m);
    pthread_once(&once, run_once);
    pthread_once(&once, run_once);
    printf("early: lock %d relock %s timedwait %s unlock %d again %s once %d\n", a, b == EDEADLK ? "EDEADLK" : "?",
           w == ETIMEDOUT ? "ETIMEDOUT" : "?", u, u2 == EPERM ? "EPERM" : "?", ran);
}

/* src/dropin/pcond.c - pthread_cond_* on ks_cond.  docs/dropin.md.
 *
 * Layout inside glibc's 48-byte pthread_cond_t (struct ks_pcond): the
 * ks_cond_t, then the clock of timed waits (CLOCK_REALTIME = 0, so
 * PTHREAD_COND_INITIALIZER and zero-filled memory are valid defaults).
 *
 * Waits are cancellation points (POSIX): the sleep runs with asynchronous
 * cancellation enabled, and a cancelled waiter leaves the condition
 * variable, sends a replacement signal (it may have consumed one meant for
 * another waiter) and re-takes the mutex before the application's cleanup
 * handlers run (src/cond.c, on_cancel).  A pending cancellation is acted
 * on at entry, with the mutex still held.
 *
 * Timeouts: an absolute time on the condition variable's clock (or the
 * clock given to pthread_cond_clockwait) is converted once to a ksync
 * deadline on CLOCK_MONOTONIC; a CLOCK_REALTIME step during the wait is
 * not followed (as musl; glibc does follow it).
 *
 * x86-64 exports pthread_cond_* twice: GLIBC_2.3.2 (today's layout) and
 * GLIBC_2.2.5 (programs linked before 2003, whose object may be as small as
 * a pointer: glibc keeps a pointer to a heap condition variable in it).
 * Both are defined here (src/dropin/x86_64.map names the versions), the old
 * one with the same scheme as glibc's: the first word points to a
 * ks_pcond allocated at first use.
 */
#include "dropin.h"

#include <stdlib.h>
#include <string.h>

struct ks_pcond {
    ks_cond_t c;
    uint32_t clock; /* CLOCK_REALTIME or CLOCK_MONOTONIC */
};
_Static_assert(sizeof(struct ks_pcond) <= sizeof(pthread_cond_t), "fits in pthread_cond_t");

static int cond_init(struct ks_pcond *c, const pthread_condattr_t *attr)
{
    clockid_t clock = CLOCK_REALTIME;
    int pshared = PTHREAD_PROCESS_PRIVATE;
    if (attr) {
        pthread_condattr_getclock(attr, &clock);
        pthread_condattr_getpshared(attr, &pshared);
    }
    if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC)
        return EINVAL;
    int r = ks_cond_init(&c->c, pshared == PTHREAD_PROCESS_SHARED ? KS_SHARED : 0);
    c->clock = (uint32_t)clock;
    return r;
}

static int cond_wait(struct ks_pcond *c, pthread_mutex_t *m, int64_t deadline)
{
    pthread_testcancel(); /* POSIX: a cancellation point shall occur here */
    struct ks_pt_wait w;
    struct ks_mutex *word;
    int r = ks_pt_wait_begin(&w, m, &word);
    if (r)
        return r;
    return ks_cond_wait_ext(&c->c, &w, word, &ks_pt_mutex_ops, deadline, KS_WAIT_CANCEL);
}

static int cond_clockwait(struct ks_pcond *c, pthread_mutex_t *m, clockid_t clock, const struct timespec *abstime)
{
    int64_t deadline;
    int r = ks_pt_deadline(clock, abstime, &deadline);
    if (r)
        return r;
    return cond_wait(c, m, deadline);
}

/* ---- today's ABI ---------------------------------------------------------------- */

static struct ks_pcond *pcond(pthread_cond_t *c)
{
    return (struct ks_pcond *)(void *)c;
}

#if defined(__x86_64__)
#define KS_PT_COND(name) ks_pt_##name##_new
#define KS_PT_COND_VERSIONED(name)                                                                  \
    __asm__(".symver ks_pt_pthread_" #name "_new, pthread_" #name "@@GLIBC_2.3.2");              \
    __asm__(".symver ks_pt_pthread_" #name "_old, pthread_" #name "@GLIBC_2.2.5");
KS_PT_COND_VERSIONED(cond_init)
KS_PT_COND_VERSIONED(cond_destroy)
KS_PT_COND_VERSIONED(cond_wait)
KS_PT_COND_VERSIONED(cond_timedwait)
KS_PT_COND_VERSIONED(cond_signal)
KS_PT_COND_VERSIONED(cond_broadcast)
int ks_pt_pthread_cond_init_new(pthread_cond_t *cond, const pthread_condattr_t *attr);
int ks_pt_pthread_cond_destroy_new(pthread_cond_t *cond);
int ks_pt_pthread_cond_signal_new(pthread_cond_t *cond);
int ks_pt_pthread_cond_broadcast_new(pthread_cond_t *cond);
int ks_pt_pthread_cond_wait_new(pthread_cond_t *cond, pthread_mutex_t *mutex);
int ks_pt_pthread_cond_timedwait_new(pthread_cond_t *cond, pthread_mutex_t *mutex, const struct timespec *abstime);
#else
#define KS_PT_COND(name) name
#endif

KS_PT_EXPORT int KS_PT_COND(pthread_cond_init)(pthread_cond_t *cond, const pthread_condattr_t *attr)
{
    memset(cond, 0, sizeof *cond);
    return cond_init(pcond(cond), attr);
}

KS_PT_EXPORT int KS_PT_COND(pthread_cond_destroy)(pthread_cond_t *cond)
{
    return ks_cond_destroy(&pcond(cond)->c);
}

KS_PT_EXPORT int KS_PT_COND(pthread_cond_signal)(pthread_cond_t *cond)
{
    return ks_cond_signal(&pcond(cond)->c);
}

KS_PT_EXPORT int KS_PT_COND(pthread_cond_broadcast)(pthread_cond_t *cond)
{
    return ks_cond_broadcast(&pcond(cond)->c);
}

KS_PT_EXPORT int KS_PT_COND(pthread_cond_wait)(pthread_cond_t *cond, pthread_mutex_t *mutex)
{
    return cond_wait(pcond(cond), mutex, KS_FOREVER);
}

KS_PT_EXPORT int KS_PT_COND(pthread_cond_timedwait)(pthread_cond_t *cond, pthread_mutex_t *mutex,
                                                    const struct timespec *abstime)
{
    struct ks_pcond *c = pcond(cond);
    /* relaxed: constant after init */
    return cond_clockwait(c, mutex, (clockid_t)__atomic_load_n(&c->clock, __ATOMIC_RELAXED), abstime);
}

KS_PT_EXPORT int pthread_cond_clockwait(pthread_cond_t *cond, pthread_mutex_t *mutex, clockid_t clock,
                                        const struct timespec *abstime)
{
    return cond_clockwait(pcond(cond), mutex, clock, abstime);
}

/* ---- the GLIBC_2.2.5 ABI (x86-64 only) ------------------------------------------ */
#if defined(__x86_64__)
/* The first word: NULL until first use, then the heap condition variable.
 * acquire/release: the allocation's initialisation before the pointer. */
static struct ks_pcond *old_get(pthread_cond_t *cond)
{
    struct ks_pcond **slot = (struct ks_pcond **)(void *)cond;
    struct ks_pcond *c = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (KS_LIKELY(c != NULL))
        return c;
    struct ks_pcond *mine = calloc(1, sizeof *mine);
    if (!mine)
        return NULL;
    cond_init(mine, NULL);
    if (__atomic_compare_exchange_n(slot, &c, mine, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return mine;
    free(mine); /* another thread installed one first */
    return c;
}

KS_PT_EXPORT int ks_pt_pthread_cond_init_old(pthread_cond_t *cond, const pthread_condattr_t *attr);
int ks_pt_pthread_cond_init_old(pthread_cond_t *cond, const pthread_condattr_t *attr)
{
    (void)attr; /* glibc's old ABI ignores the attributes too */
    *(struct ks_pcond **)(void *)cond = NULL;
    return 0;
}

KS_PT_EXPORT int ks_pt_pthread_cond_destroy_old(pthread_cond_t *cond);
int ks_pt_pthread_cond_destroy_old(pthread_cond_t *cond)
{
    struct ks_pcond *c = *(struct ks_pcond **)(void *)cond;
    if (c) {
        int r = ks_cond_destroy(&c->c);
        if (r)
            return r;
        free(c);
    }
    return 0;
}

KS_PT_EXPORT int ks_pt_pthread_cond_signal_old(pthread_cond_t *cond);
int ks_pt_pthread_cond_signal_old(pthread_cond_t *cond)
{
    struct ks_pcond *c = old_get(cond);
    return c ? ks_cond_signal(&c->c) : ENOMEM;
}

KS_PT_EXPORT int ks_pt_pthread_cond_broadcast_old(pthread_cond_t *cond);
int ks_pt_pthread_cond_broadcast_old(pthread_cond_t *cond)
{
    struct ks_pcond *c = old_get(cond);
    return c ? ks_cond_broadcast(&c->c) : ENOMEM;
}

KS_PT_EXPORT int ks_pt_pthread_cond_wait_old(pthread_cond_t *cond, pthread_mutex_t *mutex);
int ks_pt_pthread_cond_wait_old(pthread_cond_t *cond, pthread_mutex_t *mutex)
{
    struct ks_pcond *c = old_get(cond);
    return c ? cond_wait(c, mutex, KS_FOREVER) : ENOMEM;
}

KS_PT_EXPORT int ks_pt_pthread_cond_timedwait_old(pthread_cond_t *cond, pthread_mutex_t *mutex,
                                                  const struct timespec *abstime);
int ks_pt_pthread_cond_timedwait_old(pthread_cond_t *cond, pthread_mutex_t *mutex, const struct timespec *abstime)
{
    struct ks_pcond *c = old_get(cond);
    return c ? cond_clockwait(c, mutex, CLOCK_REALTIME, abstime) : ENOMEM;
}
#endif

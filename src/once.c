/* src/once.c - run-once.  docs/once.md.
 *
 * The word holds a kind in its low two bits and, while the function runs,
 * the fork generation of the process running it in the others:
 *
 *   NEW (0) --CAS by the first caller--> RUNNING|g --other callers--> WAITED|g
 *    RUNNING|g / WAITED|g --fn returned: exchange (release)--> DONE (3)
 *                                        (+ wake all if it was WAITED)
 *    RUNNING|g' / WAITED|g' with g' not this process's generation
 *        --CAS by a caller--> RUNNING|g   (the runner is in another process)
 *
 * Waiters sleep only on WAITED|g, which only the runner's final exchange
 * changes; the exchange reports whether anyone announced sleeping, so the
 * runner wakes exactly when needed and touches nothing afterwards.
 *
 * Fork: a thread that was inside fn when another thread forked does not
 * exist in the child, and the child's copy of the word says RUNNING for
 * good.  Like glibc's pthread_once (its fork generation), a caller in the
 * child sees a generation that is not its process's (src/thread.c: every
 * kind of fork gives the child a new one) and runs fn itself.  A KS_SHARED
 * object is used by several processes on purpose, so its runner may well be
 * in another process: it carries no generation and is never taken over.
 */
#include "internal.h"

#include <ksync/once.h>

#include <pthread.h>

#define KIND 3u

/* fn was cancelled (pthread_cancel, or pthread_exit from inside it): the
 * run did not happen, so the word goes back to NEW and the sleepers wake,
 * and one of them (or a later caller) runs fn (POSIX pthread_once).
 * release: pairs with the acquire loads of the callers that retry. */
struct run_frame {
    uint32_t *state;
    unsigned flags;
};

static void on_cancel(void *p)
{
    struct run_frame *f = p;
    uint32_t s = __atomic_exchange_n(f->state, KS_ONCE_NEW, __ATOMIC_RELEASE);
    if ((s & KIND) == KS_ONCE_WAITED)
        ks_futex_wake(f->state, KS_WAKE_ALL, f->flags);
}

static void run(uint32_t *state, unsigned fl, void (*fn)(void))
{
    struct run_frame f = {state, fl};
    pthread_cleanup_push(on_cancel, &f);
    fn();
    pthread_cleanup_pop(0);
}

int ks_once_slow(ks_once_t *o, void (*fn)(void))
{
    if (!o || !fn)
        return EINVAL;
    return ks_once_word(&o->state, o->flags, fn);
}

int ks_once_word(uint32_t *state, unsigned fl, void (*fn)(void))
{
    uint32_t gen = (fl & KS_SHARED) ? 0 : (uint32_t)(ks_process_gen() << 2);
    uint32_t s = __atomic_load_n(state, __ATOMIC_ACQUIRE);
    for (;;) {
        switch (s & KIND) {
        case KS_ONCE_DONE:
            return 0;
        case KS_ONCE_NEW:
            break; /* claim the run */
        default: /* RUNNING or WAITED */
            if ((s & ~KIND) != gen)
                break; /* the runner is in an ancestor process image: claim */
            if ((s & KIND) == KS_ONCE_RUNNING) {
                /* acquire both ways: the reloaded value may be DONE. */
                if (!__atomic_compare_exchange_n(state, &s, gen | KS_ONCE_WAITED, 0, __ATOMIC_ACQUIRE,
                                                 __ATOMIC_ACQUIRE))
                    continue;
                s = gen | KS_ONCE_WAITED;
            }
            KS_RACE_POINT();
            ks_futex_wait(state, s, KS_FOREVER, fl);
            /* A signal handler that ran during the wait may have forked, and
             * we may now be the child: look at the generation again. */
            if (!(fl & KS_SHARED))
                gen = (uint32_t)(ks_process_gen() << 2);
            s = __atomic_load_n(state, __ATOMIC_ACQUIRE); /* may be DONE: pairs with the exchange */
            continue;
        }
        /* acquire both ways (GCC wants failure <= success): the reloaded
         * value may be DONE; claiming the run itself publishes nothing. */
        if (!__atomic_compare_exchange_n(state, &s, gen | KS_ONCE_RUNNING, 0, __ATOMIC_ACQUIRE,
                                         __ATOMIC_ACQUIRE))
            continue;
        run(state, fl, fn);
        /* release: pairs with the acquire loads of every other caller. */
        s = __atomic_exchange_n(state, KS_ONCE_DONE, __ATOMIC_RELEASE);
        if ((s & KIND) == KS_ONCE_WAITED)
            ks_futex_wake(state, KS_WAKE_ALL, fl);
        return 0;
    }
}

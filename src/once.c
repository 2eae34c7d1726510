/* src/once.c - run-once.  docs/once.md.
 *
 *   NEW --CAS by the first caller--> RUNNING --other callers--> WAITED
 *    RUNNING/WAITED --fn returned: exchange (release)--> DONE (+ wake all if WAITED)
 *
 * Waiters sleep only on WAITED, which only the runner's final exchange
 * changes; the exchange reports whether anyone announced sleeping, so the
 * runner wakes exactly when needed and touches nothing afterwards.
 */
#include "internal.h"

#include <ksync/once.h>

int ks_once_slow(ks_once_t *o, void (*fn)(void))
{
    if (!o || !fn)
        return EINVAL;
    const unsigned fl = o->flags;
    uint32_t s = __atomic_load_n(&o->state, __ATOMIC_ACQUIRE);
    for (;;) {
        switch (s) {
        case KS_ONCE_DONE:
            return 0;
        case KS_ONCE_NEW:
            /* acquire both ways (GCC wants failure <= success): the reloaded
             * value may be DONE; claiming the run itself publishes nothing. */
            if (!__atomic_compare_exchange_n(&o->state, &s, KS_ONCE_RUNNING, 0, __ATOMIC_ACQUIRE,
                                             __ATOMIC_ACQUIRE))
                continue;
            fn();
            /* release: pairs with the acquire loads of every other caller. */
            s = __atomic_exchange_n(&o->state, KS_ONCE_DONE, __ATOMIC_RELEASE);
            if (s == KS_ONCE_WAITED)
                ks_futex_wake(&o->state, KS_WAKE_ALL, fl);
            return 0;
        case KS_ONCE_RUNNING:
            /* acquire both ways: the reloaded value may be DONE. */
            if (!__atomic_compare_exchange_n(&o->state, &s, KS_ONCE_WAITED, 0, __ATOMIC_ACQUIRE,
                                             __ATOMIC_ACQUIRE))
                continue;
            /* fall through */
        default: /* WAITED */
            KS_RACE_POINT();
            ks_futex_wait(&o->state, KS_ONCE_WAITED, KS_FOREVER, fl);
            s = __atomic_load_n(&o->state, __ATOMIC_ACQUIRE);
        }
    }
}

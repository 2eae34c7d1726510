/* src/dropin/ponce.c - pthread_once.  docs/dropin.md.
 *
 * pthread_once_t is an int and PTHREAD_ONCE_INIT is 0: it is ks_once's
 * state word (src/once.c), with its fork generation (a child of a process
 * whose thread was inside init_routine runs it itself) and its
 * cancellation rule (a cancelled init_routine leaves the once to be run
 * again, as POSIX says).
 */
#include "dropin.h"

#include <ksync/once.h>

_Static_assert(sizeof(pthread_once_t) == sizeof(uint32_t) && PTHREAD_ONCE_INIT == KS_ONCE_NEW, "once word");

KS_PT_EXPORT int pthread_once(pthread_once_t *once, void (*init_routine)(void))
{
    uint32_t *word = (uint32_t *)(void *)once;
    /* acquire: pairs with the release exchange to DONE after init_routine. */
    if (KS_LIKELY(__atomic_load_n(word, __ATOMIC_ACQUIRE) == KS_ONCE_DONE))
        return 0;
    return ks_once_word(word, 0, init_routine);
}

/* src/scoped.c - the one out-of-line part of the scoped guards
 * (include/ksync/scoped.h, docs/scoped.md): the report a guard makes before
 * it aborts, when it could not take its object or could not give it back. */
#include <ksync/scoped.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ks_scoped_fail_slow(const char *call, const char *site, int err)
{
    /* Not cancellable from here on (docs/conventions.md): a pending cancel
     * acting in fprintf unwound the thread instead of aborting. */
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    fprintf(stderr, "ksync: %s failed at %s: %s (errno %d); a scoped guard cannot go on without it\n",
            call ? call : "?", site ? site : "?", strerror(err), err);
    abort();
}

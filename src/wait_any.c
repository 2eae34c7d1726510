/* src/wait_any.c - ks_wait_any: the first of several objects to be ready,
 * with one sleep on all their futex words (futex_waitv).  docs/wait_any.md.
 *
 * Each round arms every object in turn (src/internal.h: an event announces
 * a sleeper, a semaphore registers a waiter, a channel counts itself among
 * its side's sleepers and watches its peers) and stops at the first that is
 * ready.  Arming is each object's own sleep protocol, so a waker that would
 * wake one of the object's own waiters wakes this one too; an object that
 * becomes ready after its arm changes one of the watched words, so the
 * futex_waitv either returns at once (EAGAIN) or is woken.  After a sleep:
 *   - semaphores: the first (in scan order) with a unit has it taken for the
 *     caller; every other registration is ended with the semaphore's own
 *     unregister, which hands a wake it may have absorbed to another waiter
 *     (the semaphore's invariant: units and waiters imply a waiter awake);
 *   - channels: dead peers are reaped, which passes on the one wake the
 *     kernel gives at a death;
 *   - queues: the watch is ended (the watcher's weight taken off the side's
 *     sleeper count); nothing else, since a watcher sleeps on its own word,
 *     woken all at once, and is never handed the queue's baton;
 *   - events and channels need no undoing: their wakes go to every sleeper.
 */
#include "internal.h"

#include <ksync/channel.h>
#include <ksync/event.h>
#include <ksync/queue.h>
#include <ksync/sem.h>
#include <ksync/wait_any.h>

#include <string.h>

static KS_TLS unsigned tls_turn;

/* End every semaphore registration but `keep`'s, and every queue watch. */
static void disarm(const struct ks_any *set, const unsigned char *armed, unsigned n, unsigned keep)
{
    for (unsigned i = 0; i < n; i++) {
        if (!armed[i])
            continue;
        if (set[i].kind == KS_ANY_SEM && i != keep)
            ks_sem_any_disarm(set[i].obj);
        else if (set[i].kind == KS_ANY_GET || set[i].kind == KS_ANY_PUT)
            ks_queue_any_disarm(set[i].obj, set[i].kind == KS_ANY_PUT);
    }
}

static int check_set(const struct ks_any *set, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (!set[i].obj)
            return EINVAL;
        if (set[i].kind < KS_ANY_EVENT || set[i].kind > KS_ANY_PUT)
            return EINVAL;
        if (set[i].kind == KS_ANY_SEM)
            for (unsigned j = 0; j < i; j++)
                if (set[j].kind == KS_ANY_SEM && set[j].obj == set[i].obj)
                    return EINVAL; /* one registration per waiter and semaphore */
    }
    return 0;
}

int ks_wait_any(const struct ks_any *set, unsigned n, int64_t deadline, unsigned *index)
{
    if (!set || !index || n == 0 || n > KS_ANY_MAX || deadline < 0)
        return EINVAL;
    int e = check_set(set, n);
    if (e)
        return e;
    uint32_t gen[KS_ANY_MAX];
    unsigned char armed[KS_ANY_MAX];
    for (unsigned i = 0; i < n; i++)
        gen[i] = ~0u;
    const unsigned first = tls_turn++ % n;
    struct ks_waitset ws;

    for (;;) {
        ws.n = 0;
        ws.overflow = 0;
        memset(armed, 0, n);
        unsigned ready = n;
        for (unsigned k = 0; k < n && ready == n; k++) {
            unsigned i = (first + k) % n;
            int r;
            switch (set[i].kind) {
            case KS_ANY_EVENT: r = ks_event_any_arm(set[i].obj, &gen[i], &ws); break;
            case KS_ANY_SEM: r = ks_sem_any_arm(set[i].obj, &ws); break;
            case KS_ANY_GET:
            case KS_ANY_PUT: r = ks_queue_any_arm(set[i].obj, set[i].kind == KS_ANY_PUT, &ws); break;
            default: r = ks_channel_any_arm(set[i].obj, set[i].kind == KS_ANY_SEND, &ws); break;
            }
            if (r == 1) {
                ready = i;
            } else if (r) {
                disarm(set, armed, n, n);
                return -r;
            } else {
                armed[i] = 1;
            }
        }
        if (ready < n) {
            /* a semaphore found with a unit took it without registering;
             * a queue found ready ended its own watch */
            disarm(set, armed, n, n);
            *index = ready;
            return 0;
        }
        if (ks_deadline_passed(deadline)) {
            disarm(set, armed, n, n);
            return ETIMEDOUT;
        }
        /* a channel watches its peers, and a wake on a shared object can be
         * lost with a killed poster or setter: look again within
         * KS_PEER_RECHECK_NS (internal.h); the loop below looks again after
         * any timeout */
        int64_t until = deadline;
        for (unsigned i = 0; i < ws.n; i++)
            if (ws.flags[i] & KS_SHARED) {
                int64_t cap = ks_deadline_after(KS_PEER_RECHECK_NS);
                if (cap < until)
                    until = cap;
                break;
            }
        KS_RACE_POINT();
        int w = ws.overflow ? ENOSYS : ks_futex_waitv(ws.word, ws.val, ws.flags, ws.n, until);
        if (w == ENOSYS) {
            /* no futex_waitv, or more words than it takes: a slice on the
             * first word, then look again */
            int64_t slice = ks_deadline_after(1000 * 1000);
            ks_futex_wait(ws.word[0], ws.val[0], deadline < slice ? deadline : slice, ws.flags[0]);
        }
        for (unsigned i = 0; i < n; i++)
            if (set[i].kind == KS_ANY_RECV || set[i].kind == KS_ANY_SEND)
                ks_channel_any_after(set[i].obj);
        /* a woken semaphore: take its unit (in scan order) */
        for (unsigned k = 0; k < n; k++) {
            unsigned i = (first + k) % n;
            if (armed[i] && set[i].kind == KS_ANY_SEM && ks_sem_any_take(set[i].obj)) {
                disarm(set, armed, n, i);
                *index = i;
                return 0;
            }
        }
        disarm(set, armed, n, n);
        /* ETIMEDOUT or not, look once more: the next round's arms decide */
    }
}

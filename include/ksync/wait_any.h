/* ksync/wait_any.h - wait for the first of several objects: events,
 * semaphores, channels readable or writable, with one deadline (Go's
 * select over its channels is the model).  Built on futex_waitv (Linux
 * 5.16): one sleep on every object's futex word at once.  Design, and why
 * no wake-up is lost or stolen: docs/wait_any.md.
 *
 *   struct ks_any set[] = {
 *       {KS_ANY_EVENT, &stop},        ready when set (or set and cleared
 *                                     again during the wait)
 *       {KS_ANY_SEM, &permits},       ready when a unit is TAKEN: the
 *                                     caller owns it (post it back if unused)
 *       {KS_ANY_RECV, rx},            a ks_channel_t *: a receive would not
 *                                     block (a message, or EPIPE/EBADMSG)
 *       {KS_ANY_SEND, tx},            a message of the maximum size fits, or
 *                                     no receiver is left (EPIPE)
 *       {KS_ANY_GET, q},              a ks_queue_t *: a get would not block
 *                                     (an item, or EPIPE once closed)
 *       {KS_ANY_PUT, q2},             a put would not block (a free slot,
 *                                     or EPIPE once closed)
 *   };
 *   unsigned i;
 *   int e = ks_wait_any(set, 6, ks_deadline_after(ns), &i);
 *
 * Returns 0 with *index the object found ready, ETIMEDOUT, EINVAL (NULL
 * set or index, n == 0 or above KS_ANY_MAX, a NULL object, an unknown kind,
 * a negative deadline), EAGAIN (4095 watches, set entries of any threads, on that side of
 * that queue), EPERM (a channel handle without the role its kind
 * needs), EBADF (a fork child with its parent's channel handle).  On an
 * error or a timeout no semaphore unit is taken.
 *
 * Readiness of events, queues and channels is level-triggered, as
 * poll(2): another thread may take the message or the item, or clear the
 * event, before the caller acts, so the caller's get, put, receive or send
 * may still wait (use a deadline of 0 to try: ks_queue_tryget).  A semaphore is different: its unit is taken for the caller, as a
 * select's receive is done for the goroutine.  When several objects are
 * ready, the scan starts at a different index on each call (a per-thread
 * counter), so that one busy object cannot starve the others.
 *
 * Objects may be KS_PRIVATE or KS_SHARED (each is waited on with its own
 * futex key).  On a kernel without futex_waitv the call sleeps in slices
 * of 1 ms and looks again, as with more than 128 words to watch (each
 * channel watches its event, its membership word and its live peers).
 */
#ifndef KSYNC_WAIT_ANY_H
#define KSYNC_WAIT_ANY_H

#include <ksync/common.h>
#include <ksync/time.h>

enum {
    KS_ANY_EVENT = 1, /* ks_event_t * */
    KS_ANY_SEM = 2,   /* ks_sem_t * */
    KS_ANY_RECV = 3,  /* ks_channel_t *, opened with KS_CHANNEL_RECV */
    KS_ANY_SEND = 4,  /* ks_channel_t *, opened with KS_CHANNEL_SEND */
    KS_ANY_GET = 5,   /* ks_queue_t *: an item is there, or it is closed */
    KS_ANY_PUT = 6,   /* ks_queue_t *: a slot is free, or it is closed */
};

#define KS_ANY_MAX 64u

struct ks_any {
    unsigned kind;
    void *obj;
};

KS_EXTERN_C_BEGIN

KS_API int ks_wait_any(const struct ks_any *set, unsigned n, int64_t deadline, unsigned *index);

KS_EXTERN_C_END

#endif

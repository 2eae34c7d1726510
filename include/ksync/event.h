/* ksync/event.h - manual-reset event (Python's threading.Event).
 * Algorithm and proof: docs/event.md.
 *
 *   ks_event_t e = KS_EVENT_INIT;          (all zeros: a clear event)
 *   ks_event_set(&e);   ks_event_clear(&e);   ks_event_is_set(&e);
 *   ks_event_wait(&e);  ks_event_timedwait(&e, ks_deadline_after(ns));
 *
 * Return values: set, clear, wait: 0 or EINVAL; timedwait: 0, ETIMEDOUT
 * (still unset at the deadline), EINVAL (NULL, negative deadline);
 * is_set: 1 or 0 (0 for NULL); init: 0, EINVAL (NULL, unknown flags);
 * destroy: 0, EINVAL (NULL).  destroy changes nothing, so destroying twice
 * is 0 and a destroyed event may be initialised again; any other use after
 * destroy is undefined.
 *
 * A wait returns 0 once the event is set, and also if it was set and cleared
 * again while the thread waited: every set() wakes every thread waiting at
 * that moment, as Python's Event.wait() returns True after a set() even if
 * clear() followed (a set-then-clear "pulse" is never lost; docs/pitfalls.md item 30).
 * set() is a release operation and wait()/is_set() that see it acquire: what
 * the setter wrote before set() is visible after.  set() costs one atomic
 * compare-and-swap and makes one FUTEX_WAKE only if a waiter announced that
 * it sleeps (a waiter that timed out leaves that flag behind, which costs
 * the next set() one wake that finds nobody); is_set() is one load.  An event may be destroyed and freed as
 * soon as the waits it released have returned.
 */
#ifndef KSYNC_EVENT_H
#define KSYNC_EVENT_H

#include <ksync/annotate.h>
#include <ksync/common.h>
#include <ksync/time.h>

/* word: bit 0 SET, bit 1 SLEEPERS, bits 2-31 count of set() calls (wraps) */
#define KS_EVENT_SET 1u
#define KS_EVENT_SLEEPERS 2u
#define KS_EVENT_GEN 4u

typedef struct ks_event {
    uint32_t word;  /* the futex word */
    uint32_t flags; /* KS_SHARED or 0; constant after init */
} ks_event_t;

#define KS_EVENT_INIT {0u, 0u}

KS_EXTERN_C_BEGIN

KS_API int ks_event_init(ks_event_t *e, unsigned flags);
KS_API int ks_event_destroy(ks_event_t *e);
KS_API int ks_event_set(ks_event_t *e);
KS_API int ks_event_clear(ks_event_t *e);
KS_API int ks_event_timedwait(ks_event_t *e, int64_t deadline);

#if KS_ANNOTATING
/* What a race detector is told (ksync/annotate.h): a set happens before
 * the waits and looks that see it.  The library does both inside. */
static inline int ks_event_set_annotated_(ks_event_t *e)
{
    if (e) {
        KS_ANN_OBJECT(e);
        KS_ANN_RELEASE(e);
    }
    return (ks_event_set)(e);
}
static inline int ks_event_timedwait_annotated_(ks_event_t *e, int64_t deadline)
{
    if (e)
        KS_ANN_OBJECT(e);
    int r = (ks_event_timedwait)(e, deadline);
    if (!r)
        KS_ANN_ACQUIRE(e);
    return r;
}
#define ks_event_set(e) ks_event_set_annotated_(e)
#define ks_event_timedwait(e, deadline) ks_event_timedwait_annotated_((e), (deadline))
#endif

/* acquire: pairs with the release in set(), so whatever the setter wrote
 * before set() is visible to a thread that sees the event set. */
static inline int ks_event_is_set(const ks_event_t *e)
{
    int set = e ? (int)(__atomic_load_n(&e->word, __ATOMIC_ACQUIRE) & KS_EVENT_SET) : 0;
    if (set)
        KS_ANN_ACQUIRE(e);
    return set;
}

static inline int ks_event_wait(ks_event_t *e)
{
    if (KS_LIKELY(ks_event_is_set(e)))
        return 0;
    return ks_event_timedwait(e, KS_FOREVER);
}

KS_EXTERN_C_END

#endif

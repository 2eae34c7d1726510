/* ksync/annotate.h - what race detectors are told about ksync's locks.
 * docs/annotate.md.
 *
 * A race detector learns that a lock orders memory from the lock's own
 * calls: ThreadSanitizer intercepts pthread_mutex_lock, Helgrind and DRD
 * wrap it.  ksync's locks are futex words and atomics, and their slow paths
 * live in libksync, which a program built with -fsanitize=thread usually
 * links uninstrumented (a distribution package, `make install`): the
 * detector then sees neither the slow path's acquire nor its release, and
 * reports races on data that the lock protects.
 *
 * So the inline functions of ksync/mutex.h, rwlock.h, cond.h, rmutex.h,
 * sem.h, event.h and barrier.h, which are compiled into the program with
 * the program's flags, tell the detector themselves:
 *   -fsanitize=thread            __tsan_mutex_pre_lock / post_lock /
 *                                pre_unlock / post_unlock (TSan's
 *                                interface for custom mutexes), automatic
 *   -DKSYNC_HELGRIND             Helgrind's client requests
 *   -DKSYNC_DRD                  DRD's client requests
 *                                (valgrind/helgrind.h, valgrind/drd.h)
 * Otherwise every macro below is empty and the inline functions are the
 * same instructions as without this file.  The library's own sources are
 * built with KS_NO_ANNOTATIONS: the calls a program makes are annotated
 * once, at the program's side.
 */
#ifndef KSYNC_ANNOTATE_H
#define KSYNC_ANNOTATE_H

#if !defined(KS_NO_ANNOTATIONS)
#if defined(__SANITIZE_THREAD__)
#define KS_ANN_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KS_ANN_TSAN 1
#endif
#endif
#if !defined(KS_ANN_TSAN) && (defined(KSYNC_HELGRIND) || defined(KSYNC_DRD))
#define KS_ANN_VG 1
#endif
#endif

#if defined(KS_ANN_TSAN)
#include <sanitizer/tsan_interface.h>
/* rd: a read (shared) lock; may_fail: a try or timed lock (TSan wants the
 * same flags before and after, and "failed" only after a try) */
#define KS_ANN_FLAGS_(rd, may_fail) \
    (((rd) ? __tsan_mutex_read_lock : 0u) | ((may_fail) ? __tsan_mutex_try_lock : 0u))
#define KS_ANN_LOCK_PRE(l, rd, may_fail) __tsan_mutex_pre_lock((void *)(l), KS_ANN_FLAGS_(rd, may_fail))
#define KS_ANN_LOCK_POST(l, rd, may_fail, err) \
    __tsan_mutex_post_lock((void *)(l), KS_ANN_FLAGS_(rd, may_fail) | ((err) ? __tsan_mutex_try_lock_failed : 0u), 0)
#define KS_ANN_UNLOCK_PRE(l, rd) ((void)__tsan_mutex_pre_unlock((void *)(l), (rd) ? __tsan_mutex_read_lock : 0u))
#define KS_ANN_UNLOCK_POST(l, rd) __tsan_mutex_post_unlock((void *)(l), (rd) ? __tsan_mutex_read_lock : 0u)
/* a recursive mutex: the owner's relock is not a double lock */
#define KS_ANN_RLOCK_PRE(l, may_fail) \
    __tsan_mutex_pre_lock((void *)(l), KS_ANN_FLAGS_(0, may_fail) | __tsan_mutex_write_reentrant)
#define KS_ANN_RLOCK_POST(l, may_fail, err)                                                                    \
    __tsan_mutex_post_lock((void *)(l),                                                                       \
                           KS_ANN_FLAGS_(0, may_fail) | __tsan_mutex_write_reentrant |                        \
                               ((err) ? __tsan_mutex_try_lock_failed : 0u),                                   \
                           0)
#define KS_ANN_RUNLOCK_PRE(l) KS_ANN_UNLOCK_PRE(l, 0)
/* not a lock: what one thread did before `release` happens before what
 * another does after the `acquire` that saw it (a semaphore's post and
 * wait, an event's set and wait, a barrier) */
#define KS_ANN_RELEASE(o) __tsan_release((void *)(o))
#define KS_ANN_ACQUIRE(o) __tsan_acquire((void *)(o))
#define KS_ANN_OBJECT(o) ((void)0) /* TSan sees the library's atomics, or nothing of it */
#define KS_ANNOTATING 1
#elif defined(KS_ANN_VG)
#if defined(KSYNC_DRD)
#include <valgrind/drd.h>
#else
#include <valgrind/helgrind.h>
#endif
/* The lock word is accessed by atomics the tools do not model: not a race
 * to report.  The lock's ordering is told with the rwlock requests, which
 * both tools understand (is_w: 1 for an exclusive hold). */
#define KS_ANN_LOCK_PRE(l, rd, may_fail) \
    do {                                 \
        (void)(rd);                      \
        (void)(may_fail);                \
        ANNOTATE_BENIGN_RACE_SIZED((l), sizeof *(l), "ksync lock word"); \
    } while (0)
#define KS_ANN_LOCK_POST(l, rd, may_fail, err)     \
    do {                                           \
        (void)(may_fail);                          \
        if (!(err))                                \
            ANNOTATE_RWLOCK_ACQUIRED((l), !(rd)); \
    } while (0)
#define KS_ANN_UNLOCK_PRE(l, rd) \
    do {                         \
        (void)(rd);              \
        ANNOTATE_RWLOCK_RELEASED((l), !(rd)); \
    } while (0)
#define KS_ANN_UNLOCK_POST(l, rd) ((void)(rd))
/* A recursive mutex: the tools know no recursive write lock, so only its
 * first level is told (the depth is the owner's own field). */
#define KS_ANN_RLOCK_PRE(l, may_fail) KS_ANN_LOCK_PRE(l, 0, may_fail)
#define KS_ANN_RLOCK_POST(l, may_fail, err) KS_ANN_LOCK_POST(l, 0, may_fail, (err) || (l)->depth != 1)
#define KS_ANN_RUNLOCK_PRE(l)   \
    do {                        \
        if ((l)->depth == 1)    \
            KS_ANN_UNLOCK_PRE(l, 0); \
    } while (0)
#define KS_ANN_RELEASE(o) ANNOTATE_HAPPENS_BEFORE(o)
#define KS_ANN_ACQUIRE(o) ANNOTATE_HAPPENS_AFTER(o)
/* the object's own words, which the library reads and writes with atomics
 * the tools do not model (they see the library's instructions) */
#define KS_ANN_OBJECT(o) ANNOTATE_BENIGN_RACE_SIZED((o), sizeof *(o), "ksync object")
#define KS_ANNOTATING 1
#else
#define KS_ANN_LOCK_PRE(l, rd, may_fail) ((void)0)
#define KS_ANN_LOCK_POST(l, rd, may_fail, err) ((void)0)
#define KS_ANN_UNLOCK_PRE(l, rd) ((void)0)
#define KS_ANN_UNLOCK_POST(l, rd) ((void)0)
#define KS_ANN_RLOCK_PRE(l, may_fail) ((void)0)
#define KS_ANN_RLOCK_POST(l, may_fail, err) ((void)0)
#define KS_ANN_RUNLOCK_PRE(l) ((void)0)
#define KS_ANN_RELEASE(o) ((void)0)
#define KS_ANN_ACQUIRE(o) ((void)0)
#define KS_ANN_OBJECT(o) ((void)0)
#define KS_ANNOTATING 0
#endif

#endif

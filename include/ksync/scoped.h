/* ksync/scoped.h - scoped locking in C: Python's `with lock:` for ksync's
 * mutex, recursive mutex, rwlock, semaphore and pool.  Docs: docs/scoped.md.
 *
 * Two forms, built on the cleanup attribute of GCC and Clang, which runs a
 * function when a variable goes out of scope, whichever way control leaves
 * it (falling off the end, return, break, continue, goto out):
 *
 *   Statement form: held from here to the end of the enclosing block.
 *
 *       int take(struct account *a, long n)
 *       {
 *           KS_SCOPED_LOCK(&a->lock);
 *           if (a->balance < n)
 *               return ENOSPC;          // unlocked on the way out
 *           a->balance -= n;
 *           return 0;                   // unlocked here too
 *       }
 *
 *   Block form: held for the block (or statement) that follows.
 *
 *       ks_with_lock(&a->lock) {
 *           a->balance += n;
 *       }
 *
 *       int rc;
 *       ks_with_timedlock(&a->lock, ks_deadline_after(50 * 1000000), &rc) {
 *           a->balance += n;            // runs only if locked within 50 ms
 *       }
 *       if (rc == ETIMEDOUT) ...
 *
 * | object      | statement form          | block form                   | timed block form                           |
 * |-------------|-------------------------|------------------------------|--------------------------------------------|
 * | ks_mutex_t  | KS_SCOPED_LOCK(m)       | ks_with_lock(m)              | ks_with_timedlock(m, deadline, rc)         |
 * | ks_rmutex_t | KS_SCOPED_RMUTEX(r)     | ks_with_rmutex(r)            | ks_with_timedrmutex(r, deadline, rc)       |
 * | ks_rwlock_t | KS_SCOPED_RDLOCK(l)     | ks_with_rdlock(l)            | ks_with_timedrdlock(l, deadline, rc)       |
 * | ks_rwlock_t | KS_SCOPED_WRLOCK(l)     | ks_with_wrlock(l)            | ks_with_timedwrlock(l, deadline, rc)       |
 * | ks_sem_t    | KS_SCOPED_SEM(s)        | ks_with_sem(s)               | ks_with_timedsem(s, deadline, rc)          |
 * | ks_pool_t   | KS_SCOPED_BORROW(p, r)  | ks_with_borrow(p, resp)      | ks_with_timedborrow(p, resp, deadline, rc) |
 *
 * KS_SCOPED_BORROW(p, r) stores the borrowed resource in the void * lvalue
 * r; the block forms take its address, resp.  The guard returns the value it
 * borrowed, even if the block changed r.
 *
 * Errors.  The untimed forms (statement and block) cannot run their code
 * without the object, and the call cannot return an error through a
 * declaration: when the acquisition fails (EINVAL for a NULL or never
 * initialised object, EAGAIN for a recursion depth or reader count at its
 * limit) they print the call, the file and
 * line and the error to stderr and abort(), as C++'s std::lock_guard ends the
 * program through an uncaught std::system_error.  Code that must handle
 * those errors uses a timed form: it stores the acquisition's result in *rc
 * (rc may be NULL) and runs the block only if that result is 0.  A deadline
 * already past makes it a try (ETIMEDOUT when the object is taken).  The
 * release at the end of the scope cannot report an error either: if it fails
 * (EPERM after the block released the object itself, EOVERFLOW from a
 * bounded semaphore the block posted) the guard aborts the same way.
 *
 * What the forms do not do:
 * - break and continue inside a block form leave the block, not a loop
 *   around it: the block form is a for statement that runs once (as the
 *   Linux kernel's scoped_guard).  Python's `with` inside a loop lets break
 *   leave the loop; in C, use the statement form in the loop body for that.
 * - longjmp (and siglongjmp) out of the scope skips the release, as it
 *   skips every cleanup.  C code compiled without -fexceptions that a C++
 *   exception unwinds through does not release either.
 * - A jump into the scope of a guard from outside it is refused by Clang
 *   and must not be written for GCC either: the release would run on a
 *   guard never initialised.  That includes a `case` label of a switch
 *   placed after a statement-form guard in the switch's own block (give
 *   each case its braces).  GCC reports such jumps only with
 *   -Wjump-misses-init, which neither -Wall nor -Wextra turns on.
 * - The statement form is a declaration: before C23 it cannot follow a
 *   label directly, and `if (x) KS_SCOPED_LOCK(m);` does not compile (it
 *   would hold the lock for no statement at all).
 */
#ifndef KSYNC_SCOPED_H
#define KSYNC_SCOPED_H

#if !defined(__has_attribute)
#error "ksync/scoped.h needs __attribute__((cleanup)) (GCC 5+ or Clang); this compiler cannot be asked for it. Use the paired calls (ks_mutex_lock/ks_mutex_unlock) instead."
#elif !__has_attribute(cleanup)
#error "ksync/scoped.h needs __attribute__((cleanup)) (GCC or Clang), which this compiler lacks. Use the paired calls (ks_mutex_lock/ks_mutex_unlock) instead."
#endif

#include <ksync/common.h>
#include <ksync/mutex.h>
#include <ksync/pool.h>
#include <ksync/rmutex.h>
#include <ksync/rwlock.h>
#include <ksync/sem.h>
#include <ksync/time.h>
#include <stddef.h>

/* What a guard holds.  Not for users: the macros name it.  obj is NULL when
 * nothing is held (a timed acquisition that failed), so the release at the
 * end of the scope does nothing. */
typedef struct ks_scoped {
    void *obj;        /* the object held, or NULL */
    void *res;        /* a pool guard: the resource borrowed */
    const char *site; /* "file:line" of the guard, for the abort message */
    int kind;         /* KS_SCOPED_MUTEX_ ... */
    int once;         /* block forms: 1 until the block has run */
} ks_scoped_t;

#define KS_SCOPED_MUTEX_ 1
#define KS_SCOPED_RMUTEX_ 2
#define KS_SCOPED_RWLOCK_ 3
#define KS_SCOPED_SEM_ 4
#define KS_SCOPED_POOL_ 5

KS_EXTERN_C_BEGIN

/* Prints "ksync: <call> failed at <site>: <strerror> (errno <n>)" and
 * aborts.  Out of line and cold, so that the guards' fast paths are the
 * paired calls' fast paths plus one predictable branch. */
KS_API void ks_scoped_fail_slow(const char *call, const char *site, int err)
    __attribute__((noreturn, cold));

KS_EXTERN_C_END

static inline void ks_scoped_release_(ks_scoped_t *g)
{
    int rc = 0;
    const char *call = "";
    if (g->obj == NULL)
        return;
    switch (g->kind) {
    case KS_SCOPED_MUTEX_:
        rc = ks_mutex_unlock((ks_mutex_t *)g->obj);
        call = "ks_mutex_unlock";
        break;
    case KS_SCOPED_RMUTEX_:
        rc = ks_rmutex_unlock((ks_rmutex_t *)g->obj);
        call = "ks_rmutex_unlock";
        break;
    case KS_SCOPED_RWLOCK_:
        rc = ks_rwlock_unlock((ks_rwlock_t *)g->obj);
        call = "ks_rwlock_unlock";
        break;
    case KS_SCOPED_SEM_:
        rc = ks_sem_post((ks_sem_t *)g->obj);
        call = "ks_sem_post";
        break;
    case KS_SCOPED_POOL_:
        rc = ks_pool_return((ks_pool_t *)g->obj, g->res);
        call = "ks_pool_return";
        break;
    }
    if (KS_UNLIKELY(rc != 0))
        ks_scoped_fail_slow(call, g->site, rc);
}

/* The acquisitions.  An untimed one aborts on failure; a timed one stores
 * its result in *rc (if rc is not NULL) and leaves the guard empty on
 * failure. */
static inline ks_scoped_t ks_scoped_held_(void *obj, void *res, const char *site, int kind)
{
    ks_scoped_t g = {obj, res, site, kind, 1};
    return g;
}

static inline ks_scoped_t ks_scoped_result_(int e, int *rc, void *obj, void *res, const char *site,
                                            int kind)
{
    if (rc != NULL)
        *rc = e;
    return ks_scoped_held_(e == 0 ? obj : NULL, res, site, kind);
}

/* An untimed acquisition's result: the guard, or the report and abort. */
static inline ks_scoped_t ks_scoped_must_(int e, const char *call, void *obj, void *res,
                                          const char *site, int kind)
{
    if (KS_UNLIKELY(e != 0))
        ks_scoped_fail_slow(call, site, e);
    return ks_scoped_held_(obj, res, site, kind);
}

static inline ks_scoped_t ks_scoped_lock_(ks_mutex_t *m, const char *site)
{
    return ks_scoped_must_(ks_mutex_lock(m), "ks_mutex_lock", m, NULL, site, KS_SCOPED_MUTEX_);
}
static inline ks_scoped_t ks_scoped_timedlock_(ks_mutex_t *m, int64_t deadline, int *rc,
                                               const char *site)
{
    return ks_scoped_result_(ks_mutex_timedlock(m, deadline), rc, m, NULL, site, KS_SCOPED_MUTEX_);
}

static inline ks_scoped_t ks_scoped_rmutex_(ks_rmutex_t *r, const char *site)
{
    return ks_scoped_must_(ks_rmutex_lock(r), "ks_rmutex_lock", r, NULL, site, KS_SCOPED_RMUTEX_);
}
static inline ks_scoped_t ks_scoped_timedrmutex_(ks_rmutex_t *r, int64_t deadline, int *rc,
                                                 const char *site)
{
    return ks_scoped_result_(ks_rmutex_timedlock(r, deadline), rc, r, NULL, site, KS_SCOPED_RMUTEX_);
}

static inline ks_scoped_t ks_scoped_rdlock_(ks_rwlock_t *l, const char *site)
{
    return ks_scoped_must_(ks_rwlock_rdlock(l), "ks_rwlock_rdlock", l, NULL, site, KS_SCOPED_RWLOCK_);
}
static inline ks_scoped_t ks_scoped_timedrdlock_(ks_rwlock_t *l, int64_t deadline, int *rc,
                                                 const char *site)
{
    return ks_scoped_result_(ks_rwlock_timedrdlock(l, deadline), rc, l, NULL, site,
                             KS_SCOPED_RWLOCK_);
}

static inline ks_scoped_t ks_scoped_wrlock_(ks_rwlock_t *l, const char *site)
{
    return ks_scoped_must_(ks_rwlock_wrlock(l), "ks_rwlock_wrlock", l, NULL, site, KS_SCOPED_RWLOCK_);
}
static inline ks_scoped_t ks_scoped_timedwrlock_(ks_rwlock_t *l, int64_t deadline, int *rc,
                                                 const char *site)
{
    return ks_scoped_result_(ks_rwlock_timedwrlock(l, deadline), rc, l, NULL, site,
                             KS_SCOPED_RWLOCK_);
}

static inline ks_scoped_t ks_scoped_sem_(ks_sem_t *s, const char *site)
{
    return ks_scoped_must_(ks_sem_wait(s), "ks_sem_wait", s, NULL, site, KS_SCOPED_SEM_);
}
static inline ks_scoped_t ks_scoped_timedsem_(ks_sem_t *s, int64_t deadline, int *rc,
                                              const char *site)
{
    return ks_scoped_result_(ks_sem_timedwait(s, deadline), rc, s, NULL, site, KS_SCOPED_SEM_);
}

static inline ks_scoped_t ks_scoped_timedborrow_(ks_pool_t *p, void **res, int64_t deadline,
                                                 int *rc, const char *site)
{
    void *r = NULL;
    int e = ks_pool_borrow(p, deadline, &r);
    if (e == 0)
        *res = r;
    return ks_scoped_result_(e, rc, p, r, site, KS_SCOPED_POOL_);
}
static inline ks_scoped_t ks_scoped_borrow_(ks_pool_t *p, void **res, const char *site)
{
    int e;
    ks_scoped_t g = ks_scoped_timedborrow_(p, res, KS_FOREVER, &e, site);
    return ks_scoped_must_(e, "ks_pool_borrow", g.obj, g.res, site, KS_SCOPED_POOL_);
}

/* ---- the macros ------------------------------------------------------------ */

#define KS_SCOPED_STR2_(x) #x
#define KS_SCOPED_STR_(x) KS_SCOPED_STR2_(x)
#define KS_SCOPED_SITE_ __FILE__ ":" KS_SCOPED_STR_(__LINE__)
#define KS_SCOPED_CAT2_(a, b) a##b
#define KS_SCOPED_CAT_(a, b) KS_SCOPED_CAT2_(a, b)
/* A name of its own for each guard, so that guards nest and sit side by side
 * in one block (__COUNTER__: GCC and Clang, like the attribute). */
#define KS_SCOPED_NAME_ KS_SCOPED_CAT_(ks_scoped_guard_, __COUNTER__)
#define KS_SCOPED_VAR_(name)                                                                       \
    ks_scoped_t name __attribute__((cleanup(ks_scoped_release_), unused))

/* The statement forms declare the guard. */
#define KS_SCOPED_LOCK(m) KS_SCOPED_VAR_(KS_SCOPED_NAME_) = ks_scoped_lock_((m), KS_SCOPED_SITE_)
#define KS_SCOPED_RMUTEX(r)                                                                        \
    KS_SCOPED_VAR_(KS_SCOPED_NAME_) = ks_scoped_rmutex_((r), KS_SCOPED_SITE_)
#define KS_SCOPED_RDLOCK(l)                                                                        \
    KS_SCOPED_VAR_(KS_SCOPED_NAME_) = ks_scoped_rdlock_((l), KS_SCOPED_SITE_)
#define KS_SCOPED_WRLOCK(l)                                                                        \
    KS_SCOPED_VAR_(KS_SCOPED_NAME_) = ks_scoped_wrlock_((l), KS_SCOPED_SITE_)
#define KS_SCOPED_SEM(s) KS_SCOPED_VAR_(KS_SCOPED_NAME_) = ks_scoped_sem_((s), KS_SCOPED_SITE_)
#define KS_SCOPED_BORROW(p, r)                                                                     \
    KS_SCOPED_VAR_(KS_SCOPED_NAME_) = ks_scoped_borrow_((p), &(r), KS_SCOPED_SITE_)

/* The block forms: a for statement whose one pass is the block.  The guard
 * is declared in the for's first clause, so it is released when the for
 * statement ends, whichever way.  ks_with_() takes the guard's name as an
 * argument, so that __COUNTER__ is expanded once and the three mentions
 * agree. */
#define ks_with_(g, init) for (KS_SCOPED_VAR_(g) = (init); g.obj != NULL && g.once; g.once = 0)

#define ks_with_lock(m) ks_with_(KS_SCOPED_NAME_, ks_scoped_lock_((m), KS_SCOPED_SITE_))
#define ks_with_timedlock(m, deadline, rc)                                                         \
    ks_with_(KS_SCOPED_NAME_, ks_scoped_timedlock_((m), (deadline), (rc), KS_SCOPED_SITE_))
#define ks_with_rmutex(r) ks_with_(KS_SCOPED_NAME_, ks_scoped_rmutex_((r), KS_SCOPED_SITE_))
#define ks_with_timedrmutex(r, deadline, rc)                                                       \
    ks_with_(KS_SCOPED_NAME_, ks_scoped_timedrmutex_((r), (deadline), (rc), KS_SCOPED_SITE_))
#define ks_with_rdlock(l) ks_with_(KS_SCOPED_NAME_, ks_scoped_rdlock_((l), KS_SCOPED_SITE_))
#define ks_with_timedrdlock(l, deadline, rc)                                                       \
    ks_with_(KS_SCOPED_NAME_, ks_scoped_timedrdlock_((l), (deadline), (rc), KS_SCOPED_SITE_))
#define ks_with_wrlock(l) ks_with_(KS_SCOPED_NAME_, ks_scoped_wrlock_((l), KS_SCOPED_SITE_))
#define ks_with_timedwrlock(l, deadline, rc)                                                       \
    ks_with_(KS_SCOPED_NAME_, ks_scoped_timedwrlock_((l), (deadline), (rc), KS_SCOPED_SITE_))
#define ks_with_sem(s) ks_with_(KS_SCOPED_NAME_, ks_scoped_sem_((s), KS_SCOPED_SITE_))
#define ks_with_timedsem(s, deadline, rc)                                                          \
    ks_with_(KS_SCOPED_NAME_, ks_scoped_timedsem_((s), (deadline), (rc), KS_SCOPED_SITE_))
#define ks_with_borrow(p, resp) ks_with_(KS_SCOPED_NAME_, ks_scoped_borrow_((p), (resp), KS_SCOPED_SITE_))
#define ks_with_timedborrow(p, resp, deadline, rc)                                                 \
    ks_with_(KS_SCOPED_NAME_,                                                                      \
             ks_scoped_timedborrow_((p), (resp), (deadline), (rc), KS_SCOPED_SITE_))

#endif

/* ksync/lockstat.h - lock statistics: who waits for which lock, how often and
 * how long.  Algorithm, modes, costs and sample reports: docs/lockstat.md.
 *
 *   KSYNC_LOCKSTAT=1 ./prog         contention mode from the start, report at exit
 *   KSYNC_LOCKSTAT=all ./prog       every acquisition counted, report at exit
 *   ks_lockstat_set(KS_LOCKSTAT_CONTENTION);  ... ks_lockstat_report(stderr);
 *
 * Modes:
 *   KS_LOCKSTAT_OFF         nothing is recorded; the fast paths are those of
 *                           a build without the feature; the slow paths load
 *                           the mode (and, once statistics have been on, an
 *                           unlock looks for a hold stamp left from then).
 *   KS_LOCKSTAT_CONTENTION  only slow paths record: contended acquisitions,
 *                           wait times (total, max, histogram), and hold
 *                           times of the acquisitions after a wait.  The
 *                           uncontended fast paths are unchanged, so this
 *                           mode can stay on in production.  `acquisitions`
 *                           counts only what went through a slow path.
 *   KS_LOCKSTAT_ALL         a lock initialised (or first seen on a slow
 *                           path) in this mode is marked, and every lock and
 *                           unlock of it takes the slow path: exact
 *                           acquisition counts and every hold time, at the
 *                           cost of a table lookup per acquisition.
 * Covered: ks_mutex and what is built on it (ks_cond's mutex, ks_rmutex's
 * first level), ks_rwlock (a record per side: KS_LOCK_RWLOCK_READ and
 * _WRITE; its mark is a bit of its bias word, ksync/rwlock.h), ks_sem (the
 * waits that reach the library: it has no mark, so even in ALL a wait that
 * finds a unit stays inline and unseen unless built with -DKSYNC_DEBUG; no
 * holds), and through the drop-in layer (ksync-run --stat) the pthread
 * mutexes, rwlocks, spinlocks and sem_t.  CONTENTION mode times the holds
 * of mutex acquisitions after a wait and of rwlock write acquisitions after
 * a wait (not of readers: a read unlock may take the fast path).  Not
 * covered: ks_robust, the robust rwlock, and waits on a semaphore through
 * ks_wait_any.
 *
 * Classes: a lock's class is the name given with ks_lock_name, else the
 * call site of its ks_*_init, else the call site of its first recorded
 * acquisition (a statically initialised lock).  Reports aggregate by class.
 *
 * Return values: set: the previous mode, or -EINVAL for an unknown mode,
 * -ENOMEM (no table); lock_name: 0, EINVAL (NULL lock or name), ENOSPC
 * (the table is full), ENOMEM; read: the number of locks in the table (it
 * writes at most max of them); report: 0, EINVAL (NULL file), ENOMEM, EIO
 * (the stream's error flag was set after writing).
 */
#ifndef KSYNC_LOCKSTAT_H
#define KSYNC_LOCKSTAT_H

#include <ksync/common.h>
#include <stdio.h>

#define KS_LOCKSTAT_OFF 0
#define KS_LOCKSTAT_CONTENTION 1
#define KS_LOCKSTAT_ALL 2

/* Wait-time histogram: bucket b counts waits in [2^b, 2^(b+1)) ns (bucket 0
 * also holds 0 ns; the last one everything from 2^31 ns, about 2 s, up). */
#define KS_LOCKSTAT_BUCKETS 32

/* What a record counts.  An rwlock has two records, one per side (the
 * same lock address, two kinds).  A semaphore has no holder: its holds are
 * not measured (0). */
enum ks_lock_kind {
    KS_LOCK_MUTEX = 1,
    KS_LOCK_RWLOCK_READ = 2,
    KS_LOCK_RWLOCK_WRITE = 3,
    KS_LOCK_SEM = 4,
    KS_LOCK_SPIN = 5 /* the drop-in layer's pthread_spinlock_t */
};

/* A kind as reports print it: "mutex", "rw-rd", "rw-wr", "sem", "spin",
 * or "?" (a lock named before it was first used). */
static inline const char *ks_lockstat_kind_name(unsigned kind)
{
    return kind == KS_LOCK_MUTEX            ? "mutex"
           : kind == KS_LOCK_RWLOCK_READ  ? "rw-rd"
           : kind == KS_LOCK_RWLOCK_WRITE ? "rw-wr"
           : kind == KS_LOCK_SEM          ? "sem"
           : kind == KS_LOCK_SPIN         ? "spin"
                                          : "?";
}

struct ks_lockstat {
    const void *lock;     /* the lock's address in this process */
    const char *name;     /* ks_lock_name's name, or NULL */
    const void *site;     /* the call site that defines the class (see above) */
    unsigned kind;        /* enum ks_lock_kind */
    uint64_t acquisitions; /* every one in KS_LOCKSTAT_ALL; slow-path ones otherwise */
    uint64_t contended;   /* acquisitions that found the lock held (or reserved) */
    uint64_t wait_ns, wait_max_ns; /* over the contended acquisitions */
    uint64_t holds;       /* acquisitions whose hold time was measured */
    uint64_t hold_ns, hold_max_ns;
    uint64_t wait_hist[KS_LOCKSTAT_BUCKETS];
};

/* ---- the live view (ksync-top PID) ----
 * ks_lockstat_publish(ms) starts a thread that writes the table by class,
 * most contended first, into the POSIX shared-memory object
 * KS_LOCKSTAT_PAGE_PREFIX "<pid>" every ms milliseconds; 0 stops it and
 * removes the object (as the process's exit does).  KSYNC_LOCKSTAT starts
 * it at 1000 ms (KSYNC_LOCKSTAT_TOP=ms, or 0 for none).  Returns 0, EINVAL
 * (ms < 0), or the errno of shm_open, ftruncate, mmap, pthread_create.
 * A reader copies the page and keeps the copy if `seq` was even and
 * unchanged around the copy; the counts of a running thread may lag by the
 * events its shard still holds (docs/lockstat.md). */
#define KS_LOCKSTAT_PAGE_PREFIX "/ksync-lockstat."
#define KS_LOCKSTAT_PAGE_MAGIC 0x6b736c6f636b7374ull /* "kslockst" */
#define KS_LOCKSTAT_PAGE_VERSION 1u
#define KS_LOCKSTAT_PAGE_ROWS 256u

struct ks_lockstat_row {
    char cls[80];          /* the class: its name or its site, NUL-terminated */
    uint32_t kind, locks;  /* enum ks_lock_kind; locks in the class */
    uint64_t acquisitions, contended, wait_ns, wait_max_ns, holds, hold_ns, hold_max_ns;
};

struct ks_lockstat_page {
    uint64_t magic;
    uint32_t version, rows_max;
    uint32_t seq;          /* odd while the publisher writes */
    uint32_t rows;         /* rows filled (the most contended classes) */
    uint32_t classes, locks; /* in the whole table */
    uint32_t mode;         /* KS_LOCKSTAT_* */
    int32_t pid;
    uint64_t updated_ns;   /* CLOCK_REALTIME of the last snapshot */
    uint64_t interval_ns;
    char prog[32];
    struct ks_lockstat_row row[KS_LOCKSTAT_PAGE_ROWS];
};

KS_EXTERN_C_BEGIN

KS_API int ks_lockstat_set(int mode);
KS_API int ks_lockstat_publish(int interval_ms);
KS_API int ks_lockstat_mode(void);
KS_API int ks_lock_name(const void *lock, const char *name);
KS_API size_t ks_lockstat_read(struct ks_lockstat *out, size_t max);
KS_API void ks_lockstat_reset(void);
KS_API int ks_lockstat_report(FILE *f);

KS_EXTERN_C_END

#endif

/* src/dropin/psem.c - sem_* on ks_sem, and named semaphores.  docs/dropin.md.
 *
 * Unnamed: a ks_sem_t at the start of glibc's 32-byte sem_t (all zeros is a
 * semaphore of value 0).  As glibc documents: errors are -1 and errno;
 * sem_wait, sem_timedwait and sem_clockwait are cancellation points that
 * act on a pending cancellation even when they need not block, and a
 * signal handler that interrupts their sleep ends them with EINTR (the
 * kernel restarts an untimed wait by itself when the handler has
 * SA_RESTART, as under glibc; a timed one ends with EINTR either way);
 * sem_post past SEM_VALUE_MAX is EOVERFLOW.
 *
 * Named: sem_open maps /dev/shm/sem.NAME, as glibc does, so every process
 * that opens NAME through this layer shares the object.  A new semaphore
 * is made whole in a temporary file and then linked to its name, so no
 * process ever maps a half-made one; O_EXCL is link's EEXIST.  Opening a
 * name this process already has open returns the same address (POSIX), by
 * a table keyed by the file's device and inode with a count per sem_open;
 * sem_close unmaps at the last close.  The table's lock is a ks_mutex
 * taken around the table only; fork() in another thread while it is held
 * would leave it locked in the child, so an atfork handler takes it around
 * fork.  A semaphore file made by a process without the layer holds glibc's
 * layout, not ksync's (a process-shared object must be used by one
 * implementation: docs/dropin.md).
 */
#include "dropin.h"

#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(sizeof(ks_sem_t) <= sizeof(sem_t), "fits in sem_t");

static ks_sem_t *psem(sem_t *s)
{
    return (ks_sem_t *)(void *)s;
}

static int fail(int e)
{
    errno = e;
    return -1;
}

KS_PT_EXPORT int sem_init(sem_t *sem, int pshared, unsigned value)
{
    if (value > SEM_VALUE_MAX)
        return fail(EINVAL);
    memset(sem, 0, sizeof *sem);
    /* the program's call site: the class of lock statistics */
    int r = ks_sem_init_at(psem(sem), value, KS_SEM_VALUE_MAX, pshared ? KS_SHARED : 0, __builtin_return_address(0));
    return r ? fail(r) : 0;
}

KS_PT_EXPORT int sem_destroy(sem_t *sem)
{
    (void)sem; /* as glibc: nothing to release, and no check */
    return 0;
}

KS_PT_EXPORT int sem_post(sem_t *sem)
{
    int r = ks_sem_post(psem(sem));
    return r ? fail(r) : 0;
}

KS_PT_EXPORT int sem_trywait(sem_t *sem)
{
    int r = ks_pt_counting_all() ? ks_sem_trywait_at(psem(sem), __builtin_return_address(0))
                                 : ks_sem_trywait(psem(sem));
    return r ? fail(r) : 0;
}

KS_PT_EXPORT int sem_getvalue(sem_t *sem, int *value)
{
    *value = ks_sem_value(psem(sem));
    return 0;
}

/* Out of line: the fast path then needs no stack frame to keep `site`. */
static __attribute__((noinline)) int sem_wait_slow(sem_t *sem, int64_t deadline, unsigned opts,
                                                   const void *site)
{
    int r = ks_sem_wait_at(psem(sem), deadline, KS_WAIT_CANCEL | KS_WAIT_EINTR | opts, site);
    return r ? fail(r) : 0;
}

/* site: the program's call site (lock statistics) */
/* opts: KS_WAIT_UNTIMED for sem_wait (a timed call whose abstime is too
 * far to count is KS_FOREVER too, but must stay a timed wait) */
static inline int sem_wait_until(sem_t *sem, int64_t deadline, unsigned opts, const void *site)
{
    pthread_testcancel(); /* POSIX: shall occur, blocking or not */
    if (!ks_pt_counting_all() && ks_sem_trywait(psem(sem)) == 0)
        return 0;
    return sem_wait_slow(sem, deadline, opts, site);
}

KS_PT_EXPORT int sem_wait(sem_t *sem)
{
    return sem_wait_until(sem, KS_FOREVER, KS_WAIT_UNTIMED, __builtin_return_address(0));
}

static int clockwait(sem_t *sem, clockid_t clock, const struct timespec *abstime, const void *site)
{
    int64_t deadline;
    int r = ks_pt_deadline(clock, abstime, &deadline);
    if (r)
        return fail(r);
    /* An abstime too far to count: still a timed futex wait, as glibc's,
     * which a handler ends with EINTR even under SA_RESTART.  As
     * KS_FOREVER, a private semaphore's sleep was one untimed wait, which
     * the kernel restarts (a review's reproducer: restarted 20 times in 20
     * where glibc returned EINTR). */
    if (deadline == KS_FOREVER)
        deadline = KS_FOREVER - 1;
    return sem_wait_until(sem, deadline, 0, site);
}

KS_PT_EXPORT int sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *abstime)
{
    return clockwait(sem, clock, abstime, __builtin_return_address(0));
}

KS_PT_EXPORT int sem_timedwait(sem_t *sem, const struct timespec *abstime)
{
    return clockwait(sem, CLOCK_REALTIME, abstime, __builtin_return_address(0));
}

/* ---- named semaphores ------------------------------------------------------------ */

#define SHM_DIR "/dev/shm/"
#define SEM_PREFIX "sem."

struct mapping {
    struct mapping *next;
    dev_t dev;
    ino_t ino;
    sem_t *addr;
    unsigned opens;
};

static ks_mutex_t table_lock = KS_MUTEX_INIT;
static struct mapping *table;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void table_enter(void)
{
    ks_mutex_lock(&table_lock);
}

static void table_leave(void)
{
    ks_mutex_unlock(&table_lock);
}

static void add_atfork(void)
{
    pthread_atfork(table_enter, table_leave, table_leave);
}

/* "/NAME" (leading slashes skipped, as glibc) -> "/dev/shm/sem.NAME". */
static int sem_path(const char *name, char *path, size_t size)
{
    while (*name == '/')
        name++;
    size_t n = strlen(name);
    if (n == 0 || strchr(name, '/'))
        return EINVAL; /* "." and ".." are names like any other, as in glibc */
    if (n + sizeof SEM_PREFIX - 1 > NAME_MAX)
        return ENAMETOOLONG;
    snprintf(path, size, "%s%s%s", SHM_DIR, SEM_PREFIX, name);
    return 0;
}

/* A new semaphore file under a temporary name, linked to `path`: its open
 * descriptor, or -errno (-EEXIST if the name was taken meanwhile).  The
 * temporary file is created with open(O_CREAT | O_EXCL, mode), so the
 * umask applies, as for glibc's sem_open (mkstemp's 0600 followed by a
 * fchmod would not apply it). */
static int create_linked(const char *path, mode_t mode, unsigned value)
{
    char tmp[sizeof SHM_DIR + 32];
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 100; tries++) {
        snprintf(tmp, sizeof tmp, "%ssem.ks%016llx", SHM_DIR, (unsigned long long)ks_random_u64());
        fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode & 0777);
        if (fd < 0 && errno != EEXIST)
            return -errno;
    }
    if (fd < 0)
        return -EEXIST;
    int e = 0;
    sem_t init;
    memset(&init, 0, sizeof init);
    ks_sem_init(psem(&init), value, KS_SHARED);
    errno = 0;
    if (write(fd, &init, sizeof init) != (ssize_t)sizeof init)
        e = errno ? errno : EIO;
    else if (link(tmp, path) != 0)
        e = errno;
    unlink(tmp);
    if (e) {
        close(fd);
        return -e;
    }
    return fd;
}

/* The mapping of an open file, made or shared: the address, or NULL with
 * errno set.  Called with the table locked. */
static sem_t *map_locked(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return NULL;
    for (struct mapping *m = table; m; m = m->next)
        if (m->dev == st.st_dev && m->ino == st.st_ino) {
            m->opens++;
            return m->addr;
        }
    if (st.st_size < (off_t)sizeof(sem_t)) {
        errno = EINVAL; /* not a semaphore file */
        return NULL;
    }
    struct mapping *m = malloc(sizeof *m);
    if (!m)
        return NULL;
    void *a = mmap(NULL, sizeof(sem_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (a == MAP_FAILED) {
        free(m);
        return NULL;
    }
    *m = (struct mapping){table, st.st_dev, st.st_ino, a, 1};
    table = m;
    return a;
}

KS_PT_EXPORT sem_t *sem_open(const char *name, int oflag, ...)
{
    char path[sizeof SHM_DIR + sizeof SEM_PREFIX + NAME_MAX + 1];
    int e = sem_path(name, path, sizeof path);
    if (e) {
        errno = e;
        return SEM_FAILED;
    }
    mode_t mode = 0;
    unsigned value = 0;
    if (oflag & O_CREAT) {
        va_list ap;
        va_start(ap, oflag);
        mode = (mode_t)va_arg(ap, int);
        value = va_arg(ap, unsigned);
        va_end(ap);
    }
    pthread_once(&atfork_once, add_atfork);
    int fd;
    for (;;) {
        if (!(oflag & O_CREAT) || !(oflag & O_EXCL)) {
            fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
            if (fd >= 0)
                break;
            if (errno != ENOENT || !(oflag & O_CREAT))
                return SEM_FAILED;
        }
        if (value > SEM_VALUE_MAX) { /* only a semaphore being made has a value to check */
            errno = EINVAL;
            return SEM_FAILED;
        }
        fd = create_linked(path, mode, value);
        if (fd >= 0)
            break;
        if (fd != -EEXIST || (oflag & O_EXCL)) {
            errno = -fd;
            return SEM_FAILED;
        }
        /* someone else made it between our open and our link: open theirs */
    }
    table_enter();
    sem_t *s = map_locked(fd);
    e = errno;
    table_leave();
    close(fd);
    if (!s) {
        errno = e;
        return SEM_FAILED;
    }
    return s;
}

KS_PT_EXPORT int sem_close(sem_t *sem)
{
    table_enter();
    struct mapping **p = &table;
    while (*p && (*p)->addr != sem)
        p = &(*p)->next;
    struct mapping *m = *p;
    if (!m) {
        table_leave();
        return fail(EINVAL);
    }
    if (--m->opens == 0)
        *p = m->next;
    else
        m = NULL;
    table_leave();
    if (m) {
        munmap(m->addr, sizeof(sem_t));
        free(m);
    }
    return 0;
}

KS_PT_EXPORT int sem_unlink(const char *name)
{
    char path[sizeof SHM_DIR + sizeof SEM_PREFIX + NAME_MAX + 1];
    int e = sem_path(name, path, sizeof path);
    if (e)
        return fail(e);
    if (unlink(path) != 0)
        return fail(errno == EPERM ? EACCES : errno);
    return 0;
}

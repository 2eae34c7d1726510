/* tests/test_lockstat_debug.c - lock statistics in a -DKSYNC_DEBUG build
 * (docs/lockstat.md): the inline fast paths of this file's mutexes, rwlocks
 * and semaphores call the library, so statically initialised locks and
 * semaphore waits that find a unit are counted from the first call. */
#define KSYNC_DEBUG 1
#include "helpers.h"

static struct ks_lockstat stat_of(const void *lock, unsigned kind)
{
    struct ks_lockstat all[16];
    size_t n = ks_lockstat_read(all, 16);
    for (size_t i = 0; i < n && i < 16; i++)
        if (all[i].lock == lock && all[i].kind == kind)
            return all[i];
    cr_assert_fail("no record of kind %u for %p among %zu", kind, lock, n);
    struct ks_lockstat none = {0};
    return none;
}

Test(lockstat_debug, every_semaphore_wait_is_counted)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    static ks_sem_t s = KS_SEM_INIT(3);
    cr_assert_eq(ks_sem_wait(&s), 0);
    cr_assert_eq(ks_sem_trywait(&s), 0);
    cr_assert_eq(ks_sem_timedwait(&s, ks_deadline_after(1000000)), 0);
    cr_assert_eq(ks_sem_trywait(&s), EAGAIN);
    cr_assert_eq(ks_sem_timedwait(&s, ks_deadline_after(1000000)), ETIMEDOUT);
    cr_assert_eq(ks_sem_post(&s), 0);
    cr_assert_eq(ks_sem_value(&s), 1);
    struct ks_lockstat st = stat_of(&s, KS_LOCK_SEM);
    cr_assert_eq(st.acquisitions, 3, "wait, trywait and timedwait that found a unit");
    cr_assert_eq(st.contended, 0);
    cr_assert_eq(st.holds, 0);
    cr_assert_eq(ks_sem_trywait(NULL), EINVAL);
    cr_assert_eq(ks_sem_wait(NULL), EINVAL);
    cr_assert_eq(ks_sem_timedwait(&s, -1), EINVAL);
}

Test(lockstat_debug, a_static_rwlock_is_counted_from_its_first_call)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    static ks_rwlock_t l = KS_RWLOCK_INIT;
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(ks_rwlock_rdlock(&l), 0);
        cr_assert_eq(ks_rwlock_tryrdlock(&l), 0);
        cr_assert_eq(ks_rwlock_trywrlock(&l), EBUSY);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        cr_assert_eq(ks_rwlock_wrlock(&l), 0);
        cr_assert_eq(ks_rwlock_timedrdlock(&l, 0), ETIMEDOUT);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        cr_assert_eq(ks_rwlock_trywrlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    }
    struct ks_lockstat rd = stat_of(&l, KS_LOCK_RWLOCK_READ), wr = stat_of(&l, KS_LOCK_RWLOCK_WRITE);
    cr_assert_eq(rd.acquisitions, 10);
    cr_assert_eq(rd.holds, 10);
    cr_assert_eq(wr.acquisitions, 10);
    cr_assert_eq(wr.holds, 10);
    cr_assert_eq(l.state, 0u);
}

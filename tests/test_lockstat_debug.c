/* tests/test_lockstat_debug.c - lock statistics in a -DKSYNC_DEBUG build
 * (docs/lockstat.md): the inline fast paths of this file's mutexes, rwlocks
 * and semaphores call the library, so statically initialised locks and
 * semaphore waits that find a unit are counted from the first call. */
#define KSYNC_DEBUG 1
#include "helpers.h"
#include "internal.h" /* ks_spin_budget_ns, KS_SPIN_SEM: the tests link the static library */

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

Test(lockstat_debug, library_paths_behave_as_the_inline_ones)
{
    /* A debug build's calls come to the library without trying the inline
     * CAS; the library makes it first, so the lock behaves as in a normal
     * build: a read lock does not turn the reader bias on (as after
     * contention), and a semaphore wait that finds a unit does not shrink
     * the spin budget (as a quick spin win does). */
    static ks_rwlock_t l = KS_RWLOCK_INIT;
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(ks_rwlock_rdlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    }
    cr_assert_eq(l.bias, 0u, "bias word %#x", l.bias);
    ks_sem_t s;
    cr_assert_eq(ks_sem_init(&s, 0, 0), 0);
    uint32_t before = ks_spin_budget_ns(KS_SPIN_SEM);
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(ks_sem_post(&s), 0);
        cr_assert_eq(ks_sem_wait(&s), 0);
    }
    cr_assert_eq(ks_spin_budget_ns(KS_SPIN_SEM), before, "the spin budget moved: %u -> %u ns", before,
                 ks_spin_budget_ns(KS_SPIN_SEM));
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(ks_sem_post(&s), 0);
        cr_assert_eq(ks_sem_wait(&s), 0);
    }
    cr_assert_eq(ks_spin_budget_ns(KS_SPIN_SEM), before);
    cr_assert_eq(stat_of(&s, KS_LOCK_SEM).contended, 0);
}

Test(lockstat_debug, an_uncontended_static_mutex_is_not_contended)
{
    /* a free, unmarked mutex that reached the library (the inline path made
     * no CAS) was counted as a contended acquisition */
    static ks_mutex_t m = KS_MUTEX_INIT;
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(ks_mutex_lock(&m), 0);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
    }
    struct ks_lockstat st = stat_of(&m, KS_LOCK_MUTEX);
    cr_assert_eq(st.acquisitions, 5);
    cr_assert_eq(st.contended, 0);
    cr_assert_eq(st.wait_ns, 0);
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_CONTENTION), KS_LOCKSTAT_ALL);
    ks_lockstat_reset();
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(stat_of(&m, KS_LOCK_MUTEX).contended, 0);
}

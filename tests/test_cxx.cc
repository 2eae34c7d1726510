// tests/test_cxx.cc - the public headers compile as C++17 (with -Wall -Wextra
// -Werror) and every inline fast path works when called from C++.
#include <ksync.h>

#include <criterion/criterion.h>

#include <atomic>
#include <cstring>
#include <ctime>
#include <thread>
#include <type_traits>
#include <vector>

static_assert(std::is_trivially_copyable<ks_mutex_t>::value, "C layout");
static_assert(std::is_standard_layout<ks_sem_t>::value, "C layout");
static_assert(sizeof(ks_mutex_t) == 8, "ks_mutex_t is two 32-bit words");
static_assert(sizeof(ks_sem_t) == 16, "ks_sem_t is a 64-bit state plus two words");
static_assert(KS_FOREVER == INT64_MAX, "KS_FOREVER");
static_assert(std::is_standard_layout<ks_mpmc_t>::value, "C layout");
static_assert(std::is_standard_layout<ks_queue_t>::value, "C layout");
static_assert(std::is_trivially_copyable<ks_mpmc_cell_t>::value, "C layout");
static_assert(alignof(ks_mpmc_t) == KS_MPMC_ALIGN, "the ring's counters own their cache lines");
static_assert(sizeof(ks_mpmc_cell_t) == 16, "a cell is a sequence number and an item");

namespace {
ks_mutex_t global_mutex = KS_MUTEX_INIT;
ks_rmutex_t global_rmutex = KS_RMUTEX_INIT;
ks_sem_t global_sem = KS_SEM_INIT(1);
} // namespace

Test(cxx, mutex_inline_fast_paths)
{
    ks_mutex_t m = KS_MUTEX_INIT;
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_mutex_trylock(&m), EBUSY);
    cr_assert_eq(ks_mutex_timedlock(&m, 0), ETIMEDOUT);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(ks_mutex_unlock(&m), EPERM);
    cr_assert_eq(ks_mutex_trylock(&m), 0);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(ks_mutex_timedlock(&m, ks_deadline_after(KS_NSEC_PER_SEC)), 0);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(ks_mutex_timedlock(&m, -1), EINVAL);
    cr_assert_eq(ks_mutex_lock(nullptr), EINVAL);
    cr_assert_eq(ks_mutex_trylock(nullptr), EINVAL);
    cr_assert_eq(ks_mutex_unlock(nullptr), EINVAL);
    cr_assert_eq(ks_mutex_destroy(&m), 0);

    ks_mutex_t s;
    cr_assert_eq(ks_mutex_init(&s, KS_SHARED), 0);
    cr_assert_eq(ks_mutex_lock(&s), 0);
    cr_assert_eq(ks_mutex_unlock(&s), 0);

    cr_assert_eq(ks_mutex_lock(&global_mutex), 0);
    cr_assert_eq(ks_mutex_unlock(&global_mutex), 0);
}

Test(cxx, mutex_with_std_thread, .timeout = 60)
{
    ks_mutex_t m = KS_MUTEX_INIT;
    long counter = 0;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++)
        threads.emplace_back([&] {
            for (int i = 0; i < 20000; i++) {
                ks_mutex_lock(&m);
                counter++;
                ks_mutex_unlock(&m);
            }
        });
    for (auto &t : threads)
        t.join();
    cr_assert_eq(counter, 4L * 20000);
    cr_assert_eq(ks_mutex_destroy(&m), 0);
}

Test(cxx, rmutex_from_cxx)
{
    cr_assert_eq(ks_rmutex_lock(&global_rmutex), 0);
    cr_assert_eq(ks_rmutex_trylock(&global_rmutex), 0);
    cr_assert_eq(ks_rmutex_timedlock(&global_rmutex, ks_deadline_after(KS_NSEC_PER_SEC)), 0);
    int other = -1;
    std::thread([&] { other = ks_rmutex_unlock(&global_rmutex); }).join();
    cr_assert_eq(other, EPERM);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ks_rmutex_unlock(&global_rmutex), 0);
    cr_assert_eq(ks_rmutex_unlock(&global_rmutex), EPERM);
    cr_assert_neq(ks_thread_id(), 0u);
}

Test(cxx, sem_inline_fast_paths)
{
    ks_sem_t s = KS_SEM_INIT(2);
    cr_assert_eq(ks_sem_value(&s), 2);
    cr_assert_eq(ks_sem_trywait(&s), 0);
    cr_assert_eq(ks_sem_wait(&s), 0);
    cr_assert_eq(ks_sem_trywait(&s), EAGAIN);
    cr_assert_eq(ks_sem_timedwait(&s, 0), ETIMEDOUT);
    cr_assert_eq(ks_sem_timedwait(&s, -1), EINVAL);
    cr_assert_eq(ks_sem_post(&s), 0);
    cr_assert_eq(ks_sem_timedwait(&s, ks_deadline_after(KS_NSEC_PER_SEC)), 0);
    cr_assert_eq(ks_sem_value(nullptr), -EINVAL);
    cr_assert_eq(ks_sem_post(nullptr), EINVAL);
    cr_assert_eq(ks_sem_trywait(nullptr), EINVAL);

    ks_sem_t b;
    cr_assert_eq(ks_sem_init_bounded(&b, 1, 1, 0), 0);
    cr_assert_eq(ks_sem_post(&b), EOVERFLOW);
    cr_assert_eq(ks_sem_wait(&b), 0);
    cr_assert_eq(ks_sem_destroy(&b), 0);

    cr_assert_eq(ks_sem_wait(&global_sem), 0);
    cr_assert_eq(ks_sem_post(&global_sem), 0);
    cr_assert_eq(ks_sem_value(&global_sem), 1);
}

Test(cxx, sem_with_std_thread, .timeout = 60)
{
    ks_sem_t s = KS_SEM_INIT(0);
    std::atomic<int> got{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++)
        threads.emplace_back([&] {
            for (int i = 0; i < 1000; i++)
                if (ks_sem_wait(&s) == 0)
                    got++;
        });
    for (int i = 0; i < 4000; i++)
        ks_sem_post(&s);
    for (auto &t : threads)
        t.join();
    cr_assert_eq(got.load(), 4000);
    cr_assert_eq(ks_sem_value(&s), 0);
}

Test(cxx, time_and_debug_from_cxx)
{
    int64_t a = ks_now();
    cr_assert_geq(ks_deadline_after(0), a);
    cr_assert_eq(ks_deadline_after(-1), -1);
    struct timespec ts = {1, 2};
    int64_t d = 0;
    cr_assert_eq(ks_deadline_from_timespec(CLOCK_MONOTONIC, &ts, &d), 0);
    cr_assert_eq(d, KS_NSEC_PER_SEC + 2);
    struct ks_futex_stats st, st2;
    std::memset(&st, 0xff, sizeof st);
    ks_futex_stats(&st);
    cr_assert_neq(st.waits, ~0ull, "ks_futex_stats did not fill in the struct");
    ks_mutex_t m = KS_MUTEX_INIT;
    ks_mutex_lock(&m);
    ks_mutex_unlock(&m);
    ks_futex_stats(&st2);
    cr_assert_eq(st2.waits, st.waits);
    cr_assert_eq(st2.wakes, st.wakes);
}

Test(cxx, mpmc_inline_paths)
{
    ks_mpmc_t *q = nullptr;
    cr_assert_eq(ks_mpmc_create(&q, 0), EINVAL);
    cr_assert_eq(ks_mpmc_create(&q, 3), 0);
    cr_assert_eq(ks_mpmc_capacity(q), 3u);
    cr_assert_eq(ks_mpmc_try_push(q, nullptr), 0);
    int x = 5;
    cr_assert_eq(ks_mpmc_try_push(q, &x), 0);
    cr_assert_eq(ks_mpmc_try_push(q, &x), 0);
    cr_assert_eq(ks_mpmc_try_push(q, &x), EAGAIN);
    cr_assert_eq(ks_mpmc_size(q), 3u);
    void *v = &x;
    cr_assert_eq(ks_mpmc_try_pop(q, &v), 0);
    cr_assert_null(v);
    cr_assert_eq(ks_mpmc_try_pop(q, &v), 0);
    cr_assert_eq(v, static_cast<void *>(&x));
    cr_assert_eq(ks_mpmc_try_pop(q, &v), 0);
    cr_assert_eq(ks_mpmc_try_pop(q, &v), EAGAIN);
    cr_assert_eq(ks_mpmc_try_pop(q, nullptr), EINVAL);
    cr_assert_eq(ks_mpmc_try_push(nullptr, &x), EINVAL);
    cr_assert_eq(ks_mpmc_destroy(q), 0);
    cr_assert_eq(ks_mpmc_destroy(nullptr), EINVAL);
}

Test(cxx, queue_inline_paths)
{
    ks_queue_t *q = nullptr;
    cr_assert_eq(ks_queue_create(&q, 2, 2u), EINVAL);
    cr_assert_eq(ks_queue_create(&q, 2, 0), 0);
    int a = 1, b = 2;
    cr_assert_eq(ks_queue_put(q, &a), 0);
    cr_assert_eq(ks_queue_tryput(q, &b), 0);
    cr_assert_eq(ks_queue_tryput(q, &b), EAGAIN);
    cr_assert_eq(ks_queue_timedput(q, &b, 0), ETIMEDOUT);
    cr_assert_eq(ks_queue_timedput(q, &b, -1), EINVAL);
    cr_assert_eq(ks_queue_size(q), 2u);
    cr_assert_eq(ks_queue_unfinished(q), 2u);
    void *v = nullptr;
    cr_assert_eq(ks_queue_get(q, &v), 0);
    cr_assert_eq(v, static_cast<void *>(&a));
    cr_assert_eq(ks_queue_tryget(q, &v), 0);
    cr_assert_eq(v, static_cast<void *>(&b));
    cr_assert_eq(ks_queue_tryget(q, &v), EAGAIN);
    cr_assert_eq(ks_queue_timedget(q, &v, 0), ETIMEDOUT);
    cr_assert_eq(ks_queue_task_done(q), 0);
    cr_assert_eq(ks_queue_timedjoin(q, 0), ETIMEDOUT);
    cr_assert_eq(ks_queue_task_done(q), 0);
    cr_assert_eq(ks_queue_task_done(q), EINVAL);
    cr_assert_eq(ks_queue_join(q), 0);
    cr_assert_eq(ks_queue_close(q), 0);
    cr_assert_eq(ks_queue_is_closed(q), 1);
    cr_assert_eq(ks_queue_put(q, &a), EPIPE);
    cr_assert_eq(ks_queue_get(q, &v), EPIPE);
    cr_assert_eq(ks_queue_get(nullptr, &v), EINVAL);
    cr_assert_eq(ks_queue_put(nullptr, &a), EINVAL);
    cr_assert_eq(ks_queue_destroy(q), 0);
}

Test(cxx, queue_with_std_thread, .timeout = 60)
{
    ks_queue_t *q = nullptr;
    cr_assert_eq(ks_queue_create(&q, 5, 0), 0);
    std::atomic<long> got{0}, sum{0};
    std::vector<std::thread> consumers, producers;
    for (int t = 0; t < 3; t++)
        consumers.emplace_back([&] {
            void *v;
            while (ks_queue_get(q, &v) == 0) {
                got++;
                sum += static_cast<long>(reinterpret_cast<uintptr_t>(v));
                ks_queue_task_done(q);
            }
        });
    for (int t = 0; t < 3; t++)
        producers.emplace_back([&] {
            for (uintptr_t i = 1; i <= 2000; i++)
                ks_queue_put(q, reinterpret_cast<void *>(i));
        });
    for (auto &t : producers)
        t.join();
    cr_assert_eq(ks_queue_timedjoin(q, ks_deadline_after(30 * KS_NSEC_PER_SEC)), 0);
    cr_assert_eq(got.load(), 3L * 2000);
    cr_assert_eq(ks_queue_close(q), 0);
    for (auto &t : consumers)
        t.join();
    cr_assert_eq(sum.load(), 3L * 2000 * 2001 / 2);
    cr_assert_eq(ks_queue_destroy(q), 0);
}

Test(cxx, pool_from_cxx)
{
    std::vector<void *> res{nullptr, reinterpret_cast<void *>(1), reinterpret_cast<void *>(2)};
    ks_pool_t *p = nullptr;
    std::vector<void *> dup{res[1], res[1]};
    cr_assert_eq(ks_pool_create(&p, dup.data(), dup.size(), 0), EINVAL);
    cr_assert_eq(ks_pool_create(&p, res.data(), res.size(), KS_SHARED), 0);
    cr_assert_eq(ks_pool_size(p), 3u);
    void *r[3];
    for (auto &x : r)
        cr_assert_eq(ks_pool_borrow(p, ks_deadline_after(KS_NSEC_PER_SEC), &x), 0);
    void *none = &r;
    cr_assert_eq(ks_pool_borrow(p, 0, &none), ETIMEDOUT);
    cr_assert_eq(none, static_cast<void *>(&r));
    cr_assert_eq(ks_pool_destroy(p), EBUSY);
    cr_assert_eq(ks_pool_return(p, reinterpret_cast<void *>(7)), EINVAL);
    for (auto x : r)
        cr_assert_eq(ks_pool_return(p, x), 0);
    cr_assert_eq(ks_pool_return(p, r[0]), EPERM);
    cr_assert_eq(ks_pool_available(p), 3u);
    std::vector<std::thread> threads;
    std::atomic<int> bad{0};
    for (int t = 0; t < 4; t++)
        threads.emplace_back([&] {
            for (int i = 0; i < 1000; i++) {
                void *x;
                if (ks_pool_borrow(p, ks_deadline_after(KS_NSEC_PER_SEC), &x) != 0 || ks_pool_return(p, x) != 0)
                    bad++;
            }
        });
    for (auto &t : threads)
        t.join();
    cr_assert_eq(bad.load(), 0);
    cr_assert_eq(ks_pool_destroy(p), 0);
}

Test(cxx, cache_from_cxx, .timeout = 60)
{
    struct ks_cache_options o = KS_CACHE_OPTIONS_INIT;
    o.variant = KS_CACHE_BOUNDED;
    o.capacity = 64;
    ks_cache_t *c = nullptr;
    cr_assert_eq(ks_cache_create(&c, &o), 0);
    std::atomic<unsigned long> gets{0}, bad{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++)
        threads.emplace_back([&, t] {
            char key[8], val[16], buf[16];
            for (int i = 0; i < 5000; i++) {
                int k = (i * 7 + t) % 100;
                std::memcpy(key, &k, sizeof k);
                std::memset(val, 'a' + k % 26, sizeof val);
                if (i % 3 == 0) {
                    if (ks_cache_put(c, key, sizeof k, val, sizeof val, KS_CACHE_NO_TTL) != 0)
                        bad++;
                    continue;
                }
                size_t n = 0;
                int rc = ks_cache_get(c, key, sizeof k, buf, sizeof buf, &n);
                gets++;
                if (rc == 0 && (n != sizeof val || std::memcmp(buf, val, n) != 0))
                    bad++;
                else if (rc != 0 && rc != ENOENT)
                    bad++;
            }
        });
    for (auto &t : threads)
        t.join();
    struct ks_cache_stats st;
    ks_cache_stats(c, &st);
    cr_assert_eq(bad.load(), 0u);
    cr_assert_eq(st.gets, gets.load());
    cr_assert_eq(st.hits + st.misses, st.gets);
    cr_assert_leq(st.size, 64u);
    cr_assert_eq(ks_cache_destroy(c), 0);
}

// A ks_once function that throws: the run did not happen, so the once is
// left to be run again (as std::call_once and glibc's pthread_once do).  The
// library is built with -fexceptions so that its cleanup handler runs on a
// C++ unwind, not only on cancellation (found by review: the second call
// slept for ever on a word that still said "running").
namespace {
ks_once_t throwing_once = KS_ONCE_INIT;
int once_calls;
void throwing_fn()
{
    if (++once_calls == 1)
        throw 42;
}
} // namespace

Test(cxx, once_left_to_run_again_after_its_function_throws, .timeout = 30)
{
    bool caught = false;
    try {
        ks_once(&throwing_once, throwing_fn);
    } catch (int v) {
        caught = v == 42;
    }
    cr_assert(caught);
    cr_assert_eq(throwing_once.state, (uint32_t)KS_ONCE_NEW);
    cr_assert_eq(ks_once(&throwing_once, throwing_fn), 0);
    cr_assert_eq(once_calls, 2);
    cr_assert_eq(throwing_once.state, (uint32_t)KS_ONCE_DONE);
    cr_assert_eq(ks_once(&throwing_once, throwing_fn), 0);
    cr_assert_eq(once_calls, 2);
}

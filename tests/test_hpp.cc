// tests/test_hpp.cc - include/ksync.hpp through the standard library's lock
// types and std::condition_variable_any.  The Makefile compiles this file
// twice, as C++17 (suite hpp17) and as C++20 (-DKS_HPP_SUITE=hpp20), so that
// the header is checked under both and the two suites do not collide.
//
// Criterion asserts are made from the test's main thread only; worker
// threads report through atomics that the main thread then checks.
#include <ksync.hpp>

#include <criterion/criterion.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <mutex>
#include <shared_mutex>
#include <system_error>
#include <thread>
#include <vector>

#ifndef KS_HPP_SUITE
#define KS_HPP_SUITE hpp17
#endif
// Test() pastes its suite name: expand the macro first.
#define KT_TEST_(suite, ...) Test(suite, __VA_ARGS__)
#define KT_TEST(...) KT_TEST_(KS_HPP_SUITE, __VA_ARGS__)

using namespace std::chrono_literals;
using std::chrono::steady_clock;
using std::chrono::system_clock;

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr int kSlow = 4;
#else
constexpr int kSlow = 1;
#endif
// Timed calls must not return early (checked exactly) nor be seconds late
// (checked loosely: the suite runs in parallel on 2 cores).
constexpr auto kLate = 250ms * kSlow;

// ---- compile-time properties -----------------------------------------------

template <class M>
constexpr bool pinned = !std::is_copy_constructible<M>::value && !std::is_move_constructible<M>::value &&
                        !std::is_copy_assignable<M>::value && !std::is_move_assignable<M>::value;
static_assert(pinned<ks::mutex> && pinned<ks::timed_mutex> && pinned<ks::recursive_mutex> &&
                  pinned<ks::recursive_timed_mutex> && pinned<ks::shared_mutex> &&
                  pinned<ks::condition_variable> && pinned<ks::event> && pinned<ks::binary_semaphore> &&
                  pinned<ks::barrier<>> && pinned<ks::queue<int>>,
              "futex words are identified by their address: no copies, no moves");
// noexcept as libstdc++ declares it (bits/std_mutex.h, <semaphore>, <condition_variable>)
static_assert(std::is_nothrow_default_constructible<ks::mutex>::value, "mutex() noexcept");
static_assert(noexcept(std::declval<ks::mutex &>().try_lock()), "try_lock noexcept");
static_assert(!noexcept(std::declval<ks::mutex &>().lock()), "lock may throw system_error");
static_assert(noexcept(std::declval<ks::mutex &>().native_handle()), "native_handle noexcept");
static_assert(noexcept(std::declval<ks::recursive_mutex &>().try_lock()), "try_lock noexcept");
static_assert(noexcept(std::declval<ks::counting_semaphore<3> &>().release()), "release noexcept");
static_assert(noexcept(std::declval<ks::counting_semaphore<3> &>().acquire()), "acquire noexcept");
static_assert(noexcept(std::declval<ks::counting_semaphore<3> &>().try_acquire()), "try_acquire noexcept");
static_assert(noexcept(std::declval<ks::condition_variable &>().notify_one()), "notify noexcept");
static_assert(std::is_nothrow_constructible<ks::counting_semaphore<3>, std::ptrdiff_t>::value,
              "counting_semaphore(ptrdiff_t) noexcept");
static_assert(!std::is_convertible<std::ptrdiff_t, ks::binary_semaphore>::value, "explicit, as the standard's");
static_assert(ks::counting_semaphore<5>::max() == 5 && ks::binary_semaphore::max() == 1, "max()");
static_assert(ks::counting_semaphore<>::max() == KS_SEM_VALUE_MAX, "default LeastMaxValue");
static_assert(ks::barrier<>::max() == KS_BARRIER_MAX, "barrier max()");
static_assert(std::is_same<ks::mutex::native_handle_type, ks_mutex_t *>::value, "native handle is the C object");
static_assert(!std::is_base_of<ks::mutex, ks::timed_mutex>::value ||
                  !std::is_convertible<ks::timed_mutex *, ks::mutex *>::value,
              "a timed_mutex is not usable as a ks::mutex");

// Constant initialisation: these exist before any dynamic initialiser runs.
#if __cplusplus >= 202002L
#define KT_CONSTINIT constinit
#else
#define KT_CONSTINIT
#endif
KT_CONSTINIT ks::mutex g_mutex;
KT_CONSTINIT ks::timed_mutex g_timed;
KT_CONSTINIT ks::recursive_mutex g_rmutex;
KT_CONSTINIT ks::shared_mutex g_shared;
KT_CONSTINIT ks::condition_variable g_cv;
KT_CONSTINIT ks::event g_event;
KT_CONSTINIT ks::counting_semaphore<4> g_sem(2);
KT_CONSTINIT ks::barrier<> g_barrier(1);

// Used by a dynamic initialiser of this file, which may run before or after
// the globals above in another order: constant initialisation makes it safe.
int g_early = [] {
    std::lock_guard<ks::mutex> g(g_mutex);
    return g_sem.try_acquire() ? 1 : -1;
}();

template <class F>
std::vector<std::thread> spawn(int n, F f)
{
    std::vector<std::thread> v;
    for (int i = 0; i < n; i++)
        v.emplace_back(f, i);
    return v;
}
void join_all(std::vector<std::thread> &v)
{
    for (auto &t : v)
        t.join();
}

// Hold `m` in another thread until released; `held` is set once it is.
template <class M>
struct holder {
    M &m;
    ks::event held, go;
    std::thread t;
    explicit holder(M &mm) : m(mm), t([this] {
        std::lock_guard<M> g(m);
        held.set();
        go.wait();
    })
    {
        held.wait();
    }
    void release() { go.set(), t.join(); }
    ~holder()
    {
        if (t.joinable())
            release();
    }
};

} // namespace

// ---- time ---------------------------------------------------------------------

KT_TEST(steady_clock_is_ksyncs_clock)
{
    // libstdc++'s steady_clock reads CLOCK_MONOTONIC, so its time points are
    // ksync deadlines as they are.
    for (int i = 0; i < 100; i++) {
        int64_t a = steady_clock::now().time_since_epoch().count();
        int64_t k = ks_now();
        int64_t b = steady_clock::now().time_since_epoch().count();
        cr_assert(a <= k && k <= b, "steady %lld <= ks_now %lld <= steady %lld", (long long)a, (long long)k,
                  (long long)b);
    }
    static_assert(std::is_same<steady_clock::duration, std::chrono::nanoseconds>::value, "ns ticks");
}

KT_TEST(deadline_conversion_saturates_and_rounds_up)
{
    using ks::detail::ns_saturated;
    cr_assert_eq(ns_saturated(std::chrono::hours::max()), KS_FOREVER);
    cr_assert_eq(ns_saturated(std::chrono::nanoseconds::max()), KS_FOREVER);
    cr_assert_eq(ns_saturated(std::chrono::duration<double>(1e300)), KS_FOREVER);
    cr_assert_eq(ns_saturated(std::chrono::duration<long long, std::pico>(1500)), 2); // up, not down
    cr_assert_eq(ns_saturated(std::chrono::duration<double, std::micro>(1.0005)), 1001);
    cr_assert_eq(ns_saturated(-5s), 0);
    cr_assert_eq(ns_saturated(3s), 3 * KS_NSEC_PER_SEC);
    cr_assert_eq(ks::detail::deadline_after(-1s), 0, "negative: a try (a past deadline)");
    cr_assert_eq(ks::detail::deadline_after(0s), 0);
    cr_assert_eq(ks::detail::deadline_after(std::chrono::hours::max()), KS_FOREVER);
    cr_assert_eq(ks::detail::deadline_at(steady_clock::time_point::max()), KS_FOREVER);
    cr_assert_eq(ks::detail::deadline_at(steady_clock::time_point(-1s)), 0);
    // A review found each of these broken in the first version:
    // a float count just under the limit rounded past it in float and wrapped negative,
    cr_assert_eq(ns_saturated(std::chrono::duration<float>(9223372776.0f)), KS_FOREVER);
    cr_assert_eq(ns_saturated(std::chrono::duration<double>(9223372036.8547758)), KS_FOREVER); // 2^63 ns
    const int64_t ms_big = ns_saturated(std::chrono::duration<double, std::milli>(9223372036854.7754));
    cr_assert(ms_big > 9223372036854000000LL / 1000 && ms_big < KS_FOREVER, "%lld", (long long)ms_big);
    cr_assert_gt(ns_saturated(std::chrono::duration<double>(9.2e9)), 0);
    // a period that does not divide a nanosecond overflowed count * num,
    using frames = std::chrono::duration<long long, std::ratio<1, 60>>;
    cr_assert_eq(ns_saturated(frames(60LL * 3600 * 24 * 365 * 105)), 105LL * 365 * 24 * 3600 * KS_NSEC_PER_SEC);
    cr_assert_eq(ns_saturated(frames(1)), 16666667); // 16.666... ms, up
    // and another clock's extreme time points overflowed their common type.
    cr_assert_eq(ks::detail::deadline_from(system_clock::time_point::min()), 0);
    cr_assert_eq(ks::detail::deadline_from(std::chrono::time_point<system_clock, std::chrono::hours>::max()),
                 KS_FOREVER);
    cr_assert(ks::detail::reached(system_clock::time_point::min()));
    cr_assert(!ks::detail::reached(system_clock::now() + 1h));
    int64_t before = ks_now();
    int64_t d = ks::detail::deadline_after(10ms);
    cr_assert(d >= before + 10 * 1000000LL && d <= ks_now() + 10 * 1000000LL);
}

KT_TEST(huge_and_negative_timeouts, .timeout = 30)
{
    ks::timed_mutex m;
    cr_assert(m.try_lock_for(std::chrono::hours::max()), "free: taken at once, no overflow");
    auto t0 = steady_clock::now();
    std::atomic<int> r{-1};
    std::thread t([&] { r = m.try_lock_for(-1s) + 2 * m.try_lock_until(steady_clock::time_point::min()); });
    t.join();
    cr_assert_eq(r.load(), 0, "held: negative and past timeouts are a failed try");
    cr_assert(steady_clock::now() - t0 < kLate, "and return at once");
    m.unlock();
    cr_assert(m.try_lock_until(steady_clock::time_point::max()));
    m.unlock();
    cr_assert(m.try_lock_until(system_clock::time_point::max() - 1h), "other clocks saturate too");
    // Held: a past time point on another clock is a try, at once (the first
    // version overflowed system_clock's min() into a 235-year wait).
    std::thread t2([&] {
        r = m.try_lock_until(system_clock::time_point::min()) +
            2 * m.try_lock_until(std::chrono::time_point<system_clock, std::chrono::hours>::min());
    });
    t2.join();
    cr_assert_eq(r.load(), 0);
    ks::condition_variable cv;
    ks::mutex cm;
    {
        std::unique_lock<ks::mutex> u(cm);
        cr_assert(cv.wait_until(u, system_clock::time_point::min()) == std::cv_status::timeout);
        cr_assert(!cv.wait_until(u, system_clock::time_point::min(), [] { return false; }));
    }
    cr_assert(steady_clock::now() - t0 < 2 * kLate, "past time points return at once");
    m.unlock();
}

// ---- mutexes through the standard lock types -------------------------------------

KT_TEST(lock_guard_counts, .timeout = 60)
{
    ks::mutex m;
    long counter = 0;
    auto v = spawn(4, [&](int) {
        for (int i = 0; i < 20000; i++) {
            std::lock_guard<ks::mutex> g(m);
            counter++;
        }
    });
    join_all(v);
    cr_assert_eq(counter, 4L * 20000);
    cr_assert_eq(g_early, 1, "the constant-initialised globals worked in a dynamic initialiser");
    cr_assert(m.try_lock());
    cr_assert_not(m.try_lock());
    m.unlock();
    cr_assert_eq(ks_mutex_trylock(m.native_handle()), 0, "native_handle is the C mutex");
    m.unlock();
}

KT_TEST(scoped_lock_opposite_orders_do_not_deadlock, .timeout = 60)
{
    ks::mutex a, b, c;
    long in_ab = 0, in_bc = 0;
    auto v = spawn(3, [&](int id) {
        for (int i = 0; i < 20000; i++) {
            if (id == 0) {
                std::scoped_lock g(a, b);
                in_ab++;
            } else if (id == 1) {
                std::scoped_lock g(b, a, c);
                in_ab++, in_bc++;
            } else {
                std::scoped_lock g(c, b);
                in_bc++;
            }
        }
    });
    join_all(v);
    cr_assert_eq(in_ab, 40000L, "a+b guarded counter exact: {a,b} and {b,a,c} excluded each other");
    cr_assert_eq(in_bc, 40000L);
    cr_assert(a.try_lock() && b.try_lock() && c.try_lock(), "all released");
    a.unlock(), b.unlock(), c.unlock();
}

KT_TEST(unique_lock_timed_lock_times_out_then_succeeds, .timeout = 30)
{
    ks::timed_mutex m;
    holder<ks::timed_mutex> h(m);

    auto t0 = steady_clock::now();
    std::unique_lock<ks::timed_mutex> u1(m, 50ms);
    auto waited = steady_clock::now() - t0;
    cr_assert_not(u1.owns_lock());
    cr_assert(waited >= 50ms, "timed out after %lld ns, before 50 ms", (long long)waited.count());
    cr_assert(waited < 50ms + kLate);

    auto until = steady_clock::now() + 30ms;
    cr_assert_not(u1.try_lock_until(until));
    cr_assert(steady_clock::now() >= until);

    // A non-steady clock: converted at the call, re-read after the timeout.
    auto sys_until = system_clock::now() + 30ms;
    cr_assert_not(m.try_lock_until(sys_until));
    cr_assert(system_clock::now() >= sys_until, "did not time out before system_clock reached the time");

    std::thread rel([&] {
        std::this_thread::sleep_for(20ms);
        h.release();
    });
    cr_assert(u1.try_lock_for(10s), "taken once the holder lets go");
    cr_assert(u1.owns_lock());
    rel.join();
    u1.unlock();
    std::unique_lock<ks::timed_mutex> u2(m, steady_clock::now() + 1s);
    cr_assert(u2.owns_lock());
}

KT_TEST(recursive_mutex_nests_and_excludes, .timeout = 30)
{
    ks::recursive_timed_mutex r;
    std::lock_guard<ks::recursive_timed_mutex> g1(r);
    std::lock_guard<ks::recursive_timed_mutex> g2(r);
    cr_assert(r.try_lock(), "the owner may take it again");
    r.unlock();
    std::atomic<int> got{-1};
    std::thread t([&] { got = r.try_lock() + 2 * r.try_lock_for(20ms); });
    t.join();
    cr_assert_eq(got.load(), 0, "another thread may not");

    {
        std::lock_guard<ks::recursive_mutex> g3(g_rmutex);
        std::lock_guard<ks::recursive_mutex> g4(g_rmutex);
        std::thread t2([&] { got = g_rmutex.try_lock(); });
        t2.join();
        cr_assert_eq(got.load(), 0);
    }
    std::thread t3([&] {
        got = g_rmutex.try_lock();
        if (got)
            g_rmutex.unlock();
    });
    t3.join();
    cr_assert_eq(got.load(), 1, "free after as many unlocks as locks");
}

// ---- shared_mutex -------------------------------------------------------------------

KT_TEST(shared_lock_readers_together_writer_excluded, .timeout = 30)
{
    ks::shared_mutex s;
    constexpr int N = 4;
    std::atomic<int> inside{0}, max_inside{0};
    ks::event done;
    auto readers = spawn(N, [&](int) {
        std::shared_lock<ks::shared_mutex> r(s);
        int n = ++inside;
        int m = max_inside.load();
        while (n > m && !max_inside.compare_exchange_weak(m, n)) {
        }
        done.wait(); // hold the read lock until the main thread has checked
        --inside;
    });
    auto t0 = steady_clock::now();
    while (max_inside.load() < N && steady_clock::now() - t0 < 10s)
        std::this_thread::yield();
    cr_assert_eq(max_inside.load(), N, "all %d readers hold the lock at once", N);
    cr_assert_not(s.try_lock(), "a writer cannot enter while readers hold it");
    cr_assert_not(s.try_lock_for(20ms));
    cr_assert_not(s.try_lock_until(system_clock::now() + 10ms));
    done.set();
    {
        std::unique_lock<ks::shared_mutex> w(s, 10s);
        cr_assert(w.owns_lock(), "the writer gets in once the readers leave");
        cr_assert_eq(inside.load(), 0);
        std::atomic<int> r{-1};
        std::thread t([&] {
            std::shared_lock<ks::shared_mutex> tr(s, std::try_to_lock);
            std::shared_lock<ks::shared_mutex> tf(s, 20ms);
            r = tr.owns_lock() + 2 * tf.owns_lock();
        });
        t.join();
        cr_assert_eq(r.load(), 0, "readers excluded while the writer holds it");
    }
    join_all(readers);
    std::shared_lock<ks::shared_mutex> again(s, steady_clock::now() + 1s);
    cr_assert(again.owns_lock());
}

// ---- condition variables --------------------------------------------------------------

KT_TEST(condition_variable_producer_consumer, .timeout = 60)
{
    ks::mutex m;
    ks::condition_variable not_empty, not_full;
    std::deque<int> buf;
    constexpr std::size_t cap = 4;
    constexpr int P = 2, C = 2, per = 5000;
    std::atomic<long> sum{0}, count{0};
    auto prod = spawn(P, [&](int id) {
        for (int i = 1; i <= per; i++) {
            std::unique_lock<ks::mutex> u(m);
            not_full.wait(u, [&] { return buf.size() < cap; });
            buf.push_back(id * per + i);
            u.unlock();
            not_empty.notify_one();
        }
    });
    auto cons = spawn(C, [&](int) {
        for (;;) {
            std::unique_lock<ks::mutex> u(m);
            not_empty.wait(u, [&] { return !buf.empty(); });
            int v = buf.front();
            buf.pop_front();
            u.unlock();
            not_full.notify_one();
            if (v < 0)
                return;
            sum += v, count++;
        }
    });
    join_all(prod);
    {
        std::lock_guard<ks::mutex> g(m);
        buf.push_back(-1), buf.push_back(-1); // one stop mark per consumer (producers are gone: cap does not matter)
    }
    not_empty.notify_all();
    join_all(cons);
    long n = (long)P * per;
    cr_assert_eq(count.load(), n, "every item consumed once");
    cr_assert_eq(sum.load(), n * (n + 1) / 2, "and no item twice");
}

KT_TEST(condition_variable_timeouts, .timeout = 30)
{
    ks::mutex m;
    ks::condition_variable cv;
    std::unique_lock<ks::mutex> u(m);
    auto t0 = steady_clock::now();
    cr_assert(cv.wait_for(u, 30ms) == std::cv_status::timeout);
    cr_assert(steady_clock::now() - t0 >= 30ms);
    cr_assert(u.owns_lock() && !m.try_lock(), "the mutex is held again after a timeout");
    cr_assert(cv.wait_until(u, steady_clock::now() + 10ms) == std::cv_status::timeout);
    auto sys = system_clock::now() + 20ms;
    while (cv.wait_until(u, sys) == std::cv_status::no_timeout) {
    }
    cr_assert(system_clock::now() >= sys, "non-steady clock: no timeout before that clock's time");
    cr_assert_not(cv.wait_for(u, 10ms, [] { return false; }));
    cr_assert(cv.wait_for(u, 10s, [] { return true; }));
    cr_assert_not(cv.wait_until(u, system_clock::now() + 10ms, [] { return false; }));

    bool flag = false;
    std::thread t([&] {
        std::this_thread::sleep_for(20ms);
        std::lock_guard<ks::mutex> g(m);
        flag = true;
        cv.notify_all();
    });
    cr_assert(cv.wait_for(u, 10s, [&] { return flag; }), "woken by notify before the deadline");
    u.unlock();
    t.join();
    cr_assert_not_null(cv.native_handle());
}

template <class Lock, class M>
static long cv_any_round(M &m)
{
    std::condition_variable_any cv;
    int stage = 0;
    std::atomic<long> seen{0};
    auto waiters = spawn(3, [&](int) {
        Lock l(m);
        cv.wait(l, [&] { return stage == 1; });
        seen++;
    });
    std::this_thread::sleep_for(10ms);
    {
        std::unique_lock<M> w(m);
        stage = 1;
    }
    cv.notify_all();
    join_all(waiters);
    // and a timed wait through the same lock type
    Lock l(m);
    if (cv.wait_for(l, 10ms) == std::cv_status::timeout && l.owns_lock())
        seen += 100;
    return seen.load();
}

KT_TEST(condition_variable_any_with_ks_mutex, .timeout = 30)
{
    ks::mutex m;
    cr_assert_eq(cv_any_round<std::unique_lock<ks::mutex>>(m), 103L);
    ks::timed_mutex t;
    cr_assert_eq(cv_any_round<std::unique_lock<ks::timed_mutex>>(t), 103L);
}

KT_TEST(condition_variable_any_with_ks_shared_mutex, .timeout = 30)
{
    ks::shared_mutex s;
    cr_assert_eq(cv_any_round<std::shared_lock<ks::shared_mutex>>(s), 103L, "readers wait in shared mode");
    cr_assert_eq(cv_any_round<std::unique_lock<ks::shared_mutex>>(s), 103L, "and in exclusive mode");
}

// ---- semaphores ------------------------------------------------------------------------

KT_TEST(counting_semaphore, .timeout = 30)
{
    ks::counting_semaphore<3> s(0);
    cr_assert_not(s.try_acquire());
    auto t0 = steady_clock::now();
    cr_assert_not(s.try_acquire_for(30ms));
    cr_assert(steady_clock::now() - t0 >= 30ms, "try_acquire_for waited its time");
    cr_assert_not(s.try_acquire_until(system_clock::now() + 10ms));
    s.release(3);
    cr_assert_eq(ks_sem_value(s.native_handle()), 3);
    cr_assert(s.try_acquire() && s.try_acquire_for(0s) && s.try_acquire_until(steady_clock::now()));
    cr_assert_not(s.try_acquire());
    cr_assert_eq(ks_sem_value(g_sem.native_handle()), 1, "the global one, after g_early took one");

    std::atomic<int> got{0};
    std::thread t([&] {
        s.acquire();
        got = 1;
    });
    std::this_thread::sleep_for(10ms);
    cr_assert_eq(got.load(), 0, "acquire blocks at 0");
    s.release();
    t.join();
    cr_assert_eq(got.load(), 1);
}

KT_TEST(binary_semaphore_ping_pong, .timeout = 30)
{
    ks::binary_semaphore ping(0), pong(0);
    int ball = 0; // written alternately, ordered by the semaphores
    std::thread t([&] {
        for (int i = 0; i < 1000; i++) {
            ping.acquire();
            ball++;
            pong.release();
        }
    });
    for (int i = 0; i < 1000; i++) {
        ball++;
        ping.release();
        pong.acquire();
    }
    t.join();
    cr_assert_eq(ball, 2000);
    cr_assert_eq(ks::binary_semaphore::max(), 1);
}

KT_TEST(semaphore_release_over_max_aborts, .signal = SIGABRT)
{
    ks::binary_semaphore b(1);
    b.release(); // the precondition update <= max() - counter is broken
}

KT_TEST(semaphore_negative_release_aborts, .signal = SIGABRT)
{
    ks::counting_semaphore<10> c(0);
    c.release(-1);
}

// ---- event ---------------------------------------------------------------------------------

KT_TEST(event, .timeout = 30)
{
    ks::event e;
    cr_assert_not(e.is_set());
    auto t0 = steady_clock::now();
    cr_assert_not(e.wait_for(20ms));
    cr_assert(steady_clock::now() - t0 >= 20ms);
    cr_assert_not(e.wait_until(system_clock::now() + 10ms));
    int payload = 0;
    std::thread t([&] {
        std::this_thread::sleep_for(10ms);
        payload = 42;
        e.set();
    });
    cr_assert(e.wait_for(10s));
    cr_assert_eq(payload, 42, "what the setter wrote before set() is visible");
    t.join();
    cr_assert(e.is_set() && e.wait_until(steady_clock::now()));
    e.wait();
    e.clear();
    cr_assert_not(e.is_set());
    g_event.set();
    cr_assert(g_event.is_set());
}

// ---- barrier ----------------------------------------------------------------------------

KT_TEST(barrier_phases, .timeout = 60)
{
    constexpr int N = 4, PHASES = 200;
    std::atomic<int> slot[N];
    for (auto &s : slot)
        s = -1;
    std::atomic<int> bad{0};
    ks::barrier<> b(N);
    auto v = spawn(N, [&](int id) {
        for (int p = 0; p < PHASES; p++) {
            slot[id].store(p);
            b.arrive_and_wait();
            // everybody has arrived at phase p, and nobody is beyond p + 1
            for (int j = 0; j < N; j++) {
                int s = slot[j].load();
                if (s < p || s > p + 1)
                    bad++;
            }
        }
    });
    join_all(v);
    cr_assert_eq(bad.load(), 0, "a thread left a phase before everyone arrived");
    g_barrier.arrive_and_wait(); // count 1: returns at once
}

KT_TEST(barrier_completion_runs_before_release, .timeout = 60)
{
    constexpr int N = 4, PHASES = 200;
    std::atomic<int> arrived{0}, completions{0}, bad{0};
    // Runs once per phase, once all N have arrived and before any leaves:
    // nobody can have counted itself into the next phase yet.
    auto done = [&]() noexcept {
        if (arrived.exchange(0) != N)
            bad++;
        completions++;
    };
    ks::barrier<decltype(done)> b(N, done);
    auto v = spawn(N, [&](int) {
        for (int p = 0; p < PHASES; p++) {
            arrived++;
            b.arrive_and_wait();
            // this phase's completion has run, the next one cannot have: it
            // needs this thread's next arrival
            if (completions.load() != p + 1)
                bad++;
        }
    });
    join_all(v);
    cr_assert_eq(bad.load(), 0, "a completion ran early or late");
    cr_assert_eq(completions.load(), PHASES);
}

// ---- queue ---------------------------------------------------------------------------------

static int queued_fn(int x) { return x + 1; }

// Function pointers and pointers to volatile did not compile in the first
// version (they went through static_cast<const void *>).
KT_TEST(queue_of_function_and_volatile_pointers, .timeout = 30)
{
    ks::queue<int (*)(int)> qf(2);
    cr_assert(qf.put(&queued_fn));
    int (*f)(int) = nullptr;
    cr_assert(qf.get(f) && f == &queued_fn && f(1) == 2);
    static volatile int cell = 5;
    ks::queue<volatile int *> qv(2);
    cr_assert(qv.put(&cell));
    volatile int *p = nullptr;
    cr_assert(qv.get(p) && p == &cell && *p == 5);
    ks::queue<double> qd(2);
    cr_assert(qd.put(-0.25));
    double v = 0;
    cr_assert(qd.get(v) && v == -0.25);
}

KT_TEST(queue_of_int, .timeout = 30)
{
    ks::queue<int> q(3);
    cr_assert_eq(q.capacity(), 3u);
    int x = 0;
    cr_assert(q.try_get(x) == ks::queue_status::empty);
    cr_assert(q.get_for(x, 10ms) == ks::queue_status::timeout);
    cr_assert(q.put(-7) && q.put(0) && q.try_put(7) == ks::queue_status::ok);
    cr_assert(q.try_put(8) == ks::queue_status::full);
    auto t0 = steady_clock::now();
    cr_assert(q.put_for(8, 20ms) == ks::queue_status::timeout);
    cr_assert(steady_clock::now() - t0 >= 20ms);
    cr_assert(q.put_until(8, system_clock::now() + 10ms) == ks::queue_status::timeout);
    cr_assert_eq(q.size(), 3u);
    cr_assert(q.get(x) && x == -7, "FIFO, negative values survive the void * slot");
    cr_assert(q.get_until(x, steady_clock::now() + 1s) == ks::queue_status::ok && x == 0);
    cr_assert_eq(q.unfinished(), 3u);
    q.task_done(), q.task_done();
    cr_assert_not(q.join_for(10ms), "one task not done");
    std::thread t([&] {
        int y;
        if (q.get(y) && y == 7)
            q.task_done();
    });
    cr_assert(q.join_for(10s));
    t.join();
#if defined(__cpp_exceptions)
    bool threw = false;
    try {
        q.task_done();
    } catch (const std::system_error &e) {
        threw = e.code() == std::errc::invalid_argument;
    }
    cr_assert(threw, "task_done beyond the items put throws system_error(EINVAL)");
#endif
    q.put(5);
    q.close();
    cr_assert(q.is_closed());
    cr_assert_not(q.put(6), "put after close is refused");
    cr_assert(q.try_put(6) == ks::queue_status::closed);
    cr_assert(q.get(x) && x == 5, "items put before close are still returned");
    cr_assert_not(q.get(x), "then closed and drained");
    cr_assert(q.try_get(x) == ks::queue_status::closed && q.get_for(x, 1s) == ks::queue_status::closed);
}

namespace {
struct Foo {
    int id;
    long payload[8];
};
} // namespace

KT_TEST(queue_of_pointers_with_close, .timeout = 60)
{
    ks::queue<Foo *> q(8);
    constexpr int N = 20000;
    std::vector<Foo> items(N);
    std::atomic<long> sum{0}, count{0};
    auto cons = spawn(2, [&](int) {
        Foo *f;
        while (q.get(f)) { // false once closed and drained
            sum += f->id;
            count++;
            q.task_done();
        }
    });
    for (int i = 0; i < N; i++) {
        items[i].id = i + 1;
        cr_assert(q.put(&items[i]));
    }
    q.join();
    cr_assert_eq(count.load(), (long)N, "every put taken before join returned");
    q.close();
    join_all(cons); // the consumers' get() returned false: close woke them
    cr_assert_eq(sum.load(), (long)N * (N + 1) / 2);
    Foo *f = nullptr;
    cr_assert(q.try_get(f) == ks::queue_status::closed && f == nullptr);
}

// ---- misuse and errors --------------------------------------------------------------------

KT_TEST(unlock_of_unlocked_mutex_aborts, .signal = SIGABRT)
{
    ks::mutex m;
    m.unlock();
}

KT_TEST(recursive_unlock_by_non_owner_aborts, .signal = SIGABRT)
{
    ks::recursive_mutex r;
    r.lock();
    std::thread t([&] { r.unlock(); });
    t.join();
}

KT_TEST(semaphore_initial_value_over_max_aborts, .signal = SIGABRT)
{
    ks::counting_semaphore<2> s(3);
    s.release(0); // not reached
}

#if defined(__cpp_exceptions)
KT_TEST(queue_of_capacity_0_throws)
{
    int code = 0;
    try {
        ks::queue<int> q(0);
        code = -1;
    } catch (const std::system_error &e) {
        code = e.code().value();
    }
    cr_assert_eq(code, EINVAL, "std::system_error(EINVAL), as ks_queue_create answers");
}
#endif

#if !defined(NDEBUG)
KT_TEST(destroying_a_locked_mutex_aborts_in_debug_builds, .signal = SIGABRT)
{
    alignas(ks::mutex) unsigned char raw[sizeof(ks::mutex)];
    auto *m = new (raw) ks::mutex;
    m->lock();
    m->~mutex();
}
#endif

// Exceptions off (!__cpp_exceptions): where a throw would be, an abort.
// Criterion cannot be built that way, so a program of its own is
// (tests/hpp_noexceptions.cc, built by the Makefile next to this binary).
#ifdef KT_HPP_NOEXC_BIN
#include <sys/wait.h>
#include <unistd.h>

static int run_noexc(const char *arg)
{
    pid_t pid = fork();
    if (pid == 0) {
        execl(KT_HPP_NOEXC_BIN, KT_HPP_NOEXC_BIN, arg, static_cast<char *>(nullptr));
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return st;
}

KT_TEST(exceptions_off_aborts_where_it_would_throw, .timeout = 60)
{
    int st = run_noexc(nullptr);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the -fno-exceptions program works (status %#x)", st);
    st = run_noexc("task_done");
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "and aborts instead of throwing (status %#x)", st);
}
#endif

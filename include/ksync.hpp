// ksync.hpp - ksync for C++17 users: the standard library's synchronization
// interfaces over the C API, header-only.  docs/cxx.md.
//
//   ks::mutex m;                     std::lock_guard<ks::mutex> g(m);
//   ks::timed_mutex t;               std::unique_lock<ks::timed_mutex> u(t, 10ms);
//   ks::shared_mutex s;              std::shared_lock<ks::shared_mutex> r(s);
//   ks::condition_variable cv;       cv.wait(u, [&] { return ready; });
//   ks::counting_semaphore<8> sem(8);  ks::event e;  ks::barrier<> b(4);
//   ks::queue<Job *> q(64);          q.put(job); q.get(job); q.close();
//
// Every type here is neither copyable nor movable (as the standard's): the C
// objects are futex words whose address is their identity.  The lock types,
// condition_variable, event, semaphores and barrier have constexpr
// constructors, so a global one is constant-initialised and usable from any
// other static initialiser.
//
// Errors, in three kinds:
//  - where the standard type throws std::system_error (recursive_mutex::lock
//    past its depth limit, lock_shared past the reader limit) these throw
//    it, and so do a queue that cannot be allocated (std::bad_alloc) and
//    an extra queue::task_done(); when exceptions are off
//    (!__cpp_exceptions) they print the error and call std::abort();
//  - a broken precondition ksync detects (unlock of a mutex not held,
//    release beyond max(), a semaphore initialised above max()) is a bug
//    in the caller: it is printed and std::abort()ed, with or without
//    exceptions (the standard leaves it undefined, and the functions
//    involved may not throw);
//  - destroying an object that is still in use (a locked mutex, a
//    semaphore or queue with sleepers, a half-filled barrier phase: EBUSY
//    from the C destroy) is printed and aborted in builds without NDEBUG,
//    like an assert(), and ignored with NDEBUG (the C destroys of the
//    fixed-size objects free nothing, so ignoring it costs no memory; a
//    queue's ring is then left allocated; std::mutex's destructor has
//    undefined behaviour there).  Define KS_HPP_CHECK_DESTROY to 0 or 1 to
//    choose independently of NDEBUG.
#ifndef KSYNC_HPP
#define KSYNC_HPP

#if __cplusplus < 201703L
#error "ksync.hpp needs C++17"
#endif

// Only the headers of the primitives wrapped here, not ksync.h: a C++
// program need not see the rest.
#include <ksync/barrier.h>
#include <ksync/common.h>
#include <ksync/cond.h>
#include <ksync/event.h>
#include <ksync/mutex.h>
#include <ksync/queue.h>
#include <ksync/rmutex.h>
#include <ksync/rwlock.h>
#include <ksync/sem.h>
#include <ksync/time.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <shared_mutex> // std::shared_lock, for ks::shared_mutex users
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>

#ifndef KS_HPP_CHECK_DESTROY
#ifdef NDEBUG
#define KS_HPP_CHECK_DESTROY 0
#else
#define KS_HPP_CHECK_DESTROY 1
#endif
#endif

namespace ks {

namespace detail {

// Out of line and cold, so that the inline fast paths keep only a
// not-taken branch.
[[noreturn]] __attribute__((cold, noinline)) inline void misuse(int err, const char *what) noexcept
{
    std::fprintf(stderr, "ksync: %s: %s\n", what, std::strerror(err));
    std::abort();
}

[[noreturn]] __attribute__((cold, noinline)) inline void throw_error(int err, const char *what)
{
#if defined(__cpp_exceptions)
    if (err == ENOMEM)
        throw std::bad_alloc();
    throw std::system_error(err, std::generic_category(), what);
#else
    std::fprintf(stderr, "ksync: %s: %s (exceptions are off)\n", what, std::strerror(err));
    std::abort();
#endif
}

inline void destroyed(int err, const char *what) noexcept
{
    if (KS_HPP_CHECK_DESTROY && err != 0)
        misuse(err, what);
}

// ---- time ---------------------------------------------------------------
// ksync's deadlines are int64 ns of CLOCK_MONOTONIC, which is what
// libstdc++'s steady_clock reads on Linux (_GLIBCXX_USE_CLOCK_MONOTONIC;
// tests/test_hpp.cc checks that the two agree), so a steady_clock time
// point is a deadline as it is.

// A duration in ns, rounded up (a deadline must never come early) and
// saturated at KS_FOREVER.  The whole conversion is made in long double,
// whose 64-bit mantissa holds every int64 exactly: the count is converted
// before it is scaled (duration_cast's common type is long double), so no
// integer product can overflow (hours::max() in ns, a 1/60 s period) and a
// float or double count near the limit is not rounded up past it in its
// own type; the value converted to int64 is the one that was checked.
// NaN waits forever, like a huge value.
template <class Rep, class Period>
inline int64_t ns_saturated(const std::chrono::duration<Rep, Period> &d)
{
    using ldns = std::chrono::duration<long double, std::nano>;
    const long double v = std::chrono::duration_cast<ldns>(d).count();
    if (!(v < static_cast<long double>(KS_FOREVER)))
        return KS_FOREVER;
    if (v <= 0)
        return 0;
    const long double up = __builtin_ceill(v); // <= KS_FOREVER: INT64_MAX is exact here
    return up >= static_cast<long double>(KS_FOREVER) ? KS_FOREVER : static_cast<int64_t>(up);
}

// A relative timeout from now; zero or negative means "try once", which is
// what the past deadline 0 asks of every ksync timed call.
template <class Rep, class Period>
inline int64_t deadline_after(const std::chrono::duration<Rep, Period> &rel)
{
    if (rel <= rel.zero())
        return 0;
    return ks_deadline_after(ns_saturated(rel)); // saturates at KS_FOREVER
}

// The time left until atime on Clock, as a deadline.  Both time points are
// taken to long double ns before they are compared or subtracted: in their
// common type (ns for the system clock) a coarse extreme such as
// time_point<system_clock, hours>::max() or system_clock's min() would
// overflow.  A time point already reached is a try.
template <class Clock, class Duration>
inline std::chrono::duration<long double, std::nano>
left_until(const std::chrono::time_point<Clock, Duration> &atime)
{
    using ldns = std::chrono::duration<long double, std::nano>;
    return std::chrono::duration_cast<ldns>(atime.time_since_epoch()) -
           std::chrono::duration_cast<ldns>(Clock::now().time_since_epoch());
}
template <class Clock, class Duration>
inline int64_t deadline_from(const std::chrono::time_point<Clock, Duration> &atime)
{
    return deadline_after(left_until(atime));
}
template <class Clock, class Duration>
inline bool reached(const std::chrono::time_point<Clock, Duration> &atime)
{
    return !(left_until(atime).count() > 0);
}

template <class Duration>
inline int64_t deadline_at(const std::chrono::time_point<std::chrono::steady_clock, Duration> &t)
{
    return ns_saturated(t.time_since_epoch());
}

// Run `attempt(deadline)` (0, ETIMEDOUT or another error) until `atime` on
// `Clock`.  steady_clock: one attempt.  Another clock may be stepped or run
// at another rate, so its time point is turned into a relative timeout at
// the call, and after a timeout the clock is read again: the standard
// requires that a _until call on such a clock does not time out before
// Clock::now() has reached atime.
template <class Clock, class Duration, class F>
inline int until(const std::chrono::time_point<Clock, Duration> &atime, F attempt)
{
    if constexpr (std::is_same<Clock, std::chrono::steady_clock>::value) {
        return attempt(deadline_at(atime));
    } else {
        for (;;) {
            int rc = attempt(deadline_from(atime));
            if (rc != ETIMEDOUT || reached(atime))
                return rc;
        }
    }
}

} // namespace detail

// ---- mutexes --------------------------------------------------------------

// Lockable (and, through it, what std::lock_guard, std::unique_lock,
// std::scoped_lock, std::lock and std::condition_variable_any need).
class mutex {
public:
    using native_handle_type = ks_mutex_t *;

    constexpr mutex() noexcept = default;
    ~mutex() { detail::destroyed(ks_mutex_destroy(&m_), "ks::mutex destroyed while locked"); }
    mutex(const mutex &) = delete;
    mutex &operator=(const mutex &) = delete;

    // ks_mutex_lock fails only for NULL, which `this` is not: the check
    // folds away on the inline fast path.
    void lock()
    {
        int e = ks_mutex_lock(&m_);
        if (KS_UNLIKELY(e))
            detail::throw_error(e, "ks::mutex::lock");
    }
    bool try_lock() noexcept { return ks_mutex_trylock(&m_) == 0; }
    void unlock()
    {
        int e = ks_mutex_unlock(&m_);
        if (KS_UNLIKELY(e))
            detail::misuse(e, "ks::mutex::unlock of a mutex that is not locked");
    }
    native_handle_type native_handle() noexcept { return &m_; }

protected:
    template <class Rep, class Period>
    bool timed_for(const std::chrono::duration<Rep, Period> &rel)
    {
        return timed(detail::deadline_after(rel));
    }
    template <class Clock, class Duration>
    bool timed_until(const std::chrono::time_point<Clock, Duration> &atime)
    {
        return detail::until(atime, [this](int64_t d) { return ks_mutex_timedlock(&m_, d); }) == 0;
    }
    bool timed(int64_t deadline) { return ks_mutex_timedlock(&m_, deadline) == 0; }

private:
    ks_mutex_t m_ = KS_MUTEX_INIT;
};

// TimedLockable.  The same futex word as ks::mutex: a timed wait costs the
// untimed ones nothing.  Private base: a timed_mutex is not a ks::mutex
// (ks::condition_variable takes std::unique_lock<ks::mutex> only, as
// std::condition_variable does).
class timed_mutex : private mutex {
public:
    using mutex::native_handle_type;

    constexpr timed_mutex() noexcept = default;

    using mutex::lock;
    using mutex::native_handle;
    using mutex::try_lock;
    using mutex::unlock;

    template <class Rep, class Period>
    bool try_lock_for(const std::chrono::duration<Rep, Period> &rel)
    {
        return timed_for(rel);
    }
    template <class Clock, class Duration>
    bool try_lock_until(const std::chrono::time_point<Clock, Duration> &atime)
    {
        return timed_until(atime);
    }
};

// Recursive, with an owner check: unlock from a thread that does not hold
// it is detected (EPERM: misuse).  The depth limit is KS_RMUTEX_MAX_DEPTH;
// past it lock() throws std::system_error(resource_unavailable_try_again),
// as the standard says, and try_lock() returns false.
class recursive_mutex {
public:
    using native_handle_type = ks_rmutex_t *;

    constexpr recursive_mutex() noexcept = default;
    ~recursive_mutex() { detail::destroyed(ks_rmutex_destroy(&m_), "ks::recursive_mutex destroyed while locked"); }
    recursive_mutex(const recursive_mutex &) = delete;
    recursive_mutex &operator=(const recursive_mutex &) = delete;

    void lock()
    {
        int e = ks_rmutex_lock(&m_);
        if (KS_UNLIKELY(e))
            detail::throw_error(e, "ks::recursive_mutex::lock");
    }
    bool try_lock() noexcept { return ks_rmutex_trylock(&m_) == 0; }
    void unlock()
    {
        int e = ks_rmutex_unlock(&m_);
        if (KS_UNLIKELY(e))
            detail::misuse(e, "ks::recursive_mutex::unlock by a thread that does not hold it");
    }
    native_handle_type native_handle() noexcept { return &m_; }

protected:
    // EAGAIN (depth limit) is a failed try, as try_lock's.
    template <class Clock, class Duration>
    bool timed_until(const std::chrono::time_point<Clock, Duration> &atime)
    {
        return detail::until(atime, [this](int64_t d) { return ks_rmutex_timedlock(&m_, d); }) == 0;
    }
    bool timed(int64_t deadline) { return ks_rmutex_timedlock(&m_, deadline) == 0; }

private:
    ks_rmutex_t m_ = KS_RMUTEX_INIT;
};

class recursive_timed_mutex : private recursive_mutex {
public:
    using recursive_mutex::native_handle_type;

    constexpr recursive_timed_mutex() noexcept = default;

    using recursive_mutex::lock;
    using recursive_mutex::native_handle;
    using recursive_mutex::try_lock;
    using recursive_mutex::unlock;

    template <class Rep, class Period>
    bool try_lock_for(const std::chrono::duration<Rep, Period> &rel)
    {
        return timed(detail::deadline_after(rel));
    }
    template <class Clock, class Duration>
    bool try_lock_until(const std::chrono::time_point<Clock, Duration> &atime)
    {
        return timed_until(atime);
    }
};

// SharedTimedLockable over the writer-preferring ks_rwlock.  As with
// std::shared_mutex, a thread must not take it again in any mode while it
// holds it (here a second lock_shared can deadlock behind a waiting
// writer), and a shared lock is released by the thread that took it
// (ks_rwlock's reader bias: another thread's unlock is EPERM, misuse).
class shared_mutex {
public:
    using native_handle_type = ks_rwlock_t *;

    constexpr shared_mutex() noexcept = default;
    ~shared_mutex() { detail::destroyed(ks_rwlock_destroy(&l_), "ks::shared_mutex destroyed while locked"); }
    shared_mutex(const shared_mutex &) = delete;
    shared_mutex &operator=(const shared_mutex &) = delete;

    void lock()
    {
        int e = ks_rwlock_wrlock(&l_);
        if (KS_UNLIKELY(e))
            detail::throw_error(e, "ks::shared_mutex::lock");
    }
    bool try_lock() { return ks_rwlock_trywrlock(&l_) == 0; }
    void unlock() { release("ks::shared_mutex::unlock of a lock this thread does not hold"); }

    // EAGAIN: KS_RWLOCK_MAX_READERS readers already hold it.
    void lock_shared()
    {
        int e = ks_rwlock_rdlock(&l_);
        if (KS_UNLIKELY(e))
            detail::throw_error(e, "ks::shared_mutex::lock_shared");
    }
    bool try_lock_shared() { return ks_rwlock_tryrdlock(&l_) == 0; }
    void unlock_shared() { release("ks::shared_mutex::unlock_shared of a lock this thread does not hold"); }

    template <class Rep, class Period>
    bool try_lock_for(const std::chrono::duration<Rep, Period> &rel)
    {
        return ks_rwlock_timedwrlock(&l_, detail::deadline_after(rel)) == 0;
    }
    template <class Clock, class Duration>
    bool try_lock_until(const std::chrono::time_point<Clock, Duration> &atime)
    {
        return detail::until(atime, [this](int64_t d) { return ks_rwlock_timedwrlock(&l_, d); }) == 0;
    }
    template <class Rep, class Period>
    bool try_lock_shared_for(const std::chrono::duration<Rep, Period> &rel)
    {
        return ks_rwlock_timedrdlock(&l_, detail::deadline_after(rel)) == 0;
    }
    template <class Clock, class Duration>
    bool try_lock_shared_until(const std::chrono::time_point<Clock, Duration> &atime)
    {
        return detail::until(atime, [this](int64_t d) { return ks_rwlock_timedrdlock(&l_, d); }) == 0;
    }

    native_handle_type native_handle() noexcept { return &l_; }

private:
    void release(const char *what)
    {
        int e = ks_rwlock_unlock(&l_);
        if (KS_UNLIKELY(e))
            detail::misuse(e, what);
    }

    ks_rwlock_t l_ = KS_RWLOCK_INIT;
};

// std::shared_timed_mutex is std::shared_mutex plus the timed calls, which
// ks::shared_mutex already has.
using shared_timed_mutex = shared_mutex;

// ---- condition variable ---------------------------------------------------

// For std::unique_lock<ks::mutex>, as std::condition_variable is for
// std::unique_lock<std::mutex>; for any other lock std::condition_variable_any
// works with the ks lock types.  Destroying it once every waiter has been
// notified is safe even if they have not returned yet (ks_cond_destroy waits
// for them), as the standard allows.
class condition_variable {
public:
    using native_handle_type = ks_cond_t *;

    constexpr condition_variable() noexcept = default;
    ~condition_variable() noexcept { (void)ks_cond_destroy(&c_); } // 0 or EINVAL (NULL) only
    condition_variable(const condition_variable &) = delete;
    condition_variable &operator=(const condition_variable &) = delete;

    void notify_one() noexcept { (void)ks_cond_signal(&c_); }
    void notify_all() noexcept { (void)ks_cond_broadcast(&c_); }

    void wait(std::unique_lock<mutex> &lock) { (void)wait_deadline(lock, KS_FOREVER); }

    template <class Predicate>
    void wait(std::unique_lock<mutex> &lock, Predicate pred)
    {
        while (!pred())
            wait(lock);
    }

    template <class Clock, class Duration>
    std::cv_status wait_until(std::unique_lock<mutex> &lock, const std::chrono::time_point<Clock, Duration> &atime)
    {
        if constexpr (std::is_same<Clock, std::chrono::steady_clock>::value) {
            return wait_deadline(lock, detail::deadline_at(atime));
        } else {
            // One wait, converted at the call; after a timeout on ksync's
            // clock, Clock decides (the standard's rule for non-steady
            // clocks); a wait that is then early is a spurious wake-up.
            if (wait_deadline(lock, detail::deadline_from(atime)) == std::cv_status::no_timeout)
                return std::cv_status::no_timeout;
            return detail::reached(atime) ? std::cv_status::timeout : std::cv_status::no_timeout;
        }
    }

    template <class Clock, class Duration, class Predicate>
    bool wait_until(std::unique_lock<mutex> &lock, const std::chrono::time_point<Clock, Duration> &atime,
                    Predicate pred)
    {
        while (!pred())
            if (wait_until(lock, atime) == std::cv_status::timeout)
                return pred();
        return true;
    }

    template <class Rep, class Period>
    std::cv_status wait_for(std::unique_lock<mutex> &lock, const std::chrono::duration<Rep, Period> &rel)
    {
        return wait_deadline(lock, detail::deadline_after(rel));
    }

    // The deadline is computed once: spurious wake-ups do not extend it.
    template <class Rep, class Period, class Predicate>
    bool wait_for(std::unique_lock<mutex> &lock, const std::chrono::duration<Rep, Period> &rel, Predicate pred)
    {
        const int64_t deadline = detail::deadline_after(rel);
        while (!pred())
            if (wait_deadline(lock, deadline) == std::cv_status::timeout)
                return pred();
        return true;
    }

    native_handle_type native_handle() noexcept { return &c_; }

private:
    // The mutex is held again on return in every case, ETIMEDOUT included.
    std::cv_status wait_deadline(std::unique_lock<mutex> &lock, int64_t deadline)
    {
        if (KS_UNLIKELY(!lock.owns_lock()))
            detail::misuse(EPERM, "ks::condition_variable::wait without the lock");
        int e = ks_cond_timedwait(&c_, lock.mutex()->native_handle(), deadline);
        if (e == ETIMEDOUT)
            return std::cv_status::timeout;
        if (KS_UNLIKELY(e))
            detail::misuse(e, "ks::condition_variable::wait");
        return std::cv_status::no_timeout;
    }

    ks_cond_t c_ = KS_COND_INIT;
};

// ---- semaphores -----------------------------------------------------------

// std::counting_semaphore's interface (C++20), in C++17.  LeastMaxValue is
// the exact bound (ks_sem's max), so release() past max() is detected:
// EOVERFLOW, a broken precondition (misuse).  release(n) posts n times, one
// CAS each; if it overflows midway the first units stay released.
template <std::ptrdiff_t LeastMaxValue = KS_SEM_VALUE_MAX>
class counting_semaphore {
    static_assert(LeastMaxValue >= 0, "ks::counting_semaphore: LeastMaxValue must not be negative");
    static_assert(LeastMaxValue <= static_cast<std::ptrdiff_t>(KS_SEM_VALUE_MAX),
                  "ks::counting_semaphore: LeastMaxValue above KS_SEM_VALUE_MAX (2^31 - 1)");

public:
    using native_handle_type = ks_sem_t *;

    // Constant-initialisable (the standard's constructor is constexpr): the
    // fields are set as ks_sem_init_bounded(desired, LeastMaxValue) would
    // (max 0 stands for KS_SEM_VALUE_MAX; LeastMaxValue 0 is kept at 1 in
    // the word, and release() refuses any unit itself).
    constexpr explicit counting_semaphore(std::ptrdiff_t desired) noexcept
        : s_{static_cast<uint64_t>(desired), kmax, 0u}
    {
        if (desired < 0 || desired > LeastMaxValue)
            detail::misuse(EINVAL, "ks::counting_semaphore: initial value outside [0, max()]");
    }
    ~counting_semaphore() { detail::destroyed(ks_sem_destroy(&s_), "ks::counting_semaphore destroyed with waiters"); }
    counting_semaphore(const counting_semaphore &) = delete;
    counting_semaphore &operator=(const counting_semaphore &) = delete;

    static constexpr std::ptrdiff_t max() noexcept { return LeastMaxValue; }

    void release(std::ptrdiff_t update = 1) noexcept
    {
        if (KS_UNLIKELY(update < 0 || update > LeastMaxValue))
            detail::misuse(EINVAL, "ks::counting_semaphore::release: update outside [0, max()]");
        for (std::ptrdiff_t i = 0; i < update; i++) {
            int e = ks_sem_post(&s_);
            if (KS_UNLIKELY(e))
                detail::misuse(e, "ks::counting_semaphore::release above max()");
        }
    }

    void acquire() noexcept { (void)ks_sem_wait(&s_); } // 0 or EINVAL (NULL) only
    bool try_acquire() noexcept { return ks_sem_trywait(&s_) == 0; }

    template <class Rep, class Period>
    bool try_acquire_for(const std::chrono::duration<Rep, Period> &rel)
    {
        return ks_sem_timedwait(&s_, detail::deadline_after(rel)) == 0;
    }
    template <class Clock, class Duration>
    bool try_acquire_until(const std::chrono::time_point<Clock, Duration> &atime)
    {
        return detail::until(atime, [this](int64_t d) { return ks_sem_timedwait(&s_, d); }) == 0;
    }

    native_handle_type native_handle() noexcept { return &s_; }

private:
    static constexpr uint32_t kmax = LeastMaxValue == 0 ? 1u
                                     : static_cast<uint64_t>(LeastMaxValue) >= KS_SEM_VALUE_MAX
                                         ? 0u
                                         : static_cast<uint32_t>(LeastMaxValue);
    ks_sem_t s_;
};

using binary_semaphore = counting_semaphore<1>;

// ---- event ----------------------------------------------------------------

// Manual-reset event (Python's threading.Event).  A set() then clear() while
// a thread waits still releases it (ksync/event.h): wait() means "a set()
// happened since I started waiting", not "is set now".
class event {
public:
    using native_handle_type = ks_event_t *;

    constexpr event() noexcept = default;
    ~event() { (void)ks_event_destroy(&e_); } // 0 or EINVAL (NULL) only
    event(const event &) = delete;
    event &operator=(const event &) = delete;

    void set() noexcept { (void)ks_event_set(&e_); }
    void clear() noexcept { (void)ks_event_clear(&e_); }
    bool is_set() const noexcept { return ks_event_is_set(&e_) != 0; }
    void wait() noexcept { (void)ks_event_wait(&e_); }

    template <class Rep, class Period>
    bool wait_for(const std::chrono::duration<Rep, Period> &rel)
    {
        return ks_event_timedwait(&e_, detail::deadline_after(rel)) == 0;
    }
    template <class Clock, class Duration>
    bool wait_until(const std::chrono::time_point<Clock, Duration> &atime)
    {
        return detail::until(atime, [this](int64_t d) { return ks_event_timedwait(&e_, d); }) == 0;
    }

    native_handle_type native_handle() noexcept { return &e_; }

private:
    ks_event_t e_ = KS_EVENT_INIT;
};

// ---- barrier --------------------------------------------------------------

struct no_completion {
    void operator()() noexcept {}
};

// std::barrier's arrive_and_wait() over ks_barrier.  The completion
// function runs once per phase, after every thread has arrived and before
// any returns, as the standard requires: ks_barrier_wait releases all its
// waiters at once, so a phase with a completion is two ks_barrier phases,
// the second one held back by the thread that got KS_BARRIER_SERIAL until
// it has run the function.  With no_completion (the default) it is one.
// arrive(), wait(arrival_token) and arrive_and_drop() are not provided:
// ks_barrier has a fixed count and no split arrive/wait.
template <class CompletionFunction = no_completion>
class barrier {
    static_assert(std::is_nothrow_invocable<CompletionFunction &>::value,
                  "ks::barrier: the completion function must be callable as f() and noexcept (as std::barrier)");

public:
    static constexpr std::ptrdiff_t max() noexcept { return KS_BARRIER_MAX; }

    constexpr explicit barrier(std::ptrdiff_t expected, CompletionFunction f = CompletionFunction())
        : b_(KS_BARRIER_INIT(expected)), f_(std::move(f))
    {
        if (expected <= 0 || expected > max())
            detail::misuse(EINVAL, "ks::barrier: expected count outside [1, max()]");
    }
    ~barrier() { detail::destroyed(ks_barrier_destroy(&b_), "ks::barrier destroyed mid-phase"); }
    barrier(const barrier &) = delete;
    barrier &operator=(const barrier &) = delete;

    void arrive_and_wait()
    {
        int r = ks_barrier_wait(&b_);
        if constexpr (!std::is_same<CompletionFunction, no_completion>::value) {
            if (r == KS_BARRIER_SERIAL)
                f_();
            r = ks_barrier_wait(&b_);
        }
        if (KS_UNLIKELY(r != 0 && r != KS_BARRIER_SERIAL))
            detail::misuse(r, "ks::barrier::arrive_and_wait");
    }

    ks_barrier_t *native_handle() noexcept { return &b_; }

private:
    ks_barrier_t b_;
    CompletionFunction f_;
};

// ---- queue ----------------------------------------------------------------

enum class queue_status {
    ok,
    closed,  // put: the queue is closed; get: closed and drained
    full,    // try_put
    empty,   // try_get
    timeout, // put_for/put_until/get_for/get_until
};

// Blocking bounded MPMC queue (ksync/queue.h) of one-word items: pointers,
// or trivially copyable values no larger than a pointer, carried in the C
// queue's void * slot.  It owns its ks_queue (ks_queue_create/destroy).
// Destroy only once every call on it has returned (ksync/queue.h); a
// destroy that still finds sleepers (EBUSY) is retried briefly, as a waker
// may be finishing, and then treated as destroying an object in use.
template <class T>
class queue {
    static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= sizeof(void *),
                  "ks::queue<T>: T must be trivially copyable and no larger than a pointer "
                  "(it travels in ks_queue's void * slot); queue pointers to larger objects");
    static_assert(std::is_pointer<T>::value || std::is_default_constructible<T>::value,
                  "ks::queue<T>: a T that is not a pointer is rebuilt from its bytes into a "
                  "default-constructed T; queue pointers to types without a default constructor");

public:
    using value_type = T;
    using native_handle_type = ks_queue_t *;

    // std::bad_alloc (ENOMEM) or std::system_error (EINVAL: capacity 0 or
    // above KS_MPMC_CAPACITY_MAX).
    explicit queue(std::size_t capacity)
    {
        int e = ks_queue_create(&q_, capacity, 0);
        if (e)
            detail::throw_error(e, "ks::queue");
    }
    ~queue()
    {
        int e;
        for (int i = 0; (e = ks_queue_destroy(q_)) == EBUSY && i < 1000; i++)
            if (i < 100)
                std::this_thread::yield();
            else
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
        detail::destroyed(e, "ks::queue destroyed while threads wait in it");
    }
    queue(const queue &) = delete;
    queue &operator=(const queue &) = delete;

    // false: the queue is closed, the item was not queued.
    bool put(T item) { return status(ks_queue_put(q_, to_ptr(item)), "put") == queue_status::ok; }
    queue_status try_put(T item)
    {
        int e = ks_queue_tryput(q_, to_ptr(item));
        return e == EAGAIN ? queue_status::full : status(e, "try_put");
    }
    template <class Rep, class Period>
    queue_status put_for(T item, const std::chrono::duration<Rep, Period> &rel)
    {
        return status(ks_queue_timedput(q_, to_ptr(item), detail::deadline_after(rel)), "put_for");
    }
    template <class Clock, class Duration>
    queue_status put_until(T item, const std::chrono::time_point<Clock, Duration> &atime)
    {
        void *p = to_ptr(item);
        return status(detail::until(atime, [&](int64_t d) { return ks_queue_timedput(q_, p, d); }), "put_until");
    }

    // false: closed and drained.
    bool get(T &out)
    {
        void *p = nullptr;
        int e = ks_queue_get(q_, &p); // before take_ptr reads p: argument order is unspecified
        return take_ptr(e, p, out, "get") == queue_status::ok;
    }
    queue_status try_get(T &out)
    {
        void *p = nullptr;
        int e = ks_queue_tryget(q_, &p);
        return e == EAGAIN ? queue_status::empty : take_ptr(e, p, out, "try_get");
    }
    template <class Rep, class Period>
    queue_status get_for(T &out, const std::chrono::duration<Rep, Period> &rel)
    {
        void *p = nullptr;
        int e = ks_queue_timedget(q_, &p, detail::deadline_after(rel));
        return take_ptr(e, p, out, "get_for");
    }
    template <class Clock, class Duration>
    queue_status get_until(T &out, const std::chrono::time_point<Clock, Duration> &atime)
    {
        void *p = nullptr;
        int e = detail::until(atime, [&](int64_t d) { return ks_queue_timedget(q_, &p, d); });
        return take_ptr(e, p, out, "get_until");
    }

    // More task_done() calls than items put: std::system_error(EINVAL), as
    // Python raises ValueError; nothing changes.
    void task_done()
    {
        int e = ks_queue_task_done(q_);
        if (e)
            detail::throw_error(e, "ks::queue::task_done called more often than items were put");
    }
    void join() { (void)ks_queue_join(q_); } // 0 or EINVAL (NULL) only
    template <class Rep, class Period>
    bool join_for(const std::chrono::duration<Rep, Period> &rel)
    {
        return ks_queue_timedjoin(q_, detail::deadline_after(rel)) == 0;
    }
    template <class Clock, class Duration>
    bool join_until(const std::chrono::time_point<Clock, Duration> &atime)
    {
        return detail::until(atime, [this](int64_t d) { return ks_queue_timedjoin(q_, d); }) == 0;
    }

    void close() noexcept { (void)ks_queue_close(q_); }
    bool is_closed() const noexcept { return ks_queue_is_closed(q_) != 0; }
    std::size_t size() const noexcept { return ks_queue_size(q_); } // a snapshot
    std::size_t capacity() const noexcept { return ks_queue_capacity(q_); }
    std::uint64_t unfinished() const noexcept { return ks_queue_unfinished(q_); } // a snapshot

    native_handle_type native_handle() noexcept { return q_; }

private:
    // Object pointers (cv-qualified pointees included) travel as they are;
    // everything else, function pointers among them, as its bytes.
    static constexpr bool object_pointer =
        std::is_pointer<T>::value && std::is_object<std::remove_pointer_t<T>>::value;
    static void *to_ptr(T item) noexcept
    {
        if constexpr (object_pointer) {
            return const_cast<void *>(static_cast<const volatile void *>(item));
        } else {
            void *p = nullptr;
            std::memcpy(&p, &item, sizeof item);
            return p;
        }
    }
    static T from_ptr(void *p) noexcept
    {
        if constexpr (object_pointer) {
            return static_cast<T>(p);
        } else {
            T v;
            std::memcpy(&v, &p, sizeof v);
            return v;
        }
    }
    queue_status take_ptr(int e, void *p, T &out, const char *what)
    {
        queue_status s = status(e, what);
        if (s == queue_status::ok)
            out = from_ptr(p);
        return s;
    }
    // ETIMEDOUT, EPIPE, 0; anything else (EINVAL) cannot come from a
    // created queue and a valid deadline.
    static queue_status status(int e, const char *what)
    {
        if (e == 0)
            return queue_status::ok;
        if (e == EPIPE)
            return queue_status::closed;
        if (e == ETIMEDOUT)
            return queue_status::timeout;
        detail::misuse(e, what);
    }

    ks_queue_t *q_ = nullptr;
};

} // namespace ks

#endif

// tests/hpp_noexceptions.cc - include/ksync.hpp in a program built with
// -fno-exceptions: a standalone program (Criterion itself needs exceptions),
// run by tests/test_hpp.cc.  With no argument it uses every type and exits
// 0; with "task_done" it makes the one call that throws std::system_error
// when exceptions are on, and must abort instead.
#include <ksync.hpp>

#include <cstdio>
#include <cstring>
#include <thread>

static int fail(const char *what)
{
    std::fprintf(stderr, "hpp-noexceptions: %s\n", what);
    return 1;
}

int main(int argc, char **argv)
{
    using namespace std::chrono_literals;
    ks::queue<int> q(2);
    if (argc > 1 && !std::strcmp(argv[1], "task_done")) {
        q.task_done(); // nothing was put: EINVAL
        return fail("task_done beyond the items put returned");
    }
    ks::timed_mutex m;
    ks::recursive_mutex r;
    ks::shared_mutex s;
    ks::condition_variable cv;
    ks::counting_semaphore<2> sem(0);
    ks::event e;
    ks::barrier<> b(2);
    {
        std::unique_lock<ks::timed_mutex> u(m, 10ms);
        std::lock_guard<ks::recursive_mutex> g(r);
        std::shared_lock<ks::shared_mutex> sh(s);
        if (!u.owns_lock())
            return fail("timed_mutex");
    }
    std::thread t([&] {
        b.arrive_and_wait();
        sem.release();
        e.set();
        q.put(7);
    });
    b.arrive_and_wait();
    int v = 0;
    if (!sem.try_acquire_for(10s) || !e.wait_for(10s) || !q.get(v) || v != 7)
        return fail("semaphore, event or queue");
    t.join();
    ks::mutex cm;
    std::unique_lock<ks::mutex> cu(cm);
    if (cv.wait_for(cu, 1ms) != std::cv_status::timeout)
        return fail("condition_variable");
    return 0;
}

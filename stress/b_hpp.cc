// stress/b_hpp.cc - section 1's C++ rows: lock+unlock through
// std::lock_guard, on ks::mutex (include/ksync.hpp) and on std::mutex.  The
// loops are here, in a C++ translation unit, and b_uncontended.c calls them
// through the extern "C" functions of b_hpp.h; each is noinline and runs the
// whole count, so the one call from C costs nothing per pair.
#include "b_hpp.h"

#include <ksync.hpp>

#include <mutex>

namespace {
// Objects of their own, one cache line each, as section 1's C rows have.
alignas(KS_CACHELINE) ks::mutex ks_m;
alignas(KS_CACHELINE) std::mutex std_m;

template <class M>
__attribute__((noinline)) void guard_loop(M &m, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        std::lock_guard<M> g(m);
    }
}
} // namespace

extern "C" void bench_hpp_ks_lock_guard(uint64_t n)
{
    guard_loop(ks_m, n);
}

extern "C" void bench_hpp_std_lock_guard(uint64_t n)
{
    guard_loop(std_m, n);
}

/* stress/b_hpp.h - the C++ loops of section 1 (stress/b_hpp.cc), callable
 * from C: n lock+unlock pairs through std::lock_guard. */
#ifndef KS_B_HPP_H
#define KS_B_HPP_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
void bench_hpp_ks_lock_guard(uint64_t n);  /* std::lock_guard<ks::mutex> */
void bench_hpp_std_lock_guard(uint64_t n); /* std::lock_guard<std::mutex> */
#ifdef __cplusplus
}
#endif

#endif

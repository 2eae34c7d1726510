/* stress/ck_ec_os.h - the operating-system callbacks Concurrency Kit's event
 * count (ck_ec) needs, shared by the S8 scenario and the hand-off benchmark.
 * These are the reference's own futex calls, not ksync's (ksync's single
 * futex call site is src/futex.c). */
#ifndef KSYNC_STRESS_CK_EC_OS_H
#define KSYNC_STRESS_CK_EC_OS_H

#include <ck_ec.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int ec_gettime(const struct ck_ec_ops *ops, struct timespec *out)
{
    (void)ops;
    return clock_gettime(CLOCK_MONOTONIC, out);
}

/* deadline: absolute, on CLOCK_MONOTONIC (ec_gettime's clock), which is what
 * FUTEX_WAIT_BITSET takes; NULL waits forever.  Any early return is allowed. */
static void ec_wait32(const struct ck_ec_wait_state *ws, const uint32_t *addr, uint32_t expected,
                      const struct timespec *deadline)
{
    (void)ws;
    syscall(SYS_futex, addr, FUTEX_WAIT_BITSET_PRIVATE, expected, deadline, NULL, FUTEX_BITSET_MATCH_ANY);
}

static void ec_wake32(const struct ck_ec_ops *ops, const uint32_t *addr)
{
    (void)ops;
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Only the 32-bit event count is used: wait64/wake64 stay NULL. */
static const struct ck_ec_ops ec_ops = {.gettime = ec_gettime, .wait32 = ec_wait32, .wake32 = ec_wake32};

#endif

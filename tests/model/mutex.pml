/* tests/model/mutex.pml - ks_mutex: the three-bit word (locked, contended,
 * starving), the slow path with timeouts, the slept-waiter hand-off.
 * See docs/model.md.
 *
 * NT threads each lock the mutex RND times, each time choosing
 * nondeterministically between ks_mutex_lock and ks_mutex_timedlock (a
 * finite deadline that may expire at any moment), and unlock when they got
 * it.  Checked:
 *   - mutual exclusion (assertion in kmutex.pml);
 *   - no lost wake-up: every thread returns (a thread left in a futex queue
 *     is an invalid end state);
 *   - no residue: when every thread has returned, the word is 0 (a free
 *     mutex still marked MC makes trylock and destroy answer EBUSY forever).
 * BUG_STARVE_RESIDUE: the timed-out owner of MS clears only MS (main before
 * the fix): the word is left MC after a newcomer timed out meanwhile.
 * BUG_NO_SLEPT_C: a woken waiter takes the mutex without setting MC, so its
 * unlock wakes nobody and a third thread sleeps for ever (checks that the
 * model sees a lost wake-up as an invalid end state).
 */
#ifndef NT
#define NT 3
#endif
#ifndef RND
#define RND 1
#endif
#define NW 1
#define NPROC (NT + 1)
#define M 0

#include "futex.pml"
#include "kmutex.pml"

proctype Thread()
{
    FUTEX_LOCALS;
    MUTEX_LOCALS;
    byte tmo, r, i;
    do
    :: i < RND ->
        if
        :: tmo = 0
        :: tmo = 1
        fi;
        mutex_lock(M, 0, tmo, r);
        if
        :: r == 0 -> mutex_unlock(M)
        :: else
        fi;
        tmo = 0; r = 0; i++
    :: else -> break
    od
}

init
{
    byte i;
    atomic {
        do
        :: i < NT -> run Thread(); i++
        :: else -> break
        od
    };
    _nr_pr == 1;          /* every thread has returned */
    assert(fw[M] == 0);   /* no residue: free and nobody marked as waiting */
    assert(qn[M] == 0)
}

/* examples/bank_abba.c - the course's classic deadlock (S16), as a plain
 * pthread program that knows nothing of ksync: two tellers move money
 * between two accounts, one from a to b, the other from b to a, each
 * locking "from" then "to".  Sooner or later each holds one lock and waits
 * for the other.
 *
 *   ./bank_abba                              hangs (glibc, or ksync-run alone)
 *   ksync-run --lockdep=abort -- ./bank_abba  the inversion is reported, then abort()
 *   ksync-run --lockdep -- ./bank_abba 1      one teller after the other: no
 *                                             deadlock in this run, and the
 *                                             inversion is still reported
 *
 * docs/lockdep.md shows the report.  The first argument, if 1, runs the
 * tellers one after the other; a second argument "static" leaves the
 * accounts' mutexes as PTHREAD_MUTEX_INITIALIZER made them (never
 * initialised: each is a class of its own). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct account {
    pthread_mutex_t lock;
    long balance;
};

static struct account acct[2] = {{PTHREAD_MUTEX_INITIALIZER, 100}, {PTHREAD_MUTEX_INITIALIZER, 100}};

static void transfer(struct account *from, struct account *to, long amount)
{
    pthread_mutex_lock(&from->lock);
    /* the course's time.sleep(0.1): the other teller takes its first lock */
    nanosleep(&(struct timespec){0, 100000000}, NULL);
    pthread_mutex_lock(&to->lock);
    from->balance -= amount;
    to->balance += amount;
    pthread_mutex_unlock(&to->lock);
    pthread_mutex_unlock(&from->lock);
}

static void *teller_ab(void *p)
{
    (void)p;
    transfer(&acct[0], &acct[1], 10);
    return NULL;
}

static void *teller_ba(void *p)
{
    (void)p;
    transfer(&acct[1], &acct[0], 20);
    return NULL;
}

int main(int argc, char **argv)
{
    int one_by_one = argc > 1 && atoi(argv[1]) == 1;
    int statics = argc > 2 && strcmp(argv[2], "static") == 0;
    for (int i = 0; i < 2 && !statics; i++)
        pthread_mutex_init(&acct[i].lock, NULL);
    pthread_t a, b;
    pthread_create(&a, NULL, teller_ab, NULL);
    if (one_by_one)
        pthread_join(a, NULL);
    pthread_create(&b, NULL, teller_ba, NULL);
    if (!one_by_one)
        pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("total %ld\n", acct[0].balance + acct[1].balance);
    return acct[0].balance + acct[1].balance == 200 ? 0 : 1;
}

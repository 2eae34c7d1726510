/* ksync.h - umbrella header: everything public in ksync. */
#ifndef KSYNC_H
#define KSYNC_H

#include <ksync/common.h>
#include <ksync/time.h>
#include <ksync/mutex.h>
#include <ksync/rmutex.h>
#include <ksync/robust.h>
#include <ksync/robust_rwlock.h>
#include <ksync/sem.h>
#include <ksync/event.h>
#include <ksync/cond.h>
#include <ksync/barrier.h>
#include <ksync/rwlock.h>
#include <ksync/once.h>
#include <ksync/mpmc.h>
#include <ksync/queue.h>
#include <ksync/pool.h>
#include <ksync/epoch.h>
#include <ksync/cache.h>
#include <ksync/channel.h>
#include <ksync/wait_any.h>
#include <ksync/lockstat.h>
#include <ksync/lockdep.h>
#include <ksync/debug.h>

#endif

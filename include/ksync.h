/* ksync.h - umbrella header: everything public in ksync. */
#ifndef KSYNC_H
#define KSYNC_H

#include <ksync/common.h>
#include <ksync/time.h>
#include <ksync/mutex.h>
#include <ksync/rmutex.h>
#include <ksync/sem.h>
#include <ksync/debug.h>

#endif

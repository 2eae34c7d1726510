/* stress/stream_io.h - whole reads and writes on a byte stream (pipe,
 * socket), for the message-passing references of ksync-stress (S21, S22)
 * and ksync-bench (section 11). */
#ifndef KS_STRESS_STREAM_IO_H
#define KS_STRESS_STREAM_IO_H

#include <errno.h>
#include <stddef.h>
#include <unistd.h>

/* 0: all n bytes written; -1: an error (EPIPE: the reader is gone). */
static inline int st_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* 1: n bytes read; 0: the end of the stream before any; -1: an error, or
 * the stream ended inside the n bytes. */
static inline int st_read_all(int fd, void *p, size_t n)
{
    char *c = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, c + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return got ? -1 : 0;
        got += (size_t)r;
    }
    return 1;
}

#endif

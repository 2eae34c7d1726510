/* ksync/channel.h - messages between processes through one shared-memory
 * segment: a ring of variable-length messages, any number of senders and
 * receivers (up to KS_CHANNEL_PEERS attachments at once), blocking calls
 * with deadlines on futexes, zero-copy reserve/commit and peek/release
 * beside the copying calls, and peer-death detection through the kernel's
 * robust-futex list.  Segment layout, protocol, what survives which
 * failure, figures: docs/ipc.md.
 *
 *   ks_channel_t *ch;
 *   ks_channel_create("/logs", 1 << 20, 4096, KS_CHANNEL_RECV, &ch);
 *   ... another process: ks_channel_open("/logs", KS_CHANNEL_SEND, &tx);
 *                        ks_channel_send(tx, rec, n, KS_FOREVER);
 *   char buf[4096]; size_t n;
 *   while (ks_channel_recv(ch, buf, sizeof buf, &n, KS_FOREVER) == 0) ...
 *   (EPIPE once every sender has closed or died and the ring is empty)
 *   ks_channel_close(ch); ks_channel_unlink("/logs");
 *
 * A handle (ks_channel_t) is one attachment of one process: a slot in the
 * segment's peer table with a role, kept alive by a thread the library
 * starts in each process that opens a channel (the keeper, which holds one
 * robust futex per attachment, so that the kernel marks the slot when the
 * process dies, however it dies).  The threads of that process may share a
 * handle; a fork child must not use its parent's handles (EBADF): it opens
 * the channel again, by name or with ks_channel_open_fd(ks_channel_fd(ch)).
 *
 * Every message is delivered to one receiver, in the order the senders'
 * commits were made; a message is whole or absent: a sender that dies
 * before its commit leaves nothing, and a receiver that dies before its
 * release leaves the message to the next receiver.
 *
 * Return values (errno codes, never through errno):
 *   create     (and every error of open) 0, EINVAL (NULL out, role not SEND/RECV/both, max_msg 0 or
 *              above KS_CHANNEL_MAX_MSG, capacity too small for two
 *              messages of max_msg or above KS_CHANNEL_MAX_CAPACITY, a name
 *              shm_open rejects), EEXIST (the name exists), ENOSPC, ENOMEM,
 *              EMFILE, EACCES..., EAGAIN (the keeper thread could not start),
 *              ENOSYS (the kernel has no robust-futex list: qemu-user)
 *   open       0, ENOENT, EINVAL, EBADMSG (not a channel, a truncated
 *              segment, or inconsistent header fields), EPROTO (made by an
 *              incompatible version of ksync), EAGAIN (its creator has not
 *              finished initialising it yet: retry), EUSERS (every peer slot
 *              is taken), EMFILE (this process has 2047 attachments open,
 *              as many as the kernel tracks for it at its death), and the
 *              errors of shm_open and mmap
 *   send       0, EMSGSIZE (len > max_msg), EPIPE (receivers have been
 *              attached and none is left), ETIMEDOUT, EPERM (the handle was
 *              opened without KS_CHANNEL_SEND), EDEADLK (the calling thread
 *              holds a reservation on this handle), EBADMSG, EBADF, EINVAL
 *   recv       0 (*len = the message's length), EMSGSIZE (cap < length:
 *              *len = length, the message stays in the channel), EPIPE
 *              (senders have been attached, none is left, and the ring is
 *              empty: every message sent was received), ETIMEDOUT, EPERM,
 *              EDEADLK, EBADMSG, EBADF, EINVAL
 *   reserve    as send; *p points to len bytes in the ring, which the
 *              thread fills and passes on with commit (or drops with
 *              cancel).  Other senders wait until then: keep it short
 *   commit     0, EINVAL (len above the reserved length: the reservation
 *              stays), EPERM (no reservation of this thread on the handle)
 *   peek       as recv without the copy: *p, *len describe the oldest
 *              message, readable until release (or cancel).  Other
 *              receivers wait until then
 *   release    0, EPERM (no peek of this thread on the handle)
 *   cancel     0 (drops this thread's reservation, or leaves its peeked
 *              message to the next receiver), EPERM (it has neither)
 *   close      0, EINVAL (NULL).  Detaches (cancelling a reservation or a
 *              peek the handle still has), unmaps, frees.  No thread may be
 *              inside a call on the handle
 *   unlink     0, or shm_unlink's error
 * Deadlines are absolute CLOCK_MONOTONIC ns (ksync/time.h): KS_FOREVER, or
 * a time already past to try once without waiting.
 *
 * A corrupted segment (another process writing garbage over the header or
 * the ring) gives EBADMSG; the library keeps the geometry it validated at
 * open in the handle and checks every length and position it reads from
 * the segment, so it never reads or writes outside the mapping.  Share a
 * channel only with processes you trust to follow the protocol: a process
 * that writes the segment can still forge, reorder or withhold messages.
 * A thread that holds a reservation (or a peek) through one handle and
 * sends (receives) through another handle of the same channel waits for
 * itself: the EDEADLK check sees one handle only.  The robust-list nodes in
 * the peer table hold addresses of the process that owns them (as glibc's
 * process-shared robust mutexes do): peers can read them.
 * Linux 5.16+ lets a waiter sleep on its event and on its peers' slots at
 * once (futex_waitv); on an older kernel a waiter re-checks its peers every
 * 10 ms.  Either way a blocked call also looks at its peers once a second:
 * the kernel wakes one waiter at a death, and that one may die too before
 * it passes the news on (docs/ipc.md, "Peer death").  64-bit Linux.
 */
#ifndef KSYNC_CHANNEL_H
#define KSYNC_CHANNEL_H

#include <stddef.h>
#include <ksync/common.h>
#include <ksync/time.h>

#define KS_CHANNEL_SEND 1u
#define KS_CHANNEL_RECV 2u

#define KS_CHANNEL_PEERS 32u                      /* attachments at once */
#define KS_CHANNEL_MAX_MSG (256u << 20)           /* 256 MiB */
#define KS_CHANNEL_MAX_CAPACITY ((size_t)1 << 31) /* 2 GiB of ring */

typedef struct ks_channel ks_channel_t;

KS_EXTERN_C_BEGIN

/* name: a shm_open name ("/x"), or NULL for an anonymous channel (a memfd)
 * that other processes reach through ks_channel_fd (inherited by fork, or
 * passed over an AF_UNIX socket).  capacity: ring bytes, rounded up to a
 * power of two (at least 4096). */
KS_API int ks_channel_create(const char *name, size_t capacity, size_t max_msg, unsigned role,
                             ks_channel_t **out);
KS_API int ks_channel_open(const char *name, unsigned role, ks_channel_t **out);
KS_API int ks_channel_open_fd(int fd, unsigned role, ks_channel_t **out);
KS_API int ks_channel_unlink(const char *name);
KS_API int ks_channel_close(ks_channel_t *ch);
/* The segment's descriptor (owned by the handle), -1 for NULL. */
KS_API int ks_channel_fd(const ks_channel_t *ch);
/* The largest message, 0 for NULL. */
KS_API size_t ks_channel_max_msg(const ks_channel_t *ch);

KS_API int ks_channel_send(ks_channel_t *ch, const void *buf, size_t len, int64_t deadline);
KS_API int ks_channel_recv(ks_channel_t *ch, void *buf, size_t cap, size_t *len, int64_t deadline);

KS_API int ks_channel_reserve(ks_channel_t *ch, size_t len, void **p, int64_t deadline);
KS_API int ks_channel_commit(ks_channel_t *ch, size_t len);
KS_API int ks_channel_peek(ks_channel_t *ch, const void **p, size_t *len, int64_t deadline);
KS_API int ks_channel_release(ks_channel_t *ch);
KS_API int ks_channel_cancel(ks_channel_t *ch);

KS_EXTERN_C_END

#endif

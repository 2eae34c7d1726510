/* examples/shm_writer.c - the C writer of the course's writer/reader pair
 * (python/reader.py is the reader; docs/python.md shows how to run them).
 *
 *   shm_writer shm NAME [COUNT] [--slots N] [--timeout S]
 *       Creates the shared-memory segment NAME (examples/course.h: a header
 *       that publishes the offsets, a ks_sem of records to read, a ks_sem of
 *       free slots, a ks_event the reader sets when it is done, a ring of
 *       slots), writes COUNT records and an end record, waits until the
 *       reader says done, and unlinks NAME.  The course's original writer
 *       slept 60 s "so there is enough time to run the reader"; here the
 *       reader says when it has finished.
 *   shm_writer channel NAME [COUNT] [--timeout S]
 *       Creates the ks_channel NAME, sends COUNT records as messages (up to
 *       KSC_CHAN_MAX bytes each) and closes it: the reader then sees EPIPE
 *       after the last one.  The reader unlinks NAME once it has opened it.
 *
 * Every wait has a deadline (--timeout, 30 s by default, for each wait):
 * a writer whose reader never comes unlinks NAME and exits 3.  (In channel
 * mode the writer waits only when the ring is full: records that fit stay
 * in the channel after the writer has gone, for a reader that comes later.)
 * On success it prints "count=N checksum=XXXXXXXX" (the payloads' CRC-32,
 * what the reader prints too) and exits 0.  Exit 2: bad arguments or a
 * failed create.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <ksync.h>

#include "course.h"

static int usage(void)
{
    fprintf(stderr, "usage: shm_writer shm NAME [COUNT] [--slots N] [--timeout S]\n"
                    "       shm_writer channel NAME [COUNT] [--timeout S]\n");
    return 2;
}

static int write_shm(const char *name, uint64_t count, uint32_t slots, int64_t timeout_ns)
{
    size_t size = ksc_segment_size(slots, KSC_SLOT);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "shm_writer: shm_open %s: %s\n", name, strerror(errno));
        return 2;
    }
    unsigned char *seg = MAP_FAILED;
    if (ftruncate(fd, (off_t)size) == 0)
        seg = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    int e = seg == MAP_FAILED ? errno : ksc_init(seg, slots, KSC_SLOT, KS_SHARED, (uint32_t)getpid());
    if (e) {
        fprintf(stderr, "shm_writer: %s: %s\n", name, strerror(e));
        shm_unlink(name);
        return 2;
    }
    struct ksc_hdr *h = (struct ksc_hdr *)(void *)seg;
    ks_sem_t *items = (ks_sem_t *)(void *)(seg + h->items_off);
    ks_sem_t *space = (ks_sem_t *)(void *)(seg + h->space_off);
    ks_event_t *done = (ks_event_t *)(void *)(seg + h->done_off);
    const uint32_t max = KSC_SLOT - (uint32_t)sizeof(struct ksc_rec);
    uint32_t crc = 0;
    int rc = 0;
    for (uint64_t seq = 0; seq <= count; seq++) {
        e = ks_sem_timedwait(space, ks_deadline_after(timeout_ns)); /* a free slot */
        if (e) {
            fprintf(stderr, "shm_writer: no free slot for record %llu within %g s: %s\n",
                    (unsigned long long)seq, (double)timeout_ns / 1e9,
                    e == ETIMEDOUT ? "no reader took one" : strerror(e));
            rc = 3;
            break;
        }
        unsigned char *slot = seg + h->ring_off + (seq % slots) * KSC_SLOT;
        struct ksc_rec r = {seq, 0, 0, 0, 0};
        if (seq < count) {
            r.len = ksc_payload(seq, slot + sizeof r, max);
            r.crc = ksc_crc32(0, slot + sizeof r, r.len);
            crc = ksc_crc32(crc, slot + sizeof r, r.len);
        } else {
            r.crc = crc; /* the end record: seq = count, crc = the total */
            r.flags = KSC_END;
        }
        memcpy(slot, &r, sizeof r);
        ks_sem_post(items); /* release: the reader's wait sees the slot */
    }
    if (!rc && (e = ks_event_timedwait(done, ks_deadline_after(timeout_ns))) != 0) {
        fprintf(stderr, "shm_writer: the reader did not say done within %g s: %s\n", (double)timeout_ns / 1e9,
                strerror(e));
        rc = 3;
    }
    shm_unlink(name);
    munmap(seg, size);
    if (!rc)
        printf("count=%llu checksum=%08x\n", (unsigned long long)count, crc);
    return rc;
}

static int write_channel(const char *name, uint64_t count, int64_t timeout_ns)
{
    ks_channel_t *ch;
    int e = ks_channel_create(name, KSC_CHAN_RING, KSC_CHAN_MAX, KS_CHANNEL_SEND, &ch);
    if (e) {
        fprintf(stderr, "shm_writer: ks_channel_create %s: %s\n", name, strerror(e));
        return 2;
    }
    static unsigned char msg[KSC_CHAN_MAX];
    const uint32_t max = KSC_CHAN_MAX - (uint32_t)sizeof(struct ksc_rec);
    uint32_t crc = 0;
    int rc = 0;
    for (uint64_t seq = 0; seq < count; seq++) {
        struct ksc_rec r = {seq, 0, 0, 0, 0};
        r.len = ksc_payload(seq, msg + sizeof r, max);
        r.crc = ksc_crc32(0, msg + sizeof r, r.len);
        crc = ksc_crc32(crc, msg + sizeof r, r.len);
        memcpy(msg, &r, sizeof r);
        e = ks_channel_send(ch, msg, sizeof r + r.len, ks_deadline_after(timeout_ns));
        if (e) {
            fprintf(stderr, "shm_writer: ks_channel_send (record %llu): %s\n", (unsigned long long)seq,
                    strerror(e));
            rc = 3;
            ks_channel_unlink(name); /* nobody came, or the reader left: leave no name behind */
            break;
        }
    }
    ks_channel_close(ch); /* the reader sees EPIPE once it has the last record */
    if (!rc)
        printf("count=%llu checksum=%08x\n", (unsigned long long)count, crc);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return usage();
    const char *mode = argv[1], *name = argv[2];
    uint64_t count = 1000;
    unsigned long slots = 8;
    double timeout = 30;
    int pos = 0;
    for (int i = 3; i < argc; i++) {
        char *end;
        if (!strcmp(argv[i], "--slots") && i + 1 < argc) {
            slots = strtoul(argv[++i], &end, 10);
            if (*end || slots == 0 || slots > (1u << 20))
                return usage();
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            timeout = strtod(argv[++i], &end);
            if (*end || !(timeout > 0) || timeout > 1e6)
                return usage();
        } else if (pos++ == 0) {
            count = strtoull(argv[i], &end, 10);
            if (*end || argv[i][0] == '-')
                return usage();
        } else {
            return usage();
        }
    }
    int64_t timeout_ns = (int64_t)(timeout * 1e9);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(mode, "shm"))
        return write_shm(name, count, (uint32_t)slots, timeout_ns);
    if (!strcmp(mode, "channel"))
        return write_channel(name, count, timeout_ns);
    return usage();
}

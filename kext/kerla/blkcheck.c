/*
 * blkcheck: what a program sees of a Kerla block device file, checked call
 * by call. Built static with musl by `cargo xtask kerla` and run by the
 * init script as `blkcheck /dev/vda READ_ERROR_SECTOR WRITE_ERROR_SECTOR`
 * (the sectors where QEMU's blkdebug fails requests). One line per check,
 * `blkcheck: ok NAME` or `blkcheck: FAIL NAME: ...`, then a verdict line;
 * the exit status is the number of failed checks.
 *
 * What it writes (the host's disk check knows these as blkcheck's scratch):
 * 8 KiB at 16 MiB, 64 KiB at 20 MiB + 3, the sector after the write-error
 * sector, and the last 100 bytes of the device with the bytes already there.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECTOR 512
#define BLKGETSIZE 0x1260
#define BLKSSZGET 0x1268
#define BLKGETSIZE64 0x80081272
/* An ioctl no block device knows. */
#define NOT_AN_IOCTL 0x7a7a

static int failures;

static void check(const char *name, int ok, const char *fmt, long long got, long long want)
{
    if (ok) {
        printf("blkcheck: ok %s\n", name);
    } else {
        failures++;
        printf("blkcheck: FAIL %s: ", name);
        printf(fmt, got, want);
        printf("\n");
    }
}

/* A call that must return `want` (>= 0). */
static void expect_value(const char *name, long long got, long long want)
{
    int saved = errno;
    if (got < 0)
        printf("blkcheck: (%s: errno %d %s)\n", name, saved, strerror(saved));
    check(name, got == want, "returned %lld, expected %lld", got, want);
}

/* A call that must fail with `want_errno`. */
static void expect_errno(const char *name, long long got, int want_errno)
{
    int saved = errno;
    check(name, got == -1 && saved == want_errno, "returned %lld with errno %lld",
          got, got == -1 ? (long long)saved : 0);
    if (got != -1 || saved != want_errno)
        printf("blkcheck: (%s: wanted errno %d %s)\n", name, want_errno, strerror(want_errno));
}

static void fill(unsigned char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)((i * 131 + seed * 7 + (i >> 9)) ^ seed);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: blkcheck DEVICE READ_ERROR_SECTOR WRITE_ERROR_SECTOR\n");
        return 100;
    }
    const char *path = argv[1];
    long long read_error = atoll(argv[2]);
    long long write_error = atoll(argv[3]);
    setvbuf(stdout, NULL, _IOLBF, 0);

    int fd = open(path, O_RDWR);
    if (fd < 0) {
        printf("blkcheck: FAIL open %s: %s\n", path, strerror(errno));
        printf("blkcheck: FAIL (1 check failed)\n");
        return 1;
    }

    /* The size, four ways. */
    uint64_t size = 0;
    expect_value("ioctl BLKGETSIZE64", ioctl(fd, BLKGETSIZE64, &size), 0);
    struct stat st;
    expect_value("fstat", fstat(fd, &st), 0);
    check("fstat says block device", S_ISBLK(st.st_mode), "mode %llo, expected S_IFBLK (%llo)",
          (long long)st.st_mode, (long long)S_IFBLK);
    check("fstat size is BLKGETSIZE64", (uint64_t)st.st_size == size && size > 0,
          "st_size %lld, BLKGETSIZE64 %lld", (long long)st.st_size, (long long)size);
    unsigned long sectors = 0;
    expect_value("ioctl BLKGETSIZE", ioctl(fd, BLKGETSIZE, &sectors), 0);
    check("BLKGETSIZE is in sectors", sectors * SECTOR == size, "%lld sectors, size %lld",
          (long long)sectors, (long long)size);
    int sector_size = 0;
    expect_value("ioctl BLKSSZGET", ioctl(fd, BLKSSZGET, &sector_size), 0);
    check("BLKSSZGET is 512", sector_size == SECTOR, "%lld, expected %lld", sector_size, SECTOR);
    expect_errno("an unknown ioctl is ENOTTY", ioctl(fd, NOT_AN_IOCTL, &size), ENOTTY);
    expect_value("lseek SEEK_END is the size", lseek(fd, 0, SEEK_END), (long long)size);

    unsigned char *buf = malloc(1 << 20), *back = malloc(1 << 20);
    if (!buf || !back) {
        printf("blkcheck: FAIL malloc\n");
        return 1;
    }

    /* Zero-length requests. */
    expect_value("read of 0 bytes", read(fd, buf, 0), 0);
    expect_value("pread of 0 bytes", pread(fd, buf, 0, 4096), 0);
    expect_value("pwrite of 0 bytes", pwrite(fd, buf, 0, 4096), 0);

    /* The end of the device. */
    expect_value("read at the end is EOF", read(fd, buf, SECTOR), 0);
    expect_value("pread at the end is EOF", pread(fd, buf, SECTOR, (off_t)size), 0);
    expect_value("pread across the end is short", pread(fd, buf, SECTOR, (off_t)size - 100), 100);
    expect_errno("pwrite at the end is ENOSPC", pwrite(fd, buf, SECTOR, (off_t)size), ENOSPC);
    expect_errno("pwrite past the end is ENOSPC", pwrite(fd, buf, SECTOR, (off_t)size + (1 << 20)),
                 ENOSPC);
    /* The bytes written across the end are the ones already there (the
     * kext's self-test stamped them, and the host checks that stamp). */
    expect_value("pread of the last 100 bytes", pread(fd, buf, 100, (off_t)size - 100), 100);
    fill(buf + 100, SECTOR - 100, 1);
    expect_value("pwrite across the end is short", pwrite(fd, buf, SECTOR, (off_t)size - 100), 100);
    expect_value("pread of the last 100 bytes again", pread(fd, back, 100, (off_t)size - 100), 100);
    check("the last 100 bytes read back", memcmp(buf, back, 100) == 0, "%lld%lld", 0, 0);

    /* Offsets that are not positions. */
    expect_errno("pread at a negative offset is EINVAL", pread(fd, buf, SECTOR, -1), EINVAL);
    expect_errno("lseek before the start is EINVAL", lseek(fd, -1, SEEK_SET), EINVAL);

    /* A huge length: the read stops at the end of the device. */
    expect_value("pread of a huge length stops at the end",
                 pread(fd, buf, (size_t)1 << 40, (off_t)size - (1 << 20)), 1 << 20);

    /* Unaligned offsets and lengths: read-modify-write, neighbours kept. */
    off_t at = 16 << 20;
    fill(buf, 8192, 2);
    expect_value("pwrite of 8 aligned sectors", pwrite(fd, buf, 8192, at), 8192);
    fill(back, 3001, 3);
    expect_value("pwrite of 3001 bytes at +777", pwrite(fd, back, 3001, at + 777), 3001);
    memcpy(buf + 777, back, 3001);
    unsigned char *got = back + 4096;
    expect_value("pread of the 8 sectors", pread(fd, got, 8192, at), 8192);
    check("unaligned write merged with its neighbours", memcmp(buf, got, 8192) == 0, "%lld%lld", 0,
          0);
    expect_value("pread of 1001 bytes at +1777", pread(fd, got, 1001, at + 1777), 1001);
    check("unaligned read returns the right bytes", memcmp(buf + 1777, got, 1001) == 0, "%lld%lld",
          0, 0);

    /* Bytes through the file position: write, seek back, read. */
    fill(buf, 65536, 4);
    expect_value("lseek to 20 MiB + 3", lseek(fd, (20 << 20) + 3, SEEK_SET), (20 << 20) + 3);
    expect_value("write of 65536 bytes", write(fd, buf, 65536), 65536);
    expect_value("the position moved", lseek(fd, 0, SEEK_CUR), (20 << 20) + 3 + 65536);
    expect_value("lseek back", lseek(fd, -65536, SEEK_CUR), (20 << 20) + 3);
    expect_value("read of 65536 bytes", read(fd, back, 65536), 65536);
    check("what was written reads back", memcmp(buf, back, 65536) == 0, "%lld%lld", 0, 0);

    /* Flushes. */
    expect_value("fsync", fsync(fd), 0);
    expect_value("fdatasync", fdatasync(fd), 0);

    /* Device errors (QEMU's blkdebug fails these sectors): EIO, nothing else lost. */
    expect_errno("a read the device fails is EIO", pread(fd, buf, SECTOR, read_error * SECTOR), EIO);
    expect_value("the sector before it still reads",
                 pread(fd, buf, SECTOR, (read_error - 1) * SECTOR), SECTOR);
    fill(buf, SECTOR, 5);
    expect_errno("a write the device fails is EIO", pwrite(fd, buf, SECTOR, write_error * SECTOR),
                 EIO);
    expect_value("the sector after it still writes",
                 pwrite(fd, buf, SECTOR, (write_error + 1) * SECTOR), SECTOR);
    expect_value("and reads back", pread(fd, back, SECTOR, (write_error + 1) * SECTOR), SECTOR);
    check("after the errors, data still round-trips", memcmp(buf, back, SECTOR) == 0, "%lld%lld", 0,
          0);

    expect_value("close", close(fd), 0);
    if (failures)
        printf("blkcheck: FAIL (%d checks failed)\n", failures);
    else
        printf("blkcheck: PASS\n");
    return failures;
}

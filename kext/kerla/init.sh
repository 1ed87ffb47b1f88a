# Kerla's init in `cargo xtask kerla` (BusyBox sh, from the initramfs).
# By the time it runs, the kext's boot self-test has run; this is what user
# space does with the disk through /dev/vda:
#
# 1. round trips with dd: a known pattern (`seq`) written at several offsets
#    and sizes (4 KiB, 64 KiB, 1 MiB, and 3001 bytes at an unaligned
#    offset), synced, read back and compared (cmp); the host then checks
#    the same bytes in the disk image;
# 2. blkcheck: each system call on the device file, bad input included,
#    with the errno it must return;
# 3. sequential throughput through /dev/vda with dd (48 MiB read; the
#    first 16 MiB copied to 32 MiB).
#
# Every result line starts with "vblk-user:"; the last is PASS or FAIL.
# Then the machine halts (reboot(2)). The runner puts VBLK_READ_ERROR and
# VBLK_WRITE_ERROR (the sectors QEMU's blkdebug fails) above this line.
B=/bin/busybox
failed=0
say() { echo "vblk-user: $*"; }
echo "vblk-kerla: init reached"

# The pattern: the first 256 KiB of "1\n2\n3\n...", which the host can
# regenerate. (Kerla keeps a tmpfs file in one kernel allocation, at most
# 1 MiB: files stay small, and the 1 MiB case comes from four copies.)
$B seq 1 50000 > /tmp/seq || failed=1
$B dd if=/tmp/seq of=/tmp/pattern bs=262144 count=1 2>/dev/null || failed=1

# name  pattern-offset  disk-offset  length (offsets into the pattern
# repeated; only the 1 MiB case reaches past its first copy)
CASES="4k 0 1048576 4096
64k 65536 2162688 65536
1m 0 4194304 1048576
unaligned 1000 8389385 3001"

# Each loop walks the cases four words at a time (no `echo | while`: the
# loop would run in a subshell).
set -- $CASES
while [ $# -ge 4 ]; do
    name=$1 from=$2 at=$3 len=$4
    shift 4
    if [ $len -le 262144 ]; then
        $B dd if=/tmp/pattern of=/dev/vda bs=$len count=1 skip=$from seek=$at \
            iflag=skip_bytes,fullblock oflag=seek_bytes conv=notrunc 2>/dev/null
    else
        # Every byte cat writes is read: a pipe whose reader left early
        # would block its writer for good (Kerla sends no SIGPIPE).
        $B cat /tmp/pattern /tmp/pattern /tmp/pattern /tmp/pattern |
            $B dd of=/dev/vda bs=$len count=1 seek=$at \
            iflag=fullblock oflag=seek_bytes conv=notrunc 2>/dev/null
    fi || say "FAIL $name: dd could not write $len bytes at $at"
done > /tmp/results
$B sync || { say "FAIL sync"; failed=1; }

# Read back in pieces of at most 256 KiB, each compared with the pattern.
set -- $CASES
while [ $# -ge 4 ]; do
    name=$1 from=$2 at=$3 len=$4
    shift 4
    ok=1
    done_len=0
    while [ $done_len -lt $len ]; do
        piece=$((len - done_len))
        [ $piece -gt 262144 ] && piece=262144
        $B dd if=/tmp/pattern of=/tmp/want bs=$piece count=1 \
            skip=$(((from + done_len) % 262144)) iflag=skip_bytes,fullblock 2>/dev/null
        $B dd if=/dev/vda of=/tmp/got bs=$piece count=1 skip=$((at + done_len)) \
            iflag=skip_bytes,fullblock 2>/dev/null
        $B cmp -s /tmp/want /tmp/got || ok=0
        done_len=$((done_len + piece))
    done
    if [ $ok = 1 ]; then
        say "ok $name: $len bytes at $at read back equal"
    else
        say "FAIL $name: $len bytes at $at read back different"
    fi
done >> /tmp/results
$B cat /tmp/results
$B grep -q FAIL /tmp/results && failed=1

/bin/blkcheck /dev/vda $VBLK_READ_ERROR $VBLK_WRITE_ERROR || failed=1

# Throughput, timed by the host from when the start and end lines arrive:
# Kerla's clock stands still while a system call runs (its timer interrupt
# is masked in the kernel), so dd's own figure is far too high. The read
# covers the first 48 MiB (blkdebug fails a sector further on); the copy
# reads the first 16 MiB and writes them at 32 MiB (Kerla has no /dev/zero,
# and no tmpfs file that large).
say "throughput: read 50331648 bytes start"
$B dd if=/dev/vda of=/dev/null bs=1M count=48 2>/dev/null
say "throughput: read end"
say "throughput: copy 16777216 bytes start"
$B dd if=/dev/vda of=/dev/vda bs=1M count=16 seek=32 conv=notrunc,fsync 2>/dev/null
say "throughput: copy end"

if [ $failed = 0 ]; then say PASS; else say FAIL; fi
$B poweroff -f

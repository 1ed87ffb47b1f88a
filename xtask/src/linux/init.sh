#!/bin/busybox sh
# /init of the Linux guest that `cargo xtask linux-fio` and `cargo xtask
# compare` boot. It loads the virtio modules (BusyBox insmod reads no
# parameters from the kernel command line, so this script passes them), runs
# fio on /dev/vda with the options the host put on the command line
# (vblk.fio=OPT,OPT,...), prints facts and fio's JSON between "@@vblk-linux"
# marker lines, and leaves QEMU through isa-debug-exit with our guest's codes:
# 1 = passed, 3 = the job failed, 5 = it could not run.

/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp

say() {
    echo "@@vblk-linux $*"
}

# QEMU exits with status 2 * value + 1 (isa-debug-exit on port 0xf4).
leave() {
    printf "\\$(printf %03o "$1")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    say "isa-debug-exit did not stop QEMU; powering off"
    poweroff -f
}

poll_queues=0
fio_options=
for word in $(cat /proc/cmdline); do
    case "$word" in
        virtio_blk.poll_queues=*) poll_queues="${word#*=}" ;;
        vblk.fio=*) fio_options="$(echo "${word#*=}" | tr , ' ')" ;;
    esac
done

# In dependency order (the host read each module's depends=).
for module in $(cat /etc/vblk-modules); do
    parameters=
    if [ "$module" = virtio_blk ]; then
        parameters="poll_queues=$poll_queues"
    fi
    # shellcheck disable=SC2086 # no parameter or one
    if ! insmod "/lib/modules/$module.ko" $parameters; then
        say "error: insmod $module $parameters failed"
        leave 2
    fi
done

waited=0
while [ ! -b /dev/vda ]; do
    waited=$((waited + 1))
    if [ "$waited" -gt 100 ]; then
        say "error: no /dev/vda after 10 s"
        dmesg | tail -n 20
        leave 2
    fi
    usleep 100000
done

say "kernel $(uname -r)"
say "cpus online $(cat /sys/devices/system/cpu/online) possible $(cat /sys/devices/system/cpu/possible)"
say "clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
say "queues $(dmesg | grep -o '[0-9]*/[0-9]*/[0-9]* default/read/poll queues')"
say "io_poll $(cat /sys/block/vda/queue/io_poll)"
for hctx in /sys/block/vda/mq/*; do
    say "hctx ${hctx##*/} cpus $(cat "$hctx/cpu_list")"
done
say "fio $fio_options"

# shellcheck disable=SC2086 # one word per option
fio $fio_options --output=/tmp/fio.json 2>/tmp/fio.err
status=$?
say "fio-json-begin"
cat /tmp/fio.json
say "fio-json-end status $status"
while read -r line; do
    say "fio stderr: $line"
done </tmp/fio.err
if [ "$status" -eq 0 ]; then
    leave 0
fi
leave 1

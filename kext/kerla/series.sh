#!/usr/bin/env bash
# Work on the Kerla patch series as git commits.
#
#   kext/kerla/series.sh open DIR    unpack the Kerla snapshot into DIR (a new
#                                    git repository) and apply the series there,
#                                    one commit per patch
#   kext/kerla/series.sh save DIR    write DIR's commits after the snapshot back
#                                    into kext/kerla/patches/ (replacing them)
#
# Edit, split or reword commits in DIR with git, then save. Each commit's
# subject is the patch's name; its first body line says what it is for.
# KERLA_SRC names another snapshot tarball.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
patches="$here/patches"
snapshot=${KERLA_SRC:-"$here/../../../shared/kerla/kerla-d8b173a.tar.gz"}
author=(-c user.name="virtio-blk-mq" -c user.email="virtio-blk-mq@users.noreply.invalid")

case "${1:-}" in
open)
    dir=${2:?usage: series.sh open DIR}
    [ ! -e "$dir" ] || { echo "series.sh: $dir exists" >&2; exit 1; }
    mkdir -p "$dir"
    tar -xzf "$snapshot" -C "$dir" --strip-components=1
    cd "$dir"
    git init -q
    git add -A
    git "${author[@]}" commit -qm "Kerla snapshot $(basename "$snapshot")"
    git tag snapshot
    git "${author[@]}" am -q "$patches"/*.patch
    git log --oneline snapshot..
    ;;
save)
    dir=${2:?usage: series.sh save DIR}
    rm -f "$patches"/*.patch
    git -C "$dir" format-patch -q --no-signature --zero-commit -o "$patches" snapshot..
    ls "$patches"
    ;;
*)
    sed -n '2,13p' "$0" >&2
    exit 2
    ;;
esac

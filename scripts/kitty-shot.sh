#!/usr/bin/env bash
# kitty-shot: screenshots of camview in a current kitty (Debian 13's 0.41), whose graphics
# Debian 12's kitty (0.26, no Unicode placeholders) cannot show. Builds a Debian 13 chroot
# once (debootstrap, about 700 MB, needs root and the Debian mirror), mounts this checkout and
# /tmp into it, and runs ../shared/tools/term-shot -t kitty there with the arguments given.
#
# usage: sudo scripts/kitty-shot.sh [term-shot options] -- ./target/release/camview images
#   e.g. scripts/kitty-shot.sh -g 110x32 -w 6 -k Down -o /tmp/kitty.png -- ./target/release/camview images
set -euo pipefail
root=${KITTY_CHROOT:-/opt/trixie}
repo=$(cd "$(dirname "$0")/.." && pwd)
shot=$(cd "$repo/.." && pwd)/shared/tools/term-shot
if [ ! -x "$root/usr/bin/kitty" ]; then
  command -v debootstrap >/dev/null || apt-get install -y debootstrap
  debootstrap --variant=minbase \
    --include=kitty,xvfb,xdotool,imagemagick,libgl1-mesa-dri,fonts-dejavu-core,procps \
    trixie "$root" http://deb.debian.org/debian
fi
install -m 755 "$shot" "$root/usr/local/bin/term-shot"
mkdir -p "$root$repo"
for m in /proc /dev /dev/pts /tmp "$repo"; do
  mountpoint -q "$root$m" || mount --bind "$m" "$root$m"
done
chroot "$root" bash -c 'cd "$1" && shift && term-shot -t kitty "$@"' _ "$repo" "$@"

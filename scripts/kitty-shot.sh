#!/usr/bin/env bash
# kitty-shot: screenshots of camview in a current kitty (Debian 13's 0.41), whose graphics
# Debian 12's kitty (0.26, no Unicode placeholders) cannot show. Builds a Debian 13 chroot
# once (debootstrap, about 700 MB, needs root and a Debian archive: the one this machine's apt
# uses, else debootstrap's default), mounts this checkout and /tmp into it, and runs term-shot
# -t kitty there with the arguments given.
#
# term-shot (a screenshot tool: a terminal on a private X server, keys sent with xdotool) is
# taken from $TERM_SHOT, else from the PATH. KITTY_CHROOT chooses the chroot (/opt/trixie);
# KITTY_MIRROR overrides the Debian archive found in apt's configuration.
#
# usage: sudo [TERM_SHOT=PATH] scripts/kitty-shot.sh [term-shot options] -- ./target/release/camview images
#   e.g. scripts/kitty-shot.sh -g 110x32 -w 6 -k Down -o /tmp/kitty.png -- ./target/release/camview images
set -euo pipefail
root=${KITTY_CHROOT:-/opt/trixie}
repo=$(cd "$(dirname "$0")/.." && pwd)
shot=${TERM_SHOT:-$(command -v term-shot || true)}
if [ -z "$shot" ] || [ ! -x "$shot" ]; then
  echo "kitty-shot: no term-shot: put it on the PATH or set TERM_SHOT" >&2
  exit 2
fi

# The first Debian archive this machine's apt takes `main` from (not a security archive),
# read from sources.list and sources.list.d in apt's order: one-line `deb [opts] URI suite
# components` entries and deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Components:`). An
# archive counts as Debian's when its path ends in /debian or it is signed with Debian's
# archive keyring. Prints nothing when there is none. $1: apt's folder, /etc/apt.
apt_mirror() {
  local files=() f
  for f in "$1/sources.list" "$1"/sources.list.d/*; do
    case $f in *.list | *.sources) [ -f "$f" ] && files+=("$f") ;; esac
  done
  [ ${#files[@]} -gt 0 ] || return 0
  awk '
    function debian(uri, suite, signed) {
      return uri ~ /^(https?|ftp|file):/ && suite !~ /-security/ && uri !~ /-security\/?$/ &&
        (uri ~ /\/debian\/?$/ || signed ~ /debian-archive-keyring/)
    }
    function flush(   n, i, u) {
      if (!found && tolower(enabled) !~ /no/ && (" " types " ") ~ /[[:space:]]deb[[:space:]]/ &&
          (" " comps " ") ~ /[[:space:]]main[[:space:]]/) {
        n = split(uris, u, " ")
        for (i = 1; i <= n; i++) if (debian(u[i], suites, signed)) { print u[i]; found = 1; break }
      }
      types = uris = suites = comps = enabled = signed = field = ""
    }
    FNR == 1 { flush() }
    found { next }
    FILENAME ~ /\.sources$/ {
      if ($0 ~ /^[[:space:]]*#/) next
      if ($0 ~ /^[[:space:]]*$/) { flush(); next }
      value = $0
      if ($0 !~ /^[[:space:]]/) { field = tolower($0); sub(/:.*/, "", field); sub(/^[^:]*:/, "", value) }
      if (field == "types") types = types " " value
      else if (field == "uris") uris = uris " " value
      else if (field == "suites") suites = suites " " value
      else if (field == "components") comps = comps " " value
      else if (field == "enabled") enabled = value
      else if (field == "signed-by") signed = signed " " value
      next
    }
    /^[[:space:]]*deb[[:space:]]/ {
      line = $0
      sub(/#.*/, "", line)
      opts = ""
      if (match(line, /\[[^]]*\]/)) { opts = substr(line, RSTART, RLENGTH); sub(/\[[^]]*\]/, "", line) }
      n = split(line, w, " ")
      for (i = 4; i <= n; i++)
        if (w[i] == "main" && debian(w[2], w[3], opts)) { print w[2]; found = 1; next }
    }
    END { flush() }
  ' "${files[@]}"
}

if [ ! -x "$root/usr/bin/kitty" ]; then
  command -v debootstrap >/dev/null || apt-get install -y debootstrap
  mirror=${KITTY_MIRROR:-$(apt_mirror /etc/apt)}
  echo "kitty-shot: Debian 13 into $root from ${mirror:-the default archive of debootstrap}" >&2
  debootstrap --variant=minbase \
    --include=kitty,xvfb,xdotool,imagemagick,libgl1-mesa-dri,fonts-dejavu-core,procps \
    trixie "$root" ${mirror:+"$mirror"}
fi
install -m 755 "$shot" "$root/usr/local/bin/term-shot"
mkdir -p "$root$repo"
for m in /proc /dev /dev/pts /tmp "$repo"; do
  mountpoint -q "$root$m" || mount --bind "$m" "$root$m"
done
# shellcheck disable=SC2016 # $1 and $@ are the inner shell's
chroot "$root" bash -c 'cd "$1" && shift && term-shot -t kitty "$@"' _ "$repo" "$@"

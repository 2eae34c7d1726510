#!/bin/sh
# tools/man-links.sh DIR PAGE... - for each section-3 page, a one-line page
# in DIR for every other name its NAME section lists (".so man3/PAGE"), so
# that `man ks_mutex_lock` finds ks_mutex(3).  Run by `make install`.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 DIR PAGE..." >&2; exit 2; }
dir=$1
shift
for page in "$@"; do
    base=$(basename "$page")
    # the NAME section: the lines after .SH NAME up to the next .SH, before "\-"
    names=$(sed -n '/^\.SH NAME/,/^\.SH/{/^\.SH/d;p;}' "$page" | tr '\n' ' ' | sed 's/\\-.*//; s/,/ /g')
    for n in $names; do
        [ "$n.3" = "$base" ] && continue
        printf '.so man3/%s\n' "$base" >"$dir/$n.3"
    done
done

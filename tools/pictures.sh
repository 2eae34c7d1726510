#!/bin/sh
# tools/pictures.sh [--check] - render docs/pictures/: every NAME.dot (state
# graphs, layouts: graphviz's dot) and every NAME.msc (timelines of a race,
# one lane per thread: mscgen) to NAME.svg beside its source.  `make docs`
# runs it; the sources and the rendered SVG are both in the repository, so a
# reader of a clone sees the pictures without the tools.
#   --check   render into a scratch directory and fail (exit 1) when a
#             committed SVG is missing or says other words than its source's
#             rendering: the text of every label and title, in order, is
#             compared, not the coordinates, which depend on the fonts the
#             machine has (docs-check runs this where dot and mscgen are
#             installed).
# Needs graphviz and mscgen (tools/deps.sh docs).
set -eu
dir=$(dirname "$0")/../docs/pictures
check=
[ "${1:-}" = --check ] && check=1
for t in dot mscgen; do
    command -v $t >/dev/null 2>&1 || { echo "pictures: $t not found: run sh tools/deps.sh docs (as root)" >&2; exit 1; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/pictures.XXXXXX")
trap 'rm -rf "$work"' EXIT
# the words of an SVG: the text of its <text> and <title> elements, in order
words() {
    python3 -c 'import re, sys
s = open(sys.argv[1], encoding="utf-8").read()
for tag, body in re.findall(r"<(text|title)\b[^>]*>(.*?)</\1>", s, re.S):
    print(tag, " ".join(body.split()))' "$1"
}
bad=0
n=0
for src in "$dir"/*.dot "$dir"/*.msc; do
    [ -e "$src" ] || continue
    base=${src%.*}
    name=$(basename "$base")
    case "$src" in
    *.dot) dot -Tsvg "$src" -o "$work/$name.svg" ;;
    *.msc) mscgen -T svg -o "$work/$name.svg" "$src" >/dev/null ;;
    esac
    n=$((n + 1))
    if [ -n "$check" ]; then
        if [ ! -f "$base.svg" ] || [ "$(words "$work/$name.svg")" != "$(words "$base.svg")" ]; then
            echo "docs/pictures/$name.svg: missing, or its words are not its source's (make docs)"
            bad=1
        fi
    else
        mv "$work/$name.svg" "$base.svg"
    fi
done
if [ -n "$check" ]; then
    [ $bad -eq 0 ] && echo "pictures: $n sources, each SVG says what its source says"
    exit $bad
fi
echo "pictures: rendered $n sources in docs/pictures"

#!/bin/sh
# tools/plots.sh CSV OUTDIR - SVG plots of a ksync-bench run (docs/bench.md,
# "Plots").  CSV is what `ksync-bench --csv FILE` wrote (make bench writes
# build/bench.csv): one row per repetition, section,"label",rep,value,
# after three comment lines that give the date, the CPU and the repetitions.
# Each plot shows the median of the repetitions as a line (or a bar) and
# their min..max as a band (or an error bar), and names the CPU and the date
# of the run in its title.  Plots made, when their section is in the run:
#   counter.svg          section 2: contended counter, Mops/s against threads
#   rwlock-90.svg, rwlock-99.svg   section 7: rwlock, 90% and 99% reads
#   queue.svg            section 9: MPMC ring and blocking queue, items/s
#                        against producers = consumers
#   cache-MIX.svg        section 10: one per mix, M ops/s against threads
#   handoff.svg          section 5: two-thread ping-pong, round trips/s (bars)
#   barrier.svg          section 6: barrier phases/s, a bar per thread count
# Needs gnuplot (tools/deps.sh plots).  Exit status 1 if the CSV has no row
# it knows, or gnuplot fails.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 CSV OUTDIR" >&2; exit 2; }
csv=$1
out=$2
command -v gnuplot >/dev/null 2>&1 || { echo "plots: gnuplot not found: run sh tools/deps.sh plots (as root)" >&2; exit 1; }
[ -r "$csv" ] || { echo "plots: cannot read $csv (make bench writes build/bench.csv)" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/plots.XXXXXX")
trap 'rm -rf "$work"' EXIT

when=$(sed -n 's/^# ksync-bench //p' "$csv" | head -n 1)
cpu=$(sed -n 's/^# cpu: //p' "$csv" | head -n 1)
reps=$(sed -n 's/^# reps: //p' "$csv" | head -n 1)
run="$cpu; $when; median of $reps runs, min..max"

# One line per (plot, series, x), tab-separated: plot series x median min
# max.  Labels are split by section (their formats are in stress/b_*.c).
awk -F, -v out="$work/rows" -v OFS='\t' '
    /^#/ || $1 == "section" { next }
    {
        sec = $1
        # the label is the quoted field: between the first and the last quote
        q1 = index($0, "\""); rest = substr($0, q1 + 1)
        q2 = length(rest); while (q2 > 0 && substr(rest, q2, 1) != "\"") q2--
        label = substr(rest, 1, q2 - 1)
        value = $NF
        key = sec SUBSEP label
        n[key]++; v[key, n[key]] = value + 0
        if (!(key in order)) { order[key] = ++nk; keys[nk] = key }
    }
    function stats(key,    i, j, t, m, c) {
        c = n[key]
        for (i = 1; i <= c; i++) s[i] = v[key, i]
        for (i = 2; i <= c; i++) { t = s[i]; for (j = i - 1; j >= 1 && s[j] > t; j--) s[j + 1] = s[j]; s[j + 1] = t }
        m = (c % 2) ? s[(c + 1) / 2] : (s[c / 2] + s[c / 2 + 1]) / 2
        return m " " s[1] " " s[c]
    }
    END {
        for (k = 1; k <= nk; k++) {
            split(keys[k], p, SUBSEP); sec = p[1]; label = p[2]
            nw = split(label, w, " ")
            plot = ""
            if (sec == "2" && w[1] ~ /^T=/) {
                plot = "counter"; x = substr(w[1], 3); series = w[2]
            } else if (sec == "7" && w[2] ~ /^T=/) {
                plot = "rwlock-" substr(w[1], 1, length(w[1]) - 1); x = substr(w[2], 3); series = w[3]
            } else if (sec == "9" && label ~ / M items\/s$/ && w[1] ~ /^[0-9]+p[0-9]+c$/) {
                split(w[1], pc, /[pc]/); if (pc[1] != pc[2]) continue
                plot = "queue"; x = pc[1]
                series = substr(label, length(w[1]) + 2); sub(/ M items\/s$/, "", series)
            } else if (sec == "10" && w[2] ~ /^T=/) {
                plot = "cache-" w[1]; x = substr(w[2], 3); series = w[3]
            } else if (sec == "5" && label ~ / round trips\/s$/) {
                plot = "handoff"; x = 0; series = substr(label, 1, length(label) - length(" round trips/s"))
            } else if (sec == "6" && w[1] ~ /^N=/) {
                plot = "barrier"; x = substr(w[1], 3); series = w[2]
            }
            if (plot == "") continue
            gsub(/[\t"\\]/, "_", series)
            split(stats(keys[k]), st, " ")
            print plot, series, x, st[1], st[2], st[3] > out
        }
    }' "$csv"
[ -s "$work/rows" ] || { echo "plots: no row of a plotted section in $csv" >&2; exit 1; }

title() {
    case $1 in
    counter) echo "Contended counter (section 2): lock, increment, unlock" ;;
    rwlock-*) echo "rwlock, ${1#rwlock-}% reads (section 7)" ;;
    queue) echo "Queues (section 9): N producers, N consumers" ;;
    cache-*) echo "Caches, mix ${1#cache-} (section 10)" ;;
    handoff) echo "Hand-off between two threads (section 5)" ;;
    barrier) echo "Barrier (section 6)" ;;
    esac
}
ylabel() {
    case $1 in
    counter | rwlock-*) echo "Mops/s" ;;
    queue) echo "M items/s" ;;
    cache-*) echo "M ops/s" ;;
    handoff) echo "round trips/s" ;;
    barrier) echo "phases/s" ;;
    esac
}
xlabel() {
    case $1 in
    queue) echo "producers = consumers" ;;
    barrier) echo "threads" ;;
    *) echo "threads" ;;
    esac
}

made=
for plot in $(cut -f1 "$work/rows" | sort -u); do
    gp="$work/$plot.gp"
    {
        echo "set terminal svg size 900,520 dynamic noenhanced font 'sans,11' background rgb 'white'"
        echo "set output '$out/$plot.svg'"
        printf 'set title "%s\\n%s"\n' "$(title "$plot")" "$run"
        echo "set ylabel '$(ylabel "$plot")'"
        echo "set grid ytics"
        echo "set key outside right top"
        echo "set style fill transparent solid 0.15 noborder"
    } >"$gp"
    if [ "$plot" = barrier ]; then
        # one row per implementation, then median min max for each N
        xs=$(awk -F'\t' -v p="$plot" '$1 == p { print $3 }' "$work/rows" | sort -n -u)
        awk -F'\t' -v p="$plot" -v xs="$(echo "$xs" | paste -sd' ' -)" '
            $1 == p { if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 } v[$2, $3] = $4 " " $5 " " $6 }
            END { nx = split(xs, x, " ")
                  for (i = 1; i <= n; i++) { line = "\"" order[i] "\""
                      for (j = 1; j <= nx; j++) line = line " " ((order[i], x[j]) in v ? v[order[i], x[j]] : "NaN NaN NaN")
                      print line } }' "$work/rows" >"$work/$plot.dat"
        cmd="plot"
        sep=
        j=0
        for x in $xs; do
            c=$((2 + 3 * j))
            tics=
            [ $j -ne 0 ] || tics=":xtic(1)"
            cmd="$cmd$sep '$work/$plot.dat' using $c:$((c + 1)):$((c + 2))$tics title '$x threads'"
            sep=","
            j=$((j + 1))
        done
        {
            echo "set style data histogram"
            echo "set style histogram errorbars gap 2 lw 1"
            echo "set style fill solid 0.6 border -1"
            echo "set xtics rotate by -30"
            echo "set logscale y"
            printf '%s\n' "$cmd"
        } >>"$gp"
    elif [ "$plot" = handoff ]; then
        awk -F'\t' -v p="$plot" '$1 == p { printf "\"%s\" %s %s %s\n", $2, $4, $5, $6 }' "$work/rows" >"$work/$plot.dat"
        {
            echo "set style data histogram"
            echo "set style histogram errorbars gap 1 lw 1"
            echo "set style fill solid 0.6 border -1"
            echo "set xtics rotate by -30"
            echo "set logscale y"
            echo "set key off"
            echo "plot '$work/$plot.dat' using 2:3:4:xtic(1) title 'median, min..max'"
        } >>"$gp"
    else
        {
            echo "set xlabel '$(xlabel "$plot")'"
            echo "set logscale x 2"
            xs=$(awk -F'\t' -v p="$plot" '$1 == p { print $3 }' "$work/rows" | sort -n -u)
            echo "set xtics ($(echo "$xs" | paste -sd, -))"
            echo "set xrange [$(echo "$xs" | head -n 1) / 1.25 : $(echo "$xs" | tail -n 1) * 1.25]"
            echo "set yrange [0:*]"
        } >>"$gp"
        # the bands first, then the lines over them
        bands=
        lines=
        i=0
        awk -F'\t' -v p="$plot" '$1 == p { print $2 }' "$work/rows" | awk '!seen[$0]++' >"$work/$plot.series"
        while IFS= read -r series; do
            i=$((i + 1))
            awk -F'\t' -v p="$plot" -v s="$series" '$1 == p && $2 == s { print $3, $4, $5, $6 }' "$work/rows" |
                sort -n >"$work/$plot.$i.dat"
            bands="$bands '$work/$plot.$i.dat' using 1:3:4 with filledcurves linecolor $i notitle,"
            lines="$lines '$work/$plot.$i.dat' using 1:2 with linespoints linecolor $i linewidth 2 pointtype $i title \"$series\","
        done <"$work/$plot.series"
        printf "plot%s%s\n" "$bands" "${lines%,}" >>"$gp"
    fi
    gnuplot "$gp" || { echo "plots: gnuplot failed on $plot" >&2; exit 1; }
    made="$made $plot.svg"
done
echo "plots: wrote$made into $out ($run)"

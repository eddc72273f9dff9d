#!/usr/bin/env bash
# Fuzzing (docs/fuzzing.md): the cargo-fuzz targets of fuzz/, each a libFuzzer binary built
# with AddressSanitizer on the nightly toolchain, in fuzz/target (its own workspace).
#
#   scripts/fuzz.sh --smoke [TARGET...]          build, then every target over its seeds and a
#                                                bounded number of runs (fails on any crash)
#   scripts/fuzz.sh --long [SECONDS] [TARGET...] every target for SECONDS (default 3600) on a
#                                                corpus grown under /tmp; prints per target the
#                                                executions, exec/s, coverage and corpus size
#
# One target at a time, one libFuzzer job and worker, at nice 10. Crashes are written to
# $FUZZ_WORK/artifacts/<target>/ (default FUZZ_WORK=/tmp/sdn-tunnel-fuzz); reproduce one with
# `cargo +nightly fuzz run <target> <file>` (see docs/fuzzing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

t0=$(date +%s)
stamp() { echo "fuzz.sh: $* ($(($(date +%s) - t0)) s)" >&2; }
usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

mode=""
seconds=3600
targets=()
while (($#)); do
    case $1 in
    --smoke) mode=smoke ;;
    --long)
        mode=long
        if [[ ${2:-} =~ ^[0-9]+$ ]]; then
            seconds=$2
            shift
        fi
        ;;
    -h | --help) usage ;;
    -*) usage ;;
    *) targets+=("$1") ;;
    esac
    shift
done
[[ -n $mode ]] || usage

# Tools: the nightly toolchain (sanitizers) and cargo-fuzz.
if ! rustup toolchain list | grep -q '^nightly'; then
    stamp "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    stamp "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

mapfile -t all < <(cargo +nightly fuzz list --fuzz-dir fuzz)
if ((${#targets[@]} == 0)); then
    targets=("${all[@]}")
fi
for t in "${targets[@]}"; do
    if ! printf '%s\n' "${all[@]}" | grep -qx -- "$t"; then
        echo "fuzz.sh: unknown target '$t' (targets: ${all[*]})" >&2
        exit 2
    fi
done

stamp "building ${targets[*]}"
for t in "${targets[@]}"; do
    nice -n 10 cargo +nightly fuzz build --fuzz-dir fuzz "$t"
done
host=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=${CARGO_TARGET_DIR:-$root/fuzz/target}/$host/release
stamp "built"

work=${FUZZ_WORK:-/tmp/sdn-tunnel-fuzz}
mkdir -p "$work"

# Per-target libFuzzer options: the structured (Arbitrary) targets need room for long
# operation sequences from the start; the UAPI reader for requests past its 4 KiB limit.
target_opts() {
    case $1 in
    device_datagram | plan_confined | allowed_ips) echo "-max_len=2048 -len_control=0" ;;
    uapi_reader) echo "-max_len=12288" ;;
    config_parse) echo "-max_len=8192" ;;
    *) echo "-max_len=4096" ;;
    esac
}

# The last status line of a libFuzzer log: "#N DONE cov: C ft: F corp: K/S ... exec/s: E".
field() { sed -n "s/.* $1: \([^ ]*\).*/\1/p" <<<"$2"; }

# run TARGET CORPUS LIMIT_OPTION...: one libFuzzer job; 0 if it found nothing.
run() {
    local t=$1 corpus=$2
    shift 2
    local dir=$work/run/$t art=$work/artifacts/$t
    rm -rf "$dir"
    mkdir -p "$dir" "$art" "$corpus"
    local opts
    read -r -a opts <<<"$(target_opts "$t")"
    local rc=0
    # -jobs=1 -workers=1: one fuzzing process, its log in $dir/fuzz-0.log.
    (cd "$dir" && nice -n 10 "$bin_dir/$t" -jobs=1 -workers=1 "${opts[@]}" "$@" \
        -artifact_prefix="$art/" -print_final_stats=1 "$corpus" "$root/fuzz/seeds/$t" \
        >/dev/null 2>&1) || rc=$?
    cp "$dir/fuzz-0.log" "$work/$t.log" 2>/dev/null || true
    return "$rc"
}

summary() {
    local t=$1 secs=$2 log=$work/$1.log
    local last
    last=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n1 || true)
    local execs cov ft corp eps crashes
    execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")
    cov=$(field cov "$last")
    ft=$(field ft "$last")
    corp=$(field corp "$last")
    eps=$(grep -o 'stat::average_exec_per_sec:[[:space:]]*[0-9]*' "$log" | grep -o '[0-9]*$' || field exec/s "$last")
    crashes=$(find "$work/artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
    printf '%-16s %8s %12s %8s %6s %7s %14s %7s\n' "$t" "$secs" "${execs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes"
}

header() {
    printf '%-16s %8s %12s %8s %6s %7s %14s %7s\n' target seconds executions exec/s cov ft corpus crashes
}

failed=()
case $mode in
smoke)
    # Bounded: at most 20000 runs or 30 s per target (the handshake-heavy device target does
    # a few hundred runs a second), over the seeds and a throwaway corpus.
    rows=()
    for t in "${targets[@]}"; do
        s=$(date +%s)
        rm -rf "$work/smoke/$t" "$work/artifacts/$t"
        if ! run "$t" "$work/smoke/$t" -runs=20000 -max_total_time=30; then
            failed+=("$t")
            echo "fuzz.sh: $t FAILED; log $work/$t.log, input in $work/artifacts/$t/" >&2
            grep -E 'panicked at|SUMMARY' "$work/$t.log" | head -n5 >&2 || true
        fi
        rows+=("$(summary "$t" $(($(date +%s) - s)))")
    done
    header
    printf '%s\n' "${rows[@]}"
    ;;
long)
    rows=()
    for t in "${targets[@]}"; do
        stamp "$t for $seconds s (corpus $work/corpus/$t)"
        rm -rf "$work/artifacts/$t"
        s=$(date +%s)
        if ! run "$t" "$work/corpus/$t" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096; then
            failed+=("$t")
            echo "fuzz.sh: $t FAILED; log $work/$t.log, input in $work/artifacts/$t/" >&2
        fi
        # The time it really ran: a crash ends a target early.
        rows+=("$(summary "$t" $(($(date +%s) - s)))")
        printf '%s\n' "${rows[-1]}"
    done
    header
    printf '%s\n' "${rows[@]}"
    ;;
esac

if ((${#failed[@]})); then
    stamp "crashes in: ${failed[*]}"
    exit 1
fi
stamp "no crash in ${targets[*]}"

#!/bin/sh
# Builds the single binary `colo-compare` with `deno compile`, with only the permissions it
# needs (SPEC 11): network; read for --tls-creds and unix sockets; write for unix sockets; ffi
# to open libc at start for the keepalive timing (src/wire/keepalive.ts) and malloc_trim
# (src/malloc.ts). No env, run or
# sys. After start the program revokes all but net (src/permissions.ts); --no-prompt: nothing
# revoked can come back through a prompt on a terminal.
#
#   ./compile.sh                  one binary for this host:     dist/colo-compare
#   ./compile.sh TARGET...        one binary per named target:  dist/colo-compare-TARGET
#   (targets: x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu x86_64-apple-darwin
#    aarch64-apple-darwin x86_64-pc-windows-msvc)
#
# `deno compile` needs the `denort` runtime of the same Deno version (2.9.6), which it
# normally downloads. Where it cannot, point DENORT_BIN at a local copy (host target only).
set -eu
cd "$(dirname "$0")"
PERMISSIONS="--allow-net --allow-read --allow-write --allow-ffi --no-prompt"
# V8 settings baked into the binary, the same as src/v8_flags.ts (which says why; a test keeps
# the two alike).
V8_FLAGS="--v8-flags=--max-semi-space-size=2,--min-semi-space-size=2,--single-threaded-gc,--invocation-count-for-maglev=100,--invocation-count-for-turbofan=300"
mkdir -p dist

# Exit status: 0 built, 1 the program does not compile, 3 no denort runtime to build with.
build() { # build OUTPUT [TARGET]
  out=$1
  shift
  log=$(mktemp)
  # Type errors first, on their own: they are the program's fault, never the network's.
  if ! NO_COLOR=1 deno check main.ts >"$log" 2>&1; then
    echo "compile.sh: main.ts does not compile: $(grep -m1 -E 'ERROR|error' "$log" || tail -n1 "$log")" >&2
    rm -f "$log"
    return 1
  fi
  # shellcheck disable=SC2086
  if NO_COLOR=1 deno compile --quiet --no-check $PERMISSIONS $V8_FLAGS ${1:+--target "$1"} --output "$out" main.ts >"$log" 2>&1; then
    rm -f "$log"
    echo "built $out"
    return 0
  fi
  # deno compile fetches denort-<target>.zip "setting up the base binary"; only that is a
  # missing runtime.
  if grep -q 'Setting up base binary' "$log" && grep -qE 'denort-[A-Za-z0-9_-]+\.zip' "$log"; then
    if [ -n "${DENORT_BIN:-}" ]; then
      echo "compile.sh: deno compile could not use DENORT_BIN=$DENORT_BIN (it must be denort 2.9.6 for this host)" >&2
    else
      echo "compile.sh: no denort runtime: deno compile could not download denort 2.9.6 ($(sed '/Stack backtrace/q' "$log" | grep -E '^ +[0-9]+: ' | tail -n1 | sed 's/^ *[0-9]*: //')); set DENORT_BIN to a local denort 2.9.6 binary and run again" >&2
    fi
    rm -f "$log"
    return 3
  fi
  echo "compile.sh: deno compile failed: $(grep -m1 -i error "$log" || tail -n1 "$log")" >&2
  rm -f "$log"
  return 1
}

if [ $# -eq 0 ]; then
  build dist/colo-compare
else
  for target in "$@"; do
    build "dist/colo-compare-$target" "$target"
  done
fi

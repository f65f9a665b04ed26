# Shared by the benchmark scripts: throwaway PostgreSQL/Redis and a release sandboxd on them,
# stopped by bench_cleanup (install it as the EXIT trap). Needs scripts/lib/deps.sh.
#
# BENCH_SERVER_BIN runs another sandboxd binary as the server (e.g. an older build, to compare
# before and after with the same load generator); default target/release/sandboxd.

bench_workdir=$(mktemp -d)
bench_pids=()

bench_cleanup() {
  local status=$?
  local pid
  for pid in "${bench_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ] && [ -f "$bench_workdir/server.log" ]; then
    echo "--- last lines of the sandboxd log ---" >&2
    tail -n 30 "$bench_workdir/server.log" >&2 || true
  fi
  rm -rf "$bench_workdir"
}

# Starts throwaway PostgreSQL and Redis; sets DATABASE_URL and REDIS_URL.
bench_start_dependencies() {
  env -u DATABASE_URL -u REDIS_URL RUST_LOG=warn target/release/sandboxd dev \
    --data-dir "$bench_workdir/deps" --deps-only "$bench_workdir/deps.env" >"$bench_workdir/deps.log" 2>&1 &
  local pid=$!
  bench_pids+=("$pid")
  local _
  for _ in $(seq 1 600); do
    [ -f "$bench_workdir/deps.env" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$bench_workdir/deps.log" >&2; echo "error: starting throwaway PostgreSQL/Redis failed" >&2; exit 1; }
    sleep 0.1
  done
  [ -f "$bench_workdir/deps.env" ] || { echo "error: throwaway PostgreSQL/Redis did not come up within 60 s" >&2; exit 1; }
  DATABASE_URL=$(sed -n 's/^DATABASE_URL=//p' "$bench_workdir/deps.env")
  REDIS_URL=$(sed -n 's/^REDIS_URL=//p' "$bench_workdir/deps.env")
}

# Starts `sandboxd dev` (release) on those, prefixed by "$@" (e.g. `taskset -c 0`, or env
# assignments via `env`); waits for its banner; sets bench_addr and bench_key.
bench_start_server() {
  bench_key="sbx_bench_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  rm -f "$bench_workdir/server.out"
  mkfifo "$bench_workdir/server.out"
  DATABASE_URL="$DATABASE_URL" REDIS_URL="$REDIS_URL" SANDBOXD_DEV_API_KEY="$bench_key" RUST_LOG=warn \
    "$@" "${BENCH_SERVER_BIN:-target/release/sandboxd}" dev --data-dir "$bench_workdir/server" --listen 127.0.0.1:0 \
    >"$bench_workdir/server.out" 2>"$bench_workdir/server.err" &
  local pid=$!
  bench_pids+=("$pid")
  bench_server_pid=$pid
  exec 3<"$bench_workdir/server.out"
  bench_addr=""
  : >"$bench_workdir/server.log"
  local line
  while IFS= read -r -t 120 line <&3; do
    printf '%s\n' "$line" >>"$bench_workdir/server.log"
    if [[ "$line" == *"gRPC address :"* ]]; then
      bench_addr=$(sed -E 's/.*gRPC address : *([^ ]+).*/\1/' <<<"$line")
      break
    fi
  done
  if [ -z "$bench_addr" ]; then
    cat "$bench_workdir/server.err" >&2
    echo "error: sandboxd did not print its gRPC address" >&2
    exit 1
  fi
  # Keep draining its stdout so the server never blocks on a full pipe.
  cat <&3 >>"$bench_workdir/server.log" &
  bench_pids+=("$!")
  exec 3<&-
}

# Stops the server started last (gracefully).
bench_stop_server() {
  kill "$bench_server_pid" 2>/dev/null || true
  wait "$bench_server_pid" 2>/dev/null || true
}

bench_machine() {
  local cpu
  cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
  echo "$(nproc) cores ($cpu)"
}

# Builds the release binaries unless BENCH_SKIP_BUILD is set: scripts/bench-cost-growth builds
# once and runs its parts on that build, so they all measure the same binaries even while the
# working tree changes under them.
bench_build() {
  [ -n "${BENCH_SKIP_BUILD:-}" ] && return 0
  echo "==> building (release)" >&2
  cargo build --quiet --release --bins
}

# The code measured: short commit, "-dirty" when the working tree has uncommitted changes.
bench_code() {
  git describe --always --dirty 2>/dev/null || echo unknown
}

# sandboxctl against the server started last (bench_start_server), e.g. `bench_ctl route resolve 1`.
bench_ctl() {
  target/release/sandboxctl --addr "http://$bench_addr" --api-key "$bench_key" "$@"
}

# Sets bench_server_pin and bench_client_pin, the command prefixes placing the server and the
# load generator: `bench_pin 0 1` pins them to CPUs 0 and 1 with taskset, `bench_pin "" ""`
# leaves both to the scheduler.
bench_pin() {
  bench_server_pin=()
  bench_client_pin=()
  if [ -n "$1" ]; then
    bench_server_pin=(taskset -c "$1")
    bench_client_pin=(taskset -c "$2")
  fi
}

# Starts the bare tonic Health server (`sandboxctl bench-bare-server`), prefixed by "$@" (e.g.
# `taskset -c 0`); sets bench_bare_addr (http://host:port) and bench_bare_pid.
bench_start_bare_server() {
  local out="$bench_workdir/bare-$RANDOM.out"
  "$@" target/release/sandboxctl bench-bare-server --listen 127.0.0.1:0 >"$out" 2>&1 &
  bench_bare_pid=$!
  bench_pids+=("$bench_bare_pid")
  local _
  for _ in $(seq 1 100); do
    [ -s "$out" ] && break
    sleep 0.1
  done
  bench_bare_addr="http://$(head -n 1 "$out")"
  [[ "$bench_bare_addr" =~ ^http://[0-9.]+:[0-9]+$ ]] || { cat "$out" >&2; echo "error: the bare server did not start" >&2; exit 1; }
}

# Resident memory of a process in KiB (VmRSS from /proc/<pid>/status).
bench_rss_kb() {
  sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB$/\1/p' "/proc/$1/status"
}

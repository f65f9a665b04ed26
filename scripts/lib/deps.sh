# Shared by scripts/dev and scripts/test: installs what a fresh Debian machine with Rust lacks,
# or says exactly what to install when it cannot.

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else
    echo "error: need root (or sudo) to run: $*" >&2
    return 1
  fi
}

apt_install() {
  echo "==> installing Debian packages: $*" >&2
  if ! { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }; then
    echo "error: could not install $*; install them yourself (apt-get install $*) and run this again" >&2
    exit 1
  fi
}

have_postgres_server() {
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1
}

# PostgreSQL and Redis server binaries (sandboxd dev starts throwaway instances of them), and
# bubblewrap.
ensure_server_binaries() {
  local missing=()
  have_postgres_server || missing+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  # bubblewrap isolates the process runtime's commands (the server refuses to start without it).
  command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}

ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust (https://rustup.rs) and run this again" >&2
    exit 1
  fi
}

# nats-server with JetStream, for the event router's tests and benchmark.
ensure_nats_server() {
  command -v nats-server >/dev/null 2>&1 || apt_install nats-server
}

# A free TCP port on 127.0.0.1 (asked of the kernel).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a throwaway `nats-server -js` on 127.0.0.1:$1 storing under $2, logging to $2/nats.log;
# sets nats_pid and waits until it accepts connections.
start_nats_server() {
  local port=$1 dir=$2
  mkdir -p "$dir"
  nats-server -js -a 127.0.0.1 -p "$port" -sd "$dir/jetstream" >"$dir/nats.log" 2>&1 &
  nats_pid=$!
  local _
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "$nats_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$dir/nats.log" >&2
  echo "error: nats-server did not start on 127.0.0.1:$port" >&2
  exit 1
}

# Builds the web dashboard (clients/web/dist), which `cargo build` embeds in the binary; without
# it the binary serves a placeholder page at /ui. Node and npm are installed when missing.
build_web_app() {
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  echo "==> web dashboard: npm ci and build (clients/web)" >&2
  npm ci --silent --no-audit --no-fund --prefix clients/web \
    || { echo "error: npm could not install clients/web's packages (see above); the dashboard needs them to build" >&2; exit 1; }
  npm run --silent --prefix clients/web build >/dev/null \
    || { echo "error: building the web dashboard failed (npm --prefix clients/web run build; see above)" >&2; exit 1; }
}

# Chromium for the dashboard's browser test (tests/dashboard.rs).
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 || apt_install chromium
}

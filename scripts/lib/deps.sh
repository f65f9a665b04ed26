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

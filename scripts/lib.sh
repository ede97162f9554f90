# Shared helpers for the project's scripts: the virtualenv and the local services.

VENV="${VENV:-.venv}"

step() {
  local name=$1; shift
  echo "==> $name"
  "$@"
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    python3 -m venv "$VENV"
  fi
  # Reinstall only when requirements.txt changed since the last install.
  local stamp="$VENV/.requirements.sha"
  local want
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> installing requirements"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
    echo "$want" > "$stamp"
  fi
  export PATH="$PWD/$VENV/bin:$PATH"
}

postgres_up() { python3 - <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(1)
sys.exit(s.connect_ex(("127.0.0.1", 5432)))
PY
}

redis_up() { python3 - <<'PY'
import os, socket, sys
from urllib.parse import urlsplit
url = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
s = socket.socket(); s.settimeout(1)
try:
    s.connect((url.hostname or "127.0.0.1", url.port or 6379)); s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}

ensure_services() {
  if ! postgres_up; then
    echo "==> starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 30); do postgres_up && break; sleep 1; done
  fi
  postgres_up || { echo "PostgreSQL is not answering on 127.0.0.1:5432" >&2; exit 1; }
  if ! redis_up; then
    echo "==> starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 30); do redis_up && break; sleep 1; done
  fi
  redis_up || { echo "Redis is not answering on 127.0.0.1:6379" >&2; exit 1; }
}

ensure_database() {
  # Create the PostgreSQL database named in DATABASE_URL if it does not exist yet.
  python - <<'PY'
import os
import dj_database_url
import psycopg2
cfg = dj_database_url.parse(os.environ["DATABASE_URL"])
if cfg["ENGINE"].endswith("postgresql"):
    conn = psycopg2.connect(dbname="postgres", user=cfg["USER"] or "postgres", host=cfg["HOST"] or "127.0.0.1",
                            port=cfg["PORT"] or 5432, password=cfg["PASSWORD"] or None)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [cfg["NAME"]])
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{cfg["NAME"]}"')
            print(f"==> created database {cfg['NAME']}")
PY
}

ensure_chromium() {
  # The browser tests drive Debian's Chromium; Playwright cannot download browsers here.
  if [ -x /usr/bin/chromium ]; then return 0; fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing chromium (Debian package) for the browser tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "==> chromium is not installed and cannot be installed here: the browser tests will be skipped"
  fi
}

ensure_axe() {
  # axe-core from npm (pinned in tests/axe/package-lock.json) for the browser tests' accessibility check.
  local dir="tests/axe"  # the scripts run from the repository root
  [ -f "$dir/node_modules/axe-core/axe.min.js" ] && return 0
  if command -v npm >/dev/null 2>&1; then
    echo "==> installing axe-core (npm) for the accessibility checks"
    (cd "$dir" && npm ci --no-audit --no-fund --silent) || echo "==> npm could not install axe-core"
  else
    echo "==> npm is not installed: the accessibility checks will fail in CI and be skipped elsewhere"
  fi
}

start_own_redis() {
  # A redis-server of this run's own on a free port (nothing on disk), stopped when the script
  # exits: the tests may empty it, and never touch the shared one's data.
  command -v redis-server >/dev/null 2>&1 || { echo "==> no redis-server: the tests use the shared Redis"; return 0; }
  local port dir
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  dir=$(mktemp -d)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
  OWN_REDIS_DIR=$dir
  trap 'kill "$(cat "$OWN_REDIS_DIR/redis.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$OWN_REDIS_DIR"' EXIT
  for _ in $(seq 50); do REDIS_URL="redis://127.0.0.1:$port/0" redis_up && break; sleep 0.1; done
  export TEST_CELERY_BROKER_URL="redis://127.0.0.1:$port/0" TEST_CACHE_URL="redis://127.0.0.1:$port/1"
  export TEST_REDIS_OWNED=1
  echo "==> the tests' own Redis on 127.0.0.1:$port"
}

local_stack_env() {
  # The environment of the local stack (./scripts/run, ./scripts/manage): SQLite under RUN_DIR
  # (default .run/), DEBUG on, and the emulator's keys unless STRIPE_SECRET_KEY (environment or
  # .env) is Stripe's.
  PORT="${PORT:-8000}"
  STRIPE_PORT="${STRIPE_EMULATOR_PORT:-8420}"
  RUN_DIR="${RUN_DIR:-$PWD/.run}"
  mkdir -p "$RUN_DIR"
  export DEBUG="${DEBUG:-True}"
  export DATABASE_URL="${DATABASE_URL:-sqlite:///$RUN_DIR/db.sqlite3}"
  # A signing key of this run directory's own (unless the environment or .env has one): sessions
  # and tokens survive restarts. Written whole (a rename) and readable by this user only.
  if [ -z "${SECRET_KEY:-}" ] && ! { [ -f .env ] && grep -qE '^SECRET_KEY=.+' .env; }; then
    if [ ! -s "$RUN_DIR/secret-key" ]; then
      (umask 077; fresh=$(mktemp "$RUN_DIR/.secret-key.XXXXXX")
       python3 -c "import secrets; print(secrets.token_urlsafe(50))" > "$fresh"
       mv -n "$fresh" "$RUN_DIR/secret-key"; rm -f "$fresh")
    fi
    SECRET_KEY=$(cat "$RUN_DIR/secret-key")
    export SECRET_KEY
  fi
  export SITE_URL="${SITE_URL:-http://127.0.0.1:$PORT}"
  export DJANGO_SETTINGS_MODULE=config.settings
  REAL_STRIPE_KEY="${STRIPE_SECRET_KEY:-}"
  if [ -z "$REAL_STRIPE_KEY" ] && [ -f .env ]; then
    # .env.example's placeholder is not a key: the emulator stands in until a real one is set.
    REAL_STRIPE_KEY=$(grep -E '^STRIPE_SECRET_KEY=sk_' .env | grep -v replace_me | head -n1 | cut -d= -f2- || true)
  fi
  if [ -z "$REAL_STRIPE_KEY" ]; then
    export STRIPE_SECRET_KEY=sk_test_local STRIPE_PUBLISHABLE_KEY=pk_test_local
    export STRIPE_WEBHOOK_SECRET="${STRIPE_WEBHOOK_SECRET:-whsec_local_development_secret}"
    export STRIPE_API_BASE="http://127.0.0.1:$STRIPE_PORT"
    export STRIPE_JS_URL="http://127.0.0.1:$STRIPE_PORT/js.stripe.com/v3/"
  fi
}

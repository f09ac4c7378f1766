#!/usr/bin/env bash
# Install the OS packages the local stack needs, only when they are missing:
# PostgreSQL 15 server, pg_cron and plpgsql_check (`make lint`) for it, Python's venv module,
# the container tools the suite builds and runs the image with (podman, buildah, runc,
# mmdebstrap for a local stand-in base image) and promtool
# (Debian's `prometheus` package) for the alerting rules. Debian/Ubuntu (apt) only.
set -euo pipefail

PG_MAJOR="${CALLPANION_PG_MAJOR:-15}"
PYTHON="${PYTHON:-python3}"
need=()

[ -x "/usr/lib/postgresql/${PG_MAJOR}/bin/initdb" ] || need+=("postgresql-${PG_MAJOR}")
[ -f "/usr/lib/postgresql/${PG_MAJOR}/lib/pg_cron.so" ] || need+=("postgresql-${PG_MAJOR}-cron")
[ -f "/usr/lib/postgresql/${PG_MAJOR}/lib/plpgsql_check.so" ] || need+=("postgresql-${PG_MAJOR}-plpgsql-check")
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || need+=("python3-venv")
# The container tier of `make test` (tests/e2e/test_container.py) and the monitoring rules.
command -v podman >/dev/null 2>&1 || need+=("podman")
command -v buildah >/dev/null 2>&1 || need+=("buildah")
command -v runc >/dev/null 2>&1 || need+=("runc")
command -v mmdebstrap >/dev/null 2>&1 || need+=("mmdebstrap")
command -v promtool >/dev/null 2>&1 || need+=("prometheus")

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: missing ${need[*]} and apt-get is not available; install them by hand" >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "error: missing ${need[*]}; run as root or install them by hand" >&2
    exit 1
  fi
fi

echo "installing OS packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Another apt (unattended-upgrades on a fresh machine, say) may hold the locks: wait for it.
# apt's own Lock::Timeout covers the moment between that wait and apt-get taking the lock.
lock_timeout="${CALLPANION_APT_LOCK_TIMEOUT:-600}"
"${sudo[@]}" env PYTHON="$PYTHON" CALLPANION_APT_LOCK_TIMEOUT="$lock_timeout" "$here/wait-for-apt-lock.sh"
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout="$lock_timeout" update -q
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout="$lock_timeout" install -y -q --no-install-recommends "${need[@]}"

#!/usr/bin/env bash
# Install the pinned npm tools (tools/npm/package-lock.json: the Supabase CLI and postgres-meta)
# into tools/npm/node_modules, only when they are missing or the lock file changed. Never global.
# Needs Node.js 20+ and npm (the Supabase CLI's own requirement).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
tools="$here/tools/npm"
stamp="$tools/node_modules/.installed"

if [ -f "$stamp" ] && [ "$stamp" -nt "$tools/package-lock.json" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "error: node and npm are needed for the Supabase CLI and the type generator; install Node.js 20+" >&2
  exit 1
fi

echo "installing npm tools (supabase CLI, postgres-meta) into tools/npm/node_modules"
# `npm ci` installs exactly the lock file; no audit or funding calls; no prompts (CI has no stdin).
npm ci --prefix "$tools" --no-audit --no-fund --loglevel=error
touch "$stamp"

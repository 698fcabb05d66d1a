#!/usr/bin/env bash
# Runs Schemathesis against a real control plane's Admin API, from the description it serves
# (GET /openapi.json): no 5xx, and no status, content type or body the description does not
# give. The property tests in cp/tests/openapi_props.rs check the same in Rust; this is an
# independent tool reading only the published description, as a client would.
#
#   deploy/openapi-check.sh        # after `cargo build --workspace` (or `cargo test --workspace`)
#
# - Schemathesis is installed from PyPI into a venv under target/ (target/openapi-venv), once.
# - The control plane (target/debug/licsync-cp) runs on loopback, on LICSYNC_OPENAPI_PORT (default
#   18411) and the two ports after it, with its data in a temp dir; it is stopped at the end.
# - The run is bounded: LICSYNC_OPENAPI_EXAMPLES examples per operation (default 20), and
#   LICSYNC_OPENAPI_TIMEOUT seconds in all (default 300).
# Needs: bash, curl, python3 with venv, timeout (coreutils).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
port=${LICSYNC_OPENAPI_PORT:-18411}
examples=${LICSYNC_OPENAPI_EXAMPLES:-20}
limit=${LICSYNC_OPENAPI_TIMEOUT:-300}
cp_bin="$root/target/debug/licsync-cp"
venv="$root/target/openapi-venv"

[[ -x $cp_bin ]] || {
  echo "target/debug/licsync-cp is missing: run cargo build --workspace first" >&2
  exit 1
}
if [[ ! -x $venv/bin/schemathesis ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/licsync-openapi.XXXXXX")
cp_pid=""
finish() {
  local status=$?
  trap - EXIT INT TERM
  [[ -z $cp_pid ]] || { kill -TERM "$cp_pid" 2>/dev/null || true; wait "$cp_pid" 2>/dev/null || true; }
  if [[ $status -eq 0 ]]; then
    rm -rf "$scratch"
  else
    echo "OpenAPI check failed ($status); the control plane's log is $scratch/cp.log" >&2
  fi
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cat >"$scratch/licsync-cp.toml" <<EOF
data_dir = "$scratch/data"
[admin]
listen = "127.0.0.1:$port"
[cluster]
listen = "127.0.0.1:$((port + 1))"
[status]
listen = "127.0.0.1:$((port + 2))"
EOF
"$cp_bin" serve --config "$scratch/licsync-cp.toml" >"$scratch/cp.log" 2>&1 &
cp_pid=$!
for _ in $(seq 60); do
  kill -0 "$cp_pid" 2>/dev/null || { cat "$scratch/cp.log" >&2; exit 1; }
  curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && [[ -s $scratch/data/admin-token ]] && break
  sleep 1
done
curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null

echo "--- Schemathesis against http://127.0.0.1:$port/openapi.json ($examples examples per operation)"
timeout --kill-after=10 "$limit" "$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  -H "Authorization: Bearer $(cat "$scratch/data/admin-token")" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$examples" --workers 1 --seed 1 --no-color
echo "OpenAPI check passed"

#!/usr/bin/env bash
# licsync quickstart: builds both binaries, starts a control plane and a data-plane agent on
# loopback, creates a license-signing key, signs and posts a demo license, and shows the agent's
# license.json and the sync events from both logs, and prints the status page's URL with a
# viewer token to sign in with. Ctrl-C stops both.
#
#   deploy/quickstart.sh            # release build, keeps running until Ctrl-C
#   deploy/quickstart.sh --check    # debug build, exits 0 once the agent serves the license (CI)
#
# Ports (override with the environment): admin 8001, cluster 8005, status 8100, agent 8007.
# Needs: cargo, curl.
set -euo pipefail

mode=interactive
profile=release
if [[ "${1:-}" == "--check" ]]; then
  mode=check
  profile=debug
elif [[ -n "${1:-}" ]]; then
  echo "usage: $0 [--check]" >&2
  exit 2
fi

admin_port=${LICSYNC_ADMIN_PORT:-8001}
cluster_port=${LICSYNC_CLUSTER_PORT:-8005}
status_port=${LICSYNC_STATUS_PORT:-8100}
local_port=${LICSYNC_LOCAL_PORT:-8007}
root=$(cd "$(dirname "$0")/.." && pwd)

command -v curl >/dev/null || { echo "quickstart needs curl: apt-get install curl" >&2; exit 1; }
for port in "$admin_port" "$cluster_port" "$status_port" "$local_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; stop what listens there or set LICSYNC_ADMIN_PORT / LICSYNC_CLUSTER_PORT / LICSYNC_STATUS_PORT / LICSYNC_LOCAL_PORT" >&2
    exit 1
  fi
done

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# Everything started from here on is a background job of this shell, so that Ctrl-C, SIGTERM
# or any failure stops all of it (cargo, both programs, the log follower): nothing is left behind.
work=""
build_pid=""
cp_pid=""
dp_pid=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # cargo runs in a process group of its own: stop it with every rustc it started.
  [[ -n $build_pid ]] && { kill -TERM -- "-$build_pid" 2>/dev/null || true; }
  # Programs first, with SIGTERM so that they flush and log their shutdown; then the rest.
  for pid in $dp_pid $cp_pid; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $dp_pid $cp_pid; do wait "$pid" 2>/dev/null || true; done
  local rest
  rest=$(jobs -p)
  if [[ -n $rest ]]; then
    # shellcheck disable=SC2086
    kill -TERM $rest 2>/dev/null || true
    # shellcheck disable=SC2086
    wait $rest 2>/dev/null || true
  fi
  [[ -z $work ]] || echo "Stopped. Everything the demo wrote is in $work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "Building licsync-cp and licsync-dp ($profile; the first build takes several minutes)"
if [[ $profile == release ]]; then
  build_flags=(--release)
  bin="$root/target/release"
else
  build_flags=()
  bin="$root/target/debug"
fi
# In the background, in its own process group (set -m), and waited for: a signal then
# interrupts the wait at once, and cleanup stops cargo together with the compilers it runs.
set -m
cargo build ${build_flags[@]+"${build_flags[@]}"} --manifest-path "$root/Cargo.toml" -p licsync-cp -p licsync-dp &
build_pid=$!
set +m
wait "$build_pid"
build_pid=""

work=$(mktemp -d "${TMPDIR:-/tmp}/licsync-quickstart.XXXXXX")

wait_for() { # url, what
  for _ in $(seq 1 150); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "$2 did not become ready; its log:" >&2
  cat "$3" >&2
  exit 1
}

step "Creating a license-signing key in $work/keys"
"$bin/licsync-cp" license keygen --output-dir "$work/keys"
public_key=$(cat "$work/keys/license-signing.pub")

step "Starting the control plane (admin 127.0.0.1:$admin_port, cluster 127.0.0.1:$cluster_port, status 127.0.0.1:$status_port)"
mkdir -p "$work/cp"
cat >"$work/cp/licsync-cp.toml" <<EOF
data_dir = "$work/cp/licsync-data"
[admin]
listen = "127.0.0.1:$admin_port"
[cluster]
listen = "127.0.0.1:$cluster_port"
server_names = ["127.0.0.1", "localhost"]
[status]
listen = "127.0.0.1:$status_port"
[licenses]
trusted_keys = ["$public_key"]
EOF
"$bin/licsync-cp" serve --config "$work/cp/licsync-cp.toml" >"$work/cp.log" 2>&1 &
cp_pid=$!
wait_for "http://127.0.0.1:$admin_port/health/ready" "the control plane" "$work/cp.log"
token=$(cat "$work/cp/licsync-data/admin-token")
admin() { curl -fsS -H "Authorization: Bearer $token" "$@"; }

step "Creating a one-time registration token"
registration=$(admin -X POST "http://127.0.0.1:$admin_port/registration-tokens" -d '{"name":"quickstart","ttl":"10m"}')
reg_token=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' <<<"$registration")
ca_hash=$(sed -n 's/.*"ca_cert_sha256":"\([^"]*\)".*/\1/p' <<<"$registration")
echo "token created (shown once), CA fingerprint sha256:$ca_hash"

step "Registering a data plane (licsync-dp registration create)"
mkdir -p "$work/dp"
"$bin/licsync-dp" registration create --token "$reg_token" \
  --server "https://127.0.0.1:$cluster_port" --ca-cert-hash "sha256:$ca_hash" \
  --name quickstart-dp --output-directory "$work/dp"

step "Starting the data-plane agent (local API 127.0.0.1:$local_port)"
cat >"$work/dp/licsync-dp.toml" <<EOF
data_dir = "$work/dp/licsync-dp-data"
registration_file = "$work/dp/registration.yaml"
[license]
output_path = "$work/dp/license.json"
[local]
listen = "127.0.0.1:$local_port"
EOF
"$bin/licsync-dp" run --config "$work/dp/licsync-dp.toml" >"$work/dp.log" 2>&1 &
dp_pid=$!
wait_for "http://127.0.0.1:$local_port/health/ready" "the agent" "$work/dp.log"

step "Signing a demo license and posting it to the Admin API"
today=$(date -u +%Y-%m-%d)
next_year=$(date -u -d "+1 year" +%Y-%m-%d 2>/dev/null || date -u -v+1y +%Y-%m-%d)
cat >"$work/payload.json" <<EOF
{"admin_seats":"1","customer":"Quickstart Company, Inc","dataplanes":"1",
 "license_creation_date":"$today","license_expiration_date":"$next_year",
 "license_key":"QUICKSTART-0001","product_subscription":"Konnect Enterprise","support_plan":"None"}
EOF
"$bin/licsync-cp" license sign --key "$work/keys/license-signing.key" --payload "$work/payload.json" >"$work/license.json"
# The Admin API takes the document as a string or, as here, as a JSON object.
admin -X POST "http://127.0.0.1:$admin_port/licenses" -d "{\"payload\": $(cat "$work/license.json")}"
echo

step "Waiting for the agent to write $work/dp/license.json"
for _ in $(seq 1 100); do
  [[ -s "$work/dp/license.json" ]] && break
  sleep 0.1
done
if [[ "$(cat "$work/dp/license.json" 2>/dev/null)" != "$(cat "$work/license.json")" ]]; then
  echo "the agent did not write the license; its log:" >&2
  cat "$work/dp.log" >&2
  exit 1
fi
cat "$work/dp/license.json"
echo

step "Sync events"
grep -hE 'event="?(license|sync|dataplane)\.' "$work/cp.log" "$work/dp.log" || true

step "The agent's local API: GET /status"
curl -fsS "http://127.0.0.1:$local_port/status"
echo

step "The control plane's metrics: GET /metrics on the status listener (no token)"
curl -fsS "http://127.0.0.1:$status_port/metrics" | grep -E '^licsync_cp_(dataplanes|revision|sync_updates_total)'

step "The status page: a read-only Admin API token to sign in with"
viewer=$(admin -X POST "http://127.0.0.1:$admin_port/admin-tokens" -d '{"name":"status-page","role":"viewer","ttl":"7d"}')
viewer_token=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' <<<"$viewer")
curl -fsS "http://127.0.0.1:$admin_port/ui/login" | grep -q 'name="token"' || {
  echo "the status page's sign-in form is missing" >&2
  exit 1
}
echo "http://127.0.0.1:$admin_port/ui answers; sign in with the viewer token below"

if [[ $mode == check ]]; then
  echo
  echo "quickstart check passed"
  exit 0
fi

cat <<EOF

licsync is running.
  Status page: http://127.0.0.1:$admin_port/ui
               sign in with this viewer token (read-only, valid 7 days): $viewer_token
  Admin API:   http://127.0.0.1:$admin_port   (token: $work/cp/licsync-data/admin-token)
  Metrics:     http://127.0.0.1:$status_port/metrics
  Agent API:   http://127.0.0.1:$local_port/license
  Try:         curl -H "Authorization: Bearer \$(cat $work/cp/licsync-data/admin-token)" http://127.0.0.1:$admin_port/clustering/data-planes
Following both logs; press Ctrl-C to stop.
EOF
tail -n 0 -f "$work/cp.log" "$work/dp.log" &
# Until either program exits or a signal arrives (the short sleeps keep Ctrl-C prompt); cleanup
# then stops the other program and tail.
while kill -0 "$cp_pid" 2>/dev/null && kill -0 "$dp_pid" 2>/dev/null; do
  sleep 1 &
  wait $! || true
done
echo "A licsync program stopped; see the logs above." >&2
exit 1

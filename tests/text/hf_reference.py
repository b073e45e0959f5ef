#!/usr/bin/env python3
"""hf_reference.py: checks the C tokenizer against Hugging Face `tokenizers` itself (the target; CI
compares with the JavaScript port, which differs from HF on U+0085 and U+FEFF, see test_tokenizer.c).
Needs only `tokenizers` and `transformers` (present on the GPU machine); no GPU, no network.

  python3 tests/text/hf_reference.py TOKENIZER_DIR CORPUS_JSONL OURS_IDS OURS_TEXT

TOKENIZER_DIR: written by aqa-tokenizer-build. CORPUS_JSONL: one JSON string per line. OURS_IDS:
`aqa-tokenize --tokenizer DIR --jsonl < CORPUS_JSONL`; OURS_TEXT: `aqa-tokenize --tokenizer DIR --decode
--jsonl < OURS_IDS`. Prints "N lines: N identical ids, N identical decode", the first mismatches, and
the 133-id check of qwen2-audio.md section 6 through transformers' apply_chat_template; exits 1 on any
difference."""
import json
import os
import sys

from tokenizers import Tokenizer
from transformers import AutoTokenizer


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    tok_dir, corpus_path, ids_path, text_path = sys.argv[1:]
    hf = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    lines = [json.loads(l) for l in open(corpus_path, encoding="utf-8") if l.strip()]
    ours = [[int(x) for x in l.split()] for l in open(ids_path, encoding="utf-8")]
    ours_text = [json.loads(l) for l in open(text_path, encoding="utf-8")]
    if not (len(lines) == len(ours) == len(ours_text)):
        sys.exit(f"line counts differ: corpus {len(lines)}, ids {len(ours)}, text {len(ours_text)}")
    same_ids = same_text = shown = 0
    for i, (text, ids, back) in enumerate(zip(lines, ours, ours_text)):
        ref = hf.encode(text, add_special_tokens=False).ids
        ref_back = hf.decode(ref, skip_special_tokens=False)
        same_ids += ref == ids
        same_text += ref_back == back
        if (ref != ids or ref_back != back) and shown < 10:
            shown += 1
            print(f"MISMATCH line {i + 1} {text!r}\n  HF  {ref}\n  C   {ids}\n  HF decode {ref_back!r}\n"
                  f"  C decode  {back!r}")
    print(f"{len(lines)} lines: {same_ids} identical ids, {same_text} identical decode")

    # The HF integration test: one user turn [audio of 64321 samples -> 101 tokens, text].
    t = AutoTokenizer.from_pretrained(tok_dir)
    conv = [{"role": "user", "content": [{"type": "audio", "audio_url": "a.wav"},
                                          {"type": "text", "text": "What's that sound?"}]}]
    text = t.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    text = text.replace("<|AUDIO|>", "<|AUDIO|>" * 101)
    ids = t(text, add_special_tokens=False)["input_ids"]
    want = ([151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 14755, 220, 16,
             25, 220, 151647] + [151646] * 101 +
            [151648, 198, 3838, 594, 429, 5112, 30, 151645, 198, 151644, 77091, 198])
    print(f"133-id check: {'ok' if ids == want else 'DIFFERS'} ({len(ids)} ids)")
    ok = same_ids == len(lines) and same_text == len(lines) and ids == want
    sys.exit(0 if ok else 1)


main()

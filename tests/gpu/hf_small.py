#!/usr/bin/env python3
"""transformers reference logits of a model directory (e.g. `aqa-init --config configs/model-small.json
--out DIR --seed 1`) for tests/gpu/test_model_cuda.c: a 30 s clip (3000 frames -> 750 audio tokens) plus
text, run once in fp32 (eager) and once in bf16 (sdpa); writes OUT.safetensors with input_ids (int32),
input_features [128, 3000] and the logits of the last 8 rows, logits_f32 / logits_bf16 [8, vocab].

    python3 tests/gpu/hf_small.py DIR OUT.safetensors
    AQA_SMALL_DIR=DIR AQA_HF_SMALL=OUT.safetensors build/tests/gpu/test_model_cuda
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import Qwen2AudioForConditionalGeneration

K = 8


def main():
    model_dir, out = sys.argv[1], sys.argv[2]
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    audio_id, bos = cfg["audio_token_index"], cfg["text_config"]["bos_token_id"]
    c = np.arange(128, dtype=np.float64)[:, None]
    t = np.arange(3000, dtype=np.float64)[None, :]
    feats = 0.8 * np.sin(0.013 * t * (c + 1) + 0.1 * c) + 0.3 * np.cos(0.0007 * t * c + 0.5)
    features = torch.tensor(feats, dtype=torch.float32)[None]
    mask = torch.ones(1, 3000, dtype=torch.int32)
    ids = [bos] + [audio_id] * 750 + [1000 + 37 * i for i in range(20)]
    input_ids = torch.tensor([ids], dtype=torch.int64)
    res = {"input_ids": input_ids[0].to(torch.int32).contiguous(), "input_features": features[0].contiguous()}
    for name, dtype, attn in (("f32", torch.float32, "eager"), ("bf16", torch.bfloat16, "sdpa")):
        m = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir, dtype=dtype,
                                                               attn_implementation=attn).cuda().eval()
        with torch.no_grad():
            o = m(input_ids=input_ids.cuda(), attention_mask=torch.ones_like(input_ids).cuda(),
                  input_features=features.to(dtype).cuda(), feature_attention_mask=mask.cuda())
        res["logits_" + name] = o.logits[0, -K:].float().cpu().contiguous()
        del m
        torch.cuda.empty_cache()
    d = (res["logits_bf16"] - res["logits_f32"]).abs().max().item()
    print(f"hf_small: T={len(ids)}, HF bf16 vs fp32 max abs logit diff {d:.4f}")
    save_file(res, out)


if __name__ == "__main__":
    main()

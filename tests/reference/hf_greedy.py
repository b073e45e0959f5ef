#!/usr/bin/env python3
"""transformers' greedy decoding of our randomly initialised checkpoints, for tests/gpu/test_greedy_hf.c.

For each case below, writes the model directory with our aqa-init (config, seed, dtype), loads it in
transformers (Qwen2AudioForConditionalGeneration, sdpa) once in fp32 (TF32 off) and once in bf16, and
runs greedy generate for 32 new tokens (min_new_tokens=32: EOS is masked, so every run is 32 long; no
repetition penalty: the model's generation_config.json is replaced) on a prompt with audio:
    [bos, <|audio_bos|>] + <|AUDIO|> x audio_token_count(valid) + [<|audio_eos|>] + 12 text ids
and synthetic features (formula in features(); the C test recomputes them and checks feature_sum).
Writes OUT (JSON): per case its recipe and input_ids, and per precision the 32 tokens and, at each step,
the 4 best ids of the raw logits with their values and max |logit| (the scale that bf16 noise is
relative to), so the C side can tell a real mismatch from a near tie.

    python3 tests/reference/hf_greedy.py --aqa-init BUILD/common/tools/aqa-init --tmp DIR \
        --out tests/fixtures/model/hf_greedy.json
"""
import argparse
import json
import os
import subprocess

import numpy as np
import torch
import transformers
from transformers import GenerationConfig, Qwen2AudioForConditionalGeneration

N_NEW, TOP = 32, 4
AUDIO_BOS, AUDIO_EOS = 151647, 151648
# name, config, seed, checkpoint dtype, valid feature frames (< 3000: the feature mask matters)
CASES = [
    ("tiny-f32", "configs/model-tiny.json", 1, "f32", 2000),
    ("tiny-bf16", "configs/model-tiny.json", 1, "bf16", 2000),
    ("small-bf16", "configs/model-small.json", 1, "bf16", 3000),
]


def features():
    """[128, 3000] float32: computed in float64, rounded once (test_greedy_hf.c does the same)."""
    c = np.arange(128, dtype=np.float64)[:, None]
    t = np.arange(3000, dtype=np.float64)[None, :]
    return (0.8 * np.sin(0.013 * t * (c + 1) + 0.1 * c) + 0.3 * np.cos(0.0007 * t * c + 0.5)).astype(np.float32)


def audio_token_count(valid):
    return ((valid - 1) // 2 + 1 - 2) // 2 + 1


def greedy(model_dir, cfg, ids, feats, valid, dtype):
    m = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir, dtype=dtype,
                                                           attn_implementation="sdpa").cuda().eval()
    text = cfg["text_config"]
    gc = GenerationConfig(do_sample=False, max_new_tokens=N_NEW, min_new_tokens=N_NEW, num_beams=1,
                          repetition_penalty=1.0, eos_token_id=text["eos_token_id"], pad_token_id=text["eos_token_id"],
                          bos_token_id=text["bos_token_id"])
    input_ids = torch.tensor([ids], dtype=torch.int64).cuda()
    mask = torch.zeros(1, 3000, dtype=torch.int32)
    mask[0, :valid] = 1
    with torch.no_grad():
        out = m.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                         input_features=torch.from_numpy(feats)[None].to(dtype).cuda(),
                         feature_attention_mask=mask.cuda(), generation_config=gc, output_logits=True,
                         return_dict_in_generate=True)
    tokens = out.sequences[0, len(ids):].tolist()
    logits = torch.stack(out.logits)[:, 0].float()  # [32, V] raw (before min_new_tokens masks EOS)
    val, idx = logits.topk(TOP, dim=-1)
    scale = logits.abs().max(dim=-1).values
    for s, (tok, best) in enumerate(zip(tokens, idx[:, 0].tolist())):
        if tok != best:  # an exact tie (bf16 logits) broken the other way, or the EOS mask of min_new_tokens
            print(f"  note: step {s}: generate chose {tok}, topk's first {best} (exact tie or masked EOS)")
    del m
    torch.cuda.empty_cache()
    return {"tokens": tokens, "top_ids": idx.tolist(), "top_logits": val.tolist(), "scale": scale.tolist()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aqa-init", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    feats = features()
    res = {"transformers": transformers.__version__, "torch": torch.__version__,
           "device": torch.cuda.get_device_name(0), "new_tokens": N_NEW,
           "feature_sum": float(feats.astype(np.float64).sum()), "cases": []}
    for name, config, seed, dtype, valid in CASES:
        model_dir = os.path.join(args.tmp, name)
        subprocess.run([args.aqa_init, "--config", os.path.join(root, config), "--out", model_dir, "--seed",
                        str(seed), "--dtype", dtype], check=True)
        cfg = json.load(open(os.path.join(model_dir, "config.json")))
        text = cfg["text_config"]
        ids = ([text["bos_token_id"], AUDIO_BOS] + [cfg["audio_token_index"]] * audio_token_count(valid) +
               [AUDIO_EOS] + [1000 + 37 * i for i in range(12)])
        case = {"name": name, "config": config, "seed": seed, "dtype": dtype, "valid_frames": valid,
                "input_ids": ids, "hf": {}}
        for prec, torch_dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            r = greedy(model_dir, cfg, ids, feats, valid, torch_dtype)
            case["hf"][prec] = r
            gaps = [v[0] - v[1] for v in r["top_logits"]]
            print(f"{name} {prec}: tokens {r['tokens'][:8]}..., min top-2 gap {min(gaps):.3g} "
                  f"(scale {max(r['scale']):.3g})")
        same = sum(a == b for a, b in zip(case["hf"]["fp32"]["tokens"], case["hf"]["bf16"]["tokens"]))
        print(f"{name}: HF fp32 and bf16 agree on {same}/{N_NEW} tokens")
        res["cases"].append(case)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()

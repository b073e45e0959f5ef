#!/usr/bin/env python3
"""Reference outputs of a tiny random Qwen2-Audio from Hugging Face transformers (5.x), for
tests/model/test_hf_parity.c.

Builds a tiny Qwen2AudioConfig (vocab 512, audio token 500; audio d_model 32, 2 layers, 4 heads, ffn 64,
max_source_positions 1500; text hidden 32, 2 layers, 4 heads, 2 kv heads, ffn 64), draws random weights
(torch.manual_seed), writes it with save_pretrained (fp32 safetensors) to tests/fixtures/model/tiny-hf/,
reloads it in fp32 with eager attention, runs one forward on deterministic inputs, computes
loss = sum_t w_t * log_softmax(logits[row_t])[target_t], backpropagates, and writes
tests/fixtures/model/expected.safetensors: input_features [1,128,3000], feature_attention_mask [1,3000]
(int32), input_ids [1,T] (int32), tgt_row/tgt_id (int32) and tgt_w [n], logits [T,512], loss [1], and
grad.<checkpoint name> for every parameter with a gradient (embed_positions is frozen).

Run from the repository root on a machine with torch + transformers:
    python3 tests/reference/hf_model.py
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures", "model")
MODEL_DIR = os.path.join(FIX, "tiny-hf")

VOCAB, AUDIO_ID, AUDIO_BOS, AUDIO_EOS = 512, 500, 501, 502
VALID_FRAMES = 434  # L: L1 = (L - 1) // 2 + 1 = 217 encoder keys, N = (L1 - 2) // 2 + 1 = 108 audio tokens


def canonical(name):
    """HF parameter name -> the checkpoint name of qwen2-audio.md section 2 (4.x layout). transformers 5
    may nest the submodules under `model.`; this maps both layouts to one set of names."""
    if name.startswith("model.language_model."):
        return "language_model.model." + name[len("model.language_model."):]
    if name.startswith("model."):
        return name[len("model."):]
    if name == "lm_head.weight":
        return "language_model.lm_head.weight"
    return name


def build_config():
    audio = dict(model_type="qwen2_audio_encoder", num_mel_bins=128, d_model=32, encoder_layers=2,
                 encoder_attention_heads=4, encoder_ffn_dim=64, max_source_positions=1500)
    text = dict(model_type="qwen2", vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6,
                rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    cfg = Qwen2AudioConfig(audio_config=audio, text_config=text, audio_token_index=AUDIO_ID)
    # 5.x reads audio_token_id, 4.x audio_token_index: set both so either version merges at id 500
    cfg.audio_token_index = AUDIO_ID
    cfg.audio_token_id = AUDIO_ID
    return cfg


def randomize(model):
    """Weights ~ N(0, 0.2^2), biases ~ N(0, 0.1^2), norm weights 1 + N(0, 0.1^2): large enough that every
    path (attention patterns, GELU curvature, the audio mask) matters to the outputs and gradients."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            else:
                p.copy_(0.2 * r)


def inputs():
    c = np.arange(128, dtype=np.float64)[:, None]
    t = np.arange(3000, dtype=np.float64)[None, :]
    feats = 0.8 * np.sin(0.013 * t * (c + 1) + 0.1 * c) + 0.3 * np.cos(0.0007 * t * c + 0.5)
    features = torch.tensor(feats, dtype=torch.float32)[None]  # [1, 128, 3000]
    mask = torch.zeros(1, 3000, dtype=torch.int32)
    mask[0, :VALID_FRAMES] = 1
    l1 = (VALID_FRAMES - 1) // 2 + 1
    n_audio = (l1 - 2) // 2 + 1
    ids = [1, 7, 8, 9, AUDIO_BOS] + [AUDIO_ID] * n_audio + [AUDIO_EOS] + [11 + 37 * i % 480 for i in range(14)]
    input_ids = torch.tensor([ids], dtype=torch.int64)
    T = len(ids)
    # targets: every text token after the audio, predicted by the row before it
    first = 5 + n_audio + 1
    tgt_row = torch.arange(first - 1, T - 1, dtype=torch.int64)
    tgt_id = input_ids[0, first:]
    tgt_w = torch.tensor([0.5 + 0.25 * ((3 * i) % 5) - 0.4 * (i % 2) for i in range(len(tgt_row))])
    return features, mask, input_ids, tgt_row, tgt_id, tgt_w


def main():
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    torch.manual_seed(0)
    cfg = build_config()
    model = Qwen2AudioForConditionalGeneration(cfg).to(torch.float32)
    randomize(model)
    os.makedirs(MODEL_DIR, exist_ok=True)
    model.save_pretrained(MODEL_DIR)  # safetensors is the default format in 4.35+ and 5.x

    # the checkpoint as written by HF must hold exactly the canonical names
    want = {canonical(n) for n, _ in model.named_parameters()}
    with safe_open(os.path.join(MODEL_DIR, "model.safetensors"), "pt") as f:
        have = set(f.keys())
    if have != want:
        print("NOTE: save_pretrained wrote non-canonical tensor names; rewriting model.safetensors with the\n"
              "checkpoint names (tell the model I/O owner which layout this transformers writes):")
        print("  only in file:", sorted(have - want)[:8], "\n  only canonical:", sorted(want - have)[:8])
        sd = {canonical(n): p.detach().contiguous() for n, p in model.named_parameters()}
        save_file(sd, os.path.join(MODEL_DIR, "model.safetensors"), metadata={"format": "pt"})

    # 5.x spells the dtype argument `dtype` (4.x `torch_dtype`); the file is fp32 and .float() makes sure
    ref = Qwen2AudioForConditionalGeneration.from_pretrained(MODEL_DIR, attn_implementation="eager",
                                                             dtype=torch.float32).float()
    ref.train()  # dropouts are 0; train mode only to be explicit that gradients are wanted
    features, mask, input_ids, tgt_row, tgt_id, tgt_w = inputs()
    out = ref(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), input_features=features,
              feature_attention_mask=mask)
    logits = out.logits[0].float()  # [T, V]
    lp = torch.log_softmax(logits[tgt_row], dim=-1).gather(1, tgt_id[:, None])[:, 0]
    loss = (tgt_w * lp).sum()
    loss.backward()

    expected = {
        "input_features": features.contiguous(),
        "feature_attention_mask": mask.contiguous(),
        "input_ids": input_ids.to(torch.int32).contiguous(),
        "tgt_row": tgt_row.to(torch.int32).contiguous(),
        "tgt_id": tgt_id.to(torch.int32).contiguous(),
        "tgt_w": tgt_w.float().contiguous(),
        "logits": logits.detach().contiguous(),
        "lp": lp.detach().contiguous(),
        "loss": loss.detach().reshape(1),
    }
    n_grads = 0
    for name, p in ref.named_parameters():
        if p.grad is not None:
            expected["grad." + canonical(name)] = p.grad.detach().float().contiguous()
            n_grads += 1
    save_file(expected, os.path.join(FIX, "expected.safetensors"), metadata={"format": "pt"})
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(FIX) for f in fs)
    print(f"T = {input_ids.shape[1]}, targets = {len(tgt_row)}, loss = {loss.item():.6f}, grads = {n_grads}, "
          f"logits std = {logits.std().item():.4f}")
    print(f"config.json text_config keys: {sorted(json.load(open(os.path.join(MODEL_DIR, 'config.json')))['text_config'])[:6]}...")
    print(f"fixtures: {total / 1e6:.2f} MB under {FIX}")
    if total > 3e6:
        sys.exit("fixtures exceed 3 MB")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""transformers baseline of tests/bench/bench_rollout.c: Qwen2-Audio at a config's shape (default
configs/model-7b.json) with random bf16 weights, sdpa attention, on the GPU. Workload: one 30 s clip
(3000 frames -> 750 audio tokens) + 96 text tokens, generate(num_return_sequences=8, do_sample=True,
temperature 1, no top-k/top-p, 32 new tokens with EOS ignored); plus the reference-model forward over
the 8 x 878 sequences (log-probs of the 32 completion tokens). Prints seconds, tokens/s, peak memory,
and with --ours (bench_rollout's --json output) the speed ratios (graphs, op by op, Q questions together).

    python3 tests/bench/hf_rollout.py configs/model-7b.json --ours /tmp/ours.json
"""
import argparse
import json
import time

import torch
from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

G, NEW, TEXT, FRAMES, REPS = 8, 32, 96, 3000, 3


def build(path, layers=None, audio_layers=None):
    """The model of a config (random bf16 weights on the GPU, sdpa), with the decoder / encoder cut to
    `layers` / `audio_layers` layers when given (full width)."""
    raw = json.load(open(path))
    text, audio = dict(raw["text_config"]), dict(raw["audio_config"])
    if layers:
        text["num_hidden_layers"] = layers
    if audio_layers:
        audio["encoder_layers"] = audio_layers
    cfg = Qwen2AudioConfig(audio_config=audio, text_config=text, audio_token_index=raw["audio_token_index"])
    cfg.audio_token_id = raw["audio_token_index"]
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2AudioForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16,
                                                                attn_implementation="sdpa")
    return model.eval(), cfg


def timed(fn):
    fn()  # warm-up
    torch.cuda.synchronize()
    ts = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return sum(ts) / len(ts), min(ts), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config", nargs="?", default="configs/model-7b.json")
    ap.add_argument("--ours")
    args = ap.parse_args()
    model, cfg = build(args.config)
    tc = cfg.text_config
    n_audio = 750
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(100, 100100, (1, n_audio + TEXT), generator=g)
    ids[0, 3:3 + n_audio] = cfg.audio_token_id
    feats = torch.randn(1, cfg.audio_config.num_mel_bins, FRAMES, generator=g).to(torch.bfloat16).cuda()
    mask = torch.ones(1, FRAMES, dtype=torch.int32, device="cuda")
    ids = ids.cuda()
    P = ids.shape[1]
    torch.cuda.reset_peak_memory_stats()

    def rollout():
        with torch.no_grad():
            return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), input_features=feats,
                                  feature_attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                                  top_p=1.0, num_return_sequences=G, max_new_tokens=NEW, min_new_tokens=NEW,
                                  pad_token_id=tc.eos_token_id)

    t_roll, best, out = timed(rollout)
    assert out.shape == (G, P + NEW), out.shape
    peak_roll = torch.cuda.max_memory_allocated() / 2**30
    print(f"hf_rollout: transformers generate, prompt {P} ({n_audio} audio) + {G} x {NEW} new tokens: "
          f"mean {t_roll:.4f} s (best {best:.4f}), {G * NEW / t_roll:.0f} new tokens/s, peak {peak_roll:.2f} GiB")

    seqs = out
    f8, m8 = feats.expand(G, -1, -1).contiguous(), mask.expand(G, -1).contiguous()

    def reference():
        with torch.no_grad():
            logits = model(input_ids=seqs, attention_mask=torch.ones_like(seqs), input_features=f8,
                           feature_attention_mask=m8).logits
            lp = torch.log_softmax(logits[:, P - 1:-1].float(), -1).gather(2, seqs[:, P:, None])
            return lp

    torch.cuda.reset_peak_memory_stats()
    t_ref, _, lp = timed(reference)
    peak_ref = torch.cuda.max_memory_allocated() / 2**30
    print(f"hf_rollout: transformers reference forward {G} x {P + NEW} tokens: {t_ref:.4f} s "
          f"(mean lp {lp.mean().item():.3f}), peak {peak_ref:.2f} GiB")
    if args.ours:
        ours = json.load(open(args.ours))
        print(f"RESULT rollout: ours {ours['rollout_s']:.4f} s vs transformers {t_roll:.4f} s -> "
              f"{t_roll / ours['rollout_s']:.2f}x (target >= 4.5x); peak ours {ours['peak_gib']:.2f} GiB vs "
              f"{peak_roll:.2f} GiB")
        print(f"RESULT model_generate op by op (no graphs): ours {ours['nograph_s']:.4f} s -> "
              f"{t_roll / ours['nograph_s']:.2f}x; decode {ours['decode_step_s'] * 1e3:.2f} ms/step with graphs, "
              f"{ours['nograph_decode_step_s'] * 1e3:.2f} without; prefill {ours['prefill_s']:.4f} s "
              f"(encoder {ours['encoder_s']:.4f} s)")
        print(f"RESULT top-k 50 {ours['generate_topk_s']:.4f} s, host sampler {ours['generate_host_s']:.4f} s")
        q = ours["batch_q"]
        print(f"RESULT {q} questions together: ours {ours['batch_s']:.4f} s ({ours['batch_s'] / q:.4f} s per "
              f"question, {q * ours['new_tokens'] / ours['batch_s']:.0f} new tokens/s) vs one at a time "
              f"{ours['batch_seq_s']:.4f} s; vs transformers one question {t_roll:.4f} s -> "
              f"{t_roll * q / ours['batch_s']:.2f}x per question")
        print(f"RESULT reference forward: ours {ours['ref_separate_s']:.4f} s (8 separate), "
              f"{ours['ref_shared_s']:.4f} s (shared prefix) vs transformers {t_ref:.4f} s -> "
              f"{t_ref / ours['ref_separate_s']:.2f}x / {t_ref / ours['ref_shared_s']:.2f}x")


if __name__ == "__main__":
    main()

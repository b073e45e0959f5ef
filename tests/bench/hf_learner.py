#!/usr/bin/env python3
"""transformers baseline of tests/bench/bench_learner.c: the learner step of one GRPO group with
Qwen2-Audio at a config's shape (default configs/model-7b.json; --layers / --audio-layers cut the depth
at full width, as the C bench does), random bf16 weights, sdpa attention, on the GPU. Workload: the 8 x
878-token sequences of a group (846-token prompt with one 30 s clip's 750 audio tokens + 32 completion
tokens each), forward with input_features and labels on the completion tokens, the completion tokens'
log-probs, backward of the loss into every trainable parameter. One warm-up then timed repeats, median.
Prints seconds, model FLOPs (bench_common.c's formula; transformers runs the lm_head on every row),
TFLOP/s against the card's dense bf16 peak, peak memory, and with --ours (bench_learner's --json) the
speed ratios: ours naive (target >= 1.0x) and ours shared prefix (target >= 5x).

    python3 tests/bench/hf_learner.py configs/model-7b.json [--layers N --audio-layers N] --ours /tmp/ours.json
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_rollout import build  # noqa: E402

G, NEW, TEXT, FRAMES, N_AUDIO = 8, 32, 96, 3000, 750
ISSUE = "transformers measured 0.77 s (462 TFLOP/s) on an H200 (issue 8, full 32 + 32 layers)"


def train_flops(cfg, T, n_clips, seq_len, n_seqs):
    """Training FLOPs of n_seqs causal sequences of seq_len tokens (T in all) with n_clips 30 s clips:
    3 x forward, forward = 2 x weights x rows for every matmul (lm_head on all T rows) + attention
    4 x hd x heads per visible (query, key) pair, as bench_flops in bench_common.c counts."""
    tc, ac = cfg.text_config, cfg.audio_config
    D, FF, V, L = tc.hidden_size, tc.intermediate_size, tc.vocab_size, tc.num_hidden_layers
    Q = tc.num_attention_heads * tc.head_dim
    KV = tc.num_key_value_heads * tc.head_dim
    A, AF, AL, P, M = ac.d_model, ac.encoder_ffn_dim, ac.encoder_layers, ac.max_source_positions, ac.num_mel_bins
    dec = 2.0 * T * L * (D * Q + 2 * D * KV + Q * D + 3 * D * FF) + 2.0 * T * V * D
    dec += 4.0 * n_seqs * seq_len * (seq_len + 1) / 2 * Q * L
    audio = 2.0 * (2 * P * A * M * 3 + P * A * 3 * A + P * AL * (4 * A * A + 2 * A * AF) + P / 2 * A * D)
    audio += 4.0 * P * P * A * AL
    return 3 * (dec + n_clips * audio)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config", nargs="?", default="configs/model-7b.json")
    ap.add_argument("--layers", type=int, help="decoder layers (default: the config's)")
    ap.add_argument("--audio-layers", type=int, help="encoder layers (default: the config's)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=989.4, help="the card's dense bf16 peak")
    ap.add_argument("--forward-only", action="store_true")
    ap.add_argument("--ours", help="bench_learner --json output to compare with")
    args = ap.parse_args()
    if args.reps < 1:
        ap.error("--reps must be >= 1")
    model, cfg = build(args.config, args.layers, args.audio_layers)
    model.train()  # dropouts are 0: the training forward equals inference, but autograd records it
    tc, ac = cfg.text_config, cfg.audio_config
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)

    g = torch.Generator().manual_seed(3)
    P = N_AUDIO + TEXT
    prompt = torch.randint(100, 100100, (P,), generator=g)
    prompt[3:3 + N_AUDIO] = cfg.audio_token_id
    ids = torch.cat([prompt.expand(G, P), torch.randint(100, 100100, (G, NEW), generator=g)], 1).cuda()
    labels = ids.clone()
    labels[:, :P] = -100  # the loss (and its gradient) on the completion tokens only
    feats = torch.randn(1, ac.num_mel_bins, FRAMES, generator=g).to(torch.bfloat16).cuda().expand(G, -1, -1)
    feats = feats.contiguous()
    fmask = torch.ones(G, FRAMES, dtype=torch.int32, device="cuda")
    amask = torch.ones_like(ids)

    def step():
        out = model(input_ids=ids, attention_mask=amask, input_features=feats, feature_attention_mask=fmask,
                    labels=labels)
        with torch.no_grad():
            lp = torch.log_softmax(out.logits[:, P - 1:-1].float(), -1).gather(2, ids[:, P:, None])
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        if not args.forward_only:
            out.loss.backward()
        return t1, lp

    tf, tb, ts = [], [], []
    torch.cuda.reset_peak_memory_stats()
    for i in range(args.reps + 1):  # the first is the warm-up
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        t1, lp = step()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        if i:
            tf.append(t1 - t0), tb.append(t2 - t1), ts.append(t2 - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30
    fwd, bwd, t = statistics.median(tf), statistics.median(tb), statistics.median(ts)
    flops = train_flops(cfg, G * (P + NEW), G, P + NEW, G) / (1 if not args.forward_only else 3)
    print(f"hf_learner: {torch.cuda.get_device_name()}, torch {torch.__version__}, {args.config}, decoder layers "
          f"{tc.num_hidden_layers}, encoder layers {ac.encoder_layers}, {n_params} params ({n_train} trainable)")
    print(f"hf_learner: transformers {'forward' if args.forward_only else 'forward + backward'} of {G} x {P + NEW} "
          f"tokens ({G} clips), labels on {G} x {NEW}: forward {fwd:.4f} s + backward {bwd:.4f} s = {t:.4f} s "
          f"(median of {args.reps}); {flops / 1e12:.1f} TFLOP -> {flops / t / 1e12:.1f} TFLOP/s "
          f"({100 * flops / t / 1e12 / args.peak_tflops:.0f}% of {args.peak_tflops:.0f}); peak {peak:.2f} GiB; "
          f"mean lp {lp.mean().item():.3f}")
    print(f"hf_learner: reference: {ISSUE}")
    if args.ours:
        ours = json.load(open(args.ours))
        if (ours["layers"], ours["audio_layers"]) != (tc.num_hidden_layers, ac.encoder_layers):
            sys.exit(f"hf_learner: {args.ours} ran {ours['layers']} + {ours['audio_layers']} layers, transformers "
                     f"{tc.num_hidden_layers} + {ac.encoder_layers}: not comparable")
        if ours["forward_only"] != args.forward_only:
            sys.exit(f"hf_learner: {args.ours} forward_only={ours['forward_only']}, here {args.forward_only}")
        for name, target in (("naive", 1.0), ("shared", 5.0)):
            o = ours[name]
            r = t / o["step_s"]
            print(f"RESULT learner step, ours {name} ({o['tokens']} tokens): {o['step_s']:.4f} s "
                  f"({o['fwd_s']:.4f} + {o['bwd_s']:.4f}), {o['tflops']:.1f} TFLOP/s, peak {o['peak_gib']:.2f} GiB "
                  f"vs transformers {t:.4f} s, peak {peak:.2f} GiB -> {r:.2f}x (target >= {target:.1f}x: "
                  f"{'met' if r >= target else 'NOT met'})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""transformers baseline of tests/bench/bench_rollout.c: Qwen2-Audio at a config's shape (default
configs/model-7b.json) with random bf16 weights, sdpa attention, on the GPU. Workload: one 30 s clip
(3000 frames -> 750 audio tokens) + 96 text tokens, generate(num_return_sequences=8, do_sample=True,
temperature 1, no top-k/top-p, 32 new tokens with EOS ignored); plus the reference-model forward over
the 8 x 878 sequences (log-probs of the 32 completion tokens). Then bench_rollout's roofline cases on
transformers, each in ONE batched generate: Q = 4 and 16 questions (the same prompt and clip, as ours)
x G 8 x 32 new tokens, and 1 question x 256 forced new tokens; a case that does not fit in the card's
memory is reported as such. Last, the tuned PyTorch baseline: the same generate with a static KV cache,
whose decode step transformers compiles with torch.compile (reported as run or not, with the error).
Prints seconds, tokens/s, peak memory, and with --ours (bench_rollout's --json output) the speed ratios
and each case's roofline.

    python3 tests/bench/hf_rollout.py configs/model-7b.json --ours /tmp/ours.json [--skip-compiled]
"""
import argparse
import json
import time

import torch
import torch._dynamo
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


def timed(fn, reps=REPS, warm=True):
    if warm:
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return sum(ts) / len(ts), min(ts), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config", nargs="?", default="configs/model-7b.json")
    ap.add_argument("--ours")
    ap.add_argument("--skip-compiled", action="store_true", help="no static-cache + torch.compile baseline")
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

    def rollout(q=1, new=NEW, **kw):
        """One generate over q questions (the same prompt and clip) x G samples x `new` forced tokens."""
        iq, fq, mq = ids.expand(q, -1), feats.expand(q, -1, -1), mask.expand(q, -1)
        with torch.no_grad():
            return model.generate(input_ids=iq, attention_mask=torch.ones_like(iq), input_features=fq,
                                  feature_attention_mask=mq, do_sample=True, temperature=1.0, top_k=0,
                                  top_p=1.0, num_return_sequences=G, max_new_tokens=new, min_new_tokens=new,
                                  pad_token_id=tc.eos_token_id, **kw)

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

    # the roofline cases, each one batched generate; (q, new) -> seconds, or the reason it did not run
    cases = {}
    for q, new, reps in ((4, NEW, 2), (16, NEW, 1), (1, 256, 1)):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            # warm-up at the case's batch with 2 tokens (its shapes), then the timed runs
            rollout(q, 2)
            t, _, out = timed(lambda: rollout(q, new), reps=reps, warm=False)
            assert out.shape == (q * G, P + new), out.shape
            cases[(q, new)] = t
            print(f"hf_rollout: transformers generate, {q} question(s) batched x {G} x {new} new tokens: "
                  f"{t:.4f} s ({t / q:.4f} s per question), {q * G * new / t:.0f} new tokens/s, peak "
                  f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
        except torch.cuda.OutOfMemoryError as err:
            cases[(q, new)] = f"out of memory ({str(err).splitlines()[0][:120]})"
            print(f"hf_rollout: transformers generate, {q} question(s) batched x {G} x {new}: {cases[(q, new)]}")
    cases[(1, NEW)] = t_roll

    # tuned PyTorch: static KV cache; transformers compiles the decode step (torch.compile) for it
    compiled = "skipped (--skip-compiled)"
    if not args.skip_compiled:
        torch.cuda.empty_cache()
        try:
            t0 = time.perf_counter()
            rollout(1, NEW, cache_implementation="static")  # compiles
            t_first = time.perf_counter() - t0
            t_c, best_c, out = timed(lambda: rollout(1, NEW, cache_implementation="static"), warm=False)
            graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
            compiled = t_c
            print(f"hf_rollout: transformers generate, static cache (torch.compile graphs: {graphs}; first call "
                  f"{t_first:.1f} s): mean {t_c:.4f} s (best {best_c:.4f}), {G * NEW / t_c:.0f} new tokens/s")
        except Exception as err:  # noqa: BLE001 - any failure is the result to report
            compiled = f"did not run: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            print(f"hf_rollout: transformers static cache + torch.compile {compiled}")

    if args.ours:
        ours = json.load(open(args.ours))
        print(f"RESULT rollout: ours {ours['rollout_s']:.4f} s vs transformers {t_roll:.4f} s -> "
              f"{t_roll / ours['rollout_s']:.2f}x (target >= 4.5x); peak ours {ours['peak_gib']:.2f} GiB vs "
              f"{peak_roll:.2f} GiB")
        if isinstance(compiled, float):
            print(f"RESULT rollout vs tuned PyTorch (static cache + torch.compile): {compiled:.4f} s -> "
                  f"{compiled / ours['rollout_s']:.2f}x")
        else:
            print(f"RESULT tuned PyTorch (static cache + torch.compile): {compiled}")
        print(f"RESULT model_generate op by op (no graphs): ours {ours['nograph_s']:.4f} s -> "
              f"{t_roll / ours['nograph_s']:.2f}x; decode {ours['decode_step_s'] * 1e3:.2f} ms/step with graphs, "
              f"{ours['nograph_decode_step_s'] * 1e3:.2f} without; prefill {ours['prefill_s']:.4f} s "
              f"(encoder {ours['encoder_s']:.4f} s)")
        print(f"RESULT top-k 50 {ours['generate_topk_s']:.4f} s, host sampler {ours['generate_host_s']:.4f} s")
        print(f"RESULT roofline: a decode step reads {ours['weight_bytes'] * 1e-9:.2f} GB of weights at the "
              f"measured copy bandwidth {ours['copy_bw'] * 1e-9:.0f} GB/s = "
              f"{ours['weight_bytes'] / ours['copy_bw'] * 1e3:.2f} ms")
        for c in ours["cases"]:
            q, new, t = c["q"], c["new"], c["s"]
            hf = cases.get((q, new))
            vs = (f"transformers batched {hf:.4f} s -> {hf / t:.2f}x" if isinstance(hf, float)
                  else f"transformers batched: {hf}")
            print(f"RESULT case {q} question(s) x {G} x {new} new: ours {t:.4f} s ({t / q:.4f} s per question, "
                  f"{q * G * new / t:.0f} new tokens/s); roofline {c['roofline_s']:.4f} s (prefill "
                  f"{c['prefill_s']:.4f} s + {new} x weights / bandwidth) -> {t / c['roofline_s']:.2f}x of it "
                  f"(target <= 1.15x at 1 question), {t / c['roofline_kv_s']:.2f}x with K/V reads; {vs}")
        print(f"RESULT reference forward: ours {ours['ref_separate_s']:.4f} s (8 separate), "
              f"{ours['ref_shared_s']:.4f} s (shared prefix) vs transformers {t_ref:.4f} s -> "
              f"{t_ref / ours['ref_separate_s']:.2f}x / {t_ref / ours['ref_shared_s']:.2f}x")

if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""torch baseline of tests/bench/bench_host_adamw.c: torch.optim.AdamW(foreach=True) on the CPU over the
same number of fp32 parameters (split into 16M-element tensors, roughly a 7B model's weight matrices),
torch's default threads (the cores). One warm-up step, then timed steps, median. torch reads fp32
gradients and writes fp32 weights only; ours also converts the bf16 gradient in and the bf16 weights out.
With --ours (bench_host_adamw --json) prints ours / torch.

    python3 tests/bench/torch_adamw.py [--params N] [--reps R] --ours /tmp/host_adamw.json
"""
import argparse
import json
import statistics
import time

import torch

CHUNK = 1 << 24


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=int, default=100_000_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--ours", help="bench_host_adamw --json output to compare with")
    args = ap.parse_args()
    if args.params < 1 or args.reps < 1:
        ap.error("--params and --reps must be >= 1")
    sizes = [CHUNK] * (args.params // CHUNK) + ([args.params % CHUNK] if args.params % CHUNK else [])
    params = [torch.nn.Parameter(torch.randn(k) * 0.02) for k in sizes]
    for p in params:
        p.grad = torch.randn_like(p) * 0.01
    opt = torch.optim.AdamW(params, lr=1e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=True)
    times = []
    for r in range(args.reps + 1):
        t0 = time.perf_counter()
        opt.step()
        if r > 0:
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    rate = args.params / sec
    print(f"torch.optim.AdamW(foreach=True), CPU: {args.params} params, {torch.get_num_threads()} threads: "
          f"{sec:.4f} s per step, {rate:.3e} params/s (torch {torch.__version__})")
    if args.ours:
        with open(args.ours) as f:
            ours = json.load(f)
        if ours["params"] != args.params:
            raise SystemExit(f"--ours measured {ours['params']} params, this run {args.params}")
        print(f"ours: {ours['params_per_s']:.3e} params/s with {ours['threads']} threads: "
              f"{ours['params_per_s'] / rate:.2f}x torch")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference log-mel features for common/audio/mel.c from HF's WhisperFeatureExtractor.

Runs where transformers is installed (the GPU machine): numpy + transformers only (HF itself uses torch
for the STFT when torch is installed, and that is the path recorded as "hf_path").

    build/tests/audio/feature_inputs IN_DIR MMAU_WAV   # C, any machine: the 16 kHz inputs, raw float32
    python3 tests/reference/whisper_features.py IN_DIR tests/fixtures/audio/whisper_features.json

(IN_DIR is ~4.3 MB and may be made on the CPU machine and carried to the GPU machine.)

The fixture is small: per clip the input length and checksums, the mask sum, statistics of the whole
[128, 3000] feature matrix, and ~300 (mel, frame, value) samples at fixed positions (edges, the last
valid frames, then seeded random ones). Each sample also carries the same feature computed here in
float64 numpy straight from qwen2-audio.md section 4, as a second, independent reference.
tests/audio/test_mel_parity.c regenerates the inputs, recomputes and compares.
"""
import json
import os
import sys

import numpy as np
import transformers
from transformers import WhisperFeatureExtractor
from transformers.utils import is_torch_available

N_SAMPLES, N_FRAMES, N_MELS, N_FFT, HOP = 480000, 3000, 128, 400, 160
SAMPLES_PER_CLIP = 300


def float64_features(x, mel_filters):
    """Features [128, 3000] in float64 with the float32-rounded filter bank (as the C code uses)."""
    clip = np.zeros(N_SAMPLES, np.float64)
    m = min(len(x), N_SAMPLES)
    clip[:m] = x[:m]
    padded = np.pad(clip, N_FFT // 2, mode="reflect")
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(N_FRAMES)[:, None]  # [3000, 400]; last frame dropped
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    spec = np.fft.rfft(padded[idx] * window, axis=1)  # [3000, 201]
    power = spec.real ** 2 + spec.imag ** 2
    filters = mel_filters.astype(np.float32).astype(np.float64)  # [201, 128]
    lg = np.log10(np.maximum(filters.T @ power.T, 1e-10))  # [128, 3000]
    lg = np.maximum(lg, lg.max() - 8.0)
    return (lg + 4.0) / 4.0


def sample_positions(valid_frames, seed):
    """(mel, frame) pairs: edges and the last valid frames first, then seeded random ones (4 of 5 among
    the valid frames plus the two the reflect padding reaches, 1 of 5 anywhere)."""
    mels = (0, 1, 2, 63, 64, 126, 127)
    L = valid_frames
    frames = sorted({f for f in (0, 1, 2, L - 2, L - 1, L, L + 1, N_FRAMES - 2, N_FRAMES - 1)
                     if 0 <= f < N_FRAMES})
    pos = [(m, f) for m in mels for f in frames]
    seen = set(pos)
    rng = np.random.default_rng(seed)
    while len(pos) < SAMPLES_PER_CLIP:
        hi = N_FRAMES if len(pos) % 5 == 0 else min(max(L + 2, 1), N_FRAMES)
        p = (int(rng.integers(N_MELS)), int(rng.integers(hi)))
        if p not in seen:
            seen.add(p)
            pos.append(p)
    return pos


def short(v):
    return float(f"{float(v):.9g}")


def clip_entry(index, name, x, fe):
    out = fe(x, sampling_rate=16000, return_attention_mask=True, padding="max_length", return_tensors="np")
    feats = np.asarray(out["input_features"][0], np.float32)  # [128, 3000]
    mask = np.asarray(out["attention_mask"][0])  # [3000]
    assert feats.shape == (N_MELS, N_FRAMES) and mask.shape == (N_FRAMES,), (feats.shape, mask.shape)
    f64 = float64_features(x, fe.mel_filters)
    valid = int(mask.sum())
    samples = [[m, t, short(feats[m, t]), short(f64[m, t])] for m, t in sample_positions(valid, 1000 + index)]
    xd = x.astype(np.float64)
    f = feats.astype(np.float64)
    return {
        "name": name,
        "n_samples": int(len(x)),
        "input_sum": float(xd.sum()),
        "input_sumsq": float((xd * xd).sum()),
        "mask_sum": valid,
        "mean": float(f.mean()),
        "std": float(f.std()),
        "min": float(f.min()),
        "max": float(f.max()),
        "hf_vs_f64_max_abs": float(np.abs(f - f64).max()),
        "samples": samples,
    }


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: whisper_features.py IN_DIR OUT_JSON")
    in_dir, out_path = sys.argv[1], sys.argv[2]
    with open(os.path.join(in_dir, "manifest.json")) as fh:
        manifest = json.load(fh)
    assert manifest["sample_rate"] == 16000
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, n_fft=400, hop_length=160,
                                 chunk_length=30)
    torch_ok = is_torch_available()
    clips = []
    for i, sig in enumerate(manifest["signals"]):
        x = np.fromfile(os.path.join(in_dir, sig["file"]), dtype="<f4")
        assert len(x) == sig["n_samples"], (sig["name"], len(x), sig["n_samples"])
        clips.append(clip_entry(i, sig["name"], x, fe))
        c = clips[-1]
        print(f"{c['name']:12s} n={c['n_samples']:7d} mask={c['mask_sum']:4d} mean={c['mean']:+.6f} "
              f"hf-vs-f64={c['hf_vs_f64_max_abs']:.3g}")
    fixture = {
        "generator": "tests/reference/whisper_features.py",
        "extractor": "WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, n_fft=400, "
                     "hop_length=160, chunk_length=30), padding=max_length, return_attention_mask=True",
        "hf_path": "torch" if torch_ok else "numpy",
        "versions": {
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "torch": __import__("torch").__version__ if torch_ok else None,
        },
        "sample_fields": ["mel", "frame", "hf", "float64"],
        "clips": clips,
    }
    text = json.dumps(fixture, separators=(",", ":"))
    text = text.replace("],[", "],\n[")  # one sample per line: readable diffs
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text + "\n")
    os.replace(tmp, out_path)
    print(f"wrote {out_path} ({len(text)} bytes)")


if __name__ == "__main__":
    main()

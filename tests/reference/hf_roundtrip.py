#!/usr/bin/env python3
"""hf_roundtrip.py: check that model directories written by aqa-init / model_save_dir load in transformers.

For each MODEL_DIR:
  1. parse its safetensors files with an independent reader written here (header, dtypes, offsets,
     index weight_map/total_size) and check the .complete marker and the JSON side files;
  2. Qwen2AudioForConditionalGeneration.from_pretrained(dir, fp32, attn_implementation="eager",
     output_loading_info=True): no missing / unexpected / mismatched keys;
  3. every model parameter equals the stored tensor bit for bit (BF16 files: the widened bf16 value);
  4. run a forward pass on deterministic inputs (written to OUT so the C model can replay them) and save
     the last positions' logits;
  5. save_pretrained into OUT and report which tensor names transformers writes (do they match ours?).
Prints "OK <dir>" or "FAIL <dir>: reasons" per directory and writes OUT/hf_roundtrip.json.

usage: python3 tests/reference/hf_roundtrip.py --out OUT MODEL_DIR [MODEL_DIR ...]
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2)}


def read_safetensors(path):
    """name -> fp32 tensor, with the format checks the C writer promises (8-byte aligned data start,
    contiguous non-overlapping offsets covering the data region)."""
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    assert hlen % 8 == 0, f"{path}: header length {hlen} not 8-byte aligned"
    header = json.loads(blob[8 : 8 + hlen].decode("utf-8"))
    assert header.get("__metadata__", {}).get("format") == "pt", f"{path}: __metadata__.format is not 'pt'"
    data = blob[8 + hlen :]
    out, spans = {}, []
    for name, ent in header.items():
        if name == "__metadata__":
            continue
        dt, size = DTYPES[ent["dtype"]]
        b, e = ent["data_offsets"]
        n = int(np.prod(ent["shape"])) if ent["shape"] else 1
        assert e - b == n * size, f"{path}: {name}: {e - b} bytes for {n} x {ent['dtype']}"
        spans.append((b, e))
        raw = torch.frombuffer(bytearray(data[b:e]), dtype=torch.uint8)
        out[name] = raw.view(dt).reshape(ent["shape"]).float()
    spans.sort()
    pos = 0
    for b, e in spans:
        assert b == pos, f"{path}: gap or overlap at byte {b}"
        pos = e
    assert pos == len(data), f"{path}: {len(data) - pos} trailing bytes"
    return out, {ent["dtype"] for k, ent in header.items() if k != "__metadata__"}


def read_dir(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if not os.path.exists(idx):
        return read_safetensors(os.path.join(d, "model.safetensors"))
    with open(idx) as f:
        index = json.load(f)
    tensors, dtypes, total = {}, set(), 0
    for shard in sorted(set(index["weight_map"].values())):
        t, dt = read_safetensors(os.path.join(d, shard))
        for name in t:
            assert index["weight_map"].get(name) == shard, f"{name} in {shard} but weight_map says otherwise"
            total += t[name].numel() * DTYPES[next(iter(dt))][1]
        tensors.update(t)
        dtypes |= dt
    assert set(index["weight_map"]) == set(tensors), "weight_map and shard contents differ"
    assert index["metadata"]["total_size"] == total, f"total_size {index['metadata']['total_size']} != {total}"
    return tensors, dtypes


# transformers may name modules differently from the checkpoint (v5 moved VLM submodules under
# `model.`); map a state_dict key to the checkpoint key it should have been loaded from.
RENAMES = [
    ("model.language_model.", "language_model.model."),
    ("model.audio_tower.", "audio_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("lm_head.", "language_model.lm_head."),
]


def file_key(k, files):
    if k in files:
        return k
    for a, b in RENAMES:
        if k.startswith(a) and b + k[len(a) :] in files:
            return b + k[len(a) :]
    return None


def check_dir(d, out_dir, tag):
    from transformers import GenerationConfig, Qwen2AudioForConditionalGeneration, WhisperFeatureExtractor

    res = {"dir": d, "errors": []}
    err = res["errors"]
    if not os.path.exists(os.path.join(d, ".complete")):
        err.append("no .complete marker")
    files, dtypes = read_dir(d)
    res["file_dtypes"] = sorted(dtypes)
    res["n_file_tensors"] = len(files)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    tied = cfg["text_config"].get("tie_word_embeddings", False)

    try:
        model, info = Qwen2AudioForConditionalGeneration.from_pretrained(
            d, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    except TypeError:  # transformers 4.x spells it torch_dtype
        model, info = Qwen2AudioForConditionalGeneration.from_pretrained(
            d, torch_dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    model.eval()
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        v = list(info.get(k, []) or [])
        res[k] = [str(x) for x in v]
        if v:
            err.append(f"{k}: {v[:5]}")

    # Parameters (and the frozen embed_positions) against the file, bit for bit.
    sd = model.state_dict()
    used, bad = set(), []
    for k, v in sd.items():
        fk = file_key(k, files)
        if fk is None:
            if tied and k.endswith("lm_head.weight"):
                continue
            bad.append(f"{k}: no stored tensor")
            continue
        used.add(fk)
        if tuple(v.shape) != tuple(files[fk].shape) or not torch.equal(v.float().cpu(), files[fk]):
            bad.append(f"{k}: differs from {fk}")
    unused = sorted(set(files) - used)
    if bad:
        err.append(f"{len(bad)} parameter mismatches: {bad[:5]}")
    if unused:
        err.append(f"stored tensors not in the model: {unused[:5]}")
    res["n_model_tensors"] = len(sd)
    res["renamed"] = sorted({k for k in sd if k not in files and file_key(k, files)})[:5]

    # Config values as transformers understood them.
    tc, ac = model.config.text_config, model.config.audio_config
    rp = getattr(tc, "rope_parameters", None) or {}
    theta = rp.get("rope_theta", getattr(tc, "rope_theta", None))
    want = cfg["text_config"]
    for name, got, exp in [
        ("rope_theta", theta, want["rope_theta"]),
        ("num_key_value_heads", tc.num_key_value_heads, want["num_key_value_heads"]),
        ("rms_norm_eps", tc.rms_norm_eps, want["rms_norm_eps"]),
        ("vocab_size", tc.vocab_size, want["vocab_size"]),
        ("d_model", ac.d_model, cfg["audio_config"]["d_model"]),
        ("audio_token", getattr(model.config, "audio_token_index", getattr(model.config, "audio_token_id", None)),
         cfg["audio_token_index"]),
    ]:
        if got is None or abs(float(got) - float(exp)) > 1e-12 * max(1.0, abs(float(exp))):
            err.append(f"config {name}: transformers has {got}, file has {exp}")
    sliding = getattr(tc, "sliding_window", None) if getattr(tc, "use_sliding_window", False) else None
    if sliding is not None or any(t != "full_attention" for t in (getattr(tc, "layer_types", None) or [])):
        err.append("transformers configured sliding-window attention")
    gen = GenerationConfig.from_pretrained(d)
    if (gen.top_k, gen.top_p, gen.temperature, gen.repetition_penalty) != (20, 0.5, 0.7, 1.1):
        err.append(f"generation_config: {gen}")
    fe = WhisperFeatureExtractor.from_pretrained(d)
    if (fe.feature_size, fe.sampling_rate, fe.hop_length, fe.n_fft, fe.nb_max_frames) != (128, 16000, 160, 400, 3000):
        err.append("preprocessor_config does not give the Whisper-128 front end")

    # Forward on deterministic inputs: one 30 s clip (3000 frames -> 750 audio tokens), a few text ids.
    g = torch.Generator().manual_seed(1234)
    feats = torch.randn(1, ac.num_mel_bins, 3000, generator=g) * 0.5
    audio_id = int(cfg["audio_token_index"])
    n_audio = (((3000 - 1) // 2 + 1) - 2) // 2 + 1
    text = [int(x) for x in torch.randint(0, min(audio_id, tc.vocab_size), (6,), generator=g)]
    ids = torch.tensor([text[:3] + [audio_id] * n_audio + text[3:]])
    with torch.no_grad():
        outp = model(input_ids=ids, input_features=feats, attention_mask=torch.ones_like(ids),
                     feature_attention_mask=torch.ones(1, 3000, dtype=torch.long))
    logits = outp.logits[0].float()
    res["forward"] = {
        "n_tokens": ids.shape[1], "vocab": logits.shape[-1], "finite": bool(torch.isfinite(logits).all()),
        "logits_sum": float(logits.double().sum()), "logits_absmean": float(logits.abs().double().mean()),
        "last_argmax": int(logits[-1].argmax()), "last_first8": [float(x) for x in logits[-1, :8]],
    }
    if not res["forward"]["finite"]:
        err.append("non-finite logits")
    sub = os.path.join(out_dir, tag)
    os.makedirs(sub, exist_ok=True)
    np.save(os.path.join(sub, "input_features.npy"), feats.numpy().astype(np.float32))
    np.save(os.path.join(sub, "input_ids.npy"), ids.numpy().astype(np.int64))
    np.save(os.path.join(sub, "logits_last4.npy"), logits[-4:].numpy().astype(np.float32))

    # What transformers writes back: are the tensor names ours?
    save_dir = os.path.join(sub, "hf_saved")
    model.save_pretrained(save_dir)
    saved, _ = read_dir(save_dir)
    res["hf_saved_names_match"] = set(saved) == set(files)
    res["hf_saved_only"] = sorted(set(saved) - set(files))[:5]
    res["ours_only"] = sorted(set(files) - set(saved))[:5]
    for f in os.listdir(save_dir):
        if f.endswith(".safetensors"):
            os.remove(os.path.join(save_dir, f))  # keep OUT small; the names are recorded above
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    import transformers

    report = {"transformers": transformers.__version__, "torch": torch.__version__, "results": []}
    ok = True
    for i, d in enumerate(a.dirs):
        try:
            r = check_dir(d, a.out, f"model{i}")
        except Exception as ex:  # report and go on to the next directory
            r = {"dir": d, "errors": [f"exception: {type(ex).__name__}: {ex}"]}
        report["results"].append(r)
        ok &= not r["errors"]
        print(("OK " if not r["errors"] else "FAIL ") + d + ("" if not r["errors"] else ": " + "; ".join(r["errors"])))
        if "forward" in r:
            print("   forward:", json.dumps(r["forward"]))
            print("   hf save_pretrained names match ours:", r["hf_saved_names_match"], r["hf_saved_only"], r["ours_only"])
    report["ok"] = ok
    with open(os.path.join(a.out, "hf_roundtrip.json"), "w") as f:
        json.dump(report, f, indent=2)
    print("OK" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

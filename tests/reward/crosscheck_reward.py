# Cross-check of reward-score (C) against the Python reference rules (R1-AQA accuracy and format, the
# official MMAU string_match) on the real MMAU test-mini items, 8 completions each (right, wrong, upper
# case, prose, newline in the tag, two choices, stray spaces, empty). CPU only, Python 3 standard library.
# Usage: python3 tests/reward/crosscheck_reward.py build/reward/reward-score [tests/fixtures/mmau/mmau-test-mini.json]
import json, random, re, subprocess, sys
path = sys.argv[2] if len(sys.argv) > 2 else 'tests/fixtures/mmau/mmau-test-mini.json'
d = json.load(open(path))
def tok(t): return set(re.findall(r'\b\w+\b', t.lower()))
def mmau(pred, ans, choices):
    p, a = tok(pred), tok(ans)
    if not p: return False
    inc = set()
    for c in choices:
        ct = tok(c)
        if ct != a: inc |= ct - a
    return a.issubset(p) and p.isdisjoint(inc)
def extract(t):
    m = re.search(r'<answer>(.*?)</answer>', t)
    return m.group(1).strip() if m else t.strip()
def acc(c, s): return float(extract(c) == extract(s))
def fmt(c): return float(re.fullmatch(r'<answer>.*?</answer>', c, re.DOTALL) is not None)
rnd = random.Random(0)
reqs, exp = [], []
for it in d:
    ch = it['choices']
    cands = [f"<answer>{it['answer']}</answer>", f"<answer>{rnd.choice(ch)}</answer>",
             f"The answer is {rnd.choice(ch)}.", f"<answer>{rnd.choice(ch).upper()} </answer>",
             f"<answer>{rnd.choice(ch)}\n</answer>", f"<answer>{' or '.join(rnd.sample(ch, min(2, len(ch))))}</answer>",
             f"  <answer>{it['answer'].lower()}</answer>", ""]
    for c in cands:
        sol = f"<answer>{it['answer']}</answer>"
        reqs.append({"id": len(reqs), "completion": c, "solution": sol, "answer": it['answer'], "choices": ch})
        a, f = acc(c, sol), fmt(c)
        exp.append((a, f, a + f, extract(c), mmau(extract(c), it['answer'], ch)))
out = subprocess.run([sys.argv[1]], input="\n".join(json.dumps(r) for r in reqs) + "\n", capture_output=True, text=True).stdout.splitlines()
bad = 0
for r, e in zip(out, exp):
    r = json.loads(r)
    got = (r['rewards']['accuracy'], r['rewards']['format'], r['total'], r['prediction'], r['mmau_correct'])
    if got != e:
        bad += 1
        if bad < 5: print("MISMATCH", r, e)
print(f"{len(out)} responses for {len(reqs)} requests, {bad} mismatches, mmau correct {sum(e[4] for e in exp)}")
sys.exit(1 if bad or len(out) != len(reqs) else 0)

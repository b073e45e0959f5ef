// rng.h: Philox4x32-10, a counter-based generator (Salmon et al., SC'11).
// A random value is a pure function of (seed, counter), so results do not depend on how work is split
// across ranks or batches: e.g. the sampler keys the counter by (question, sample, step). The same
// function is easy to evaluate in a CUDA kernel. Rng wraps it as a stream whose whole state is a few
// integers, which a checkpoint stores for bit-exact resume.
#pragma once
#include <stdint.h>

// One Philox4x32-10 block: 128 random bits for counter ctr under key (seed).
void philox4x32(const uint32_t ctr[4], uint64_t seed, uint32_t out[4]);

// Keyed draws: uniform in [0, 1) with 24-bit resolution (exact in float) and raw 64 bits.
float rng_uniform_at(uint64_t seed, uint32_t a, uint32_t b, uint32_t c, uint32_t d);
uint64_t rng_u64_at(uint64_t seed, uint32_t a, uint32_t b, uint32_t c, uint32_t d);

// A sequential stream: key `seed`, counter (stream, n) where n counts 128-bit blocks.
typedef struct {
    uint64_t seed;
    uint64_t stream;
    uint64_t block;   // next block index
    uint32_t buf[4];  // current block
    uint32_t used;    // words of buf consumed (4 = empty)
} Rng;

void rng_init(Rng *r, uint64_t seed, uint64_t stream);
uint32_t rng_u32(Rng *r);
uint64_t rng_u64(Rng *r);
// Uniform in [0, 1), 53-bit resolution.
double rng_uniform(Rng *r);
// Uniform integer in [0, n) without modulo bias.
uint64_t rng_below(Rng *r, uint64_t n);
// Standard normal (Box-Muller).
double rng_normal(Rng *r);
// Fisher-Yates shuffle of idx[0..n).
void rng_shuffle(Rng *r, int64_t *idx, int64_t n);

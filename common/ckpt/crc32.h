// crc32.h: CRC-32 (IEEE 802.3: reflected polynomial 0xEDB88320, init and final xor 0xFFFFFFFF, the
// zlib/PNG checksum), used to detect corrupted checkpoint files. Slicing-by-8 tables (built once) process
// eight bytes per step, so checksumming gigabytes of optimizer state costs seconds, not minutes.
#pragma once
#include <stddef.h>
#include <stdint.h>

// Continues a running checksum: crc = crc32_update(0, a, na); crc = crc32_update(crc, b, nb) equals the
// checksum of a followed by b. Start with 0.
uint32_t crc32_update(uint32_t crc, const void *data, size_t n);

#include "ckpt/crc32.h"

#include <pthread.h>
#include <string.h>

// tab[0] is the classic byte table; tab[k][b] is the CRC of byte b followed by k zero bytes, which lets
// one step fold eight input bytes.
static uint32_t crc32_tab[8][256];
static pthread_once_t crc32_once = PTHREAD_ONCE_INIT;

static void crc32_build(void) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        crc32_tab[0][b] = c;
    }
    for (int k = 1; k < 8; k++)
        for (int b = 0; b < 256; b++)
            crc32_tab[k][b] = (crc32_tab[k - 1][b] >> 8) ^ crc32_tab[0][crc32_tab[k - 1][b] & 0xFF];
}

uint32_t crc32_update(uint32_t crc, const void *data, size_t n) {
    pthread_once(&crc32_once, crc32_build);
    const unsigned char *p = data;
    uint32_t c = ~crc;
    for (; n >= 8; n -= 8, p += 8) {
        // Little-endian loads (the checkpoint format is little-endian; see trainer_state.c).
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= c;
        c = crc32_tab[7][lo & 0xFF] ^ crc32_tab[6][(lo >> 8) & 0xFF] ^ crc32_tab[5][(lo >> 16) & 0xFF] ^
            crc32_tab[4][lo >> 24] ^ crc32_tab[3][hi & 0xFF] ^ crc32_tab[2][(hi >> 8) & 0xFF] ^
            crc32_tab[1][(hi >> 16) & 0xFF] ^ crc32_tab[0][hi >> 24];
    }
    for (; n; n--, p++) c = (c >> 8) ^ crc32_tab[0][(c ^ *p) & 0xFF];
    return ~c;
}

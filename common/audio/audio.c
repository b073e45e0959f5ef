#include "audio/audio.h"

#include <errno.h>
#include <math.h>
#include <sndfile.h>
#include <soxr.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audio/audio_len.h"
#include "util/fileio.h"

enum {
    AUDIO_READ_BLOCK = 65536,       // samples per sf_readf_float call (all channels) and per soxr block
    AUDIO_MAX_LOAD_SECONDS = 1800,  // longer files are refused: clips are 10-30 s, a bad header can
                                    // claim any length
    // Sample rates outside this range are a corrupt header, not audio: a 1 Hz file takes soxr seconds
    // to upsample 16000-fold (found by tests/fuzz/fuzz_audio).
    AUDIO_MIN_RATE = 1000,
    AUDIO_MAX_RATE = 1000000,
};

// libsndfile accepts a WAV whose data chunk claims more bytes than the file holds: it shrinks the frame
// count to what is present and only notes "data : <declared> (should be <present>)" in its log. A cut-off
// download or copy must not pass as a shorter clip, so that note is an error here.
static int audio_wav_truncated(SNDFILE *sf, long long *declared, long long *present) {
    char log[8192];
    sf_command(sf, SFC_GET_LOG_INFO, log, sizeof log);
    for (const char *line = log; line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (sscanf(line, "data : %lld (should be %lld)", declared, present) == 2 && *declared > *present)
            return 1;
    }
    return 0;
}

// Reads all frames of an open file, mixing each frame down to one sample. Returns [frames] or NULL.
static float *audio_read_mono(SNDFILE *sf, const SF_INFO *info, AudioMono mono, const char *path, Err *e) {
    int ch = info->channels;
    int64_t block_frames = AUDIO_READ_BLOCK / ch > 0 ? AUDIO_READ_BLOCK / ch : 1;
    // The output grows with what is actually read: a header (FLAC's, say) may claim billions of frames
    // that a small corrupt file does not hold.
    int64_t cap = info->frames < block_frames ? info->frames : block_frames;
    float *out = mallocCheck((size_t)cap * sizeof(float));
    float *block = mallocCheck((size_t)block_frames * (size_t)ch * sizeof(float));  // [block_frames, ch]
    int64_t done = 0;
    while (done < info->frames) {
        int64_t want = info->frames - done < block_frames ? info->frames - done : block_frames;
        sf_count_t got = sf_readf_float(sf, block, want);
        if (got <= 0) break;
        if (done + got > cap) {
            cap = 2 * cap < info->frames ? 2 * cap : info->frames;
            out = reallocCheck(out, (size_t)cap * sizeof(float));
        }
        for (sf_count_t i = 0; i < got; i++) {
            const float *fr = block + (size_t)i * (size_t)ch;
            float v = fr[0];
            if (mono == AUDIO_MONO_MEAN) {
                double s = 0.0;
                for (int c = 0; c < ch; c++) s += fr[c];
                v = (float)(s / ch);
            }
            out[done + i] = v;
        }
        done += got;
    }
    free(block);
    if (done < info->frames) {
        free(out);
        const char *why = sf_error(sf) ? sf_strerror(sf) : "unexpected end of data";
        err_set(e, "%s: truncated: read %lld of %lld frames (%s)", path, (long long)done,
                (long long)info->frames, why);
        return NULL;
    }
    for (int64_t i = 0; i < done; i++) {
        if (!isfinite(out[i])) {
            free(out);
            err_set(e, "%s: non-finite sample at frame %lld", path, (long long)i);
            return NULL;
        }
    }
    return out;
}

// Everything after opening: checks the header, reads, mixes down and resamples; closes sf.
static int audio_load_open(SNDFILE *sf, SF_INFO info, const char *path, AudioMono mono, Audio *out, Err *e) {
    if (info.frames <= 0 || info.channels <= 0 || info.samplerate <= 0) {
        err_set(e, "%s: no audio frames (frames %lld, channels %d, rate %d)", path, (long long)info.frames,
                info.channels, info.samplerate);
        sf_close(sf);
        return -1;
    }
    if (info.frames / info.samplerate >= AUDIO_MAX_LOAD_SECONDS) {
        err_set(e, "%s: too long: %lld frames at %d Hz (limit %d s)", path, (long long)info.frames,
                info.samplerate, AUDIO_MAX_LOAD_SECONDS);
        sf_close(sf);
        return -1;
    }
    if (info.samplerate < AUDIO_MIN_RATE || info.samplerate > AUDIO_MAX_RATE) {
        err_set(e, "%s: sample rate %d Hz outside [%d, %d] (corrupt header?)", path, info.samplerate, AUDIO_MIN_RATE,
                AUDIO_MAX_RATE);
        sf_close(sf);
        return -1;
    }
    long long declared, present;
    if ((info.format & SF_FORMAT_TYPEMASK) == SF_FORMAT_WAV && audio_wav_truncated(sf, &declared, &present)) {
        err_set(e, "%s: truncated WAV: header declares %lld data bytes, file holds %lld", path, declared,
                present);
        sf_close(sf);
        return -1;
    }
    float *mono_in = audio_read_mono(sf, &info, mono, path, e);  // [frames] at info.samplerate
    sf_close(sf);
    if (!mono_in) return -1;
    int64_t n = 0;
    float *x = audio_resample(mono_in, info.frames, info.samplerate, AUDIO_SAMPLE_RATE, &n, e);
    free(mono_in);
    if (!x) return err_prefix(e, "%s", path);
    // Finite but huge float samples (a corrupt float WAV holds values up to 3.4e38) overflow in the
    // resampling filter.
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) {
            free(x);
            return err_set(e, "%s: sample %lld is not finite after resampling from %d Hz (input samples too large)",
                           path, (long long)i, info.samplerate);
        }
    }
    out->samples = x;
    out->n = n;
    out->rate_in = info.samplerate;
    out->channels_in = info.channels;
    out->frames_in = info.frames;
    return 0;
}

int audio_load(const char *path, AudioMono mono, Audio *out, Err *e) {
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(path, &st) != 0) return err_set(e, "%s: cannot open audio: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return err_set(e, "%s: cannot open audio: is a directory", path);
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *sf = sf_open(path, SFM_READ, &info);
    if (!sf) return err_set(e, "%s: cannot open audio: %s", path, sf_strerror(NULL));
    return audio_load_open(sf, info, path, mono, out, e);
}

// libsndfile virtual I/O over a read-only memory buffer.
typedef struct {
    const unsigned char *data;
    sf_count_t size, pos;
} AudioMem;

static sf_count_t audio_mem_len(void *u) { return ((AudioMem *)u)->size; }

static sf_count_t audio_mem_seek(sf_count_t off, int whence, void *u) {
    AudioMem *m = u;
    sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? m->pos : m->size;
    if (off < -base || off > m->size - base) return -1;  // stays inside [0, size], no overflow
    m->pos = base + off;
    return m->pos;
}

static sf_count_t audio_mem_read(void *ptr, sf_count_t n, void *u) {
    AudioMem *m = u;
    if (n > m->size - m->pos) n = m->size - m->pos;
    if (n <= 0) return 0;
    memcpy(ptr, m->data + m->pos, (size_t)n);
    m->pos += n;
    return n;
}

static sf_count_t audio_mem_write(const void *ptr, sf_count_t n, void *u) { return 0; }

static sf_count_t audio_mem_tell(void *u) { return ((AudioMem *)u)->pos; }

int audio_decode(const void *data, size_t size, const char *name, AudioMono mono, Audio *out, Err *e) {
    memset(out, 0, sizeof *out);
    SF_VIRTUAL_IO io = {audio_mem_len, audio_mem_seek, audio_mem_read, audio_mem_write, audio_mem_tell};
    AudioMem m = {.data = data, .size = (sf_count_t)size, .pos = 0};
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *sf = sf_open_virtual(&io, SFM_READ, &info, &m);
    if (!sf) return err_set(e, "%s: cannot open audio: %s", name, sf_strerror(NULL));
    return audio_load_open(sf, info, name, mono, out, e);
}

void audio_free(Audio *a) {
    free(a->samples);
    memset(a, 0, sizeof *a);
}

float *audio_resample(const float *in, int64_t n, int rate_in, int rate_out, int64_t *n_out, Err *e) {
    if (rate_in <= 0 || rate_out <= 0 || n < 0) {
        err_set(e, "resample: bad arguments (n %lld, %d Hz -> %d Hz)", (long long)n, rate_in, rate_out);
        return NULL;
    }
    // ceil(n * rate_out / rate_in) in integers, as torchaudio's Resample sizes its output.
    int64_t m = (int64_t)(((__int128)n * rate_out + rate_in - 1) / rate_in);
    float *out = callocCheck((size_t)(m > 0 ? m : 1), sizeof(float));
    *n_out = m;
    if (rate_in == rate_out) {
        if (n > 0) memcpy(out, in, (size_t)n * sizeof(float));
        return out;
    }
    if (n == 0) return out;
    // High quality (20-bit, linear phase: the output is not shifted in time); one thread so the result
    // never depends on the machine's core count.
    soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
    soxr_runtime_spec_t rt = soxr_runtime_spec(1);
    soxr_error_t err = NULL;
    soxr_t sx = soxr_create(rate_in, rate_out, 1, &err, &io, &q, &rt);
    // Fed in blocks: handing soxr the whole clip at once makes its input FIFO grow by realloc+memmove,
    // which costs ten times the filtering itself on long clips.
    int64_t pos = 0, done = 0;
    while (!err && pos < n && done < m) {
        size_t idone = 0, odone = 0;
        size_t chunk = (size_t)(n - pos < AUDIO_READ_BLOCK ? n - pos : AUDIO_READ_BLOCK);
        err = soxr_process(sx, in + pos, chunk, &idone, out + done, (size_t)(m - done), &odone);
        if (idone == 0 && odone == 0) break;
        pos += (int64_t)idone;
        done += (int64_t)odone;
    }
    while (!err && done < m) {  // flush the filter's tail
        size_t odone = 0;
        err = soxr_process(sx, NULL, 0, NULL, out + done, (size_t)(m - done), &odone);
        if (odone == 0) break;
        done += (int64_t)odone;
    }
    if (sx) soxr_delete(sx);
    if (err) {
        free(out);
        err_set(e, "resample %d Hz -> %d Hz: %s", rate_in, rate_out, soxr_strerror(err));
        return NULL;
    }
    // soxr may stop a sample short of the ceil length; the missing tail (past the input's end) stays 0.
    return out;
}

int audio_write(const char *path, int sf_format, const float *x, int64_t frames, int channels, int rate,
                Err *e) {
    SF_INFO info;
    memset(&info, 0, sizeof info);
    info.samplerate = rate;
    info.channels = channels;
    info.format = sf_format;
    if (frames < 0 || channels <= 0 || rate <= 0 || !sf_format_check(&info))
        return err_set(e, "%s: cannot write audio: bad format 0x%x, %d channels, %d Hz, %lld frames", path,
                       sf_format, channels, rate, (long long)frames);
    AtomicFile af;
    if (atomic_open(&af, path, e) != 0) return -1;
    SNDFILE *sf = sf_open_fd(fileno(af.f), SFM_WRITE, &info, 0);
    if (!sf) {
        atomic_abort(&af);
        return err_set(e, "%s: cannot write audio: %s", path, sf_strerror(NULL));
    }
    sf_command(sf, SFC_SET_CLIPPING, NULL, SF_TRUE);  // out-of-range samples clip rather than wrap
    sf_count_t put = sf_writef_float(sf, x, frames);
    int bad = put != frames;
    char why[256];
    snprintf(why, sizeof why, "%s", sf_strerror(sf));
    if (sf_close(sf) != 0) bad = 1;
    if (bad) {
        atomic_abort(&af);
        return err_set(e, "%s: cannot write audio: %s", path, why);
    }
    return atomic_commit(&af, e);
}

int audio_write_wav(const char *path, const float *x, int64_t frames, int channels, int rate,
                    AudioWavSample sample, Err *e) {
    int sub = sample == AUDIO_WAV_FLOAT ? SF_FORMAT_FLOAT : SF_FORMAT_PCM_16;
    return audio_write(path, SF_FORMAT_WAV | sub, x, frames, channels, rate, e);
}

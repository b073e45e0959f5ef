// Tests of aqa-prep (argv[1]; the ffmpeg command line, argv[2], makes the test media):
// avqa: mp4 (AAC stereo 44.1 kHz), mkv (FLAC 48 kHz), webm (Opus, in a sub-folder) and a wav found by
// its R1-AQA name are converted to 16 kHz mono at the right pitch; a video without audio, a truncated
// mp4, a garbage file and a clip without any file are left out and listed with their question counts;
// a malformed record is left out; a clip named in R1-AQA's short form is the same clip; the JSONL is the seed format (field order, dataset_name, absolute
// audio_path) and loads as R1-AQA data; a second run skips finished wavs and redoes a deleted one,
// removing a killed run's temporary file. mmau: counts ok/missing/undecodable audio of real test-mini
// items and names the version.
#include "test.h"
#include "audio/audio.h"
#include "data/dataset.h"
#include "util/fileio.h"

#include <sys/stat.h>
#include <unistd.h>

static const char *prep_exe, *ffmpeg_exe;
static char dir[4096], media[4200], out[4200];

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// A clip of `secs` seconds: a test-pattern video (unless video is NULL) and a sine of hz (unless hz 0).
static void make_clip(const char *name, const char *video, int hz, int rate, int channels, const char *acodec,
                      double secs) {
    char in_v[256] = "", in_a[256] = "", codecs[256] = "";
    if (video) snprintf(in_v, sizeof in_v, "-f lavfi -i testsrc=size=32x32:rate=10:duration=%g", secs);
    if (hz) snprintf(in_a, sizeof in_a, "-f lavfi -i sine=frequency=%d:sample_rate=%d:duration=%g -ac %d", hz, rate, secs, channels);
    snprintf(codecs, sizeof codecs, "%s%s %s%s", video ? "-c:v " : "", video ? video : "", hz ? "-c:a " : "",
             hz ? acodec : "");
    CHECKF(sh("'%s' -nostdin -loglevel error -y %s %s %s '%s/%s'", ffmpeg_exe, in_v, in_a, codecs, media, name) == 0,
           "ffmpeg could not make %s", name);
}

static const char *QA =
    "[{\"id\": 1, \"video_name\": \"clipA_000030\", \"video_id\": 11, \"question_text\": \"What is in the video?\","
    " \"multi_choice\": [\"a\", \"b\", \"c\", \"d\"], \"answer\": 2, \"question_relation\": \"Both\", \"question_type\": \"Which\"},\n"
    " {\"id\": 2, \"video_name\": \"clipA_000030\", \"video_id\": 11, \"question_text\": \"Caf\\u00e9 \\\"video\\\"?\","
    " \"multi_choice\": [\"x\", \"y\"], \"answer\": 0, \"question_relation\": \"View\", \"question_type\": \"Come From\"},\n"
    " {\"id\": 3, \"video_name\": \"clipB_000000\", \"video_id\": 12, \"question_text\": \"q3\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 1},\n"
    " {\"id\": 4, \"video_name\": \"clipC_000007\", \"video_id\": 13, \"question_text\": \"q4\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 1},\n"
    " {\"id\": 5, \"video_name\": \"clipD_000010\", \"video_id\": 14, \"question_text\": \"q5\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 0},\n"
    " {\"id\": 6, \"video_name\": \"clipE_000001\", \"video_id\": 15, \"question_text\": \"q6\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 0},\n"
    " {\"id\": 7, \"video_name\": \"clipF_000002\", \"video_id\": 16, \"question_text\": \"q7\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 0},\n"
    " {\"id\": 8, \"video_name\": \"clipG_000003\", \"video_id\": 17, \"question_text\": \"q8\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 0},\n"
    " {\"id\": 9, \"video_name\": \"clipH_000004\", \"video_id\": 18, \"question_text\": \"q9\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 0},\n"
    " {\"id\": 10, \"video_name\": \"clipH_000004\", \"video_id\": 18, \"question_text\": \"q10\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 1},\n"
    " {\"id\": 11, \"video_name\": \"clipA_000030\", \"question_text\": \"bad\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 2},\n"
    " {\"id\": 12, \"video_name\": \"clipA_30\", \"question_text\": \"q12\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 1}]\n";

// Zero crossings per second / 2: the frequency of a pure tone.
static double tone_hz(const Audio *a) {
    int64_t z = 0;
    for (int64_t i = 1; i < a->n; i++) z += (a->samples[i - 1] < 0) != (a->samples[i] < 0);
    return z / 2.0 / ((double)a->n / 16000.0);
}

// A converted wav is 16 kHz mono, as long as its source (AAC may add up to one 1024-sample frame
// at 44.1 kHz, 23 ms: a 5% tolerance on 0.5-1 s), at the source's pitch (a wrong resampling ratio
// shifts it by the ratio, >= 8%; 3% allows the crossings lost at the ends).
static void check_wav(const char *name, double secs, double hz) {
    char p[8300];
    snprintf(p, sizeof p, "%s/wav/%s", out, name);
    Audio a;
    Err e;
    int loaded = audio_load(p, AUDIO_MONO_FIRST, &a, &e) == 0;
    CHECKF(loaded, "%s", e.msg);
    if (!loaded) return;
    CHECK_INT(a.rate_in, 16000);
    CHECK_INT(a.channels_in, 1);
    CHECK_NEAR(a.n / 16000.0, secs, 0.05 * secs);
    CHECK_NEAR(tone_hz(&a), hz, 0.03 * hz);
    float peak = 0;
    for (int64_t i = 0; i < a.n; i++) peak = fabsf(a.samples[i]) > peak ? fabsf(a.samples[i]) : peak;
    CHECKF(peak > 0.05f && peak < 1.0f, "%s: peak %g", name, peak);  // lavfi's sine has amplitude 1/8
    audio_free(&a);
}

static int run_prep(char *log, size_t cap, const char *extra) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "'%s' avqa --qa '%s/train_qa.json' --media '%s' --out '%s' %s 2>&1", prep_exe, dir,
             media, out, extra);
    return test_run_cmd(cmd, log, cap);
}

static void test_avqa(void) {
    snprintf(dir, sizeof dir, "%s", TMP_PATH("prep"));
    snprintf(media, sizeof media, "%s/media", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    CHECK(sh("rm -rf '%s' && mkdir -p '%s/sub'", dir, media) == 0);
    make_clip("clipA_000030.mp4", "mpeg4", 440, 44100, 2, "aac", 1.0);
    make_clip("clipB_000000.mkv", "mpeg4", 1000, 48000, 1, "flac", 0.5);
    make_clip("sub/clipC_000007.webm", "libvpx", 300, 48000, 2, "libopus", 0.5);
    make_clip("clipD_10.wav", NULL, 700, 22050, 1, "pcm_s16le", 0.5);
    make_clip("clipE_000001.mp4", "mpeg4", 0, 0, 0, "", 0.5);
    CHECK(sh("head -c 3000 '%s/clipA_000030.mp4' > '%s/clipF_000002.mp4'", media, media) == 0);
    CHECK(sh("head -c 5000 /dev/urandom > '%s/clipG_000003.mkv'", media) == 0);
    char p[8300];
    Err e;
    snprintf(p, sizeof p, "%s/train_qa.json", dir);
    CHECK(file_write_atomic(p, QA, strlen(QA), &e) == 0);

    static char log[65536];
    CHECKF(run_prep(log, sizeof log, "--threads 3") == 0, "%s", log);
    CHECKF(strstr(log, "questions: 12 in") && strstr(log, "6 written to") && strstr(log, "6 left out (1 malformed)"), "%s", log);
    CHECKF(strstr(log, "clips: 8, 4 converted now, 0 already done, 1 missing, 3 undecodable"), "%s", log);
    check_wav("clipA_30.wav", 1.0, 440);
    check_wav("clipB_0.wav", 0.5, 1000);
    check_wav("clipC_7.wav", 0.5, 300);
    check_wav("clipD_10.wav", 0.5, 700);

    // The JSONL: the seed format, line for line, and R1-AQA data for the project's loader.
    snprintf(p, sizeof p, "%s/train.jsonl", out);
    char *jsonl = file_read_all(p, NULL, &e), abs_out[4096], want[16384];
    CHECK(realpath(out, abs_out) != NULL);
    snprintf(want, sizeof want,
             "{\"id\": 1, \"video_name\": \"clipA_000030\", \"video_id\": 11, \"question_text\": \"What is in the video?\", "
             "\"multi_choice\": [\"a\", \"b\", \"c\", \"d\"], \"answer\": 2, \"question_relation\": \"Both\", "
             "\"question_type\": \"Which\", \"dataset_name\": \"AVQA\", \"audio_path\": \"%s/wav/clipA_30.wav\"}\n"
             "{\"id\": 2, \"video_name\": \"clipA_000030\", \"video_id\": 11, \"question_text\": \"Caf\xc3\xa9 \\\"video\\\"?\", "
             "\"multi_choice\": [\"x\", \"y\"], \"answer\": 0, \"question_relation\": \"View\", \"question_type\": \"Come From\", "
             "\"dataset_name\": \"AVQA\", \"audio_path\": \"%s/wav/clipA_30.wav\"}\n",
             abs_out, abs_out);
    CHECKF(jsonl && strncmp(jsonl, want, strlen(want)) == 0, "got:\n%s\nwant (first 2 lines):\n%s", jsonl, want);
    free(jsonl);
    Dataset ds;
    int loaded = dataset_load(&ds, p, NULL, &e) == 0;
    CHECKF(loaded, "%s", e.msg);
    if (loaded) {
        CHECK_INT(ds.n, 6);
        CHECK_INT(ds.n_bad, 0);
        CHECK_STR(ds.q[4].id, "5");
        CHECK_STR(ds.q[4].dataset, "AVQA");
        CHECK(path_exists(ds.q[4].audio_path));
        CHECK_STR(ds.q[5].audio_path, ds.q[0].audio_path);  // "clipA_30" is clipA_000030's clip
        dataset_free(&ds);
    }
    // The excluded list: every left-out clip with its question count and reason, and the bad record.
    snprintf(p, sizeof p, "%s/excluded.tsv", out);
    char *tsv = file_read_all(p, NULL, &e);
    CHECKF(tsv && strstr(tsv, "item 10\t1\t\"answer\""), "%s", tsv);
    CHECKF(tsv && strstr(tsv, "clipE_000001\t1\t") && strstr(tsv, "no audio stream"), "%s", tsv);
    CHECKF(tsv && strstr(tsv, "clipF_000002\t1\t"), "%s", tsv);
    CHECKF(tsv && strstr(tsv, "clipG_000003\t1\t"), "%s", tsv);
    CHECKF(tsv && strstr(tsv, "clipH_000004\t2\tno media file"), "%s", tsv);
    free(tsv);

    // Resume: finished wavs are kept as they are; a deleted one is made again; a killed run's temporary
    // file is removed and never taken for a finished wav.
    struct stat a1, a2;
    snprintf(p, sizeof p, "%s/wav/clipA_30.wav", out);
    CHECK(stat(p, &a1) == 0);
    CHECK(sh("rm '%s/wav/clipB_0.wav' && echo partial > '%s/wav/clipC_7.wav.tmp.99999'", out, out) == 0);
    sleep(1);  // a rewrite would change the modification time
    CHECKF(run_prep(log, sizeof log, "--threads 2") == 0, "%s", log);
    CHECKF(strstr(log, "clips: 8, 1 converted now, 3 already done, 1 missing, 3 undecodable"), "%s", log);
    CHECK(stat(p, &a2) == 0 && a1.st_mtime == a2.st_mtime && a1.st_ino == a2.st_ino);
    check_wav("clipB_0.wav", 0.5, 1000);
    snprintf(p, sizeof p, "%s/wav/clipC_7.wav.tmp.99999", out);
    CHECK(!path_exists(p));

    // Bad use: a file that is not an AVQA array, a missing option.
    snprintf(p, sizeof p, "%s/not_array.json", dir);
    CHECK(file_write_atomic(p, "{\"id\": 1}", 9, &e) == 0);
    static char cmd[32768];
    snprintf(cmd, sizeof cmd, "'%s' avqa --qa '%s' --media '%s' --out '%s/o2' 2>&1", prep_exe, p, media, dir);
    CHECKF(test_run_cmd(cmd, log, sizeof log) == 1 && strstr(log, "not a JSON array"), "%s", log);
    snprintf(cmd, sizeof cmd, "'%s' avqa --qa x 2>&1", prep_exe);
    CHECKF(test_run_cmd(cmd, log, sizeof log) == 2, "%s", log);
}

// Real test-mini items (the fixtures of both versions), audio named as MMAU names it: one missing, one
// that is not audio.
static void test_mmau(void) {
    static const char *fixtures[] = {"tests/fixtures/mmau/test-mini-original-8.json",
                                     "tests/fixtures/mmau/test-mini-v05.15.25-8.json"};
    static const char *version[] = {"MMAU version: original test-mini", "MMAU version: MMAU-v05.15.25"};
    for (int v = 0; v < 2; v++) {
        char adir[4200], cmd[16384];
        static char log[65536];
        snprintf(adir, sizeof adir, "%s/mmau%d", dir, v);
        CHECK(sh("rm -rf '%s' && mkdir -p '%s/test-mini-audios'", adir, adir) == 0);
        Dataset ds;
        Err e;
        DataOptions o = data_options_default();
        o.audio_dir = adir;
        int loaded = dataset_load(&ds, SRC_PATH(fixtures[v]), &o, &e) == 0;
        CHECKF(loaded, "%s", e.msg);
        if (!loaded) continue;
        CHECK_INT(ds.n, 8);
        for (int64_t i = 0; i < ds.n; i++) {
            if (i == 2) continue;  // missing
            if (i == 5) CHECK(sh("echo not audio > '%s'", ds.q[i].audio_path) == 0);
            else CHECK(sh("cp '%s/wav/clipA_30.wav' '%s'", out, ds.q[i].audio_path) == 0);
        }
        dataset_free(&ds);
        snprintf(cmd, sizeof cmd, "'%s' mmau --json '%s' --audio '%s' 2>&1", prep_exe, SRC_PATH(fixtures[v]), adir);
        CHECKF(test_run_cmd(cmd, log, sizeof log) == 1, "%s", log);  // not ready: two items lack audio
        CHECKF(strstr(log, "items: 8 (malformed, left out: 0)") && strstr(log, "audio: 6 ok, 1 missing, 1 undecodable"),
               "%s", log);
        CHECKF(strstr(log, "durations: 1.0"), "%s", log);  // the 1 s clip (AAC: +23 ms, see check_wav)
        CHECKF(strstr(log, version[v]), "%s", log);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: test_prep PATH/TO/aqa-prep PATH/TO/ffmpeg\n");
        return 2;
    }
    prep_exe = argv[1];
    ffmpeg_exe = argv[2];
    RUN(test_avqa);
    RUN(test_mmau);
    return test_summary("test_prep");
}

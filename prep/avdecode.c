#include "avdecode.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>
#include <stdlib.h>

// The decoding state of one file; avdec_close releases whatever was opened.
typedef struct {
    AVFormatContext *fmt;
    AVCodecContext *dec;
    SwrContext *swr;
    AVPacket *pkt;
    AVFrame *frame;
    int stream;
    float *out;  // [n], capacity cap
    int64_t n, cap;
} AvDec;

static void avdec_close(AvDec *d) {
    av_frame_free(&d->frame);
    av_packet_free(&d->pkt);
    swr_free(&d->swr);
    avcodec_free_context(&d->dec);
    avformat_close_input(&d->fmt);
}

static int av_fail(Err *e, const char *path, const char *what, int averr) {
    char buf[AV_ERROR_MAX_STRING_SIZE];
    av_strerror(averr, buf, sizeof buf);
    return err_set(e, "%s: %s: %s", path, what, buf);
}

static int avdec_open(AvDec *d, const char *path, Err *e) {
    int rc = avformat_open_input(&d->fmt, path, NULL, NULL);
    if (rc < 0) return av_fail(e, path, "cannot open", rc);
    if ((rc = avformat_find_stream_info(d->fmt, NULL)) < 0) return av_fail(e, path, "cannot read stream info", rc);
    const AVCodec *codec = NULL;
    d->stream = av_find_best_stream(d->fmt, AVMEDIA_TYPE_AUDIO, -1, -1, &codec, 0);
    if (d->stream == AVERROR_STREAM_NOT_FOUND) return err_set(e, "%s: no audio stream", path);
    if (d->stream < 0) return av_fail(e, path, "no decodable audio stream", d->stream);
    d->dec = avcodec_alloc_context3(codec);
    if (!d->dec) fatal("avcodec_alloc_context3: out of memory");
    if ((rc = avcodec_parameters_to_context(d->dec, d->fmt->streams[d->stream]->codecpar)) < 0 ||
        (rc = avcodec_open2(d->dec, codec, NULL)) < 0)
        return av_fail(e, path, "cannot open the audio decoder", rc);
    d->pkt = av_packet_alloc();
    d->frame = av_frame_alloc();
    if (!d->pkt || !d->frame) fatal("av_packet_alloc/av_frame_alloc: out of memory");
    return 0;
}

// The resampler is made from the first decoded frame: its layout and rate are the true ones (a
// stream's parameters may leave the layout unspecified).
static int avdec_swr_init(AvDec *d, const AVFrame *f, const char *path, Err *e) {
    AVChannelLayout in = f->ch_layout, mono = AV_CHANNEL_LAYOUT_MONO;
    if (in.order == AV_CHANNEL_ORDER_UNSPEC) av_channel_layout_default(&in, in.nb_channels);
    int rc = swr_alloc_set_opts2(&d->swr, &mono, AV_SAMPLE_FMT_FLT, AUDIO_SAMPLE_RATE, &in, f->format, f->sample_rate, 0,
                                 NULL);
    if (rc < 0 || (rc = swr_init(d->swr)) < 0) return av_fail(e, path, "cannot set up resampling", rc);
    return 0;
}

// Appends the resampler's output for f (NULL: flush the samples it still holds).
static int avdec_convert(AvDec *d, const AVFrame *f, const char *path, Err *e) {
    int in_n = f ? f->nb_samples : 0;
    int64_t room = swr_get_out_samples(d->swr, in_n);
    if (room < 0) return av_fail(e, path, "resampling", (int)room);
    if (d->n + room > d->cap) {
        d->cap = 2 * (d->n + room) + 4096;
        d->out = reallocCheck(d->out, (size_t)d->cap * sizeof(float));
    }
    uint8_t *dst = (uint8_t *)(d->out + d->n);
    int got = swr_convert(d->swr, &dst, (int)room, f ? (const uint8_t **)f->extended_data : NULL, in_n);
    if (got < 0) return av_fail(e, path, "resampling", got);
    d->n += got;
    return 0;
}

// Takes every frame the decoder has ready.
static int avdec_drain(AvDec *d, const char *path, Err *e) {
    for (;;) {
        int rc = avcodec_receive_frame(d->dec, d->frame);
        if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return 0;
        if (rc < 0) return av_fail(e, path, "decoding", rc);
        if (!d->swr && avdec_swr_init(d, d->frame, path, e)) return -1;
        rc = avdec_convert(d, d->frame, path, e);
        av_frame_unref(d->frame);
        if (rc) return -1;
    }
}

static int avdec_run(AvDec *d, const char *path, Err *e) {
    if (avdec_open(d, path, e)) return -1;
    int rc;
    while ((rc = av_read_frame(d->fmt, d->pkt)) >= 0) {
        int sent = 0;
        if (d->pkt->stream_index == d->stream) sent = avcodec_send_packet(d->dec, d->pkt);
        av_packet_unref(d->pkt);
        if (sent < 0) return av_fail(e, path, "decoding", sent);
        if (avdec_drain(d, path, e)) return -1;
    }
    if (rc != AVERROR_EOF) return av_fail(e, path, "reading", rc);
    if ((rc = avcodec_send_packet(d->dec, NULL)) < 0) return av_fail(e, path, "decoding", rc);
    if (avdec_drain(d, path, e)) return -1;
    if (d->swr && avdec_convert(d, NULL, path, e)) return -1;
    if (d->n == 0) return err_set(e, "%s: no audio samples decoded", path);
    return 0;
}

int avdec_load(const char *path, float **out, int64_t *n, Err *e) {
    AvDec d = {0};
    int rc = avdec_run(&d, path, e);
    avdec_close(&d);
    if (rc) {
        free(d.out);
        *out = NULL, *n = 0;
        return -1;
    }
    *out = d.out, *n = d.n;
    return 0;
}

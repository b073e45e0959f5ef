// wshare.c: see wshare.h.
#include "comm/wshare.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/log.h"

#ifdef AQA_CUDA
#include "model/cuda/cuda_check.h"
_Static_assert(sizeof(cudaIpcMemHandle_t) <= sizeof(((WShareHandle *)0)->ipc), "IPC handle size");
#endif

#define WRITING ((uint64_t)1 << 15)
#define READERS ((uint64_t)WSHARE_MAX_READERS)

static int64_t word_version(uint64_t w) { return (int64_t)(w >> 16) - 1; }
static uint64_t word_make(int64_t version, int writing, uint64_t readers) {
    return (uint64_t)(version + 1) << 16 | (writing ? WRITING : 0) | readers;
}

int64_t wshare_version(WShareCtl *ctl, int *writing, int *readers) {
    uint64_t w = atomic_load(&ctl->word);
    if (writing) *writing = (w & WRITING) != 0;
    if (readers) *readers = (int)(w & READERS);
    return word_version(w);
}

int wshare_begin_update(WShareCtl *ctl, Err *e) {
    uint64_t w = atomic_load(&ctl->word);
    do {
        if (w & WRITING) return err_set(e, "shared weights: an update is already in progress");
        if (w & READERS)
            return err_set(e, "shared weights: version %lld is still held by %d rollout(s); the update must wait",
                           (long long)word_version(w), (int)(w & READERS));
    } while (!atomic_compare_exchange_weak(&ctl->word, &w, word_make(word_version(w), 1, 0)));
    return 0;
}

int wshare_publish(WShareCtl *ctl, int64_t version, Err *e) {
    if (version < 0 || version >= ((int64_t)1 << 47) - 1)
        return err_set(e, "shared weights: version %lld out of range", (long long)version);
    uint64_t w = atomic_load(&ctl->word);
    do {
        if (!(w & WRITING))
            return err_set(e, "shared weights: version %lld published without an update in progress (version %lld "
                              "is published)",
                           (long long)version, (long long)word_version(w));
    } while (!atomic_compare_exchange_weak(&ctl->word, &w, word_make(version, 0, 0)));
    return 0;
}

int wshare_acquire(WShareCtl *ctl, int64_t version, Err *e) {
    uint64_t w = atomic_load(&ctl->word);
    do {
        int64_t have = word_version(w);
        if (w & WRITING)
            return err_set(e, "shared weights: version %lld asked for while the learner is updating them (mid-update "
                              "read refused)",
                           (long long)version);
        if (have != version)
            return err_set(e, "shared weights: version %lld asked for, version %lld is published (%s read refused)",
                           (long long)version, (long long)have, have < version ? "stale" : "newer");
        if ((w & READERS) == READERS) return err_set(e, "shared weights: %d readers already", WSHARE_MAX_READERS);
    } while (!atomic_compare_exchange_weak(&ctl->word, &w, w + 1));
    return 0;
}

int wshare_release(WShareCtl *ctl, int64_t version, Err *e) {
    uint64_t w = atomic_load(&ctl->word);
    do {
        // A reader holds the weights: no update can have started, so the version must still be its own.
        if ((w & WRITING) || word_version(w) != version || !(w & READERS))
            return err_set(e, "shared weights: release of version %lld, which is not held (version %lld, %s, %d "
                              "readers)",
                           (long long)version, (long long)word_version(w), (w & WRITING) ? "writing" : "published",
                           (int)(w & READERS));
    } while (!atomic_compare_exchange_weak(&ctl->word, &w, w - 1));
    return 0;
}

// The control page's size: the CPU parameters start one page in, so they can be mapped on their own.
static size_t page_bytes(void) { return (size_t)sysconf(_SC_PAGESIZE); }

#define WSHARE_PREFIX "aqa-weights-"  // segment names: /aqa-weights-<learner pid>-<tag>

// Removes the segments of learners that no longer exist. A learner unlinks its segment once the rollout
// has mapped it; a job killed before that point leaves the name in /dev/shm (where glibc's shm_open
// keeps them), and the next job on the node clears it. A pid reused by another process keeps its
// segment: only a certainly dead owner's is removed.
static void wshare_reap_dead(void) {
    DIR *d = opendir("/dev/shm");
    if (!d) return;
    struct dirent *ent;
    while ((ent = readdir(d))) {
        if (strncmp(ent->d_name, WSHARE_PREFIX, strlen(WSHARE_PREFIX)) != 0) continue;
        char *end;
        long pid = strtol(ent->d_name + strlen(WSHARE_PREFIX), &end, 10);
        if (pid <= 0 || *end != '-' || !(kill((pid_t)pid, 0) == -1 && errno == ESRCH)) continue;
        char name[sizeof ent->d_name + 1];
        snprintf(name, sizeof name, "/%s", ent->d_name);
        if (shm_unlink(name) == 0)
            log_warn("shared weights: removed %s, left by learner process %ld, which no longer exists", name, pid);
    }
    closedir(d);
}

int wshare_create(WShare *s, size_t bytes, void *device_params, const char *tag, WShareHandle *h, Err *e) {
    memset(s, 0, sizeof *s);
    memset(h, 0, sizeof *h);
    s->owner = 1, s->bytes = bytes, s->cuda = device_params != NULL;
    wshare_reap_dead();
    snprintf(s->name, sizeof s->name, "/" WSHARE_PREFIX "%ld-%s", (long)getpid(), tag);
    s->map_bytes = page_bytes() + (s->cuda ? 0 : bytes);
    int fd = shm_open(s->name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) return err_set(e, "shared weights: shm_open %s: %s", s->name, strerror(errno));
    // Reserved now: tmpfs past its size would only fail at the first touch of a page, with SIGBUS.
    int rc = posix_fallocate(fd, 0, (off_t)s->map_bytes);
    if (rc != 0) {
        err_set(e, "shared weights: %s: %zu bytes: %s (the parameters live in /dev/shm: is it large enough?)",
                s->name, s->map_bytes, strerror(rc));
        close(fd);
        shm_unlink(s->name);
        return -1;
    }
    s->map = mmap(NULL, s->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (s->map == MAP_FAILED) {
        err_set(e, "shared weights: mmap %s (%zu bytes): %s", s->name, s->map_bytes, strerror(errno));
        shm_unlink(s->name);
        return -1;
    }
    s->ctl = s->map;
    atomic_init(&s->ctl->word, word_make(-1, 1, 0));  // writing: the learner fills it before version 0
    s->params = s->cuda ? device_params : (char *)s->map + page_bytes();
    *h = (WShareHandle){.magic = WSHARE_MAGIC, .cuda = s->cuda, .bytes = bytes};
    snprintf(h->name, sizeof h->name, "%s", s->name);
#ifdef AQA_CUDA
    if (s->cuda) {
        int dev;
        cudaIpcMemHandle_t ipc;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetPCIBusId(h->gpu, sizeof h->gpu, dev));
        CUDA_CHECK(cudaIpcGetMemHandle(&ipc, device_params));
        memcpy(h->ipc, &ipc, sizeof ipc);
    }
#else
    if (s->cuda) fatal("wshare_create: device parameters in a build without CUDA");
#endif
    return 0;
}

int wshare_open(WShare *s, const WShareHandle *h, Err *e) {
    memset(s, 0, sizeof *s);
    if (h->magic != WSHARE_MAGIC || !memchr(h->name, 0, sizeof h->name))
        return err_set(e, "shared weights: bad handle from the learner (magic %#x)", h->magic);
    s->bytes = h->bytes, s->cuda = h->cuda;
    snprintf(s->name, sizeof s->name, "%s", h->name);
    int fd = shm_open(h->name, O_RDWR, 0);
    if (fd < 0) return err_set(e, "shared weights: shm_open %s: %s (the learner's node?)", h->name, strerror(errno));
    s->map_bytes = page_bytes();
    s->map = mmap(NULL, s->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    // The parameters read-only: a rollout that wrote into the learner's weights would crash, not corrupt.
    if (s->map != MAP_FAILED && !s->cuda)
        s->ro = mmap(NULL, s->bytes, PROT_READ, MAP_SHARED, fd, (off_t)page_bytes());
    close(fd);
    if (s->map == MAP_FAILED || s->ro == MAP_FAILED) {
        err_set(e, "shared weights: mmap %s: %s", h->name, strerror(errno));
        if (s->map != MAP_FAILED) munmap(s->map, s->map_bytes);
        memset(s, 0, sizeof *s);
        return -1;
    }
    s->ctl = s->map;
    s->params = s->ro;
#ifdef AQA_CUDA
    if (s->cuda) {
        char gpu[sizeof h->gpu];
        int dev;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetPCIBusId(gpu, sizeof gpu, dev));
        if (strcmp(gpu, h->gpu) != 0) {
            err_set(e, "shared weights: this rank's GPU is %s, its learner's %s: colocated pairs share one GPU "
                       "(launch/gpu-bind.sh --pairs N)",
                    gpu, h->gpu);
            wshare_close(s);
            return -1;
        }
        cudaIpcMemHandle_t ipc;
        memcpy(&ipc, h->ipc, sizeof ipc);
        CUDA_CHECK(cudaIpcOpenMemHandle(&s->params, ipc, cudaIpcMemLazyEnablePeerAccess));
    }
#else
    if (s->cuda) {
        wshare_close(s);
        return err_set(e, "shared weights: the learner's are in GPU memory, and this build has no CUDA");
    }
#endif
    return 0;
}

void wshare_unlink(WShare *s) {
    if (s->owner && s->name[0]) shm_unlink(s->name);
    s->name[0] = 0;
}

void wshare_close(WShare *s) {
#ifdef AQA_CUDA
    if (s->cuda && !s->owner && s->params) CUDA_CHECK(cudaIpcCloseMemHandle(s->params));
#endif
    if (s->ro) munmap(s->ro, s->bytes);
    if (s->map) munmap(s->map, s->map_bytes);
    wshare_unlink(s);
    memset(s, 0, sizeof *s);
}

void wshare_stream_sync(void *stream) {
#ifdef AQA_CUDA
    if (stream) CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)stream));
#else
    (void)stream;
#endif
}

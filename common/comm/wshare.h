// wshare.h: the colocated placement's weights (train.placement=colocated): one parameter buffer that
// learner k writes and rollout k (same node, same GPU) reads in place, and the versioned handshake that
// keeps the two apart. No second copy of the policy exists and nothing is transferred per step.
//   memory   CPU backend: a POSIX shared-memory segment [control page | parameters], which the rollout
//            maps with the parameters read-only. CUDA backend: the learner's device allocation of the
//            parameters (cudaIpcGetMemHandle), opened by the rollout (cudaIpcOpenMemHandle); the control
//            page is a shared-memory segment of its own. The handle (WShareHandle) goes over MPI once.
//   protocol one 64-bit word in the control page: the published version, a writing flag and the number
//            of readers, changed only by compare-and-swap, so each transition checks its precondition
//            atomically against the other process:
//              learner  wshare_begin_update  published, no reader      -> writing (refused while held)
//                       wshare_publish(v)    writing                   -> published v
//              rollout  wshare_acquire(v)    published v               -> one more reader (refused while
//                                                                         writing, or for another version)
//                       wshare_release(v)    holding v                 -> one reader less
//            A new segment starts "writing, nothing published": the learner loads (or resumes) into it
//            first. The blocking waits (a rollout for a publish, the learner for a release) are MPI
//            messages between the pair (comm/weights.c); this word is what makes a read of weights
//            mid-update or of another version an error instead of a silent use.
#pragma once
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "util/check.h"

// The word: (version + 1) << 16 | writing << 15 | readers (version + 1 = 0: nothing published yet).
typedef struct {
    _Atomic uint64_t word;
} WShareCtl;

#define WSHARE_MAX_READERS 0x7fff

int wshare_begin_update(WShareCtl *ctl, Err *e);
int wshare_publish(WShareCtl *ctl, int64_t version, Err *e);
int wshare_acquire(WShareCtl *ctl, int64_t version, Err *e);
int wshare_release(WShareCtl *ctl, int64_t version, Err *e);
// The published version (-1: none) and whether an update is in progress, for messages and tests.
int64_t wshare_version(WShareCtl *ctl, int *writing, int *readers);

// What the learner sends its rollout once (fixed layout, same build on both sides of one node).
#define WSHARE_MAGIC 0x48535741u  // "AWSH"
typedef struct {
    uint32_t magic;
    int32_t cuda;         // parameters in device memory (ipc valid)
    uint64_t bytes;       // size of the parameter buffer
    int32_t node_id;      // the learner's node (Comm.node_id)
    char host[64];        // the learner's host name, for messages
    char name[64];        // the shared-memory segment
    char gpu[32];         // PCI bus id of the learner's GPU ("" on the CPU)
    unsigned char ipc[64];  // cudaIpcMemHandle_t of the parameters
} WShareHandle;

typedef struct WShare {
    WShareCtl *ctl;
    void *params;     // [bytes]: the learner's (writable); the rollout's mapping (read-only on the CPU)
    size_t bytes;
    int cuda, owner;  // owner: created it (learner), else opened it (rollout)
    char name[64];    // the segment while it has a name ("" after wshare_unlink)
    void *map;        // the control page (and, on the CPU, the learner's whole segment)
    size_t map_bytes;
    void *ro;         // the rollout's read-only mapping of the CPU parameters
} WShare;

// Learner: a new segment named after tag (unique per process and pair). device_params NULL: the CPU
// backend, parameters in the segment (s->params, zero-filled); else a cudaMalloc'ed buffer of the
// current device that is exported. Fills h (node_id and host are the caller's).
// First removes the segments left in /dev/shm by learners of this node that no longer exist.
int wshare_create(WShare *s, size_t bytes, void *device_params, const char *tag, WShareHandle *h, Err *e);
// Rollout: maps the segment of h and the parameters (CUDA: on the current device, which must be h->gpu).
int wshare_open(WShare *s, const WShareHandle *h, Err *e);
// Learner, once the rollout has opened it: removes the segment's name (the mappings stay), so a job
// that dies leaves nothing in /dev/shm.
void wshare_unlink(WShare *s);
// Unmaps / closes (the rollout's IPC mapping) and, for the learner, unlinks. The device buffer of a
// CUDA learner stays: it is the model's.
void wshare_close(WShare *s);
// Blocks until the work on stream (a cudaStream_t; NULL: the CPU, nothing to wait for) has finished: the
// optimizer's writes before a publish, the rollout's reads before a release.
void wshare_stream_sync(void *stream);

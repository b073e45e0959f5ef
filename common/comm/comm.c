// comm.c: MPI role split, group routing, versioned bucketed weight broadcast, failure policy.
#include "comm.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Identity for comm_abort, which may be called from anywhere after comm_init.
static Role abort_role;
static int abort_world_rank = -1, abort_role_rank = -1;

const char *role_name(Role r) { return r == ROLE_LEARNER ? "learner" : "rollout"; }

void comm_abort_at(const char *file, int line, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "fatal: %s rank %d (world %d): %s:%d: %s\n", role_name(abort_role), abort_role_rank,
            abort_world_rank, file, line, msg);
    fflush(stderr);
    int init = 0;
    MPI_Initialized(&init);
    if (init) MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

int comm_mpi_err(int rc, const char *what, Err *e) {
    char s[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(rc, s, &n) != MPI_SUCCESS) snprintf(s, sizeof s, "MPI error code %d", rc);
    return err_set(e, "%s: %s", what, s);
}

Comm comm_init(int *argc, char ***argv, Role role) {
    int init = 0;
    MPI_Initialized(&init);
    if (!init) {
        int provided;
        // FUNNELED: OpenMP threads compute, only the main thread calls MPI.
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) fatal("MPI_Init_thread failed");
    }
    Comm c = {.role = role, .bucket_elems = COMM_DEFAULT_BUCKET_ELEMS};
    abort_role = role;
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &c.world_rank));
    abort_world_rank = c.world_rank;
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &c.world_size));
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &c.world));  // inherits MPI_ERRORS_RETURN
    MPI_CHECK(MPI_Comm_split(c.world, (int)role, c.world_rank, &c.role_comm));
    MPI_CHECK(MPI_Comm_rank(c.role_comm, &c.role_rank));
    MPI_CHECK(MPI_Comm_size(c.role_comm, &c.role_size));
    abort_role_rank = c.role_rank;
    // Everyone learns everyone's (role, role rank): the maps from role rank to world rank.
    int mine[2] = {(int)role, c.role_rank};
    int *all = mallocCheck(sizeof(int) * 2 * (size_t)c.world_size);
    MPI_CHECK(MPI_Allgather(mine, 2, MPI_INT, all, 2, MPI_INT, c.world));
    for (int r = 0; r < c.world_size; r++) {
        if (all[2 * r] != ROLE_LEARNER && all[2 * r] != ROLE_ROLLOUT) comm_abort("world rank %d announced role %d", r, all[2 * r]);
        if (all[2 * r] == ROLE_LEARNER) c.n_learners++;
        else c.n_rollouts++;
    }
    if (c.n_learners == 0) comm_abort("no learner rank among %d processes (launch: mpirun -np L learner : -np R rollout)", c.world_size);
    c.learner_ranks = mallocCheck(sizeof(int) * (size_t)c.n_learners);
    c.rollout_ranks = mallocCheck(sizeof(int) * ((size_t)c.n_rollouts + 1));
    for (int r = 0; r < c.world_size; r++) {
        int *map = all[2 * r] == ROLE_LEARNER ? c.learner_ranks : c.rollout_ranks;
        map[all[2 * r + 1]] = r;  // role ranks follow world rank order (split key), so they are 0..n-1
    }
    free(all);
    // Where this rank sits on its node, for picking GPUs without a collective later (the roles may
    // decide on GPUs independently).
    MPI_Comm node;
    int node_size, node_rank;
    MPI_CHECK(MPI_Comm_split_type(c.world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_size(node, &node_size));
    MPI_CHECK(MPI_Comm_rank(node, &node_rank));
    int *roles = mallocCheck(sizeof(int) * (size_t)node_size);
    MPI_CHECK(MPI_Allgather(&mine[0], 1, MPI_INT, roles, 1, MPI_INT, node));
    MPI_CHECK(MPI_Allreduce(&c.world_rank, &c.node_id, 1, MPI_INT, MPI_MIN, node));
    MPI_CHECK(MPI_Comm_free(&node));
    for (int r = 0; r < node_size; r++) {
        c.node_learners += roles[r] == ROLE_LEARNER;
        c.node_index += r < node_rank && roles[r] == (int)role;
    }
    free(roles);
    // Broadcast group: the learner root first (key 0), then the rollouts in world order.
    int is_root = role == ROLE_LEARNER && c.role_rank == 0;
    int color = (is_root || role == ROLE_ROLLOUT) ? 1 : MPI_UNDEFINED;
    MPI_CHECK(MPI_Comm_split(c.world, color, is_root ? 0 : 1 + c.world_rank, &c.bcast_comm));
    return c;
}

void comm_finalize(Comm *c) {
    if (c->bcast_comm != MPI_COMM_NULL) MPI_CHECK(MPI_Comm_free(&c->bcast_comm));
    MPI_CHECK(MPI_Comm_free(&c->role_comm));
    MPI_CHECK(MPI_Comm_free(&c->world));
    free(c->learner_ranks);
    free(c->rollout_ranks);
    c->learner_ranks = c->rollout_ranks = NULL;
    MPI_Finalize();
}

int comm_node_gpu_index(const Comm *c, int learners_on_gpu) {
    return c->role == ROLE_LEARNER ? c->node_index : (learners_on_gpu ? c->node_learners : 0) + c->node_index;
}

// Pairs share a node, and role ranks follow world order on every node, so rollout k's index among its
// node's rollouts is learner k's among the learners.
int comm_node_pair_gpu_index(const Comm *c) { return c->node_index; }

int comm_learner_of(const Comm *c, int64_t slot) { return (int)(slot % c->n_learners); }

int comm_rollout_of(const Comm *c, int64_t slot) {
    if (c->n_rollouts == 0) comm_abort("slot %lld has no rollout rank to go to", (long long)slot);
    return (int)(slot % c->n_rollouts);
}

int comm_send_group(const Comm *c, const TrajGroup *g, Err *e) {
    uint8_t *buf;
    size_t n;
    if (msg_encode_group(g, &buf, &n, e)) return -1;
    if (n > INT_MAX) {
        free(buf);
        return err_set(e, "group of question %lld: %zu bytes exceed one MPI message", (long long)g->question, n);
    }
    int dest = c->learner_ranks[comm_learner_of(c, g->slot)];
    MPI_CHECK(MPI_Send(buf, (int)n, MPI_BYTE, dest, COMM_TAG_GROUP, c->world));
    free(buf);
    return 0;
}

// Role rank of world rank w among the rollouts (-1 if it is not one).
static int rollout_role_rank(const Comm *c, int w) {
    for (int i = 0; i < c->n_rollouts; i++)
        if (c->rollout_ranks[i] == w) return i;
    return -1;
}

int comm_recv_group(const Comm *c, TrajGroup *g, int *src_rollout, Err *e) {
    MPI_Status st;
    int n;
    MPI_CHECK(MPI_Probe(MPI_ANY_SOURCE, COMM_TAG_GROUP, c->world, &st));
    MPI_CHECK(MPI_Get_count(&st, MPI_BYTE, &n));
    uint8_t *buf = mallocCheck((size_t)n + 1);
    MPI_CHECK(MPI_Recv(buf, n, MPI_BYTE, st.MPI_SOURCE, COMM_TAG_GROUP, c->world, MPI_STATUS_IGNORE));
    int src = rollout_role_rank(c, st.MPI_SOURCE);
    if (src_rollout) *src_rollout = src;
    int rc = msg_decode_group(buf, (size_t)n, g, e);
    free(buf);
    if (rc) return err_prefix(e, "from world rank %d (rollout %d)", st.MPI_SOURCE, src);
    if (src < 0) {
        traj_group_free(g);
        return err_set(e, "group from world rank %d, which is not a rollout", st.MPI_SOURCE);
    }
    int owner = comm_learner_of(c, g->slot);
    if (c->role != ROLE_LEARNER || owner != c->role_rank) {
        int64_t q = g->question, slot = g->slot;
        traj_group_free(g);
        return err_set(e, "group of question %lld (slot %lld) from rollout %d belongs to learner %d, not to %s %d",
                       (long long)q, (long long)slot, src, owner, role_name(c->role), c->role_rank);
    }
    return 0;
}

// Broadcasts w in buckets over the bcast group; a receiver that must not take the data passes w = NULL
// and receives each bucket into scratch space.
static void bcast_buckets(const Comm *c, float *w, const WeightsInfo *info) {
    float *scratch = w ? NULL : mallocCheck(sizeof(float) * (size_t)info->bucket_elems);
    for (uint32_t b = 0; b < info->n_buckets; b++) {
        uint64_t off = (uint64_t)b * info->bucket_elems;
        uint64_t k = info->n_elems - off < info->bucket_elems ? info->n_elems - off : info->bucket_elems;
        MPI_CHECK(MPI_Bcast(w ? w + off : scratch, (int)k, MPI_FLOAT, 0, c->bcast_comm));
    }
    free(scratch);
}

int comm_weights_announce(const Comm *c, size_t n, int64_t version, WeightsInfo *info) {
    uint8_t ann[MSG_WEIGHTS_BYTES];
    int is_root = c->role == ROLE_LEARNER;
    if (is_root) {
        if (c->bucket_elems < 1 || c->bucket_elems > INT_MAX || (n + c->bucket_elems - 1) / c->bucket_elems > UINT32_MAX)
            comm_abort("weight bucket of %zu elements for %zu weights: not in [1, %d] or too many buckets", c->bucket_elems,
                       n, INT_MAX);
        msg_encode_weights(version, n, c->bucket_elems, ann);
    }
    MPI_CHECK(MPI_Bcast(ann, MSG_WEIGHTS_BYTES, MPI_BYTE, 0, c->bcast_comm));
    Err e;
    // Without a valid announcement nobody knows how many buckets follow: the job cannot continue.
    if (msg_decode_weights(ann, sizeof ann, info, &e)) comm_abort("weights announcement from the learner root: %s", e.msg);
    return is_root || (info->version == version && info->n_elems == n);
}

int comm_weights_refused(const WeightsInfo *info, size_t n, int64_t version, Err *e) {
    if (info->version != version)
        return err_set(e, "weights version %lld received, expected %lld (%s)", (long long)info->version, (long long)version,
                       info->version < version ? "stale" : "ahead");
    return err_set(e, "weights of %llu elements received for a buffer of %zu (version %lld)",
                   (unsigned long long)info->n_elems, n, (long long)info->version);
}

int64_t comm_next_step(const Comm *c, int64_t k) {
    if (c->bcast_comm == MPI_COMM_NULL) return k;
    MPI_CHECK(MPI_Bcast(&k, 1, MPI_INT64_T, 0, c->bcast_comm));
    return k;
}

int comm_bcast_weights(const Comm *c, float *w, size_t n, int64_t version, Err *e) {
    if (c->bcast_comm == MPI_COMM_NULL) return 0;
    WeightsInfo info;
    int ok = comm_weights_announce(c, n, version, &info);
    bcast_buckets(c, ok ? w : NULL, &info);
    return ok ? 0 : comm_weights_refused(&info, n, version, e);
}

static void allreduce_sum(const Comm *c, void *buf, size_t n, MPI_Datatype type, size_t elem_bytes) {
    // MPI counts are int: large buffers go in pieces.
    const size_t chunk = (size_t)1 << 30;
    for (size_t off = 0; off < n; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + off * elem_bytes, (int)k, type, MPI_SUM, c->role_comm));
    }
}

void comm_role_allreduce_sum_f32(const Comm *c, float *buf, size_t n) { allreduce_sum(c, buf, n, MPI_FLOAT, sizeof(float)); }

void comm_role_allreduce_sum_f64(const Comm *c, double *buf, size_t n) { allreduce_sum(c, buf, n, MPI_DOUBLE, sizeof(double)); }

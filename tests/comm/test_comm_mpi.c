// MPI test of common/comm, run under mpirun: the binary plays both roles by world rank (ranks below L
// are learners, the rest rollouts). Usage: test_comm_mpi L | test_comm_mpi abort.
// Checks the role split and rank maps, the node-local GPU index, slot routing, groups (and a failed group) sent and received intact, the bucketed
// weight broadcast with its version check (stale and wrong-size receivers detected, the job still in
// step afterwards), corrupt and misrouted messages rejected naming the sender, MPI errors returned
// (not fatal), and role all-reduce. "abort": a rollout calls comm_abort and the whole job must end.
#include "comm/comm.h"
#include "test.h"

// Slots 0..N_SLOTS-1 carry questions N_SLOTS-1-slot (so routing by question would go astray); the last
// slot is a failed group.
enum { N_SLOTS = 13, N_WEIGHTS = 1000 };

static Comm comm;
static int n_learners;

#define RUN_PHASE(call)                          \
    do {                                         \
        RUN(call);                               \
        MPI_CHECK(MPI_Barrier(comm.world));      \
    } while (0)

// The group rollouts produce for slot `slot` (deterministic, so the learner can rebuild and compare).
static void make_group(TrajGroup *g, int64_t slot) {
    int64_t q = N_SLOTS - 1 - slot;
    if (slot == N_SLOTS - 1) {
        traj_group_init_failed(g, q, slot, "audio/bad.wav", "audio/bad.wav: not an audio file");
        g->version = 5;
        g->time.data = 0.25;
        return;
    }
    int G = 2 + (int)(q % 3), len[4];
    for (int i = 0; i < G; i++) len[i] = 1 + (int)((q + i) % 5);
    traj_group_alloc(g, G, len, 3 + (int)q, 1, q % 2 == 0);
    g->question = q;
    g->slot = slot;
    g->version = 5;
    g->time = (TrajTimes){.data = 0.5, .prefill = 1.5 + (double)q, .decode = 0.5, .reward = 0.125, .reference = 1.0};
    for (int i = 0; i < g->n_prompt; i++) g->prompt_ids[i] = (int32_t)(100 * q + i);
    g->audio_samples = 16000 * (q + 1);
    char path[64];
    snprintf(path, sizeof path, "audio/%lld.wav", (long long)q);
    g->audio_path = strdupCheck(path);
    g->func_names[0] = strdupCheck("accuracy");
    for (int i = 0; i < G; i++) g->rewards[i] = g->func_rewards[i] = (float)((q + i) % 2);
    for (int t = 0; t < g->n_tokens; t++) {
        g->ids[t] = (int32_t)(7 * t + q);
        g->mask[t] = 1;
        g->sample_lp[t] = -0.5f * (float)t - (float)q;
        if (g->ref_lp) g->ref_lp[t] = -0.25f * (float)t;
    }
}

static int group_equal(const TrajGroup *a, const TrajGroup *b) {
    if (a->failed != b->failed || memcmp(&a->time, &b->time, sizeof a->time) || a->slot != b->slot) return 0;
    if (a->failed) return a->question == b->question && !strcmp(a->reason, b->reason) && !strcmp(a->audio_path, b->audio_path);
    if (a->question != b->question || a->version != b->version || a->G != b->G || a->n_prompt != b->n_prompt ||
        a->n_tokens != b->n_tokens || a->audio_samples != b->audio_samples || strcmp(a->audio_path, b->audio_path) ||
        strcmp(a->func_names[0], b->func_names[0]) || !a->ref_lp != !b->ref_lp)
        return 0;
    size_t T = (size_t)a->n_tokens;
    return !memcmp(a->prompt_ids, b->prompt_ids, 4 * (size_t)a->n_prompt) && !memcmp(a->len, b->len, sizeof(int) * (size_t)a->G) &&
           !memcmp(a->rewards, b->rewards, 4 * (size_t)a->G) && !memcmp(a->ids, b->ids, 4 * T) && !memcmp(a->mask, b->mask, T) &&
           !memcmp(a->sample_lp, b->sample_lp, 4 * T) && (!a->ref_lp || !memcmp(a->ref_lp, b->ref_lp, 4 * T));
}

static void test_split(void) {
    const Comm *c = &comm;
    int L = n_learners;
    CHECK_INT(c->n_learners, L);
    CHECK_INT(c->n_rollouts, c->world_size - L);
    CHECK_INT(c->role, c->world_rank < L ? ROLE_LEARNER : ROLE_ROLLOUT);
    CHECK_INT(c->role_rank, c->world_rank < L ? c->world_rank : c->world_rank - L);
    CHECK_INT(c->role_size, c->role == ROLE_LEARNER ? L : c->world_size - L);
    for (int i = 0; i < L; i++) CHECK_INT(c->learner_ranks[i], i);
    for (int i = 0; i < c->n_rollouts; i++) CHECK_INT(c->rollout_ranks[i], L + i);
    CHECK((c->bcast_comm == MPI_COMM_NULL) == (c->role == ROLE_LEARNER && c->role_rank > 0));
    CHECK_INT(comm_learner_of(c, 7), 7 % L);
    CHECK_INT(comm_rollout_of(c, 7), 7 % c->n_rollouts);
    // One node: GPUs go to the learners first (when they use GPUs), then to the rollouts.
    CHECK_INT(c->node_learners, L);
    CHECK_INT(c->node_index, c->role_rank);
    CHECK_INT(comm_node_gpu_index(c, 1), c->world_rank);
    CHECK_INT(comm_node_gpu_index(c, 0), c->role_rank);
}

static void fill_weights(float *w, int64_t version) {
    for (int i = 0; i < N_WEIGHTS; i++) w[i] = 0.5f * (float)i + (float)version;
}

static void test_weights(void) {
    Comm *c = &comm;
    Err e;
    float w[N_WEIGHTS], want[N_WEIGHTS];
    c->bucket_elems = 64;  // 16 buckets, the last one of 40 elements
    int rollout = c->role == ROLE_ROLLOUT;
    // Version 1 reaches every rollout intact.
    if (!rollout) fill_weights(w, 1);
    else memset(w, 0, sizeof w);
    CHECK(comm_bcast_weights(c, w, N_WEIGHTS, 1, &e) == 0);
    fill_weights(want, 1);
    if (c->bcast_comm != MPI_COMM_NULL) CHECK(memcmp(w, want, sizeof w) == 0);
    // The root re-sends version 1 (new values) while rollouts expect 2: stale, detected, buffer untouched.
    if (!rollout) fill_weights(w, 9);
    int rc = comm_bcast_weights(c, w, N_WEIGHTS, rollout ? 2 : 1, &e);
    if (rollout) {
        CHECKF(rc == -1 && strstr(e.msg, "version 1 received, expected 2 (stale)"), "rc %d: %s", rc, e.msg);
        CHECK(memcmp(w, want, sizeof w) == 0);
    } else {
        CHECK_INT(rc, 0);
    }
    // A rollout whose buffer has another size: detected, and the job is still in step afterwards.
    rc = comm_bcast_weights(c, w, rollout ? N_WEIGHTS - 1 : N_WEIGHTS, 3, &e);
    if (rollout) CHECKF(rc == -1 && strstr(e.msg, "1000 elements received for a buffer of 999"), "rc %d: %s", rc, e.msg);
    if (!rollout) fill_weights(w, 4);
    CHECK(comm_bcast_weights(c, w, N_WEIGHTS, 4, &e) == 0);
    fill_weights(want, 4);
    if (c->bcast_comm != MPI_COMM_NULL) CHECK(memcmp(w, want, sizeof w) == 0);
}

static void test_groups(void) {
    const Comm *c = &comm;
    Err e;
    if (c->role == ROLE_ROLLOUT) {
        for (int64_t slot = 0; slot < N_SLOTS; slot++) {
            if (comm_rollout_of(c, slot) != c->role_rank) continue;
            TrajGroup g;
            make_group(&g, slot);
            CHECK(comm_send_group(c, &g, &e) == 0);
            traj_group_free(&g);
        }
        // An invalid group is refused before it is sent.
        TrajGroup bad;
        make_group(&bad, 0);
        bad.mask[0] = 7;
        CHECK(comm_send_group(c, &bad, &e) == -1 && strstr(e.msg, "mask of sample 0 position 0 = 7"));
        traj_group_free(&bad);
        return;
    }
    int expected = 0, seen[N_SLOTS] = {0};
    for (int64_t slot = 0; slot < N_SLOTS; slot++) expected += comm_learner_of(c, slot) == c->role_rank;
    for (int k = 0; k < expected; k++) {
        TrajGroup g, want;
        int src = -1;
        CHECK(comm_recv_group(c, &g, &src, &e) == 0);
        if (g.slot < 0 || g.slot >= N_SLOTS) {
            CHECKF(0, "slot %lld out of range", (long long)g.slot);
            traj_group_free(&g);
            continue;
        }
        make_group(&want, g.slot);
        CHECKF(group_equal(&g, &want), "slot %lld differs", (long long)g.slot);
        CHECK_INT(src, comm_rollout_of(c, g.slot));
        CHECK_INT(comm_learner_of(c, g.slot), c->role_rank);
        seen[g.slot]++;
        traj_group_free(&g);
        traj_group_free(&want);
    }
    for (int slot = 0; slot < N_SLOTS; slot++) CHECK_INT(seen[slot], comm_learner_of(c, slot) == c->role_rank);
}

// Rollout 0 sends learner 0 a corrupt message and (with two learners) a group that belongs to learner 1.
static void test_bad_messages(void) {
    const Comm *c = &comm;
    Err e;
    if (c->role == ROLE_ROLLOUT && c->role_rank == 0) {
        uint8_t junk[40] = "not a message";
        MPI_CHECK(MPI_Send(junk, sizeof junk, MPI_BYTE, c->learner_ranks[0], COMM_TAG_GROUP, c->world));
        if (c->n_learners > 1) {
            TrajGroup g;
            make_group(&g, 1);  // slot 1 (question 11) -> learner 1
            uint8_t *buf;
            size_t n;
            CHECK(msg_encode_group(&g, &buf, &n, &e) == 0);
            MPI_CHECK(MPI_Send(buf, (int)n, MPI_BYTE, c->learner_ranks[0], COMM_TAG_GROUP, c->world));
            free(buf);
            traj_group_free(&g);
        }
    } else if (c->role == ROLE_LEARNER && c->role_rank == 0) {
        TrajGroup g;
        char want[128];
        snprintf(want, sizeof want, "from world rank %d (rollout 0): group message: header magic", c->rollout_ranks[0]);
        CHECK(comm_recv_group(c, &g, NULL, &e) == -1);
        CHECKF(strstr(e.msg, want) != NULL, "%s", e.msg);
        CHECK(g.ids == NULL);
        if (c->n_learners > 1) {
            CHECK(comm_recv_group(c, &g, NULL, &e) == -1);
            CHECKF(strstr(e.msg, "question 11 (slot 1) from rollout 0 belongs to learner 1, not to learner 0"), "%s", e.msg);
        }
    }
}

static void test_errors_return(void) {
    const Comm *c = &comm;
    // MPI_ERRORS_RETURN: a send to a rank that does not exist comes back as an error code.
    int x = 0;
    int rc = MPI_Send(&x, 1, MPI_INT, c->world_size + 5, 0, c->world);
    CHECK(rc != MPI_SUCCESS);
    Err e;
    CHECK(comm_mpi_err(rc, "MPI_Send", &e) == -1);
    CHECKF(strncmp(e.msg, "MPI_Send: ", 10) == 0 && strlen(e.msg) > 12, "%s", e.msg);
}

static void test_allreduce(void) {
    const Comm *c = &comm;
    // Role rank r contributes [r + 1, 2 (r + 1)]: the sums are S and 2 S with S = n (n + 1) / 2.
    float f[2] = {(float)(c->role_rank + 1), (float)(2 * (c->role_rank + 1))};
    double d[2] = {f[0], f[1]};
    comm_role_allreduce_sum_f32(c, f, 2);
    comm_role_allreduce_sum_f64(c, d, 2);
    double S = c->role_size * (c->role_size + 1) / 2.0;
    CHECK_NEAR(f[0], S, 0);
    CHECK_NEAR(f[1], 2 * S, 0);
    CHECK_NEAR(d[0], S, 0);
    CHECK_NEAR(d[1], 2 * S, 0);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int abort_mode = argc > 1 && strcmp(argv[1], "abort") == 0;
    n_learners = abort_mode || argc < 2 ? 1 : atoi(argv[1]);
    comm = comm_init(&argc, &argv, rank < n_learners ? ROLE_LEARNER : ROLE_ROLLOUT);
    if (abort_mode) {
        // The rollout dies; the learner would wait for its group forever without the abort policy.
        if (comm.role == ROLE_ROLLOUT) comm_abort("dead on purpose");
        TrajGroup g;
        Err e;
        comm_recv_group(&comm, &g, NULL, &e);
        return 0;
    }
    // A barrier between cases: a message of the next case must not reach a rank still in this one.
    RUN_PHASE(test_split);
    RUN_PHASE(test_weights);
    RUN_PHASE(test_groups);
    RUN_PHASE(test_bad_messages);
    RUN_PHASE(test_errors_return);
    RUN_PHASE(test_allreduce);
    char name[64];
    snprintf(name, sizeof name, "comm_mpi %s %d", role_name(comm.role), comm.role_rank);
    int rc = test_summary(name);
    comm_finalize(&comm);
    return rc;
}

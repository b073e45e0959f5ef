#!/bin/sh
# zero_gpu.sh CASE: test_zero_mpi CASE (zero | bcast | timeout, see there) under mpirun, 2 ranks with a
# GPU each (offload: 1 rank, 1 GPU). Skipped (77) without a CUDA build or with too few GPUs; a failing
# probe fails.
# Environment: MPIRUN, ZERO_MPI.
set -u
# the probe exits 77 in a build without CUDA and prints 0 on a machine without GPUs or driver; any other
# failure (a CUDA error, a crash) fails the test rather than hiding the GPU cases as skips
n=$("$ZERO_MPI" gpus)
rc=$?
[ $rc -ne 77 ] || { echo "no CUDA in this build: skipped"; exit 77; }
[ $rc -eq 0 ] || { echo "FAIL: the GPU probe ($ZERO_MPI gpus) exited $rc"; exit 1; }
case $n in '' | *[!0-9]*) echo "FAIL: the GPU probe printed '$n', not a count"; exit 1 ;; esac
need=2
[ "$1" = offload ] && need=1
[ "$n" -ge $need ] || { echo "$n GPUs, the case needs $need: skipped"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
case $1 in
timeout)
    # rank 1 never joins: the job must end within the 3 s watchdog (plus start-up), naming the collective
    out=$(timeout 60 "$MPIRUN" -np 2 "$ZERO_MPI" timeout 2>&1)
    rc=$?
    echo "$out" | grep -m1 "fatal:"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "$out" | grep -q "NCCL test all-reduce: no progress after 3 s" ;;
*)
    timeout 120 "$MPIRUN" -np $need "$ZERO_MPI" "$1" ;;
esac

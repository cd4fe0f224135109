# Sourced by launch_composer.sh and launch_torchrun.sh: resolves this node's place in the job
# (NODE_RANK, NNODES, MASTER_ADDR, MASTER_PORT, NPROC_PER_NODE) from the environment that
# Kubernetes indexed Jobs, Vertex AI or SLURM provide, checks it, and clears the per-process
# variables (WORLD_SIZE, RANK, LOCAL_RANK) that the launcher sets for each process itself.
if [[ -n "${CLUSTER_SPEC:-}" ]]; then
  # Vertex AI custom jobs: WORLD_SIZE and RANK count replicas (nodes), not processes.
  NNODES="${NNODES:-${WORLD_SIZE:-1}}"
  NODE_RANK="${NODE_RANK:-${RANK:-0}}"
  unset WORLD_SIZE RANK
fi
NODE_RANK="${NODE_RANK:-${JOB_COMPLETION_INDEX:-${SLURM_NODEID:-0}}}"
NNODES="${NNODES:-${SLURM_NNODES:-1}}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
if [[ -z "${NPROC_PER_NODE:-}" ]]; then
  NPROC_PER_NODE="$(python -c 'import torch; print(max(1, torch.cuda.device_count()))')"
fi
expected=$(( NNODES * NPROC_PER_NODE ))
if [[ -n "${WORLD_SIZE:-}" && "$WORLD_SIZE" != "$expected" ]]; then
  echo "error: WORLD_SIZE=$WORLD_SIZE but NNODES*NPROC_PER_NODE=$expected" >&2
  exit 2
fi
if (( NNODES > 1 )) && [[ "$MASTER_ADDR" == "127.0.0.1" ]]; then
  echo "error: MASTER_ADDR must be node 0's address when NNODES > 1" >&2
  exit 2
fi
unset WORLD_SIZE RANK LOCAL_RANK  # the launcher sets them per process

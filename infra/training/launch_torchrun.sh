#!/usr/bin/env bash
# Multi-node student training with torchrun (static rendezvous): run this once on every node.
#
#   MASTER_ADDR=10.0.0.2 NNODES=2 NODE_RANK=0 NPROC_PER_NODE=8 \
#   launch_torchrun.sh pd_best.yaml data.streams.0.uri=gs://DATASETS/pd/web-v1 \
#       run.save_folder=gs://CHECKPOINTS/runs run.run_name=pd-best-1b run.autoresume=true
#
# Same environment as launch_composer.sh (MASTER_ADDR, MASTER_PORT, NODE_RANK, NNODES,
# NPROC_PER_NODE, optional WORLD_SIZE check). torchrun gives every process RANK, LOCAL_RANK,
# WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT but not NODE_RANK, which Composer reads
# (default 0): it is exported here so every process sees its node's rank.
set -euo pipefail

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
unset WORLD_SIZE RANK LOCAL_RANK
export NODE_RANK

echo "torchrun: node $NODE_RANK/$NNODES, $NPROC_PER_NODE procs/node, master $MASTER_ADDR:$MASTER_PORT"
exec torchrun \
  --nnodes "$NNODES" \
  --nproc-per-node "$NPROC_PER_NODE" \
  --node-rank "$NODE_RANK" \
  --master-addr "$MASTER_ADDR" \
  --master-port "$MASTER_PORT" \
  -m trainer "$@"

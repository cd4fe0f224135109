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

source "$(dirname "${BASH_SOURCE[0]}")/node_env.sh"
export NODE_RANK

echo "torchrun: node $NODE_RANK/$NNODES, $NPROC_PER_NODE procs/node, master $MASTER_ADDR:$MASTER_PORT"
exec torchrun \
  --nnodes "$NNODES" \
  --nproc-per-node "$NPROC_PER_NODE" \
  --node-rank "$NODE_RANK" \
  --master-addr "$MASTER_ADDR" \
  --master-port "$MASTER_PORT" \
  -m trainer "$@"

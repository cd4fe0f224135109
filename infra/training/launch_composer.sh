#!/usr/bin/env bash
# Multi-node student training with Composer's launcher: run this once on every node.
#
#   MASTER_ADDR=10.0.0.2 NNODES=2 NODE_RANK=0 NPROC_PER_NODE=8 \
#   launch_composer.sh pd_best.yaml data.streams.0.uri=gs://DATASETS/pd/web-v1 \
#       run.save_folder=gs://CHECKPOINTS/runs run.run_name=pd-best-1b run.autoresume=true
#
# Environment (Kubernetes indexed Jobs, Vertex AI and SLURM set their own; mapped below):
#   MASTER_ADDR      address of node 0 (required when NNODES > 1)
#   MASTER_PORT      rendezvous port on node 0 (default 29500)
#   NODE_RANK        this node's index 0..NNODES-1 (falls back to JOB_COMPLETION_INDEX, SLURM_NODEID)
#   NNODES           number of nodes (falls back to SLURM_NNODES; default 1)
#   NPROC_PER_NODE   processes (GPUs) per node (default: all visible GPUs, at least 1)
#   WORLD_SIZE       total processes; default NNODES * NPROC_PER_NODE (must match if given)
# Composer then gives every process RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, NODE_RANK,
# MASTER_ADDR and MASTER_PORT, and trainer/ reads them (torch.distributed via Composer).
#
# Resume after preemption: with run.autoresume=true, run.run_name and an object-store
# run.save_folder, a restarted job continues from the latest checkpoint mid-epoch. Keep the
# global batch, num_canonical_nodes, ranks per node and loader workers the same across restarts
# (DESIGN.md, "Elastic resume").
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/node_env.sh"

echo "composer: node $NODE_RANK/$NNODES, $NPROC_PER_NODE procs/node, master $MASTER_ADDR:$MASTER_PORT"
exec composer \
  --nproc "$NPROC_PER_NODE" \
  --world_size "$expected" \
  --base_rank $(( NODE_RANK * NPROC_PER_NODE )) \
  --node_rank "$NODE_RANK" \
  --master_addr "$MASTER_ADDR" \
  --master_port "$MASTER_PORT" \
  -m trainer "$@"

#!/usr/bin/env bash
# Build the demo model end to end with fixed seeds, then score it on the held-out cases.
# Resumable: run it again after an interruption and it continues from the last checkpoint.
#
#   scripts/train_demo.sh [RUN_DIR] [CONFIG]     (defaults: runs/demo, configs/demo/demo.yaml)
#   THREADS=1 scripts/train_demo.sh runs/demo-gate configs/demo/gate.yaml
#
# Then `kaleido-s2v demo bundle --out RUN_DIR --config CONFIG` makes it the package's bundled model.
#
# Run from the repository root. In the background, record the PID of this script's process group
# so the whole run can be stopped with `kill -- -PID`:
#   setsid scripts/train_demo.sh > runs/demo.log 2>&1 & echo $! > runs/demo.pid
set -euo pipefail

RUN_DIR="${1:-runs/demo}"
CONFIG="${2:-configs/demo/demo.yaml}"
THREADS="${THREADS:-2}"

kaleido-s2v demo train --config "$CONFIG" --out "$RUN_DIR" --threads "$THREADS" --no-progress
kaleido-s2v demo eval --config "$CONFIG" --out "$RUN_DIR" --threads "$THREADS" --no-progress

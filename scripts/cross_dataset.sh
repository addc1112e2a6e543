#!/usr/bin/env bash
# Cross-dataset transfer: train on all 1000 ImageNet classes (SHOTS shots), evaluate on the other 10 datasets.
# Layout (docs/protocol_notes.md#output-layout): OUTPUT/imagenet/<Trainer>/<cfg>_<K>shots/seed<S> and
# OUTPUT/evaluation/<Trainer>/<cfg>_<K>shots/<dataset>/seed<S>; the method's cross-dataset config (the trainer class's sweep_cross_dataset_config; none = an error: set CFG).
#
# Usage: bash scripts/cross_dataset.sh METHOD
# Environment: DATA (./data)  OUTPUT (output)  SEEDS ("1 2 3")  SHOTS (16)
#              CALIB (both | on | off | mbls | zs_norm | penalty; several allowed)  CFG (overrides the method's config)
#              BACKBONE  OPTS ("KEY VALUE ...")  DRY_RUN=1 (print the train.py commands only)
#              STOP_ON_ERROR=1 (stop at the first failed run; default: go on with the next one)
# Finished runs (a results.json of the identity the run would have now) are skipped, stale ones rerun
# (ON_MISMATCH=error: refused); rerunning resumes an interrupted sweep.
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "${BASH_SOURCE[0]}")/../tools/sweep.py" cross_dataset "$@"

#!/usr/bin/env bash
# All-class few-shot learning on DATASET for K in SHOTS.
# Layout: OUTPUT/<dataset>/<Trainer>/<cfg>[_<backbone>][_calib[-<name>]]_<K>shots/seed<S>; the method's few-shot
# config (the trainer class's sweep_few_shot_config; none = an error: set CFG).
#
# Usage: bash scripts/few_shot.sh METHOD DATASET
# Environment: DATA (./data)  OUTPUT (output)  SEEDS ("1 2 3")  SHOTS ("1 2 4 8 16")
#              CALIB (both | on | off | mbls | zs_norm | penalty; several allowed)  CFG (overrides the method's config)
#              BACKBONE  OPTS ("KEY VALUE ...")  DRY_RUN=1 (print the train.py commands only)
#              STOP_ON_ERROR=1 (stop at the first failed run; default: go on with the next one)
# Finished runs (a results.json of the identity the run would have now) are skipped, stale ones rerun
# (ON_MISMATCH=error: refused); rerunning resumes an interrupted sweep.
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "${BASH_SOURCE[0]}")/../tools/sweep.py" few_shot "$@"

#!/usr/bin/env bash
# Base-to-novel on one dataset: train on the base classes, evaluate the prompts on the new ones,
# for each seed and calibration variant; ends with base/novel accuracy and ECE and HM (mean ± std over seeds).
# Layout: OUTPUT/base2new/{train_base,test_new}/<dataset>/shots_<K>/<Trainer>/<cfg>[_<backbone>][_calib[-<name>]]/seed<S>
#
# Usage: bash scripts/base2novel.sh METHOD DATASET
# Environment: DATA (./data)  OUTPUT (output)  SEEDS ("1 2 3")  SHOTS (16)
#              CALIB (both | on | off | mbls | zs_norm | penalty; several allowed)  CFG (the method's config)
#              BACKBONE  OPTS ("KEY VALUE ...")  DRY_RUN=1 (print the train.py commands only)
#              STOP_ON_ERROR=1 (stop at the first failed run; default: go on with the next one)
# Finished runs (a results.json of the identity the run would have now) are skipped, stale ones rerun
# (ON_MISMATCH=error: refused); rerunning resumes an interrupted sweep.
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "${BASH_SOURCE[0]}")/../tools/sweep.py" base2novel "$@"

#!/usr/bin/env bash
# Domain generalization: the ImageNet-trained prompts (shared with cross_dataset.sh) evaluated on
# ImageNetV2, ImageNet-Sketch, ImageNet-A and ImageNet-R. Layout as cross_dataset.sh.
#
# Usage: bash scripts/domain_generalization.sh METHOD
# Environment: DATA (./data)  OUTPUT (output)  SEEDS ("1 2 3")  SHOTS (16)
#              CALIB (both | on | off | mbls | zs_norm | penalty; several allowed)  CFG (the method's config)
#              BACKBONE  OPTS ("KEY VALUE ...")  DRY_RUN=1 (print the train.py commands only)
#              STOP_ON_ERROR=1 (stop at the first failed run; default: go on with the next one)
# Finished runs (a results.json of the identity the run would have now) are skipped, stale ones rerun
# (ON_MISMATCH=error: refused); rerunning resumes an interrupted sweep.
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "${BASH_SOURCE[0]}")/../tools/sweep.py" domain_generalization "$@"

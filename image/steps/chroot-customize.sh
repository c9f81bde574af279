#!/bin/bash -e
# mmdebstrap customize hook: runs the chroot steps in order, with a progress line each. $1 is
# the new root; the steps find it in $ROOT.
export ROOT=$1
for s in "$SRC_DIR"/image/steps/chroot/[0-9][0-9]-*.sh; do
  echo "    -> $(basename "$s" .sh)"
  bash -euo pipefail "$s"
done

#!/usr/bin/env bash
# The GPU table of imaging/README.md in one run: bench/imaging.py on CUDA (bf16) for each model and
# batch size there, 4,096 images of 256 px, the calling thread's breakdown, and for one model the
# calling thread's costliest functions (--profile). Needs torch, torchvision, numpy and Pillow only.
#
#     bench/imaging_gpu.sh [DATA_DIR]      # DATA_DIR holds imaging/pneumoniamnist.npz
#                                          # (default: CDSS_DATA_DIR, else ../shared/data)
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:-${CDSS_DATA_DIR:-../shared/data}}
python=${PYTHON:-$(command -v python || command -v python3)}
export PYTHONUNBUFFERED=1
run() {
    echo "== $*"
    timeout 120 "$python" bench/imaging.py --device cuda --data-dir "$data" --images 4096 --repeats 2 \
        --png-cache /tmp/cdss-bench-pngs "$@" 2>&1 \
        | grep -v -i warning
}
# decoding and PNG encoding in worker processes (no GIL shared with the thread feeding the GPU);
# CUDA graphs and the device-side resize of small uint8 images are the job's defaults on a GPU, each
# also run switched off for the comparison
run --arch inception_v3 --input-size 299 --batch-size 64 --processes 15 --profile 25
run --arch inception_v3 --input-size 299 --batch-size 64 --processes 15 --graphs off
run --arch inception_v3 --input-size 299 --batch-size 128 --processes 15
run --arch resnet18 --input-size 224 --batch-size 64 --processes 15
run --arch resnet18 --input-size 224 --batch-size 64 --processes 15 --graphs off
run --arch resnet18 --input-size 224 --batch-size 64 --processes 15 --resize-on pool
run --arch resnet18 --input-size 224 --batch-size 256 --processes 15
run --arch resnet18 --input-size 28 --batch-size 256 --processes 15
# decoding in threads of this process
run --arch inception_v3 --input-size 299 --batch-size 64

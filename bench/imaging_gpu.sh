#!/usr/bin/env bash
# The GPU tables of imaging/README.md in one run: bench/imaging.py on CUDA (bf16) for each model and
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
    timeout 100 "$python" bench/imaging.py --device cuda --data-dir "$data" --images 4096 --repeats 2 \
        --png-cache /tmp/cdss-bench-pngs "$@" 2>&1 \
        | grep -v -i warning
}
# first, the figure the GPU run is for: the whole path with the store (the overlays in heat map packs
# written by the decode processes, as the job does on a local storage folder), batch 64; then the
# same with decode calls ahead of waiting overlay calls in the processes' queue (pipeline.DECODE_FIRST:
# the default since the H100 run of 2026-11-28, so both rows are that way now), so that both come
# back even if the run is cut short
run --arch inception_v3 --input-size 299 --batch-size 64 --processes 15 --store /tmp/cdss-bench-store
run --arch inception_v3 --input-size 299 --batch-size 64 --processes 15 --store /tmp/cdss-bench-store \
    --decode-first
# decoding and PNG encoding in worker processes (no GIL shared with the thread feeding the GPU);
# CUDA graphs, the device-side resize of small uint8 images and overlays of several batches encoding
# at once are the job's defaults on a GPU; --encode-lag 1 is the pipeline before the last of these
run --arch inception_v3 --input-size 299 --batch-size 64 --processes 15 --profile 25
# the host alone: the same pipeline and store around a paced device (bench/imaging_host.py) of no
# cost (the host's ceiling) and of Inception-V3's bare forward on an H200 (6,500 images/s)
for rate in 0 6500; do
    echo "== imaging_host.py --rate $rate"
    timeout 100 "$python" bench/imaging_host.py --rate "$rate" --processes 15 --input-size 299 --images 4096 \
        --repeats 2 --data-dir "$data" --png-cache /tmp/cdss-bench-pngs --store /tmp/cdss-bench-store \
        $([ "$rate" = 0 ] || echo --profile 20) 2>&1 | grep -v -i warning
done
# the store's file system on its own: a new file per overlay against packs of 16, 15 processes
timeout 100 "$python" bench/heatmap_store.py --processes 15 --overlays 16384 --dir /tmp/cdss-bench-store 2>&1
# with the store at batch 128 (batch 64 ran first); further down by background threads (the job's
# way with an object store: packs of 16), and a file per overlay that way (the job's way before packs)
run --arch inception_v3 --input-size 299 --batch-size 128 --processes 15 --store /tmp/cdss-bench-store
# the processes' tuning: smaller groups a call (more of the 15 decoding each batch), or decoding
# three batches ahead instead of two
run --arch inception_v3 --input-size 299 --batch-size 64 --processes 15 --store /tmp/cdss-bench-store \
    --process-group 8
run --arch inception_v3 --input-size 299 --batch-size 64 --processes 15 --store /tmp/cdss-bench-store \
    --decode-ahead 3
run --arch inception_v3 --input-size 299 --batch-size 64 --processes 15 --store /tmp/cdss-bench-store \
    --store-on threads
run --arch inception_v3 --input-size 299 --batch-size 64 --processes 15 --store /tmp/cdss-bench-store \
    --store-on threads --pack off
# what the job reads for radiographs (DICOM): their analysis copies, 512 px, 16-bit, shrunk by the processes
run --arch inception_v3 --input-size 299 --batch-size 64 --processes 15 --store /tmp/cdss-bench-store \
    --source copies --image-size 512
run --arch inception_v3 --input-size 299 --batch-size 64 --processes 15 --encode-lag 1
run --arch inception_v3 --input-size 299 --batch-size 128 --processes 15
run --arch resnet18 --input-size 224 --batch-size 64 --processes 15
run --arch resnet18 --input-size 224 --batch-size 64 --processes 15 --encode-lag 1
run --arch resnet18 --input-size 224 --batch-size 256 --processes 15
run --arch densenet121 --input-size 224 --batch-size 64 --processes 15
run --arch resnet18 --input-size 28 --batch-size 256 --processes 15
# the same switched off one at a time, for the comparison (2026-11-27, H200: CUDA graphs off took
# Inception-V3 at 299 px, batch 64, from 83% to 61%): --graphs off, --resize-on pool; decoding in
# threads of this process: leave --processes out

#!/usr/bin/env bash
# The benchmark on a GPU machine: distill-vq against faiss at 16 and 48 bytes per vector on each corpus given
# (default: the Debian set, and the GCIDE/WordNet set when benchmarks/build_gcide_wordnet_corpus.py has built it),
# the distillation on CUDA (quantization in float32) and faiss on every core; then 1 vs 2 GPU processes under
# `accelerate launch` when the machine has two GPUs. Writes OUT (default benchmarks/results/gpu/): results.md and
# results.json per run, gpu.txt (the device), and the log.
#
#     bash benchmarks/gpu.sh [OUT] [CORPUS ...]
#
# Budget: about 10 minutes on one H200-class GPU for both corpora (the CPU runs of the same command take hours).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-benchmarks/results/gpu}
shift || true
CORPORA=("$@")
if [ ${#CORPORA[@]} -eq 0 ]; then
    CORPORA=(../shared/data/debian-descriptions)
    [ -d benchmarks/data/gcide-wordnet/embeddings ] && CORPORA+=(benchmarks/data/gcide-wordnet)
fi

python - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("benchmarks/gpu.sh: torch sees no CUDA device (torch.cuda.is_available() is False); run it on a GPU "
             "machine with a CUDA build of torch, or run benchmarks/compare_faiss.py for the CPU numbers.")
EOF

mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
THREADS=$(nproc)

python benchmarks/compare_faiss.py --corpora "${CORPORA[@]}" --bytes 16 48 --threads "$THREADS" \
    --methods exact ivf-pq opq-ivf-pq ivf-rq distill-pq distill-rq distill-rq+adapter distill-rq+joint \
    --max-steps 1000 --max-train-seconds 300 --disable-tqdm true \
    --output-dir "$OUT/compare_faiss" 2>&1 | tee "$OUT/compare_faiss.log"

if [ "$(nvidia-smi --list-gpus | wc -l)" -ge 2 ]; then
    python benchmarks/processes.py --processes 1 2 --max-steps 300 --config-file examples/accelerate/multi_gpu_bf16.yaml \
        --output-dir "$OUT/processes" 2>&1 | tee "$OUT/processes.log"
fi
echo "benchmarks/gpu.sh: wrote $OUT"

#!/usr/bin/env bash
# One GPU run (~8 min on one H200): check the served model on CUDA, train the "deep" committee (its members in
# parallel processes sharing the GPU), distil it into one 1536-1536 network ("distilled-deep"), export that
# (TorchScript + ONNX, parity on the CPU) and check its TorchScript file on CUDA against the CPU.
#
#     training/on_gpu.sh OUT_DIR [MNIST_ROOT]     # MNIST_ROOT holds MNIST/raw/ (the .gz files are enough)
#     DEVICE=cpu EXTRA="--max-steps 2" training/on_gpu.sh /tmp/out    # the same steps in a minute, no GPU (tested)
#
# Writes OUT_DIR/log.txt, the CUDA checks (cuda-*.json) and the student's files. Needs torch with CUDA,
# torchvision, onnx, onnxscript, onnxruntime, pillow (no BentoML: the student is exported with --no-publish to a
# version folder, and harness.cuda uses service.runtime only).
set -u -o pipefail
OUT=${1:?usage: training/on_gpu.sh OUT_DIR [MNIST_ROOT]}
DATA=${2:-../shared/data/mnist}
WORK=${WORK:-build/gpu}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}
mkdir -p "$OUT" "$WORK"
# torch.jit's deprecation notices are noise; a UserWarning (e.g. an op with no deterministic CUDA kernel) is not.
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 PYTHONWARNINGS=ignore::FutureWarning,ignore::DeprecationWarning MNIST_DATA_ROOT=$DATA
# Every process gets the same flags, so the members' cache keys match when the student looks for its teacher.
TRAIN="python3 -m training mnist --device $DEVICE --data-root $DATA --download --threads 2 --cache-dir $WORK/members $EXTRA"
exec > >(tee -a "$OUT/log.txt") 2>&1
stamp() { echo "== $(date -u +%H:%M:%S) $*"; }

stamp "device"; command -v nvidia-smi >/dev/null && nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)"
# Unpack the MNIST archives once (torchvision checks their md5), before processes race to do it.
$TRAIN --profile quick --max-steps 1 --epochs 1 --no-test --no-export --out "$WORK/scratch" | grep -v "^data"
SERVED=$(python3 -c "import artifacts.serving as s; print(s.default_dir('mnist-fc'))")  # the default version's folder
if [ -f "$SERVED/model.pt" ]; then
    stamp "served model on CUDA"; python3 -m harness.cuda "$SERVED" --device "$DEVICE" --seconds 0.5 --json "$OUT/cuda-mnist-fc.json"
fi

stamp "deep committee: 5 members in parallel"
pids=()
for i in 0 1 2 3 4; do $TRAIN --profile deep --member "$i" > "$WORK/member-$i.log" 2>&1 & pids+=($!); done
for p in "${pids[@]}"; do wait "$p" || echo "a member failed (exit $?)"; done
grep -h "is in\|Error" "$WORK"/member-*.log

stamp "student (distilled-deep), and the committee itself evaluated beside it"
$TRAIN --profile deep --no-export --out "$WORK/deep" 2>&1 | grep -E "test accuracy|val accuracy|Error" &
deep=$!
$TRAIN --profile distilled-deep --out "$WORK/models" --no-publish --name mnist-fc-distilled-deep 2>&1 | tee "$WORK/student.log"
wait $deep

stamp "student on CUDA"
S="$WORK/models/mnist-fc-distilled-deep/$(sed -n 's/^exported mnist-fc-distilled-deep version \([0-9a-f]*\).*/\1/p' "$WORK/student.log")"
python3 -m harness.cuda "$S" --device "$DEVICE" --seconds 1 --json "$OUT/cuda-distilled-deep.json"
cp "$S/model.onnx" "$S/model.pt" "$OUT/" 2>/dev/null
tar czf "$OUT/distilled-deep.tgz" -C "$S" metadata.json report 2>/dev/null
tar czf "$OUT/logs.tgz" -C "$WORK" $(cd "$WORK" && ls *.log) 2>/dev/null
stamp "done"

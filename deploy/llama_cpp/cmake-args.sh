#!/bin/sh
# The one place that decides how llama-cpp-python is compiled: the Makefile, the serve image and the worker
# image all read it. Prints the CMAKE_ARGS for a target architecture (default: this machine's `uname -m`).
#
# Why explicit flags: llama.cpp's default is -march=native, so a wheel built on one machine (pip's wheel
# cache, a Docker layer, a CI runner) carries the build machine's instructions and dies with SIGILL on an
# older CPU, or carries AMX kernels that segfault on Intel Xeons with AMX (ggml_backend_amx_mul_mat).
#   x86_64:  x86-64-v3 (AVX, AVX2, FMA, F16C, BMI2): every x86 server CPU since 2015 (Haswell, Zen 1).
#            AVX-512 and AMX stay off: AVX-512 would SIGILL on Zen 1-3 and most desktops; AMX is the crash.
#   aarch64: armv8-a, so one image runs on every 64-bit Raspberry Pi (the Pi 4's Cortex-A72 has no dot
#            product). On a Pi 5, Graviton or Ampere set LLAMA_ARM_ARCH=armv8.2-a+dotprod+fp16 (faster q8_0/q4).
# Only what the Python package loads is compiled: libllama and ggml. The multimodal library (LLAVA_BUILD) and
# llama.cpp's common library (without-common.cmake, which must sit beside this script) are left out.
# Extra flags for an accelerator (e.g. -DGGML_CUDA=on) come from LLAMA_EXTRA_CMAKE_ARGS.
set -eu
arch="${1:-$(uname -m)}"
here="$(cd "$(dirname "$0")" && pwd)"
parts="-DLLAVA_BUILD=OFF -DCMAKE_PROJECT_llama.cpp_INCLUDE=$here/without-common.cmake"
case "$arch" in
    x86_64|amd64)
        flags="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
        flags="$flags -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" ;;
    aarch64|arm64)
        flags="-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=${LLAMA_ARM_ARCH:-armv8-a}" ;;
    *)
        echo "llama-cpp cmake-args: no portable flags for architecture '$arch' (known: x86_64, aarch64)" >&2
        exit 2 ;;
esac
echo "$flags $parts${LLAMA_EXTRA_CMAKE_ARGS:+ $LLAMA_EXTRA_CMAKE_ARGS}"

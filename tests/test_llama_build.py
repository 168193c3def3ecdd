"""The llama-cpp-python build: one pinned version everywhere, portable flags from one script, and the
installed build really made with them (no -march=native, no AMX kernels)."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "llama_cpp" / "cmake-args.sh"


def cmake_args(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **env})


def test_one_pinned_version_everywhere_it_is_built():
    pinned = re.search(r'"llama-cpp-python==([0-9.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    places = {
        "Makefile": re.search(r"LLAMA_CPP_VERSION \?= ([0-9.]+)", (ROOT / "Makefile").read_text()).group(1),
        "deploy/serve/requirements.txt": re.search(
            r"llama-cpp-python==([0-9.]+)", (ROOT / "deploy/serve/requirements.txt").read_text()).group(1),
    }
    for dockerfile in ("docker/worker.Dockerfile", "docker/code_location.Dockerfile"):
        places[dockerfile] = re.search(r"llama-cpp-python==([0-9.]+)", (ROOT / dockerfile).read_text()).group(1)
    assert places == dict.fromkeys(places, pinned)
    for dockerfile in ("docker/worker.Dockerfile", "docker/code_location.Dockerfile", "deploy/serve/Dockerfile"):
        text = (ROOT / dockerfile).read_text()
        # the whole folder: cmake-args.sh names the CMake include that sits beside it
        assert "COPY deploy/llama_cpp/ /opt/llama-cmake/" in text and "sh /opt/llama-cmake/cmake-args.sh" in text, \
            dockerfile


def test_only_what_the_python_package_loads_is_compiled(tmp_path):
    """The multimodal and common libraries are left out: the include cmake-args.sh names exists wherever the
    folder is copied, and turns llama.cpp's common library off after llama-cpp-python forced it on."""
    copy = tmp_path / "llama-cmake"
    copy.mkdir()
    for name in ("cmake-args.sh", "without-common.cmake"):
        (copy / name).write_text((SCRIPT.parent / name).read_text())
    out = subprocess.run(["sh", str(copy / "cmake-args.sh"), "x86_64"], capture_output=True, text=True, check=True)
    flags = dict(f.removeprefix("-D").split("=", 1) for f in out.stdout.split())
    assert flags["LLAVA_BUILD"] == "OFF"
    include = Path(flags["CMAKE_PROJECT_llama.cpp_INCLUDE"])
    assert include == copy / "without-common.cmake" and include.is_file()
    assert re.search(r"set\(LLAMA_BUILD_COMMON OFF CACHE BOOL .* FORCE\)", include.read_text())


def test_x86_flags_are_portable_and_leave_amx_and_avx512_out():
    out = cmake_args("x86_64")
    assert out.returncode == 0, out.stderr
    flags = dict(f.removeprefix("-D").split("=", 1) for f in out.stdout.split())
    assert flags["GGML_NATIVE"] == "OFF" and flags["GGML_AVX2"] == "ON"
    assert {flags[k] for k in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16", "GGML_AVX512")} == {"OFF"}
    assert cmake_args("amd64").stdout == out.stdout  # Docker's TARGETARCH name


def test_arm_flags_default_to_every_64_bit_pi_and_can_be_raised():
    assert "-DGGML_CPU_ARM_ARCH=armv8-a" in cmake_args("aarch64").stdout.split()
    raised = cmake_args("arm64", LLAMA_ARM_ARCH="armv8.2-a+dotprod+fp16").stdout.split()
    assert "-DGGML_NATIVE=OFF" in raised and "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16" in raised


def test_extra_flags_are_appended_and_unknown_architectures_refused():
    assert cmake_args("x86_64", LLAMA_EXTRA_CMAKE_ARGS="-DGGML_CUDA=on").stdout.split()[-1] == "-DGGML_CUDA=on"
    refused = cmake_args("riscv64")
    assert refused.returncode == 2 and "riscv64" in refused.stderr


def test_the_installed_llama_cpp_is_the_portable_build():
    import platform

    from llm_assets.core.llama_runtime import system_info

    if platform.machine() != "x86_64":
        pytest.skip(f"the x86 build flags are checked on x86_64, this is {platform.machine()}")
    info = system_info()
    assert "AVX2 = 1" in info, info
    assert "AMX_INT8" not in info and "AVX512 = 1" not in info, (
        f"llama-cpp-python was not built by `make install` with deploy/llama_cpp/cmake-args.sh: {info}")

"""The one GGUF loader and its CPU decision: pure decisions fed CPU flags, and every load going through it."""

import re
from pathlib import Path

import pytest

from llm_assets.core.errors import ConfigError
from llm_assets.core.llama_runtime import build_has_amx, cpu_flags, decide_settings

ROOT = Path(__file__).resolve().parents[2]
SAPPHIRE_RAPIDS = "fpu sse4_2 avx avx2 fma f16c avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8".split()
EPYC = "fpu sse4_2 avx avx2 fma f16c avx512f avx512_vnni avx512_bf16".split()
PI5 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp".split()
NATIVE_AMX_BUILD = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | OPENMP = 1 | REPACK = 1 |"
PORTABLE_BUILD = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 | REPACK = 1 |"


def test_amx_cpu_with_an_amx_build_keeps_llama_cpp_off_its_amx_kernels():
    settings = decide_settings(SAPPHIRE_RAPIDS, NATIVE_AMX_BUILD)
    assert settings.use_extra_bufts is False
    assert "amx_int8" in settings.reason and "segfault" in settings.reason


def test_amx_cpu_with_a_build_that_does_not_say_is_treated_as_unsafe():
    assert decide_settings(SAPPHIRE_RAPIDS, None).use_extra_bufts is False
    assert decide_settings(SAPPHIRE_RAPIDS, "Metal : EMBED_LIBRARY = 1 |").use_extra_bufts is False


def test_amx_cpu_with_a_build_without_amx_kernels_keeps_the_repacked_fast_paths():
    # The CPU backend lists the features it was compiled with: no AMX_INT8 there, no AMX kernels.
    assert build_has_amx(PORTABLE_BUILD) is False and build_has_amx(NATIVE_AMX_BUILD) is True
    settings = decide_settings(SAPPHIRE_RAPIDS, PORTABLE_BUILD)
    assert settings.use_extra_bufts is True and "no AMX kernels" in settings.reason


@pytest.mark.parametrize("flags", [EPYC, PI5, []], ids=["amd-epyc", "raspberry-pi-5", "unknown-cpu"])
def test_cpus_without_amx_keep_the_repacked_fast_paths(flags):
    assert decide_settings(flags, NATIVE_AMX_BUILD).use_extra_bufts is True


def test_one_setting_overrides_the_decision_either_way():
    assert decide_settings(SAPPHIRE_RAPIDS, NATIVE_AMX_BUILD, "on").use_extra_bufts is True
    assert decide_settings(EPYC, PORTABLE_BUILD, "off").use_extra_bufts is False
    with pytest.raises(ConfigError, match="llama_repack"):
        decide_settings(EPYC, PORTABLE_BUILD, "fast")


def test_cpu_flags_are_read_from_x86_and_arm_cpuinfo():
    x86 = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: fpu avx2 amx_int8 amx_tile\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU implementer\t: 0x41\n"
    assert {"amx_int8", "amx_tile", "avx2"} <= cpu_flags(x86)
    assert "asimddp" in cpu_flags(arm)
    assert cpu_flags("processor : 0\n") == frozenset()


# Calls that load a GGUF into llama.cpp. Anywhere but the loader they would bypass its decision.
LOAD_CALLS = re.compile(r"\b(Llama|LlamaModel)\(|llama_(model_)?load_(model_)?from_file\(")


def test_every_gguf_load_in_the_project_goes_through_the_one_loader():
    loader = ROOT / "llm_assets" / "core" / "llama_runtime.py"
    offenders = []
    for folder in ("llm_assets", "resources", "sensors", "jobs", "bench", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            if path in (loader, Path(__file__).resolve()):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if LOAD_CALLS.search(line) and not line.lstrip().startswith("#"):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert LOAD_CALLS.search(loader.read_text())  # the pattern does find the loader's own loads
    assert offenders == [], "load GGUFs through llm_assets.core.llama_runtime:\n" + "\n".join(offenders)

"""The one way this project loads a GGUF into llama.cpp, and the CPU-specific decision that goes with it.

Evaluation, the server's model process, the converter's tokenizer check, `llm-assets doctor` and the
benchmarks all load through `load_model` / `load_llama`, so a llama.cpp setting is decided here once.

The decision today is about llama.cpp's *extra buffer types* (`use_extra_bufts`): the repacked weight
layouts that speed up q4_0/q4_K/iq4_nl matmuls on AVX2/AVX-512/ARM, and, in a build compiled with AMX,
the AMX kernels. Those AMX kernels segfault in `ggml_backend_amx_mul_mat` on Intel Xeons with AMX
(Sapphire Rapids and later: AWS m7i/c7i/r7i, GCP C3), so by default they are never used on such a CPU
when the build may contain them; everywhere else the repacked fast paths stay on. `repack="on"`
(config field `llama_repack`, server flag `--llama-repack`) is for a user who knows their build is good.

`decide_settings` is pure (CPU flags and the build's system info in, settings out), so it is tested on
any machine; llama_cpp is imported inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Literal

from llm_assets.core.errors import ConfigError

RepackMode = Literal["auto", "on", "off"]
REPACK_MODES: tuple[str, ...] = ("auto", "on", "off")
REPACK_HELP = ("llama.cpp's repacked weight layouts (extra buffer types): 'auto' uses them except on a CPU "
               "with AMX when the llama.cpp build may contain its AMX kernels (they segfault there); 'on' "
               "always (only for a build known to be good); 'off' never.")
AMX_FLAGS = frozenset({"amx_int8", "amx_tile", "amx_bf16"})
# /proc/cpuinfo flags worth printing (doctor, reports): what llama.cpp's CPU kernels dispatch on.
REPORTED_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx_vnni", "avx512f", "avx512_vnni",
                  "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "fphp", "sve")


@dataclass(frozen=True)
class LlamaSettings:
    """What the project asks of llama.cpp when it loads a model, and why."""

    use_extra_bufts: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"use_extra_bufts={self.use_extra_bufts} ({self.reason})"


def validate_repack(repack: str) -> RepackMode:
    if repack not in REPACK_MODES:
        raise ConfigError("llama_repack", repack, f"choose one of {', '.join(REPACK_MODES)}")
    return repack  # type: ignore[return-value]


def build_has_amx(system_info: str | None) -> bool | None:
    """Whether the llama.cpp build was compiled with AMX kernels; None when its system info does not say.

    The CPU backend's line ("CPU : SSE3 = 1 | AVX2 = 1 | ...") lists the features it was compiled with,
    so a CPU line without AMX_INT8 means a build without the AMX kernels.
    """
    if not system_info:
        return None
    if "AMX_INT8 = 1" in system_info:
        return True
    if "AMX_INT8 = 0" in system_info or "CPU : " in system_info:
        return False
    return None


def decide_settings(cpu_flags: Iterable[str], system_info: str | None, repack: str = "auto") -> LlamaSettings:
    """llama.cpp settings for this CPU and build; pure, so every CPU's answer is testable anywhere."""
    repack = validate_repack(repack)
    if repack == "on":
        return LlamaSettings(True, "llama_repack=on: repacked layouts forced on")
    if repack == "off":
        return LlamaSettings(False, "llama_repack=off: repacked layouts turned off")
    amx = sorted(AMX_FLAGS & set(cpu_flags))
    if not amx:
        return LlamaSettings(True, "no AMX on this CPU: repacked fast paths are safe")
    compiled = build_has_amx(system_info)
    if compiled is False:
        return LlamaSettings(True, f"CPU has {', '.join(amx)} but this llama.cpp build has no AMX kernels")
    why = "this llama.cpp build has AMX kernels" if compiled else "the build does not say whether it has AMX"
    return LlamaSettings(False, f"CPU has {', '.join(amx)} and {why}, which segfault in ggml_backend_amx_mul_mat")


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo: x86 `flags`, ARM `Features`); empty where unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_name(cpuinfo: str | None = None) -> str:
    try:
        cpuinfo = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware"):
            return value.strip()
    return platform.processor() or platform.machine()


def system_info() -> str:
    """The installed llama.cpp build's `llama_print_system_info()` (compiled features, backends)."""
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()


@functools.lru_cache(maxsize=None)
def settings_for_this_machine(repack: str = "auto") -> LlamaSettings:
    return decide_settings(cpu_flags(), system_info(), repack)


@contextlib.contextmanager
def quiet_llama_log():
    """Silence llama.cpp's notices while a model or context is made.

    llama-cpp-python maps llama.cpp's log levels off by one, so its warnings print even with verbose=False;
    the sizes they are about are chosen by this project on purpose.
    """
    logger = logging.getLogger("llama-cpp-python")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _model_params(settings: LlamaSettings, vocab_only: bool = False):
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = settings.use_extra_bufts
    params.vocab_only = vocab_only
    return params


def load_model(path: str | Path, repack: str = "auto", vocab_only: bool = False):
    """llama.cpp's model (llama-cpp-python's `_internals.LlamaModel`) with the project's settings.

    Returns (model, settings); the caller closes the model.
    """
    import llama_cpp
    from llama_cpp import _internals
    from llama_cpp._logger import set_verbose

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    settings = settings_for_this_machine(repack)
    set_verbose(False)
    llama_cpp.llama_backend_init()
    with quiet_llama_log():
        model = _internals.LlamaModel(path_model=str(path), params=_model_params(settings, vocab_only), verbose=False)
    return model, settings


# Llama() builds its model params inside __init__ from llama_model_default_params(); for the few lines
# of the load the project's settings become those defaults. The lock keeps two loads in one process from
# seeing each other's patch.
_DEFAULTS_LOCK = threading.Lock()


def load_llama(path: str | Path, repack: str = "auto", **kwargs):
    """llama-cpp-python's high-level `Llama` (chat templates, grammars) with the project's settings.

    Returns (llama, settings). Raises if the loaded model's params do not carry the settings, so a
    llama-cpp-python upgrade that builds its params another way fails loudly instead of silently.
    """
    import llama_cpp
    import llama_cpp.llama_cpp as lib

    settings = settings_for_this_machine(repack)
    with _DEFAULTS_LOCK:
        original = lib.llama_model_default_params

        def project_defaults():
            params = original()
            params.use_extra_bufts = settings.use_extra_bufts
            return params

        lib.llama_model_default_params = project_defaults
        try:
            with quiet_llama_log():
                llm = llama_cpp.Llama(model_path=str(path), verbose=False, **kwargs)
        finally:
            lib.llama_model_default_params = original
    if bool(llm.model_params.use_extra_bufts) != settings.use_extra_bufts:
        llm.close()
        raise RuntimeError(f"llama-cpp-python ignored use_extra_bufts={settings.use_extra_bufts} for {path}; "
                           "llm_assets.core.llama_runtime.load_llama needs updating for this version")
    return llm, settings

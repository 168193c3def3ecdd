"""Shared by the training tests: a one-layer tiny Llama built in seconds, and pet rows in its chat frame."""

from pathlib import Path

from llm_assets.core import pet_task, tiny_model

SMALL_SPEC = tiny_model.TinyModelSpec(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=1,
                                      num_heads=2, pretrain_steps=0)


def small_base(tmp_path_factory, n_rows: int, seed: int) -> tuple[Path, list[dict]]:
    """(model folder, n_rows pet rows with the prompt framed by the model's chat template)."""
    from transformers import AutoTokenizer

    rows = pet_task.generate_training_rows(n_rows, seed=seed)
    out = tmp_path_factory.mktemp("base")
    tiny_model.build_tiny_model(out, [r["prompt"] for r in rows], SMALL_SPEC,
                                vocabulary_texts=[r["completion"] for r in rows])
    tok = AutoTokenizer.from_pretrained(out)
    framed = [{"prompt": tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                                  add_generation_prompt=True),
               "completion": r["completion"]} for r in rows]
    return out, framed

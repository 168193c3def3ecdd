"""The embedded model's pretraining: object names are context, never targets."""

from llm_assets.core import pet_task, tiny_model


def test_pretrain_batch_pads_and_leaves_skipped_tokens_out_of_the_loss():
    input_ids, attention_mask, labels = tiny_model.pretrain_batch([[5, 6, 7], [8, 9]], pad_id=0, skip_ids={6})
    assert input_ids.tolist() == [[5, 6, 7], [8, 9, 0]]
    # The skipped token is still attended to (it is the context a name is copied from) ...
    assert attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    # ... but never predicted, and neither is padding.
    assert labels.tolist() == [[5, -100, 7], [8, 9, -100]]


def test_embedded_model_never_learns_to_guess_object_names(tmp_path, monkeypatch):
    rows = pet_task.generate_training_rows(40, seed=1)
    spec = tiny_model.TinyModelSpec(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=1,
                                    num_heads=2, pretrain_steps=2, pretrain_batch_size=4)
    seen = []
    original = tiny_model.pretrain_batch

    def recording(batch, pad_id, skip_ids=frozenset()):
        seen.append(skip_ids)
        return original(batch, pad_id, skip_ids)

    monkeypatch.setattr(tiny_model, "pretrain_batch", recording)
    info = tiny_model.build_tiny_model(tmp_path, [r["prompt"] for r in rows], spec,
                                       domain_words=pet_task.DOMAIN_WORDS, unguessable_words=pet_task.OBJECTS)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    object_ids = set(tokenizer.convert_tokens_to_ids(list(pet_task.OBJECTS)))
    assert len(seen) == 2 and all(s == object_ids for s in seen)
    assert tokenizer.unk_token_id not in object_ids and len(object_ids) == len(pet_task.OBJECTS)
    assert info["pretrain_loss"] == info["pretrain_loss"]  # finite, not NaN

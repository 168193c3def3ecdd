"""How rows become training batches: our own tokenization, padding-free batches, completion-only loss.

Real runs on a tiny model: tokenize_rows must give exactly what TRL's own preparation gives, and a
padding-free batch the same loss as a padded one (it differs when a token attends across rows).
"""

import pytest
from tests.core.tiny_bases import small_base
import torch

from llm_assets.core import training
from llm_assets.core.attention import unpadded_attention
from llm_assets.core.hyperparameters import TrainingParams


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return small_base(tmp_path_factory, 40, seed=7)


def tokenizer(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    return tok


def trl_prepared(model_dir, rows, max_length, tmp_path):
    """The train split as TRL's SFTTrainer prepares it from prompt/completion text."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(output_dir=str(tmp_path), max_length=max_length, completion_only_loss=True, report_to=[],
                       use_cpu=True, bf16=False)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=config,
                         train_dataset=Dataset.from_list(rows), processing_class=tokenizer(model_dir))
    return trainer.train_dataset


def test_our_tokenization_is_trls_labels_and_truncation_included(base, tmp_path):
    model_dir, rows = base
    tok = tokenizer(model_dir)
    longest_prompt = max(len(tok(r["prompt"])["input_ids"]) for r in rows)
    # A max_length that cuts completions short, and drops rows whose prompt alone fills it.
    for max_length in (256, longest_prompt):
        ours = training.tokenize_rows(tok, rows, max_length)
        theirs = trl_prepared(model_dir, rows, max_length, tmp_path / str(max_length))
        assert len(ours) == len(theirs) > 0
        assert ours["input_ids"] == theirs["input_ids"]
        assert ours["labels"] == theirs["labels"]
    assert len(training.tokenize_rows(tok, rows, longest_prompt)) < len(rows)  # the cut really dropped rows


def test_completion_only_labels_mask_the_prompt(base):
    model_dir, rows = base
    tok = tokenizer(model_dir)
    ds = training.tokenize_rows(tok, rows, 256)
    for row, ids, labels in zip(rows, ds["input_ids"], ds["labels"]):
        n_prompt = len(tok(row["prompt"])["input_ids"])
        assert labels[:n_prompt] == [-100] * n_prompt
        assert labels[n_prompt:] == ids[n_prompt:] and ids[-1] == tok.eos_token_id  # completion and EOS learned
        assert tok.decode(ids[n_prompt:], skip_special_tokens=True).strip() == row["completion"].strip()


def completion_nll(model_dir, rows) -> float:
    """Mean NLL of completion tokens (EOS included) under a saved model, computed apart from the trainer."""
    from transformers import AutoModelForCausalLM

    tok, model = tokenizer(model_dir), AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total = count = 0.0
    with torch.no_grad():
        for row in rows:
            p = tok(row["prompt"])["input_ids"]
            ids = tok(row["prompt"] + row["completion"] + tok.eos_token)["input_ids"]
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
            target = torch.tensor(ids[1:])
            keep = torch.arange(1, len(ids)) >= len(p)
            total += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
            count += int(keep.sum())
    assert count > 0
    return total / count


@pytest.mark.parametrize("padding_free", [False, True])
def test_eval_loss_counts_completion_tokens_only(base, tmp_path, padding_free):
    model_dir, rows = base
    params = TrainingParams(batch_size=8, max_steps=2, logging_steps=1, warmup_ratio=0.0, precision="fp32",
                            padding_free=padding_free)
    result = training.train_sft(model_dir, rows[:32], rows[32:], tmp_path / "out", tmp_path / "ckpt", params)
    # With the prompt's tokens in the loss, the trainer's eval loss would not match this completion-only one.
    assert result["eval_loss"] == pytest.approx(completion_nll(tmp_path / "out", rows[32:]), rel=1e-3)


def first_losses(base, tmp_path, padding_free, attention):
    model_dir, rows = base
    params = TrainingParams(batch_size=8, max_steps=3, logging_steps=1, warmup_ratio=0.0, precision="fp32",
                            padding_free=padding_free, attention=attention)
    result = training.train_sft(model_dir, rows[:32], rows[32:], tmp_path / "out", tmp_path / "ckpt", params)
    return [h["loss"] for h in result["history"] if "loss" in h], result["eval_loss"]


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_padding_free_batches_train_as_padded_ones(base, tmp_path, attention):
    padded, padded_eval = first_losses(base, tmp_path / "padded", False, attention)
    free, free_eval = first_losses(base, tmp_path / "free", True, attention)
    # Three optimizer steps on the same rows in the same order: the same losses up to rounding. A token
    # attending across rows moves the loss by percents (measured 8.68 vs 9.17 on the embedded model).
    assert free == pytest.approx(padded, rel=1e-4)
    assert free_eval == pytest.approx(padded_eval, rel=1e-4)


def test_padding_free_attention_refuses_a_batch_without_row_boundaries():
    name = unpadded_attention("eager")
    from transformers import AttentionInterface

    q = torch.zeros(1, 2, 5, 4)
    with pytest.raises(ValueError, match="padding-free"):
        AttentionInterface._global_mapping[name](torch.nn.Module(), q, q, q, None)


@pytest.mark.parametrize("padding_free", [False, True])
def test_our_loss_and_gradients_are_trls_on_the_same_batch(base, tmp_path, padding_free):
    """completion_loss keeps only the logits some row has a target for; TRL's own loss scores every position
    through its tiled LM-head kernel. On one batch both give the same loss and the same gradients."""
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from llm_assets.core.completion_loss import sft_trainer_class

    model_dir, rows = base
    tok = tokenizer(model_dir)
    config = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, completion_only_loss=True,
                       max_length=None, dataset_kwargs={"skip_prepare_dataset": True}, padding_free=padding_free,
                       report_to=[], use_cpu=True, bf16=False)
    data = training.tokenize_rows(tok, rows[:8], None)
    attention = {"attn_implementation": unpadded_attention("eager")} if padding_free else {}
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **attention)
    theirs = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tok)
    ours = sft_trainer_class()(model=model, args=config, train_dataset=data, processing_class=tok)
    batch = next(iter(theirs.get_train_dataloader()))
    labelled = (batch["shift_labels"] if "shift_labels" in batch else batch["labels"][:, 1:]).ne(-100).sum()
    assert labelled > 0

    def loss_and_grads(trainer, count):
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=count)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for count in (None, labelled):
        our_loss, our_grads = loss_and_grads(ours, count)
        their_loss, their_grads = loss_and_grads(theirs, count)
        assert our_loss == pytest.approx(their_loss, rel=1e-5) and our_loss > 0
        assert len(our_grads) == len(their_grads)
        for a, b in zip(our_grads, their_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_packed_batch_padded_to_a_multiple_trains_as_the_unpadded_one(base, tmp_path):
    """The pad tokens that round a padding-free batch's length up form one sequence of their own: no row
    attends to them, and they are never a target, so loss and gradients are the unpadded batch's."""
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from llm_assets.core.completion_loss import pad_packed_batch, sft_trainer_class

    model_dir, rows = base
    tok = tokenizer(model_dir)
    config = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, completion_only_loss=True,
                       max_length=None, dataset_kwargs={"skip_prepare_dataset": True}, padding_free=True,
                       report_to=[], use_cpu=True, bf16=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 attn_implementation=unpadded_attention("eager"))
    trainer = sft_trainer_class()(model=model, args=config, train_dataset=training.tokenize_rows(tok, rows[:8], None),
                                  processing_class=tok)
    plain = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(
        [trainer.train_dataset[i] for i in range(8)])
    n = plain["input_ids"].shape[1]
    padded = pad_packed_batch(plain, 64, tok.pad_token_id)
    width = padded["input_ids"].shape[1]
    assert width % 64 == 0 and width > n and padded["labels"][0, n:].eq(-100).all()
    assert padded["cu_seq_lens_q"].tolist() == plain["cu_seq_lens_q"].tolist() + [width]
    assert padded["position_ids"][0, n:].tolist() == list(range(width - n))
    assert pad_packed_batch(padded, 64, tok.pad_token_id) is padded  # a multiple already: left alone

    def loss_and_grads(batch):
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    (loss_a, grads_a), (loss_b, grads_b) = loss_and_grads(plain), loss_and_grads(padded)
    assert loss_b == pytest.approx(loss_a, rel=1e-5) and loss_a > 0
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # What train_sft hands the model: its collator rounds every batch up the same way.
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[1] % 64 == 0


def test_the_lm_head_runs_in_full_precision_under_bf16_autocast(base):
    """The head's product and gradients stay fp32 under autocast, as TRL's kernel accumulates them (in bf16 the
    embedded model learned to copy targets out of the question far less often)."""
    from transformers import AutoModelForCausalLM

    from llm_assets.core.completion_loss import full_precision_head

    model_dir, _ = base
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(input_ids=ids).logits.dtype == torch.bfloat16
        full_precision_head(model)
        full_precision_head(model)  # once is enough; a second call changes nothing
        logits = model(input_ids=ids).logits
    assert logits.dtype == torch.float32
    logits.sum().backward()
    assert model.get_output_embeddings().weight.grad.dtype == torch.float32

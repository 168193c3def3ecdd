"""The fine-tuning loss: one cross-entropy over the completion tokens, with logits only where a target is.

TRL's SFTTrainer scores each batch through its tiled LM-head kernel and, on every step, also computes the
entropy and token accuracy of its logs, which nothing here reads. On a small model that is a fifth of a
step (embedded model: about 8 ms of the forward and 11 ms of the backward, of 94 ms). This loss asks the
model for the logits of only the positions some row of the batch has a target for (`logits_to_keep`, the
prompt-only columns of a batch never reach the LM head) and takes one cross-entropy over them: the same
value TRL's kernel computes, and the same code on a GPU.

The LM head runs in fp32 outside autocast (`full_precision_head`), as TRL's kernel accumulates its gradients:
with the head's product and gradients rounded to bf16, the embedded model learned to copy the target out of the
question in 1 of 3 `make demo` runs (seeds 0, 1, 2: 0.948, 0.836, 0.860 strict accuracy), where TRL's own loss
had done so in 2 of 2 (seeds 0 and 1); with the head in fp32, in 2 of 3 (0.964, 0.968, 0.876).
"""

from __future__ import annotations

import inspect

IGNORE = -100


def completion_loss(model, inputs: dict, num_items_in_batch=None, keep_logits: bool | None = None):
    """(loss, outputs) for a batch of `inputs` with `labels` (or pre-shifted `shift_labels`, as padding-free
    collators give them): the summed negative log-likelihood of the labelled tokens, divided by
    `num_items_in_batch` (the Trainer's count over every micro-batch of the step) or else by this batch's count.
    `keep_logits`: whether the model takes logits_to_keep (None: look at its forward's signature now).
    """
    import torch

    inputs = dict(inputs)
    labels, shifted = inputs.pop("labels"), inputs.pop("shift_labels", None)
    targets = shifted if shifted is not None else labels[:, 1:]  # hidden state p predicts targets[:, p]
    positions = (targets != IGNORE).any(0).nonzero().squeeze(1)
    inputs["use_cache"] = False
    if keep_logits is None:
        keep_logits = keeps_logits(model)
    if keep_logits:
        outputs = model(**inputs, logits_to_keep=positions)
        logits = outputs.logits
    else:
        outputs = model(**inputs)
        logits = outputs.logits[:, positions]
    target = targets[:, positions]
    total = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), target.flatten(),
                                              ignore_index=IGNORE, reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else (target != IGNORE).sum()
    # A batch without a labelled token gives a zero loss, not 0 / 0.
    return total / torch.as_tensor(count, device=total.device).clamp(min=1), outputs


def keeps_logits(model) -> bool:
    """Does the (unwrapped) model's forward take logits_to_keep (most transformers causal LMs do)?"""
    return "logits_to_keep" in inspect.signature(_unwrapped(model).forward).parameters


def _unwrapped(model):
    """The transformers model inside DistributedDataParallel and PEFT wrappers."""
    inner = getattr(model, "module", model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def full_precision_head(model) -> None:
    """Make the model's LM head compute in fp32 outside autocast (once; the weights stay what they are).

    The head of a small vocabulary is a sliver of a step; its gradients, which also train the tied input
    embeddings, are where bf16 rounding hurt (see the module's docstring)."""
    import torch

    head = _unwrapped(model).get_output_embeddings()
    if head is None or getattr(head, "full_precision", False):
        return
    rounded = head.forward

    def forward(hidden, *args, **kwargs):
        with torch.autocast(hidden.device.type, enabled=False):
            return rounded(hidden.float(), *args, **kwargs)

    head.forward, head.full_precision = forward, True


# A padding-free batch is one sequence of all its rows. With bf16 autocast on a CPU, a matrix product of a shape
# not seen before costs about 1 ms to set up (oneDNN builds a kernel per shape; 0.8-1.0 ms against 0.08-0.2 ms
# for a product of a shape already built, embedded model's sizes), and the summed length of 16 rows is new almost
# every step. Rounded up to a multiple of 64 the lengths take a handful of values.
PACKED_LENGTH_MULTIPLE = 64


def pad_packed_batch(batch: dict, multiple: int, pad_id: int) -> dict:
    """A padding-free batch (TRL's collator: one row of concatenated sequences, position ids restarting per
    sequence, boundaries in cu_seq_lens) lengthened to a multiple of `multiple` with one more sequence of pad
    tokens that is never a target. TRL's own pad_to_multiple_of would make each pad token a sequence of its own,
    a row of the padding-free attention each."""
    import torch

    n = batch["input_ids"].shape[1]
    extra = -n % multiple
    if not extra:
        return batch
    out = dict(batch)

    def append(key, tail):
        out[key] = torch.cat([batch[key], tail.to(batch[key].dtype).reshape(1, extra)], dim=1)

    append("input_ids", torch.full((extra,), pad_id))
    append("labels", torch.full((extra,), -100))
    append("position_ids", torch.arange(extra))
    if "seq_idx" in batch:
        append("seq_idx", torch.full((extra,), batch["cu_seq_lens_q"].numel() - 1))
    for side in ("q", "k"):
        cu = batch[f"cu_seq_lens_{side}"]
        out[f"cu_seq_lens_{side}"] = torch.cat([cu, cu.new_tensor([n + extra])])
        out[f"max_length_{side}"] = max(int(batch[f"max_length_{side}"]), extra)
    return out


def sft_trainer_class():
    """TRL's SFTTrainer with `completion_loss` in place of its own loss and logged metrics."""
    from trl import SFTTrainer

    class CompletionLossSFTTrainer(SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            full_precision_head(self.model)
            self.keeps_logits = keeps_logits(self.model)  # once, not on every step
            if self.args.padding_free:
                collate, pad_id = self.data_collator, self.processing_class.pad_token_id
                self.data_collator = lambda rows: pad_packed_batch(collate(rows), PACKED_LENGTH_MULTIPLE, pad_id)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = completion_loss(model, inputs, num_items_in_batch, self.keeps_logits)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                # The count spans every device while DDP averages their gradients (as TRL and Trainer scale it).
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    return CompletionLossSFTTrainer

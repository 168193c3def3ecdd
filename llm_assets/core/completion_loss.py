"""The fine-tuning loss: one cross-entropy over the completion tokens, with logits only where a target is.

TRL's SFTTrainer scores each batch through its tiled LM-head kernel and, on every step, also computes the
entropy and token accuracy of its logs, which nothing here reads. On a small model that is a fifth of a
step (embedded model: about 8 ms of the forward and 11 ms of the backward, of 94 ms). This loss asks the
model for the logits of only the positions some row of the batch has a target for (`logits_to_keep`, the
prompt-only columns of a batch never reach the LM head) and takes one cross-entropy over them: the same
value TRL's kernel computes, in the same autocast, and the same code on a GPU.
"""

from __future__ import annotations

import inspect

IGNORE = -100


def completion_loss(model, inputs: dict, num_items_in_batch=None):
    """(loss, outputs) for a batch of `inputs` with `labels` (or pre-shifted `shift_labels`, as padding-free
    collators give them): the summed negative log-likelihood of the labelled tokens, divided by
    `num_items_in_batch` (the Trainer's count over every micro-batch of the step) or else by this batch's count.
    """
    import torch

    inputs = dict(inputs)
    labels, shifted = inputs.pop("labels"), inputs.pop("shift_labels", None)
    targets = shifted if shifted is not None else labels[:, 1:]  # hidden state p predicts targets[:, p]
    positions = (targets != IGNORE).any(0).nonzero().squeeze(1)
    inputs["use_cache"] = False
    if keeps_logits(model):
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
    inner = getattr(model, "module", model)  # DistributedDataParallel
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # PEFT
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def sft_trainer_class():
    """TRL's SFTTrainer with `completion_loss` in place of its own loss and logged metrics."""
    from trl import SFTTrainer

    class CompletionLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = completion_loss(model, inputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                # The count spans every device while DDP averages their gradients (as TRL and Trainer scale it).
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    return CompletionLossSFTTrainer

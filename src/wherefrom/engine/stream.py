"""The one streaming engine behind every pass: covariance, eigenvalue correction, query gradients, scoring.

For each batch it runs one forward pass with hooks that keep each tracked layer's input ā, then one backward
pass that computes only the gradients of the token-summed loss with respect to the tracked layers' outputs
(Ds; weights stay frozen, so no weight gradient is ever formed). Each pass is a small consumer of the
resulting :class:`LayerBatch` stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from wherefrom.data.batching import Batch
from wherefrom.errors import WherefromError
from wherefrom.models.selection import TrackedLayer
from wherefrom.progress import track

LabelSource = Literal["data", "sampled"]


@dataclass
class LayerBatch:
    """What one tracked layer saw in one batch."""

    inputs: torch.Tensor  # ā: [B, T, in(+1)], zero at padding; layers reading the same tensor share this object
    output_grads: torch.Tensor  # Ds = ∂L/∂s: [B, T, out], zero at padding


@dataclass
class StreamBatch:
    """One batch's captured activity for every tracked layer, and each row's loss."""

    batch: Batch
    layers: dict[str, LayerBatch]
    loss: torch.Tensor  # [B] token-summed negative log-likelihood of the batch's targets (data or sampled)


@dataclass(frozen=True)
class Labels:
    """Which targets the loss uses: the data's tokens, or tokens sampled from the model (seeded per row)."""

    source: LabelSource = "data"
    seed: int = 0

    def targets(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Target token at each position t (predicted from position t-1): [B, T]."""
        if self.source == "data":
            return batch.input_ids
        probs = torch.softmax(logits.detach().float(), dim=-1)
        sampled = torch.empty_like(batch.input_ids)
        sampled[:, 0] = batch.input_ids[:, 0]
        for b, row in enumerate(batch.rows.tolist()):
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + row)
            sampled[b, 1:] = torch.multinomial(probs[b, :-1], 1, generator=generator).squeeze(1)
        return sampled


def stream(model: nn.Module, layers: list[TrackedLayer], batches: Iterable[Batch], n_batches: int,
           labels: Labels, description: str, quiet: bool = False) -> Iterator[StreamBatch]:
    """Run forward + activation-only backward over ``batches``, yielding each layer's ā and Ds."""
    with _Capture(model, layers) as capture:
        for batch in track(batches, n_batches, description, quiet):
            logits = _logits(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask))
            if not torch.isfinite(logits).all():
                raise _non_finite_error(capture, layers, batch)
            targets = labels.targets(logits, batch)
            loss = token_summed_nll(logits, targets, batch.target_mask)
            outputs = [capture.outputs[layer.name] for layer in layers]
            grads = torch.autograd.grad(loss.sum(), outputs, allow_unused=True)
            mask = batch.attention_mask.unsqueeze(-1).to(logits.dtype)
            inputs = capture.homogeneous_inputs(mask)
            yield StreamBatch(
                batch,
                {
                    layer.name: LayerBatch(inputs[layer.name], _zeros_if_none(grad, output))
                    for layer, grad, output in zip(layers, grads, outputs)
                },
                loss.detach(),
            )
            capture.clear()


def token_summed_nll(logits: torch.Tensor, targets: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Per-row Σ_t -log p(targets[t] | tokens < t), over positions where ``target_mask`` is 1: [B]."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # the loss in half precision loses the small log-probabilities
    # Position t predicts token t+1: shift the targets, not the logits (slicing the logits would copy them).
    shifted = torch.full_like(targets, -100)
    shifted[:, :-1] = torch.where(target_mask[:, 1:].bool(), targets[:, 1:], -100)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), shifted.reshape(-1), reduction="none")
    return nll.view(targets.shape).sum(dim=1)


def _non_finite_error(capture: _Capture, layers: list[TrackedLayer], batch: Batch) -> WherefromError:
    """Name the first tracked layer whose output overflowed, and the rows that did it."""
    culprit = next((layer.name for layer in layers if not torch.isfinite(capture.outputs[layer.name]).all()), None)
    where = f"layer {culprit} produced NaN or inf" if culprit else "the model's logits hold NaN or inf"
    return WherefromError(
        f"{where} on sequences {batch.rows.tolist()}. Check that the model loads correctly (a corrupt or "
        "mis-converted checkpoint), run it in float32 rather than float16, and look at those corpus records."
    )


def _logits(output: object) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output  # HF ModelOutput or a bare tensor


def _zeros_if_none(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


class _Capture:
    """Forward hooks that keep each tracked layer's input and output for one batch."""

    def __init__(self, model: nn.Module, layers: list[TrackedLayer]) -> None:
        self.model, self.layers = model, layers
        self.raw_inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> _Capture:
        embeddings = self.model.get_input_embeddings()
        if embeddings is None:
            raise WherefromError("the model exposes no input embeddings (get_input_embeddings()); wherefrom needs "
                                 "them to start the activation-only backward pass.")
        # Weights are frozen, so the graph starts at the embedding output: the backward pass then forms only
        # activation gradients, never weight gradients.
        self._handles.append(embeddings.register_forward_hook(lambda _m, _i, out: out.requires_grad_(True)))
        for layer in self.layers:
            self._handles.append(layer.module.register_forward_hook(self._keeper(layer.name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self.clear()

    def _keeper(self, name: str):  # noqa: ANN202 - a hook closure
        def keep(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self.raw_inputs[name] = inputs[0]
            self.outputs[name] = output

        return keep

    def homogeneous_inputs(self, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """ā per layer, zeroed at padding; layers that read the same input tensor share one ā tensor."""
        shared: dict[tuple[int, bool], torch.Tensor] = {}
        result = {}
        for layer in self.layers:
            raw = self.raw_inputs[layer.name]
            key = (id(raw), layer.shape.has_bias)
            if key not in shared:
                a = raw.detach() * mask
                shared[key] = torch.cat([a, mask.expand(*a.shape[:-1], 1)], dim=-1) if layer.shape.has_bias else a
            result[layer.name] = shared[key]
        return result

    def clear(self) -> None:
        self.raw_inputs.clear()
        self.outputs.clear()

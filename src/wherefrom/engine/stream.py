"""The one streaming engine behind every pass: covariance, eigenvalue correction, query gradients, scoring, index.

For each batch it runs one forward pass whose hooks (each layer type's own, `models/layers.py`: a module hook,
a routed loop over experts, a watch on a router's linear call) take each tracked layer's input ā and output s
in the batch's [B, T, ·] layout, then one backward pass
that computes only activation gradients (weights stay frozen, so no weight gradient is ever formed). A hook on
each tracked layer's output hands the layer's (ā, Ds = ∂L/∂s) to the pass's consumer the moment the backward
pass reaches it, and both are released right after: one batch holds Ds of one layer at a time, and ā only
until the backward pass reaches its layer. A consumer that needs ā alone (the covariance pass: A = E[ā āᵀ])
takes it during the forward pass, so nothing of the batch is held for it. Each pass is a small consumer
(:class:`LayerConsumer`).

Precision: the forward and backward passes run in the model's dtype and ā, Ds stay in it (docs/precision.md);
only the loss is formed in float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from wherefrom.allocator import Workspace
from wherefrom.data.batching import Batch
from wherefrom.errors import WherefromError
from wherefrom.models.selection import TrackedLayer
from wherefrom.progress import track

LabelSource = Literal["data", "sampled"]


@dataclass
class LayerBatch:
    """What one tracked layer saw in one batch."""

    inputs: torch.Tensor | None  # ā: [B, T, in(+1)], zero at padding; None for consumers that took it in forward
    output_grads: torch.Tensor  # Ds = ∂L/∂s: [B, T, out], zero at padding
    routed: bool = False  # an expert's: ā and Ds are also zero at every token not routed to it

    def routed_tokens_only(self) -> LayerBatch:
        """For an expert, the same per-sequence sums Σ_t Ds_t ā_tᵀ over fewer positions: each sequence's routed
        tokens moved first, cut to the most any sequence of the batch has (the rest are zero rows); else itself."""
        if not self.routed or self.inputs is None:
            return self
        routed = self.inputs.ne(0).any(dim=-1)  # [B, T]
        width = int(routed.sum(dim=1).max())
        if width == routed.shape[1]:
            return self
        first = torch.argsort((~routed).to(torch.int8), dim=1, stable=True)[:, :width, None]
        return LayerBatch(self.inputs.gather(1, first.expand(-1, -1, self.inputs.shape[-1])),
                          self.output_grads.gather(1, first.expand(-1, -1, self.output_grads.shape[-1])), True)


def sequence_products(first: torch.Tensor, second: torch.Tensor, workspace: Workspace | None = None,
                      name: str = "Σ_t") -> torch.Tensor:
    """Σ_t first_t second_tᵀ for each sequence of the batch (first [B, T, m], second [B, T, n]): [B, m, n], e.g.
    DW̄ = Σ_t Ds_t ā_tᵀ, the per-sequence gradient. With ``workspace``, into its buffer ``name``, reused batch after
    batch (a fresh product of this size per layer and batch costs page faults that rival the product itself)."""
    out = None if workspace is None else workspace.get(name, (first.shape[0], first.shape[2], second.shape[2]),
                                                      first.dtype)
    return torch.bmm(first.transpose(1, 2), second, out=out)


@dataclass
class StreamBatch:
    """A batch the stream has finished, and each row's loss."""

    batch: Batch
    loss: torch.Tensor  # [B] token-summed negative log-likelihood of the batch's targets (data or sampled)


class LayerConsumer:
    """What a pass does with the stream: each batch's layers are handed over one at a time, in the order the
    backward pass reaches them (the last tracked layer first). Subclasses override the steps they use."""

    inputs_in_forward = False  # True: ā arrives in :meth:`inputs` during the forward pass, :meth:`layer` gets Ds

    def begin(self, batch: Batch) -> None:
        """A batch starts."""

    def inputs(self, name: str, inputs: torch.Tensor) -> None:
        """Layer ``name``'s ā as the forward pass leaves the layer (only with ``inputs_in_forward``). Layers that
        read the same tensor (gate_proj, up_proj) get the same ā object, one after the other."""

    def layer(self, name: str, layer: LayerBatch) -> None:
        """Layer ``name``'s ā and Ds; neither may be kept past the call."""

    def end(self, loss: torch.Tensor) -> None:
        """The batch is done; ``loss`` [B] is each row's loss."""


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
            # Drawn where the logits are; on the CPU the draws are those of every earlier version.
            generator = torch.Generator(probs.device).manual_seed(self.seed * 1_000_003 + row)
            sampled[b, 1:] = torch.multinomial(probs[b, :-1], 1, generator=generator).squeeze(1)
        return sampled


def stream(model: nn.Module, layers: list[TrackedLayer], batches: Iterable[Batch], n_batches: int,
           labels: Labels, consumer: LayerConsumer, description: str, quiet: bool = False) -> Iterator[StreamBatch]:
    """Run forward + activation-only backward over ``batches`` (already on the model's device), feeding each
    layer's ā and Ds to ``consumer``; yields each batch once the consumer has seen all of it."""
    with _Capture(model, layers, consumer) as capture:
        for batch in track(batches, n_batches, description, quiet):
            consumer.begin(batch)
            capture.start(batch)
            logits = _logits(model(**model_inputs(model, batch)))
            if not all_finite(logits):
                capture.close()
                raise _non_finite_error(model, layers, batch)
            loss = token_summed_nll(logits, labels.targets(logits, batch), batch.target_mask)
            del logits
            capture.backward(loss.sum())
            consumer.end(loss.detach())
            yield StreamBatch(batch, loss.detach())


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every entry is finite, from its minimum and maximum (NaN and ±inf show in them): one read of the
    tensor, 20× cheaper than ``torch.isfinite(tensor).all()`` on a batch's logits."""
    return tensor.numel() == 0 or bool(torch.isfinite(torch.stack(torch.aminmax(tensor))).all())


def model_inputs(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor | bool]:
    """The forward pass's arguments, without a key/value cache where the model keeps one (a pass never generates,
    and building the cache copies every layer's keys and values: 1% of a SmolLM2-135M pass)."""
    inputs: dict[str, torch.Tensor | bool] = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    if getattr(getattr(model, "config", None), "use_cache", None) is not None:
        inputs["use_cache"] = False
    return inputs


def token_summed_nll(logits: torch.Tensor, targets: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Per-row Σ_t -log p(targets[t] | tokens < t), over positions where ``target_mask`` is 1: [B]."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # the loss in half precision loses the small log-probabilities
    # Position t predicts token t+1: shift the targets, not the logits (slicing the logits would copy them).
    shifted = torch.full_like(targets, -100)
    shifted[:, :-1] = torch.where(target_mask[:, 1:].bool(), targets[:, 1:], -100)
    nll = _TokenNLL.apply(logits.reshape(-1, logits.shape[-1]), shifted.reshape(-1))
    return nll.view(targets.shape).sum(dim=1)


_LOGSUMEXP_BYTES = 2 * 1024 * 1024


class _TokenNLL(torch.autograd.Function):
    """-log softmax(logits)[target] per row of logits [N, V] (0 where the target is -100), whose backward pass
    forms softmax - one-hot in one [N, V] tensor. ``F.cross_entropy`` keeps the log-probabilities for its backward
    pass and forms two more [N, V] tensors in it: on a 49,152-token vocabulary each is 100 MB per batch of 512
    tokens, and one of them is live at the pass's peak (the start of the backward pass)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor, targets: torch.Tensor
                ) -> torch.Tensor:
        counted = targets.ne(-100)
        picked = targets.clamp_min(0).unsqueeze(1)
        # logsumexp forms exp(logits - max) whole: a few rows at a time, that temporary stays small and is reused
        rows = max(1, _LOGSUMEXP_BYTES // max(1, logits.shape[1] * logits.element_size()))
        log_normaliser = torch.cat([torch.logsumexp(chunk, dim=1) for chunk in logits.split(rows)])
        ctx.save_for_backward(logits, log_normaliser, picked, counted)
        return (log_normaliser - logits.gather(1, picked).squeeze(1)) * counted

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, log_normaliser, picked, counted = ctx.saved_tensors
        weight = (grad * counted).unsqueeze(1)
        softmax = torch.sub(logits, log_normaliser.unsqueeze(1)).exp_()
        return softmax.mul_(weight).scatter_add_(1, picked, -weight), None


def _non_finite_error(model: nn.Module, layers: list[TrackedLayer], batch: Batch) -> WherefromError:
    """Name the first tracked layer whose output overflows on ``batch`` (found by running it again), and its rows."""
    culprits: list[str] = []

    def checker(name: str):  # noqa: ANN202 - a hook closure
        def check(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            if not culprits and not torch.isfinite(output).all():
                culprits.append(name)

        return check

    handles = [layer.module.register_forward_hook(checker(layer.name)) for layer in layers]
    try:
        with torch.no_grad():
            model(**model_inputs(model, batch))
    finally:
        for handle in handles:
            handle.remove()
    where = f"layer {culprits[0]} produced NaN or inf" if culprits else "the model's logits hold NaN or inf"
    return WherefromError(
        f"{where} on sequences {batch.rows.tolist()}. Check that the model loads correctly (a corrupt or "
        "mis-converted checkpoint), run it in float32 rather than float16, and look at those corpus records."
    )


def _logits(output: object) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output  # HF ModelOutput or a bare tensor


class _Capture:
    """Each layer type's hooks hand the engine every tracked layer's input and output as the forward pass runs; the
    output's gradient hook hands (ā, Ds) to the consumer during the backward pass. Inputs and outputs are brought
    to the batch's [B, T, ·] layout whatever the model did to them first: flattened to [B·T, ·] (OPT, MoE blocks)
    or only the rows routed to an expert (scattered back, zero at the other tokens)."""

    def __init__(self, model: nn.Module, layers: list[TrackedLayer], consumer: LayerConsumer) -> None:
        self.model, self.layers, self.consumer = model, layers, consumer
        self.by_name = {layer.name: layer for layer in layers}
        # ā and Ds in the dtype of the layer's weight: a router that computes its logits in float32 hands them over
        # in the model's dtype like every other layer.
        self.dtypes = {layer.name: getattr(layer.module, layer.weight).dtype for layer in layers}
        self.inputs: dict[str, torch.Tensor] = {}  # ā of layers the backward pass has not reached yet
        self.pending: dict[str, tuple[torch.Size, torch.dtype]] = {}  # layers run whose Ds has not arrived: shape
        self.origin: torch.Tensor | None = None  # the embedding output: where the backward pass stops
        self._mask: torch.Tensor | None = None
        self._last: tuple[torch.Tensor, bool, torch.Tensor] | None = None  # (raw input, bias column, ā)
        self._ran: set[str] = set()  # layers whose module ran in this batch's forward pass
        self._undo: list = []

    def __enter__(self) -> _Capture:
        embeddings = self.model.get_input_embeddings()
        if embeddings is None:
            raise WherefromError("the model exposes no input embeddings (get_input_embeddings()); wherefrom needs "
                                 "them to start the activation-only backward pass.")
        # Weights are frozen, so the graph starts at the embedding output: the backward pass then forms only
        # activation gradients, never weight gradients.
        self._undo.append(embeddings.register_forward_hook(self._start_graph).remove)
        by_module: dict[int, list[TrackedLayer]] = {}
        for layer in self.layers:
            by_module.setdefault(id(layer.module), []).append(layer)
        for group in by_module.values():
            self._undo.append(group[0].layer_type.attach(group[0].module, group, self._take))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Undo the hooks and drop what the batch holds."""
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self._reset()

    def start(self, batch: Batch) -> None:
        self._reset()
        self._mask = batch.attention_mask.unsqueeze(-1)

    def _start_graph(self, _module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        """The embedding output as a leaf that requires grad, handed on as a copy: models that scale it in place
        (CTRL) may, as they could not with the leaf itself."""
        self.origin = output.detach().requires_grad_(True)
        return self.origin.clone()

    def backward(self, loss: torch.Tensor) -> None:
        """Backward from ``loss`` down to the embedding output, each layer's gradient hook consuming its part on the
        way. Every tracked layer computes from that output, so the backward pass reaches them all, whatever reads
        which view of the hidden states (a router, routed and shared experts, a flattened MLP); a layer whose output
        does not reach the loss (or an expert no token was routed to) gets Ds = 0."""
        self._last = None  # the forward pass is over: no later layer can share it
        if len(self._ran) != len(self.layers):
            self._never_ran()
        if self.origin is not None and self.origin.requires_grad:
            torch.autograd.grad(loss, [self.origin], allow_unused=True)
        for name in [layer.name for layer in self.layers if layer.name in self.pending]:
            self._consume(name, None)
        self._reset()

    def _take(self, name: str, raw: torch.Tensor, output: torch.Tensor, rows: torch.Tensor | None) -> None:
        """A tracked layer ran: keep its ā (or hand it to the consumer now) and hook its output's gradient."""
        self._ran.add(name)
        a = self._homogeneous(name, raw, rows)
        if self.consumer.inputs_in_forward:
            self.consumer.inputs(name, a)
        else:
            self.inputs[name] = a
        shape = (*self._mask.shape[:2], output.shape[-1])
        self.pending[name] = (torch.Size(shape), self.dtypes[name])
        if output.requires_grad:
            output.register_hook(lambda grad: self._consume(
                name, self._per_token(name, grad, rows, summed=True).to(self.dtypes[name])))

    def _per_token(self, name: str, x: torch.Tensor, rows: torch.Tensor | None, summed: bool = False) -> torch.Tensor:
        """``x`` in the batch's [B, T, ·] layout: scattered from the routed ``rows`` (zero elsewhere), or unflattened.
        A token can reach one expert twice (LongCat routes its zero-computation experts' slots to real experts with
        weight 0): its rows of ā are the same, and its rows of Ds are ``summed``, since Σ_r Ds_r āᵀ = (Σ_r Ds_r) āᵀ."""
        B, T = self._mask.shape[:2]
        if rows is not None:
            full = x.new_zeros(B * T, x.shape[-1])
            if summed:
                full.index_add_(0, rows, x)
            else:
                full[rows] = x
            return full.view(B, T, -1)
        if x.shape[:-1] == (B, T):
            return x
        if x.shape[:-1].numel() != B * T:
            raise WherefromError(f"layer {name} sees a tensor of shape {tuple(x.shape)}, which does not hold one row per "
                                 f"token of the batch ({B} × {T}); wherefrom cannot tell which token each row is.")
        return x.reshape(B, T, x.shape[-1])

    def _homogeneous(self, name: str, raw: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """ā: the input zeroed at padding (and at tokens not routed to the layer), with a column of ones (zero there
        too) for a bias. Consecutive layers reading the same tensor share one ā."""
        bias = self.by_name[name].shape.has_bias
        if rows is None and self._last is not None and self._last[0] is raw and self._last[1] == bias:
            return self._last[2]
        raw = raw.to(self.dtypes[name])
        mask = self._mask.to(raw.dtype)
        a = self._per_token(name, raw.detach(), rows)
        if rows is not None:
            mask = mask * self._per_token(name, raw.new_ones(rows.shape[0], 1), rows)
        a = a * mask
        if bias:
            a = torch.cat([a, mask.expand(*a.shape[:-1], 1)], dim=-1)
        if rows is None:
            self._last = (raw, bias, a)
        return a

    def _consume(self, name: str, grad: torch.Tensor | None) -> None:
        shape, dtype = self.pending.pop(name)
        if grad is None:
            grad = torch.zeros(shape, dtype=dtype, device=self._mask.device)
        self.consumer.layer(name, LayerBatch(self.inputs.pop(name, None), grad, self.by_name[name].expert is not None))

    def _never_ran(self) -> None:
        """Refuse layers whose module never ran in the forward pass: the model multiplies by their weights directly
        (a router reading ``classifier.weight``), so no hook can see their inputs and outputs."""
        missing = [layer.name for layer in self.layers if layer.name not in self._ran]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WherefromError(
            f"layer {missing[0]}{more} never ran as a module in the forward pass: the model uses its weight directly, "
            "so wherefrom cannot see its inputs and outputs. Leave it out: choose another --modules preset or a "
            "regular expression that excludes it."
        )

    def _reset(self) -> None:
        self._ran = set()
        self.inputs.clear()
        self.pending = {}
        self.origin, self._last = None, None

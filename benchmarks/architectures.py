"""Every causal-LM architecture of the installed transformers, built tiny from its config, through fit and score.

    python benchmarks/architectures.py [--only mixtral,opt] [--out benchmarks/results]

For each entry of transformers' causal-LM auto mapping: build the model from its default config shrunk
generically (hidden size, layers, heads, experts, vocabulary), on the CPU in float32, and run one forward and
backward. Architectures that cannot be built or run this way are listed with the reason and do not count. For
each one that runs: `wherefrom fit` and `wherefrom score` through the command line (in this process, with
typer's runner) with `--strategy identity` and with EK-FAC, and identity's scores compared with float64 autograd
dot products of the same parameters' gradients (the model reloaded in float64, plain `.backward()`, nothing of
wherefrom's engine). Records the tracked share of MLP and expert parameters, the match, the time, and any
refusal (its one line). Writes architectures.json and docs/architectures.md. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import string
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tokenizers.processors import TemplateProcessing
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedTokenizerFast
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from typer.testing import CliRunner

from wherefrom.cli.main import app
from wherefrom.data.corpus import build_sequences
from wherefrom.data.queries import read_queries
from wherefrom.data.records import read_records
from wherefrom.models.coverage import parameter_kind
from wherefrom.models.loading import load_tokenizer
from wherefrom.models.selection import select_layers, trackable_layers

ROOT = Path(__file__).resolve().parent.parent
CHARS = string.ascii_lowercase + " .,"
TEXTS = ["the cat sat on the mat.", "a dog ran in the park, fast.", "paris is the capital of france.",
         "the sun is hot.", "birds fly south in winter.", "rome is the capital of italy."]
QUERIES = [{"id": "capital", "prompt": "paris is the capital of", "completion": " france."},
           {"id": "cat", "prompt": "the cat", "completion": " sat on the mat."}]
HIDDEN, HEADS, HEAD_DIM, LAYERS, EXPERTS, TOP_K, VOCAB = 32, 2, 16, 2, 4, 2, 64
SHRINK: dict[str, int] = {
    **dict.fromkeys(("hidden_size", "n_embd", "d_model", "dim", "model_dim", "embed_dim", "n_embed"), HIDDEN),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size", "d_ff", "hidden_dim",
                     "mlp_dim", "feed_forward_proj_dim", "dense_intermediate_size", "dff", "intermediate_size_mlp"), 64),
    **dict.fromkeys(("moe_intermediate_size", "shared_expert_intermediate_size", "expert_intermediate_size",
                     "moe_ffn_hidden_size", "moe_shared_expert_intermediate_size", "expert_ffn_hidden_size"), 32),
    **dict.fromkeys(("num_hidden_layers", "n_layer", "num_layers", "n_layers", "num_decoder_layers"), LAYERS),
    **dict.fromkeys(("num_attention_heads", "n_head", "num_heads", "n_heads", "decoder_attention_heads"), HEADS),
    **dict.fromkeys(("num_key_value_heads", "n_kv_heads", "num_kv_heads", "multi_query_group_num"), HEADS),
    **dict.fromkeys(("head_dim", "kv_channels", "attention_head_dim"), HEAD_DIM),
    **dict.fromkeys(("encoder_layers", "decoder_layers"), LAYERS),
    **dict.fromkeys(("encoder_attention_heads", "decoder_attention_heads"), HEADS),
    **dict.fromkeys(("encoder_ffn_dim", "decoder_ffn_dim"), 64),
    "rotary_dim": HEAD_DIM // 2,
    **dict.fromkeys(("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"), EXPERTS),
    **dict.fromkeys(("num_experts_per_tok", "moe_top_k", "top_k", "num_selected_experts"), TOP_K),
    "vocab_size": VOCAB, "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1,
    "mamba_n_heads": 8, "mamba_d_head": 8, "mamba_n_groups": 1, "mamba_d_state": 8, "ssm_state_size": 8,
    "mamba_num_heads": 8, "mamba_head_dim": 8, "mamba_d_ssm": 64, "n_groups": 1, "state_size": 8,
    **dict.fromkeys(("linear_num_key_heads", "linear_num_value_heads", "index_n_heads"), 2),
    **dict.fromkeys(("linear_key_head_dim", "linear_value_head_dim", "index_head_dim"), HEAD_DIM),
    **dict.fromkeys(("attention_hidden_size", "lru_width", "shared_intermediate_size"), HIDDEN),
}
MAX_WIDTH = 1024  # a tracked layer wider than this after shrinking: an unknown size attribute (eigh would take minutes)
MAX_PARAMETERS = 20_000_000  # a shrunk config still larger than this is listed as not shrinkable
SPECIAL = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2, "decoder_start_token_id": 0}


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer (lowercase letters, space, '.', ',') with BOS, EOS and PAD."""
    vocab = {"<bos>": 0, "<eos>": 1, "<pad>": 2, "<unk>": 3, **{c: i + 4 for i, c in enumerate(CHARS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def shrink(config: PretrainedConfig) -> PretrainedConfig:
    """``config`` made tiny in place: every known size attribute set small, per-layer lists cut to the new depth,
    nested configs (text/vision parts) shrunk the same way."""
    layers_before = next((getattr(config, a) for a in ("num_hidden_layers", "n_layer", "num_layers")
                          if isinstance(getattr(config, a, None), int)), None)
    for name, value in {**SHRINK, **SPECIAL}.items():
        current = getattr(config, name, None) if name in vars(config) else None  # attributes, not derived properties
        if isinstance(current, int) and not isinstance(current, bool):
            setattr(config, name, value)
    for name, value in list(vars(config).items()):
        if isinstance(value, list) and layers_before and len(value) == layers_before:
            setattr(config, name, _representative(value))
        elif isinstance(value, PretrainedConfig):
            shrink(value)
    if isinstance(getattr(config, "qk_rope_head_dim", None), int):  # multi-head latent attention (DeepSeek)
        config.update(dict(qk_rope_head_dim=8, qk_nope_head_dim=8, qk_head_dim=16, v_head_dim=HEAD_DIM, head_dim=8,
                           kv_lora_rank=16, **({"q_lora_rank": 16} if getattr(config, "q_lora_rank", None) else {})))
    if hasattr(config, "attn_layer_indices"):  # hybrids: keep one attention block beside the state-space one
        config.attn_layer_indices = [1]
    for kind in ("attn", "expert"):  # Jamba-style periods: the second of the two blocks has attention and experts
        if isinstance(getattr(config, f"{kind}_layer_period", None), int):
            config.update({f"{kind}_layer_period": 2, f"{kind}_layer_offset": 1})
    if getattr(config, "max_position_embeddings", 64) < 64:
        config.max_position_embeddings = 64
    return config


def _representative(per_layer: list) -> list:
    """A per-layer list cut to LAYERS entries that keeps one layer of each kind it had (hybrid models' attention
    and state-space layers), in their order."""
    kept = [i for i, v in enumerate(per_layer) if v not in per_layer[:i]][:LAYERS]
    kept += [i for i in range(len(per_layer)) if i not in kept][:LAYERS - len(kept)]
    return [per_layer[i] for i in sorted(kept)]


def build(model_type: str) -> torch.nn.Module:
    """The tiny model of ``model_type``, float32, eval mode; raises when it cannot be built or run."""
    config = shrink(CONFIG_MAPPING[model_type]())
    with torch.device("meta"):
        size = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    if size > MAX_PARAMETERS:
        raise ValueError(f"the shrunk config still has {size:,} parameters")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).float().eval()
    wide = [layer for layer in trackable_layers(model) if max(layer.shape.in_dim, layer.shape.out_features) > MAX_WIDTH
            and "lm_head" not in layer.name]
    if wide:
        raise ValueError(f"the shrunk config keeps layer {wide[0].name} {wide[0].shape.out_features}×"
                         f"{wide[0].shape.in_dim} (a size attribute the shrinking does not know)")
    ids = torch.randint(4, 4 + len(CHARS), (1, 12))
    out = model(input_ids=ids)
    F.cross_entropy(out.logits[0, :-1].float(), ids[0, 1:]).backward()
    model.zero_grad(set_to_none=True)
    return model


def autograd_scores(folder: Path, workspace: Path) -> tuple[torch.Tensor, list[str]]:
    """Identity's influence by plain float64 autograd: query-gradient · sequence-gradient over the tracked params."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64).eval()
    if hasattr(model.config, "_experts_implementation"):
        model.config._experts_implementation = "eager"  # the grouped kernels have no float64
    tokenizer = load_tokenizer(folder)  # the token ids wherefrom scores (tokenization is not what is checked)
    layers = select_layers(model, "mlp")
    params = {f"{layer.module_name}.{n}": getattr(layer.module, n) for layer in layers for n in layer.parameter_names}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)

    def gradient(ids: list[int], first: int) -> torch.Tensor:
        x = torch.tensor([ids])
        logits = model(input_ids=x).logits[0]
        loss = F.cross_entropy(logits[first - 1:-1], x[0, first:], reduction="sum")
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(params.values()), allow_unused=True,
                                                                     materialize_grads=True)])

    sequences = build_sequences(read_records(workspace / "corpus.jsonl"), tokenizer, 64, False)
    queries = read_queries(workspace / "queries.jsonl", tokenizer, 64)
    train = torch.stack([gradient(list(s.input_ids), 1) for s in sequences])
    query = torch.stack([gradient(list(q.input_ids), len(q.prompt_ids)) for q in queries])
    return query @ train.T, [layer.name for layer in layers]


def is_moe(model: torch.nn.Module) -> bool:
    """Whether the model routes tokens to experts: expert layers wherefrom tracks, or an experts module it cannot."""
    return (any(layer.expert is not None for layer in trackable_layers(model))
            or any("Experts" in type(module).__name__ for module in model.modules()))


def mlp_share(model: torch.nn.Module) -> float | None:
    """Share of the MLP and expert parameters (not biases, not routers) the default preset tracks."""
    layers = select_layers(model, "mlp")
    covered: dict[str, int] = {}
    for layer in layers:
        key = f"{layer.module_name}.{layer.weight}"
        covered[key] = covered.get(key, 0) + layer.shape.out_features * layer.shape.in_features
    total = {n: p.numel() for n, p in model.named_parameters()
             if parameter_kind(n) == "MLP and experts" and not n.endswith("bias")}
    return sum(min(covered.get(n, 0), c) for n, c in total.items()) / sum(total.values()) if total else None


def run_cli(args: list[str]) -> tuple[bool, str]:
    result = CliRunner().invoke(app, args)
    text = (result.output or "").strip()
    return result.exit_code == 0, text.splitlines()[-1] if text else repr(result.exception)


def one(model_type: str, root: Path) -> dict:
    """Everything the sweep records about one architecture."""
    start = time.perf_counter()
    try:
        model = build(model_type)
    except Exception as exc:  # noqa: BLE001 - the reason is the record
        return {"type": model_type, "status": "does not build or run", "reason": _reason(exc)}
    folder, workspace = root / model_type / "model", root / model_type
    try:
        model.save_pretrained(folder)
        char_tokenizer().save_pretrained(folder)
        AutoModelForCausalLM.from_pretrained(folder)  # transformers reloads it as a causal LM
    except Exception as exc:  # noqa: BLE001
        return {"type": model_type, "status": "does not build or run", "reason": "save and reload: " + _reason(exc)}
    (workspace / "corpus.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                                                   for i, t in enumerate(TEXTS)))
    (workspace / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    record: dict = {"type": model_type, "class": type(model).__name__,
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "moe": is_moe(model)}
    try:
        record["mlp_share"] = mlp_share(model)
    except Exception as exc:  # noqa: BLE001 - a refusal is recorded, its line is the result
        record.update(status="refused", reason=_reason(exc), seconds=time.perf_counter() - start)
        return record
    for strategy in ("identity", "ekfac"):
        run, out = workspace / f"run-{strategy}", workspace / f"scores-{strategy}"
        ok, line = run_cli(["fit", "--model", str(folder), "--corpus", str(workspace / "corpus.jsonl"), "--out",
                            str(run), "--strategy", strategy, "--quiet", "--batch-size", "3"])
        if ok:
            ok, line = run_cli(["score", "--run", str(run), "--queries", str(workspace / "queries.jsonl"), "--out",
                                str(out), "--quiet"])
        if not ok:
            record.update(status="refused", reason=f"{strategy}: {line}", seconds=time.perf_counter() - start)
            return record
    from wherefrom.scoring.results import ScoreResult

    identity = ScoreResult.load(workspace / "scores-identity").scores.double()
    ekfac = ScoreResult.load(workspace / "scores-ekfac").scores.double()
    try:
        expected, _ = autograd_scores(folder, workspace)
    except Exception as exc:  # noqa: BLE001 - the float64 reference itself cannot run: nothing to check against
        record.update(status="does not build or run", reason="float64 reference: " + _reason(exc))
        return record
    error = float((identity - expected).abs().max() / expected.abs().max())
    record.update(status="passes" if error <= 1e-5 and (record["mlp_share"] or 0) >= 0.999 else "fails",
                  identity_relative_error=error, ekfac_finite=bool(torch.isfinite(ekfac).all()),
                  tracked_layers=len(json.loads((workspace / "run-ekfac" / "manifest.json").read_text())["layers"]),
                  seconds=time.perf_counter() - start)
    return record


def _reason(exc: BaseException) -> str:
    line = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return line[:200]


def write_markdown(records: list[dict], path: Path) -> None:
    """docs/architectures.md: the summary and one row per architecture."""
    counts = {s: sum(r["status"] == s for r in records) for s in ("passes", "fails", "refused", "does not build or run")}
    ran = [r for r in records if r["status"] != "does not build or run"]
    moe = [r for r in ran if r.get("moe")]
    lines = ["# Architectures", "",
             f"Every entry of transformers' causal-LM auto mapping ({len(records)} in transformers "
             f"{__import__('transformers').__version__}), built tiny from its config and run through `wherefrom fit` "
             "and `wherefrom score` (identity and EK-FAC). Identity's scores are compared with float64 autograd "
             "dot products of the tracked parameters' gradients; an architecture passes when they agree within "
             "1e-5 relative and the default preset (`mlp`) tracks all of its MLP and expert weights.", "",
             "Made by `python benchmarks/architectures.py` (results: `benchmarks/results/architectures.json`).", "",
             f"- **{counts['passes']} of {len(ran)}** architectures that build and run pass "
             f"({len(moe)} of them mixture-of-experts, {sum(r['status'] == 'passes' for r in moe)} passing);",
             f"- {counts['fails']} fail, {counts['refused']} are refused in one line;",
             f"- {counts['does not build or run']} cannot be built or run from a shrunk default config (listed at "
             "the end; they do not count).", "",
             "| architecture | class | MoE | MLP share tracked | identity vs autograd | layers | seconds | result |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in ran:
        share = "" if r.get("mlp_share") is None else f"{100 * r['mlp_share']:.1f}%"
        err = f"{r['identity_relative_error']:.1e}" if "identity_relative_error" in r else ""
        result = r["status"] if r["status"] != "refused" else f"refused: {r['reason']}"
        lines.append(f"| {r['type']} | {r.get('class', '')} | {'yes' if r.get('moe') else ''} | {share} | {err} | "
                     f"{r.get('tracked_layers', '')} | {r.get('seconds', 0):.1f} | {result} |")
    lines += ["", "Refusals: `mamba` and `falcon_mamba` are pure state-space models with no MLP, so the default preset "
              "matches nothing (their mixers are tracked with `--modules all-linear`); ProphetNet's decoder runs "
              "several n-gram streams through one MLP, so a row is not one token; JetMoE keeps its experts in "
              "`JetMoeParallelExperts`, whose rows are sorted by expert with the token order known only to the "
              "block around it (see docs/experts.md).", "",
              "## Not built or not run", "", "| architecture | reason |", "| --- | --- |"]
    lines += [f"| {r['type']} | {r['reason'].replace('|', '/')} |" for r in records
              if r["status"] == "does not build or run"]
    path.write_text("\n".join(lines) + "\n")


class OutOfTime(BaseException):
    """An architecture ran past --limit (a BaseException: no handler of the command line catches it)."""


def _out_of_time(_signal: int, _frame: object) -> None:
    raise OutOfTime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated model types (default: every one)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "architectures.md")
    parser.add_argument("--limit", type=int, default=120, help="seconds allowed per architecture")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _out_of_time)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    types = [t for t in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES if not args.only or t in args.only.split(",")]
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, model_type in enumerate(types):
            signal.alarm(args.limit)
            try:
                record = one(model_type, Path(tmp))
            except OutOfTime:
                record = {"type": model_type, "status": "does not build or run",
                          "reason": f"not done within {args.limit} s on the CPU (a slow reference kernel)"}
            except Exception as exc:  # noqa: BLE001 - a crash of the sweep itself is a failing record
                record = {"type": model_type, "status": "fails", "reason": _reason(exc),
                          "traceback": traceback.format_exc(limit=3)}
            finally:
                signal.alarm(0)
                gc.collect()
            records.append(record)
            print(f"[{i + 1}/{len(types)}] {model_type}: {record['status']} "
                  f"{record.get('identity_relative_error', '')} {record.get('reason', '')}", flush=True)
    if not args.only:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "architectures.json").write_text(json.dumps(records, indent=1) + "\n")
        write_markdown(records, args.docs)


if __name__ == "__main__":
    main()

"""Corpus and query formats, packing, and LoRA adapters: every documented input reads as expected."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset
from exact import sequence_gradient
from tiny import TEXTS, char_tokenizer, save_model_dir, tiny_llama, write_jsonl

from wherefrom.data.corpus import build_sequences
from wherefrom.data.queries import parse_query, read_queries
from wherefrom.data.records import read_records
from wherefrom.errors import WherefromError
from wherefrom.models.loading import load_model
from wherefrom.models.selection import select_layers
from wherefrom.scoring.query_gradients import query_gradients

TOKENIZER = char_tokenizer()


def test_every_corpus_format_gives_the_same_sequences(tmp_path):
    rows = [{"id": f"r{i}", "text": t} for i, t in enumerate(TEXTS)]
    write_jsonl(tmp_path / "c.jsonl", rows)
    (tmp_path / "c.txt").write_text("\n".join(TEXTS) + "\n\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    ids = [{"id": f"r{i}", "input_ids": TOKENIZER(t)["input_ids"]} for i, t in enumerate(TEXTS)]
    write_jsonl(tmp_path / "ids.jsonl", ids)
    expected = [tuple(TOKENIZER(t)["input_ids"][:20]) for t in TEXTS]
    for name in ("c.jsonl", "c.txt", "c.parquet", "ds", "ids.jsonl"):
        sequences = build_sequences(read_records(tmp_path / name), TOKENIZER, max_length=20, pack=False)
        assert [s.input_ids for s in sequences] == expected, name
        if name != "c.txt":
            assert [s.record_id for s in sequences] == [f"r{i}" for i in range(len(TEXTS))]


def test_packing_cuts_fixed_blocks_and_keeps_record_ids(tmp_path):
    write_jsonl(tmp_path / "c.jsonl", [{"id": f"r{i}", "text": t} for i, t in enumerate(TEXTS)])
    sequences = build_sequences(read_records(tmp_path / "c.jsonl"), TOKENIZER, max_length=16, pack=True)
    stream = [tok for t in TEXTS for tok in TOKENIZER(t)["input_ids"] + [TOKENIZER.eos_token_id]]
    assert [tok for s in sequences for tok in s.input_ids] == stream[: sum(len(s.input_ids) for s in sequences)]
    assert all(len(s.input_ids) == 16 for s in sequences[:-1])
    # r0 is <bos> + 23 characters + <eos> = 25 tokens: block 0 lies inside it, block 1 starts at its token 16
    assert (sequences[0].record_id, sequences[0].start) == ("r0", 0)
    assert (sequences[1].record_id, sequences[1].start) == ("r0+r1", 16)


@pytest.mark.parametrize("bad, message", [
    ('{"id": 1, "txt": "x"}', "needs a 'text'"),
    ("not json", "not valid JSON"),
    ('{"input_ids": [1, "a"]}', "list of integers"),
])
def test_bad_corpus_records_are_named(tmp_path, bad, message):
    (tmp_path / "c.jsonl").write_text(bad + "\n")
    with pytest.raises(WherefromError, match=message):
        read_records(tmp_path / "c.jsonl")


def test_query_formats_measure_only_the_completion():
    text = parse_query({"prompt": "the cat", "completion": " sat"}, 0, TOKENIZER, 64)
    assert text.prompt_ids == tuple(TOKENIZER("the cat")["input_ids"]) and text.completion_ids == tuple(
        TOKENIZER(" sat", add_special_tokens=False)["input_ids"])
    ids = parse_query({"prompt_ids": list(text.prompt_ids), "completion_ids": list(text.completion_ids)}, 1, TOKENIZER, 64)
    assert ids.input_ids == text.input_ids and ids.completion == " sat"
    chat_tokenizer = char_tokenizer()
    chat_tokenizer.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}{% if add_generation_prompt %} {% endif %}"
    chat = parse_query({"messages": [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat"}]},
                       2, chat_tokenizer, 64)
    assert chat.prompt == "the cat " and chat.completion == "sat"
    with pytest.raises(WherefromError, match="end"):
        parse_query({"messages": [{"role": "user", "content": "x"}]}, 3, chat_tokenizer, 64)


def test_queries_file_errors(tmp_path):
    with pytest.raises(WherefromError, match="not found"):
        read_queries(tmp_path / "missing.jsonl", TOKENIZER, 64)
    write_jsonl(tmp_path / "q.jsonl", [{"question": "?"}])
    with pytest.raises(WherefromError, match="needs"):
        read_queries(tmp_path / "q.jsonl", TOKENIZER, 64)


def test_lora_adapter_tracks_the_adapter_layers_with_exact_gradients(tmp_path):
    peft = pytest.importorskip("peft")
    base = save_model_dir(tiny_llama(), tmp_path / "base")
    model = peft.get_peft_model(tiny_llama(), peft.LoraConfig(r=4, target_modules=["up_proj", "down_proj"],
                                                               init_lora_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base)
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    loaded = load_model(tmp_path / "adapter", dtype=torch.float64)
    layers = select_layers(loaded.model, "mlp")
    assert layers and all(".lora_" in layer.name for layer in layers)
    assert {layer.name.split(".")[-2] for layer in layers} == {"lora_A", "lora_B"}
    from wherefrom.data.queries import Query

    tokens = TOKENIZER(TEXTS[0])["input_ids"]
    got = query_gradients(loaded.model, layers, [Query("q", "", "", tuple(tokens[:1]), tuple(tokens[1:]))], 1, True)
    flat = torch.cat([got.dense(layer.name)[0].reshape(-1) for layer in layers])
    torch.testing.assert_close(flat, sequence_gradient(loaded.model, layers, tokens), rtol=1e-9, atol=1e-12)

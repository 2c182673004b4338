"""A model folder without tokenizer files, as a new user would have one: token ids work for fit, score and index;
text is refused in one line naming the folder and what to do (through the CLI: exit 2, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import TEXTS, char_tokenizer, save_model_dir, tiny_gpt2, tiny_llama, write_jsonl
from typer.testing import CliRunner

from wherefrom.cli.main import app
from wherefrom.data.corpus import build_sequences
from wherefrom.data.records import Record
from wherefrom.errors import WherefromError
from wherefrom.models.loading import load_model
from wherefrom.models.tokenizer import ids_text
from wherefrom.options import ScoreOptions

runner = CliRunner()
TOKENIZER = char_tokenizer()
IDS = [TOKENIZER(text)["input_ids"] for text in TEXTS]
QUERY = {"id": "capital", "prompt_ids": TOKENIZER("paris is")["input_ids"],
         "completion_ids": TOKENIZER(" the capital", add_special_tokens=False)["input_ids"]}
PROMPT_ONLY = {"id": "cat", "prompt_ids": TOKENIZER("the cat")["input_ids"]}


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def refused(result, *needles: str) -> None:
    """Exit 2, ending with one error line that contains every needle; no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.output
    assert "Traceback" not in result.output and all(needle in lines[-1] for needle in needles), lines[-1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny Llama saved bare (as `save_pretrained` writes it) and with its tokenizer; id and text inputs."""
    root = tmp_path_factory.mktemp("ids_only")
    model = tiny_llama(layers=1)
    model.save_pretrained(root / "bare")
    save_model_dir(model, root / "with_tokenizer")
    write_jsonl(root / "ids.jsonl", [{"id": f"r{i}", "input_ids": ids} for i, ids in enumerate(IDS)])
    write_jsonl(root / "text.jsonl", [{"id": f"r{i}", "text": text} for i, text in enumerate(TEXTS)])
    write_jsonl(root / "queries.jsonl", [QUERY])
    write_jsonl(root / "prompt_only.jsonl", [PROMPT_ONLY])
    write_jsonl(root / "text_queries.jsonl", [{"id": "capital", "prompt": "paris is", "completion": " the capital"}])
    for folder in ("bare", "with_tokenizer"):
        result = invoke("fit", "--model", root / folder, "--corpus", root / "ids.jsonl", "--out", root / f"run-{folder}",
                        "--max-length", 32, "--batch-size", 4, "-q")
        assert result.exit_code == 0, result.output
    return root


def test_the_bare_folder_has_no_tokenizer_files(workspace: Path):
    assert sorted(p.name for p in (workspace / "bare").iterdir()) == ["config.json", "generation_config.json",
                                                                      "model.safetensors"]


def test_token_ids_score_and_index_as_with_a_tokenizer_and_read_as_ids(workspace: Path):
    for folder in ("bare", "with_tokenizer"):
        run = workspace / f"run-{folder}"
        for args in (("score", "--run", run, "--queries", workspace / "queries.jsonl", "--out", workspace / f"out-{folder}"),
                     ("index", "--run", run, "--out", workspace / f"index-{folder}"),
                     ("score", "--run", run, "--index", workspace / f"index-{folder}", "--queries",
                      workspace / "queries.jsonl", "--out", workspace / f"indexed-{folder}")):
            result = invoke(*args, "-q")
            assert result.exit_code == 0, result.output
    for out in ("out", "indexed"):  # the tokenizer changes only how the ids read
        bare, named = (load_file(str(workspace / f"{out}-{f}" / "scores.safetensors"))["scores"]
                       for f in ("bare", "with_tokenizer"))
        torch.testing.assert_close(bare, named, rtol=0, atol=0)
    rows = [json.loads(line) for line in (workspace / "out-bare" / "sequences.jsonl").read_text().splitlines()]
    assert [row["text"] for row in rows] == [ids_text(ids[:32]) for ids in IDS]
    named = [json.loads(line) for line in (workspace / "out-with_tokenizer" / "sequences.jsonl").read_text().splitlines()]
    assert [row["text"] for row in named] == [TOKENIZER.decode(ids) for ids in IDS]


def test_a_prompt_only_id_query_gets_the_models_greedy_completion_up_to_the_configs_eos(workspace: Path):
    out = workspace / "prompt-only"
    result = invoke("score", "--run", workspace / "run-bare", "--queries", workspace / "prompt_only.jsonl", "--out", out,
                    "-q")
    assert result.exit_code == 0, result.output
    model = load_model(workspace / "bare").model
    prompt = torch.tensor([PROMPT_ONLY["prompt_ids"]])
    generated = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                               max_new_tokens=min(ScoreOptions().max_new_tokens, 32 - prompt.shape[1]),  # within --max-length
                               pad_token_id=model.config.eos_token_id)
    expected = generated[0, prompt.shape[1]:].tolist()
    if model.config.eos_token_id in expected:
        expected = expected[:expected.index(model.config.eos_token_id)]
    query = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert query["completion"] == ids_text(expected) and len(expected) > 0


def test_text_without_a_tokenizer_is_refused_in_one_line_naming_the_folder(workspace: Path, tmp_path: Path):
    bare = str(workspace / "bare")
    refused(invoke("fit", "--model", bare, "--corpus", workspace / "text.jsonl", "--out", tmp_path / "run"),
            "encoding text needs the model's tokenizer", f"{bare} has no tokenizer files", "input_ids")
    refused(invoke("score", "--run", workspace / "run-bare", "--queries", workspace / "text_queries.jsonl", "--out",
                   tmp_path / "out"), bare, "prompt_ids and completion_ids")
    refused(invoke("serve", "--run", workspace / "run-bare"), "the explorer", bare, "tokenizer.save_pretrained).")
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_a_gpt2_folder_without_tokenizer_files_is_not_given_an_empty_tokenizer(tmp_path: Path):
    tiny_gpt2(layers=1).save_pretrained(tmp_path / "gpt2")
    write_jsonl(tmp_path / "text.jsonl", [{"id": "r0", "text": TEXTS[0]}])
    refused(invoke("fit", "--model", tmp_path / "gpt2", "--corpus", tmp_path / "text.jsonl", "--out", tmp_path / "run"),
            f"{tmp_path / 'gpt2'} has no tokenizer files")


def test_token_ids_never_read_the_tokenizer_files(workspace: Path, tmp_path: Path):
    """A corrupt tokenizer.json does not matter to fitting ids; decoding then shows the ids, naming the problem."""
    folder = tmp_path / "corrupt"
    tiny_llama(layers=1).save_pretrained(folder)
    (folder / "tokenizer.json").write_text("{not json")
    result = invoke("fit", "--model", folder, "--corpus", workspace / "ids.jsonl", "--out", tmp_path / "run",
                    "--max-length", 32, "-q")
    assert result.exit_code == 0, result.output
    tokenizer = load_model(folder).tokenizer
    assert tokenizer.decode([5, 6]) == "⟨5⟩⟨6⟩"
    with pytest.raises(WherefromError, match=f"the tokenizer in {folder} could not be loaded"):
        tokenizer("text")


def test_packing_ids_without_a_tokenizer_separates_records_with_the_configs_eos(workspace: Path):
    tokenizer = load_model(workspace / "bare").tokenizer
    eos = tiny_llama().config.eos_token_id
    records = [Record("a", input_ids=(5, 6, 7)), Record("b", input_ids=(8, 9))]
    sequences = build_sequences(records, tokenizer, 4, pack=True)
    assert [s.input_ids for s in sequences] == [(5, 6, 7, eos), (8, 9, eos)]
    assert not tokenizer.available

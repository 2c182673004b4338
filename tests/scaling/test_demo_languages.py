"""The demo corpus's records carry their language, so `compare --pairs` counts the other-language share on the main
demo's score folders; a demo folder cached before that gets the field without being trained again."""

from __future__ import annotations

import json
import re
from dataclasses import replace

from wherefrom.scaling.pairs import sequence_languages
from wherefrom.scoring.results import SequenceInfo
from wherefrom.synthetic import templates
from wherefrom.synthetic.cache import MANIFEST, demo_directory, load_or_train
from wherefrom.synthetic.config import reduced_config
from wherefrom.synthetic.corpus import generate_corpus

CONFIG = reduced_config()
FRENCH = [re.compile(re.escape(w).replace(re.escape("{subject}"), ".+").replace(re.escape("{value}"), ".+"))
          for relation in templates.RELATIONS for w in relation.french]  # the French statements' wordings


def test_records_carry_the_language_of_their_wording(tmp_path):
    corpus = generate_corpus(CONFIG.corpus, CONFIG.seed)
    rows = [json.loads(line) for line in corpus.to_jsonl().splitlines()]
    assert [(r["id"], r["text"]) for r in rows] == [(d.id, d.text) for d in corpus.documents]
    for row in rows:  # French exactly where a French wording wrote the whole text
        assert row["language"] == ("fr" if any(w.fullmatch(row["text"]) for w in FRENCH) else "en"), row
    facts = sum(f.relation not in ("sum", "passage") for f in corpus.facts)
    assert sum(r["language"] == "fr" for r in rows) == facts * CONFIG.corpus.french_statements > 0
    path = tmp_path / "corpus.jsonl"
    path.write_text(corpus.to_jsonl(), encoding="utf-8")
    sequences = [SequenceInfo(i, r["id"], 0, 1, r["text"]) for i, r in enumerate(rows)]
    assert sequence_languages(sequences, path) == [r["language"] for r in rows]  # what compare reads


def test_a_folder_cached_without_languages_gets_them_untrained(tmp_path):
    config = replace(CONFIG, training=replace(CONFIG.training, epochs=1))
    folder = load_or_train(config, cache_root=tmp_path, num_threads=1, quiet=True)
    corpus = folder / "corpus.jsonl"
    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    old = "".join(json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) + "\n" for r in rows)
    corpus.write_text(old, encoding="utf-8")  # as folders cached before the field existed
    weights = (folder / "model.safetensors").stat().st_mtime_ns
    assert load_or_train(config, cache_root=tmp_path, num_threads=1, quiet=True) == folder == demo_directory(
        config, tmp_path)
    assert [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()] == rows
    assert (folder / "model.safetensors").stat().st_mtime_ns == weights and (folder / MANIFEST).is_file()

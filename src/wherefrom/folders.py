"""Output folders: what kind each one is, which folders a command may write into, and the lock it holds meanwhile.

Every folder wherefrom writes says what it is: a ``kind`` field in its ``manifest.json`` once finished, and the
lock file ``.wherefrom.lock`` (kind and PID of the last writer) from the moment a command starts writing. A
command refuses an ``--out`` that is a file, one of its own inputs, a folder of another kind, or a folder
holding files with an output's name that wherefrom did not write; and while it writes, it holds an exclusive
lock on the folder, so a second command into the same folder stops at once, naming the process that holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from wherefrom.errors import WherefromError

LOCK = ".wherefrom.lock"
# What each kind of folder holds (the names a command writes), and how messages name it.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "run": ("manifest.json", "factors.safetensors", ".shards"),
    "index": ("manifest.json", "gradients.npy", "scales.npy", "projections.safetensors", ".shards"),
    "scores": ("manifest.json", "scores.safetensors", "sequences.jsonl", "queries.jsonl", "results.jsonl", ".shards"),
    "demo": ("summary.json",),  # and report.html, which is guarded by check_output_file
    "lds": ("lds.json", "lds.md", "lds.png"),
}
DESCRIPTIONS = {
    "run": "a fitted run (written by `wherefrom fit`)",
    "index": "a gradient index (written by `wherefrom index`)",
    "scores": "a score folder (written by `wherefrom score`)",
    "demo": "a demo folder (written by `wherefrom demo`)",
    "lds": "an LDS folder (written by `wherefrom validate lds`)",
}
_FORMATS = {"wherefrom-factors/1": "run", "wherefrom-index/1": "index"}  # manifests written before the kind field
_SIGNATURES = {"demo": ("summary.json", "recall"), "lds": ("lds.json", "methods")}  # folders written before the lock
FOREIGN = "foreign"


def folder_kind(folder: Path) -> str | None:
    """The kind of a wherefrom folder; None for a folder that holds no output; ``FOREIGN`` for one holding files
    with an output's name that wherefrom did not write (or a manifest it cannot read)."""
    if not folder.is_dir():
        return None
    manifest = _read_json(folder / "manifest.json")
    if isinstance(manifest, dict):
        kind = manifest.get("kind") or _FORMATS.get(manifest.get("format"))  # type: ignore[arg-type]
        if kind is None and "sign_and_units" in manifest:
            kind = "scores"
        if kind in OUTPUTS:
            return str(kind)
    claimed = _read_json(folder / LOCK)
    if isinstance(claimed, dict) and claimed.get("kind") in OUTPUTS:
        return str(claimed["kind"])
    for kind, (name, key) in _SIGNATURES.items():
        written = _read_json(folder / name)
        if isinstance(written, dict) and key in written:
            return kind
    names = {name for names in OUTPUTS.values() for name in names if not name.startswith(".")}  # .shards: ours
    return FOREIGN if any((folder / name).exists() for name in names) else None


def describe(kind: str | None) -> str:
    """A kind in words, for messages."""
    return DESCRIPTIONS.get(kind or "", "not a wherefrom output folder")


def check_output(out: Path, kind: str, inputs: Iterable[str | Path | None] = ()) -> None:
    """Refuse an output folder that is a file, an input, would overwrite an input, or holds another kind of
    output or files wherefrom did not write."""
    if out.exists() and not out.is_dir():
        raise WherefromError(f"--out {out} is a file; give a folder (a new one, or {describe(kind)}).")
    found = folder_kind(out)
    if found not in (None, FOREIGN, kind):
        raise WherefromError(f"{out} is {describe(found)}, not {describe(kind)}; choose another folder for the "
                             "output. Nothing was changed.")
    target = out.resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if target == source:
            raise WherefromError(f"--out {out} is the input {given}; choose a separate output folder.")
        if source.parent == target and source.name in OUTPUTS[kind]:
            raise WherefromError(f"--out {out} would overwrite the input {given}; choose another output folder.")
    if found == FOREIGN:
        names = ", ".join(name for name in OUTPUTS[kind] if (out / name).exists()) or "manifest.json"
        raise WherefromError(f"{out} holds {names} that wherefrom did not write (or cannot read); choose an empty or "
                             "new folder, or move those files away. Nothing was changed.")


@contextmanager
def claim_output(out: Path, kind: str, inputs: Iterable[str | Path | None] = (), lock: bool = True) -> Iterator[None]:
    """Check ``out`` (see :func:`check_output`), create it and hold its lock while the body writes.

    ``lock=False`` (ranks other than the first under torchrun) checks without locking: the first rank holds it.
    """
    check_output(out, kind, inputs)
    if not lock:
        yield
        return
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_json(path)
            pid = holder.get("pid", "unknown") if isinstance(holder, dict) else "unknown"
            raise WherefromError(f"{out} is being written by another wherefrom process (PID {pid}); wait for it to "
                                 "finish, or choose another folder.") from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps({"kind": kind, "pid": os.getpid()}) + "\n").encode(), 0)
        yield
    except BaseException:
        if created and [p.name for p in out.iterdir()] == [LOCK]:  # refused before writing: leave no trace
            path.unlink()
            out.rmdir()
        raise
    finally:
        os.close(descriptor)  # closing releases the lock (so does the process dying, SIGKILL included)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_manifest(folder: Path, kind: str, fields: dict[str, type | tuple[type, ...]], remedy: str) -> dict:
    """The manifest.json of a ``kind`` folder, checked: valid JSON, of that kind, and each field of ``fields``
    (dotted names; ``layers[].name`` checks every entry of a list) of its type. ``remedy`` ends each message."""
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise WherefromError(f"{path} is not text (not UTF-8): the folder is damaged; {remedy}") from None
    except json.JSONDecodeError as exc:
        raise WherefromError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}): the folder is damaged; "
                             f"{remedy}") from None
    if not isinstance(manifest, dict):
        raise WherefromError(f"{path} holds {type(manifest).__name__}, not a JSON object: the folder is damaged; "
                             f"{remedy}")
    found = folder_kind(folder)
    if found != kind:
        raise WherefromError(f"{folder} is {describe(found)}, not {describe(kind)}.")
    for name, expected in fields.items():
        for where, value in _values(manifest, name):
            if value is _MISSING:
                raise WherefromError(f"{path} lacks {where}: the folder is damaged; {remedy}")
            if not isinstance(value, expected) or (isinstance(value, bool) and bool not in _types(expected)):
                wanted = " or ".join(t.__name__ for t in _types(expected))
                raise WherefromError(f"{path}: {where} is {type(value).__name__}, not {wanted}: the folder is "
                                     f"damaged; {remedy}")
    return manifest


_MISSING = object()


def _types(expected: type | tuple[type, ...]) -> tuple[type, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


def _values(manifest: dict, name: str) -> Iterator[tuple[str, object]]:
    """(place, value) of a dotted field name; ``[]`` after a part visits every entry of that list."""
    places: list[tuple[str, object]] = [("", manifest)]
    for part in name.split("."):
        each = part.endswith("[]")
        key = part.removesuffix("[]")
        following: list[tuple[str, object]] = []
        for place, value in places:
            here = f"{place}.{key}" if place else key
            child = value.get(key, _MISSING) if isinstance(value, dict) else _MISSING
            if each and isinstance(child, list):
                following.extend((f"{here}[{i}]", entry) for i, entry in enumerate(child))
            else:
                following.append((here, child))
        places = following
    yield from places


UNREADABLE = "unreadable"


def finished_job(folder: Path) -> str | None:
    """The job fingerprint in a finished folder's manifest; None when there is no manifest; ``UNREADABLE`` when
    it cannot be read (a damaged folder is then never taken for a finished job, nor replaced without --restart)."""
    if not (folder / "manifest.json").is_file():
        return None
    manifest = _read_json(folder / "manifest.json")
    job = manifest.get("job") if isinstance(manifest, dict) else None
    return job if isinstance(job, str) else UNREADABLE


def check_output_file(path: Path, marker: str) -> None:
    """Refuse to replace an existing file unless its beginning holds ``marker`` (one wherefrom wrote)."""
    if not path.is_file():
        return
    with path.open("rb") as f:
        head = f.read(4096)
    if marker.encode() not in head:
        raise WherefromError(f"{path} exists and was not written by wherefrom; choose another file name, or move it "
                             "away. Nothing was changed.")

"""Python's cyclic collector is paused while a command starts up (collector.py): off inside the block, on again
after it (also when it raises), left alone inside an outer pause, and with ``freeze`` what lived at the end moved to
the permanent generation. The command line and model loading use it."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest
from tiny import save_model_dir, tiny_llama

from wherefrom.collector import collector_paused
from wherefrom.errors import WherefromError
from wherefrom.models.loading import load_model


@pytest.fixture(autouse=True)
def _collector_as_found():
    """Each test starts with the collector on and nothing frozen, and leaves it so."""
    assert gc.isenabled()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.enable()


def test_the_block_runs_without_the_collector_and_turns_it_back_on():
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a failed start-up")
    assert gc.isenabled()


def test_an_outer_pause_decides():
    with collector_paused():
        with collector_paused(freeze=True):
            pass
        assert not gc.isenabled() and gc.get_freeze_count() == 0  # the inner block neither resumed nor froze
    assert gc.isenabled()
    gc.disable()  # turned off by the caller: the block leaves it off
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_freezing_moves_what_is_alive_to_the_permanent_generation():
    kept = [[] for _ in range(1000)]
    with collector_paused(freeze=True):
        kept.append([])
    assert gc.isenabled() and gc.get_freeze_count() >= len(kept)
    frozen = gc.get_freeze_count()
    assert gc.collect() >= 0 and gc.get_freeze_count() == frozen  # a full collection leaves them where they are


def test_loading_a_model_turns_the_collector_back_on(tmp_path):
    folder = save_model_dir(tiny_llama(), tmp_path / "model")
    load_model(folder)
    assert gc.isenabled() and gc.get_freeze_count() == 0  # a library call freezes nothing of its caller's
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WherefromError, match="cannot load the model"):  # raised inside the pause
        load_model(folder)
    assert gc.isenabled()


def test_the_command_line_starts_with_the_collector_paused_then_frozen():
    """In a fresh process: after `wherefrom --version` through the executable's entry point the collector runs,
    and torch's stack, imported during the pause, is frozen (hundreds of thousands of objects)."""
    program = ("import gc, sys\n"
               "sys.argv = ['wherefrom', '--version']\n"
               "from wherefrom.cli.entry import main\n"
               "try:\n    main()\nexcept SystemExit:\n    pass\n"
               "print(gc.isenabled(), gc.get_freeze_count(), 'torch' in sys.modules)")
    lines = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True,
                           timeout=300).stdout.splitlines()
    enabled, frozen, torch_loaded = lines[-1].split()
    assert enabled == "True" and torch_loaded == "True" and int(frozen) > 100_000

"""The export cache: one directory, reused across runs, bounded (least recently used out), written atomically,
and nothing left in the temporary folder when a process is stopped."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseinst_core import Predictor, build_model
from sparseinst_core.inference import backends, export
from sparseinst_core.inference.backends import ExportOnDemandBackend
from sparseinst_core.inference.export_cache import (TEMP_PREFIX, ExportCache, cache_key, default_cache_dir,
                                                    model_fingerprint)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own cache directory through the environment variable the library reads."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("SPARSEINST_CACHE_DIR", str(directory))
    return directory


def write_bytes(size):
    return lambda path: path.write_bytes(b"x" * size)


def age(path, seconds):
    """Mark `path` as used `seconds` ago."""
    when = time.time() - seconds
    os.utime(path, (when, when))


def test_default_directory_follows_the_variables(monkeypatch, tmp_path):
    assert default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("SPARSEINST_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "sparseinst"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "sparseinst"
    assert ExportCache(tmp_path / "given").directory == tmp_path / "given"     # the argument wins


def test_an_entry_is_written_once_then_reused(cache_dir):
    cache, calls = ExportCache(), []

    def write(path):
        calls.append(path)
        path.write_bytes(b"model")

    first = cache.get_or_create("m.onnx", write)
    age(first, 100)
    second = ExportCache().get_or_create("m.onnx", write)          # another instance, e.g. a later run
    assert first == second == cache_dir / "m.onnx" and first.read_bytes() == b"model"
    assert len(calls) == 1 and calls[0].parent == cache_dir and calls[0].name.startswith(TEMP_PREFIX)
    assert time.time() - second.stat().st_mtime < 10                # a use marks it as recently used
    assert [p.name for p in cache_dir.iterdir()] == ["m.onnx"]      # no temporary file left


def test_least_recently_used_entries_go_beyond_the_count(cache_dir):
    cache = ExportCache(max_entries=2)
    for index, name in enumerate(["a", "b"]):
        age(cache.get_or_create(name, write_bytes(10)), 100 - index)
    age(cache.get("a"), 1)                                            # "a" used again: "b" is now the oldest
    cache.get_or_create("c", write_bytes(10))
    assert sorted(p.name for p in cache.entries()) == ["a", "c"]


def test_least_recently_used_entries_go_beyond_the_bytes(cache_dir):
    cache = ExportCache(max_bytes=25)
    age(cache.get_or_create("old", write_bytes(10)), 200)
    age(cache.get_or_create("mid", write_bytes(10)), 100)
    cache.get_or_create("new", write_bytes(10))
    assert sorted(p.name for p in cache.entries()) == ["mid", "new"]
    cache.get_or_create("huge", write_bytes(100))                     # the newest stays even when over the limit
    assert [p.name for p in cache.entries()] == ["huge"]


def test_a_failed_write_leaves_nothing(cache_dir):
    def fail(path):
        path.write_bytes(b"half")
        raise RuntimeError("exporter crashed")

    with pytest.raises(RuntimeError, match="exporter crashed"):
        ExportCache().get_or_create("m.onnx", fail)
    assert list(cache_dir.iterdir()) == []


def test_an_unwritable_directory_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(RuntimeError, match="cannot create the export cache.*SPARSEINST_CACHE_DIR"):
        ExportCache(tmp_path / "file" / "cache").get_or_create("m.onnx", write_bytes(1))


def test_bad_limits_are_rejected():
    with pytest.raises(ValueError, match="room for one file"):
        ExportCache(max_entries=0)


def run_python(code, **env):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def test_a_writer_killed_midway_leaves_no_entry_and_its_temporary_file_is_removed_later(cache_dir):
    writer = run_python("""
        import sys, time
        from sparseinst_core.inference.export_cache import ExportCache
        def write(path):
            path.write_bytes(b"half a model")
            print("writing", flush=True)
            time.sleep(60)
        ExportCache().get_or_create("m.onnx", write)
        """)
    assert writer.stdout.readline().strip() == "writing", writer.stderr.read()
    writer.send_signal(signal.SIGTERM)
    writer.wait(timeout=30)
    assert not (cache_dir / "m.onnx").exists()                        # no half file under the final name
    assert [p.name.startswith(TEMP_PREFIX) for p in cache_dir.iterdir()] == [True]
    ExportCache().get_or_create("other.onnx", write_bytes(1))          # the next write clears what it left
    assert [p.name for p in cache_dir.iterdir()] == ["other.onnx"]


def test_concurrent_writers_leave_one_complete_file(cache_dir):
    code = """
        import sys, time
        from sparseinst_core.inference.export_cache import ExportCache
        def write(path):
            with open(path, "wb") as file:
                for _ in range(20):
                    file.write(sys.argv[1].encode() * 1000)
                    file.flush()
                    time.sleep(0.01)
        ExportCache().get_or_create("m.onnx", write)
        """
    writers = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), letter], cwd=REPO)
               for letter in "ab"]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    content = (cache_dir / "m.onnx").read_bytes()
    assert content in (b"a" * 20000, b"b" * 20000)
    assert [p.name for p in cache_dir.iterdir()] == ["m.onnx"]


def test_fingerprint_covers_config_and_every_weight():
    torch.manual_seed(0)
    model = build_model("r18_giam", num_classes=2)
    same = build_model("r18_giam", num_classes=2)
    same.load_state_dict(model.state_dict())
    assert model_fingerprint(model) == model_fingerprint(same)
    with torch.no_grad():
        same.decoder.inst_branch.cls_score.bias[0] += 1e-6
    assert model_fingerprint(model) != model_fingerprint(same)
    other_config = build_model("r18_giam", num_classes=2, min_size_test=320)
    other_config.load_state_dict(model.state_dict())
    assert model_fingerprint(model) != model_fingerprint(other_config)
    assert cache_key(a=1, b=[2, 3]) == cache_key(b=[2, 3], a=1) != cache_key(a=1, b=[3, 2])


@pytest.fixture
def counted_exports(monkeypatch):
    calls = []
    real = export.export_onnx

    def counting(model, path, *args, **kwargs):
        calls.append(tuple(args[0]))
        return real(model, path, *args, **kwargs)

    monkeypatch.setattr(export, "export_onnx", counting)
    return calls


def test_a_second_predictor_on_the_same_weights_reuses_the_export(cache_dir, counted_exports):
    model = build_model("r18_giam", num_classes=2).eval()
    image = np.zeros((40, 60, 3), np.uint8)                         # 64x96 at min_size 64
    first = Predictor(model, min_size=64, max_size=96, device="cpu", backend="onnxruntime")
    first(image)
    files = {p.name: p.stat().st_ino for p in cache_dir.iterdir()}
    assert sorted(counted_exports) == [(64, 64), (64, 96)] and len(files) == 2   # the probe and the frame's size
    reloaded = build_model("r18_giam", num_classes=2).eval()
    reloaded.load_state_dict(model.state_dict())                      # the same weights, loaded again
    second = Predictor(reloaded, min_size=64, max_size=96, device="cpu", backend="onnxruntime")
    second(image)
    assert len(counted_exports) == 2                                  # nothing exported again
    assert {p.name: p.stat().st_ino for p in cache_dir.iterdir()} == files


def test_a_fixed_input_size_export_goes_to_the_cache(cache_dir, counted_exports):
    model = build_model("r18_giam", num_classes=2).eval()
    backend = backends.create_backend("onnxruntime", model=model, device="cpu", input_size=(64, 96))
    assert backend.input_size == (64, 96) and [p.suffix for p in cache_dir.iterdir()] == [".onnx"]
    backends.create_backend("onnxruntime", model=model, device="cpu", input_size=(64, 96))
    assert counted_exports == [(64, 96)]


class FakeSession:
    device, precision = torch.device("cpu"), "fp32"

    def __init__(self, path):
        self.path = path


def test_live_sessions_are_bounded_least_recently_used_first(monkeypatch, tmp_path):
    monkeypatch.setattr(backends, "cached_export", lambda model, size, cache: tmp_path / f"{size[0]}x{size[1]}")
    backend = ExportOnDemandBackend(build_model("r18_giam", num_classes=2), FakeSession, "onnxruntime",
                                    ExportCache(), max_sessions=2)
    assert list(backend.sessions) == [(64, 64)]                        # the probe at construction
    for size in [(64, 96), (64, 64), (96, 64)]:
        backend._session(size)
    assert list(backend.sessions) == [(64, 64), (96, 64)]             # (64, 96) was the least recently used
    with pytest.raises(ValueError, match="max_sessions"):
        ExportOnDemandBackend(build_model("r18_giam", num_classes=2), FakeSession, "onnxruntime", ExportCache(),
                              max_sessions=0)


def test_a_process_stopped_by_sigterm_leaves_nothing_in_the_temporary_folder(tmp_path, cache_dir):
    temporary = tmp_path / "tmpdir"
    temporary.mkdir()
    child = run_python("""
        import numpy as np, time
        from sparseinst_core import Predictor, build_model
        predictor = Predictor(build_model("r18_giam", num_classes=2).eval(), min_size=64, max_size=96,
                              device="cpu", backend="onnxruntime")
        predictor(np.zeros((40, 60, 3), np.uint8))
        print("ready", flush=True)
        time.sleep(120)
        """, TMPDIR=str(temporary))
    printed = []
    for line in child.stdout:               # until the child is ready (or has ended)
        printed.append(line)
        if line.strip() == "ready":
            break
    assert printed and printed[-1].strip() == "ready", "".join(printed) + child.stderr.read()
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == -signal.SIGTERM
    assert list(temporary.rglob("*")) == []
    assert sorted(p.suffix for p in cache_dir.iterdir()) == [".onnx", ".onnx"]

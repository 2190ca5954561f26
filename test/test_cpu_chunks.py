"""A CPU batch as concurrent chunks (`cpu_chunks`): same results as the whole batch, run at the same time in
threads of their own, each on its share of the intra-op threads, and the caller's thread count kept."""
import multiprocessing
import threading

import pytest
import torch

from sparseinst_core import build_model
from sparseinst_core.inference.backends import TorchBackend
from sparseinst_core.inference.cpu_chunks import ConcurrentChunks


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


class RecordingForward:
    """A stand-in network that records each call's batch size, thread and intra-op thread count, and waits
    until two calls are inside at once (so a test fails if the chunks ran one after the other)."""

    def __init__(self, expected_concurrent: int):
        self.calls: list[tuple[int, str, int]] = []
        self.barrier = threading.Barrier(expected_concurrent, timeout=10)

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls.append((len(images), threading.current_thread().name, torch.get_num_threads()))
        if len(images) < 4:
            self.barrier.wait()
        return {"pred_scores": images.mean(dim=(1, 2, 3))[:, None], "pred_masks": images[:, :1] * 2}


def test_a_batch_runs_as_concurrent_chunks_with_one_thread_each(two_threads):
    forward = RecordingForward(expected_concurrent=2)
    images = torch.randn(4, 3, 8, 8)
    outputs = ConcurrentChunks(forward)(images)
    assert sorted(size for size, _, _ in forward.calls) == [2, 2]
    assert len({thread for _, thread, _ in forward.calls}) == 2
    assert threading.current_thread().name not in {thread for _, thread, _ in forward.calls}
    assert [threads for _, _, threads in forward.calls] == [1, 1]
    assert torch.get_num_threads() == 2                       # the caller's count is back
    torch.testing.assert_close(outputs["pred_scores"], images.mean(dim=(1, 2, 3))[:, None])
    torch.testing.assert_close(outputs["pred_masks"], images[:, :1] * 2)   # in the batch's order


def test_an_odd_batch_is_split_in_order(two_threads):
    forward = RecordingForward(expected_concurrent=2)
    images = torch.randn(3, 3, 8, 8)
    outputs = ConcurrentChunks(forward)(images)
    assert sorted(size for size, _, _ in forward.calls) == [1, 2]
    torch.testing.assert_close(outputs["pred_masks"], images[:, :1] * 2)


def test_one_image_or_one_thread_runs_the_batch_as_it_is(two_threads):
    forward = RecordingForward(expected_concurrent=1)
    ConcurrentChunks(forward)(torch.randn(1, 3, 8, 8))
    torch.set_num_threads(1)
    ConcurrentChunks(forward)(torch.randn(4, 3, 8, 8))
    assert [(size, thread) for size, thread, _ in forward.calls] == [(1, threading.current_thread().name),
                                                                     (4, threading.current_thread().name)]


def test_an_error_in_a_chunk_reaches_the_caller_and_the_thread_count_is_restored(two_threads):
    def failing(images):
        raise RuntimeError("out of memory in a chunk")
    with pytest.raises(RuntimeError, match="out of memory in a chunk"):
        ConcurrentChunks(failing)(torch.randn(2, 3, 8, 8))
    assert torch.get_num_threads() == 2


def test_the_torch_backend_gives_the_whole_batch_results_with_chunks(two_threads):
    torch.manual_seed(0)
    model = build_model("r18_giam", num_classes=3).eval()
    images = torch.randn(4, 3, 96, 128)
    chunked = TorchBackend(model, device="cpu")
    whole = TorchBackend(model, device="cpu", cpu_chunks=False)
    assert chunked.chunks is not None and whole.chunks is None
    with torch.inference_mode():
        expected, outputs = whole(images), chunked(images)
    for key in expected:
        torch.testing.assert_close(outputs[key], expected[key], rtol=1e-3, atol=1e-3)  # float rounding


def _chunked_sum_in_child(chunks, queue):
    queue.put(float(chunks(torch.ones(4, 3, 8, 8))["pred_masks"].sum()))


def test_a_forked_child_runs_chunks_with_threads_of_its_own(two_threads):
    chunks = ConcurrentChunks(lambda images: {"pred_masks": images[:, :1] * 2})
    chunks(torch.ones(4, 3, 8, 8))                            # the parent's pool has threads now
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_chunked_sum_in_child, args=(chunks, queue))
    child.start()
    child.join(30)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the child waited for threads it does not have"
    assert queue.get(timeout=5) == 4 * 8 * 8 * 2

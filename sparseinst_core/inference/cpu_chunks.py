"""A batch on the CPU as concurrent chunks, each on its share of the cores.

PyTorch parallelises every operator over all its intra-op threads, and each operator ends at a barrier.
On a camera-sized input most operators are small, so the threads spend a good part of each pass waiting
for one another, and one thread pre-empted by other work (the node's executor, the camera drivers, a
second node) stalls all of them at the next barrier. The images of a batch are independent, so the batch
can be cut into chunks that run at the same time, each in its own thread with `threads // chunks` intra-op
threads: the cores then do independent work and a pre-empted chunk delays only itself.

Measured on this project's 2-core machine (2 intra-op threads; `docs/ros.md`, runs E to G): 4 cameras
through one node (the demo model at 192x256) got 1.03 to 1.35 times the results per second of 4 nodes in five
rounds with chunks, against 0.82 and 0.90 without; in-process, r18_giam 4 x 448x576 took 816-888 ms against
939 for the whole batch, r50_giam 2 x 608x800 2540-2710 ms against 2706-2785, with 6-13% less CPU time.

The results are the whole batch's up to float rounding (each chunk is a smaller batch of the same size).
`torch.set_num_threads` is process-wide: a chunk thread sets its share, and the caller sets its own count
back when the chunks are done, so other threads only see the smaller count (`torch.get_num_threads()`)
while chunks run; the OpenMP thread count each thread uses is its own.
"""
from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

Outputs = dict[str, torch.Tensor]


class ConcurrentChunks:
    """Runs `forward` on a (B, 3, H, W) batch as min(B, threads) chunks at once, threads = the caller's
    `torch.get_num_threads()`; a single image or a single thread runs `forward` as it is."""

    def __init__(self, forward: Callable[[torch.Tensor], Outputs]):
        self.forward = forward
        self._pool: ThreadPoolExecutor | None = None
        self._workers = 0
        # A forked child has none of the pool's threads but would count them as idle and wait forever.
        runner = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: runner() is not None and runner().forget_pool())

    def forget_pool(self) -> None:
        """Drop the pool without joining its threads (after a fork they do not exist); the next batch makes one."""
        self._pool, self._workers = None, 0

    def chunks_for(self, batch_size: int) -> int:
        return min(batch_size, torch.get_num_threads())

    def __call__(self, images: torch.Tensor) -> Outputs:
        threads = torch.get_num_threads()
        chunks = self.chunks_for(len(images))
        if chunks < 2:
            return self.forward(images)
        if self._workers < chunks:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            self._pool, self._workers = ThreadPoolExecutor(chunks, thread_name_prefix="sparseinst_chunk"), chunks
        threads_per_chunk = threads // chunks

        def run(chunk: torch.Tensor) -> Outputs:
            torch.set_num_threads(threads_per_chunk)
            with torch.inference_mode():
                return self.forward(chunk)

        try:
            parts = list(self._pool.map(run, images.tensor_split(chunks)))   # chunks of (B / chunks, 3, H, W)
        finally:
            torch.set_num_threads(threads)
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

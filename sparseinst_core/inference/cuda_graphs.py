"""CUDA graphs for the fixed input size of a camera stream: one captured graph per input shape, replayed.

At batch 1 a SparseInst forward pass is a few hundred short kernels, and on a fast GPU launching them,
not computing them, bounds the frame rate. A CUDA graph records the launches once, for a static input
buffer, and replays them all with one call.

`torch.cuda.CUDAGraph` rather than `torch.compile(mode="reduce-overhead")`: the same cuDNN kernels as
eager mode (results as eager's), a capture of a few forward passes instead of minutes of Triton
compilation per shape, no compiler on the robot, and a failure that is one exception at capture time.

Policy (`CudaGraphRunner`): a shape is captured at its second call among the last `RECENT_CALLS` calls (a
stream that has settled on a size, or a rig of cameras whose batches alternate between a few sizes; a stream
whose size keeps changing runs eagerly and captures nothing); at most
`max_graphs` shapes are kept, the least recently used released first, since each graph holds the memory
of its activations; any capture failure turns graphs off for the runner, with a warning, and that call
and every later one run eagerly.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict, deque
from collections.abc import Callable

import torch

from .defaults import MAX_CUDA_GRAPHS

Outputs = dict[str, torch.Tensor]
WARMUP_CALLS = 2   # eager passes on a side stream before capture (lazy initialisation, workspaces)
RECENT_CALLS = 8   # the calls whose shapes decide a capture


class CapturedGraph:
    """A graph recorded for one static input buffer; calling it copies the input in and replays."""

    def __init__(self, graph, static_input: torch.Tensor, static_outputs: Outputs):
        self.graph, self.static_input, self.static_outputs = graph, static_input, static_outputs

    def __call__(self, images: torch.Tensor) -> Outputs:
        self.static_input.copy_(images)
        self.graph.replay()
        # The static outputs are overwritten by the next replay: callers get their own copies.
        return {key: value.clone() for key, value in self.static_outputs.items()}


def capture_graph(forward: Callable[[torch.Tensor], Outputs], example: torch.Tensor) -> CapturedGraph:
    """Record `forward` on a static copy of `example` (a CUDA tensor), as PyTorch's CUDA graph notes say:
    warm-up passes on a side stream, then the capture in the graph's own memory pool (freed with it).
    Called in inference mode, like every later replay."""
    static_input = example.clone()
    stream = torch.cuda.Stream(device=example.device)
    stream.wait_stream(torch.cuda.current_stream(example.device))
    with torch.cuda.stream(stream):
        for _ in range(WARMUP_CALLS):
            forward(static_input)
    torch.cuda.current_stream(example.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    # thread_local: CUDA work of the caller's other threads (a node publishing results) does not
    # invalidate the capture; only this thread's must be capturable.
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        static_outputs = forward(static_input)
    return CapturedGraph(graph, static_input, static_outputs)


class CudaGraphRunner:
    """Runs `forward` through a captured CUDA graph per input shape where it pays, eagerly elsewhere.

    `capture(forward, example) -> CapturedGraph` is `capture_graph` on a GPU; tests pass another.
    """

    def __init__(self, forward: Callable[[torch.Tensor], Outputs], max_graphs: int = MAX_CUDA_GRAPHS,
                 capture: Callable[[Callable, torch.Tensor], CapturedGraph] = capture_graph):
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be >= 1, got {max_graphs}")
        self.forward, self.max_graphs, self.capture = forward, max_graphs, capture
        self.graphs: OrderedDict[tuple, CapturedGraph] = OrderedDict()
        self.enabled = True
        self.recent_shapes: deque[tuple] = deque(maxlen=RECENT_CALLS)

    def __call__(self, images: torch.Tensor) -> Outputs:
        shape = (tuple(images.shape), images.dtype, str(images.device))
        graph = self.graphs.get(shape)
        if graph is None and self.enabled and shape in self.recent_shapes:
            graph = self._capture(shape, images)
        self.recent_shapes.append(shape)
        if graph is None:
            return self.forward(images)
        self.graphs.move_to_end(shape)
        return graph(images)

    def _capture(self, shape: tuple, images: torch.Tensor) -> CapturedGraph | None:
        try:
            graph = self.capture(self.forward, images)
        except Exception as error:  # noqa: BLE001 - any capture failure means: run this model eagerly
            self.enabled = False
            self.graphs.clear()
            warnings.warn(f"CUDA graph capture failed for input {shape[0]} ({type(error).__name__}: {error}); "
                          "running eagerly from now on", RuntimeWarning, stacklevel=3)
            return None
        self.graphs[shape] = graph
        while len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        return graph

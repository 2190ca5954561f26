"""The managed (lifecycle) variant of the SparseInst node, for systems that sequence their start-up.

configure loads the model and creates the publishers and the ~/enable service; activate subscribes and
starts inference; deactivate stops receiving but keeps the model; cleanup frees the model. A transition
that fails logs why in one line (`configure failed: <file or parameter>: <cause>`): configure then
returns FAILURE and leaves the node unconfigured, the others return ERROR (error processing releases
everything). The work itself is `SparseInstPipeline`, shared with the plain node.
"""
from __future__ import annotations

import sys

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from .failures import failure_report
from .node import SparseInstPipeline, run


class SparseInstLifecycleNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("sparseinst_node", **kwargs)
        self.pipeline = SparseInstPipeline(self, self.create_lifecycle_publisher, self.destroy_lifecycle_publisher)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._transition("configure", state, self._configure, LifecycleNode.on_configure,
                                  failed=TransitionCallbackReturn.FAILURE)
        if result != TransitionCallbackReturn.SUCCESS:
            self._release()                         # unconfigured again, as before the attempt
        return result

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        # the base class activates the lifecycle publishers
        return self._transition("activate", state, self.pipeline.open_inputs, LifecycleNode.on_activate)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("deactivate", state, self.pipeline.close_inputs, LifecycleNode.on_deactivate)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("cleanup", state, self._release, LifecycleNode.on_cleanup)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("shutdown", state, self._release, LifecycleNode.on_shutdown)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # back to unconfigured, ready to be configured again
        return self._transition("error processing", state, self._release, LifecycleNode.on_error)

    def _configure(self) -> None:
        self.pipeline.load_model()
        self.pipeline.open_outputs()

    def _release(self) -> None:
        self.pipeline.close_inputs()
        self.pipeline.close_outputs()
        self.pipeline.unload_model()

    def _transition(self, name: str, state: LifecycleState, step, base, failed=TransitionCallbackReturn.ERROR
                    ) -> TransitionCallbackReturn:
        """`step()`, then the base class's `base(self, state)`; an exception is logged in one line with its cause
        (rclpy would swallow it) and the transition returns `failed`."""
        try:
            step()
            return base(self, state)
        except Exception as error:
            line, trace = failure_report(f"{name} failed", error)
            self.pipeline.logger.error(line)
            self.pipeline.logger.debug(trace)
            return failed


def main() -> None:
    sys.exit(run(SparseInstLifecycleNode))


if __name__ == "__main__":
    main()

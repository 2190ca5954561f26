"""The managed (lifecycle) variant of the SparseInst node, for systems that sequence their start-up.

configure loads the model (a weights error fails the transition, with the reason logged) and creates
the publishers and the ~/enable service; activate subscribes and starts inference; deactivate stops
receiving but keeps the model; cleanup frees the model. The work itself is `SparseInstPipeline`, shared
with the plain node.
"""
from __future__ import annotations

import sys

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from .node import SparseInstPipeline, run


class SparseInstLifecycleNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("sparseinst_node", **kwargs)
        self.pipeline = SparseInstPipeline(self, self.create_lifecycle_publisher, self.destroy_lifecycle_publisher)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.pipeline.load_model()
        except (FileNotFoundError, ValueError, RuntimeError) as error:
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        self.pipeline.open_outputs()
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.pipeline.open_inputs()
        return super().on_activate(state)          # activates the lifecycle publishers

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.pipeline.close_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.pipeline.close_outputs()
        self.pipeline.unload_model()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.pipeline.close_inputs()
        self.pipeline.close_outputs()
        self.pipeline.unload_model()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.pipeline.close_inputs()
        self.pipeline.close_outputs()
        self.pipeline.unload_model()
        return TransitionCallbackReturn.SUCCESS    # back to unconfigured, ready to be configured again


def main() -> None:
    sys.exit(run(SparseInstLifecycleNode))


if __name__ == "__main__":
    main()

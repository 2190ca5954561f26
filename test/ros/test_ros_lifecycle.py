"""The managed node through every lifecycle transition, driven by the standard lifecycle services."""
import itertools

import pytest
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from ros_harness import (MIN_SIZE, UNUSABLE_WEIGHTS, Client, RecordingLogger, scene_image, stamp, start_process,
                         unusable_weights)

from sparseinst_ros.conversions import numpy_to_image

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

_seconds = itertools.count(5000)


def frame():
    msg = numpy_to_image(scene_image(), "rgb8")
    msg.header.stamp = stamp(next(_seconds))
    msg.header.frame_id = "camera_optical"
    return msg


@pytest.fixture(scope="module")
def node(ros, tmp_path_factory):
    # starts with a weights file that does not exist: the first configure must fail
    process = start_process("sparseinst_ros.lifecycle_node", tmp_path_factory.mktemp("lifecycle") / "node.log",
                          params=dict(weights="/nonexistent/weights.pth", device="cpu", min_size=MIN_SIZE,
                                      max_size=2 * MIN_SIZE, diagnostics_period=0.5),
                          remaps={"image": "/camera/image_raw"})
    yield process
    assert process.stop() == 0, process.log()


class Lifecycle:
    def __init__(self, client: Client, node_name: str = "sparseinst_node"):
        self.client = client
        self.change = client.node.create_client(ChangeState, f"/{node_name}/change_state")
        self.get = client.node.create_client(GetState, f"/{node_name}/get_state")

    def wait_until_reachable(self, timeout: float = 120.0, attempt: float = 5.0) -> None:
        """Call both lifecycle services until each answers. A service can be visible to this client before
        the server has discovered where to send responses; rmw then drops the response ("failed to send
        response"), and a state change cannot simply be repeated. So, while the node is not active: GetState,
        and ChangeState with deactivate, which is refused without effect in the other states."""
        refused = ChangeState.Request(transition=Transition(id=Transition.TRANSITION_DEACTIVATE))
        for service, request in ((self.get, GetState.Request()), (self.change, refused)):
            self.client.call(service, request, timeout=timeout, retry_after=attempt)
        assert self.state() != State.PRIMARY_STATE_ACTIVE

    def state(self) -> int:
        return self.client.call(self.get, GetState.Request(), timeout=60.0, retry_after=5.0).current_state.id

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return self.client.call(self.change, request, timeout=120.0).success


@pytest.fixture(scope="module")
def client(node):
    client = Client("lifecycle_test_client")
    yield client
    client.destroy()


@pytest.fixture(scope="module")
def lifecycle(client):
    lifecycle = Lifecycle(client)
    lifecycle.wait_until_reachable()
    return lifecycle


def test_starts_unconfigured_without_subscribing(lifecycle, client):
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert client.image_pub.get_subscription_count() == 0


def test_configure_with_missing_weights_fails_with_the_reason(lifecycle, node):
    assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert node.wait_for_log("weights file not found: /nonexistent/weights.pth", timeout=10)


def test_deleting_a_parameter_is_refused_and_configure_still_says_why_it_fails(lifecycle, client, node):
    (result,) = client.delete_parameters("classes")                     # `ros2 param delete`
    assert not result.successful and result.reason.startswith("classes cannot be deleted")
    failures = node.log().count("configure failed: weights file not found: /nonexistent/weights.pth")
    assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert client.spin_until(lambda: node.log().count("configure failed: weights file not found") > failures, 10.0)


@pytest.mark.parametrize("kind", UNUSABLE_WEIGHTS)
def test_configure_with_unusable_files_fails_in_one_line_naming_the_file(lifecycle, client, node, tmp_path,
                                                                         weights_file, kind):
    weights, class_names, named = unusable_weights(kind, tmp_path, weights_file)
    assert all(r.successful for r in client.set_parameters(weights=str(weights), **{"class_names": "", **class_names}))
    failures = node.log().count("configure failed: ")
    assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert client.spin_until(lambda: node.log().count("configure failed: ") > failures, 10.0)
    line = [line for line in node.log().splitlines() if "configure failed: " in line][-1]
    assert str(named) in line and "Traceback" not in node.log()
    assert client.set_parameters(class_names="")[0].successful


def test_weights_can_be_changed_while_unconfigured_and_configure_loads_them(lifecycle, client, weights_file):
    assert client.set_parameters(weights=str(weights_file))[0].successful
    assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
    assert not client.set_parameters(weights="/other.pth")[0].successful     # loaded: start-up only now


def test_inactive_node_does_not_subscribe(lifecycle, client):
    assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
    client.spin_for(0.5)
    assert client.image_pub.get_subscription_count() == 0
    assert client.receives_nothing_for(frame(), seconds=1.0)


def test_activate_starts_inference(lifecycle, client):
    assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    assert lifecycle.state() == State.PRIMARY_STATE_ACTIVE
    assert client.wait_for_subscriber(timeout=30)
    msg = frame()
    out = client.send(msg)
    assert out["detections"].header == msg.header and out["instance_mask"].header == msg.header


def test_deactivate_pauses_and_reactivation_resumes_without_reloading(lifecycle, client, node):
    loads = node.log().count("loaded r18_giam")
    assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
    assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
    assert client.spin_until(lambda: client.image_pub.get_subscription_count() == 0, 10.0)
    assert client.receives_nothing_for(frame(), seconds=1.0)
    assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    assert client.wait_for_subscriber(timeout=30)
    client.send(frame())
    assert node.log().count("loaded r18_giam") == loads


def test_cleanup_frees_the_model_and_configure_loads_it_again(lifecycle, client, node, tmp_path, weights_file):
    assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
    assert lifecycle.transition(Transition.TRANSITION_CLEANUP)
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert node.wait_for_log("unloaded the model", timeout=10)
    assert client.set_parameters(score_threshold=0.5)[0].successful
    # corrupt weights: a failed configure leaves the node unconfigured and able to try again
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x02 truncated pickle")
    assert client.set_parameters(weights=str(corrupt))[0].successful
    assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert node.wait_for_log(f"configure failed: {corrupt}", timeout=10) or \
        node.wait_for_log(f"configure failed: could not read checkpoint {corrupt}", timeout=1)
    assert client.set_parameters(weights=str(weights_file))[0].successful
    loads = node.log().count("loaded r18_giam")
    assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert node.log().count("loaded r18_giam") == loads + 1
    assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    assert client.wait_for_subscriber(timeout=30)
    client.send(frame())


def test_shutdown_finalizes_from_active(lifecycle, client):
    assert lifecycle.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert lifecycle.state() == State.PRIMARY_STATE_FINALIZED
    assert client.spin_until(lambda: client.image_pub.get_subscription_count() == 0, 10.0)


@pytest.mark.parametrize("configure_first", [False, True], ids=["from_unconfigured", "from_inactive"])
def test_shutdown_finalizes_from_the_other_primary_states(ros, tmp_path, weights_file, configure_first):
    # a name of its own: service clients must not find a node of an earlier test still in the graph
    name = f"sparseinst_shutdown_test_{int(configure_first)}"
    process = start_process("sparseinst_ros.lifecycle_node", tmp_path / "node.log",
                          params=dict(weights=str(weights_file), device="cpu", min_size=MIN_SIZE,
                                      max_size=2 * MIN_SIZE),
                          remaps={"image": "/camera/image_raw", "__node": name})
    client = Client(f"lifecycle_shutdown_client_{int(configure_first)}", node_name=name)
    try:
        lifecycle = Lifecycle(client, name)
        lifecycle.wait_until_reachable()
        if configure_first:
            assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
            assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
            shutdown = Transition.TRANSITION_INACTIVE_SHUTDOWN
        else:
            assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
            shutdown = Transition.TRANSITION_UNCONFIGURED_SHUTDOWN
        assert lifecycle.transition(shutdown)
        assert lifecycle.state() == State.PRIMARY_STATE_FINALIZED
        assert ("unloaded the model" in process.log()) == configure_first
        assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE)   # finalized is final
    finally:
        client.destroy()
        assert process.stop() == 0, process.log()


def test_an_error_in_a_transition_undoes_everything_and_leaves_the_node_configurable(ros, weights_file):
    """In process: a transition callback that raises goes through on_error back to unconfigured."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from sparseinst_ros.lifecycle_node import SparseInstLifecycleNode

    node = SparseInstLifecycleNode(parameter_overrides=[
        Parameter("weights", value=str(weights_file)), Parameter("device", value="cpu"),
        Parameter("min_size", value=MIN_SIZE), Parameter("max_size", value=2 * MIN_SIZE)],
        cli_args=["--ros-args", "-r", "__node:=sparseinst_error_test"])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.pipeline.model is not None and node.pipeline.publishers

        def broken_open_inputs():
            raise RuntimeError("camera went away")
        node.pipeline.open_inputs = broken_open_inputs
        node.pipeline.logger = RecordingLogger()
        assert node.trigger_activate() == TransitionCallbackReturn.ERROR
        assert node._state_machine.current_state[1] == "unconfigured"      # through ErrorProcessing
        assert node.pipeline.logger.messages("error") == ["activate failed: camera went away"]
        assert node.pipeline.model is None and not node.pipeline.publishers and not node.pipeline.subscriptions

        del node.pipeline.open_inputs                                      # the class's method again
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.pipeline.subscriptions
    finally:
        node.pipeline.close_inputs()
        node.destroy_node()


@pytest.mark.parametrize("error,line", [
    (KeyError("model"), "configure failed: weights '{weights}': KeyError: 'model'"),
    (MemoryError(), "configure failed: weights '{weights}': MemoryError"),
    (OSError(5, "Input/output error"), "configure failed: weights '{weights}': OSError: [Errno 5] Input/output error"),
])
def test_whatever_loading_raises_fails_configure_with_one_line(ros, weights_file, monkeypatch, error, line):
    """In process: rclpy swallows what a transition callback raises; the node says it and returns FAILURE."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    import sparseinst_ros.node
    from sparseinst_ros.lifecycle_node import SparseInstLifecycleNode

    def broken_loader(**arguments):
        raise error
    monkeypatch.setattr(sparseinst_ros.node, "load_predictor", broken_loader)
    node = SparseInstLifecycleNode(parameter_overrides=[Parameter("weights", value=str(weights_file))],
                                   cli_args=["--ros-args", "-r", "__node:=sparseinst_configure_failure_test"])
    node.pipeline.logger = RecordingLogger()
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node._state_machine.current_state[1] == "unconfigured"
        assert node.pipeline.logger.messages("error") == [line.format(weights=weights_file)]
        assert node.pipeline.logger.messages("debug")[0].startswith("Traceback (most recent call last):")
        monkeypatch.undo()
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    finally:
        node.pipeline.close_outputs()
        node.destroy_node()

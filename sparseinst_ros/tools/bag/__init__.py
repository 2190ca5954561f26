"""`sparseinst_bag`: recorded data (rosbag2, sqlite3 or mcap) through the node's pipeline, without a running
node and without a ROS installation beyond the project's pip wheels.

- `info`: what a bag holds (`info`);
- `run`: every frame of an image topic through the node's `FrameProcessor`, the outputs written to a new bag
  under the node's topic names (`run`, with `reading`, `writing`, `types` and `summary`);
- `export`: frames to a COCO-format folder, optionally pre-labelled by the model (`export`, `polygons`).
The node's parameters file configures the model as it does the node (`node_parameters`); outputs appear only
when complete (`output`); `cli` parses the command line and turns errors into exit statuses (`errors`);
`benchmark` compares the speed of `run` with the predictor's.
"""

"""SparseInst for ROS 2: a thin node around `sparseinst_core` (camera images in, instances out).

Executables: sparseinst_node (`node`), sparseinst_lifecycle_node (`lifecycle_node`), image_source
(`tools.image_source`) and sparseinst_demo_client (`tools.demo_client`). The node is a ROS adapter; what it
decides lives in modules usable and tested without a running node: `parameters` (table and checks),
`frame_loop` (pending frames, worker thread, statistics; no ROS), `health` (diagnostics and hints),
`camera_info` (pairing), `conversions` (messages <-> numpy), `detections` (the outputs) and `transport`.
"""

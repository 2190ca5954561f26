"""SparseInst for ROS 2: a thin node around `sparseinst_core` (camera images in, instances out).

Executables: sparseinst_node (`node`), sparseinst_lifecycle_node (`lifecycle_node`), image_source
(`image_source`) and sparseinst_demo_client (`demo_client`). Message conversions (`conversions`) and the
output construction (`detections`) are plain functions, usable and tested without a running node.
"""

"""Executables and scripts around the node: the image source and the demo client (console scripts), the
end-to-end demo (`run_demo`), the node benchmark (`benchmark_node`) and how they start ROS processes
(`processes`). They may import anything; nothing in the package imports them.
"""

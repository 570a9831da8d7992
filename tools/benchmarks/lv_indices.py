"""`make bench` plugin: LV index computation time per frame, vectorised vs a per-ray Python loop."""

from cmrssl.metrics.lv_indices_bench import bench_lv_indices

BENCHMARKS = {"lv_indices": bench_lv_indices}

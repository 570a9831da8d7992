"""`make bench` plugin: pretraining slices/s per method of cmr_ssp_pretraining and its ratio to a plain PyTorch loop."""

from cmrssl.engines.ssl_bench import pretraining_throughput

BENCHMARKS = {"ssl_pretrain_throughput": pretraining_throughput}

"""`python -m benchmarks`: the benchmark suite's entry point, one table measured in one run.

The online engine at 448 (R-101): per-frame latency for 0/2/4/6/12/24 supports and the
release's schedule with caches on and off, ratios to 0 supports beside the arithmetic each
needs, frames/s for 1 and 8 videos per step, float32 vs bfloat16, compile times and memory.
Options as `python -m benchmarks.inference --help`. The other scripts measure one thing each:
benchmarks.train_step, benchmarks.single_frame (vs PyTorch), benchmarks.temporal_ops (vs
torchvision), benchmarks/input_pipeline.py.
"""

from benchmarks import inference

if __name__ == "__main__":
    inference.main()

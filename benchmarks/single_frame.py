"""Single-frame detector speed: our jitted Flax model vs an equivalent PyTorch model.

  python -m benchmarks.single_frame            # R-101 FPN RetinaNet at 448, batch 1 and 8
  python -m benchmarks.single_frame --quick    # fewer repeats

The network is the release's single-frame detector: ResNet-101 body, FPN P3-P6 (256 channels,
P6 from C5), 2-conv class/box subnets with 9 anchors x 30 classes, frozen BN. The PyTorch side is
torchvision's resnet101 (FrozenBatchNorm2d) + torchvision's FeaturePyramidNetwork with a P6-from-C5
extra block + the same heads, in eval mode under no_grad, NCHW and channels_last (the faster of
the two is the baseline); torch uses as many threads as XLA (all cores). Per
shared/docs/PERF_NOTES.md the machine throttles sustained load, so the variants are interleaved
(A B A B ...), medians of wall and process CPU time are reported with a same-run ratio, and a
calibration matmul is timed before and after. Peak memory: XLA's buffer assignment for the
compiled JAX program, and the peak RSS of a fresh process running one forward for each framework.

Efficiency: GMAC/s divides each network's convolution multiply-accumulates (counted from its
own layers: JAX's jaxpr, torch's Conv2d modules) by its wall time. The two counts differ a little
because torchvision puts each stage's stride in the 3x3 conv and the release (our model) in the
1x1. XLA's own cost analysis (flops / 2) is printed too; it is lower because it skips the taps
that fall on zero padding. The XLA:CPU flags are `ssvd_jax.runtime`'s defaults, as in main.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from ssvd_jax.runtime import WITHOUT_YNN_FUSIONS, configure_cpu_runtime

# First thing, as in main.py: XLA reads XLA_FLAGS once, and the glibc malloc tuning must precede
# the threads. Both frameworks share this process and so the malloc settings: torch gains from
# them too (channels_last batch 1, four quiet alternations: median 534 vs 556 ms per image).
# torch's forward can be 10x slower when another process holds a core (its OpenMP threads
# wait on each other), with or without the tuning: trust only rows whose calibration held.
configure_cpu_runtime()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402  (torch before anything that may import tensorflow)
import torchvision  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.ops import FeaturePyramidNetwork  # noqa: E402
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock  # noqa: E402
from torchvision.ops.misc import FrozenBatchNorm2d  # noqa: E402

from benchmarks.measure import calibrate, vm_hwm_mib  # noqa: E402
from configs import default as default_config  # noqa: E402
from ssvd_jax.models import ssvd as ssvd_lib  # noqa: E402

NUM_CLASSES, NUM_ANCHORS, WIDTH = 30, 9, 256


class P6FromC5(ExtraFPNBlock):
    """The release's P6: a 3x3 stride-2 conv on C5 (torchvision's LastLevelP6P7 adds a P7)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)

    def forward(self, results, x, names):
        return [*results, self.p6(x[-1])], [*names, "p6"]


class TorchHead(nn.Module):
    def __init__(self, num_convs: int = 2):
        super().__init__()

        def tower():
            layers = []
            for _ in range(num_convs):
                layers += [nn.Conv2d(WIDTH, WIDTH, 3, padding=1), nn.ReLU()]
            return nn.Sequential(*layers)

        self.cls_tower, self.bbox_tower = tower(), tower()
        self.cls_logits = nn.Conv2d(WIDTH, NUM_ANCHORS * NUM_CLASSES, 3, padding=1)
        self.bbox_pred = nn.Conv2d(WIDTH, NUM_ANCHORS * 4, 3, padding=1)

    def forward(self, feats):
        return [self.cls_logits(self.cls_tower(f)) for f in feats], [
            self.bbox_pred(self.bbox_tower(f)) for f in feats
        ]


class TorchDetector(nn.Module):
    def __init__(self):
        super().__init__()
        r = torchvision.models.resnet101(weights=None, norm_layer=FrozenBatchNorm2d)
        self.body = torchvision.models._utils.IntermediateLayerGetter(
            r, {"layer2": "c3", "layer3": "c4", "layer4": "c5"}
        )
        self.fpn = FeaturePyramidNetwork(
            [512, 1024, 2048], WIDTH, extra_blocks=P6FromC5(2048, WIDTH)
        )
        self.head = TorchHead()

    def forward(self, x):
        return self.head(list(self.fpn(self.body(x)).values()))


def jax_conv_macs(fn, *args) -> int:
    """Multiply-accumulates of every convolution in `fn`'s jaxpr (padded taps included)."""

    def walk(jaxpr) -> int:
        total = 0
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                out, kernel = eqn.outvars[0].aval, eqn.invars[1].aval
                spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial) positions
                per_output = int(np.prod([kernel.shape[d] for d in spec[1:]]))
                total += int(np.prod(out.shape)) * per_output
            for param in eqn.params.values():
                inner = getattr(param, "jaxpr", param)
                if hasattr(inner, "eqns"):
                    total += walk(inner)
        return total

    return walk(jax.make_jaxpr(fn)(*args).jaxpr)


def torch_conv_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv2d in one forward of `model` on `x`."""
    total = [0]

    def hook(module, _inputs, out):
        k = module.kernel_size[0] * module.kernel_size[1]
        total[0] += out.numel() * (module.in_channels // module.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total[0]


def jax_model_and_fn(batch: int, size: int):
    """(run, compile seconds, XLA buffer bytes, XLA cost-analysis MACs, conv MACs)."""
    config = default_config.get_config()
    model = ssvd_lib.create_model(config.model, variant="single_frame")
    x = jnp.asarray(
        np.random.default_rng(0).standard_normal((batch, 1, size, size, 3)), jnp.float32
    )
    # init_variables' rbg key, but compiled without YNNPACK fusions: under runtime's 'eltwise'
    # default the initialisers alone peak at 2.4 GB, which would swamp the RSS column.
    key = jax.random.key(0, impl="rbg")
    init = jax.jit(model.init).lower(key, x).compile(compiler_options=WITHOUT_YNN_FUSIONS)
    variables = init(key, x)
    fn = jax.jit(model.apply)
    t0 = time.perf_counter()
    compiled = fn.lower(variables, x).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    peak = (
        mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
        if mem is not None
        else float("nan")
    )
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost  # a list in older jax
    xla_macs = cost["flops"] / 2 if cost and "flops" in cost else float("nan")
    conv_macs = jax_conv_macs(model.apply, variables, x)
    run = lambda: jax.block_until_ready(compiled(variables, x))
    return run, compile_s, peak, xla_macs, conv_macs


def torch_fn(batch: int, size: int, channels_last: bool):
    model = TorchDetector().eval()
    x = torch.randn(batch, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)

    def run():
        with torch.no_grad():
            return model(x)

    return run


def peak_rss_mib(framework: str, batch: int, size: int) -> tuple[float, float]:
    """(peak RSS, RSS after the imports) of a fresh process that builds one model, runs it once.

    The child imports this module, hence both frameworks; the second number is that baseline.
    """
    code = (
        "import sys; sys.argv=['x'];"
        "from benchmarks import single_frame as b;"
        "base=b.vm_hwm_mib();"
        + (
            f"f=b.torch_fn({batch},{size},False)"
            if framework == "torch"
            else f"f,*_=b.jax_model_and_fn({batch},{size})"
        )
        + ";f();print(b.vm_hwm_mib(), base)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=os.getcwd()
    )
    peak, base = map(float, out.stdout.strip().splitlines()[-1].split())
    return peak, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 repeats, no memory subprocesses")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    torch.set_num_threads(os.cpu_count() or 2)
    print(
        f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )
    torch_macs = torch_conv_macs(TorchDetector().eval(), torch.zeros(1, 3, args.size, args.size))
    rows = []
    for batch in args.batches:
        jfn, compile_s, xla_bytes, xla_macs, jax_macs = jax_model_and_fn(batch, args.size)
        tfn = torch_fn(batch, args.size, channels_last=False)
        tfn_cl = torch_fn(batch, args.size, channels_last=True)
        for f in (jfn, tfn, tfn_cl):  # warm-up outside the timed region
            f()
        cal0 = calibrate()
        times = {"jax": [], "torch": [], "torch_cl": []}
        cpu = {"jax": [], "torch": [], "torch_cl": []}
        for _ in range(repeats):  # interleaved
            for name, f in (("jax", jfn), ("torch", tfn), ("torch_cl", tfn_cl)):
                c0, t0 = time.process_time(), time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)  # all threads of this process
        cal1 = calibrate()
        med = {k: statistics.median(v) for k, v in times.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        best = "torch" if med["torch"] <= med["torch_cl"] else "torch_cl"
        base = med[best]
        mem_j = mem_t = mem_base = float("nan")
        if not args.quick:
            mem_j, mem_base = peak_rss_mib("jax", batch, args.size)
            mem_t, _ = peak_rss_mib("torch", batch, args.size)
        rows.append(
            dict(
                batch=batch, med=med, base=base, jax_cpu=med_cpu["jax"], torch_cpu=med_cpu[best],
                compile_s=compile_s, xla_mib=xla_bytes / 2**20, mem_j=mem_j, mem_t=mem_t,
                mem_base=mem_base, cal0=cal0, cal1=cal1, xla_macs=xla_macs / batch,
                jax_macs=jax_macs / batch,
            )
        )  # fmt: skip
        del jfn, tfn, tfn_cl

    r0 = rows[0]
    print(
        f"\nR-101 FPN RetinaNet (2-conv heads), {args.size}x{args.size}, median of {repeats}. "
        f"Per image: XLA cost analysis {r0['xla_macs'] / 1e9:.1f} GMAC (flops/2); convolution "
        f"MACs {r0['jax_macs'] / 1e9:.1f} G (JAX) / {torch_macs / 1e9:.1f} G (torch)"
    )
    print(
        "| batch | JAX ms/img | torch ms/img (NCHW / channels_last) | torch/JAX "
        "| GMAC/s JAX / torch | CPU ms/img JAX / torch | JAX compile s "
        "| JAX XLA buffers MiB | peak RSS MiB JAX / torch | calib. ms before/after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, med = r["batch"], r["med"]
        gmacs_j = r["jax_macs"] * b / med["jax"] / 1e9
        gmacs_t = torch_macs * b / r["base"] / 1e9
        drift = abs(r["cal1"] - r["cal0"]) / r["cal0"]
        flag = " (throttled: calibration moved >10%)" if drift > 0.1 else ""
        print(
            f"| {b} | {1e3 * med['jax'] / b:.0f} | {1e3 * med['torch'] / b:.0f} / "
            f"{1e3 * med['torch_cl'] / b:.0f} | {r['base'] / med['jax']:.2f}x | "
            f"{gmacs_j:.0f} / {gmacs_t:.0f} | "
            f"{1e3 * r['jax_cpu'] / b:.0f} / {1e3 * r['torch_cpu'] / b:.0f} | "
            f"{r['compile_s']:.1f} | {r['xla_mib']:.0f} | {r['mem_j']:.0f} / {r['mem_t']:.0f} | "
            f"{1e3 * r['cal0']:.0f}/{1e3 * r['cal1']:.0f}{flag} |"
        )
    print(
        f"\npeak RSS: VmHWM of a fresh process per framework and batch; each imports both "
        f"frameworks, {rows[0]['mem_base']:.0f} MiB before building a model. This process's "
        f"peak: {vm_hwm_mib():.0f} MiB. GMAC/s: convolution MACs / wall time."
    )


if __name__ == "__main__":
    main()

"""How fast this CPU runs each convolution shape of a ResNet backbone at 800x1344, next to the
3x3 256-channel conv that ``detzoo benchmark`` takes as the peak: every distinct conv of
torchvision's ResNet (recorded from one forward, its inputs kept), timed alone (best of
``--calls`` after one warm-up, inference mode, 2 threads by default), channels-last and NCHW,
with its GFLOP/s; then the whole backbone's conv time and rate. The backbone stage of a
detector cannot run faster than the sum of its convolutions. Freed memory is kept for reuse,
as detzoo's commands keep it (``detzoo.allocator``), unless ``--malloc default``.

    .venv/bin/python benchmarks/backbone_convs.py --threads 2
"""

from __future__ import annotations

import argparse
import functools

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from common import add_malloc_argument, set_malloc
from detzoo.tools.benchmark import best_seconds, conv_peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--depth", type=int, default=50, choices=[50, 101])
    parser.add_argument("--shape", type=int, nargs=2, default=[800, 1344], metavar=("H", "W"))
    parser.add_argument("--calls", type=int, default=3)
    add_malloc_argument(parser)
    args = parser.parse_args()
    if not set_malloc(args.malloc) and args.malloc == "retain":
        print("backbone_convs.py: glibc's malloc settings unchanged (not glibc, or set by the environment)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = getattr(torchvision.models, f"resnet{args.depth}")().eval()
    inputs: list[tuple[nn.Conv2d, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: inputs.append((m, i[0])))
             for m in model.modules() if isinstance(m, nn.Conv2d)]  # fmt: skip
    with torch.inference_mode():
        model(torch.randn(1, 3, *args.shape))
        for hook in hooks:
            hook.remove()
        measured: dict[tuple, tuple[float, float, float]] = {}
        totals = [0.0, 0.0, 0.0]  # FLOPs, channels-last s, NCHW s
        print("in   out  kernel stride input            GFLOPs  channels-last  NCHW (GFLOP/s)")
        for conv, x in inputs:
            key = (conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0], tuple(x.shape))
            if key not in measured:
                out_h, out_w = conv(x).shape[-2:]
                flops = 2 * conv.weight.numel() * out_h * out_w
                seconds = []
                for layout in (torch.channels_last, torch.contiguous_format):
                    xs, ws = x.contiguous(memory_format=layout), conv.weight.contiguous(memory_format=layout)
                    conv_call = functools.partial(F.conv2d, xs, ws, None, conv.stride, conv.padding)
                    seconds.append(best_seconds(conv_call, torch.device("cpu"), args.calls))
                measured[key] = (flops, *seconds)
                print(f"{key[0]:<5d}{key[1]:<5d}{key[2]}x{key[2]}    {key[3]}      {str(list(x.shape[1:])):16s} "
                      f"{flops / 1e9:6.2f}  {flops / seconds[0] / 1e9:8.0f}  {flops / seconds[1] / 1e9:8.0f}")
            totals = [t + v for t, v in zip(totals, measured[key])]
    flops, channels_last, nchw = totals
    peak = conv_peak(torch.device("cpu"), ("fp32",)).gflops_s["fp32"]
    print(f"fp32 conv peak (detzoo benchmark's, same run): {peak:.0f} GFLOP/s")
    print(f"all {len(inputs)} convolutions: {flops / 1e9:.1f} GFLOPs, channels-last {channels_last:.3f} s "
          f"({flops / channels_last / 1e9:.0f} GFLOP/s), NCHW {nchw:.3f} s ({flops / nchw / 1e9:.0f} GFLOP/s); "
          f"channels-last at {100 * flops / channels_last / 1e9 / peak:.0f}% of the peak")


if __name__ == "__main__":
    main()

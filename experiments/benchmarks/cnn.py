"""Suite `cnn`: per-iteration time of jaxseg.cnn against an equivalent PyTorch implementation.

  python experiments/bench.py --suites=cnn --cnn_threads=2

Rows: per-iteration seconds (median over repeats) on a full BSDS image for jaxseg.cnn and the
PyTorch peer (same layers, Xavier init, loss, optimiser and schedule, float32, training-mode
BatchNorm, same thread count), achieved FLOP/s against the machine's peak, and batched
throughput (image-iterations per second) of `segment_batch` for several batch sizes.
"""

import dataclasses
import os
import re
import time
from pathlib import Path

import jax
import numpy as np
from absl import flags
from PIL import Image

from jaxseg import cnn

_DATA_DIR = flags.DEFINE_string(
    "cnn_data_dir",
    os.environ.get("JAXSEG_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data")),
    "Folder holding BSDS500/.",
)
_IMAGE = flags.DEFINE_string("cnn_image", "val/101085.jpg", "BSDS500 image (under images/).")
_PRESET = flags.DEFINE_enum("cnn_preset", "kim2020", ["paper", "kim2020"], "Config preset.")
_ITERS = flags.DEFINE_integer("cnn_iters", 10, "Iterations per timed run.")
_REPEATS = flags.DEFINE_integer("cnn_repeats", 3, "Timed runs per measurement (median).")
_THREADS = flags.DEFINE_integer("cnn_threads", os.cpu_count(), "torch.set_num_threads.")
_TORCH = flags.DEFINE_bool("cnn_torch", True, "Also time the PyTorch peer (needs torch).")
_BATCH_SIZES = flags.DEFINE_list("cnn_batch_sizes", ["1", "4", "16"], "segment_batch sizes.")
_BATCH_SCALE = flags.DEFINE_float(
    "cnn_batch_scale", 1.0, "Image side scale for the batched-throughput rows (1: full size)."
)
_PEAK = flags.DEFINE_float(
    "cnn_peak_gflops",
    0.0,
    "Machine peak float32 GFLOP/s; 0: on CPU, cores x clock x (64 with AVX-512, else 32).",
)


def _load_image(scale: float = 1.0) -> np.ndarray:
    path = Path(_DATA_DIR.value) / "BSDS500" / "images" / _IMAGE.value
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (set --cnn_data_dir or JAXSEG_DATA_DIR)")
    image = Image.open(path).convert("RGB")
    if scale != 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    return np.asarray(image, np.float32) / 255.0


def iteration_flops(h: int, w: int, config: cnn.Config) -> float:
    """FLOPs of one forward + backward pass (convolutions only; 2 per multiply-add).

    Forward: 27C + (n_conv - 1) 9C^2 + C^2 multiply-adds per pixel; backward: the same again
    for the weight gradients, and again less the first layer for the input gradients.
    """
    c = config.n_channels
    first, rest = 27 * c, (config.n_conv - 1) * 9 * c * c + c * c
    return 2.0 * h * w * (3 * (first + rest) - first)


def _peak_gflops() -> float | None:
    if _PEAK.value:
        return _PEAK.value
    if jax.default_backend() != "cpu":
        return None
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", cpuinfo)
    if not mhz:
        return None
    per_cycle = 64 if "avx512f" in cpuinfo else 32  # fp32 FLOPs/cycle/core with 2 FMA units
    return os.cpu_count() * float(mhz.group(1)) / 1e3 * per_cycle


def _time_jax(image: np.ndarray, config: cnn.Config) -> list[float]:
    """Per-iteration seconds of `segment` (whole loop on device), one per repeat."""
    key = jax.random.key(0)
    jax.block_until_ready(cnn.segment(image, key, config))  # compile
    times = []
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        result = jax.block_until_ready(cnn.segment(image, key, config))
        times.append((time.perf_counter() - start) / int(result.n_iter))
    return times


def _time_jax_batch(images: np.ndarray, config: cnn.Config) -> list[float]:
    keys = jax.random.split(jax.random.key(0), len(images))
    jax.block_until_ready(cnn.segment_batch(images, keys, config))
    times = []
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        result = jax.block_until_ready(cnn.segment_batch(images, keys, config))
        times.append((time.perf_counter() - start) / int(np.max(result.n_iter)))
    return times


def _time_torch(image: np.ndarray, config: cnn.Config) -> list[float]:
    """Per-iteration seconds of the PyTorch peer (authors' demo.py loop), one per repeat."""
    import torch
    from torch import nn

    torch.set_num_threads(_THREADS.value)
    torch.manual_seed(0)
    c = config.n_channels

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            convs = [nn.Conv2d(3, c, 3, padding=1)]
            convs += [nn.Conv2d(c, c, 3, padding=1) for _ in range(config.n_conv - 1)]
            convs += [nn.Conv2d(c, c, 1)]
            self.convs = nn.ModuleList(convs)
            self.norms = nn.ModuleList(nn.BatchNorm2d(c) for _ in convs)
            for conv in convs:
                nn.init.xavier_uniform_(conv.weight)
                nn.init.zeros_(conv.bias)

        def forward(self, x):
            for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
                x = conv(x)
                if i < len(self.convs) - 1:
                    x = torch.relu(x)
                x = norm(x)
            return x

    data = torch.from_numpy(image.transpose(2, 0, 1)[None].copy())
    times = []
    for _ in range(_REPEATS.value):
        model = Net().train()
        if config.optimizer == "adam":
            opt = torch.optim.Adam(
                model.parameters(), lr=config.learning_rate, betas=(config.momentum, 0.999)
            )
        else:
            opt = torch.optim.SGD(
                model.parameters(), lr=config.learning_rate, momentum=config.momentum
            )
        sched = None
        if config.lr_decay_every:
            sched = torch.optim.lr_scheduler.StepLR(
                opt, config.lr_decay_every, gamma=config.lr_decay_factor
            )
        start = time.perf_counter()
        n_iter = 0
        for _ in range(config.max_iter):
            opt.zero_grad()
            out = model(data)[0].permute(1, 2, 0)  # [h, w, C]
            flat = out.reshape(-1, c)
            target = flat.argmax(1)
            n_labels = len(torch.unique(target))
            continuity = (out[1:] - out[:-1]).abs().mean() + (out[:, 1:] - out[:, :-1]).abs().mean()
            loss = nn.functional.cross_entropy(flat, target) + config.mu * continuity
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            n_iter += 1
            if n_labels <= config.min_labels:
                break
        times.append((time.perf_counter() - start) / n_iter)
    return times


def _row(method, peer, times, flops, peak, **extra):
    median = float(np.median(times))
    row = {"method": method, "peer": peer, "median_s": median, "times_s": times, **extra}
    if flops:
        row["gflops_per_s"] = flops / median / 1e9
        if peak:
            row["fraction_of_peak"] = row["gflops_per_s"] / peak
    return row


def run(out_dir: Path) -> list[dict]:
    del out_dir
    base = cnn.Config.kim2020() if _PRESET.value == "kim2020" else cnn.Config.paper()
    # min_labels=1: run exactly cnn_iters iterations on a real image (C labels never collapse).
    config = dataclasses.replace(base, max_iter=_ITERS.value, min_labels=1)
    image = _load_image()
    h, w, _ = image.shape
    flops = iteration_flops(h, w, config)
    peak = _peak_gflops()
    rows = []
    jax_times = _time_jax(image, config)
    rows.append(_row("jaxseg.cnn.segment", "", jax_times, flops, peak, h=h, w=w))
    if _TORCH.value:
        torch_times = _time_torch(image, config)
        rows.append(_row("torch", "", torch_times, flops, peak, h=h, w=w))
        rows[0]["peer"] = "torch"
        rows[0]["ratio"] = float(np.median(torch_times) / np.median(jax_times))
    small = _load_image(_BATCH_SCALE.value)
    bh, bw, _ = small.shape
    for b in map(int, _BATCH_SIZES.value):
        times = _time_jax_batch(np.stack([small] * b), config)
        row = _row(f"segment_batch b={b}", "", times, b * iteration_flops(bh, bw, config), peak)
        row.update(h=bh, w=bw, batch=b, image_iters_per_s=b / row["median_s"])
        rows.append(row)

    print(f"preset {_PRESET.value}, {config.max_iter} iterations x {_REPEATS.value} repeats, "
          f"backend {jax.default_backend()}, torch threads {_THREADS.value}, "
          f"peak {peak and round(peak)} GFLOP/s, {flops / 1e9:.1f} GFLOP/iteration at {h}x{w}")
    print(f"{'method':<24}{'size':>10}{'s/iter':>10}{'ratio':>8}{'GFLOP/s':>10}{'peak%':>7}"
          f"{'img-it/s':>10}")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
        frac = f"{100 * r['fraction_of_peak']:.0f}" if "fraction_of_peak" in r else ""
        ips = f"{r['image_iters_per_s']:.2f}" if "image_iters_per_s" in r else ""
        print(f"{r['method']:<24}{r['h']:>5}x{r['w']:<4}{r['median_s']:>10.3f}{ratio:>8}"
              f"{r.get('gflops_per_s', 0):>10.1f}{frac:>7}{ips:>10}")
    return rows

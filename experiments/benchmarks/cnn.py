"""Suite `cnn`: per-iteration time of jaxseg.cnn against an equivalent PyTorch implementation.

  python experiments/bench.py --suites=cnn --cnn_threads=2

Rows: per-iteration seconds (median over repeats) on a full BSDS image for jaxseg.cnn and the
PyTorch peer (same layers, Xavier init, loss, optimiser and schedule, float32, training-mode
BatchNorm, same thread count), achieved FLOP/s against the machine's peak, and batched
throughput (image-iterations per second) of `segment_batch` for several batch sizes.
Optional: per-image vs dataset mode (--cnn_compare_images), and how far float rounding carries
the labels of an image fitted in a padded batch from its labels fitted alone
(--cnn_agreement_iters), and seconds per image of `cnn_refined` against the `paper` preset's
1000 iterations on the same image (--cnn_refined_vs_paper_iters).
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

from benchmarks import common
from jaxseg import cnn, data, metrics, pipeline

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
_COMPARE = flags.DEFINE_integer(
    "cnn_compare_images",
    0,
    "Score this many BSDS500 val images in per-image and dataset mode (0: skip).",
)
_COMPARE_TRAIN = flags.DEFINE_integer(
    "cnn_compare_train", 8, "BSDS500 train images the dataset-mode network is trained on."
)
_COMPARE_SCALE = flags.DEFINE_float(
    "cnn_compare_scale", 1.0, "Image side scale for the comparison (labels upsampled to score)."
)
_COMPARE_MAX_ITER = flags.DEFINE_integer(
    "cnn_compare_max_iter", 1000, "max_iter of the per-image mode in the comparison."
)
_COMPARE_UPDATES = flags.DEFINE_integer(
    "cnn_compare_updates", 1000, "Dataset mode: updates per training batch (demo_ref maxUpdate)."
)
_COMPARE_BATCH = flags.DEFINE_integer("cnn_compare_batch", 4, "Dataset mode: training batch size.")
_COMPARE_MU = flags.DEFINE_float(
    "cnn_compare_dataset_mu", 5.0, "Dataset mode: mu (demo_ref's stepsize_con default is 5)."
)
_AGREEMENT = flags.DEFINE_list(
    "cnn_agreement_iters",
    [],
    "Iteration counts at which to compare the labels of the sample images fitted alone, padded "
    "in one batch, and padded alone (e.g. 1,2,5,10,20; empty: skip).",
)
_AGREEMENT_SCALE = flags.DEFINE_float(
    "cnn_agreement_scale", 0.5, "Image side scale of the sample images in the agreement rows."
)
_REFINED_VS_PAPER = flags.DEFINE_integer(
    "cnn_refined_vs_paper_iters",
    0,
    "Time cnn_refined per image against the paper preset run for this many iterations on the "
    "same image (1000: its full run; fewer: extrapolated per iteration to 1000; 0: skip).",
)
_PEAK = flags.DEFINE_float(
    "cnn_peak_gflops",
    0.0,
    "Machine peak float32 GFLOP/s; 0: on CPU, cores x clock x (64 with AVX-512, else 32).",
)


def _load_image(scale: float = 1.0) -> np.ndarray:
    path = common.data_dir() / "BSDS500" / "images" / _IMAGE.value
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (set --data_dir or JAXSEG_DATA_DIR)")
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


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 image [h, w, 3] -> float32 in [0, 1] of size (width, height)."""
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR), np.float32) / 255.0


def _score(labels: jax.Array, ground_truth) -> float:
    """Paper score of labels upsampled (nearest) to the ground truth's size."""
    h, w = ground_truth[0].shape
    full = Image.fromarray(np.asarray(labels, np.int32)).resize((w, h), Image.NEAREST)
    return metrics.image_metrics(np.asarray(full), ground_truth)["cluster_iou_mean"]


def _compare_modes(config: cnn.Config) -> list[dict]:
    """Paper score and seconds per image: per-image fits vs one dataset-mode network."""
    root = common.data_dir()
    val = data.load_dataset("bsds500", split="val", data_dir=root)
    train = data.load_dataset("bsds500", split="train", data_dir=root)
    scale = _COMPARE_SCALE.value
    side = round(224 * scale)  # demo_ref resizes training images to 224x224
    train_images = np.stack(
        [_resize(train[i].image, (side, side)) for i in range(_COMPARE_TRAIN.value)]
    )
    dataset_config = dataclasses.replace(config, mu=_COMPARE_MU.value)
    start = time.perf_counter()
    params = jax.block_until_ready(
        cnn.train_dataset(
            train_images,
            jax.random.key(0),
            dataset_config,
            batch_size=min(_COMPARE_BATCH.value, len(train_images)),
            updates_per_batch=_COMPARE_UPDATES.value,
        )
    )
    train_s = time.perf_counter() - start
    image_config = dataclasses.replace(config, max_iter=_COMPARE_MAX_ITER.value)
    scores = {"per_image": [], "dataset": []}
    seconds = {"per_image": [], "dataset": []}
    n_iter = []
    for i in range(_COMPARE.value):
        sample = val[i]
        h, w, _ = sample.image.shape
        image = _resize(sample.image, (round(w * scale), round(h * scale)))
        for mode in ("per_image", "dataset"):
            start = time.perf_counter()
            if mode == "per_image":
                result = jax.block_until_ready(cnn.segment(image, jax.random.key(i), image_config))
                labels = result.labels
                n_iter.append(int(result.n_iter))
            else:
                labels = jax.block_until_ready(cnn.apply(params, image))
            seconds[mode].append(time.perf_counter() - start)  # includes compiling new shapes
            scores[mode].append(_score(labels, sample.ground_truth))
    rows = [
        {
            "method": f"{mode} mode",
            "peer": "dataset mode" if mode == "per_image" else "per_image mode",
            "images": _COMPARE.value,
            "scale": scale,
            "cluster_iou_mean": float(np.mean(scores[mode])),
            "median_s_per_image": float(np.median(seconds[mode])),
        }
        for mode in ("per_image", "dataset")
    ]
    rows[0]["median_n_iter"] = float(np.median(n_iter))
    rows[1]["train_s"] = train_s
    rows[1]["train_images"] = len(train_images)
    print(
        f"\nper-image vs dataset mode on {_COMPARE.value} val images (scale {scale}); dataset "
        f"network: {len(train_images)} train images at {side}x{side}, mu {_COMPARE_MU.value}, "
        f"{_COMPARE_UPDATES.value} updates per batch, trained in {train_s:.0f} s"
    )
    print(f"{'mode':<16}{'paper score':>12}{'s/image':>10}")
    for r in rows:
        print(f"{r['method']:<16}{r['cluster_iou_mean']:>12.3f}{r['median_s_per_image']:>10.3f}")
    return rows


def _agreement(config: cnn.Config) -> list[dict]:
    """Label agreement and ARI with the fit alone, per iteration, on the sample images.

    The same per-image keys and parameters in three modes: alone (no mask), padded in one
    batch of all samples (vmap, masked), padded alone (a batch of one, same canvas). Iteration
    k's labels are the argmax of the k-th forward pass, i.e. ``segment`` with ``max_iter=k``.
    """
    import jax.numpy as jnp
    import optax
    from sklearn.metrics import adjusted_rand_score

    scale = _AGREEMENT_SCALE.value
    samples = data.load_dataset("samples")
    images = []
    for i in range(len(samples)):
        h, w, _ = samples[i].image.shape
        images.append(_resize(samples[i].image, (round(w * scale), round(h * scale))))
    checkpoints = sorted(map(int, _AGREEMENT.value))
    optimizer = config.make_optimizer()

    def step(params, state, x, m):
        (loss, (labels, _)), grads = jax.value_and_grad(cnn.loss_and_labels, has_aux=True)(
            params, x, m, config.mu
        )
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, labels[0], loss

    alone_step = jax.jit(lambda p, s, x: step(p, s, x, None))
    one_step = jax.jit(step)
    batch_step = jax.jit(jax.vmap(step))
    keys = jax.random.split(jax.random.key(0), len(images))
    padded, mask = cnn.pad_batch(images)
    params = [cnn.init(k, config) for k in keys]
    alone = [(p, optimizer.init(p)) for p in params]
    one = list(alone)
    batch = jax.tree.map(lambda *x: jnp.stack(x), *params)
    batch = (batch, jax.vmap(optimizer.init)(batch))
    rows = []
    for t in range(1, checkpoints[-1] + 1):
        *batch, batch_labels, batch_loss = batch_step(*batch, padded[:, None], mask[:, None])
        scores = {"batch": [], "padded_alone": []}
        loss_rel = []
        for i, image in enumerate(images):
            h, w, _ = image.shape
            *alone[i], labels, loss = alone_step(*alone[i], image[None])
            *one[i], one_labels, _ = one_step(*one[i], padded[i : i + 1], mask[i : i + 1])
            ref = np.asarray(labels).ravel()
            loss_rel.append(abs(float(batch_loss[i]) / float(loss) - 1))
            for mode, other in (("batch", batch_labels[i]), ("padded_alone", one_labels)):
                other = np.asarray(other[:h, :w]).ravel()
                scores[mode].append((np.mean(other == ref), adjusted_rand_score(ref, other)))
        if t in checkpoints:
            for mode, values in scores.items():
                agree, ari = np.asarray(values).T
                rows.append(
                    {
                        "method": f"agreement {mode} vs alone",
                        "peer": "alone",
                        "iteration": t,
                        "scale": scale,
                        "label_agreement_mean": float(agree.mean()),
                        "label_agreement_min": float(agree.min()),
                        "ari_mean": float(ari.mean()),
                        "ari_min": float(ari.min()),
                        "loss_rel_diff_max": float(max(loss_rel)),
                    }
                )
    print(f"\nlabel agreement with the fit alone, {len(images)} samples at scale {scale}")
    print(f"{'mode':<34}{'iter':>5}{'agree':>8}{'min':>7}{'ARI':>7}{'min':>7}{'loss rel':>10}")
    for r in rows:
        print(
            f"{r['method']:<34}{r['iteration']:>5}{r['label_agreement_mean']:>8.3f}"
            f"{r['label_agreement_min']:>7.3f}{r['ari_mean']:>7.3f}{r['ari_min']:>7.3f}"
            f"{r['loss_rel_diff_max']:>10.1e}"
        )
    return rows


def _refined_vs_paper() -> list[dict]:
    """Seconds per image of `cnn_refined` (the whole method: SLIC, fit, output, the split along
    the image's hierarchy) against the `paper` preset's 1000 iterations on the same full-size
    image, in one run."""
    image = _load_image()
    h, w, _ = image.shape
    key = jax.random.key(0)
    uint8 = np.round(image * 255).astype(np.uint8)
    jax.block_until_ready(pipeline.segment(uint8, "cnn_refined", key=key))  # compile
    refined = []
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        jax.block_until_ready(pipeline.segment(uint8, "cnn_refined", key=key))
        refined.append(time.perf_counter() - start)
    iters = _REFINED_VS_PAPER.value
    # min_labels=1: exactly `iters` iterations (the paper's 1000 rarely stop earlier).
    paper = dataclasses.replace(cnn.Config.paper(), max_iter=iters, min_labels=1)
    jax.block_until_ready(cnn.segment(image, key, paper))  # compile
    start = time.perf_counter()
    result = jax.block_until_ready(cnn.segment(image, key, paper))
    paper_s = (time.perf_counter() - start) * 1000 / int(result.n_iter)
    refined_s = float(np.median(refined))
    how = "measured" if iters == 1000 else f"{iters} timed, x{1000 / iters:g}"
    print(
        f"{h}x{w}: cnn_refined {refined_s:.1f} s/image (median of {len(refined)}); paper preset "
        f"1000 iterations {paper_s:.0f} s ({how}); ratio {paper_s / refined_s:.0f}"
    )
    return [
        {
            "method": "cnn_refined",
            "peer": "paper x1000",
            "median_s": refined_s,
            "times_s": refined,
            "h": h,
            "w": w,
            "ratio": paper_s / refined_s,
        },
        {
            "method": "paper x1000",
            "peer": "",
            "median_s": paper_s,
            "timed_iters": iters,
            "h": h,
            "w": w,
        },
    ]


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

    print(
        f"preset {_PRESET.value}, {config.max_iter} iterations x {_REPEATS.value} repeats, "
        f"backend {jax.default_backend()}, torch threads {_THREADS.value}, "
        f"peak {peak and round(peak)} GFLOP/s, {flops / 1e9:.1f} GFLOP/iteration at {h}x{w}"
    )
    print(
        f"{'method':<24}{'h x w':>10}{'s/iter':>10}{'ratio':>8}{'GFLOP/s':>10}{'peak%':>7}"
        f"{'img-it/s':>10}"
    )
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
        frac = f"{100 * r['fraction_of_peak']:.0f}" if "fraction_of_peak" in r else ""
        ips = f"{r['image_iters_per_s']:.2f}" if "image_iters_per_s" in r else ""
        print(
            f"{r['method']:<24}{r['h']:>5}x{r['w']:<4}{r['median_s']:>10.3f}{ratio:>8}"
            f"{r.get('gflops_per_s', 0):>10.1f}{frac:>7}{ips:>10}"
        )
    if _COMPARE.value:
        rows += _compare_modes(base)
    if _AGREEMENT.value:
        rows += _agreement(base)
    if _REFINED_VS_PAPER.value:
        rows += _refined_vs_paper()
    return rows

"""The run report: the paper's Tables 7.1-7.4 beside ours, BSDS scores, its research questions.

`write(run_dir, summary)` turns a run's `jaxseg.summary.Summary` into `report.md` (one function
per section) and `summary.png`: the bar chart of the scores (the paper's "graph below", drawn with
Pillow), or for a run without ground truth a contact sheet of segment borders; and, when
boundaries were scored, `pr.png`: the boundary precision-recall curve of every method.
Rebuild them from a run directory's summary.json:

  python -m jaxseg.report RUN_DIR      (or the console script: jaxseg-report RUN_DIR)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxseg import pipeline, visualize
from jaxseg.rundir import RunDir
from jaxseg.summary import ClusterTable, Summary, UnitSummary

__all__ = [
    "KIM2020_BLANK",
    "KIM2020_MIOU",
    "PAPER_TABLE_7_1",
    "PAPER_TABLE_7_2",
    "PAPER_TABLE_7_3",
    "PAPER_TABLE_7_4",
    "PUBLISHED_BOUNDARY",
    "PUBLISHED_REGIONS",
    "bar_chart",
    "contact_sheet",
    "main",
    "pr_chart",
    "render",
    "write",
]

# The paper's published numbers (Shukla, Mehta, Boinpally), to print beside ours.
PAPER_TABLE_7_1 = {  # image 3096, CNN: cluster -> (best segment, IoU)
    "clusters": [0, 1, 2, 3, 4, 5, 6, 7, 8],
    "best_segment": [0, 0, 0, 0, 0, 0, 0, 1, 1],
    "iou": [0, 0.36, 0.26, 0.003, 0.35, 0.003, 0.003, 0.01, 0.9],
}
PAPER_TABLE_7_2 = {  # image 3096, GMM
    "clusters": [0, 1, 2],
    "best_segment": [1, 0, 0],
    "iou": [0.59, 0.11, 0.88],
}
PAPER_TABLE_7_3 = {  # image -> method -> score
    "25098": {"gmm": 0.63, "cnn": 0.74, "kmeans": 0.81, "cnn_kmeans": 0.47, "gmm_kmeans": 0.60},
    "3096": {"gmm": 0.78, "cnn": 0.81, "kmeans": 0.61, "cnn_kmeans": 0.37, "gmm_kmeans": 0.53},
    "35058": {"gmm": 0.36, "cnn": 0.5, "kmeans": 0.23, "cnn_kmeans": 0.37, "gmm_kmeans": 0.45},
    "22090": {"gmm": 0.72, "cnn": 0.74, "kmeans": 0.33, "cnn_kmeans": 0.63, "gmm_kmeans": 0.46},
    "23025": {"gmm": 0.69, "cnn": 0.81, "kmeans": 0.37, "cnn_kmeans": 0.64, "gmm_kmeans": 0.63},
}
PAPER_TABLE_7_4 = {  # BSDS300 mean
    "cnn": 0.67,
    "gmm": 0.62,
    "kmeans": 0.39,
    "cnn_kmeans": 0.48,
    "gmm_kmeans": 0.51,
}
# Kim, Kanezaki & Tanaka (2020), BSDS500 test: their CNN's mIoU, and a one-segment blank image.
KIM2020_MIOU = {"all": 0.3050, "fine": 0.2592, "coarse": 0.3739}
KIM2020_BLANK = {"all": 0.0458, "fine": 0.0249, "coarse": 0.1001}

# Published BSDS500 *test split* results, for orientation only (we tune and report on train /
# val): covering, PRI, VOI as (ODS, OIS) (Arbeláez et al. 2011, Table 2; Isola et al. 2014).
PUBLISHED_REGIONS = {
    "Felzenszwalb-Huttenlocher (6 scales)": ((0.528, 0.571), (0.801, 0.823), (1.941, 1.801)),
    "gPb-owt-ucm (learned cue weights)": ((0.588, 0.647), (0.827, 0.856), (1.690, 1.475)),
    "PMI (Isola et al. 2014)": ((0.61, 0.66), (0.83, 0.86), (1.58, 1.42)),
}
# Boundary F on the BSDS500 test split: name -> (ODS F, OIS F, AP) (None: not a curve).
PUBLISHED_BOUNDARY = {
    "human": (0.80, None, None),
    "gPb-owt-ucm": (0.73, 0.76, 0.73),
}

_TABLE_IMAGE = "3096"  # the image of Tables 7.1 / 7.2
_PAPER_ORDER = ("gmm", "cnn", "kmeans", "cnn_kmeans", "gmm_kmeans")  # Table 7.3's columns
# (name, summary path, higher is better) of the scores compared in the research questions.
_SCORES = (
    ("paper score", ("mean", "cluster_iou_mean"), True),
    ("Kim mIoU (all)", ("kim_miou", "all"), True),
    ("covering", ("mean", "covering"), True),
    ("PRI", ("mean", "pri"), True),
    ("VOI", ("mean", "voi"), False),
)


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _primary(summary: Summary) -> dict[str, UnitSummary]:
    """method -> its unit at the first K candidate (the unit the tables show)."""
    out: dict[str, UnitSummary] = {}
    for unit in summary.units:
        out.setdefault(unit.method, unit)
    return out


def _score(unit: UnitSummary, path: tuple[str, str]):
    return getattr(unit, path[0]).get(path[1])


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _method_settings(method: str, config: dict) -> str:
    """What `method` ran with, from the run's flat settings (only the settings it uses)."""
    parts = []
    base = method.removesuffix("_ucm").removesuffix("_kmeans")
    if base in ("kmeans", "gmm", "kmeans_xy", "gmm_xy") or method.endswith("_kmeans"):
        k = ", ".join(map(str, config["k"]))
        parts.append(f"K {k} (elbow over {config['k_min']}..{config['k_max']})")
        xy = pipeline.XY_WEIGHT if base.endswith("_xy") else config["xy_weight"]
        parts.append(f"space {config['space']}, xy_weight {xy}")
    if base.startswith("gmm"):
        parts.append(f"covariance_type {config['covariance_type']}")
    if base in ("cnn", "cnn_ce"):
        cnn = {k[4:]: v for k, v in config.items() if k.startswith("cnn_") and k != "cnn_mode"}
        if base == "cnn_ce":
            cnn["mu"] = 0.0
        cnn_text = ", ".join(f"{k} {v}" for k, v in cnn.items())
        parts.append(f"CNN ({config['cnn_mode']}): {cnn_text}")
    if base == "cnn_refined":
        refined = ", ".join(
            f"{k[8:]} {v}"
            for k, v in config.items()
            if k.startswith("refined_") and k != "refined_scale"
        )
        size = config["output_superpixel_size"]
        # Settings absent from runs before they existed read as what those runs did.
        full = config.get("full_size_output", False)
        scale = config.get("output_scale", 1.0)
        output = "the fit's labels"
        if full:
            output = "the CNN's argmax on the " + (
                "full-size image" if scale == 1 else f"image scaled by {scale}"
            )
            if config.get("n_fits", 1) > 1:
                output += f" (the softmaxes of {config['n_fits']} fits, channels matched)"
        if size:
            output += f", refined on full-size superpixels of {size} pixels"
        elif not full:
            output += ", refined on its superpixels"
        if method == "cnn_refined" and config.get("split_threshold", 0):
            oversegmentation = config.get("split_oversegmentation", "watershed")
            output += (
                f", split along the image's hierarchy ({oversegmentation}, size_scale "
                f"{config['split_size_scale']}) cut at {config['split_threshold']}"
            )
        parts.append(
            f"SLIC superpixels of {config['superpixel_size']} pixels, compactness "
            f"{config['compactness']}, at scale {config['refined_scale']}; output: {output}; "
            f"CNN: {refined}"
        )
    if method == "ucm" or method.endswith("_ucm"):
        parts.append(f"hierarchy scored at {config['nthresh']} thresholds")
    return "; ".join(parts)


def _header(summary: Summary) -> list[str]:
    config, dataset, device = summary.config, summary.dataset, summary.device
    split = f", split {dataset.split}" if dataset.split else ""
    lines = [
        f"# jaxseg run: {dataset.name}{split}, {dataset.n_images} images",
        "",
        f"Seed {config['seed']}; {device['backend']} ({len(device['devices'])} devices, "
        f"{device['process_count']} processes)"
        + (f"; guided by the scribbles in {config['scribbles']}" if config.get("scribbles") else "")
        + ". Each method ran with:",
        "",
        *(f"- `{m}`: {_method_settings(m, config)}" for m in config["method"]),
        "",
    ]
    if summary.metrics_skipped:
        lines += [f"**Metrics skipped:** {summary.metrics_skipped}.", ""]
    return lines


def _table_7_4(summary: Summary) -> list[str]:
    rows = [
        [
            f"`{unit.name}`",
            _fmt(unit.mean.get("cluster_iou_mean")),
            _fmt(unit.mean.get("cluster_iou_weighted")),
            _fmt(PAPER_TABLE_7_4.get(method), 2) if method in PAPER_TABLE_7_4 else "",
            f"{unit.n_scored}/{unit.n_images}",
        ]
        for method, unit in _primary(summary).items()
    ]
    header = ["method", "ours (mean over clusters)", "ours (size-weighted)", "paper", "scored/done"]
    return [
        "## Table 7.4: dataset mean of the paper's score",
        "",
        *_table(header, rows),
        "",
        "![summary](summary.png)",
        "",
    ]


def _table_7_3(summary: Summary) -> list[str]:
    if not summary.table_7_3:
        return []
    units = _primary(summary)
    methods = [m for m in _PAPER_ORDER if m in units] + [m for m in units if m not in _PAPER_ORDER]
    rows = []
    for image_id, scores in summary.table_7_3.items():
        row = [image_id]
        for method in methods:
            ours = scores.get(units[method].name)
            paper = PAPER_TABLE_7_3.get(image_id, {}).get(method)
            row.append(_fmt(ours, 2) + (f" ({paper})" if paper is not None else ""))
        rows.append(row)
    return [
        "## Table 7.3: the five images, ours (paper)",
        "",
        *_table(["image", *methods], rows),
        "",
    ]


def _cluster_table(ours: ClusterTable | None, paper: dict, method: str) -> list[str]:
    lines = []
    if ours is None:
        lines.append(f"Ours: image 3096 was not segmented with `{method}` in this run.")
    else:
        lines.append(
            f"Ours (`{ours.unit}`, annotation {ours.annotation} with {ours.n_gt_segments} "
            "segments, the coarsest; ground-truth segments numbered from 0, as the paper's):"
        )
        lines.append("")
        lines += _table(
            ["cluster", *map(str, ours.clusters)],
            [
                ["best segment", *(str(b - 1) for b in ours.best_segment)],
                ["IoU", *(_fmt(v, 2) for v in ours.iou)],
            ],
        )
    lines += ["", "Paper:", ""]
    lines += _table(
        ["cluster", *map(str, paper["clusters"])],
        [["best segment", *map(str, paper["best_segment"])], ["IoU", *map(str, paper["iou"])]],
    )
    return lines


def _tables_7_1_and_7_2(summary: Summary) -> list[str]:
    if _TABLE_IMAGE not in summary.table_7_3:
        return []
    tables = summary.cluster_tables
    return [
        "## Table 7.1: image 3096, CNN clusters and their best ground-truth segment",
        "",
        *_cluster_table(tables.get("cnn"), PAPER_TABLE_7_1, "cnn"),
        "",
        "## Table 7.2: image 3096, GMM clusters and their best ground-truth segment",
        "",
        *_cluster_table(tables.get("gmm"), PAPER_TABLE_7_2, "gmm"),
        "",
    ]


def _bsds_scores(summary: Summary) -> list[str]:
    rows = []
    for unit in summary.units:
        mean, kim = unit.mean, unit.kim_miou
        rows.append(
            [
                f"`{unit.name}`",
                _fmt(mean.get("covering")),
                _fmt(mean.get("pri")),
                _fmt(mean.get("voi")),
                _fmt(kim.get("all")),
                _fmt(kim.get("fine")),
                _fmt(kim.get("coarse")),
                _fmt(unit.n_clusters_mean, 1),
                _fmt(mean.get("n_connected_segments"), 0),
            ]
        )
    kim = (f"{v:.4f}" for v in KIM2020_MIOU.values())
    blank = (f"{v:.4f}" for v in KIM2020_BLANK.values())
    rows.append(["Kim et al. 2020 (BSDS500 test)", "", "", "", *kim, "", ""])
    rows.append(["blank image (BSDS500 test)", "", "", "", *blank, "1", "1"])
    header = ["method", "covering", "PRI", "VOI", "Kim mIoU all", "fine", "coarse", "clusters"]
    return [
        "## BSDS scores per method",
        "",
        *_table([*header, "4-conn. segments"], rows),
        "",
        "Covering, PRI and VOI are per-image means (the official BSDS region benchmark at one "
        "segmentation per image); Kim mIoU pools every ground-truth segment of the dataset.",
        "",
    ]


def _region_benchmark(summary: Summary) -> list[str]:
    if not summary.region_benchmark:
        return []
    rows = [
        [
            f"`{method}`",
            ", ".join(map(str, b.k)),
            f"{b.ods_covering:.3f} (K={b.ods_covering_k})",
            f"{b.ois_covering:.3f}",
            f"{b.best_covering:.3f}",
            f"{b.ods_pri:.3f} (K={b.ods_pri_k})",
            f"{b.ois_pri:.3f}",
            f"{b.ods_voi:.3f} (K={b.ods_voi_k})",
            f"{b.ois_voi:.3f}",
        ]
        for method, b in summary.region_benchmark.items()
    ]
    header = ["method", "K", "covering ODS", "OIS", "best", "PRI ODS", "OIS", "VOI ODS", "OIS"]
    return ["## ODS / OIS over the K candidates", "", *_table(header, rows), ""]


def _hierarchies(summary: Summary) -> list[str]:
    if not summary.hierarchies:
        return []
    rows = [
        [
            f"`{name}`",
            str(h.n_images),
            f"{h.ods_covering:.3f} (t={h.ods_covering_threshold:.2f})",
            f"{h.ois_covering:.3f}",
            f"{h.best_covering:.3f}",
            f"{h.ods_pri:.3f}",
            f"{h.ois_pri:.3f}",
            f"{h.ods_voi:.3f}",
            f"{h.ois_voi:.3f}",
        ]
        for name, h in summary.hierarchies.items()
    ]
    rows += [
        [
            f"{name}, published (BSDS500 test)",
            "200",
            f"{c[0]:.3f}",
            f"{c[1]:.3f}",
            "",
            *(f"{v:.3f}" for pair in (pri, voi) for v in pair),
        ]
        for name, (c, pri, voi) in PUBLISHED_REGIONS.items()
    ]
    header = ["method", "images", "covering ODS", "OIS", "best", "PRI ODS", "OIS", "VOI ODS"]
    n = len(next(iter(summary.hierarchies.values())).thresholds)
    return [
        "## Hierarchies: ODS / OIS over the ucm2 thresholds",
        "",
        *_table([*header, "OIS"], rows),
        "",
        f"Each hierarchy (`ucm2/<method>/<id>.mat`) is scored at {n} thresholds, as "
        "`python -m jaxseg.evaluate` scores the same files; its labels, pictures and the "
        "per-image scores of the other tables are its cut at the covering ODS threshold t. The "
        "published rows are on the BSDS500 test split, for orientation only.",
        "",
    ]


def _boundaries(summary: Summary) -> list[str]:
    if not summary.boundary:
        return []
    rows = [
        [
            f"`{name}`",
            str(b.n_images),
            f"{b.ods_f:.3f}",
            f"{b.ods_recall:.3f}",
            f"{b.ods_precision:.3f}",
            f"{b.ois_f:.3f}",
            f"{b.ap:.3f}" if len(b.thresholds) > 1 else "–",
        ]
        for name, b in summary.boundary.items()
    ]
    rows += [
        [f"{name}, published (BSDS500 test)", "200", f"{f:.2f}", "", "", _fmt(ois, 2), _fmt(ap, 2)]
        for name, (f, ois, ap) in PUBLISHED_BOUNDARY.items()
    ]
    return [
        "## Boundary F",
        "",
        *_table(["method", "images", "ODS F", "R", "P", "OIS F", "AP"], rows),
        "",
        "The official boundary benchmark (matching within 0.75% of the image diagonal): a flat "
        "segmentation is one point (ODS = OIS, no AP), a hierarchy a curve over its thresholds.",
        "",
        "![precision-recall](pr.png)",
        "",
    ]


def _compare(summary: Summary, a: str, b: str) -> str | None:
    """One line comparing methods a and b on every score, with a verdict for a; None unless
    both were run and scored."""
    units = _primary(summary)
    ua, ub = units.get(a), units.get(b)
    if ua is None or ub is None or not ua.mean or not ub.mean:
        return None  # not both run (and scored): the report leaves the comparison out
    parts, wins = [], 0
    for name, path, higher in _SCORES:
        va, vb = _score(ua, path), _score(ub, path)
        better = va > vb if higher else va < vb
        wins += bool(better)
        parts.append(f"{name} {va:.3f} vs {vb:.3f}")
    verdict = {len(_SCORES): "better on every score", 0: "worse on every score"}.get(
        wins, f"better on {wins} of {len(_SCORES)} scores"
    )
    segments = (
        f"; 4-connected segments per image {ua.mean['n_connected_segments']:.0f} vs "
        f"{ub.mean['n_connected_segments']:.0f}"
    )
    return f"- `{a}` vs `{b}`: {', '.join(parts)}{segments} — `{a}` is {verdict}."


def _kim_reference(summary: Summary) -> str | None:
    cnn = _primary(summary).get("cnn")
    if cnn is None or not cnn.kim_miou:
        return None
    kim = cnn.kim_miou
    return (
        f"- Against the Kim et al. references (BSDS500 test): our CNN's mIoU "
        f"all/fine/coarse {_fmt(kim['all'])} / {_fmt(kim['fine'])} / {_fmt(kim['coarse'])}; "
        f"theirs {KIM2020_MIOU['all']} / {KIM2020_MIOU['fine']} / {KIM2020_MIOU['coarse']}; "
        f"a blank one-segment image {KIM2020_BLANK['all']} / {KIM2020_BLANK['fine']} / "
        f"{KIM2020_BLANK['coarse']}."
    )


def _research_questions(summary: Summary) -> list[str]:
    lines = ["## The paper's research questions, answered with this run", ""]
    lines.append(
        "Scores: the paper's score (mean over predicted clusters of the best IoU with a "
        "ground-truth segment), the Kim et al. mIoU (pooled), covering and PRI (higher is "
        "better), VOI (lower is better)."
    )
    questions = [
        (
            "1. Can an unsupervised CNN learn enough structure to give good segments?",
            [(c, o, "") for c in ("cnn", "cnn_refined") for o in ("kmeans", "gmm")],
        ),
        (
            "2. Is spatial continuity important?",
            [
                ("cnn", "cnn_ce", " (continuity loss μ > 0 vs cross-entropy only)"),
                ("kmeans_xy", "kmeans", " (with vs without (row, col) features)"),
                ("gmm_xy", "gmm", " (with vs without (row, col) features)"),
            ],
        ),
        (
            "3. Does a second stage after the CNN or the GMM improve their results?",
            [(f"{m}_kmeans", m, " (K-means of the mean colours)") for m in ("cnn", "gmm")]
            + [
                (f"{m}_ucm", m, " (merged by boundaries, at ODS)")
                for m in ("kmeans", "gmm", "cnn", "cnn_refined")
            ],
        ),
    ]
    answered = False
    for question, pairs in questions:
        found = [line + note for a, b, note in pairs if (line := _compare(summary, a, b))]
        if question.startswith("1.") and (kim := _kim_reference(summary)):
            found.append(kim)
        if found:
            lines += ["", f"**{question}**", "", *found]
            answered = True
    if not answered:
        return []
    lines += [
        "",
        "The paper found the CNN best (0.67), then GMM (0.62), K-means worst (0.39), and both "
        "ensembles below their first stage (0.48, 0.51). The paper's score rewards few, large "
        "clusters (each cluster's best IoU, averaged over clusters, however many segments "
        "it splits into), so a method's number of clusters moves it as much as its boundaries; "
        "compare the Kim mIoU and covering columns, which score every ground-truth segment.",
        "",
    ]
    return lines


def _timings(summary: Summary) -> list[str]:
    rows = [
        [f"`{u.name}`", _fmt(u.seconds_median), _fmt(u.seconds_median_compiled_excluded)]
        for u in summary.units
    ]
    return [
        "## Time per image",
        "",
        *_table(["method", "median s", "median s, batches without compilation"], rows),
        "",
        "Seconds per image: a batch's wall time for the method's stages divided by its images "
        "(timings.csv has every image).",
        "",
    ]


def _failures(summary: Summary) -> list[str]:
    if not summary.failures:
        return ["## Failures", "", "None."]
    return ["## Failures", "", *(f"- {f.image_id} `{f.unit}`: {f.error}" for f in summary.failures)]


_SECTIONS = (
    _header,
    _table_7_4,
    _table_7_3,
    _tables_7_1_and_7_2,
    _bsds_scores,
    _region_benchmark,
    _hierarchies,
    _boundaries,
    _research_questions,
    _timings,
    _failures,
)


def render(summary: Summary) -> str:
    """report.md's text: one function per section."""
    return "\n".join(line for section in _SECTIONS for line in section(summary)) + "\n"


def bar_chart(summary: Summary) -> Image.Image:
    """Bars per method: our paper score and Kim mIoU (all) beside the paper's Table 7.4, titled
    with the dataset and the number of scored images."""
    units = _primary(summary)
    methods = [m for m in units if units[m].mean]
    series = [
        ("ours: paper score", (40, 110, 190), [units[m].mean["cluster_iou_mean"] for m in methods]),
        ("paper (Table 7.4)", (200, 120, 40), [PAPER_TABLE_7_4.get(m) for m in methods]),
        ("ours: Kim mIoU (all)", (90, 160, 90), [units[m].kim_miou.get("all") for m in methods]),
    ]
    scored = max(units[m].n_scored for m in methods)
    split = f" {summary.dataset.split}" if summary.dataset.split else ""
    title = f"Scores per method: {summary.dataset.name}{split}, {scored} images with ground truth"
    width, height, left, bottom, top = max(520, 110 * len(methods) + 90), 380, 70, 60, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    plot_h = height - bottom - top
    axis_y = height - bottom
    draw.text((left, 6), title, fill="black", font=font)
    draw.text((6, top - 16), "score (0-1)", fill="black", font=font)
    for tick in np.linspace(0, 1, 6):
        y = axis_y - tick * plot_h
        draw.line([(left, y), (width - 10, y)], fill=(225, 225, 225))
        draw.text((left - 28, y - 6), f"{tick:.1f}", fill="black", font=font)
    group = (width - left - 10) / max(len(methods), 1)
    bar = group * 0.8 / len(series)
    for i, method in enumerate(methods):
        x0 = left + i * group + group * 0.1
        for j, (_, colour, values) in enumerate(series):
            value = values[i]
            if value is None:
                continue
            x = x0 + j * bar
            draw.rectangle([x, axis_y - value * plot_h, x + bar - 2, axis_y], fill=colour)
            draw.text((x, axis_y - value * plot_h - 12), f"{value:.2f}", fill="black", font=font)
        draw.text((x0, axis_y + 6), method, fill="black", font=font)
    draw.text((left, axis_y + 24), "method", fill="black", font=font)
    draw.line([(left, axis_y), (width - 10, axis_y)], fill="black")
    x = left
    for name, colour, _ in series:
        draw.rectangle([x, 26, x + 12, 38], fill=colour)
        draw.text((x + 16, 26), name, fill="black", font=font)
        x += 24 + int(draw.textlength(name, font=font)) + 16
    return image


_CURVE_COLOURS = (
    (40, 110, 190),
    (200, 120, 40),
    (90, 160, 90),
    (180, 60, 60),
    (130, 90, 170),
    (60, 160, 170),
    (150, 110, 70),
    (200, 90, 160),
)


def pr_chart(summary: Summary) -> Image.Image:
    """Boundary precision (y) against recall (x): a curve per hierarchy, a dot per flat method
    (each unit's ODS point), iso-F lines at 0.1 .. 0.9, and the published BSDS500 test F values
    listed under the legend (no precision / recall was published for them here)."""
    size, margin, top = 420, 50, 40
    width = size + margin + 230
    image = Image.new("RGB", (width, size + margin + top), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()

    def xy(recall, precision):
        return margin + recall * size, top + (1 - precision) * size

    split = f" {summary.dataset.split}" if summary.dataset.split else ""
    draw.text(
        (margin, 6), f"Boundary precision-recall: {summary.dataset.name}{split}", fill="black"
    )
    for f in np.arange(0.1, 1.0, 0.1):  # iso-F: p = f r / (2 r - f)
        r = np.linspace(f / 2 + 1e-3, 1, 60)
        draw.line(
            [xy(a, b) for a, b in zip(r, f * r / (2 * r - f), strict=True) if b <= 1],
            fill=(225, 225, 225),
        )
    draw.rectangle([xy(0, 1), xy(1, 0)], outline="black")
    for tick in np.linspace(0, 1, 6):
        draw.text((xy(tick, 0)[0] - 8, top + size + 4), f"{tick:.1f}", fill="black", font=font)
        draw.text((margin - 28, xy(0, tick)[1] - 6), f"{tick:.1f}", fill="black", font=font)
    draw.text((margin + size // 2 - 20, top + size + 20), "recall", fill="black", font=font)
    draw.text((4, top - 16), "precision", fill="black", font=font)
    legend_y = top
    for i, (name, b) in enumerate(summary.boundary.items()):
        colour = _CURVE_COLOURS[i % len(_CURVE_COLOURS)]
        points = [xy(r, p) for r, p in zip(b.recall, b.precision, strict=True) if r > 0 or p > 0]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        x, y = xy(b.ods_recall, b.ods_precision)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
        label = f"{name}: F {b.ods_f:.3f}"
        draw.rectangle(
            [size + margin + 12, legend_y, size + margin + 24, legend_y + 12], fill=colour
        )
        draw.text((size + margin + 30, legend_y), label, fill="black", font=font)
        legend_y += 18
    for name, (f, *_) in PUBLISHED_BOUNDARY.items():
        legend_y += 4
        draw.text(
            (size + margin + 12, legend_y), f"published F {f:.2f}: {name}", fill="grey", font=font
        )
        legend_y += 14
    draw.text((size + margin + 12, legend_y + 4), "(BSDS500 test; grey iso-F)", fill="grey")
    return image


def contact_sheet(run_dir: RunDir, summary: Summary, *, max_images: int = 12) -> Image.Image:
    """For runs without ground truth: the first images' overlays (borders over the image) of
    the first method, in rows of four, titled with what they show."""
    unit = summary.units[0].name if summary.units else None
    folder = run_dir.root / "overlays" / (unit or "")
    paths = sorted(folder.glob("*.png"))[:max_images] if unit else []
    if not paths:
        return visualize.grid([("no segmentation finished yet", np.full((40, 240, 3), 255))])
    tiles = []
    for path in paths:
        with Image.open(path) as picture:
            tiles.append((path.stem, np.asarray(picture.convert("RGB"))))
    title = (
        f"{unit}: segment borders on {len(paths)} of {summary.dataset.n_images} images "
        "(no ground truth, so no scores)"
    )
    return visualize.grid(tiles, columns=4, title=title)


def write(run_dir: RunDir | str | os.PathLike, summary: Summary) -> None:
    """Writes `report.md` and `summary.png` into the run directory."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    run_dir.write_text(run_dir.root / "report.md", render(summary))
    scored = any(unit.mean for unit in summary.units)
    chart = bar_chart(summary) if scored else contact_sheet(run_dir, summary)
    run_dir.write_image(run_dir.root / "summary.png", chart)
    if summary.boundary:
        run_dir.write_image(run_dir.root / "pr.png", pr_chart(summary))


def main(argv: Sequence[str]) -> int:
    """Rewrites RUN_DIR's report.md and summary.png from its summary.json."""
    prog = "jaxseg.report"
    if len(argv) != 2:
        print(f"{prog}: error: expected one RUN_DIR, got {list(argv[1:])}", file=sys.stderr)
        return 2
    path = Path(argv[1]) / "summary.json"
    try:
        summary = Summary.from_json(path.read_text())
        write(path.parent, summary)
    except (OSError, ValueError) as error:
        message = error.strerror if isinstance(error, OSError) and error.strerror else error
        print(f"{prog}: error: {path}: {message}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """`python -m jaxseg.report RUN_DIR` (absl; --helpfull lists absl's own flags)."""
    from absl import app

    if any(arg in ("--help", "-h", "-?", "--helpshort") for arg in sys.argv[1:]):
        print(__doc__.strip())
        sys.exit(0)
    app.run(main)


if __name__ == "__main__":
    run()

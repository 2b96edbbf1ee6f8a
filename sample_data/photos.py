"""A generated stand-in for the momee dataset: 14 labels of procedurally drawn JPEG photos.

The embedded default (``python -m model_build.train`` with no ``--data``), the local demo and the
tests need labelled product photos, and the real dataset is a Kaggle download. This module draws
them instead. Each label has its own *shape*, *colour family* and *surface texture*; position,
scale, rotation, aspect ratio, colour shade, texture phase, background gradient, background
clutter and sensor noise vary per picture. Colour families and textures are each shared by
several labels, so no single cue (a colour, a texture) identifies a label: a classifier must see
the shape together with the rest. A small CNN learns it to well above 0.9 validation accuracy in a
minute or two on a laptop CPU.

Only Pillow and numpy are imported (no TensorFlow), because the worker's local demo imports it.

The layout written is Kaggle's: ``<out>/train/<label>/*.jpg`` and ``<out>/val/<label>/*.jpg``.
Everything is a pure function of ``seed`` (and the label, split and index), so the same call
always writes byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

LABELS: Final[tuple[str, ...]] = (
    "baby_bed",
    "baby_car_seat",
    "baby_folding_fence",
    "bathtub",
    "booster_seats",
    "bouncer",
    "breast_pump",
    "carrier",
    "earmuffs",
    "ride_ons",
    "rocking_horse",
    "sterilizer",
    "stroller",
    "walkers",
)

# Bump when the drawn pixels change, so a cached sample dataset is regenerated.
GENERATOR_VERSION: Final[str] = "1"
JPEG_QUALITY: Final[int] = 90
_MANIFEST_NAME: Final[str] = "sample_dataset.json"
_SPLIT_IDS: Final[dict[str, int]] = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class LabelStyle:
    """How one label looks: a shape, a hue family (0..1) and a surface texture."""

    shape: str
    hue: float
    texture: str


# Seven hue families and four textures, each shared by several labels; the shape is unique.
_HUES: Final[tuple[float, ...]] = (0.0, 0.08, 0.16, 0.33, 0.5, 0.62, 0.8)
_STYLES: Final[tuple[LabelStyle, ...]] = (
    LabelStyle("square", _HUES[0], "stripes"),
    LabelStyle("circle", _HUES[1], "dots"),
    LabelStyle("triangle", _HUES[2], "checker"),
    LabelStyle("star", _HUES[3], "solid"),
    LabelStyle("cross", _HUES[4], "stripes"),
    LabelStyle("ring", _HUES[5], "dots"),
    LabelStyle("hexagon", _HUES[6], "checker"),
    LabelStyle("diamond", _HUES[0], "solid"),
    LabelStyle("crescent", _HUES[1], "stripes"),
    LabelStyle("ell", _HUES[2], "dots"),
    LabelStyle("tee", _HUES[3], "checker"),
    LabelStyle("arrow", _HUES[4], "solid"),
    LabelStyle("bars", _HUES[5], "stripes"),
    LabelStyle("semicircle", _HUES[6], "dots"),
)


def label_style(label: str, labels: Sequence[str] = LABELS) -> LabelStyle:
    """The style of ``label``: by its position in ``labels`` (cycling after 14 labels)."""
    try:
        index = list(labels).index(label)
    except ValueError as error:
        raise ValueError(f"unknown label {label!r}; expected one of {list(labels)}") from error
    return _STYLES[index % len(_STYLES)]


def draw_sample_image(
    label: str,
    rng: np.random.Generator,
    size: int = 256,
    *,
    labels: Sequence[str] = LABELS,
) -> Image.Image:
    """Draw one RGB ``size``×``size`` picture of ``label``; all randomness comes from ``rng``."""
    style = label_style(label, labels)
    background = _background(rng, size)
    foreground = _textured_foreground(rng, size, style)
    mask = _shape_mask(rng, size, style.shape)
    image = Image.composite(foreground, background, mask)
    # A slight blur and sensor noise, so edges and flat areas look photographed, not vector-drawn.
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.0, 1.2))))
    pixels = np.asarray(image, dtype=np.float32)
    noise = rng.standard_normal(size=pixels.shape, dtype=np.float32)
    pixels += noise * np.float32(rng.uniform(2.0, 8.0))
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def generate_dataset(
    out_dir: Path,
    *,
    train_per_label: int,
    val_per_label: int,
    image_size: int = 256,
    seed: int = 0,
    labels: Sequence[str] = LABELS,
    workers: int | None = None,
) -> Path:
    """Write ``out_dir/train/<label>/*.jpg`` and ``out_dir/val/<label>/*.jpg``; return ``out_dir``.

    Deterministic: the same arguments write byte-identical JPEGs. A manifest
    (``sample_dataset.json``) records the arguments; when it already matches, the files are kept
    and nothing is redrawn, so callers can use ``out_dir`` as a cache.
    """
    out_dir = Path(out_dir)
    if train_per_label < 0 or val_per_label < 0:
        raise ValueError("train_per_label and val_per_label must not be negative")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
    settings = {
        "generator_version": GENERATOR_VERSION,
        "train_per_label": train_per_label,
        "val_per_label": val_per_label,
        "image_size": image_size,
        "seed": seed,
        "labels": list(labels),
        "jpeg_quality": JPEG_QUALITY,
    }
    manifest = out_dir / _MANIFEST_NAME
    if manifest.is_file() and _read_json(manifest) == settings:
        return out_dir
    manifest.unlink(missing_ok=True)
    counts = {"train": train_per_label, "val": val_per_label}
    jobs = []
    for split, count in counts.items():
        for label in labels:
            folder = out_dir / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob("*.jpg"):
                stale.unlink()
            jobs.append((folder, split, label, count, image_size, seed, tuple(labels)))
    total = (train_per_label + val_per_label) * len(labels)
    if workers is None:
        workers = (os.cpu_count() or 1) if total > 300 else 1
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_draw_folder, jobs))
    else:
        for job in jobs:
            _draw_folder(job)
    manifest.write_text(json.dumps(settings, indent=2) + "\n")
    return out_dir


def _draw_folder(job: tuple[Path, str, str, int, int, int, tuple[str, ...]]) -> None:
    folder, split, label, count, image_size, seed, labels = job
    label_index = labels.index(label)
    for index in range(count):
        rng = np.random.default_rng([seed, _SPLIT_IDS[split], label_index, index])
        image = draw_sample_image(label, rng, image_size, labels=labels)
        image.save(folder / f"{label}_{index:05d}.jpg", "JPEG", quality=JPEG_QUALITY)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --- drawing helpers -------------------------------------------------------------------------


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    hue = hue % 1.0
    sector = int(hue * 6.0)
    fraction = hue * 6.0 - sector
    p = value * (1.0 - saturation)
    q = value * (1.0 - fraction * saturation)
    t = value * (1.0 - (1.0 - fraction) * saturation)
    red, green, blue = [
        (value, t, p),
        (q, value, p),
        (p, value, t),
        (p, q, value),
        (t, p, value),
        (value, p, q),
    ][sector % 6]
    return round(red * 255), round(green * 255), round(blue * 255)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A low-saturation two-colour gradient with a few faint clutter blobs."""
    first = np.array(_hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.25), rng.uniform(0.55, 1.0)))
    second = np.array(_hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.25), rng.uniform(0.55, 1.0)))
    angle = rng.uniform(0.0, 2.0 * math.pi)
    grid = np.linspace(-1.0, 1.0, size)
    xs, ys = np.meshgrid(grid, grid)
    weight = np.clip((np.cos(angle) * xs + np.sin(angle) * ys + 1.0) / 2.0, 0.0, 1.0)
    pixels = first * (1.0 - weight[..., None]) + second * weight[..., None]
    image = Image.fromarray(pixels.astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 4))):
        radius = rng.uniform(0.03, 0.12) * size
        x, y = rng.uniform(0, size, size=2)
        shade = tuple(int(c) for c in np.clip(pixels[int(y) % size, int(x) % size] - 40, 0, 255))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=shade)
    return image


def _textured_foreground(rng: np.random.Generator, size: int, style: LabelStyle) -> Image.Image:
    """A full-frame layer in the label's colour family carrying its texture."""
    hue = style.hue + rng.uniform(-0.035, 0.035)
    base = np.array(_hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.55, 0.95)), float)
    dark = base * rng.uniform(0.35, 0.6)
    grid = np.arange(size, dtype=np.float32)
    xs, ys = np.meshgrid(grid, grid)
    period = rng.uniform(0.045, 0.08) * size
    phase = rng.uniform(0.0, period, size=2)
    if style.texture == "stripes":
        angle = rng.uniform(0.0, math.pi)
        coordinate = np.cos(angle) * xs + np.sin(angle) * ys + phase[0]
        pattern = (np.mod(coordinate, period) < period / 2).astype(np.float64)
    elif style.texture == "dots":
        dx = np.mod(xs + phase[0], period) - period / 2
        dy = np.mod(ys + phase[1], period) - period / 2
        pattern = (dx * dx + dy * dy < (period * 0.3) ** 2).astype(np.float64)
    elif style.texture == "checker":
        cells = np.floor((xs + phase[0]) / period) + np.floor((ys + phase[1]) / period)
        pattern = np.mod(cells, 2)
    else:  # solid, with a soft shading so it is not one flat colour
        pattern = np.zeros_like(xs)
        base = base * (0.85 + 0.15 * (xs / size))[..., None]
        return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), mode="RGB")
    pixels = base * (1.0 - pattern[..., None]) + dark * pattern[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def _regular_polygon(sides: int, start: float = 0.0) -> list[tuple[float, float]]:
    return [
        (math.cos(start + 2 * math.pi * k / sides), math.sin(start + 2 * math.pi * k / sides))
        for k in range(sides)
    ]


def _circle(center: tuple[float, float] = (0.0, 0.0), radius: float = 1.0):
    return [
        (center[0] + radius * math.cos(a), center[1] + radius * math.sin(a))
        for a in np.linspace(0.0, 2 * math.pi, 72, endpoint=False)
    ]


# Each shape is a list of (polygon, fill) in unit coordinates (radius about 1); fill 0 cuts a hole.
_UNIT_SHAPES: Final[dict[str, list[tuple[list[tuple[float, float]], int]]]] = {
    "square": [(_regular_polygon(4, math.pi / 4), 255)],
    "circle": [(_circle(), 255)],
    "triangle": [(_regular_polygon(3, -math.pi / 2), 255)],
    "star": [
        (
            [
                (
                    (1.0 if k % 2 == 0 else 0.45) * math.cos(-math.pi / 2 + math.pi * k / 5),
                    (1.0 if k % 2 == 0 else 0.45) * math.sin(-math.pi / 2 + math.pi * k / 5),
                )
                for k in range(10)
            ],
            255,
        )
    ],
    "cross": [
        ([(-0.3, -1), (0.3, -1), (0.3, 1), (-0.3, 1)], 255),
        ([(-1, -0.3), (1, -0.3), (1, 0.3), (-1, 0.3)], 255),
    ],
    "ring": [(_circle(), 255), (_circle(radius=0.55), 0)],
    "hexagon": [(_regular_polygon(6), 255)],
    "diamond": [([(0, -1), (0.55, 0), (0, 1), (-0.55, 0)], 255)],
    "crescent": [(_circle(), 255), (_circle((0.45, -0.2), 0.85), 0)],
    "ell": [([(-0.7, -1), (-0.2, -1), (-0.2, 0.5), (0.8, 0.5), (0.8, 1), (-0.7, 1)], 255)],
    "tee": [
        (
            [
                (-1, -0.9),
                (1, -0.9),
                (1, -0.4),
                (0.25, -0.4),
                (0.25, 1),
                (-0.25, 1),
                (-0.25, -0.4),
                (-1, -0.4),
            ],
            255,
        )
    ],
    "arrow": [
        ([(-1, -0.25), (0.2, -0.25), (0.2, -0.7), (1, 0), (0.2, 0.7), (0.2, 0.25), (-1, 0.25)], 255)
    ],
    "bars": [
        ([(-0.9, -1), (-0.35, -1), (-0.35, 1), (-0.9, 1)], 255),
        ([(0.35, -1), (0.9, -1), (0.9, 1), (0.35, 1)], 255),
    ],
    "semicircle": [([(math.cos(a), 0.4 - math.sin(a)) for a in np.linspace(0, math.pi, 48)], 255)],
}


def _shape_mask(rng: np.random.Generator, size: int, shape: str) -> Image.Image:
    """An 'L' mask of the shape at a random position, scale, aspect ratio and rotation."""
    radius = rng.uniform(0.22, 0.36) * size
    aspect = rng.uniform(0.85, 1.15)
    angle = rng.uniform(-math.pi / 6, math.pi / 6)
    margin = radius * 0.8
    center_x, center_y = rng.uniform(margin, size - margin, size=2)
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    for polygon, fill in _UNIT_SHAPES[shape]:
        points = []
        for x, y in polygon:
            x, y = x * radius * aspect, y * radius / aspect
            points.append((center_x + cos_a * x - sin_a * y, center_y + sin_a * x + cos_a * y))
        draw.polygon(points, fill=fill)
    return mask


def main() -> None:  # pragma: no cover - a convenience for looking at the pictures

    parser = argparse.ArgumentParser(description="Write the generated sample dataset.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--train-per-label", type=int, default=60)
    parser.add_argument("--val-per-label", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    path = generate_dataset(
        arguments.out,
        train_per_label=arguments.train_per_label,
        val_per_label=arguments.val_per_label,
        image_size=arguments.image_size,
        seed=arguments.seed,
    )
    print(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    main()

"""Coverage-guided fuzzing of the image function (issue 9, item 3): crashers become regressions.

``python -m bench.fuzz_image OUT_DIR [--seconds 600] [--engine atheris|mutate]``

Every input given to :func:`contracts.image.decode_image` must end as a model input or as an
:class:`~contracts.image.ImageRejected`. Anything else (another exception, a hang, a memory
blow-up) is a *crasher*. The harness keeps going after one: each distinct crash signature
(exception type + innermost frame) is saved once as ``OUT_DIR/crashers/<signature>-<sha>.bin``
with a ``.txt`` holding the traceback, and a summary is printed at the end. Keep the small ones
under ``tests/data/fuzz_regressions/``; ``tests/unit/test_fuzz_regressions.py`` replays them.

Engines:

* ``atheris`` (default when importable): Google's coverage-guided fuzzer (libFuzzer) with
  Python-level coverage of Pillow's plugins (JPEG/PNG/TIFF/GIF parsing is Python); Pillow's C
  decoders are not instrumented, so they are reached by mutation only. atheris is not in the
  requirements: install it next to the project, e.g.
  ``pip install --only-binary=:all: --target /tmp/atheris atheris==3.0.0`` and run with
  ``PYTHONPATH=/tmp/atheris``.
* ``mutate``: a plain mutation loop (bit flips, byte runs, splices, truncations, chunk
  duplication) over the same seeds, for machines without atheris.

Seeds are small files in every accepted format (JPEG baseline/progressive/EXIF, PNG 8/16-bit,
RGBA, palette, WebP lossy/lossless, GIF animated, HEIC, TIFF float/deflate, BMP), written to
``OUT_DIR/corpus`` on the first run.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from contracts.image import ImageRejected, decode_image


def seed_files() -> dict[str, bytes]:
    """Small files in every format and mode the image function accepts."""
    rng = np.random.default_rng(11)
    picture = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    grey16 = Image.fromarray((rng.integers(0, 65535, (16, 20))).astype(np.uint16))
    floats = Image.fromarray(rng.random((16, 20), dtype=np.float32))

    def encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, image_format, **options)
        return buffer.getvalue()

    frames = [picture, picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    animated = io.BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:], duration=50)
    return {
        "baseline.jpg": encode(picture, "JPEG", quality=70),
        "progressive.jpg": encode(picture, "JPEG", progressive=True, quality=70),
        "exif.jpg": encode(picture, "JPEG", exif=exif),
        "cmyk.jpg": encode(picture.convert("CMYK"), "JPEG"),
        "rgb.png": encode(picture, "PNG"),
        "rgba.png": encode(picture.convert("RGBA"), "PNG"),
        "palette.png": encode(picture.convert("P"), "PNG", transparency=0),
        "grey16.png": encode(grey16, "PNG"),
        "lossy.webp": encode(picture, "WEBP", quality=50),
        "lossless-rgba.webp": encode(picture.convert("RGBA"), "WEBP", lossless=True),
        "animated.gif": animated.getvalue(),
        "photo.heic": encode(picture, "HEIF", quality=50),
        "exif.heic": encode(picture, "HEIF", quality=50, exif=exif.tobytes()),
        "float.tif": encode(floats, "TIFF", compression="tiff_adobe_deflate"),
        "rgb.tif": encode(picture, "TIFF"),
        "exif.tif": encode(picture, "TIFF", exif=exif),
        "rgb.bmp": encode(picture, "BMP"),
    }


class Recorder:
    """Runs one input through the image function and saves distinct crashers."""

    def __init__(self, out_dir: Path) -> None:
        Image.init()  # imports every format plugin now (inside atheris' instrumentation)
        self.decode_image = decode_image
        self.rejected = ImageRejected
        self.crashers = out_dir / "crashers"
        self.crashers.mkdir(parents=True, exist_ok=True)
        self.signatures: dict[str, int] = {
            path.name.split("-")[0]: 1 for path in self.crashers.glob("*.bin")
        }
        self.executions = 0
        self.reasons: dict[str, int] = {}
        self.causes: dict[str, int] = {}

    def __call__(self, data: bytes) -> None:
        self.executions += 1
        if self.executions % 5000 == 0:
            print(
                f"{self.executions} executions; rejections {self.reasons}; causes {self.causes}",
                flush=True,
            )
        try:
            self.decode_image(data)
        except self.rejected as rejection:
            self.reasons[rejection.reason] = self.reasons.get(rejection.reason, 0) + 1
            cause = rejection.__cause__
            if cause is not None:
                # Which exception types the decoders really raise (all of them are rejections).
                name = type(cause).__name__
                if name not in self.causes:
                    print(f"new cause of {rejection.reason}: {name}: {cause}", flush=True)
                    # One sample each: before issue 9 only some types were rejections.
                    (self.crashers.parent / "causes").mkdir(exist_ok=True)
                    sample = self.crashers.parent / "causes" / f"{name}.bin"
                    sample.write_bytes(data)
                    sample.with_suffix(".txt").write_text(f"{name}: {cause}\n")
                self.causes[name] = self.causes.get(name, 0) + 1
        except Exception as error:
            frames = traceback.extract_tb(error.__traceback__)
            where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
            signature = hashlib.sha1(f"{type(error).__name__}@{where}".encode()).hexdigest()[:10]
            count = self.signatures.get(signature, 0)
            self.signatures[signature] = count + 1
            if count == 0:
                digest = hashlib.sha1(data).hexdigest()[:12]
                (self.crashers / f"{signature}-{digest}.bin").write_bytes(data)
                (self.crashers / f"{signature}-{digest}.txt").write_text(
                    f"{type(error).__name__}: {error}\n\n{traceback.format_exc()}"
                )
                print(f"new crasher {signature}: {type(error).__name__}: {error} at {where}")
                sys.stdout.flush()


def _mutate(data: bytearray, seeds: list[bytes], rng: random.Random) -> bytes:
    for _ in range(rng.randint(1, 8)):
        if not data:
            data = bytearray(rng.choice(seeds))
        choice = rng.random()
        position = rng.randrange(len(data))
        if choice < 0.35:
            data[position] ^= 1 << rng.randrange(8)
        elif choice < 0.55:
            data[position] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif choice < 0.65:
            del data[position : position + rng.randint(1, 64)]
        elif choice < 0.75:
            start = rng.randrange(len(data))
            data[position:position] = data[start : start + rng.randint(1, 64)]
        elif choice < 0.85:
            other = rng.choice(seeds)
            start = rng.randrange(len(other))
            data[position : position + 32] = other[start : start + 32]
        else:
            width = rng.choice((1, 2, 4))
            value = rng.choice(
                (0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 16))
            )
            data[position : position + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(
                width, rng.choice(("big", "little"))
            )
    return bytes(data)


def run_mutation_loop(recorder: Recorder, seeds: list[bytes], seconds: float) -> None:
    rng = random.Random(20261126)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        recorder(_mutate(bytearray(rng.choice(seeds)), seeds, rng))


def _corpus(out_dir: Path) -> Path:
    corpus = out_dir / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for name, data in seed_files().items():
            (corpus / name).write_bytes(data)
    return corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--engine", choices=("atheris", "mutate"), default=None)
    arguments = parser.parse_args()
    engine = arguments.engine
    if engine is None:
        try:
            import atheris  # noqa: PLC0415 — optional: atheris is installed only where the fuzzer runs
        except ImportError:
            engine = "mutate"
        else:
            engine = "atheris"
    started = time.monotonic()
    if engine == "atheris":
        import atheris  # noqa: PLC0415 — optional: atheris is installed only where the fuzzer runs

        # Only modules first imported inside this block are instrumented for coverage.
        with atheris.instrument_imports(include=["PIL", "contracts", "pillow_heif"]):
            recorder = Recorder(arguments.out_dir)
        corpus = _corpus(arguments.out_dir)
        atheris.Setup(
            [
                sys.argv[0],
                str(corpus),
                f"-max_total_time={int(arguments.seconds)}",
                "-timeout=20",
                "-rss_limit_mb=3072",
                "-max_len=65536",
                "-print_final_stats=1",
                "-close_fd_mask=2",  # Pillow's warnings about damaged EXIF, thousands of them
            ],
            recorder,
        )
        atheris.Fuzz()  # libFuzzer exits the process when the time is up
    else:
        recorder = Recorder(arguments.out_dir)
        corpus = _corpus(arguments.out_dir)
        seeds = [path.read_bytes() for path in sorted(corpus.iterdir()) if path.is_file()]
        run_mutation_loop(recorder, seeds, arguments.seconds)
    elapsed = time.monotonic() - started
    print(
        f"{engine}: {recorder.executions} executions in {elapsed:.0f} s; "
        f"rejections {recorder.reasons}; distinct crash signatures {len(recorder.signatures)}"
    )


if __name__ == "__main__":
    main()

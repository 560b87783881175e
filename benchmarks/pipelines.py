"""Input pipelines: images per second of unhot's decoding (``data.pipeline``) against a plain
PIL + DataLoader pipeline doing the same transforms the way torchvision's do them.

Data: JPEG photos written by this script (500 x 375 like an average ImageNet image, smooth
random content, quality 90). Output size S = 224. Cases, each unhot vs plain:

- ``squash``: whole image to S x S. Plain: decode at full size, resize.
- ``rrc``: a random-resized crop (area (0.08, 1)) to S x S + flip. Plain: decode at full size,
  crop, resize (torchvision's RandomResizedCrop); unhot decodes JPEGs at reduced scale where the
  crop allows (``draft``) and resamples the region once.
- ``centre``: shorter side to S / 0.875, centre crop. Plain: decode at full size, resize, crop.
- ``batched``: for reference, unhot's batched tensor augmentation (random-resized crop + flip of
  an in-memory uint8 batch, ``augment.crop_scale``) per image, the in-memory path.

Both pipelines run through a DataLoader (batch 64) with 0 and 2 worker processes, alternating
unhot and plain, 5 rounds; medians of images per second and the ratio unhot / plain from the same
rounds.

    python benchmarks/pipelines.py [--images 256] [--rounds 5]
    # writes benchmarks/results/pipelines.{json,md}
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import unhot
from unhot.augment import augment
from unhot.config import AugmentConfig
from unhot.data.files import FileImages
from unhot.data.views import TrainView

RESULTS = Path(__file__).parent / "results"
SIZE = 224


def write_photos(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC)
        path = folder / f"{i}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


class UnhotImages(Dataset):
    def __init__(self, images: FileImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.images.decode(i))


class PlainImages(Dataset):
    """Full-size decode, then the transform as torchvision does it."""

    def __init__(self, paths: list[Path], case: str) -> None:
        self.paths, self.case = paths, case

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as img:
            img = img.convert("RGB")
            if self.case == "squash":
                img = img.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
            elif self.case == "rrc":
                box, flip = TrainView(0, 0, flip=True).crop(i, *img.size)
                img = img.crop(box).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
                if flip:
                    img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            else:
                short = round(SIZE / 0.875)
                w, h = img.size
                img = img.resize((short, round(h * short / w)) if w < h else
                                 (round(w * short / h), short), Image.Resampling.BILINEAR)
                left, top = (img.size[0] - SIZE) // 2, (img.size[1] - SIZE) // 2
                img = img.crop((left, top, left + SIZE, top + SIZE))
            return torch.from_numpy(np.array(img).transpose(2, 0, 1).copy())


def unhot_images(paths: list[Path], case: str) -> FileImages:
    images = FileImages(paths, SIZE, 3, pipeline="squash" if case == "squash" else "rrc")
    if case == "rrc":
        images.train_view = TrainView(0, 0, flip=True)
    return images


def images_per_second(dataset: Dataset, workers: int) -> float:
    loader = DataLoader(dataset, batch_size=64, num_workers=workers)
    start = time.perf_counter()
    count = sum(batch.shape[0] for batch in loader)
    return count / (time.perf_counter() - start)


def batched_per_second(batches: int = 4) -> float:
    batch = torch.randint(0, 255, (64, 3, SIZE, SIZE), dtype=torch.uint8)
    cfg = AugmentConfig(crop_scale=(0.08, 1.0), flip=True)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(batches):
        augment(batch.float().div_(127.5).sub_(1.0), cfg, generator)
    return batches * 64 / (time.perf_counter() - start)


def measure(paths: list[Path], rounds: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for case in ("squash", "rrc", "centre"):
        for workers in (0, 2):
            unhot_rates, plain_rates = [], []
            for r in range(rounds):
                pair = [("unhot", UnhotImages(unhot_images(paths, case))),
                        ("plain", PlainImages(paths, case))]
                for name, dataset in pair if r % 2 == 0 else pair[::-1]:
                    rate = images_per_second(dataset, workers)
                    (unhot_rates if name == "unhot" else plain_rates).append(rate)
            ratios = [u / p for u, p in zip(unhot_rates, plain_rates, strict=True)]
            results[f"{case}/workers{workers}"] = {
                "unhot_img_s": statistics.median(unhot_rates),
                "plain_img_s": statistics.median(plain_rates),
                "ratio_median": statistics.median(ratios),
                "ratio_mean": statistics.mean(ratios), "ratio_std": statistics.stdev(ratios)}
            print(case, workers, results[f"{case}/workers{workers}"], flush=True)
    results["batched/in_memory"] = {"unhot_img_s": statistics.median(
        batched_per_second() for _ in range(rounds))}
    return results


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = ["# Input pipelines: images per second (S = 224, 500 x 375 JPEGs)", "",
             f"{meta['images']} images, {meta['rounds']} alternating rounds, torch "
             f"{meta['torch']}, unhot {meta['unhot']}; regenerate: `{meta['command']}`", "",
             "| case | loader workers | unhot img/s | plain img/s | unhot / plain (median; "
             "mean +- std) |", "|---|---:|---:|---:|---|"]
    for key, row in results.items():
        if "plain_img_s" not in row:
            continue
        case, workers = key.split("/")
        lines.append(f"| {case} | {workers.removeprefix('workers')} | {row['unhot_img_s']:.0f} | "
                     f"{row['plain_img_s']:.0f} | {row['ratio_median']:.2f} "
                     f"({row['ratio_mean']:.2f} +- {row['ratio_std']:.2f}) |")
    batched = results["batched/in_memory"]["unhot_img_s"]
    lines += ["", f"Batched tensor augmentation of in-memory images (random-resized crop + flip, "
              f"one process): {batched:.0f} img/s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photos(Path(tmp), args.images)
        results = measure(paths, args.rounds)
    meta = {"images": args.images, "rounds": args.rounds, "torch": torch.__version__,
            "unhot": unhot.__version__, "command": "python benchmarks/pipelines.py"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipelines.json").write_text(json.dumps({"meta": meta, "results": results},
                                                       indent=2) + "\n")
    (RESULTS / "pipelines.md").write_text(markdown(results, meta))
    print(markdown(results, meta))


if __name__ == "__main__":
    main()

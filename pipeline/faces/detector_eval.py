"""faces-eval: how well a detector finds faces in a folder whose face counts are known.

    python -m pipeline faces-eval ../shared/data/anime-dev --detector all \\
        --cascade-path ../shared/models/lbpcascade_animeface.xml

The folder holds images and `faces.json` ({"<file name>": <number of faces>, ...}; keys
starting with "_" are comments). Without boxes to compare against, a face counts as found by
count: an image with 2 faces and 3 detections has 2 found and 1 extra. So recall is
sum(min(detected, present)) / sum(present) and extra is sum(max(0, detected - present)) per
image. Boxes smaller than --min-face-size (the crop stage's threshold) are not counted, as the
stage would drop them. Speed is detection only (model loading and decoding excluded), after
one warm-up image.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from pipeline.config import AnimeFacesParams, MissingInputError
from pipeline.faces.detectors import DETECTOR_NAMES, Detector, detector_from_params, shrink_for_detection
from pipeline.faces.images import load_rgb


def read_face_counts(folder: Path) -> dict[str, int]:
    path = folder / "faces.json"
    if not path.is_file():
        raise MissingInputError(f"{path}: not found (a JSON object: image file name -> face count)")
    counts = json.loads(path.read_text())
    counts = {name: count for name, count in counts.items() if not name.startswith("_")}
    for name, count in counts.items():
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"{path}: {name}: the face count must be a whole number >= 0 (got {count!r})")
        if not (folder / name).is_file():
            raise MissingInputError(f"{path}: lists {name}, which is not in {folder}")
    return dict(sorted(counts.items()))


def faces_eval(folder: Path | str, detector: str | Detector = "combined", *,
               params: AnimeFacesParams | None = None, min_face_size: int | None = None) -> dict[str, Any]:
    """Recall, extra detections per image and images/s of one detector on a labelled folder.

    `detector` is a name (built from `params`, default AnimeFacesParams()) or a Detector.
    """
    folder = Path(folder)
    params = params or AnimeFacesParams()
    min_face_size = params.min_face_size if min_face_size is None else min_face_size
    if isinstance(detector, str):
        if detector not in DETECTOR_NAMES:
            raise ValueError(f"unknown detector {detector!r}; known: {', '.join(DETECTOR_NAMES)}")
        detector = detector_from_params(params.model_copy(update={"detector": detector}),
                                        min_size=min_face_size if 0 < min_face_size < 20 else None)
    counts = read_face_counts(folder)
    shrunk = [shrink_for_detection(load_rgb(folder / name), params.detect_max_side) for name in counts]
    images = [small for small, _ in shrunk]

    detector.detect(images[:1])  # warm-up: lazy initialisation, CUDA kernels, caches
    start = time.perf_counter()
    found_per_image = detector.detect(images)
    seconds = time.perf_counter() - start

    per_image, found, extra = {}, 0, 0
    for (name, present), (_, factor), detections in zip(counts.items(), shrunk, found_per_image):
        sides = [round(d.scaled(factor).side) for d in detections]
        detected = sum(side >= min_face_size for side in sides)
        found += min(detected, present)
        extra += max(0, detected - present)
        per_image[name] = {"faces": present, "detected": detected, "box_sides": sides}
    present_total = sum(counts.values())
    return {
        "detector": getattr(detector, "name", type(detector).__name__),
        "images": len(counts),
        "faces": present_total,
        "found": found,
        "recall": found / present_total if present_total else float("nan"),
        "extra_per_image": extra / len(counts) if counts else float("nan"),
        "images_per_s": len(counts) / seconds if seconds > 0 else float("inf"),
        "min_face_size": min_face_size,
        "per_image": per_image,
    }


def format_table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'detector':<14} {'recall':>14} {'extra/image':>12} {'images/s':>10}"]
    for r in results:
        recall = f"{r['recall']:.2f} ({r['found']}/{r['faces']})"
        lines.append(f"{r['detector']:<14} {recall:>14} {r['extra_per_image']:>12.2f} {r['images_per_s']:>10.1f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m pipeline faces-eval`; `--params` is the CLI's global option (the
    anime.faces params to start from; defaults when the file is absent)."""
    parser.add_argument("folder", help="images plus faces.json with the face count of each")
    parser.add_argument("--detector", action="append", choices=[*DETECTOR_NAMES, "all"],
                        help="repeat for several; 'all' for every one (default: anime.faces.detector)")
    parser.add_argument("--cascade-path", help="overrides anime.faces.cascade_path")
    parser.add_argument("--device", help="overrides anime.faces.device")
    parser.add_argument("--min-face-size", type=int, help="overrides anime.faces.min_face_size")
    parser.add_argument("--json", dest="json_out", help="also write the full results here")
    parser.add_argument("--verbose", action="store_true", help="print each image's counts")


def main(args: argparse.Namespace) -> int:
    from pipeline.config import load_params

    params = (load_params(args.params).anime.faces if Path(args.params).is_file()
              else AnimeFacesParams())
    overrides = {"cascade_path": args.cascade_path, "device": args.device}
    params = params.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    names = args.detector or [params.detector]
    if "all" in names:
        names = list(DETECTOR_NAMES)
    results = []
    for name in names:
        result = faces_eval(args.folder, name, params=params, min_face_size=args.min_face_size)
        results.append(result)
        if args.verbose:
            for image, row in result["per_image"].items():
                print(f"  {name:<14} {image:<14} faces {row['faces']}  detected {row['detected']}  sides {row['box_sides']}")
    print(f"{args.folder}: {results[0]['images']} images, {results[0]['faces']} faces, "
          f"boxes >= {results[0]['min_face_size']} px counted")
    print(format_table(results))
    if args.json_out:
        from pipeline.atomic import write_json_atomic

        write_json_atomic(Path(args.json_out), results)
    return 0


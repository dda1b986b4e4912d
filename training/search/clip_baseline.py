"""CLIP zero-shot tags as a baseline beside BLIP-2, on the same validation questions.

The questions are the artifact's `evaluation/predictions.csv`: exactly the validation questions the BLIP-2
evaluation answered, so both models are scored on the same products. Each photo is decoded with the server's
decoder (`training.data.read_image`, as an endpoint decodes an upload) and tagged by
`ClipService.tag_images`, the code a CLIP endpoint runs for `{"task": "tags"}`, with the CLIP artifact's own
candidate values, prompt templates and calibrated thresholds. Per attribute the CLIP artifact tags:

- `accuracy`: its most probable value is the expected value, whether the tag was stated or withheld (what
  CLIP answers when it must answer: the counterpart of BLIP-2's exact match);
- `coverage`: the share of questions whose tag was stated (passed the calibrated threshold);
- `precision`: the share of stated tags that are right (None when nothing was stated).

`overall` adds BLIP-2's fine-tuned and base-model figures on the same questions (only the attributes CLIP
tags). Attributes the CLIP artifact does not tag are listed in `not_tagged`. The section is stored in the
artifact's metrics under `clip_zero_shot` (training/report.py shows it).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from loom.artifact import CLIP_BASELINE_METRICS as KEY
from loom.artifact import ArtifactPaths, read_clip_manifest, read_metrics, record_metrics
from loom.schema import SchemaError
from training.data import DataError, read_image

BATCH = 16  # photos tagged together
HOW = ("the CLIP artifact's zero-shot tags (its candidate values, ensembled prompt templates and calibrated "
       "thresholds) on the BLIP-2 validation questions; accuracy: the most probable value, stated or withheld, "
       "equals the expected value; coverage and precision: the stated tags only")

TagImages = Callable[..., list[dict[str, Any]]]  # ClipService.tag_images(images, attributes=None, labels=None)


@dataclass(frozen=True)
class Question:
    """One validation question as the BLIP-2 evaluation scored it (a row of predictions.csv)."""

    id: str
    attribute: str
    expected: str
    fine_tuned_correct: bool
    baseline_correct: bool


@dataclass(frozen=True)
class Answer:
    """CLIP's answer to one question: its most probable value (None when it gave none) and whether it was stated."""

    value: str | None
    stated: bool


def read_questions(model_dir: str | Path) -> list[Question]:
    """The validation questions of a BLIP-2 artifact, from evaluation/predictions.csv."""
    path = ArtifactPaths.of(model_dir).predictions
    if not path.is_file():
        raise DataError(f"{path} is missing: the CLIP baseline is scored on the BLIP-2 evaluation's questions")
    with path.open(encoding="utf-8", newline="") as handle:
        return [Question(row["id"], row["attribute"], row["expected"], row["correct"] == "1",
                         row["baseline_correct"] == "1") for row in csv.DictReader(handle)]


def tag_questions(tag_images: TagImages, questions: Sequence[Question], images_dir: str | Path, *,
                  batch: int = BATCH, draft_side: int | None = None) -> dict[tuple[str, str], Answer]:
    """CLIP's answer to every question, by (product id, attribute); each photo is decoded and tagged once."""
    ids = list(dict.fromkeys(q.id for q in questions))
    answers: dict[tuple[str, str], Answer] = {}
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        images = [read_image(Path(images_dir), pid, draft_side) for pid in chunk]
        results = tag_images(images)
        if len(results) != len(chunk):
            raise ValueError(f"tag_images answered {len(results)} results for {len(chunk)} photos")
        for pid, result in zip(chunk, results):
            for stated, entries in ((True, result.get("tags") or {}), (False, result.get("withheld") or {})):
                for name, entry in entries.items():
                    answers[(pid, name)] = Answer(entry.get("value"), stated)
    return answers


def score(questions: Sequence[Question], answers: Mapping[tuple[str, str], Answer],
          with_baseline: bool = True) -> dict[str, Any]:
    """{"attributes": {name: {accuracy, precision, coverage, stated, examples}}, "overall": {...}, "not_tagged"}."""
    groups: dict[str, list[Question]] = {}
    for q in questions:
        groups.setdefault(q.attribute, []).append(q)
    # An attribute CLIP answered for some product is tagged; a question it left unanswered counts as wrong.
    tagged = {name: rows for name, rows in groups.items() if any((q.id, name) in answers for q in rows)}
    missing = Answer(None, False)

    def share(hits: int, total: int) -> float | None:
        return round(hits / total, 4) if total else None

    def summary(rows: Sequence[Question]) -> dict[str, Any]:
        found = [answers.get((q.id, q.attribute), missing) for q in rows]
        right = [a.value == q.expected for a, q in zip(found, rows)]
        stated = [a.stated for a in found]
        return {"accuracy": share(sum(right), len(rows)),
                "precision": share(sum(r and s for r, s in zip(right, stated)), sum(stated)),
                "coverage": share(sum(stated), len(rows)), "stated": sum(stated), "examples": len(rows)}

    everything = [q for rows in tagged.values() for q in rows]
    overall = summary(everything) if everything else {"accuracy": None, "precision": None, "coverage": None,
                                                      "stated": 0, "examples": 0}
    overall["fine_tuned_exact_match"] = share(sum(q.fine_tuned_correct for q in everything), len(everything))
    overall["baseline_exact_match"] = (share(sum(q.baseline_correct for q in everything), len(everything))
                                       if with_baseline else None)
    return {"attributes": {name: summary(rows) for name, rows in tagged.items()}, "overall": overall,
            "not_tagged": [name for name in groups if name not in tagged]}


def evaluate_clip(model_dir: str | Path, clip_dir: str | Path, images_dir: str | Path, *,
                  device: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Score a CLIP artifact's zero-shot tags on a BLIP-2 artifact's validation questions and store the
    section in the BLIP-2 artifact's metrics (metrics.json and the manifest); returns it."""
    from runtime.clip_service import ClipService

    manifest = check_clip_artifact(clip_dir)
    questions = read_questions(model_dir)
    started = time.perf_counter()
    service = ClipService.load(clip_dir, device=device)
    answers = tag_questions(service.tag_images, questions, images_dir,
                            draft_side=getattr(service, "image_draft_side", None))
    section = score(questions, answers, read_metrics(model_dir).get("overall", {}).get("baseline_exact_match")
                    is not None)
    section = {"model": manifest["base_model"], "how": HOW,
               "seconds": round(time.perf_counter() - started, 1), **section}
    record_metrics(model_dir, KEY, section)
    log(format_section(section))
    return section


def check_clip_artifact(clip_dir: str | Path) -> dict[str, Any]:
    """The CLIP artifact's manifest; DataError naming the folder when it is not one."""
    try:
        return read_clip_manifest(clip_dir)
    except SchemaError as exc:
        raise DataError(f"--clip-artifact {clip_dir}: {exc}") from None


def format_section(section: Mapping[str, Any]) -> str:
    """A small table for the log: CLIP zero-shot accuracy, precision and coverage per attribute."""
    def cell(x):
        return "   -  " if x is None else f"{x:6.3f}"

    lines = [f"CLIP zero-shot baseline ({section.get('model', '?')})",
             f"{'attribute':<16} {'n':>5} {'acc':>6} {'prec':>6} {'cover':>6}"]
    for name, m in [*section["attributes"].items(), ("overall", section["overall"])]:
        lines.append(f"{name:<16} {m['examples']:>5} {cell(m['accuracy'])} {cell(m['precision'])} "
                     f"{cell(m['coverage'])}")
    o = section["overall"]
    lines.append(f"BLIP-2 on the same {o['examples']} questions: fine-tuned "
                 f"{cell(o['fine_tuned_exact_match']).strip()}, base model {cell(o['baseline_exact_match']).strip()}"
                 + (f"; CLIP took {section['seconds']:.1f} s" if "seconds" in section else ""))
    if section.get("not_tagged"):
        lines.append(f"not tagged by the CLIP artifact: {', '.join(section['not_tagged'])}")
    return "\n".join(lines)

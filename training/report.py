"""The evaluation report: one HTML page (plus PNGs) from a model folder's metrics and validation predictions.

    loom report --model DIR --images DIR [--out DIR] [--examples N] [--clip-artifact DIR [--device D]]

Reads `metrics.json`, `evaluation/predictions.csv`, `evaluation/loss_history.csv` and `loom_manifest.json`;
writes `report.html`, `accuracy.png`, `confusion_<attribute>.png`, `loss.png`, `reliability.png`,
`calibration.png` and `examples/<id>.jpg`.
With `--clip-artifact`, a CLIP model's zero-shot tags are first scored on the same validation questions
(training/search/clip_baseline.py) and shown beside the fine-tuned and base figures.
Figures are drawn with matplotlib's object API (no pyplot), so no backend or global state is touched.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from matplotlib.figure import Figure
from PIL import Image

from loom.errors import command_error
from loom.artifact import CLIP_BASELINE_METRICS as CLIP_KEY
from loom.artifact import (
    REPORT_FILE,
    ArtifactPaths,
    read_calibration,
    read_calibration_records,
    read_manifest,
    read_metrics,
)
from loom.calibration import Calibration

OTHER = "(other)"
THUMBNAIL = (160, 160)
FINE_TUNED_COLOUR, BASELINE_COLOUR, CLIP_COLOUR = "#2b6cb0", "#a0aec0", "#dd6b20"
CLIP_LABEL = "CLIP zero-shot"


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts, or [] when the file is missing."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def is_true(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "1.0", "true", "yes"}


def slug(name: str) -> str:
    """A file-name-safe form of an attribute name ("Sleeve Length" -> "sleeve-length")."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "attribute"


def confusion_matrix(rows: Iterable[Mapping[str, str]], known_values: Iterable[str] = (),
                     top: int = 15) -> tuple[list[str], list[list[int]]]:
    """(labels, counts) for one attribute's predictions: counts[expected][predicted] over the same labels.

    Labels are the `top` most frequent expected values plus "(other)", which collects rarer values and
    predictions that are not a value at all (answers that did not parse).
    """
    rows = list(rows)
    frequency = Counter(r["expected"] for r in rows)
    labels = [v for v, _ in sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))[:top]] + [OTHER]
    index = {v: i for i, v in enumerate(labels[:-1])}
    counts = [[0] * len(labels) for _ in labels]
    valid = set(known_values) | set(frequency)
    for r in rows:
        predicted = r["predicted"] if r["predicted"] in valid else OTHER
        counts[index.get(r["expected"], len(labels) - 1)][index.get(predicted, len(labels) - 1)] += 1
    return labels, counts


def pick_examples(rows: Sequence[Mapping[str, str]], n: int) -> list[str]:
    """Up to n product ids, partly-wrong ones first then fully-correct ones, spread evenly over the ids."""
    by_id: dict[str, list[Mapping[str, str]]] = {}
    for r in rows:
        by_id.setdefault(r["id"], []).append(r)
    ids = sorted(by_id, key=lambda i: (len(i), i))  # numeric order for numeric ids
    wrong = [i for i in ids if not all(is_true(r["correct"]) for r in by_id[i])]
    right = [i for i in ids if i not in set(wrong)]
    take_wrong = min(len(wrong), max(n - len(right), (n + 1) // 2))
    take_right = min(len(right), n - take_wrong)
    spread = lambda items, k: [items[j * len(items) // k] for j in range(k)]  # noqa: E731
    return spread(wrong, take_wrong) + spread(right, take_right)


def clip_accuracies(metrics: Mapping[str, Any], names: Sequence[str]) -> list[float | None]:
    """CLIP zero-shot accuracy for "overall" and each attribute name (None where CLIP has no figure; overall only
    when CLIP tags every evaluated attribute, else it would cover other questions than the BLIP-2 figures)."""
    clip = metrics.get(CLIP_KEY) or {}
    per = clip.get("attributes", {})
    return [(clip.get("overall", {}).get("accuracy") if not clip.get("not_tagged") else None) if name == "overall"
            else per.get(name, {}).get("accuracy") for name in names]


def plot_accuracy(metrics: Mapping[str, Any], attributes: Sequence[str], labels: Mapping[str, str], path: Path) -> Path:
    """Grouped bars: fine-tuned vs base-model exact match (and CLIP zero-shot accuracy when measured), overall
    first, then each attribute with rows."""
    per = metrics.get("attributes", {})
    names = ["overall"] + [a for a in attributes if per.get(a, {}).get("examples")]
    entries = [metrics.get("overall", {})] + [per[a] for a in names[1:]]
    series = [([float(e.get("exact_match") or 0.0) for e in entries], FINE_TUNED_COLOUR, "fine-tuned"),
              ([float(e.get("baseline_exact_match") or 0.0) for e in entries], BASELINE_COLOUR, "base model")]
    if CLIP_KEY in metrics:
        series.append((clip_accuracies(metrics, names), CLIP_COLOUR, CLIP_LABEL))
    width = 0.8 / len(series)
    xs = range(len(names))
    fig = Figure(figsize=(max(6.0, (0.55 + 0.275 * len(series)) * len(names) + 2), 4.2), layout="constrained")
    ax = fig.add_subplot()
    for i, (heights, colour, label) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        shown = [(x + offset, h) for x, h in zip(xs, heights) if h is not None]
        bars = ax.bar([x for x, _ in shown], [h for _, h in shown], width=width, color=colour, label=label)
        ax.bar_label(bars, labels=[f"{h:.0%}" for _, h in shown], fontsize=8 if len(series) < 3 else 7, padding=2)
    ax.set_xticks(list(xs), ["Overall"] + [labels.get(a, a) for a in names[1:]], rotation=30, ha="right")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("exact match")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.axvline(0.5, color="#cbd5e0", linewidth=1)
    ax.legend(loc="upper right", ncols=len(series), frameon=False)
    ax.set_title("Exact match per attribute (validation)")
    fig.savefig(path, dpi=110)
    return path


RELIABILITY_BINS = 10
TARGET_COLOUR, BOUND_COLOUR = "#e53e3e", "#805ad5"


def reliability_bins(outcomes: Iterable[tuple[bool, float | None]], bins: int = RELIABILITY_BINS
                     ) -> list[tuple[float, float, float, int]]:
    """(bin low, bin high, accuracy, answers) for every non-empty equal-width confidence bin; answers
    without a confidence (unparsed, unknown values) are left out (they are never stated)."""
    counts = [[0, 0] for _ in range(bins)]
    for ok, c in outcomes:
        if c is None:
            continue
        i = min(bins - 1, max(0, int(c * bins)))
        counts[i][0] += 1
        counts[i][1] += bool(ok)
    return [(i / bins, (i + 1) / bins, right / n, n) for i, (n, right) in enumerate(counts) if n]


def _grid(count: int, width: float, height: float) -> tuple[Figure, int, int]:
    cols = min(3, count) or 1
    rows = (count + cols - 1) // cols or 1
    return Figure(figsize=(width * cols, height * rows), layout="constrained"), rows, cols


def plot_reliability(records: Sequence[tuple[str, bool, float | None]], attributes: Sequence[str],
                     labels: Mapping[str, str], path: Path) -> Path:
    """Per attribute: accuracy of the answers in each confidence bin against the bin, the diagonal marking
    a perfectly calibrated confidence; the number of answers in each bin above its bar."""
    names = [a for a in attributes if any(r[0] == a for r in records)]
    fig, rows, cols = _grid(len(names), 3.6, 3.0)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        binned = reliability_bins((ok, c) for a, ok, c in records if a == name)
        ax.plot([0, 1], [0, 1], color="#a0aec0", linewidth=1, linestyle=":")
        bars = ax.bar([lo for lo, _, _, _ in binned], [acc for _, _, acc, _ in binned], width=1 / RELIABILITY_BINS,
                      align="edge", color=FINE_TUNED_COLOUR, alpha=0.8, edgecolor="white")
        ax.bar_label(bars, labels=[str(n) for *_, n in binned], fontsize=6, padding=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.15)
        ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
        ax.set_title(labels.get(name, name), fontsize=9)
        ax.set_xlabel("value confidence (bin)", fontsize=8)
        ax.set_ylabel("accuracy in bin", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.savefig(path, dpi=110)
    return path


def plot_calibration(records: Sequence[tuple[str, bool, float | None]], calibration: Calibration,
                     attributes: Sequence[str], labels: Mapping[str, str], path: Path) -> Path:
    """Per attribute, as the threshold falls: observed precision and its lower confidence bound against
    coverage, the target dashed, the chosen threshold marked (or why there is none)."""
    del records  # the manifest's evidence is what the thresholds rest on
    names = [a for a in attributes if a in calibration.attributes]
    fig, rows, cols = _grid(len(names), 3.6, 3.0)
    level = f"{calibration.confidence:.0%}"
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        entry = calibration.attributes[name]
        curve = entry.curve(calibration.confidence)
        coverage = [c for _, c, _, _ in curve]
        ax.plot(coverage, [p for _, _, p, _ in curve], color=FINE_TUNED_COLOUR, linewidth=1.5,
                label="observed precision")
        ax.plot(coverage, [b for _, _, _, b in curve], color=BOUND_COLOUR, linewidth=1.2, linestyle="-.",
                label=f"{level} lower bound")
        ax.axhline(calibration.target_precision, color=TARGET_COLOUR, linewidth=1, linestyle="--",
                   label=f"target {calibration.target_precision:g}")
        if entry.chosen is not None:
            ax.plot([entry.coverage], [entry.lower_bound], "o", color=TARGET_COLOUR, markersize=5)
            note = (f"t = {entry.threshold:.3f}: {entry.stated} of {entry.examples} stated, precision "
                    f"{entry.precision:.3f}, bound {entry.lower_bound:.3f}")
        else:
            note = f"never stated: {entry.reason} ({entry.examples} answers)"
        ax.set_xlim(0, 1.02)
        # The range a target may take (0.5..1, loom.calibration.MIN_PRECISION_BOUNDS), lower when the observed
        # precision is lower, so that an attribute that is mostly wrong still shows its curve.
        low = min([0.5] + [p for _, _, p, _ in curve])
        ax.set_ylim(max(0.0, low - 0.05), 1.03)
        ax.set_title(f"{labels.get(name, name)}\n{note}", fontsize=8)  # above the axes: no curve hidden
        ax.set_xlabel("coverage (share of answers stated)", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(loc="lower right", fontsize=6, frameon=False)
    fig.savefig(path, dpi=110)
    return path


def render_calibration(model_dir: Path, manifest: Mapping[str, Any], attributes: Sequence[str],
                       labels: Mapping[str, str], out: Path) -> str:
    """The calibration section: reliability diagrams, precision-coverage curves with the lower bound and the
    chosen point, and the threshold table (empty without calibration)."""
    if not manifest.get("calibration"):
        return ""
    calibration = read_calibration(model_dir, manifest)
    records = read_calibration_records(model_dir)
    plot_reliability(records, attributes, labels, out / "reliability.png")
    plot_calibration(records, calibration, attributes, labels, out / "calibration.png")
    level = f"{calibration.confidence:.0%}"
    rows = "".join(
        f"<tr><td>{escape(shown_name(name, labels) if name in labels else name)}</td>"
        f"<td class=num>{a.examples}</td>"
        f"<td class=num>{'-' if a.threshold is None else f'{a.threshold:.4f}'}</td>"
        f"<td class=num>{a.stated}</td><td class=num>{pct(a.precision)}</td><td class=num>{pct(a.lower_bound)}</td>"
        f"<td class=num>{pct(a.coverage)}</td><td>{'stated' if a.reason is None else escape(a.reason)}</td></tr>"
        for name, a in calibration.attributes.items())
    return ("<h2>Calibration: what Loom states</h2>"
            f"<p>An attribute is stated when its value confidence reaches its threshold. Thresholds are chosen so that "
            f"precision &ge; {calibration.target_precision:g} holds with {level} confidence: from the highest "
            "threshold down, each is tested with an exact binomial test on the validation answers it states, and "
            "testing stops at the first that fails (fixed-sequence testing, Learn-then-Test); the threshold is the "
            f"lowest that passed. A test passes when the one-sided {level} Clopper&ndash;Pearson lower bound on "
            f"precision reaches the target, which takes at least {calibration.min_stated} stated answers even with "
            "no error. An attribute with no passing threshold is never stated (<code>not_enough_evidence</code>). "
            "A request's <code>min_precision</code> moves the target under the same rule.</p>"
            "<h3>Reliability</h3><p>Accuracy of the validation answers per confidence bin (the number above each "
            "bar counts them); on the dotted diagonal the confidence would be the accuracy.</p>"
            "<img class='fig' src='reliability.png' alt='reliability diagram per attribute'>"
            "<h3>Precision against coverage</h3><p>As the threshold falls: the observed precision of the stated "
            f"answers, its {level} lower bound, the target (dashed) and the chosen threshold (dot, on the lower "
            "bound).</p><img class='fig' src='calibration.png' alt='precision and its lower bound against "
            "coverage per attribute'>"
            "<table><tr><th>attribute</th><th>answers</th><th>threshold</th><th>stated</th><th>precision</th>"
            f"<th>lower bound ({level})</th><th>coverage</th><th>outcome</th></tr>{rows}</table>")


def plot_confusion(labels: Sequence[str], counts: Sequence[Sequence[int]], title: str, path: Path) -> Path:
    """A heat map with the count in each non-empty cell; expected values down, predicted across."""
    n = len(labels)
    shown = [(v if len(v) <= 28 else v[:27] + "…").replace("$", r"\$") for v in labels]  # "$" would start mathtext
    size = max(3.6, 0.36 * n + 2.2)  # about the same cell size whatever the number of values
    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.add_subplot()
    peak = max(max(row) for row in counts) or 1
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=peak)
    for i, row in enumerate(counts):
        for j, c in enumerate(row):
            if c:
                ax.text(j, i, str(c), ha="center", va="center", fontsize=8,
                        color="white" if c > peak * 0.55 else "#1a202c")
    ax.set_xticks(range(n), shown, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), shown, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("expected")
    ax.set_title(title)
    fig.savefig(path, dpi=100)
    return path


def plot_loss(history: Sequence[Mapping[str, str]], path: Path) -> Path | None:
    """Training loss vs step (log scale when it spans more than two decades), learning rate on a twin axis."""
    points = [(float(r["step"]), float(r["loss"]), _float(r.get("learning_rate"))) for r in history
              if _float(r.get("step")) is not None and _float(r.get("loss")) is not None]
    if not points:
        return None
    steps, losses, rates = zip(*points)
    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    lines = ax.plot(steps, losses, color=FINE_TUNED_COLOUR, linewidth=1.4, label="training loss")
    positive = [v for v in losses if v > 0]
    if positive and len(positive) == len(losses) and max(positive) / min(positive) > 100:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss", color=FINE_TUNED_COLOUR)
    ax.grid(alpha=0.3)
    if any(r is not None for r in rates):
        twin = ax.twinx()
        lines += twin.plot([s for s, r in zip(steps, rates) if r is not None], [r for r in rates if r is not None],
                           color="#dd6b20", linewidth=1, linestyle="--", label="learning rate")
        twin.set_ylabel("learning rate", color="#dd6b20")
        twin.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    fig.legend(handles=lines, loc="outside lower center", ncols=2, frameon=False)
    ax.set_title("Training loss")
    fig.savefig(path, dpi=110)
    return path


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def write_thumbnail(images_dir: Path, product_id: str, out_dir: Path) -> str | None:
    """Copy a resized picture to out_dir/examples/<id>.jpg; its relative path, or None when it is missing."""
    source = images_dir / f"{product_id}.jpg"
    if not re.fullmatch(r"[\w.-]+", product_id) or not source.is_file():
        return None
    try:
        with Image.open(source) as image:
            image = image.convert("RGB")
            image.thumbnail(THUMBNAIL)
            (out_dir / "examples").mkdir(parents=True, exist_ok=True)
            image.save(out_dir / "examples" / f"{product_id}.jpg", quality=85)
    except OSError:
        return None
    return f"examples/{product_id}.jpg"


def shown_name(attribute: str, labels: Mapping[str, str]) -> str:
    """"Colour (baseColour)" where the label differs from the catalog name, else the name."""
    return attribute if labels[attribute] == attribute else f"{labels[attribute]} ({attribute})"


def pct(value: Any) -> str:
    """A 0-1 rate as a percentage with one decimal ("0.8333" -> "83.3%"); "n/a" when absent."""
    number = _float(value)
    return "n/a" if number is None else f"{number:.1%}"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1180px;
  padding:16px 24px;color:#1a202c;background:#f7fafc}
h1{margin:.2em 0}h2{border-bottom:2px solid #e2e8f0;padding-bottom:4px;margin-top:2em}
.meta{color:#4a5568;font-size:14px}.meta code{background:#edf2f7;padding:1px 4px;border-radius:3px}
.kpis{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.kpi{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:10px 16px}
.kpi b{display:block;font-size:24px}.kpi span{font-size:13px;color:#4a5568}
table{border-collapse:collapse;font-size:14px;background:#fff}
th,td{border:1px solid #e2e8f0;padding:4px 8px;text-align:left}th{background:#edf2f7}td.num{text-align:right}
.up{color:#2f855a}.down{color:#c53030}img.fig{max-width:100%;background:#fff}.note{color:#718096;font-style:italic}
.grid{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.grid figure{margin:0;background:#fff;padding:8px;border:1px solid #e2e8f0;border-radius:8px}
.grid figure img{max-width:100%}
.card{display:flex;gap:12px;background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:10px;width:540px}
.card.wrong{border-left:5px solid #e53e3e}.card.right{border-left:5px solid #38a169}
.card img,.missing{width:120px;flex:none}.card>div{flex:1}.card table{width:100%}
.missing{height:140px;display:flex;align-items:center;justify-content:center;background:#edf2f7;color:#718096;
  font-size:13px}
.card td{font-size:13px;word-break:break-word}tr.mismatch td{background:#fff5f5}
tr.mismatch td.pred{color:#c53030;font-weight:600}
"""


def render_header(manifest: Mapping[str, Any], metrics: Mapping[str, Any], model_dir: Path) -> str:
    training, overall = metrics.get("training", {}), metrics.get("overall", {})
    lora = ", ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in (manifest.get("lora") or {}).items()) or "none recorded"
    numbers = {k: _float(training.get(k)) for k in ("steps", "epochs", "seconds", "final_loss")}
    run = ", ".join(part for part in (
        f"{numbers['steps']:.0f} steps" if numbers["steps"] is not None else "",
        f"{numbers['epochs']:g} epochs" if numbers["epochs"] is not None else "",
        f"{numbers['seconds']:.0f} s" if numbers["seconds"] is not None else "",
        f"final loss {numbers['final_loss']:.4g}" if numbers["final_loss"] is not None else "",
        " ".join(str(training[k]) for k in ("device", "dtype") if training.get(k)),
        f"{training['train_examples']} training examples" if "train_examples" in training else "",
        f"{training['validation_examples']} validation questions" if "validation_examples" in training else "",
    ) if part)
    kpis = [(pct(overall.get("exact_match")), "exact match, fine-tuned"),
            (pct(overall.get("baseline_exact_match")), "exact match, base model"),
            (pct(overall.get("unknown_value_rate")), "unknown value rate"),
            (str(overall.get("examples", "n/a")), "validation questions")]
    if clip := metrics.get(CLIP_KEY):
        kpis.insert(2, (pct(clip["overall"]["accuracy"]), f"{CLIP_LABEL}, the {clip['overall']['examples']} "
                                                          "questions it tags"))
    return (f"<h1>{escape(str(manifest.get('name') or model_dir.name))}: evaluation report</h1>"
            f"<div class='meta'>Base model <code>{escape(str(manifest.get('base_model', '?')))}</code> · "
            f"LoRA <code>{escape(lora)}</code><br>Training: {escape(run or 'no training record')}</div>"
            "<div class='kpis'>" + "".join(f"<div class='kpi'><b>{escape(v)}</b><span>{escape(t)}</span></div>"
                                           for v, t in kpis) + "</div>")


def render_accuracy_table(metrics: Mapping[str, Any], attributes: Sequence[str], labels: Mapping[str, str]) -> str:
    with_clip = CLIP_KEY in metrics
    clip = dict(zip(attributes, clip_accuracies(metrics, attributes))) if with_clip else {}
    rows = []
    for a in attributes:
        m = metrics.get("attributes", {}).get(a, {})
        name = escape(shown_name(a, labels))
        if not m.get("examples"):
            rows.append(f"<tr><td>{name}</td><td colspan={6 if with_clip else 5} class='note'>"
                        "no validation rows</td></tr>")
            continue
        delta = (_float(m.get("exact_match")) or 0.0) - (_float(m.get("baseline_exact_match")) or 0.0)
        clip_cell = (f"<td class=num>{pct(clip[a])}</td>" if clip.get(a) is not None
                     else "<td class=note>not tagged</td>") if with_clip else ""
        rows.append(f"<tr><td>{name}</td><td class=num>{pct(m.get('exact_match'))}</td>"
                    f"<td class=num>{pct(m.get('baseline_exact_match'))}</td>{clip_cell}"
                    f"<td class='num {'up' if delta >= 0 else 'down'}'>{delta * 100:+.1f} pts</td>"
                    f"<td class=num>{pct(m.get('unknown_value_rate'))}</td>"
                    f"<td class=num>{escape(str(m['examples']))}</td></tr>")
    return ("<table><tr><th>Attribute</th><th>Fine-tuned</th><th>Base model</th>"
            + (f"<th>{CLIP_LABEL}</th>" if with_clip else "")
            + "<th>Change</th><th>Unknown values</th><th>Questions</th></tr>" + "".join(rows) + "</table>")


def render_clip_baseline(metrics: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """The CLIP zero-shot section: accuracy, precision and coverage of its stated tags per attribute, and BLIP-2
    on the same questions (empty without a CLIP baseline)."""
    clip = metrics.get(CLIP_KEY)
    if not clip:
        return ""
    per = metrics.get("attributes", {})
    rows = "".join(
        f"<tr><td>{escape(shown_name(name, labels) if name in labels else name)}</td>"
        f"<td class=num>{pct(c['accuracy'])}</td>"
        f"<td class=num>{pct(c['precision'])}</td><td class=num>{pct(c['coverage'])}</td>"
        f"<td class=num>{pct(per.get(name, {}).get('exact_match'))}</td>"
        f"<td class=num>{pct(per.get(name, {}).get('baseline_exact_match'))}</td>"
        f"<td class=num>{escape(str(c['examples']))}</td></tr>"
        for name, c in clip["attributes"].items())
    o = clip["overall"]
    rows += (f"<tr><td><b>All these questions</b></td><td class=num>{pct(o['accuracy'])}</td>"
             f"<td class=num>{pct(o['precision'])}</td><td class=num>{pct(o['coverage'])}</td>"
             f"<td class=num>{pct(o.get('fine_tuned_exact_match'))}</td>"
             f"<td class=num>{pct(o.get('baseline_exact_match'))}</td>"
             f"<td class=num>{escape(str(o['examples']))}</td></tr>")
    untagged = ", ".join(shown_name(a, labels) if a in labels else a for a in clip.get("not_tagged", []))
    return (f"<h2>{CLIP_LABEL} baseline</h2><p>The CLIP model <code>{escape(str(clip.get('model', '?')))}</code> "
            "tagged "
            "the same validation photos with no fine-tuning: accuracy counts its most probable value whether it was "
            "stated or withheld; precision and coverage count only the tags it stated (their probability passed its "
            "calibrated threshold). Where it is close to the fine-tuned model, fine-tuning adds little.</p>"
            f"<table><tr><th>Attribute</th><th>{CLIP_LABEL} accuracy</th><th>Stated precision</th><th>Coverage</th>"
            f"<th>Fine-tuned</th><th>Base model</th><th>Questions</th></tr>{rows}</table>"
            + (f"<p class=note>Not tagged by the CLIP model: {escape(untagged)}.</p>" if untagged else ""))


def render_example(product_id: str, rows: Sequence[Mapping[str, str]], thumbnail: str | None,
                   labels: Mapping[str, str]) -> str:
    misses = sum(not is_true(r["correct"]) for r in rows)
    image = (f"<img src='{escape(thumbnail)}' alt='product {escape(product_id)}'>" if thumbnail
             else "<div class='missing'>image missing</div>")
    lines = "".join(
        f"<tr class='{'match' if ok else 'mismatch'}'><td>{escape(labels.get(r['attribute'], r['attribute']))}</td>"
        f"<td>{escape(r['expected'])}</td><td class='pred'>{'' if ok else '✗ '}{escape(r['predicted'])}</td></tr>"
        for r, ok in ((r, is_true(r["correct"])) for r in rows))
    verdict = "all correct" if not misses else f"{misses} of {len(rows)} wrong"
    return (f"<div class='card {'wrong' if misses else 'right'}'>{image}<div><b>#{escape(product_id)}</b> "
            f"<span class='note'>{verdict}</span><table><tr><th>Attribute</th><th>True</th><th>Predicted</th></tr>"
            f"{lines}</table></div></div>")


def write_report(model_dir: str | Path, images_dir: str | Path, out_dir: str | Path | None = None,
                 examples: int = 12) -> Path:
    """Write report.html and its figures and thumbnails into out_dir (default model_dir/evaluation)."""
    model_dir, images_dir = Path(model_dir), Path(images_dir)
    artifact = ArtifactPaths.of(model_dir)
    out = Path(out_dir) if out_dir is not None else artifact.evaluation
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(model_dir)
    schema = manifest["schema"]
    metrics = read_metrics(model_dir)
    predictions = read_csv(artifact.predictions)
    history = read_csv(artifact.loss_history)
    attributes = list(schema.names)
    attributes += [a for a in dict.fromkeys([*metrics.get("attributes", {}), *(r["attribute"] for r in predictions)])
                   if a not in attributes]
    labels = {a: schema.attributes[a].label if a in schema else a for a in attributes}

    plot_accuracy(metrics, attributes, labels, out / "accuracy.png")
    confusions = []
    for a in attributes:
        rows, title = [r for r in predictions if r["attribute"] == a], escape(shown_name(a, labels))
        if not rows:
            confusions.append(f"<figure><figcaption>{title}</figcaption><p class=note>no validation rows</p></figure>")
            continue
        known = schema.attributes[a].values if a in schema else ()
        png = plot_confusion(*confusion_matrix(rows, known), f"{labels[a]}: {len(rows)} questions",
                             out / f"confusion_{slug(a)}.png")
        confusions.append(f"<figure><img src='{escape(png.name)}' alt='confusion matrix for {title}'>"
                          f"<figcaption>{title}</figcaption></figure>")
    loss_png = plot_loss(history, out / "loss.png")
    loss_html = (f"<img class='fig' src='{loss_png.name}' alt='training loss'>" if loss_png else
                 "<p class=note>No loss history was recorded (evaluation/loss_history.csv is missing or empty).</p>")
    order = {a: i for i, a in enumerate(attributes)}
    cards = []
    for pid in pick_examples(predictions, examples):
        rows = sorted((r for r in predictions if r["id"] == pid), key=lambda r: order[r["attribute"]])
        cards.append(render_example(pid, rows, write_thumbnail(images_dir, pid, out), labels))

    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width,initial-scale=1'><title>{escape(str(manifest.get('name') or model_dir.name))}"
            f" evaluation</title><style>{CSS}</style></head><body>{render_header(manifest, metrics, model_dir)}"
            "<h2>Accuracy per attribute</h2><p>Exact match of the answer on validation products, fine-tuned model "
            "vs the base model asked the same questions.</p><img class='fig' src='accuracy.png' alt='accuracy per "
            f"attribute'>{render_accuracy_table(metrics, attributes, labels)}{render_clip_baseline(metrics, labels)}"
            f"{render_calibration(model_dir, manifest, attributes, labels, out)}"
            "<h2>Confusion matrices</h2><p>Rows are the true values, columns the predicted ones; the 15 most frequent "
            f"values are shown, the rest and unparsable answers are grouped as {OTHER}.</p>"
            f"<div class='grid'>{''.join(confusions)}</div><h2>Training loss</h2>{loss_html}"
            f"<h2>Examples</h2><p>{len(cards)} validation products, partly-wrong ones first; "
            "mismatches are marked ✗.</p>"
            f"<div class='grid'>{''.join(cards) or '<p class=note>No validation predictions.</p>'}</div></body></html>")
    path = out / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loom report", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="model folder (metrics.json, evaluation/, manifest)")
    parser.add_argument("--images", required=True, type=Path, help="folder of <id>.jpg product pictures")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default MODEL/evaluation)")
    parser.add_argument("--examples", type=int, default=12, help="number of example products to show")
    parser.add_argument("--clip-artifact", type=Path, metavar="DIR",
                        help="a CLIP artifact: first score its zero-shot tags on the same validation questions "
                             f"(stored in the model's metrics as {CLIP_KEY}) and show them beside BLIP-2")
    parser.add_argument("--device", help="device for the CLIP model: cpu, cuda or cuda:N (default: cuda if present)")
    args = parser.parse_args(argv)
    # Checked before anything is written: a wrong --model must not leave an evaluation/ folder behind.
    if not (args.model / "metrics.json").is_file():
        return command_error(f"{args.model} is not a model artifact (no metrics.json): give the model folder "
                             "`train` wrote (SM_MODEL_DIR, or model.tar.gz unpacked)")
    if not args.images.is_dir():
        return command_error(f"--images {args.images} is not a folder of <id>.jpg pictures")
    if args.clip_artifact:
        from training.search.clip_baseline import evaluate_clip
        from training.data import DataError

        try:
            evaluate_clip(args.model, args.clip_artifact, args.images, device=args.device)
        except DataError as exc:
            return command_error(str(exc))
    print(write_report(args.model, args.images, args.out, examples=args.examples))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The CLIP zero-shot baseline beside BLIP-2: scoring, tagging each validation photo once, the report's figures,
and the real thing (the trained BLIP-2 artifact's validation questions tagged by the tiny CLIP)."""

from __future__ import annotations

import json
import shutil

import pytest

from loom.artifact import CLIP_BASELINE_METRICS, read_manifest, read_metrics
from training.search import clip_baseline as cb
from training import report
from training.search.clip_baseline import Answer, Question
from training.data import DataError
from training.synthetic import draw_shirt


# (id, attribute, expected, fine-tuned right, base right)
QUESTIONS = [Question("1", "Pattern", "Striped", True, False), Question("2", "Pattern", "Solid", True, True),
             Question("3", "Pattern", "Checked", False, False), Question("4", "Pattern", "Solid", True, False),
             Question("1", "Fabric", "Cotton", False, False), Question("2", "Fabric", "Linen", True, False)]


def test_accuracy_counts_the_top_value_stated_or_withheld_and_precision_only_the_stated():
    answers = {("1", "Pattern"): Answer("Striped", True),    # stated, right
               ("2", "Pattern"): Answer("Solid", False),     # withheld, right: counts for accuracy only
               ("3", "Pattern"): Answer("Solid", True)}      # stated, wrong; product 4 has no answer: wrong
    section = cb.score(QUESTIONS, answers)
    assert section["attributes"] == {"Pattern": {"accuracy": 0.5, "precision": 0.5, "coverage": 0.5,
                                                 "stated": 2, "examples": 4}}
    assert section["not_tagged"] == ["Fabric"]  # CLIP gave no Fabric answer at all: not its attribute
    # overall: the four Pattern questions only, with BLIP-2 on the same four.
    assert section["overall"] == {"accuracy": 0.5, "precision": 0.5, "coverage": 0.5, "stated": 2, "examples": 4,
                                  "fine_tuned_exact_match": 0.75, "baseline_exact_match": 0.25}
    nothing_stated = cb.score(QUESTIONS[:1], {("1", "Pattern"): Answer("Striped", False)}, with_baseline=False)
    assert nothing_stated["attributes"]["Pattern"]["precision"] is None
    assert nothing_stated["overall"]["baseline_exact_match"] is None
    assert cb.score(QUESTIONS, {})["overall"]["examples"] == 0


def test_each_photo_is_decoded_once_and_tagged_in_batches(tmp_path):
    for pid, colour in (("1", "Red"), ("2", "Blue"), ("3", "Green"), ("4", "Black")):
        draw_shirt(colour, "Solid", "Long Sleeves").save(tmp_path / f"{pid}.jpg")
    calls = []

    def tag_images(images, attributes=None, labels=None):
        calls.append([image.size for image in images])
        return [{"tags": {"Pattern": {"value": "Solid", "probability": 0.9}},
                 "withheld": {"Fabric": {"value": "Cotton", "probability": 0.3, "reason": "not_calibrated"}}}
                for _ in images]

    answers = cb.tag_questions(tag_images, QUESTIONS, tmp_path, batch=3)
    assert calls == [[(96, 128)] * 3, [(96, 128)]]  # products 1, 2, 3 then 4; each photo once
    assert answers[("4", "Pattern")] == Answer("Solid", True) and answers[("1", "Fabric")] == Answer("Cotton", False)
    (tmp_path / "3.jpg").unlink()
    with pytest.raises(DataError, match="product 3"):
        cb.tag_questions(tag_images, QUESTIONS, tmp_path)
    draw_shirt("Green", "Solid", "Long Sleeves").save(tmp_path / "3.jpg")
    with pytest.raises(ValueError, match="2 results for 4 photos"):
        cb.tag_questions(lambda images: [{}, {}], QUESTIONS[:4], tmp_path, batch=4)


CLIP_SECTION = {
    "model": "tiny/clip-test", "how": cb.HOW, "seconds": 1.0,
    "attributes": {"baseColour": {"accuracy": 0.6667, "precision": 1.0, "coverage": 0.5, "stated": 3, "examples": 6},
                   "Pattern": {"accuracy": 0.3333, "precision": None, "coverage": 0.0, "stated": 0, "examples": 6}},
    "overall": {"accuracy": 0.5, "precision": 1.0, "coverage": 0.25, "stated": 3, "examples": 12,
                "fine_tuned_exact_match": 0.8333, "baseline_exact_match": 0.0},
    "not_tagged": ["Sleeve Length"],
}


def captured_accuracy_axes(monkeypatch):
    """The Axes of the accuracy figure, kept when the report saves it."""
    kept = {}
    save = report.Figure.savefig

    def savefig(fig, path, *args, **kwargs):
        if str(path).endswith("accuracy.png"):
            kept["ax"] = fig.axes[0]
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(report.Figure, "savefig", savefig)
    return kept


def test_the_report_shows_clip_beside_the_fine_tuned_and_base_figures(model_folder, monkeypatch):  # noqa: F811
    model, images = model_folder
    metrics = read_metrics(model)
    (model / "metrics.json").write_text(json.dumps({**metrics, CLIP_BASELINE_METRICS: CLIP_SECTION}))
    kept = captured_accuracy_axes(monkeypatch)
    page = report.write_report(model, images).read_text(encoding="utf-8")

    # The accuracy table: Colour fine-tuned 83.3%, base 0.0%, CLIP zero-shot 66.7%; Sleeve Length not tagged.
    assert "<th>Fine-tuned</th><th>Base model</th><th>CLIP zero-shot</th><th>Change</th>" in page
    assert ("<tr><td>Colour (baseColour)</td><td class=num>83.3%</td><td class=num>0.0%</td>"
            "<td class=num>66.7%</td>") in page
    assert "<tr><td>Sleeve Length</td><td class=num>83.3%</td><td class=num>0.0%</td><td class=note>not tagged</td>" in page
    assert "<td>Fabric</td><td colspan=6 class='note'>no validation rows</td>" in page
    # The section: precision and coverage of the stated tags, BLIP-2 on the same questions, what CLIP skipped.
    section = page[page.index("<h2>CLIP zero-shot baseline</h2>"):]
    assert "tiny/clip-test" in section
    assert ("<tr><td>Pattern</td><td class=num>33.3%</td><td class=num>n/a</td><td class=num>0.0%</td>"
            "<td class=num>83.3%</td><td class=num>0.0%</td><td class=num>6</td></tr>") in section
    assert "<td class=num>50.0%</td><td class=num>100.0%</td><td class=num>25.0%</td><td class=num>83.3%</td>" in section
    assert "Not tagged by the CLIP model: Sleeve Length." in section
    assert "<b>50.0%</b><span>CLIP zero-shot, the 12 questions it tags</span>" in page

    # The figure: a third series of bars, only where CLIP has a figure (not overall: it skips an attribute).
    ax = kept["ax"]
    assert ax.get_legend_handles_labels()[1] == ["fine-tuned", "base model", "CLIP zero-shot"]
    clip_bars = ax.containers[2]
    assert [round(b.get_height(), 4) for b in clip_bars] == [0.6667, 0.3333]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert [ticks[round(b.get_x() + b.get_width() / 2)] for b in clip_bars] == ["Colour", "Pattern"]


def test_without_a_clip_baseline_the_report_is_unchanged(model_folder, monkeypatch):  # noqa: F811
    model, images = model_folder
    kept = captured_accuracy_axes(monkeypatch)
    page = report.write_report(model, images).read_text(encoding="utf-8")
    assert "CLIP" not in page
    assert ("<table><tr><th>Attribute</th><th>Fine-tuned</th><th>Base model</th><th>Change</th>"
            "<th>Unknown values</th><th>Questions</th></tr>") in page
    assert kept["ax"].get_legend_handles_labels()[1] == ["fine-tuned", "base model"]
    assert [b.get_width() for b in kept["ax"].containers[0]] == [0.4] * 4
    assert CLIP_BASELINE_METRICS not in read_metrics(model)


def test_report_refuses_a_folder_that_is_not_a_clip_artifact(model_folder, tmp_path, capsys):  # noqa: F811
    model, images = model_folder
    before = (model / "metrics.json").read_text()
    assert report.main(["--model", str(model), "--images", str(images), "--clip-artifact", str(model)]) == 2
    err = capsys.readouterr().err
    assert f"--clip-artifact {model}" in err and "kind is 'attributes', not 'clip'" in err
    assert (model / "metrics.json").read_text() == before and not (model / "evaluation" / "report.html").exists()


def test_train_refuses_a_clip_artifact_that_is_not_one_before_training(tmp_path, capsys):
    from training.train import layout_job, main

    for name in ("data", "images"):
        (tmp_path / name).mkdir()
    paths = layout_job(tmp_path / "ml", train=tmp_path / "data", validation=tmp_path / "data",
                       images=tmp_path / "images", hyperparameters={"device": "cpu"})
    assert main(["--sm-root", str(tmp_path / "ml"), "--clip-artifact", str(tmp_path / "nowhere")]) == 2
    failure = paths.failure.read_text()
    assert failure.startswith("DataError: --clip-artifact") and "loom_manifest.json is missing" in failure
    assert "[stage 2/8]" not in capsys.readouterr().out  # refused before any data or model was read


@pytest.mark.slow
def test_loom_report_scores_the_tiny_clip_on_the_trained_artifacts_validation_questions(trained_artifact, tiny_clip,
                                                                                         tmp_path):
    """The real path: the trained tiny BLIP-2 artifact's validation questions, its photos decoded as the server
    decodes them, tagged by the tiny CLIP's ClipService; the section lands in metrics.json and the manifest,
    and the report shows CLIP beside the fine-tuned and base figures."""
    from operations import cli
    from loom.artifact import ArtifactPaths

    model = tmp_path / "model"  # the report needs the manifest, metrics and evaluation, not the weights
    model.mkdir()
    for name in ("loom_manifest.json", "metrics.json"):
        shutil.copy(trained_artifact.model_dir / name, model / name)
    shutil.copytree(ArtifactPaths.of(trained_artifact.model_dir).evaluation, ArtifactPaths.of(model).evaluation)
    images = trained_artifact.catalog_dir / "images"
    assert cli.main(["report", "--model", str(model), "--images", str(images), "--clip-artifact",
                     str(tiny_clip.clip_dir), "--device", "cpu"]) == 0

    metrics = read_metrics(model)
    section = metrics[CLIP_BASELINE_METRICS]
    assert read_manifest(model)["metrics"][CLIP_BASELINE_METRICS] == section
    questions = cb.read_questions(model)
    for name in ("baseColour", "Pattern", "Sleeve Length"):
        clip = section["attributes"][name]
        assert clip["examples"] == sum(q.attribute == name for q in questions) > 0
        assert 0 <= clip["accuracy"] <= 1 and clip["stated"] == round(clip["coverage"] * clip["examples"])
    assert section["attributes"]["baseColour"]["accuracy"] >= 0.9  # the target for colour
    page = (model / "evaluation" / "report.html").read_text(encoding="utf-8")
    fine, base = metrics["attributes"]["Pattern"]["exact_match"], metrics["attributes"]["Pattern"]["baseline_exact_match"]
    clip = section["attributes"]["Pattern"]["accuracy"]
    assert (f"<tr><td>Pattern</td><td class=num>{report.pct(fine)}</td><td class=num>{report.pct(base)}</td>"
            f"<td class=num>{report.pct(clip)}</td>") in page


def test_the_log_table_names_every_figure():
    text = cb.format_section({**CLIP_SECTION, "seconds": 2.5})
    assert text.splitlines()[0] == "CLIP zero-shot baseline (tiny/clip-test)"
    assert text.splitlines()[2].split() == ["baseColour", "6", "0.667", "1.000", "0.500"]
    assert text.splitlines()[3].split() == ["Pattern", "6", "0.333", "-", "0.000"]
    assert "BLIP-2 on the same 12 questions: fine-tuned 0.833, base model 0.000; CLIP took 2.5 s" in text
    assert text.endswith("not tagged by the CLIP artifact: Sleeve Length")

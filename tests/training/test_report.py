"""The evaluation report: confusion counts, example choice, and a full report from a fake model folder."""

from __future__ import annotations


from PIL import Image

from report_fixtures import ATTRIBUTES, MISSING_IMAGE_ID, PRODUCTS, XSS, prediction_rows

from training.report import OTHER, confusion_matrix, main, pick_examples, slug, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"








# --- confusion matrix and example choice ------------------------------------------------------------


def test_confusion_matrix_counts_expected_rows_predicted_columns():
    rows = [
        {"expected": "Red", "predicted": "Red"},
        {"expected": "Red", "predicted": "Red"},
        {"expected": "Red", "predicted": "Blue"},
        {"expected": "Blue", "predicted": "Blue"},
        {"expected": "Blue", "predicted": "Colour is maybe blue"},  # did not parse
        {"expected": "Green", "predicted": "Purple"},  # a known value outside the table
    ]
    labels, counts = confusion_matrix(rows, known_values=["Purple"])
    assert labels == ["Red", "Blue", "Green", OTHER]
    assert counts == [
        [2, 1, 0, 0],
        [0, 1, 0, 1],
        [0, 0, 0, 1],
        [0, 0, 0, 0],
    ]


def test_confusion_matrix_keeps_top_values_and_folds_the_rest_into_other():
    rows = [{"expected": v, "predicted": v} for v in ["A"] * 3 + ["B"] * 2 + ["C", "D"]]
    labels, counts = confusion_matrix(rows, top=2)
    assert labels == ["A", "B", OTHER]
    assert counts == [[3, 0, 0], [0, 2, 0], [0, 0, 2]]
    assert sum(map(sum, counts)) == len(rows)


def test_examples_mix_partly_wrong_and_fully_correct_products_deterministically():
    rows = prediction_rows()
    chosen = pick_examples(rows, 4)
    assert chosen == pick_examples(list(reversed(rows)), 4)
    assert chosen[:2] == ["102", "104"] and set(chosen[2:]) <= {"101", "103", "106"} and len(chosen) == 4
    assert sorted(pick_examples(rows, 50)) == [p[0] for p in PRODUCTS]
    assert slug("Sleeve Length") == "sleeve-length"


# --- the whole report -------------------------------------------------------------------------------


def test_report_writes_figures_and_a_page_with_the_real_content(model_folder):
    model, images = model_folder
    path = write_report(model, images)
    out = model / "evaluation"
    assert path == out / "report.html"

    for name in ["accuracy.png", "loss.png", "confusion_basecolour.png", "confusion_pattern.png",
                 "confusion_sleeve-length.png"]:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, name
        with Image.open(out / name) as image:
            assert image.width > 300 and image.height > 250
    assert not (out / "confusion_fabric.png").exists()

    page = path.read_text(encoding="utf-8")
    for attribute in ATTRIBUTES:
        assert attribute in page
    assert "83.3%" in page and "5.6%" in page  # overall exact match vs baseline, unknown value rate
    assert "loom-report-test" in page and "tiny/blip2-test" in page and "r=8" in page and "120 steps" in page
    fabric_row = page[page.index("<td>Fabric</td>"):]
    assert fabric_row.startswith("<td>Fabric</td><td colspan=5 class='note'>no validation rows</td>")

    for pid, *_ in PRODUCTS:
        assert f"#{pid}" in page
        if pid != MISSING_IMAGE_ID:
            assert f"src='examples/{pid}.jpg'" in page
            with Image.open(out / "examples" / f"{pid}.jpg") as thumb:
                assert max(thumb.size) <= 160
    assert not (out / "examples" / f"{MISSING_IMAGE_ID}.jpg").exists()
    assert "image missing" in page
    assert str(images) not in page  # thumbnails are copied, never linked to the source folder

    # Product 105: colour Pink predicted as Red is marked as a mismatch; its correct rows are not.
    card = page[page.index("#105"):page.index("</table>", page.index("#105"))]
    assert "<tr class='mismatch'><td>Colour</td><td>Pink</td><td class='pred'>✗ Red</td></tr>" in card
    assert "<tr class='match'><td>Pattern</td><td>Striped</td><td class='pred'>Striped</td></tr>" in card
    assert "1 of 3 wrong" in card

    # An unparsable answer holding markup is shown escaped, never as markup.
    assert XSS not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_report_survives_a_missing_loss_history_and_writes_where_told(model_folder, tmp_path, capsys):
    model, images = model_folder
    (model / "evaluation" / "loss_history.csv").unlink()
    out = tmp_path / "elsewhere"
    assert main(["--model", str(model), "--images", str(images), "--out", str(out), "--examples", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "No loss history was recorded" in page
    assert not (out / "loss.png").exists() and (out / "accuracy.png").exists()
    assert page.count("class='card ") == 2


def test_the_demo_prints_the_baseline_beside_the_fine_tuned_figures():
    from operations.demo import format_accuracy

    metrics = {"attributes": {"Pattern": {"exact_match": 1.0, "baseline_exact_match": 0.7719},
                              "Fabric": {"exact_match": 0.175, "baseline_exact_match": None}},
               "overall": {"exact_match": 0.6677, "baseline_exact_match": 0.4116}}
    lines = format_accuracy(metrics).splitlines()
    assert lines[0].split() == ["attribute", "fine-tuned", "baseline"]
    assert lines[1].split() == ["Pattern", "100.0%", "77.2%"]
    assert lines[2].split() == ["Fabric", "17.5%", "-"]
    assert lines[3].split() == ["overall", "66.8%", "41.2%"]

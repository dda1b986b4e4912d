"""VQA preparation: answer format, the split by product, and a damaged catalog end to end."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from loom.schema import DEFAULT_ATTRIBUTES, SCHEMA_FILE, AttributeSchema
from training.catalog import CSV_COLUMNS, SKIP_REASONS, Product
from training.prepare import (
    REPORT_FILE,
    TRAIN_FILE,
    VAL_FILE,
    main,
    prepare,
    split_products,
    vqa_rows,
    write_vqa_csv,
)
from training.synthetic import csv_row, write_catalog

SHIRT_TYPES = ("Shirts", "Tshirts")


def product(pid: int, **attributes: str) -> Product:
    return Product(id=str(pid), article_type="Shirts", attributes=attributes,
                   image_path=Path(f"images/{pid}.jpg"), display_name=f"Shirt {pid}")


def read_vqa(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["id", "Question", "Answer"]
        return list(reader)


# --- answer format ------------------------------------------------------------------------------------


def test_one_row_per_present_attribute_in_schema_order():
    schema = AttributeSchema.from_names(["Sleeve Length", "baseColour", "Fabric"])
    rows = vqa_rows([product(5, baseColour="Navy Blue", **{"Sleeve Length": "Long Sleeves"})], schema)
    assert rows == [
        ("5", "What is the sleeve length of the shirt in this picture?", "Sleeve Length: Long Sleeves"),
        ("5", "What is the colour of the shirt in this picture?", "Colour: Navy Blue"),
    ]
    # The answers parse back with the schema, which is what evaluation and the server do.
    assert [schema.parse_answer(a) for _, _, a in rows] == [("Sleeve Length", "Long Sleeves"),
                                                           ("baseColour", "Navy Blue")]


def test_vqa_csv_round_trips_values_with_commas_and_quotes(tmp_path):
    rows = [("1", "What is the fit of the shirt in this picture?", 'Fit: Slim, "tailored"')]
    assert write_vqa_csv(tmp_path / "x.csv", rows) == 1
    assert [tuple(r.values()) for r in read_vqa(tmp_path / "x.csv")] == rows


# --- the split ----------------------------------------------------------------------------------------


def many_products(n: int = 500) -> list[Product]:
    colours = ["Red", "Blue", "Green", "Black"]
    return [product(1000 + i, baseColour=colours[i % 4], Pattern=("Solid", "Striped")[i % 2]) for i in range(n)]


def test_split_is_by_product_without_leakage():
    products = many_products()
    train, val = split_products(products, 0.2, seed=1)
    train_ids, val_ids = {p.id for p in train}, {p.id for p in val}
    assert not train_ids & val_ids
    assert train_ids | val_ids == {p.id for p in products}
    assert len(val) == 100
    assert [p.id for p in train] == sorted((p.id for p in train), key=int)


def test_split_is_deterministic_and_independent_of_input_order():
    products = many_products()
    first = split_products(products, 0.25, seed=7)
    again = split_products(list(reversed(products)), 0.25, seed=7)
    assert [[p.id for p in part] for part in first] == [[p.id for p in part] for part in again]
    other = split_products(products, 0.25, seed=8)
    assert {p.id for p in other[1]} != {p.id for p in first[1]}


def test_rare_values_stay_in_train():
    products = many_products(100) + [product(1, baseColour="Mauve"), product(2, baseColour="Teal"),
                                     product(3, baseColour="Teal", Pattern="Paisley")]
    for seed in range(20):
        train, val = split_products(products, 0.5, seed=seed)
        in_train = Counter(v for p in train for v in p.attributes.values())
        for value in ("Mauve", "Teal", "Paisley", "Red", "Solid"):
            assert in_train[value] >= 1, (seed, value)
        assert "1" not in {p.id for p in val}  # a value seen once is never in validation


def test_split_edges():
    assert split_products([], 0.2) == ([], [])
    assert split_products(many_products(10), 0.0)[1] == []
    with pytest.raises(ValueError, match="val_fraction"):
        split_products(many_products(10), 1.0)


# --- a damaged catalog, end to end --------------------------------------------------------------------


def damaged_catalog(root: Path) -> dict:
    """A synthetic catalog with one of each kind of damage; returns what the report must say."""
    items = write_catalog(root, 60, seed=11, image_size=(32, 32), comma_share=0.0)
    shirts = [p for p in items if p.article_type in SHIRT_TYPES]
    others = [p for p in items if p.article_type not in SHIRT_TYPES]
    assert len(shirts) >= 12 and others
    recovered, dup, no_json, bad_json, no_data, no_image, empty_image, cut_image, all_na, some_na = shirts[:10]
    lines = (root / "styles.csv").read_text(encoding="utf-8").splitlines()
    row_of = {p.id: i + 1 for i, p in enumerate(items)}

    lines[row_of[recovered.id]] = csv_row(recovered, comma_in_name=True)  # "..., Pack of 1": recovered
    all_na.colour = "NA"
    lines[row_of[all_na.id]] = csv_row(all_na, comma_in_name=False)       # no colour in the CSV either
    lines += [
        "",                                                                   # blank line: not a row
        "90001,Men,Apparel,Topwear,Shirts,Red,Summer, Fall,2012,Casual,Ambiguous Shirt",  # comma in the season
        "90002,Men,Apparel,Topwear",                                          # too few fields
        "9x003,Men,Apparel,Topwear,Shirts,Red,Summer,2012,Casual,Bad Id Shirt",  # id not a number
        lines[row_of[dup.id]],                                                # duplicate id
    ]
    (root / "styles.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    styles, images = root / "styles", root / "images"
    (styles / f"{no_json.id}.json").unlink()
    (styles / f"{bad_json.id}.json").write_text('{"data": {"baseColour": "Red"', encoding="utf-8")
    (styles / f"{no_data.id}.json").write_text('{"meta": {"code": 200}}', encoding="utf-8")
    (images / f"{no_image.id}.jpg").unlink()
    (images / f"{empty_image.id}.jpg").write_bytes(b"")
    data = (images / f"{cut_image.id}.jpg").read_bytes()
    scan = data.index(b"\xff\xda")  # cut inside the pixel data: the headers still open fine
    (images / f"{cut_image.id}.jpg").write_bytes(data[: (scan + len(data)) // 2])
    document = json.loads((styles / f"{all_na.id}.json").read_text())
    document["data"]["baseColour"] = "NA"
    document["data"]["articleAttributes"] = {"Body or Garment Size": "Garment Measurements in",
                                             **{k: "NA" for k in all_na.attributes}, "Fabric": ""}
    (styles / f"{all_na.id}.json").write_text(json.dumps(document), encoding="utf-8")
    document = json.loads((styles / f"{some_na.id}.json").read_text())
    document["data"]["articleAttributes"].update({"Fabric": "NA", "Fit": " ", "Pattern": " na "})
    (styles / f"{some_na.id}.json").write_text(json.dumps(document), encoding="utf-8")
    some_na.attributes.update({"Fabric": "NA", "Fit": "NA", "Pattern": "NA"})

    lost_ids = {p.id for p in (no_json, bad_json, no_data, no_image, empty_image, cut_image, all_na)}
    kept = [p for p in shirts if p.id not in lost_ids]
    expected_values = {
        str(p.id): {k: v for k, v in {**p.attributes, "baseColour": p.colour}.items() if v != "NA"}
        for p in kept
    }
    return {
        "read": len(items) + 4,
        "kept": len(kept),
        "skipped": {
            "malformed_row": 3, "duplicate_id": 1, "filtered_article_type": len(others), "missing_json": 1,
            "bad_json": 2, "no_attributes": 1, "missing_image": 1, "unreadable_image": 2,
        },
        "recovered_rows": 1,
        "values": expected_values,
        "recovered_id": str(recovered.id),
        "some_na_id": str(some_na.id),
    }


def split_counts(rows: list[dict[str, str]]) -> dict:
    per_value: dict[str, Counter] = {}
    for row in rows:
        label, _, value = row["Answer"].partition(": ")
        per_value.setdefault(label, Counter())[value] += 1
    return per_value


def test_prepare_on_a_damaged_catalog_counts_everything(tmp_path, capsys):
    expected = damaged_catalog(tmp_path / "catalog")
    out = tmp_path / "out"
    # Without the product-type question (tests/training/test_applicability.py covers it), rows are the attributes'.
    assert main(["--catalog", str(tmp_path / "catalog"), "--out", str(out), "--seed", "3", "--no-product-type"]) == 0

    report = json.loads((out / REPORT_FILE).read_text())
    products = report["products"]
    assert products["read"] == expected["read"]
    assert products["kept"] == expected["kept"]
    assert products["skipped"] == expected["skipped"]
    assert list(products["skipped"]) == list(SKIP_REASONS)
    assert products["skipped_total"] == sum(expected["skipped"].values())
    assert products["read"] == products["kept"] + products["skipped_total"]
    assert products["recovered_rows"] == expected["recovered_rows"]
    assert {r for r, examples in report["skipped_examples"].items() if examples} == set(SKIP_REASONS)
    malformed = report["skipped_examples"]["malformed_row"]
    assert [(e["id"], e["line"]) for e in malformed] == [("90001", 63), ("90002", 64), ("9x003", 65)]
    assert "year is 'Fall'" in malformed[0]["detail"] and "4 fields" in malformed[1]["detail"]
    assert "not a number" in malformed[2]["detail"]
    assert report["settings"] == {"article_types": list(SHIRT_TYPES), "attributes": list(DEFAULT_ATTRIBUTES),
                                  "val_fraction": 0.2, "seed": 3, "product_type_question": False}

    train_rows, val_rows = read_vqa(out / TRAIN_FILE), read_vqa(out / VAL_FILE)
    train_ids, val_ids = {r["id"] for r in train_rows}, {r["id"] for r in val_rows}
    assert not train_ids & val_ids
    assert train_ids | val_ids == set(expected["values"])
    assert expected["recovered_id"] in train_ids | val_ids
    assert len(val_ids) == round(0.2 * expected["kept"])

    schema = AttributeSchema.load(out / SCHEMA_FILE)
    assert schema.names == list(DEFAULT_ATTRIBUTES)
    # Every row is one present attribute of one kept product, with the schema's question.
    for rows in (train_rows, val_rows):
        for row in rows:
            name, value = schema.parse_answer(row["Answer"])
            assert row["Question"] == schema.question(name)
            assert expected["values"][row["id"]][name] == value
    some_na = {schema.parse_answer(r["Answer"])[0] for r in train_rows + val_rows if r["id"] == expected["some_na_id"]}
    assert some_na and not some_na & {"Fabric", "Fit", "Pattern"}

    for key, ids, rows in (("train", train_ids, train_rows), ("validation", val_ids, val_rows)):
        split = report["splits"][key]
        truth: dict[str, Counter] = {name: Counter() for name in DEFAULT_ATTRIBUTES}
        for pid in ids:
            for name, value in expected["values"][pid].items():
                truth[name][value] += 1
        assert split["products"] == len(ids)
        assert split["examples"] == len(rows) == sum(len(expected["values"][pid]) for pid in ids)
        assert split["per_attribute"] == {name: sum(c.values()) for name, c in truth.items()}
        assert split["per_value"] == {name: dict(c) for name, c in truth.items()}
        labelled = split_counts(rows)
        assert {schema.parse_answer(f"{label}: x")[0]: dict(c) for label, c in labelled.items()} == \
            {name: v for name, v in split["per_value"].items() if v}
    # Known values in the schema are the training counts; every validation value is known.
    assert {n: a.values for n, a in schema.attributes.items()} == report["splits"]["train"]["per_value"]
    for name, values in report["splits"]["validation"]["per_value"].items():
        assert set(values) <= set(schema.attributes[name].values)

    summary = capsys.readouterr().out
    assert f"kept {expected['kept']}" in summary and "malformed_row 3" in summary and "unreadable_image 2" in summary


def test_prepare_is_deterministic_and_honours_options(tmp_path):
    write_catalog(tmp_path / "catalog", 80, seed=2, image_size=(32, 32))
    kwargs = dict(article_types=["Tshirts"], attributes=["Neck", "baseColour"], val_fraction=0.3, seed=5)
    first = prepare(tmp_path / "catalog", tmp_path / "a", **kwargs, progress=False)
    second = prepare(tmp_path / "catalog", tmp_path / "b", **kwargs, progress=False)
    for name in (TRAIN_FILE, VAL_FILE, SCHEMA_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first["splits"] == second["splits"]
    assert AttributeSchema.load(tmp_path / "a").names == ["Neck", "baseColour"]
    answers = {r["Answer"].split(": ")[0] for r in read_vqa(tmp_path / "a" / TRAIN_FILE)}
    assert answers == {"Neck", "Colour"}
    assert first["products"]["skipped"]["filtered_article_type"] == 80 - first["products"]["kept"]


def test_cli_refuses_a_folder_that_is_not_a_catalog(tmp_path):
    result = subprocess.run([sys.executable, "-m", "training.prepare", "--catalog", str(tmp_path),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "not a catalog" in result.stderr and "styles.csv" in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_fails_when_nothing_is_usable(tmp_path, capsys):
    (tmp_path / "styles").mkdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "styles.csv").write_text(",".join(CSV_COLUMNS) + "\n1,Men,Apparel,Topwear,Shirts\n")
    assert main(["--catalog", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "no usable product" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / REPORT_FILE).read_text())["products"]["skipped"]["malformed_row"] == 1


def test_cli_rejects_bad_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--catalog", str(tmp_path), "--out", str(tmp_path / "o"), "--val-fraction", "1.5"])
    assert exc.value.code == 2
    assert main(["--catalog", str(tmp_path), "--out", str(tmp_path / "o"), "--attributes", "Fit,Fit"]) == 2
    assert "appears twice" in capsys.readouterr().err

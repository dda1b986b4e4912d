"""Reading a catalog: styles.csv recovery, NA handling, image checks, skip reasons."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from training.catalog import (
    CSV_COLUMNS,
    SKIP_REASONS,
    CatalogError,
    check_catalog,
    image_problem,
    product_attributes,
    read_catalog,
    read_styles,
    styles_row,
)
from training.synthetic import draw_shirt, write_catalog

HEADER = ",".join(CSV_COLUMNS)


def fields(line: str) -> list[str]:
    return line.split(",")


# --- styles.csv rows --------------------------------------------------------------------------------


def test_well_formed_row_maps_every_column():
    row = styles_row(fields("15970,Men,Apparel,Topwear,Shirts,Navy Blue,Fall,2011,Casual,Turtle Check Men Navy Blue Shirt"))[0]
    assert row == {
        "id": "15970", "gender": "Men", "masterCategory": "Apparel", "subCategory": "Topwear",
        "articleType": "Shirts", "baseColour": "Navy Blue", "season": "Fall", "year": "2011",
        "usage": "Casual", "productDisplayName": "Turtle Check Men Navy Blue Shirt",
    }


@pytest.mark.parametrize("name", ["Basics Men Red Shirt, Pack of 2", "A, B, C shirt", "Shirt,"])
def test_unquoted_commas_in_the_name_are_recovered(name):
    row = styles_row(fields(f"1,Men,Apparel,Topwear,Shirts,Red,Summer,2012,Casual,{name}"))[0]
    assert row is not None
    assert row["productDisplayName"] == name
    assert row["usage"] == "Casual" and row["year"] == "2012"


def test_recovery_accepts_an_empty_year():
    row = styles_row(fields("7,Women,Apparel,Topwear,Tshirts,Blue,Summer,,Casual,Blue Tee, Pack of 3"))[0]
    assert row is not None and row["year"] == "" and row["productDisplayName"] == "Blue Tee, Pack of 3"


@pytest.mark.parametrize("line", [
    # A comma in the season shifts every later field: "Fall" lands where the year belongs.
    "2,Men,Apparel,Topwear,Shirts,Red,Summer, Fall,2012,Casual,Red Shirt",
    # A comma in the colour: the year position holds "Summer".
    "3,Men,Apparel,Topwear,Shirts,Red, White,Summer,2012,Casual,Red Shirt",
    # Too few fields.
    "4,Men,Apparel,Topwear,Shirts",
    # An id that is not a number (even with the right number of fields).
    "abc,Men,Apparel,Topwear,Shirts,Red,Summer,2012,Casual,Red Shirt",
    "",
])
def test_ambiguous_or_short_rows_are_not_recovered(line):
    assert styles_row(fields(line) if line else [])[0] is None


def test_read_styles_handles_quotes_bom_and_blank_lines(tmp_path):
    csv_path = tmp_path / "styles.csv"
    csv_path.write_text(
        "\ufeff" + HEADER + "\n"
        '1,Men,Apparel,Topwear,Shirts,Red,Summer,2012,Casual,"Quoted, with comma"\n'
        "\n"
        '2,Men,Apparel,Topwear,Shirts,Red,Summer,2012,Casual,"Stray quote never closed\n'
        "3,Men,Apparel,Topwear,Shirts,Red,Summer,2012,Casual,Plain\r\n",
        encoding="utf-8",
    )
    rows = list(read_styles(csv_path))
    assert [(line, row["id"], why) for line, _, row, why in rows] == [(2, "1", ""), (4, "2", ""), (5, "3", "")]
    assert rows[0][2]["productDisplayName"] == "Quoted, with comma"
    assert rows[2][2]["productDisplayName"] == "Plain"  # the stray quote did not swallow this row


def test_a_header_without_the_catalog_columns_is_a_catalog_error(tmp_path):
    (tmp_path / "styles.csv").write_text("id,name\n1,x\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="header lacks column"):
        list(read_styles(tmp_path / "styles.csv"))


# --- NA handling --------------------------------------------------------------------------------------


def test_absent_values_are_dropped_and_present_ones_cleaned():
    document = {"data": {
        "baseColour": "NA",
        "articleAttributes": {
            "Fabric": "NA", "Fit": "", "Collar": None, "Pattern": "  Striped  ", "Neck": " na ",
            "Sleeve Length": "Long   Sleeves", "Sleeve Styling": "N/A",
        },
    }}
    row = {"baseColour": ""}
    names = ["Fabric", "Fit", "Collar", "Pattern", "Neck", "Sleeve Length", "Sleeve Styling", "baseColour"]
    assert product_attributes(document, row, names) == {"Pattern": "Striped", "Sleeve Length": "Long Sleeves"}


def test_colour_comes_from_the_json_then_from_the_csv():
    names = ["baseColour"]
    assert product_attributes({"data": {"baseColour": "Red"}}, {"baseColour": "Blue"}, names) == {"baseColour": "Red"}
    assert product_attributes({"data": {"baseColour": "NA"}}, {"baseColour": "Blue"}, names) == {"baseColour": "Blue"}
    assert product_attributes({"data": {}}, {"baseColour": "NA"}, names) == {}


def test_non_text_values_and_odd_shapes_are_absent():
    document = {"data": {"articleAttributes": ["not", "a", "dict"], "Fit": {"nested": 1}, "Fabric": True}}
    assert product_attributes(document, {}, ["Fit", "Fabric", "Collar"]) == {}


def test_without_names_every_article_attribute_and_the_colour_are_read():
    document = {"data": {"baseColour": "Red", "articleAttributes": {"Fit": "Slim Fit", "Fabric": "NA"}}}
    assert product_attributes(document, {}, None) == {"Fit": "Slim Fit", "baseColour": "Red"}


# --- images -------------------------------------------------------------------------------------------


def _jpeg(path: Path) -> bytes:
    draw_shirt("Red", "Striped", "Long Sleeves", (32, 48)).save(path, quality=90)
    return path.read_bytes()


def test_image_checks(tmp_path):
    good = tmp_path / "good.jpg"
    data = _jpeg(good)
    assert image_problem(good) is None
    (tmp_path / "padded.jpg").write_bytes(data + b"\x00\x00")
    assert image_problem(tmp_path / "padded.jpg") is None
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert image_problem(tmp_path / "empty.jpg") == "the image is empty"
    (tmp_path / "text.jpg").write_text("not an image")
    assert "neither a JPEG nor a PNG" in image_problem(tmp_path / "text.jpg")
    scan = data.index(b"\xff\xda")
    (tmp_path / "cut.jpg").write_bytes(data[: (scan + len(data)) // 2])  # PIL still opens it
    with Image.open(tmp_path / "cut.jpg") as opened:
        assert opened.size == (32, 48)
    assert image_problem(tmp_path / "cut.jpg") == "the JPEG is truncated: no end-of-image marker"
    (tmp_path / "header-only.jpg").write_bytes(data[:40])
    assert image_problem(tmp_path / "header-only.jpg") is not None
    png = tmp_path / "good.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(png)
    assert image_problem(png) is None
    (tmp_path / "cut.png").write_bytes(png.read_bytes()[:-20])
    assert image_problem(tmp_path / "cut.png") is not None


# --- whole catalogs -----------------------------------------------------------------------------------


def test_a_folder_that_is_not_a_catalog_is_refused(tmp_path):
    with pytest.raises(CatalogError, match="no such folder"):
        check_catalog(tmp_path / "nowhere")
    with pytest.raises(CatalogError, match="missing styles.csv"):
        read_catalog(tmp_path)
    (tmp_path / "styles.csv").write_text(HEADER + "\n")
    (tmp_path / "styles").mkdir()
    with pytest.raises(CatalogError, match=r"missing images/"):
        read_catalog(tmp_path)


def test_read_catalog_returns_products_with_the_contract_fields(tmp_path):
    items = write_catalog(tmp_path, 30, seed=3, image_size=(32, 32), comma_share=0.0)
    reading = read_catalog(tmp_path, progress=False)
    shirts = [p for p in items if p.article_type in ("Shirts", "Tshirts")]
    assert [p.id for p in reading.products] == [str(p.id) for p in shirts]
    assert reading.rows_read == 30
    assert reading.skipped == {**dict.fromkeys(SKIP_REASONS, 0), "filtered_article_type": 30 - len(shirts)}
    for product, item in zip(reading.products, shirts):
        expected = {k: v for k, v in item.attributes.items() if v != "NA"} | {"baseColour": item.colour}
        assert product.attributes == expected
        assert product.article_type == item.article_type
        assert product.image_path == tmp_path / "images" / f"{item.id}.jpg"
        assert product.display_name == item.display_name


def test_filters_are_configurable(tmp_path):
    items = write_catalog(tmp_path, 30, seed=3, image_size=(32, 32), comma_share=0.0)
    everything = read_catalog(tmp_path, article_types=None, attributes=["baseColour"], progress=False)
    assert len(everything.products) == 30
    assert all(set(p.attributes) == {"baseColour"} for p in everything.products)
    tees = read_catalog(tmp_path, article_types=["Tshirts"], attributes=["Collar"], progress=False)
    # Tshirts carry a Neck, not a Collar, in the synthetic catalog: without a value they are skipped...
    assert tees.products == []
    assert tees.skipped["no_attributes"] == sum(p.article_type == "Tshirts" for p in items)
    # ...unless the caller (inference on a catalog) does not need attribute values.
    kept = read_catalog(tmp_path, article_types=["Tshirts"], attributes=["Collar"], require_attributes=False,
                        progress=False)
    assert len(kept.products) == tees.skipped["no_attributes"]


def test_recovered_rows_keep_the_whole_name(tmp_path):
    write_catalog(tmp_path, 5, seed=0, image_size=(32, 32), comma_share=1.0)
    reading = read_catalog(tmp_path, article_types=None, attributes=["baseColour"], progress=False)
    assert reading.recovered_rows == 5 and len(reading.products) == 5
    assert all(p.display_name.endswith(", Pack of 1") for p in reading.products)

"""Face-set loaders and stratified sampling, on tiny fixtures made here (image reading: test_hostile_inputs)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audit.core.records import AttributeSpec, FaceItem, FaceSet
from audit.facesets import FORMATS, LoadedFaceSet, load_faceset, vocabulary
from audit.facesets.fairface import AGE_BINS, RACE7, age_bin
from audit.facesets.utkface import parse_name
from audit.run.sampling import rank_key, stratified_sample
from pulse_engine.errors import PulseAuditError


def write_face(path: Path, size: int = 16, mode: str = "RGB", seed: int = 0) -> Path:
    """A small random-ish face stand-in; format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB").convert(mode).save(path)
    return path


# ---- FairFace --------------------------------------------------------------------------------

FAIRFACE_VAL = [
    ("val/1.jpg", "20-29", "Male", "White"),
    ("val/2.jpg", "more than 70", "Female", "East Asian"),
    ("val/3.jpg", "3-9", "Female", "Southeast Asian"),
    ("val/4.jpg", "40-49", "Male", "Latino_Hispanic"),
    ("val/5.jpg", "0-2", "Female", "Middle Eastern"),
    ("val/6.jpg", "30-39", "Male", "Indian"),
    ("val/7.jpg", "50-59", "Female", "Black"),
]


def make_fairface(root: Path, val=FAIRFACE_VAL, train=(("train/1.jpg", "10-19", "Male", "White"),)) -> Path:
    for name, rows in (("val", val), ("train", train)):
        lines = ["file,age,gender,race,service_test"] + [f"{f},{a},{g},{r},True" for f, a, g, r in rows]
        (root / f"fairface_label_{name}.csv").write_text("\n".join(lines) + "\n")
        for i, row in enumerate(rows):
            write_face(root / row[0], seed=i)
    return root


def test_fairface_labels_vocabularies_and_race4(tmp_path):
    faceset = load_faceset(f"fairface:{make_fairface(tmp_path)}")
    assert isinstance(faceset, LoadedFaceSet) and faceset.options == {"split": "val"}
    assert [i.item_id for i in faceset.items] == [row[0] for row in FAIRFACE_VAL]
    assert faceset.items[0].path == tmp_path / "val/1.jpg" and faceset.items[0].path.is_file()
    assert faceset.attributes["race"].values == RACE7
    assert faceset.attributes["age"].values == AGE_BINS and len(AGE_BINS) == 9
    assert faceset.attributes["race4"].values == ("White", "Black", "Asian", "Indian")
    assert all(spec.source == "annotated" for spec in faceset.attributes.values())
    assert "derived" in faceset.attributes["race4"].notes
    race4 = {i.labels["race"]: i.labels["race4"] for i in faceset.items}
    assert race4 == {"White": "White", "East Asian": "Asian", "Southeast Asian": "Asian", "Latino_Hispanic": "",
                     "Middle Eastern": "", "Indian": "Indian", "Black": "Black"}
    assert faceset.items[1].labels == {"race": "East Asian", "gender": "Female", "age": "more than 70",
                                       "race4": "Asian"}
    assert "CC BY 4.0" in faceset.licence and "FairFace" in faceset.citation
    assert faceset.card is not None and faceset.card.name == "README.md"


def test_fairface_splits(tmp_path):
    make_fairface(tmp_path)
    assert [i.item_id for i in load_faceset(f"fairface:{tmp_path}", split="train").items] == ["train/1.jpg"]
    assert len(load_faceset(f"fairface:{tmp_path}", split="both").items) == 8
    with pytest.raises(PulseAuditError, match="unknown FairFace split 'test'; valid: val, train, both"):
        load_faceset(f"fairface:{tmp_path}", split="test")
    (tmp_path / "fairface_label_train.csv").unlink()
    with pytest.raises(PulseAuditError, match=r"fairface_label_train.csv not found \(found: fairface_label_val"):
        load_faceset(f"fairface:{tmp_path}", split="train")


def test_fairface_unknown_label_names_line_and_valid_values(tmp_path):
    rows = FAIRFACE_VAL[:2] + [("val/3.jpg", "20-29", "Male", "Hispanic")]
    make_fairface(tmp_path, val=rows)
    with pytest.raises(PulseAuditError) as info:
        load_faceset(f"fairface:{tmp_path}")
    message = str(info.value)
    assert "\n" not in message
    assert "fairface_label_val.csv line 4: unknown race value 'Hispanic'; valid: 'White', 'Black', " \
           "'Latino_Hispanic', 'East Asian', 'Southeast Asian', 'Indian', 'Middle Eastern'" in message
    make_fairface(tmp_path, val=[("val/1.jpg", "70+", "Male", "White")])
    with pytest.raises(PulseAuditError, match=r"line 2: unknown age value '70\+'; valid: '0-2'.*'more than 70'"):
        load_faceset(f"fairface:{tmp_path}")


def test_fairface_wrong_root_and_duplicates(tmp_path):
    make_fairface(tmp_path)
    for path in (tmp_path / "val").iterdir():
        path.unlink()
    with pytest.raises(PulseAuditError, match="images not found"):
        load_faceset(f"fairface:{tmp_path}")
    make_fairface(tmp_path, val=FAIRFACE_VAL[:2] + FAIRFACE_VAL[:1])
    with pytest.raises(PulseAuditError, match="line 4: 'val/1.jpg' is already listed at .* line 2"):
        load_faceset(f"fairface:{tmp_path}")


def test_age_bins():
    assert [age_bin(y) for y in (0, 2, 3, 9, 10, 19, 20, 69, 70, 116)] == [
        "0-2", "0-2", "3-9", "3-9", "10-19", "10-19", "20-29", "60-69", "more than 70", "more than 70"]


# ---- UTKFace ---------------------------------------------------------------------------------

def test_utkface_names_and_malformed_files(tmp_path):
    good = ["25_0_0_20170116174525125.jpg.chip.jpg", "1_1_2_20161219140623097.jpg",
            "75_1_4_20170109150557335.jpg.chip.jpg", "sub/40_0_3_20170119171121343.png"]
    bad = {"39_1_20170116174525125.jpg.chip.jpg": "has 3 underscore-separated fields",
           "61_1_5_20170109142408075.jpg": "race field '5' is not one of 0-4",
           "x_0_0_20170109142408075.jpg": "age field 'x'",
           "30_2_0_20170109142408075.jpg": "gender field '2'"}
    for i, name in enumerate(good + list(bad)):
        write_face(tmp_path / name, seed=i)
    (tmp_path / "notes.txt").write_text("not an image")
    faceset = load_faceset(f"utkface:{tmp_path}")
    labels = {i.item_id: i.labels for i in faceset.items}
    assert set(labels) == set(good)
    assert labels[good[0]] == {"age_years": "25", "age": "20-29", "gender": "Male", "race": "White"}
    assert labels[good[1]] == {"age_years": "1", "age": "0-2", "gender": "Female", "race": "Asian"}
    assert labels[good[2]]["age"] == "more than 70" and labels[good[2]]["race"] == "Others"
    assert labels[good[3]]["race"] == "Indian"
    assert faceset.attributes["race"].values == ("White", "Black", "Asian", "Indian", "Others")
    assert faceset.attributes["age_years"].values == ("1", "25", "40", "75")  # numeric order
    assert faceset.attributes["age"].values == AGE_BINS
    assert {s.item_id: s.reason for s in faceset.skipped}.keys() == bad.keys()
    for skipped in faceset.skipped:
        assert bad[skipped.item_id] in skipped.reason and skipped.path.is_file()
    assert "non-commercial" in faceset.licence


def test_utkface_parse_name_field_count():
    reason = "file name has 3 underscore-separated fields, expected age_gender_race_datetime"
    assert parse_name("20_0_1.jpg") == ({}, reason)
    assert parse_name("121_0_1_2017.jpg")[1] == "age field '121' is not a whole number of years in 0-120"
    assert parse_name("7_0_1_2017x.jpg")[1].startswith("date-time field '2017x'")


def test_utkface_all_malformed_is_an_error(tmp_path):
    write_face(tmp_path / "portrait.jpg")
    with pytest.raises(PulseAuditError, match="no image under .* has a UTKFace name, e.g. portrait.jpg"):
        load_faceset(f"utkface:{tmp_path}")


# ---- CelebA ----------------------------------------------------------------------------------

CELEBA_NAMES = ["5_o_Clock_Shadow", "Male", "Pale_Skin", "Young"]


def write_celeba_attrs(path: Path, rows: list[str], count: int | None = None) -> None:
    text = f"{len(rows) if count is None else count}\n{' '.join(CELEBA_NAMES)} \n" + "\n".join(rows) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_celeba_parsing(tmp_path):
    rows = ["000001.jpg -1  1 -1  1", "000002.jpg  1 -1  1 -1", "000003.jpg -1 -1 -1  1"]
    write_celeba_attrs(tmp_path / "Anno" / "list_attr_celeba.txt", rows)
    for i in range(1, 4):
        write_face(tmp_path / "img_align_celeba" / f"{i:06d}.jpg", seed=i)
    faceset = load_faceset(f"celeba:{tmp_path}")
    assert faceset.name == "celeba" and faceset.options["images"] == "img_align_celeba"
    assert set(faceset.attributes) == {"5_o_Clock_Shadow", "gender", "Pale_Skin", "Young"}
    assert faceset.attributes["gender"].values == ("Male", "Female")
    assert faceset.attributes["Young"].values == ("yes", "no")
    assert all(spec.source == "annotated" for spec in faceset.attributes.values())
    first, second = faceset.items[:2]
    assert first.item_id == "000001.jpg" and first.path == tmp_path / "img_align_celeba" / "000001.jpg"
    assert first.labels == {"5_o_Clock_Shadow": "no", "gender": "Male", "Pale_Skin": "no", "Young": "yes"}
    assert second.labels == {"5_o_Clock_Shadow": "yes", "gender": "Female", "Pale_Skin": "yes", "Young": "no"}


def test_celeba_hq_layout_and_errors(tmp_path):
    write_celeba_attrs(tmp_path / "CelebAMask-HQ-attribute-anno.txt", ["0.jpg 1 1 1 1", "1.jpg -1 -1 -1 -1"])
    write_face(tmp_path / "CelebA-HQ-img" / "0.jpg")
    faceset = load_faceset(f"celeba:{tmp_path}")
    assert faceset.name == "celeba-hq" and len(faceset.items) == 2
    write_celeba_attrs(tmp_path / "CelebAMask-HQ-attribute-anno.txt", ["0.jpg 1 1 1 1", "1.jpg -1 0 -1 -1"])
    with pytest.raises(PulseAuditError, match=r"line 4: unknown Male value '0'; valid: '1', '-1'"):
        load_faceset(f"celeba:{tmp_path}")
    write_celeba_attrs(tmp_path / "CelebAMask-HQ-attribute-anno.txt", ["0.jpg 1 1 1 1", "1.jpg -1 -1"])
    with pytest.raises(PulseAuditError, match="line 4: 2 values, expected 4"):
        load_faceset(f"celeba:{tmp_path}")
    write_celeba_attrs(tmp_path / "CelebAMask-HQ-attribute-anno.txt", ["0.jpg 1 1 1 1"], count=30000)
    with pytest.raises(PulseAuditError, match="line 1: says 30000 images but 1 are listed"):
        load_faceset(f"celeba:{tmp_path}")
    with pytest.raises(PulseAuditError, match="no attribute file"):
        load_faceset(f"celeba:{tmp_path / 'CelebA-HQ-img'}")


# ---- folder ----------------------------------------------------------------------------------

def test_folder_manifest_inferred(tmp_path):
    for i in range(4):
        write_face(tmp_path / "img" / f"{i}.png", seed=i)
    (tmp_path / "manifest.csv").write_text(
        "\ufeffpath,skin,age\nimg/0.png,dark,30\nimg/1.png,light,9\nimg/2.png,dark,100\nimg/3.png,,\n")
    faceset = load_faceset(f"folder:{tmp_path}")
    assert faceset.name == tmp_path.name and faceset.root == tmp_path
    assert faceset.attributes["skin"].values == ("dark", "light")
    assert faceset.attributes["age"].values == ("9", "30", "100")
    assert faceset.attributes["skin"].source == "annotated"
    assert faceset.items[3].labels == {"skin": "", "age": ""} and faceset.items[0].path.is_file()
    predicted = load_faceset(f"folder:{tmp_path / 'manifest.csv'}", labels_source="predicted")
    assert predicted.attributes["skin"].source == "predicted"
    assert faceset.card is not None and faceset.card.parent.name == "folder"


def test_folder_sidecar(tmp_path):
    write_face(tmp_path / "a.png")
    (tmp_path / "faces.csv").write_text("path,race,gender\na.png,Black,Female\nb.png,White,Male\n")
    sidecar = {"name": "mine", "licence": "CC0", "source": "predicted", "model": "m1",
               "attributes": {"race": {"values": ["White", "Black", "Asian"], "source": "annotated",
                                       "notes": "self-reported"}}}
    (tmp_path / "labels.json").write_text(json.dumps(sidecar))
    faceset = load_faceset(f"folder:{tmp_path / 'faces.csv'}", labels_source=None)
    assert faceset.name == "mine" and faceset.licence == "CC0"
    assert faceset.attributes["race"] == AttributeSpec("race", ("White", "Black", "Asian"), "annotated",
                                                       model="m1", notes="self-reported")
    assert faceset.attributes["gender"].source == "predicted" and faceset.attributes["gender"].model == "m1"
    (tmp_path / "faces.csv").write_text("path,race,gender\na.png,Black,Female\nb.png,Latino,Male\n")
    with pytest.raises(PulseAuditError, match=r"faces.csv line 3: unknown race value 'Latino'; valid: 'White'"):
        load_faceset(f"folder:{tmp_path / 'faces.csv'}")
    (tmp_path / "labels.json").write_text(json.dumps({"sorce": "predicted"}))
    with pytest.raises(PulseAuditError, match="expected an object with keys among"):
        load_faceset(f"folder:{tmp_path / 'faces.csv'}")


def test_folder_errors(tmp_path):
    with pytest.raises(PulseAuditError, match="manifest.csv not found"):
        load_faceset(f"folder:{tmp_path}")
    (tmp_path / "manifest.csv").write_text("file,race\na.png,x\n")
    with pytest.raises(PulseAuditError, match="no 'path' column in the header line"):
        load_faceset(f"folder:{tmp_path}")
    (tmp_path / "manifest.csv").write_text("path,race\na.png,x\n./a.png,y\n")
    with pytest.raises(PulseAuditError, match="line 3: 'a.png' is already listed on line 2 \\(same file\\)"):
        load_faceset(f"folder:{tmp_path}")


# ---- registry --------------------------------------------------------------------------------

def test_spec_parsing_errors(tmp_path):
    with pytest.raises(PulseAuditError, match="unknown dataset format 'imagenet'.*fairface:PATH.*demo"):
        load_faceset("imagenet:/x")
    with pytest.raises(PulseAuditError, match="needs a path: fairface:PATH"):
        load_faceset("fairface")
    with pytest.raises(PulseAuditError, match="does not exist"):
        load_faceset(f"utkface:{tmp_path / 'missing'}")
    with pytest.raises(PulseAuditError, match="dataset utkface has no option 'split'; its options: none"):
        load_faceset(f"utkface:{tmp_path}", split="val")
    with pytest.raises(PulseAuditError, match="takes no path"):
        load_faceset("demo:/x")
    assert set(FORMATS) == {"fairface", "utkface", "celeba", "folder", "demo"}


def test_demo_is_lazy(monkeypatch):
    import importlib
    import sys
    import types

    demo = types.ModuleType("audit.facesets.demo")
    demo.load_demo_set = lambda: FaceSet("demo", Path("."), {}, [FaceItem("a", Path("a.png"))])
    monkeypatch.setitem(sys.modules, "audit.facesets.demo", demo)
    faceset = load_faceset("demo")
    assert isinstance(faceset, LoadedFaceSet) and faceset.skipped == [] and len(faceset.items) == 1
    monkeypatch.setitem(sys.modules, "audit.facesets.demo", None)  # import of it now fails
    with pytest.raises(PulseAuditError, match="dataset demo is not available"):
        load_faceset("demo")
    assert importlib.import_module("audit.facesets") is not None


def test_vocabulary_sorting():
    assert vocabulary(["b", "a", "", "b"]) == ("a", "b")
    assert vocabulary(["10", "9", "-1", "2.5"]) == ("-1", "2.5", "9", "10")


# ---- stratified sampling -----------------------------------------------------------------------

def synthetic_set(counts: dict[tuple[str, str], int], unlabelled: int = 0, reverse: bool = False) -> FaceSet:
    """A face set with ``counts[(race, gender)]`` items per group, plus items with no race."""
    items = [FaceItem(f"{race}-{gender}-{i:03d}", Path(f"{race}{gender}{i}.png"), {"race": race, "gender": gender})
             for (race, gender), n in counts.items() for i in range(n)]
    items += [FaceItem(f"unl-{i}", Path(f"u{i}.png"), {"race": "", "gender": "F"}) for i in range(unlabelled)]
    attributes = {"race": AttributeSpec("race", ("A", "B", "C"), "annotated"),
                  "gender": AttributeSpec("gender", ("F", "M"), "annotated")}
    return FaceSet("synthetic", Path("."), attributes, items[::-1] if reverse else items)


COUNTS = {("A", "F"): 10, ("A", "M"): 7, ("B", "F"): 3, ("B", "M"): 12}


def test_sampling_exact_counts_and_shortfalls():
    result = stratified_sample(synthetic_set(COUNTS, unlabelled=4), ["race", "gender"], per_group=5, seed=1)
    by_group = {g.values: (g.requested, g.available, g.selected) for g in result.groups}
    assert by_group == {("A", "F"): (5, 10, 5), ("A", "M"): (5, 7, 5), ("B", "F"): (5, 3, 3),
                        ("B", "M"): (5, 12, 5), ("C", "F"): (5, 0, 0), ("C", "M"): (5, 0, 0)}
    assert Counter(result.group_of(item) for item in result.items) == {
        ("A", "F"): 5, ("A", "M"): 5, ("B", "F"): 3, ("B", "M"): 5}
    assert [(g.name, g.short) for g in result.shortfalls] == [("B × F", 2), ("C × F", 5), ("C × M", 5)]
    assert result.unlabelled == {("", "F"): 4}
    assert all(item.labels["race"] for item in result.items)
    summary = "\n".join(result.summary())
    assert "short: B × F: 3 of 5 (only 3 available)" in summary
    assert "excluded, label missing: ? × F: 4 items" in summary


def test_sampling_deterministic_and_order_independent():
    faceset, reversed_set = synthetic_set(COUNTS), synthetic_set(COUNTS, reverse=True)

    def ids(result):
        return [item.item_id for item in result.items]

    first = stratified_sample(faceset, ["race"], per_group=6, seed=7)
    assert ids(first) == ids(stratified_sample(faceset, ["race"], per_group=6, seed=7))
    assert ids(first) == ids(stratified_sample(reversed_set, ("race",), per_group=6, seed=7))
    assert ids(first) != ids(stratified_sample(faceset, ["race"], per_group=6, seed=8))
    # the smallest rank keys win, groups in vocabulary order, each sorted by item id
    pool_a = sorted((i for i in faceset.items if i.labels["race"] == "A"), key=lambda i: rank_key(7, i.item_id))
    assert ids(first)[:6] == sorted(i.item_id for i in pool_a[:6])
    # a larger sample with the same seed extends the smaller one
    larger = stratified_sample(faceset, ["race"], per_group=9, seed=7)
    assert set(ids(first)) <= set(ids(larger))
    # the whole group when per_group exceeds it
    assert {g.values: g.selected for g in larger.groups} == {("A",): 9, ("B",): 9, ("C",): 0}


def test_sampling_errors():
    faceset = synthetic_set(COUNTS)
    with pytest.raises(PulseAuditError, match="has no attribute 'age'; it has: race, gender"):
        stratified_sample(faceset, ["age"], 1, 0)
    with pytest.raises(PulseAuditError, match="at least 1"):
        stratified_sample(faceset, ["race"], 0, 0)
    faceset.items.append(FaceItem("odd", Path("odd.png"), {"race": "Z", "gender": "F"}))
    with pytest.raises(PulseAuditError, match="has race 'Z', not in its vocabulary"):
        stratified_sample(faceset, ["race"], 1, 0)


def test_sampling_on_fairface_race4_excludes_unmapped(tmp_path):
    faceset = load_faceset(f"fairface:{make_fairface(tmp_path)}")
    result = stratified_sample(faceset, ["race4"], per_group=2, seed=0)
    assert {g.values[0]: g.selected for g in result.groups} == {"White": 1, "Black": 1, "Asian": 2, "Indian": 1}
    assert result.unlabelled == {("",): 2}


def test_csv_encoding_and_shape_errors(tmp_path):
    (tmp_path / "manifest.csv").write_bytes("path,race\na.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(PulseAuditError, match="manifest.csv: not UTF-8 text"):
        load_faceset(f"folder:{tmp_path}")
    (tmp_path / "manifest.csv").write_text("path,race\na.png,x,extra\n")
    with pytest.raises(PulseAuditError, match="line 2: 3 fields, the header has 2"):
        load_faceset(f"folder:{tmp_path}")

"""The lexicon classifier (default) and the trained classifier (TF-IDF + calibrated linear SVM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.processors.classify import (
    Classification,
    LexiconClassifier,
    ModelFileError,
    TrainedClassifier,
    load_classifier,
    load_model,
    train,
)
from pipeline.processors.normalise import normalise
from pipeline.processors.route import load_router


def lex_label(text: str) -> Classification:
    return load_classifier().classify([normalise(text)])[0]


def test_default_classifier_is_the_lexicon() -> None:
    clf = load_classifier(None)
    assert isinstance(clf, LexiconClassifier)
    assert clf.name == "lexicon-v1"


def test_lexicon_categories_are_the_routing_table_categories() -> None:
    assert set(load_classifier().categories) == set(load_router().categories())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Jalan berlubang besar depan pasar, bahaya buat motor", "road_damage"),
        ("pju mati udh seminggu, gelap bgt", "street_lights"),
        ("Kabel fiber optik menjuntai di tiang, hampir kena kepala", "street_lights"),
        ("parkir liar mobil di bahu jalan bikin macet", "illegal_parking"),
        ("lampu merah di perempatan mati, lalin semrawut", "traffic"),
        ("Pohon tumbang menutup jalan setelah hujan", "fallen_tree_parks"),
        ("mohon pemangkasan dahan yang rimbun", "fallen_tree_parks"),
        ("Kali meluap, banjir sepaha, pompa tidak jalan", "flood_drainage"),
        ("sampah numpuk blm diangkut, bau", "garbage"),
        ("PKL jualan di trotoar depan stasiun", "street_vendors"),
        ("Spanduk liar caleg dipasang di pohon", "illegal_billboards"),
        ("banyak yg merokok di halte padahal kawasan dilarang merokok", "no_smoking_area"),
        ("tetangga karaoke sampai jam 2 pagi, berisik", "public_order_noise"),
        ("air PAM mati sudah 3 hari", "clean_water"),
        ("petugas ppsu tidak datang membersihkan got", "kelurahan_services"),
        ("ada sarang tawon besar di pohon depan sekolah", "fire_rescue"),
        ("bangunan tanpa PBG menutup saluran", "building_spatial"),
        ("bus transjakarta ngetem lama di halte", "public_transport"),
        ("pengemis dan manusia silver di perempatan", "social_welfare"),
    ],
)
def test_lexicon_on_informal_indonesian(text: str, category: str) -> None:
    label = lex_label(text)
    assert label.category == category
    assert 0.0 < label.confidence <= 1.0


def test_inflected_forms_match_their_roots() -> None:
    # "ditertibkan", "berjualan", "menumpuk" are not in the lexicon; tertib, jual, tumpuk are
    clf = load_classifier()
    raw = clf.scores(normalise("pedagang berjualan, mohon ditertibkan"))  # type: ignore[attr-defined]
    scores = dict(zip(clf.categories, raw, strict=True))  # type: ignore[attr-defined]
    assert scores["street_vendors"] > 0 and scores["public_order_noise"] > 0


def test_no_keyword_means_no_category() -> None:
    assert lex_label("selamat pagi, terima kasih") == Classification(None, 0.0)


def test_confidence_grows_with_evidence_and_margin() -> None:
    conf = LexiconClassifier.confidence
    assert conf(0, 0) == 0.0
    assert conf(2, 0) < conf(6, 0) < 1.0
    assert conf(6, 5) < conf(6, 1)


def test_batch_in_one_result_per_text_in_order() -> None:
    texts = [normalise(t) for t in ["sampah", "", "parkir liar", "pohon tumbang"]]
    out = load_classifier().classify(texts)
    assert [c.category for c in out] == ["garbage", None, "illegal_parking", "fallen_tree_parks"]
    assert load_classifier().classify([]) == []


def test_custom_lexicon() -> None:
    clf = LexiconClassifier({"a": {"kucing": 2, "kucing hitam": 1}, "b": {"anjing": 1}}, name="test")
    assert clf.classify(["ada kucing hitam", "anjing", "burung"]) == [
        Classification("a", LexiconClassifier.confidence(3, 0)),
        Classification("b", LexiconClassifier.confidence(1, 0)),
        Classification(None, 0.0),
    ]


# --- trained -----------------------------------------------------------------------------------------

EXAMPLES = {
    "DINAS BINA MARGA": [
        "jalan berlubang di depan sekolah", "aspal rusak parah", "lampu jalan mati total",
        "trotoar pecah dan amblas", "jalan bergelombang minta diperbaiki", "pju padam gelap",
    ],
    "DINAS PERHUBUNGAN": [
        "parkir liar di bahu jalan", "mobil parkir sembarangan", "lampu merah mati macet",
        "angkot ngetem bikin macet", "juru parkir liar minta uang", "rambu lalu lintas hilang",
    ],
    "KELURAHAN": [
        "sampah menumpuk belum diangkut", "got mampet tolong dibersihkan", "ppsu tidak datang",
        "sampah di pinggir kali bau", "selokan penuh sampah", "sampah berserakan di gang",
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def trained() -> TrainedClassifier:
    texts = [normalise(t) for texts in EXAMPLES.values() for t in texts]
    labels = [label for label, texts in EXAMPLES.items() for _ in texts]
    return train(texts, labels)


def test_trained_classifier_predicts_with_calibrated_confidence(trained: TrainedClassifier) -> None:
    out = trained.classify([normalise("parkir liar mobil di bahu jalan"), normalise("sampah numpuk di got")])
    assert [c.category for c in out] == ["DINAS PERHUBUNGAN", "KELURAHAN"]
    assert all(0.0 < c.confidence <= 1.0 for c in out)
    assert trained.labels == sorted(EXAMPLES)
    assert trained.meta["n_examples"] == 18


def test_trained_model_round_trips_through_a_file(trained: TrainedClassifier, tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    trained.save(path)
    loaded = load_classifier(str(path))
    assert isinstance(loaded, TrainedClassifier)
    texts = [normalise("lampu jalan mati"), normalise("parkir liar")]
    assert loaded.classify(texts) == trained.classify(texts)
    assert loaded.name.startswith("trained-v1:")


def test_trained_labels_route_as_agencies(trained: TrainedClassifier) -> None:
    label = trained.classify([normalise("aspal jalan berlubang")])[0]
    decision = load_router().route(label.category, 1.0, None)
    assert decision.agency == "Dinas Bina Marga"


def test_train_rejects_rare_labels_and_single_label() -> None:
    with pytest.raises(ValueError, match="fewer than 3"):
        train(["a b", "c d", "e f", "g h"], ["x", "x", "x", "y"])
    with pytest.raises(ValueError, match="two different labels"):
        train(["a", "b", "c"], ["x", "x", "x"])


def test_bad_model_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.joblib")
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match=str(junk)):
        load_model(junk)
    import joblib

    other = tmp_path / "other.joblib"
    joblib.dump({"format": "crm-triage-model", "version": 99}, other)
    with pytest.raises(ModelFileError, match="format version 99"):
        load_model(other)

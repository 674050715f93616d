"""The lexicon classifier (default) and the trained classifier (TF-IDF + calibrated linear SVM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.envelope import Region
from pipeline.processors.classify import Classification, LexiconClassifier, ModelFileError, Signals
from pipeline.processors.normalise import normalise
from pipeline.processors.route import load_router
from pipeline.processors.trained import TrainedClassifier, load_classifier, load_model, train


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
    top, alone = LexiconClassifier.confidence(3, 0), LexiconClassifier.confidence(1, 0)
    assert clf.classify(["ada kucing hitam", "anjing", "burung"]) == [
        Classification("a", top, (("a", top),)),
        Classification("b", alone, (("b", alone),)),
        Classification(None, 0.0),
    ]
    assert clf.threshold_for(0.95) is None  # no calibration: the router's default threshold applies


def test_citizen_category_hint_adds_weight_through_the_routing_table() -> None:
    clf = load_classifier()
    text = normalise("mohon ditindaklanjuti, sudah lama dibiarkan di depan gang")  # no keyword at all
    assert clf.classify([Signals(text)])[0].category is None
    hinted = clf.classify([Signals(text, category_hint="Parkir liar ")])[0]  # CRM spelling, trailing space
    assert hinted.category == "illegal_parking"
    # a picker label longer than the table's ("... Kelurahan (PPSU)") still finds its category
    ppsu = clf.classify([Signals(text, category_hint="Pekerja Penanganan Prasarana dan Sarana Umum (PPSU)")])
    assert ppsu[0].category == "kelurahan_services"
    # the hint settles a close call: vendors and parking weigh the same in this text
    close = normalise("gerobak pedagang parkir di bahu jalan")
    by_hint = [
        clf.classify([Signals(close, category_hint=h)])[0].category for h in ("Parkir Liar", "PKL Liar")
    ]
    assert by_hint == ["illegal_parking", "street_vendors"]


def test_lexicon_confidence_is_calibrated_and_names_a_threshold() -> None:
    clf = load_classifier()
    cal = clf.calibration  # type: ignore[attr-defined]
    assert cal is not None and cal.n > 7000  # fitted on the real CRM sample, twice (with and without hint)
    t95, t80 = clf.threshold_for(0.95), clf.threshold_for(0.80)
    assert t95 is not None and t80 is not None and t80 < t95 < 1.0
    # an agreeing hint makes the same text more trustworthy than the text alone
    text = normalise("pohon tumbang menutup jalan")
    alone, hinted = clf.classify([Signals(text), Signals(text, category_hint="Pohon")])
    assert alone.category == hinted.category == "fallen_tree_parks"
    assert hinted.confidence > alone.confidence
    # the decision comes first among its candidates, with its calibrated confidence
    assert hinted.candidates[0] == ("fallen_tree_parks", hinted.confidence)
    assert sum(p for _, p in hinted.candidates) <= 1.0 + 1e-6


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
    assert loaded.name == trained.model_id and loaded.name.startswith("m")


def test_trained_labels_route_as_agencies(trained: TrainedClassifier) -> None:
    label = trained.classify([normalise("aspal jalan berlubang")])[0]
    decision = load_router().route(label.category, 1.0, None)
    assert decision.agency == "Dinas Bina Marga"


def test_train_rejects_rare_labels_and_single_label() -> None:
    with pytest.raises(ValueError, match="fewer than 3"):
        train(["a b", "c d", "e f", "g h"], ["x", "x", "x", "y"], folds=3)
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


# --- trained on every signal ---------------------------------------------------------------------------

UTARA = Region(kota="Kota Administrasi Jakarta Utara", kota_code="31.72", kecamatan_code="31.72.04",
               kelurahan="Kalibaru", kelurahan_code="31.72.04.1004")  # fmt: skip
TIMUR = Region(kota="Kota Administrasi Jakarta Timur", kota_code="31.75", kecamatan_code="31.75.07",
               kelurahan="Klender", kelurahan_code="31.75.07.1003")  # fmt: skip
GARBAGE = ["sampah menumpuk di pinggir jalan", "tumpukan sampah belum diangkut", "sampah berserakan bau",
           "banyak sampah di gang", "buang sampah sembarangan", "sampah liar dekat pasar",
           "sampah rumah tangga dibuang di trotoar", "sampah di saluran air"]  # fmt: skip


@pytest.fixture(scope="module")
def placed() -> TrainedClassifier:
    """Garbage is the kelurahan's in one kota and Satpol PP's in the other; the text cannot tell."""
    items, labels = [], []
    for i, text in enumerate(GARBAGE * 2):
        region = UTARA if i % 2 else TIMUR
        items.append(Signals(normalise(text), "Sampah", "jaki", region))
        labels.append("KELURAHAN" if region is UTARA else "SATUAN POLISI PAMONG PRAJA")
    for text in EXAMPLES["DINAS BINA MARGA"]:
        items.append(Signals(normalise(text), "Jalan", "jaki", TIMUR))
        labels.append("DINAS BINA MARGA")
    return train(items, labels, folds=4)


def test_trained_model_reads_the_place(placed: TrainedClassifier) -> None:
    text = normalise("sampah numpuk tolong diangkut")
    here, there, nowhere = placed.classify(
        [Signals(text, "Sampah", "jaki", UTARA), Signals(text, "Sampah", "jaki", TIMUR), Signals(text)]
    )
    assert here.category == "KELURAHAN"
    assert there.category == "SATUAN POLISI PAMONG PRAJA"
    # without a hint or a place the text alone still decides, among the labels it learnt
    assert nowhere.category in placed.labels and 0.0 <= nowhere.confidence <= 1.0
    assert [c for c, _ in here.candidates][:1] == ["KELURAHAN"] and len(here.candidates) == 3


def test_trained_model_carries_its_held_out_metrics_and_calibration(
    placed: TrainedClassifier, tmp_path: Path
) -> None:
    cv = placed.meta["cv"]
    assert cv["folds"] == 4 and 0.0 <= cv["accuracy"] <= 1.0 and len(cv["reliability"]) >= 5
    assert placed.meta["with_place"] == placed.meta["n_examples"] == 22 and placed.meta["with_hint"] == 22
    assert placed.calibration is not None and placed.calibration.n == 22
    path = tmp_path / "m.joblib"
    placed.save(path)
    loaded = load_model(path)
    assert loaded.threshold_for(0.5) == placed.threshold_for(0.5)
    probe = [Signals(normalise("sampah"), "Sampah", None, UTARA)]
    assert loaded.classify(probe) == placed.classify(probe)


def test_a_version_1_model_file_is_refused_with_a_reason(tmp_path: Path) -> None:
    import joblib

    old = tmp_path / "v1.joblib"
    joblib.dump({"format": "crm-triage-model", "version": 1, "meta": {}, "pipeline": None}, old)
    with pytest.raises(ModelFileError, match=r"format version 1; this pipeline reads 2 \(retrain it\)"):
        load_model(old)

"""HMG-Net valuation: generator truth, listings format, sparsemax attention, depreciation layer, claims, metrics."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from utils.core.data import DataError
from utils.core.paths import ROOT
from utils.synth import market as mk
from utils.valuation.depreciation import DepreciationHead, DirectHead
from utils.valuation.dsca import DSCA
from utils.valuation.features import estimate_anchor
from utils.valuation.listings import read_listings
from utils.valuation.metrics import coverage, interval, rmsle, scores
from utils.valuation.structure import claim_loss, mention_loss, parse_claims


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    out = tmp_path_factory.mktemp("market")
    mk.generate(out, n=120, seed=3, mode="aligned")
    return out


@pytest.fixture(scope="module")
def market_independent(tmp_path_factory):
    out = tmp_path_factory.mktemp("market_independent")
    mk.generate(out, n=100, seed=3)  # the default mode
    return out


def test_generator_delta_reproduces_prices_and_follows_the_formula(market):
    df = pd.read_csv(market / "listings.csv")
    truth = pd.read_csv(market / "truth.csv")
    assert list(df["listing_id"]) == list(truth["listing_id"])
    np.testing.assert_allclose(df["msrp"] * (1 - truth["delta"]), df["price"], rtol=1e-12)
    assert truth["delta"].between(0.01, 0.97).all()
    # entity part from its recorded parts, and delta = sigmoid(logit(entity) + market) + noise (inside the clip)
    entity = 1 - (1 - truth["age_part"]) * (1 - truth["defect_part"]) * (1 - truth["accessory_part"])
    np.testing.assert_allclose(entity, truth["entity"], atol=1e-12)
    clean = 1 / (1 + np.exp(-(np.log(entity / (1 - entity)) + truth["market"])))
    inside = (clean + truth["noise"]).between(0.011, 0.969)
    np.testing.assert_allclose((clean + truth["noise"])[inside], truth["delta"][inside], atol=1e-9)
    boxes = truth[truth["defect"].fillna("") != ""]
    assert len(boxes) and (boxes["defect_x1"] > boxes["defect_x0"]).all() and (boxes["defect_x1"] <= 96).all()
    assert json.loads((market / "market.json").read_text())["listings"] == 120
    assert json.loads((market / "market.json").read_text())["mode"] == "aligned"
    # aligned: the listed msrp is the true new price, and the condition word is never flipped by a seller
    assert (truth["msrp_true"] == df["msrp"]).all() and (truth["anchor_error"] == 1).all()
    assert not truth["condition_flipped"].any()


def test_true_delta_parts_by_hand():
    cat = mk.CATEGORIES[0]  # phone: rate 0.45, accessories charger, box, case
    item = mk.Listing(cat, 1, 500.0, 2.0, "crack", 0.5, (1, 1, 5, 5), ("charger",), "Leeds", mk.START)
    parts = mk.true_delta(item)
    assert parts["age_part"] == pytest.approx(0.9 * (1 - math.exp(-0.9)))
    assert parts["defect_part"] == pytest.approx(0.22)
    assert parts["accessory_part"] == pytest.approx(0.025 + 0.02)  # box and case missing
    assert parts["market"] == pytest.approx(0.0)  # Leeds, listed on the start date
    assert parts["delta_clean"] == pytest.approx(parts["entity"])


def test_generator_independent_prices_follow_the_documented_formula(market_independent):
    df = pd.read_csv(market_independent / "listings.csv")
    truth = pd.read_csv(market_independent / "truth.csv")
    assert json.loads((market_independent / "market.json").read_text())["mode"] == "independent"
    assert list(df["listing_id"]) == list(truth["listing_id"]) and (df["price"] > 0).all()
    np.testing.assert_allclose(df["msrp"] * (1 - truth["delta"]), df["price"], rtol=1e-9)
    # the anchor the model sees is the true new price times a log-uniform error within [1/1.2, 1.2] (cents rounded)
    ratio = df["msrp"] / truth["msrp_true"]
    np.testing.assert_allclose(ratio, truth["anchor_error"], rtol=1e-12)
    assert ratio.between(1 / 1.2 - 1e-3, 1.2 + 1e-3).all() and ratio.std() > 0.05
    assert (df["price"] <= 0.99 * truth["msrp_true"] + 1e-9).all()  # above the listed msrp only via the anchor
    # each part from what it is made of: currency repair and accessory costs over msrp_true, exponential age decay
    repair = [mk.REPAIR_COST[d] * mk.REPAIR_SCALE[c] * (0.5 + z) if isinstance(d, str) else 0.0
              for d, z, c in zip(truth["defect"], truth["defect_size"], df["category"], strict=True)]
    np.testing.assert_allclose(truth["defect_part"] * truth["msrp_true"], repair, rtol=1e-9, atol=1e-9)
    cats = {c.name: c for c in mk.CATEGORIES}
    missing = [sum(mk.ACCESSORY_PRICE[a] for a in cats[c].accessories if a not in str(p).split())
               for c, p in zip(df["category"], truth["accessories_present"].fillna(""), strict=True)]
    np.testing.assert_allclose(truth["accessory_part"] * truth["msrp_true"], missing, rtol=1e-9, atol=1e-9)
    rank = [mk.BRANDS[c].index(b) for c, b in zip(df["category"], df["brand"], strict=True)]
    rate = np.array([cats[c].rate * mk.BRAND_DECAY[r] for c, r in zip(df["category"], rank, strict=True)])
    age = df["age_years"].to_numpy()  # listed with 2 decimals
    retention = (1 - 0.10 * np.minimum(age, 1)) * np.exp(-rate * age)
    np.testing.assert_allclose(truth["age_part"], 1 - retention, atol=5e-3)
    days = (pd.to_datetime(df["listed_at"]) - mk.START).dt.days
    np.testing.assert_allclose(truth["market"], df["location"].map(mk.REGIONS) + 0.15 * days / 365.25, atol=1e-12)
    # the price from the recorded parts: msrp_true (1 - entity) exp(-0.5 market + noise), inside [3%, 99%] of msrp_true
    entity = truth["age_part"] + truth["defect_part"] + truth["accessory_part"]
    np.testing.assert_allclose(entity, truth["entity"], atol=1e-12)
    raw = truth["msrp_true"] * (1 - entity) * np.exp(-0.5 * truth["market"] + truth["noise"])
    np.testing.assert_allclose(np.clip(raw, 0.03 * truth["msrp_true"], 0.99 * truth["msrp_true"]), df["price"],
                               rtol=1e-9)
    assert 0.08 < truth["noise"].std() < 0.12


def test_generator_true_value_parts_by_hand():
    cat = mk.CATEGORIES[0]  # phone: rate 0.45, accessories charger, box, case; repair scale 1
    item = mk.Listing(cat, 1, 500.0, 2.0, "crack", 0.5, (1, 1, 5, 5), ("charger",), "Leeds", mk.START)
    parts = mk.true_value(item)
    retention = (1 - 0.10) * math.exp(-0.45 * 0.7 * 2.0)  # brand rank 1 decays at 0.7 of the category rate
    assert parts["age_part"] == pytest.approx(1 - retention)
    assert parts["repair"] == pytest.approx(110.0) and parts["defect_part"] == pytest.approx(0.22)
    assert parts["accessories"] == pytest.approx(10.0 + 15.0)  # box and case missing
    assert parts["accessory_part"] == pytest.approx(0.05) and parts["market"] == pytest.approx(0.0)
    assert parts["value"] == pytest.approx(500 * retention - 135.0)  # about 104.67
    assert parts["price_clean"] == pytest.approx(parts["value"])  # Leeds on the start date: no market factor
    late = mk.Listing(cat, 1, 500.0, 2.0, "crack", 0.5, (1, 1, 5, 5), ("charger",), "Truro",
                      mk.START + pd.Timedelta(days=365))
    market = 0.4 + 0.15 * 365 / 365.25
    assert mk.true_value(late)["price_clean"] == pytest.approx(parts["value"] * math.exp(-0.5 * market))


def test_generator_independent_condition_from_age_and_defect_not_truth(market_independent):
    df = pd.read_csv(market_independent / "listings.csv")
    truth = pd.read_csv(market_independent / "truth.csv")
    words = ["like new", "good", "fair", "poor"]
    age_level = np.searchsorted([1.0, 3.0, 6.0], df["age_years"].to_numpy(), side="right")
    defect, size = truth["defect"].fillna(""), truth["defect_size"]
    defect_level = np.select([defect == "", (defect == "crack") | (size >= 0.7), size < 0.35], [0, 3, 1], 2)
    seen = np.maximum(age_level, defect_level)
    got = df["condition"].map(words.index).to_numpy()
    flipped = truth["condition_flipped"].to_numpy(bool)
    assert (got[~flipped] == seen[~flipped]).all()
    assert (np.abs(got[flipped] - seen[flipped]) == 1).all() and 0.03 < flipped.mean() < 0.35
    assert set(df["condition"]) == set(words)


def test_generator_modes_share_items_and_differ_in_prices(tmp_path):
    for mode in ("aligned", "independent"):
        mk.generate(tmp_path / mode, n=60, seed=5, mode=mode)
    a, b = (pd.read_csv(tmp_path / m / "listings.csv") for m in ("aligned", "independent"))
    ta, tb = (pd.read_csv(tmp_path / m / "truth.csv") for m in ("aligned", "independent"))
    same = ["listing_id", "title", "description", "category", "brand", "location", "listed_at", "image", "age_years"]
    pd.testing.assert_frame_equal(a[same], b[same])
    kept = ["defect", "defect_size", "defect_x0", "defect_y0", "defect_x1", "defect_y1", "defect_mention",
            "subtle_defect", "accessories_present", "false_claim", "msrp_true"]
    pd.testing.assert_frame_equal(ta[kept], tb[kept])
    assert (a["msrp"] == tb["msrp_true"]).all() and (a["msrp"] != b["msrp"]).mean() > 0.9
    assert not np.allclose(a["price"], b["price"]) and (a["condition"] != b["condition"]).any()
    for name in a["image"].head(5):
        assert (tmp_path / "aligned" / "images" / name).read_bytes() == \
            (tmp_path / "independent" / "images" / name).read_bytes()
    with pytest.raises(ValueError, match="mode must be one of"):
        mk.generate(tmp_path / "bad", n=20, mode="sigmoid")
    assert not (tmp_path / "bad").exists()


def test_sparsemax_attention_rows_sum_to_one_with_exact_zeros():
    torch.manual_seed(0)
    dsca = DSCA(16, "sparsemax")
    tokens, patches = torch.randn(3, 5, 16) * 3, torch.randn(3, 40, 16) * 3
    A = dsca.weights(tokens, patches)
    torch.testing.assert_close(A.sum(-1), torch.ones(3, 5))
    assert (A == 0).float().mean() > 0.5 and (A >= 0).all()
    soft = DSCA(16, "softmax").weights(tokens, patches)
    assert (soft > 0).all()
    micro, parts = dsca(tokens, patches, torch.ones(3, 5))
    # text mean, learned queries' mean, defect logit; two learned queries first in A
    assert micro.shape == (3, 33) and parts["attention"].shape == (3, 5 + 2, 40)
    assert parts["defect_logit"].shape == (3,)
    text_only, _ = DSCA(16, "sparsemax", learned_queries=0)(tokens, patches, torch.ones(3, 5))
    assert text_only.shape == (3, 17)
    with pytest.raises(ValueError, match="sparsemax or softmax"):
        DSCA(16, "entmax15")


def test_depreciation_layer_keeps_delta_in_unit_interval_and_price_below_anchor():
    torch.manual_seed(0)
    head = DepreciationHead(8, 4, gamma=1.0)
    anchor = torch.rand(500) * 1000 + 1
    price, delta, _ = head(anchor, torch.randn(500, 8) * 50, torch.randn(500, 4) * 50)
    assert ((delta >= 0) & (delta <= 1)).all() and (price <= anchor).all() and (price >= 0).all()
    torch.testing.assert_close(price, anchor * (1 - delta))
    direct_price, _, _ = DirectHead(8, 4, init_log_price=5.0)(anchor, torch.zeros(500, 8), torch.zeros(500, 4))
    assert (direct_price > 0).all()


def test_parse_claims_with_negation():
    texts = ["charger included. no box.", "Missing charger, box not included", "comes with strap", "works"]
    claims = parse_claims(texts, ["charger", "box", "strap"])
    np.testing.assert_array_equal(claims, [[1, -1, 0], [-1, -1, 0], [0, 0, 1], [0, 0, 0]])


def test_claim_loss_counts_only_claimed_accessories_of_rows_with_a_photo():
    logit = torch.tensor([[2.0, -1.0, 5.0], [0.5, 0.0, 0.0]])
    claims = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])
    # row 0: claimed with logit 2 -> -log(sigmoid(2)); denied with logit -1 -> -log(1 - sigmoid(-1))
    by_hand = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert claim_loss(logit, claims, torch.tensor([True, False])).item() == pytest.approx(by_hand, rel=1e-6)
    # the second row, with a photo, adds its denial with logit 0.5: -log(1 - sigmoid(0.5))
    both = (2 * by_hand + math.log1p(math.exp(0.5))) / 3
    assert claim_loss(logit, claims, torch.tensor([True, True])).item() == pytest.approx(both, rel=1e-6)
    assert claim_loss(logit, torch.zeros_like(claims), torch.tensor([True, True])).item() == 0.0


def test_mention_loss_skips_rows_without_a_photo():
    logit, mentioned = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([1.0, 0.0, 0.0])
    by_hand = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-2.0))) / 2  # rows 0 and 1; row 2 has no photo
    assert mention_loss(logit, mentioned, torch.tensor([True, True, False])).item() == pytest.approx(by_hand, rel=1e-6)
    assert mention_loss(logit, mentioned, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_read_listings_errors_name_column_and_lines(tmp_path):
    def write(rows):
        p = tmp_path / "l.csv"
        pd.DataFrame(rows).to_csv(p, index=False)
        return p

    ok = {"listing_id": "a", "price": 10.0, "msrp": 20.0, "listed_at": "2024-01-02"}
    assert len(read_listings(write([ok, {**ok, "listing_id": "b", "msrp": None}]))) == 2
    with pytest.raises(DataError, match="missing column"):
        read_listings(write([{"listing_id": "a"}]))
    with pytest.raises(DataError, match="duplicates in line"):
        read_listings(write([ok, ok]))
    with pytest.raises(DataError, match=r"'msrp' needs positive finite numbers; bad values in line\(s\) 3"):
        read_listings(write([ok, {**ok, "listing_id": "b", "msrp": "abc"}]))
    with pytest.raises(DataError, match="'listed_at'"):
        read_listings(write([{**ok, "listed_at": "yesterday-ish"}]))
    with pytest.raises(DataError, match="'price'"):
        read_listings(write([{**ok, "price": 0}]))
    assert len(read_listings(write([ok, {**ok, "listing_id": "b", "price": 0}]), drop_nonpositive_price=True)) == 1


def test_real_datasets_map_onto_the_listings_format():
    import yaml

    from utils.core.paths import CONFIGS

    for name, rows in (("cardekho", 301), ("mercari", 9991)):
        stage = yaml.safe_load((CONFIGS / f"valuation-{name}.yaml").read_text())["stages"]["06_hmgnet_valuation"]
        df = read_listings(ROOT / stage["listings_csv"], stage["mapping"],
                           drop_nonpositive_price=stage.get("drop_nonpositive_price", False))
        assert len(df) == rows and (df["price"] > 0).all() and df["listing_id"].is_unique
    assert df["msrp" if "msrp" in df else "price"].notna().all()


def test_estimate_anchor_from_training_groups():
    df = pd.DataFrame({"category": ["a", "a", "b", "b", "a"], "brand": ["x", "x", "y", "z", "q"],
                       "msrp": [100.0, 120.0, 50.0, np.nan, np.nan], "price": [50.0, 60.0, 20.0, 30.0, 40.0]})
    anchor, estimated = estimate_anchor(df, np.array([0, 1, 2]), min_count=1)
    np.testing.assert_allclose(anchor, [100, 120, 50, 50, 110])  # (b, z) -> category b; (a, q) -> category a
    np.testing.assert_array_equal(estimated, [False, False, False, True, True])
    no_msrp = df.drop(columns="msrp")
    anchor, _ = estimate_anchor(no_msrp, np.array([0, 1, 2]), quantile=1.0, min_count=1)
    np.testing.assert_allclose(anchor, [60, 60, 20, 20, 60])
    anchor, _ = estimate_anchor(no_msrp, np.array([0, 1, 2]), quantile=1.0, min_count=2)
    np.testing.assert_allclose(anchor, [60, 60, 60, 60, 60])  # (a, x) has 2 rows; b has 1: all-rows fallback


def test_metrics_by_hand():
    y, p = np.array([9.0, 99.0]), np.array([99.0, 9.0])
    assert rmsle(y, p) == pytest.approx(math.log(10))
    s = scores(np.array([10.0, 20.0]), np.array([12.0, 15.0]))
    assert s["mae"] == pytest.approx(3.5) and s["mape"] == pytest.approx(22.5)
    lo, hi = interval(np.array([10.0] * 10), np.array([10.0] * 10), np.array([5.0]))
    assert lo[0] == pytest.approx(5.0) and hi[0] == pytest.approx(5.0)
    assert coverage(np.array([1.0, 5.0]), np.array([0.0, 0.0]), np.array([2.0, 2.0])) == 0.5
    with pytest.raises(ValueError):
        rmsle(np.array([1.0]), np.array([-1.0]))


def test_valuation_notebook_on_generated_market_and_the_saved_model_reproduces_it(tmp_path):
    from utils.core.paths import CONFIGS
    from utils.run import pipeline
    from utils.valuation.__main__ import main as valuation_cli

    data = tmp_path / "market"
    cfg = pipeline.load_config(CONFIGS / "valuation-synth.yaml", [
        f"run={tmp_path / 'run'}", f"06_hmgnet_valuation.listings_csv={data / 'listings.csv'}",
        f"06_hmgnet_valuation.images_dir={data / 'images'}", f"06_hmgnet_valuation.truth_csv={data / 'truth.csv'}",
        "06_hmgnet_valuation.generate={n: 100, seed: 1}", "06_hmgnet_valuation.epochs=1",
        "06_hmgnet_valuation.splits=[0, 1]", "06_hmgnet_valuation.seeds=[0]", "06_hmgnet_valuation.fractions=[1.0]",
        "06_hmgnet_valuation.attribution_listings=2"])
    rows = pipeline.run(cfg)
    assert rows[0]["metric"] == "hmgnet_test_rmsle"
    out = tmp_path / "run" / "06_hmgnet_valuation"
    m = json.loads((out / "metrics.json").read_text())
    models = {r["model"] for r in m["comparison"]}
    texts = {"wordllama": "WordLlama", "minilm": "MiniLM"}
    candidates = {f"HMG-Net {part}, {text}" for part in ("deep only", "wide + deep") for text in texts.values()}
    assert {"lightgbm log price", "lightgbm log(price/anchor)", "ridge log price", "ridge log(price/anchor)",
            "anchor x category median", "direct price (same encoders)", "HMG-Net (anchor)", *candidates} == models
    main = next(r for r in m["comparison"] if r["model"] == "HMG-Net (anchor)")
    # wide and text "auto": of the four candidates, the one with the lowest validation RMSLE is HMG-Net
    chosen = f"HMG-Net {'wide + deep' if m['wide'] else 'deep only'}, {texts[m['text']]}"
    assert m["validation_rmsle"][chosen] == min(m["validation_rmsle"][n] for n in candidates)
    assert next(r for r in m["comparison"] if r["model"] == chosen)["rmsle"] == pytest.approx(main["rmsle"])
    other = next(r for r in m["comparison"] if r["model"] == "ridge log price")
    assert other["diff_lo"] <= other["diff"] <= other["diff_hi"] and main["diff"] == 0
    assert m["splits"] == ["seed 0", "seed 1"] and m["interval"]["test_rows"] == 40
    assert [r["model"] for r in m["ablation"]] == ["global only", "+ DSCA", "HMG-Net (anchor)"]
    assert 0 <= m["attribution"]["pointing_game"] <= 1 and m["attribution"]["listings"] == 2
    assert len(m["market_curve"]) == 8 and 0 < m["interval"]["coverage"] <= 1
    assert m["by_group"]["category"][-1]["group"] == "all"
    groups = [r for r in m["by_group"]["category"] if r["group"] != "all"]
    assert all(r["funnel_lo"] <= 0.8 <= r["funnel_hi"] for r in groups)
    assert m["coverage_goal"]["category"]["groups_in_funnel"] == len(groups)
    for png in ("comparison.png", "coverage.png", "ablation.png", "anchor.png", "attribution.png", "market.png"):
        assert (out / png).exists()
    # the saved model prices the first split's test listings as the notebook did
    expected = pd.read_csv(out / "test_predictions.csv")
    listings = pd.read_csv(data / "listings.csv").set_index("listing_id").loc[expected["listing_id"]].reset_index()
    new = tmp_path / "new.csv"
    listings.drop(columns="price").to_csv(new, index=False)
    priced = tmp_path / "priced.csv"
    assert valuation_cli(["predict", "--model", str(out / "model"), "--listings", str(new),
                          "--images", str(data / "images"), "--out", str(priced)]) == 0
    got = pd.read_csv(priced)
    assert list(got["listing_id"]) == list(expected["listing_id"])
    for col in ("price", "lo_80", "hi_80"):
        np.testing.assert_allclose(got[col], expected[col], rtol=1e-5)
    np.testing.assert_allclose(got["delta"], expected["delta"], atol=1e-5)
    assert got["top_attributions"].str.count(";").eq(2).all()
    one = tmp_path / "one.csv"
    listings.drop(columns="price").head(1).to_csv(one, index=False)
    assert valuation_cli(["predict", "--model", str(out / "model"), "--listings", str(one),
                          "--images", str(data / "images"), "--out", str(tmp_path / "one_priced.csv")]) == 0
    assert pd.read_csv(tmp_path / "one_priced.csv")["price"].iloc[0] == pytest.approx(expected["price"].iloc[0],
                                                                                      rel=1e-5)


def test_predict_command_refuses_a_folder_without_a_model(tmp_path, capsys):
    from utils.valuation.__main__ import main as valuation_cli

    listings = tmp_path / "new.csv"
    listings.write_text("listing_id,title\na,phone\n")
    assert valuation_cli(["predict", "--model", str(tmp_path), "--listings", str(listings)]) == 2
    assert "not a saved HMG-Net" in capsys.readouterr().err


def test_valuation_notebook_on_cardekho_by_cross_validation(tmp_path):
    from utils.core.paths import CONFIGS
    from utils.run import pipeline

    cfg = pipeline.load_config(CONFIGS / "valuation-cardekho.yaml", [
        f"run={tmp_path / 'run'}", "06_hmgnet_valuation.epochs=2", "06_hmgnet_valuation.seeds=[0, 1]",
        "06_hmgnet_valuation.fractions=[1.0]", "06_hmgnet_valuation.cv_folds=3"])
    pipeline.run(cfg)
    m = json.loads((tmp_path / "run" / "06_hmgnet_valuation" / "metrics.json").read_text())
    assert m["ablation"] is None and m["attribution"] is None and m["market_curve"] is None
    assert {r["head"] for r in m["few_shot"]} == {"depreciation", "direct"} and len(m["few_shot"]) == 4
    assert m["splits"] == ["fold 0", "fold 1", "fold 2"] and m["interval"]["test_rows"] == 301  # every car once
    assert {r["group"] for r in m["by_group"]["category"]} == {"Petrol", "Diesel", "CNG", "all"}


def test_splits_are_disjoint_and_folds_test_every_row_once():
    from utils.valuation.compare import make_splits

    for split in make_splits(100, [0, 1], val=0.15, cal=0.15, test=0.2):
        parts = [split.train, split.val, split.cal, split.test]
        assert [len(p) for p in parts] == [50, 15, 15, 20]
        assert len(np.unique(np.concatenate(parts))) == 100
    folds = make_splits(101, [0], val=0.15, cal=0.15, folds=5)
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(101))
    for f in folds:
        assert not set(f.test) & set(np.concatenate([f.train, f.val, f.cal]))
    for bad in ({"folds": 1}, {"val": 0.5, "cal": 0.3}, {"val": 0.0}):
        with pytest.raises(ValueError):
            make_splits(100, [0], **bad)


def test_conformal_bounds_use_finite_sample_ranks():
    from utils.valuation.metrics import interval_quantiles

    cal_p = np.full(9, 10.0)
    cal_y = np.expm1(np.log1p(10.0) + np.arange(1, 10) / 10)  # log residuals 0.1 .. 0.9
    lo, hi = interval_quantiles(cal_y, cal_p, 0.8)  # n = 9: ranks floor(10 * 0.1) = 1 and ceil(10 * 0.9) = 9
    assert lo == pytest.approx(0.1) and hi == pytest.approx(0.9)
    lo, hi = interval_quantiles(cal_y, cal_p, 0.5)  # ranks floor(2.5) = 2 and ceil(7.5) = 8
    assert lo == pytest.approx(0.2) and hi == pytest.approx(0.8)
    with pytest.raises(ValueError):
        interval_quantiles(cal_y, cal_p, 1.0)


def test_paired_bootstrap_of_an_rmsle_difference():
    from utils.valuation.metrics import paired_bootstrap

    rng = np.random.default_rng(0)
    y = rng.uniform(10, 100, 400)
    split = np.repeat([0, 1], 200)
    good, bad = y * np.exp(rng.normal(0, 0.1, 400)), y * np.exp(rng.normal(0, 0.3, 400))
    same = paired_bootstrap(y, good, good, split)
    assert same == {"difference": 0.0, "lo": 0.0, "hi": 0.0, "splits": 2}
    b = paired_bootstrap(y, good, bad, split)
    by_hand = np.mean([rmsle(y[split == s], good[split == s]) - rmsle(y[split == s], bad[split == s]) for s in (0, 1)])
    assert b["difference"] == pytest.approx(by_hand) and b["lo"] < b["difference"] < b["hi"] < 0


def test_preprocessor_round_trip_and_unseen_values():
    from utils.valuation.features import Preprocessor

    df = pd.DataFrame({"listing_id": list("abcd"), "title": ["x phone"] * 4, "category": ["p", "p", "q", "q"],
                       "brand": ["b1", "b2", "b1", "b1"], "msrp": [100.0, 200.0, 300.0, np.nan],
                       "price": [50.0, 80.0, 90.0, 40.0], "age_years": [1.0, 2.0, 3.0, np.nan],
                       "location": ["L1", "L2", "L1", "L1"],
                       "listed_at": pd.to_datetime(["2024-01-05", "2024-03-01", "2024-02-01", "2024-01-01"])})
    pre = Preprocessor.fit(df, np.array([0, 1, 2]), ["box"], ["age_years"])
    again = Preprocessor.from_dict(pre.to_dict())
    assert again == pre and pre.months == 3 and pre.month_origin == (2024, 1)
    new = pd.DataFrame({"listing_id": ["n"], "title": ["x"], "category": ["zzz"], "brand": ["b1"], "msrp": [np.nan],
                        "location": ["nowhere"], "listed_at": pd.to_datetime(["2030-01-01"])})
    inp = again.transform(new)
    assert int(inp.categorical["category"][0]) == 0 and int(inp.location[0]) == 0  # unseen -> unknown
    assert int(inp.month[0]) == 2 and float(inp.anchor[0]) == pytest.approx(200.0)  # last month; median msrp
    assert bool(inp.anchor_estimated[0]) and float(inp.numeric[0, 1]) == 0.0  # missing age -> training mean


def test_lightgbm_and_ridge_on_the_log_ratio_target():
    from utils.valuation.baselines import ridge_price

    rng = np.random.default_rng(0)
    msrp = rng.uniform(100, 1000, 200)
    df = pd.DataFrame({"listing_id": [str(i) for i in range(200)], "title": "item", "category": "c",
                       "msrp": msrp, "price": 0.6 * msrp})
    tr, te = np.arange(150), np.arange(150, 200)
    ratio = ridge_price(df, tr, te, target="log(price/anchor)")
    np.testing.assert_allclose(ratio, 0.6 * msrp[te], rtol=1e-3)  # the ratio is constant: learnt exactly
    with pytest.raises(ValueError, match="target"):
        ridge_price(df, tr, te, target="price")


def test_used_phones_log_prices_map_to_prices():
    import yaml

    from utils.core.paths import CONFIGS

    stage = yaml.safe_load((CONFIGS / "valuation-used-phones.yaml").read_text())["stages"]["06_hmgnet_valuation"]
    df = read_listings(ROOT / stage["listings_csv"], stage["mapping"])
    raw = pd.read_csv(ROOT / stage["listings_csv"])
    assert len(df) == 3454 and df["listing_id"].is_unique
    np.testing.assert_allclose(df["price"], np.exp(raw["normalized_used_price"]))
    np.testing.assert_allclose(df["msrp"], np.exp(raw["normalized_new_price"]))
    np.testing.assert_allclose(df["age_years"], 2021 - raw["release_year"])


def _wide_frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    words = np.array(["red phone", "blue phone case", "old laptop", "new laptop bag"])
    return pd.DataFrame({"listing_id": [f"l{i}" for i in range(n)], "title": words[rng.integers(0, 4, n)],
                         "category": np.where(np.arange(n) % 3 == 0, "a", "b"), "msrp": 100.0,
                         "price": rng.uniform(20, 90, n), "age_years": rng.uniform(0, 5, n)})


def test_the_wide_part_is_the_ridge_baseline_and_survives_saving():
    from utils.valuation.baselines import ridge_price
    from utils.valuation.features import estimate_anchor
    from utils.valuation.wide import WideModel, out_of_fold

    df, train, test = _wide_frame(), np.arange(40), np.arange(40, 60)
    anchor, estimated = estimate_anchor(df, train)
    wide = WideModel.fit(df, train, anchor, estimated, ["age_years"])
    # the same matrix and Ridge as the baseline "ridge log(price/anchor)": the same test prices
    np.testing.assert_allclose(anchor[test] * np.exp(wide.predict(df.iloc[test], anchor[test], estimated[test])),
                               ridge_price(df, train, test, ["age_years"], target="log(price/anchor)"), rtol=1e-5)
    again = WideModel.from_dict(json.loads(json.dumps(wide.to_dict())))  # through model.json
    np.testing.assert_allclose(again.predict(df, anchor, estimated), wide.predict(df, anchor, estimated))
    oof = out_of_fold(df, train, anchor, estimated, ["age_years"])
    in_sample = wide.predict(df.iloc[train], anchor[train], estimated[train])
    y = np.log(df["price"].to_numpy()[train] / anchor[train])
    assert oof.shape == (40,) and np.abs(oof - y).mean() > np.abs(in_sample - y).mean()  # not fitted on itself


def test_an_untrained_wide_and_deep_model_prices_as_the_ridge():
    from utils.valuation.features import Preprocessor
    from utils.valuation.fit import predict
    from utils.valuation.model import HMGConfig, HMGNet

    df = _wide_frame()
    pre = Preprocessor.fit(df, np.arange(40), ["case"], ["age_years"], wide=True)
    inputs = pre.transform(df, progress_bar=False)
    cfg = HMGConfig(dsca=False, structure=False, global_image=False, market=False, wide=True)
    out = predict(HMGNet(cfg, inputs), np.arange(60))
    np.testing.assert_allclose(out["price"], inputs.anchor.numpy() * np.exp(inputs.wide.numpy()), rtol=1e-5)
    with pytest.raises(ValueError, match="direct head has none"):
        HMGNet(HMGConfig(head="direct", wide=True), inputs)


def test_minilm_pooled_text_trains_saves_and_prices_new_listings_alike(tmp_path):
    """Text "minilm": the listing text's frozen MiniLM embedding (the packaged model) replaces the pooled WordLlama
    tokens; it is computed once per dataset, saved as settings (not vectors) and recomputed for new listings."""
    from utils.valuation import features
    from utils.valuation.features import Preprocessor, sentence_embeddings
    from utils.valuation.fit import predict, train
    from utils.valuation.listings import listing_text
    from utils.valuation.metrics import IntervalBounds
    from utils.valuation.model import HMGConfig, HMGNet
    from utils.valuation.saved import Valuer, save_model

    df = _wide_frame()
    settings = {"model_dir": None, "max_length": 32}
    pre = Preprocessor.fit(df, np.arange(40), ["case"], ["age_years"], sentence=settings)
    inputs = pre.transform(df, progress_bar=False)
    assert inputs.sentences.shape == (60, 384)
    np.testing.assert_allclose(inputs.sentences.norm(dim=1).numpy(), 1.0, atol=1e-5)
    same = df["title"] == df["title"].iloc[0]  # equal texts, equal embeddings; others differ
    rows = inputs.sentences[np.flatnonzero(same)]
    assert torch.allclose(rows, inputs.sentences[0].expand(len(rows), -1), atol=1e-6)
    assert not torch.allclose(inputs.sentences[0], inputs.sentences[int(np.flatnonzero(~same)[0])])
    cfg = HMGConfig(dsca=False, structure=False, global_image=False, market=False, text="minilm")
    model, _ = train(cfg, inputs, np.arange(40), np.arange(40, 50), epochs=2, batch_size=16, progress=False)
    expected = predict(model, np.arange(50, 60))["price"]
    save_model(tmp_path / "m", model, pre, IntervalBounds((-0.2, 0.2)), 0.8)
    saved = json.loads((tmp_path / "m" / "model.json").read_text())
    assert saved["preprocessor"]["sentence"] == settings and saved["config"]["text"] == "minilm"
    loads = features._sentence_model.cache_info().misses
    priced = Valuer.load(tmp_path / "m").predict(df.iloc[50:60].reset_index(drop=True))
    np.testing.assert_allclose(priced["price"].to_numpy(), expected, rtol=1e-4)
    assert features._sentence_model.cache_info().misses == loads  # the encoder loaded once per process
    first = sentence_embeddings(listing_text(df.iloc[:3]).tolist(), settings, False)
    np.testing.assert_allclose(first, inputs.sentences[:3], atol=1e-5)
    with pytest.raises(ValueError, match="sentence embeddings"):
        HMGNet(cfg, Preprocessor.fit(df, np.arange(40), ["case"]).transform(df, progress_bar=False))
    with pytest.raises(ValueError, match="wordllama or minilm"):
        HMGNet(HMGConfig(text="bert"), inputs)


def test_mondrian_bounds_per_group_with_a_fallback():
    from utils.valuation.metrics import IntervalBounds, calibrate

    y = np.ones(30)
    p = np.r_[np.full(20, np.e - 1), np.ones(10)]  # group a: log residuals log(2) - 1; group b: 0
    groups = np.array(["a"] * 20 + ["b"] * 10)
    b = calibrate(y, p, 0.8, groups, "category", min_rows=20)
    assert set(b.groups) == {"a"} and b.groups["a"] == pytest.approx((np.log(2) - 1, np.log(2) - 1))
    lo, hi = b.for_rows(np.array(["a", "b", "c"]))
    assert lo[0] == pytest.approx(np.log(2) - 1) and lo[1] == lo[2] == b.overall[0]  # b, c: too few / unseen
    assert IntervalBounds.from_dict(b.to_dict()) == b
    assert calibrate(y, p, 0.8).for_rows(None) == b.overall


def test_group_scales_by_hand_and_normalised_bounds_for_small_groups():
    from utils.valuation.metrics import IntervalBounds, calibrate, group_scales

    # validation residuals: group a all 0.1, group b all 0.3 (log1p space); overall mean square 0.05
    val_p = np.ones(4)
    val_y = np.expm1(np.log1p(val_p) + np.array([0.1, 0.1, 0.3, 0.3]))
    scales = group_scales(val_y, val_p, np.array(["a", "a", "b", "b"]), shrink=2.0)
    assert scales["a"] == pytest.approx(np.sqrt((0.02 + 2 * 0.05) / 4 / 0.05))
    assert scales["b"] == pytest.approx(np.sqrt((0.18 + 2 * 0.05) / 4 / 0.05))
    # calibration: 9 rows, residual = scale x (-1 .. +1): normalised scores are exactly -1, -0.75, ..., +1
    groups = np.array(["a", "b", "a", "b", "a", "b", "a", "b", "a"])
    z = np.linspace(-1, 1, 9)
    scale = np.array([scales[g] for g in groups])
    cal_p = np.full(9, 10.0)
    cal_y = np.expm1(np.log1p(cal_p) + z * scale)
    b = calibrate(cal_y, cal_p, 0.8, groups, "category", min_rows=10, scales=scales)
    assert not b.groups  # no group has 10 calibration rows
    assert b.normalised == pytest.approx((-1.0, 1.0))  # ranks 1 and 9 of 9 at the 80% level
    lo, hi = b.for_rows(np.array(["a", "b", "new"]))
    np.testing.assert_allclose(hi, [scales["a"], scales["b"], 1.0])  # the harder group gets the wider interval
    np.testing.assert_allclose(lo, -hi)
    assert IntervalBounds.from_dict(json.loads(json.dumps(b.to_dict()))) == b  # through model.json
    with pytest.raises(ValueError, match="groups"):
        calibrate(cal_y, cal_p, 0.8, scales=scales)


def test_coverage_funnel_and_the_noise_floor_of_a_per_group_goal_by_hand():
    from scipy.stats import binom

    from utils.stages.valuation import coverage_goal
    from utils.valuation.metrics import coverage_funnel, expected_below, expected_outside

    # 10 rows covered at exactly 80%: P(X <= 4) = 0.0064 < 0.025 <= P(X <= 5) = 0.0328, and P(X <= 9) = 0.893
    lo, hi = coverage_funnel(np.array([10]), 0.8)
    assert (lo[0], hi[0]) == (0.5, 1.0)
    # outside [5, 10] of 10 by chance: 4 or fewer covered, 0.0064 (far under the nominal 0.05: 10 rows are discrete)
    assert expected_outside(np.array([10, 10]), 0.8) == pytest.approx(2 * 0.00636938, abs=1e-8)
    # below 0.70 with 10 rows is 6 covered or fewer: 1 - P(7) - P(8) - P(9) - P(10) = 0.1209 per group
    assert expected_below(np.array([10, 10]), 0.8, 0.7) == pytest.approx(2 * 0.12087388, abs=1e-8)
    # 0.7 x 30 is 21.000000000000004 in floating point: 21 of 30 is not below 0.70, 20 is
    assert expected_below(np.array([30]), 0.8, 0.7) == pytest.approx(binom.cdf(20, 30, 0.8))
    with pytest.raises(ValueError, match="at least one test row"):
        coverage_funnel(np.array([0, 5]), 0.8)

    # a: 27 of 40 covered (below 0.70 but inside its funnel, whose lower end is 27); b: 29 of 30 (over the funnel's
    # 28); c: 1 of 5, too small for the goal but outside its funnel (2 of 5); "all" is not a group
    t = pd.DataFrame({"test_rows": [40, 30, 5, 75], "coverage": [27 / 40, 29 / 30, 0.2, 0.76]},
                     index=pd.Index(["a", "b", "c", "all"], name="group"))
    t["funnel_lo"], t["funnel_hi"] = coverage_funnel(t["test_rows"].to_numpy(), 0.8)
    goal = coverage_goal(t, 0.8)
    assert goal["groups"] == 2 and goal["below"] == {"a": 27 / 40}
    assert goal["expected_below_by_chance"] == pytest.approx(binom.cdf(27, 40, 0.8) + binom.cdf(20, 30, 0.8))
    assert goal["groups_in_funnel"] == 3 and set(goal["outside_funnel"]) == {"b", "c"}
    assert goal["expected_outside_by_chance"] == pytest.approx(expected_outside(np.array([40, 30, 5]), 0.8))

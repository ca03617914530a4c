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
    mk.generate(out, n=120, seed=3)
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


def test_true_delta_parts_by_hand():
    cat = mk.CATEGORIES[0]  # phone: rate 0.45, accessories charger, box, case
    item = mk.Listing(cat, 1, 500.0, 2.0, "crack", 0.5, (1, 1, 5, 5), ("charger",), "Leeds", mk.START)
    parts = mk.true_delta(item)
    assert parts["age_part"] == pytest.approx(0.9 * (1 - math.exp(-0.9)))
    assert parts["defect_part"] == pytest.approx(0.22)
    assert parts["accessory_part"] == pytest.approx(0.025 + 0.02)  # box and case missing
    assert parts["market"] == pytest.approx(0.0)  # Leeds, listed on the start date
    assert parts["delta_clean"] == pytest.approx(parts["entity"])


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


def test_valuation_notebook_on_generated_market(tmp_path):
    from utils.core.paths import CONFIGS
    from utils.run import pipeline

    data = tmp_path / "market"
    cfg = pipeline.load_config(CONFIGS / "valuation-synth.yaml", [
        f"run={tmp_path / 'run'}", f"06_hmgnet_valuation.listings_csv={data / 'listings.csv'}",
        f"06_hmgnet_valuation.images_dir={data / 'images'}", f"06_hmgnet_valuation.truth_csv={data / 'truth.csv'}",
        "06_hmgnet_valuation.generate={n: 100, seed: 1}", "06_hmgnet_valuation.epochs=1",
        "06_hmgnet_valuation.seeds=[0]", "06_hmgnet_valuation.fractions=[1.0]",
        "06_hmgnet_valuation.attribution_listings=2"])
    rows = pipeline.run(cfg)
    assert rows[0]["metric"] == "hmgnet_test_rmsle"
    out = tmp_path / "run" / "06_hmgnet_valuation"
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["baselines"]) == {"lightgbm tfidf+tabular", "ridge tfidf+tabular", "anchor x category median"}
    assert list(m["ablation"]) == ["global only", "+ DSCA", "full (+ structure)"]
    assert 0 <= m["attribution"]["pointing_game"] <= 1 and m["attribution"]["listings"] == 2
    assert len(m["market_curve"]) == 8 and 0 < m["models"]["HMG-Net (anchor)"]["interval_coverage"] <= 1
    for png in ("ablation.png", "anchor.png", "attribution.png", "market.png"):
        assert (out / png).exists()


def test_valuation_notebook_on_cardekho_without_images(tmp_path):
    from utils.core.paths import CONFIGS
    from utils.run import pipeline

    cfg = pipeline.load_config(CONFIGS / "valuation-cardekho.yaml", [
        f"run={tmp_path / 'run'}", "06_hmgnet_valuation.epochs=2", "06_hmgnet_valuation.seeds=[0, 1]",
        "06_hmgnet_valuation.fractions=[1.0]"])
    pipeline.run(cfg)
    m = json.loads((tmp_path / "run" / "06_hmgnet_valuation" / "metrics.json").read_text())
    assert m["ablation"] is None and m["attribution"] is None and m["market_curve"] is None
    assert {r["head"] for r in m["few_shot"]} == {"depreciation", "direct"} and len(m["few_shot"]) == 4

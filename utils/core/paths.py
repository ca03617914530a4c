"""Path constants from the project root, so notebooks and scripts agree wherever they run."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
CONFIGS = ROOT / "configs"
INPUTS = ROOT / "inputs"
OUTPUTS = ROOT / "outputs"
RUNS = OUTPUTS / "runs"
SAMPLES = INPUTS / "samples"  # the real public samples shipped in the repository (inputs/samples/README.md)

# stage folder names inside a run folder (the stage table, utils.run.stages, describes each)
EDA, TRAIN, EMBED, KNN, POSTPROCESS, STACKER, VALUATION = (
    "00_eda", "01_train_arcface", "02_embed", "03_knn", "04_postprocess", "05_stacker", "06_hmgnet_valuation")

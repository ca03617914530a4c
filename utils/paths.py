"""Path constants from the project root, so notebooks and scripts agree wherever they run."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CONFIGS = ROOT / "configs"
INPUTS = ROOT / "inputs"
OUTPUTS = ROOT / "outputs"
RUNS = OUTPUTS / "runs"
SAMPLES = INPUTS / "samples"  # the real public samples shipped in the repository (inputs/samples/README.md)

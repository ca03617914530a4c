"""Path constants from the project root, so notebooks and scripts agree wherever they run."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CONFIGS = ROOT / "configs"
INPUTS = ROOT / "inputs"
OUTPUTS = ROOT / "outputs"
RUNS = OUTPUTS / "runs"
SHARED_DATA = ROOT.parent / "shared" / "data"

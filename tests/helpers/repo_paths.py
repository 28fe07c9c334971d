"""Where the repository and its configs are, for tests in any folder under tests/ (and the
scripts they start), so that no test works it out from its own place."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "configs"

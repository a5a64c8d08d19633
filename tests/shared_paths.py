"""Where the shared test data lives: ``../shared`` beside the repository root."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
SHARED_REFERENCE = SHARED / "reference"
SHARED_BENCH = SHARED / "bench"

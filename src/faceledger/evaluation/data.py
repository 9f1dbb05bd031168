"""What each evaluation needs from the data folder, checked before any work starts."""

from __future__ import annotations

from pathlib import Path

from faceledger.errors import DataMissing

# name -> (what it is, path inside the data folder, a glob that must match at least once or None)
DATASETS = {
    "lfw-pairs": ("LFW's protocol file pairs.txt", "lfw/pairs.txt", None),
    "lfw-images": ("LFW's images (lfw/NAME/NAME_0001.jpg)", "lfw", "*/*.jpg"),
    "lfw-demographics": ("LFW's demographic labels", "lfw/demographics.csv", None),
    "utkface": ("the UTKFace sample and its labels.csv", "utkface_sample/labels.csv", None),
}
NEEDS = {
    "eval lfw": ("lfw-pairs", "lfw-images"),
    "eval lfw-identify": ("lfw-images",),
    "eval calibrate": ("lfw-images",),
    "eval open-set": ("lfw-images",),
    "report": ("lfw-pairs", "lfw-images", "lfw-demographics", "utkface"),
}


def require(data_dir: Path, command: str) -> None:
    """Raise DataMissing naming the first missing piece and where it is expected (one line)."""
    for name in NEEDS[command]:
        what, rel, pattern = DATASETS[name]
        path = Path(data_dir) / rel
        present = path.is_dir() and any(path.glob(pattern)) if pattern else path.is_file()
        if not present:
            raise DataMissing(f"{command} needs {what}, expected at {path.resolve()} (set --data or "
                              "FACELEDGER_DATA_DIR; the README's 'Evaluation data' says how to lay it out)",
                              expected=str(path.resolve()), dataset=name)

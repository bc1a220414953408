"""What the docs and docstrings name exists: every `datagen.x.y` / `ormbg.x.y` path imports."""

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"(?<![\w./-])((?:datagen|ormbg)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
FILE_SUFFIXES = {"pth", "onnx", "safetensors", "md", "py", "yaml", "json", "png", "jpg", "pt", "txt"}


def named_paths() -> dict[str, str]:
    """Dotted module paths in README.md, docs/*.md and the packages' source, with where each was first seen."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted(p for package in ("datagen", "ormbg") for p in (ROOT / package).rglob("*.py"))
    found = {}
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for name in NAME.findall(line):
                if name.rsplit(".", 1)[-1] not in FILE_SUFFIXES:
                    found.setdefault(name, f"{path.relative_to(ROOT)}:{number}")
    return found


def resolves(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(value, attribute):
                return False
            value = getattr(value, attribute)
        return True
    return False


def test_every_module_path_the_docs_name_imports():
    found = named_paths()
    assert len(found) > 30, "the scan finds the names"
    missing = {name: where for name, where in found.items() if not resolves(name)}
    assert not missing, f"named but not importable: {missing}"

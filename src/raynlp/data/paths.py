"""Where data files are: plain paths, or ``sample://NAME`` for the samples shipped in the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SAMPLE_SCHEME = "sample://"


def samples_dir() -> Path:
    return Path(str(resources.files("raynlp") / "data" / "samples"))


def available_samples() -> list[str]:
    return sorted(
        p.name
        for p in samples_dir().iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name != "README.md"
    )


def resolve_data_path(value: str) -> Path:
    """Turn a config value into an existing file path, or raise FileNotFoundError saying why."""
    if value.startswith(SAMPLE_SCHEME):
        name = value.removeprefix(SAMPLE_SCHEME)
        path = samples_dir() / name
        if not path.is_file():
            raise FileNotFoundError(
                f"no shipped sample {name!r}; available: {', '.join(available_samples())}"
            )
        return path
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {value} (relative paths start at {Path.cwd()})")
    return path

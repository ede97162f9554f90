"""Reads configuration from the environment or `.env`, with a `NAME_FILE` variant for mounted secrets."""

from pathlib import Path

from decouple import config, undefined


def env(name: str, default=undefined, cast=undefined):
    """Return setting `name`; when `NAME_FILE` is set, the value is that file's content.

    Secrets mounted as files (Docker or Kubernetes secrets) are read this way so
    they never need to sit in the process environment.
    """
    file_path = config(f"{name}_FILE", default="")
    if file_path:
        value = Path(file_path).read_text(encoding="utf-8").strip()
        return value if cast is undefined else cast(value)
    return config(name, default=default, cast=cast)

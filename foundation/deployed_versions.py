"""The deployed-version store, a file contract shared by the server and the deployment orchestrator.

    models/deployed/<version>/   a HF model folder (safetensors) + deploy_info.json
    models/deployed/current      a one-line text file naming the active version

Both sides read it through these functions, so neither imports the other.
"""
from __future__ import annotations

import re
from pathlib import Path

from foundation.paths import PathEscapeError, Paths, is_within, safe_join

BASE_VERSION = "base"
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEFAULT_DIR = "models/deployed"


class VersionError(ValueError):
    """A version name that is malformed (``status`` 400) or not deployed (404); ``reason`` is a stable code."""

    def __init__(self, status: int, message: str, reason: str):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


def current_file(paths: Paths, model_dir: str = DEFAULT_DIR) -> Path:
    return paths.resolve(model_dir) / "current"


def read_current_version(paths: Paths, model_dir: str = DEFAULT_DIR) -> str | None:
    """The version named by ``models/deployed/current`` (None when nothing is deployed)."""
    try:
        text = current_file(paths, model_dir).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None
    return text or None


def resolve_version(paths: Paths, version: str, model_dir: str = DEFAULT_DIR) -> Path:
    """Folder of a deployed version; refuses names that leave the deployed folder."""
    if not isinstance(version, str) or not version:
        raise VersionError(400, "'version' must be a non-empty string", "invalid_type")
    if not VERSION_RE.match(version):
        raise VersionError(400, f"version {version!r} is not a plain version name under models/deployed/ "
                                "(letters, digits, '.', '_', '-'; no path separators)", "path_outside_models")
    root = paths.resolve(model_dir)
    try:
        folder = safe_join(root, version)
    except PathEscapeError:
        raise VersionError(400, f"version {version!r} resolves outside {root}", "path_outside_models") from None
    if not is_within(paths.models, folder):
        raise VersionError(400, f"version {version!r} resolves outside the models folder", "path_outside_models")
    if not (folder / "config.json").is_file():
        raise VersionError(404, f"no deployed version {version!r} (expected {folder}/config.json)",
                           "version_not_found")
    return folder

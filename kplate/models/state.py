"""Loading saved state_dicts into the package's model code."""

from __future__ import annotations

from pathlib import Path

import torch

from kplate.errors import WeightsError


def _load_state(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path} (train with `make train`)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot load weights {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state_dict")
    return state


def load_weights(model: torch.nn.Module, path: Path, device: torch.device | None = None) -> None:
    """Load the state_dict saved at ``path`` into ``model``.

    Raises:
        WeightsError: the file is missing, unreadable or does not fit the model code.
    """
    try:
        model.load_state_dict(_load_state(path, device or torch.device("cpu")))
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not match the model code: {exc}") from exc

"""Small text helpers shared by the sources."""

from __future__ import annotations

import pandas as pd

from rlaf_ray.config import DataSettings


def length_mask(text: pd.Series, cfg: DataSettings) -> pd.Series:
    """Rows whose text has ``min_chars``..``max_chars`` characters (missing text never passes)."""
    lengths = text.fillna("").astype(str).str.len()
    keep = text.notna() & (lengths >= cfg.min_chars)
    if cfg.max_chars is not None:
        keep &= lengths <= cfg.max_chars
    return keep


def within_length(text: str, cfg: DataSettings) -> bool:
    return cfg.min_chars <= len(text) and (cfg.max_chars is None or len(text) <= cfg.max_chars)

"""Paper-style figures, written as PNG + PDF."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # in a notebook the inline backend shows each figure in its cell; headless: Agg
import seaborn as sns

from forgetlab.core.utils import atomic_path


def set_style() -> None:
    """One consistent look for every figure: seaborn paper context, colour-blind palette."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.2)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight",
                         "pdf.fonttype": 42, "svg.hashsalt": "forgetlab", "axes.titleweight": "bold"})


def save_figure(fig, out_dir: str | Path, name: str, formats=("png", "pdf")) -> None:
    """Save `fig` as out_dir/name.{png,pdf} (atomically). PDF metadata carries no date, so the same figure gives
    the same bytes. The figure stays open, so a notebook cell shows it (and nothing else: no return value)."""
    for fmt in formats:
        path = Path(out_dir) / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            meta = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
            fig.savefig(tmp, format=fmt, metadata=meta)


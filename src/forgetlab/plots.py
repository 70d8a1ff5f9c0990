"""Paper-style figures, written as PNG + PDF."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from .utils import atomic_path  # noqa: E402


def set_style() -> None:
    """One consistent look for every figure: seaborn paper context, colour-blind palette."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.2)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight",
                         "pdf.fonttype": 42, "svg.hashsalt": "forgetlab", "axes.titleweight": "bold"})


def save_figure(fig, out_dir: str | Path, name: str, formats=("png", "pdf")) -> list[Path]:
    """Save `fig` as out_dir/name.{png,pdf} (atomically) and return the paths. PDF metadata carries no date,
    so the same figure gives the same bytes."""
    paths = []
    for fmt in formats:
        path = Path(out_dir) / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            meta = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
            fig.savefig(tmp, format=fmt, metadata=meta)
        paths.append(path)
    return paths

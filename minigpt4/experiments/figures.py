"""The report's PNG figures: ours as bars, the paper's value of the same row as a black marker, AUC above UAUC."""

from minigpt4.experiments.definitions import TABLES, paper_value
from minigpt4.fileio import atomic_write


def figure_rows():
    """{file name: report rows it draws}. methods.png: Table 2 and the ablations not already in it (BinMF, -IO,
    -IT; BinLLM-TO is TALLRec and BinLLM its own row)."""
    ablations = TABLES["ablations"].rows
    return {"methods.png": TABLES["main"].rows + ablations[:1] + ablations[2:4],
            "warm_cold.png": TABLES["warm_cold"].rows,
            "compression.png": TABLES["compression"].rows,
            "code_length.png": TABLES["code_length"].rows}


def _bars(ax, labels, ours, paper, title):
    """Ours as bars, the paper's value of the same row as a black marker."""
    xs = range(len(labels))
    ax.bar(xs, [v if v is not None else 0 for v in ours], color="tab:blue", label="ours")
    px = [x for x, v in zip(xs, paper) if v is not None]
    ax.scatter(px, [v for v in paper if v is not None], color="black", marker="_", s=300, zorder=3, label="paper")
    ax.set_xticks(list(xs), labels, rotation=45, ha="right", fontsize=8)
    values = [v for v in list(ours) + list(paper) if v is not None]
    ax.set_ylim(min([0.4] + [v - 0.05 for v in values]), max([0.9] + [v + 0.05 for v in values]))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def write_figures(folder, dataset, metrics):
    # imported here: matplotlib takes a second to load and only the report draws
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    for name, rows in figure_rows().items():
        fig, axes = plt.subplots(2, 1, figsize=(max(5, 0.55 * len(rows) + 2), 8))
        for i, (ax, metric) in enumerate(zip(axes, ("AUC", "UAUC"))):
            ours = [(metrics.get(step, {}).get(split) or {}).get(metric.lower()) if step else None
                    for _, step, split, _, _ in rows]
            paper = [(paper_value(dataset, src, key) or (None, None))[i] for _, _, _, key, src in rows]
            _bars(ax, [r[0] for r in rows], ours, paper, f"{dataset} {metric}")
        fig.tight_layout()
        atomic_write(folder / name, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
        plt.close(fig)

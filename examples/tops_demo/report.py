"""The fidelity table, as Markdown (printed and written) and JSON."""

from __future__ import annotations

import numpy as np

__all__ = ["COLUMNS", "markdown_table", "mean_rows"]

#: Measure key -> (column header, format).
COLUMNS = {
    "coverage": ("coverage f_cov(S)/f_cov(V)", "{:.3f}"),
    "cls_fidelity": ("CLS attn-out cos", "{:.4f}"),
    "patch_fidelity": ("patch attn-out cos", "{:.4f}"),
    "attention_mass": ("attention mass kept", "{:.3f}"),
    "f_over_ub": ("f / UB", "{:.3f}"),
    "ms": ("select ms", "{:.1f}"),
}


def markdown_table(by_budget: dict[str, dict[str, dict]]) -> str:
    """``{budget label: {method: measures}}`` as one Markdown table, budgets stacked."""
    head = ["pruning", "method", *(h for h, _ in COLUMNS.values())]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for budget, methods in by_budget.items():
        best = {key: max(m[key] for m in methods.values()) for key in COLUMNS if key != "ms"}
        for method, measures in methods.items():
            cells = [budget, method]
            for key, (_, fmt) in COLUMNS.items():
                text = fmt.format(measures[key])
                if key in best and np.isclose(measures[key], best[key], rtol=0, atol=5e-5):
                    text = f"**{text}**"
                cells.append(text)
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_rows(rows: list[dict]) -> dict:
    """Mean of each numeric measure over ``rows`` (images, or random draws)."""
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}

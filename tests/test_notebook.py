"""The report notebook runs top to bottom on the committed results and shipped model."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_report_notebook_executes_without_errors(shipped_model):
    notebook = nbformat.read(REPO_ROOT / "report.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO_ROOT)}}).execute()  # raises on any cell error
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    errors = [f"{output['ename']}: {output['evalue']}" for output in outputs if output["output_type"] == "error"]
    assert not errors, errors
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    # Filter banks, single filters, cut-offs, distances + dendrogram, timelines, ROC/DET, t-SNE, pipeline steps.
    assert len(images) >= 6, f"expected at least 6 figures, got {len(images)}"

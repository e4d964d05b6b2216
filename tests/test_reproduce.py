"""``budgetnas reproduce`` smoke run on a tiny slice through the real CLI."""

from __future__ import annotations

import json
import re

import pytest

from conftest import assert_one_line_error


@pytest.mark.slow
def test_reproduce_writes_markdown_and_html_with_ours_next_to_the_paper(cli, tiny_npz, tmp_path):
    out = tmp_path / "rep"
    proc = cli("reproduce", "fcn-50k", "cnn-10k+bn", "--dataset", f"npz:{tiny_npz}", "--epochs", "1",
               "--device", "cpu", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "[1/2] fcn-50k epoch 1/1" in proc.stderr and "[2/2] cnn-10k+bn" in proc.stderr and "ETA" in proc.stderr
    results = json.loads((out / "results.json").read_text())
    ours = {r["name"]: r for r in results["runs"]}
    assert set(ours) == {"fcn-50k", "cnn-10k+bn"}
    markdown = (out / "RESULTS.md").read_text()
    page = (out / "results.html").read_text()
    for text in (markdown, page, proc.stdout):
        assert "As counted" in text
        assert "87.42%" in text and "89.29%" in text  # the paper's test accuracies (percent, 2 decimals everywhere)
        assert "46,580" in text and "9,304" in text  # our weights (cnn-10k+bn has 112 BN parameters)
        assert "2m 25.98s" in text and "6m 15.81s" in text  # the paper's CPU-only times
        for run in ours.values():
            assert f"{run['test_accuracy'] * 100:.2f}%" in text  # our measured test accuracy
    diff = ours["fcn-50k"]["test_accuracy"] * 100 - 87.4219
    assert f"{diff:+.2f}" in markdown
    assert re.search(r"\| fcn-50k \| 46,580 \| 46,580 \| \+0 \|", markdown)
    assert "<table>" in page and "<td>cnn-10k+bn</td>" in page
    assert "Command: `budgetnas reproduce fcn-50k" in markdown
    # Another dataset and other epochs than the paper's are said; a time ratio over 1 epoch against 20 is left out.
    assert f"Trained on npz:{tiny_npz}, not the paper's Fashion-MNIST" in markdown
    assert "Trained for 1 epoch instead of the paper's" in markdown
    assert not re.search(r"\| \d+\.\d+x \|", markdown)
    for name in ours:
        assert (out / "models" / name / "model.pt").is_file()


def test_reproduce_rejects_unknown_names_before_training(cli, tmp_path):
    proc = cli("reproduce", "cnn-10k", "cnn-3k", "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, 2, "cnn-3k")
    assert not (tmp_path / "r" / "models").exists()

"""autograder/cnnlab_nbgrader.py's AltText: every figure in the feedback HTML has
alternative text.

Fast (no kernel, no nbgrader run): a notebook with the outputs a kernel gives for a figure
of cnnlab's, a bare matplotlib figure and one that already has alternative text is turned
into HTML by nbconvert's exporter, as ``nbgrader generate_feedback`` does (its feedback
template extends the classic one), with and without the preprocessor.
"""

from __future__ import annotations

import base64
import io
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "autograder"))
nbconvert = pytest.importorskip("nbconvert")

import cnnlab_nbgrader as course  # noqa: E402

MISSING = "No description has been provided for this image"  # nbconvert's stand-in


def _displayed(fig) -> dict:
    """The data a notebook kernel sends for ``fig``: its PNG and its text form."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return {"image/png": base64.b64encode(buf.getvalue()).decode() + "\n",
            "text/plain": repr(fig)}


def feedback_notebook():
    """A lesson-like notebook: a cnnlab figure, a bare matplotlib one under a markdown
    cell, and a student's image that brings its own alternative text."""
    import numpy as np
    from matplotlib.figure import Figure

    import cnnlab

    new = nbformat.v4
    confusion = cnnlab.plot_confusion(np.eye(3), ["cat", "dog", "frog"], np.ones(3))
    bare = Figure(figsize=(1, 1))
    bare.add_subplot().plot([0, 1], [1, 0])
    own = new.new_output("display_data", _displayed(bare))
    own.metadata = {"image/png": {"alt": "my own drawing"}}
    return new.new_notebook(cells=[
        new.new_code_cell("cnnlab.plot_confusion(...)", id="confusion", outputs=[
            new.new_output("execute_result", _displayed(confusion), execution_count=1)]),
        new.new_markdown_cell("### Class means\n\n**How each unit responds** to each class, "
                              "against its `average`. More text follows.", id="means_md"),
        new.new_code_cell("fig", id="class_means", outputs=[
            new.new_output("execute_result", _displayed(bare), execution_count=2)]),
        new.new_code_cell("display(fig)", id="mine", outputs=[own]),
    ])


class _Images(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.alts = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.alts.append(dict(attrs).get("alt"))


def _image_alts(nb, *preprocessors) -> list[str | None]:
    exporter = nbconvert.HTMLExporter(template_name="classic")
    for p in preprocessors:
        exporter.register_preprocessor(p, enabled=True)
    parser = _Images()
    parser.feed(exporter.from_notebook_node(nb)[0])
    return parser.alts


def test_every_image_in_the_feedback_has_meaningful_alternative_text():
    alts = _image_alts(feedback_notebook(), course.AltText)
    assert alts == [
        "Confusion matrix (fraction of each true class); overall accuracy 100.0%",
        "Figure of cell class_means: Class means How each unit responds to each class, "
        "against its average.",
        "my own drawing",
    ]


def test_without_it_nbconvert_has_no_description():
    """The check can fail: the same notebook without the preprocessor."""
    assert _image_alts(feedback_notebook()) == [MISSING, MISSING, "my own drawing"]


def test_alt_text_rules():
    out = nbformat.v4.new_output("display_data", {"image/png": "", "text/plain": "a cat"})
    assert course.alt_text(out, "c", "") == "a cat"  # an informative text form is kept
    out.data["text/plain"] = "<Figure size 640x480 with 1 Axes>"
    assert course.alt_text(out, "c", "") == "Figure of cell c"
    long = "word " * 100
    assert course.alt_text(out, "c", long).endswith("…")
    assert len(course.alt_text(out, "c", long)) <= len("Figure of cell c: ") + 200
    nb = feedback_notebook()
    assert course.add_alt_text(nb) == 2 and course.add_alt_text(nb) == 0  # once only


def test_the_feedback_configuration_runs_it():
    text = (ROOT / "autograder" / "nbgrader_config.py").read_text()
    feedback = text.split("c.GenerateFeedback.preprocessors")[1].split("]")[0]
    assert "course.AltText" in feedback


def test_a_students_text_becomes_alt_text_as_text_only():
    """A student's output decides the alt text (its text form): quotes and tags in it stay
    inside the attribute, never a new attribute or element."""
    from matplotlib.figure import Figure

    bare = Figure(figsize=(1, 1))
    data = {**_displayed(bare), "text/plain": 'x" onerror="alert(1)"><script>alert(2)</script>'}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fig", id="mine", outputs=[
        nbformat.v4.new_output("display_data", data)])])
    exporter = nbconvert.HTMLExporter(template_name="classic")
    exporter.register_preprocessor(course.AltText, enabled=True)
    html = exporter.from_notebook_node(nb)[0]
    images = []

    class Images(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                images.append(dict(attrs))

    Images(convert_charrefs=True).feed(html)
    assert images and images[0]["alt"] == data["text/plain"]
    assert "onerror" not in images[0] and "<script>alert(2)" not in html

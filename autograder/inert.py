"""What a student wrote, made inert before an instructor's browser shows it.

formgrader's manual-grading page and the feedback HTML are rendered by nbconvert from the
autograded notebook, inside pages that need their own inline scripts (so no
Content-Security-Policy can forbid scripts there): markdown and raw cells are inserted as
HTML, ``text/html`` outputs verbatim, ``application/javascript`` outputs as ``<script>``.
:class:`MakeInert` rewrites the notebook instead, so that every renderer shows it inert:

- a markdown or raw cell whose HTML holds anything outside :data:`TAGS` / :data:`ATTRIBUTES`
  (a script, an event handler, a ``javascript:`` link, an iframe, a comment...) is shown as
  text: a note naming what was found, then its source verbatim in a code block;
- a ``text/html`` output is cleaned with ``nh3`` (the same allow-list), with the note first
  when something was removed; a ``text/markdown`` output like a markdown cell;
- a JavaScript output is removed and a note put in its place; an image output whose data is
  not plain base64 is removed with a note; cell attachments must be images in base64;
- widget outputs stay as data (nothing here runs them); the notebook's widget state, which
  would make nbconvert load the widget manager, is removed.

Honest work is left as it was: text, matplotlib's PNGs, the lesson's markdown.
"""

from __future__ import annotations

import re
from html import escape
from html.parser import HTMLParser

import nh3
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

#: HTML tags a student's markdown or output may contain (what markdown itself produces,
#: tables, images, plain formatting).
TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del",
    "details", "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5",
    "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp",
    "small", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th",
    "thead", "tr", "tt", "u", "ul", "var"})
#: Attributes allowed per tag ("*": on every tag). No ``style`` (CSS can fetch URLs) but
#: the table alignment markdown writes, no ``id`` but on headings (markdown's anchors).
ATTRIBUTES = {"*": {"class", "title", "align", "lang", "dir"}, "a": {"href"},
              "img": {"src", "alt", "width", "height"}, "ol": {"start", "type"},
              "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan", "scope"},
              "col": {"span"}, "colgroup": {"span"}, "details": {"open"},
              **{f"h{k}": {"id"} for k in range(1, 7)}}
_ALIGN = {f"text-align:{a}" for a in ("left", "right", "center")}
#: Values an attribute may only take (the attribute is dropped otherwise).
VALUES = {"td": {"style": _ALIGN}, "th": {"style": _ALIGN}}
#: Schemes a link may use (relative links and #anchors are allowed too).
LINK_SCHEMES = frozenset({"http", "https", "mailto"})
#: An image held in the notebook (what an ``img src`` may be, besides a cell attachment or a
#: relative path; never a remote address: the browser fetches nothing a student chose).
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]*$", re.I)
SCRIPT_TYPES = frozenset({"application/javascript", "text/javascript", "application/x-javascript",
                          "application/ecmascript", "text/ecmascript"})
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
#: A transparent 1x1 GIF: what an attachment that is not an image becomes.
BLANK_GIF = "R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]*$")
#: URLs in text (outside code) that a renderer could still act on: MathJax's ``\href``.
_DENY = re.compile(r"(?i)(java|vb)script\s*:|data\s*:\s*text/html")
_LABEL = "cnnlab autograder"


def _as_read(url: str) -> str:
    """A URL as a browser reads it: without whitespace and controls, ``\\`` as ``/``."""
    return re.sub(r"[\x00-\x20\x7f]", "", url).replace("\\", "/")


def _scheme(url: str) -> str | None:
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*):", _as_read(url))
    return m[1].lower() if m else None


def _keep_attribute(tag: str, attr: str, value: str) -> str | None:
    """``attribute_filter`` of :func:`clean_html`: the URL checks (``None``: dropped)."""
    if attr == "src":
        url, scheme = _as_read(value), _scheme(value)
        ok = (scheme is None and not url.startswith("//") or scheme == "attachment"
              or scheme == "data" and _DATA_IMAGE.match(url))
        return value if ok else None
    if attr == "href":
        scheme = _scheme(value)
        return value if scheme is None or scheme in LINK_SCHEMES else None
    return value


def clean_html(html: str) -> str:
    """``html`` with everything outside the allow-list removed (``nh3``, a browser's parser):
    no script, no event handler, no URL but http(s)/mailto links and images held inline."""
    return nh3.clean(html, tags=set(TAGS), clean_content_tags={"script", "style", "template"},
                     attributes={k: set(v) for k, v in ATTRIBUTES.items()},
                     tag_attribute_values={t: {a: set(v) for a, v in d.items()}
                                           for t, d in VALUES.items()},
                     attribute_filter=_keep_attribute, url_schemes=set(LINK_SCHEMES) | {
                         "data", "attachment"}, link_rel=None, strip_comments=True)


class _Events(HTMLParser):
    """The tags and attributes of an HTML fragment, in order, and what is not a tag."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.other, self.text, self.code = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, tuple(sorted((a, v or "") for a, v in attrs))))
        self.code += tag in ("pre", "code")

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, tuple(sorted((a, v or "") for a, v in attrs))))

    def handle_endtag(self, tag):
        self.code -= tag in ("pre", "code") and self.code > 0

    def handle_data(self, data):
        if not self.code:
            self.text.append(data)

    def handle_comment(self, data):
        self.other.append("comment")

    def handle_decl(self, decl):
        self.other.append("declaration")

    def handle_pi(self, data):
        self.other.append("processing instruction")

    def unknown_decl(self, data):
        self.other.append("declaration")


def _events(html: str) -> _Events:
    parser = _Events()
    parser.feed(html)
    parser.close()
    return parser


def _shape(tags):
    return [t for t in tags if t[0] != "tbody"]  # a parser adds the tbody a table implies


def _word(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "", text)[:30] or "?"


def unsafe_parts(html: str) -> list[str]:
    """What in ``html`` a browser could run or fetch, in words (``[]``: nothing, it is shown
    as it is). Compares the fragment with :func:`clean_html`'s version of it, tag by tag and
    attribute by attribute, so that a fragment two parsers read differently is unsafe too."""
    found = _events(html)
    kept = _events(clean_html(html)).tags
    words = list(found.other)
    for tag, attrs in found.tags:
        if tag not in TAGS:
            words.append(f"tag {_word(tag)}")
            continue
        for name, value in attrs:
            if name in VALUES.get(tag, {}):
                ok = value in VALUES[tag][name]
            else:
                ok = name in ATTRIBUTES.get(tag, set()) | ATTRIBUTES["*"]
            if not ok:
                words.append(f"attribute {_word(name)}")
            elif _keep_attribute(tag, name, value) is None:
                words.append(f"{_word(name)} {_word(_scheme(value) or 'address')}")
    if not words and _shape(found.tags) != _shape(kept):
        words.append("HTML read differently by two parsers")
    m = _DENY.search("".join(found.text))
    if m:
        words.append(_word(m[0].replace(" ", "")))
    return list(dict.fromkeys(words))


def _note(found: list[str]) -> str:
    return (f"[{_LABEL}: shown as text, not rendered: it held HTML a browser would act on "
            f"({', '.join(found)})]")


def _as_text(source: str, found: list[str]) -> str:
    """Markdown that shows ``source`` verbatim in a code block, under a note."""
    fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", source)), default=0))
    return f"**{_note(found)}**\n\n{fence}text\n{source}\n{fence}\n"


def markdown_problems(source: str, attachments: dict | None = None) -> list[str]:
    """:func:`unsafe_parts` of markdown as nbconvert renders it (with the cell's attachments);
    markdown nbconvert cannot render (an attachment missing) is a problem too."""
    try:
        html = MarkdownWithMath(renderer=IPythonRenderer(escape=False, attachments=attachments
                                                         or {})).render(source)
    except Exception as exc:  # noqa: BLE001 (any failure would break the instructor's page)
        return [f"unrenderable {_word(type(exc).__name__)}"]
    return unsafe_parts(html)


def inert_markdown(source: str, attachments: dict | None = None) -> str | None:
    """``None`` when the markdown renders inert, else its replacement (:func:`_as_text`)."""
    found = markdown_problems(source, attachments)
    return _as_text(source, found) if found else None


def inert_output(output) -> list[str]:
    """Make one output inert in place; what was removed or changed, in words."""
    data = output.get("data")
    if output.get("output_type") not in ("display_data", "execute_result",
                                         "update_display_data") or not isinstance(data, dict):
        return []
    found, removed = [], []
    for mime in list(data):
        value = data[mime]
        text = "".join(value) if isinstance(value, list) else value
        if mime in SCRIPT_TYPES:
            removed.append("a JavaScript output")
        elif mime in IMAGE_TYPES and not (isinstance(text, str) and _BASE64.match(text)):
            removed.append(f"an {mime} output that is not base64")
        elif mime == "text/html" and isinstance(text, str):
            parts = unsafe_parts(text)
            data[mime] = (f"<p><strong>{escape(_note(parts))}</strong></p>\n" if parts else ""
                          ) + clean_html(text)
            found += parts
            continue
        elif mime == "text/markdown" and isinstance(text, str):
            replacement = inert_markdown(text)
            if replacement is not None:
                data[mime] = replacement
                found.append("markdown output")
            continue
        else:
            continue
        del data[mime]
    if removed:
        plain = data.get("text/plain", "")
        plain = "".join(plain) if isinstance(plain, list) else str(plain)
        data["text/plain"] = f"[{_LABEL}: removed {', '.join(removed)}: it is never run here]\n" + plain
    return removed + found


def make_inert(nb) -> list[str]:
    """Make a notebook inert in place (see the module's text); what was changed, one line
    per cell (``[]`` for honest work)."""
    changes = []
    widgets = nb.get("metadata", {}).pop("widgets", None)
    if widgets is not None:
        changes.append("notebook: widget state removed")
    for k, cell in enumerate(nb.cells):
        name = cell.get("id") or f"cell {k}"
        what = []
        for att_name, att in (cell.get("attachments") or {}).items():
            if not isinstance(att, dict) or not all(m in IMAGE_TYPES and isinstance(v, str)
                                                    and _BASE64.match(v) for m, v in att.items()):
                cell.attachments[att_name] = {"image/gif": BLANK_GIF}  # still renders
                what.append("an attachment that is not an image")
        if cell.cell_type in ("markdown", "raw"):
            source = cell.source
            found = (markdown_problems(source, cell.get("attachments")) if cell.cell_type ==
                     "markdown" else unsafe_parts(source))
            if found:
                cell.cell_type, cell.source = "markdown", _as_text(source, found)
                for key in ("raw_mimetype", "format"):
                    cell.metadata.pop(key, None)
                what += found
        for output in cell.get("outputs", []):
            what += inert_output(output)
        if what:
            changes.append(f"{name}: {', '.join(dict.fromkeys(what))}")
    return changes


class MakeInert(Preprocessor):
    """nbconvert preprocessor: :func:`make_inert` (autograde, feedback, formgrader's view).
    Enabled by default: nbgrader registers its autograde preprocessors as they come."""

    enabled = Bool(True).tag(config=True)

    def preprocess(self, nb, resources):
        for line in make_inert(nb):
            self.log.warning("made inert: %s", line)
        return nb, resources

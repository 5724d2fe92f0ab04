"""The web page's files: its templates escape every value they show (autoescape, checked on every template and
every macro with hostile values), and its CSS, JavaScript and templates ship in the package (read through
importlib.resources, present in a built wheel and found there by an installed copy)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest

from tqa.assistant import Answer, Passage
from tqa.web import render
from tqa.web.render import Meter, Turn, Viewer

from .support import ROOT

# A value that would run script, add an event handler, close an attribute or a textarea, or be read as Jinja syntax
# if any template showed it unescaped.
HOSTILE = ('"><script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
           "'</textarea><a href=javascript:alert(3)>x</a>{{ 7*7 }}{% raw %}&amp;")
ESCAPED = "&lt;script&gt;window.__pwned=1&lt;/script&gt;"
OUR_TAGS = {"div", "p", "span", "button", "textarea", "article", "header", "footer", "blockquote", "details", "summary",
            "mark", "b", "strong", "section", "h1", "h3", "dl", "dt", "dd", "ul", "li"}


def hostile_passage() -> Passage:
    text = f"{HOSTILE} passage {HOSTILE}"
    return Passage(text=text, source=HOSTILE, section=HOSTILE, page=3, start=10, end=10 + len(text), score=0.5,
                   highlight=HOSTILE, highlight_start=10, highlight_end=10 + len(HOSTILE), rank=1, relevance=0.4,
                   keyword_score=2.0, section_path=(HOSTILE,), ocr=True, page_unit=HOSTILE,
                   metadata={"from": HOSTILE, "date": HOSTILE})


def hostile_answer(abstained: bool = False) -> Answer:
    return Answer(question=HOSTILE, passages=[hostile_passage()], abstained=abstained, message=HOSTILE, mode=HOSTILE,
                  relevance=0.1, threshold=0.2, warnings=[HOSTILE])


def hostile_value(name: str) -> object:
    """A hostile value for each macro parameter, by its name (every string the macro may show is HOSTILE)."""
    values = {
        "turn": HOSTILE, "rank": HOSTILE, "section": HOSTILE, "page": HOSTILE, "sep": HOSTILE, "source": HOSTILE,
        "parts": (HOSTILE, HOSTILE, HOSTILE), "tag": HOSTILE, "m": Meter(HOSTILE, HOSTILE, HOSTILE, HOSTILE),
        "p": hostile_passage(), "label": HOSTILE, "show_sentence": True, "answer": hostile_answer(),
        "a": hostile_answer(), "turns": [Turn(HOSTILE, HOSTILE, hostile_answer(), 1.0)],
        "v": Viewer(source=HOSTILE, section=HOSTILE, page=HOSTILE, start=HOSTILE, end=HOSTILE,
                    before=HOSTILE, passage=(HOSTILE, HOSTILE, HOSTILE), after=HOSTILE, elided_before=True,
                    elided_after=True, rank=HOSTILE, quoted=hostile_passage(), page_unit=HOSTILE, ocr=True,
                    origin=HOSTILE),
        "unit": HOSTILE, "ocr": True, "text": HOSTILE,
        "rows": [(HOSTILE, HOSTILE)], "sources": [HOSTILE], "skipped": [{"path": HOSTILE, "reason": HOSTILE}],
        "message": HOSTILE, "kind": HOSTILE, "questions": [HOSTILE, HOSTILE],
    }
    return values[name]


class Tags(HTMLParser):
    """The tags and attributes a browser would build from a piece of HTML."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def assert_inert(html: str, where: str) -> None:
    assert "<script" not in html and "<img" not in html and "<a " not in html, where
    for tag, attrs in Tags(html).tags:
        assert tag in OUR_TAGS, (where, tag)
        assert not [a for a in attrs if a.startswith("on") or a == "href" or a == "src"], (where, tag, attrs)


def template_names() -> list[str]:
    folder = resources.files("tqa.web") / "templates"
    return sorted(f.name for f in folder.iterdir() if f.name.endswith(".html"))


def test_every_template_is_known_and_has_autoescape_on_and_no_way_around_it():
    import jinja2
    from jinja2 import nodes

    assert template_names() == sorted(render.TEMPLATES)  # a new template is added to the list the tests use
    env = render.environment()
    assert env.autoescape is True and isinstance(env.undefined, type) and env.undefined is jinja2.StrictUndefined
    for name in template_names():
        source = env.loader.get_source(env, name)[0]
        tree = env.parse(source)
        assert not [f for f in tree.find_all(nodes.Filter) if f.name in ("safe", "forceescape")], name
        assert not list(tree.find_all(nodes.ScopedEvalContextModifier)), name  # no {% autoescape false %}
        assert not list(tree.find_all(nodes.EvalContextModifier)), name
        assert "Markup" not in source and "|safe" not in source.replace(" ", ""), name


def macros() -> list[tuple[str, str, object]]:
    import jinja2

    found = []
    for name in render.TEMPLATES:
        module = render.environment().get_template(name).module
        for attr in dir(module):
            value = getattr(module, attr)
            if isinstance(value, jinja2.runtime.Macro) and not attr.startswith("_"):
                found.append((name, attr, value))
    return found


def test_every_macro_shows_hostile_values_as_text():
    seen = set()
    for template, name, macro in macros():
        args = [hostile_value(a) for a in macro.arguments]
        html = str(macro(*args))
        where = f"{template}:{name}"
        assert_inert(html, where)
        if args:  # the value was shown (escaped), not dropped: the check above means something
            assert ESCAPED in html or "&lt;script&gt;" in html, where
            assert "{{ 7*7 }}" in html, where  # a value is never read as a template
        seen.add(name)
    # every piece of the page is covered (the names are the templates' macros)
    assert {"answer", "conversation", "context", "empty", "info", "status", "examples", "header", "passage",
            "quotes", "cite", "trail", "where", "marked", "meter"} <= seen


@pytest.mark.parametrize("abstained", [False, True])
def test_every_render_function_shows_hostile_values_as_text(abstained):
    answer = hostile_answer(abstained)
    ctx = {"source": HOSTILE, "section": HOSTILE, "page": 2, "start": 0, "end": 400, "text": HOSTILE * 3,
           "passage_start": len(HOSTILE), "passage_end": 2 * len(HOSTILE)}
    pieces = {
        "answer": render.render_answer(answer, 1),
        "conversation": render.render_conversation([Turn(0, HOSTILE, answer, 0.5)]),
        "context": render.render_context(ctx, answer.passages[0], 1),
        "info": render.render_info({"documents": 1, "chunks": 2, "model": HOSTILE, "built": HOSTILE,
                                    "sources": [HOSTILE], "skipped": [{"path": HOSTILE, "reason": HOSTILE}]}),
        "status": render.render_status(HOSTILE, HOSTILE),
        "examples": render.render_examples([HOSTILE]),
    }
    for where, html in pieces.items():
        assert_inert(html, where)
        assert ESCAPED in html, where


def test_a_template_that_let_a_value_through_would_be_caught(monkeypatch):
    """The checks above can fail: a template showing a value with |safe is refused by both."""
    import jinja2

    env = render.environment()
    bad = env.from_string("<p>{{ v|safe }}</p>")
    with pytest.raises(AssertionError):
        assert_inert(bad.render(v=HOSTILE), "bad")
    tree = env.parse("<p>{{ v|safe }}</p>")
    assert [f for f in tree.find_all(jinja2.nodes.Filter) if f.name == "safe"]


# ---- the files ship in the package ---------------------------------------------------------------------------

ASSETS = ("tqa.css", "copy.js", "chat.js", "viewer.js", "examples.js")


def test_assets_and_templates_are_read_through_importlib_resources():
    package = resources.files("tqa.web")
    for name in ASSETS:
        assert (package / "assets" / name).is_file(), name
        assert render.asset(name) == (package / "assets" / name).read_text(encoding="utf-8") != ""
    for name in render.TEMPLATES:
        assert (package / "templates" / name).is_file(), name
    assert ".tqa-passage" in render.asset("tqa.css") and "trigger('cite'" in render.asset("chat.js")


def test_a_built_wheel_holds_the_page_files_and_an_installed_copy_finds_them(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--disable-pip-version-check", "-q", "-w", str(wheels), str(source)], check=True,
                   capture_output=True, text=True, timeout=300)
    [wheel] = wheels.glob("tqa-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ASSETS:
        assert f"tqa/web/assets/{name}" in names
    for name in render.TEMPLATES:
        assert f"tqa/web/templates/{name}" in names

    target = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(target)  # what an install puts in site-packages
    code = ("import json, tqa.web, tqa.web.render as r; from tqa.assistant import Answer;"
            "print(json.dumps([tqa.web.__file__, len(r.asset('tqa.css')),"
            "r.render_answer(Answer('q', [], True, 'none <here>', 'hybrid', None, 0.2))]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    import json

    where, css, html = json.loads(out.stdout)
    assert Path(where).is_relative_to(target)  # the installed copy, not this source tree
    assert css == len(render.asset("tqa.css"))
    assert html == ('<div class="tqa-a tqa-abstained"><p class="tqa-abstain-msg"><strong>none &lt;here&gt;</strong>'
                    "</p></div>")

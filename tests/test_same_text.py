"""The same text in several documents (a report kept in the corpus and attached to messages, a form copied into
two folders) is shown once, at its best rank, naming the other documents that hold it, instead of filling the
answer with copies of one passage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tqa import build_index
from tqa.assistant import Assistant
from tqa.cli import main
from tqa.config import ChunkSettings
from tqa.loaders import ATTACHMENT_SEPARATOR as SEP
from tqa.web.render import render_answer

from .format_writers import default_sections, write_eml
from .support import FakeEmbedder

REPORT = ("Shelter capacity in the northern provinces doubled between 2019 and 2023, while the waiting time for "
          "a place fell from six weeks to nine days.")
OTHER = "Volunteer hotlines answer calls at night and refer victims to the nearest shelter."


@pytest.fixture
def qa(tmp_path: Path) -> Assistant:
    corpus = tmp_path / "corpus"
    (corpus / "inbox").mkdir(parents=True)
    (corpus / "report.txt").write_text(REPORT + "\n")
    for n in (1, 2):  # the same report attached to two messages
        (corpus / "inbox" / f"m{n}.eml").write_bytes(
            write_eml(default_sections()[:1], attachments=[("report.txt", (REPORT + "\n").encode(), "text/plain")]))
    (corpus / "copy").mkdir()
    (corpus / "copy" / "report.md").write_text("  " + REPORT.replace(" in the", "  in\nthe") + "\n")  # spacing only
    (corpus / "hotline.txt").write_text(OTHER + "\n")
    build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False)
    return Assistant.load(tmp_path / "index", embedder=FakeEmbedder())


def _twins() -> set[str]:
    return {"report.txt", f"inbox/m1.eml{SEP}report.txt", f"inbox/m2.eml{SEP}report.txt", "copy/report.md"}


def test_one_passage_for_one_text_naming_the_other_documents(qa: Assistant) -> None:
    answer = qa.ask("waiting time for a shelter place in the northern provinces", k=5)
    shown = [p for p in answer.passages if "waiting time" in p.text]
    assert len(shown) == 1  # not four copies of one passage
    p = shown[0]
    assert {p.source, *p.also_in} == _twins() and p.source not in p.also_in
    assert len(p.also_in) == len(set(p.also_in)) == 3
    assert any("hotline" in q.source for q in answer.passages)  # the room the copies took goes to other passages


def test_hits_say_so_too_and_dedupe_off_keeps_every_copy(qa: Assistant) -> None:
    hits = qa.search("waiting time for a shelter place in the northern provinces", k=10)
    copies = [h for h in hits if "waiting time" in h.text]
    assert len(copies) == 1 and {copies[0].source, *copies[0].also_in} == _twins()
    every = qa.search("waiting time for a shelter place in the northern provinces", k=10, dedupe=False)
    assert {h.source for h in every if "waiting time" in h.text} == _twins()
    assert all(h.also_in == () for h in every)


def test_text_that_differs_in_words_is_not_merged(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(REPORT + "\n")
    (corpus / "b.txt").write_text(REPORT.replace("nine days", "ten days") + "\n")
    build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False)
    qa = Assistant.load(tmp_path / "index", embedder=FakeEmbedder())
    passages = qa.ask("waiting time for a shelter place", k=5).passages
    assert {p.source for p in passages} == {"a.txt", "b.txt"} and all(p.also_in == () for p in passages)


def test_cli_json_and_web_name_the_other_documents(qa: Assistant, tmp_path: Path, fake_model, capsys) -> None:
    q = "waiting time for a shelter place in the northern provinces"
    assert main(["ask", q, "-k", "3", "--index", str(tmp_path / "index"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["passages"]
    first = next(p for p in got if "waiting time" in p["text"])
    assert {first["source"], *first["also_in"]} == _twins()
    assert main(["ask", q, "-k", "3", "--index", str(tmp_path / "index")]) == 0
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("[")]
    assert sum("report" in line for line in headers) == 1  # one passage for the four copies
    also = next(line for line in out.splitlines() if "same text also in: " in line)
    assert all(src in also for src in _twins() if src not in next(h for h in headers if "report" in h))
    page = render_answer(qa.ask(q, k=3), 1)
    assert "Same text also in" in page and "m2.eml" in page


def test_hostile_names_of_the_other_documents_are_shown_as_text(tmp_path: Path, fake_model, capsys) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(REPORT + "\n")
    evil = "<img src=x onerror=alert(1)>.txt"
    (corpus / evil).write_text(REPORT + "\n\n")  # the same text, other bytes: not a duplicate file
    build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False)
    qa = Assistant.load(tmp_path / "index", embedder=FakeEmbedder())
    answer = qa.ask("waiting time for a shelter place", k=3)
    assert {answer.passages[0].source, *answer.passages[0].also_in} == {"a.txt", evil}
    page = render_answer(answer, 1)
    assert "<img" not in page and "&lt;img src=x" in page
    assert main(["ask", "waiting time for a shelter place", "-k", "3", "--index", str(tmp_path / "index")]) == 0
    assert "same text also in: " in capsys.readouterr().out



SMALL = ChunkSettings(chunk_size=300, chunk_overlap=120)


def _corpus_of_repeats(root: Path) -> Path:
    """Documents that repeat passages (spacing apart) and whose chunks overlap: what dropping candidates is for."""
    corpus = root / "corpus"
    corpus.mkdir()
    paras = [f"Paragraph {i} on shelters, hotlines and the police in district {i % 5}. " * 6 for i in range(12)]
    for d in range(6):
        picked = [paras[(d * 5 + j) % 12] for j in range(7)]
        if d % 2:
            picked = [p.replace(" on ", "  on\n") for p in picked]  # the same words, other spacing
        (corpus / f"doc{d}.txt").write_text("\n\n".join(picked) + "\n")
    return corpus


def _dropped(index, ranking) -> list[tuple[int, tuple[str, ...]]]:
    from tqa.retrieval import Scored, drop_overlaps

    hits = [Scored(int(r), 1.0 - i / 1000, None, None) for i, r in enumerate(ranking)]
    return [(h.row, h.also_in) for h in drop_overlaps(hits, index.chunks)]


def test_candidates_are_dropped_from_the_tables_keys_as_from_the_parsed_rows(tmp_path):
    """With the rows' keys, a search parses only what it shows (and rows whose keys are equal), and drops and names
    exactly what parsing every candidate would."""
    from tqa.chunktable import ChunkTable
    from tqa.store import load_index

    build_index(_corpus_of_repeats(tmp_path), tmp_path / "index", embedder=FakeEmbedder(), progress=False,
                chunking=SMALL)
    index = load_index(tmp_path / "index")
    assert isinstance(index.chunks, ChunkTable) and index.chunks.has_keys
    rows = list(index.chunks)
    n = len(rows)
    assert n > 40
    rng = np.random.default_rng(0)
    seen_also = 0
    for _ in range(30):
        ranking = rng.permutation(n)[:rng.integers(5, n)]
        before = index.chunks.parsed
        got = _dropped(index, ranking)
        assert got == _dropped_from_list(rows, ranking)
        seen_also += sum(bool(a) for _, a in got)
        assert index.chunks.parsed - before <= len(ranking)  # never more than a parse of each
    assert seen_also  # (the corpus does repeat passages across documents)
    index.chunks._cache.clear()
    before = index.chunks.parsed
    unique = _unique_text_rows(rows)
    _dropped(index, unique)
    assert index.chunks.parsed == before  # no two share words: nothing parsed to drop or name


def _dropped_from_list(rows, ranking):
    from tqa.retrieval import Scored, drop_overlaps

    hits = [Scored(int(r), 1.0 - i / 1000, None, None) for i, r in enumerate(ranking)]
    return [(h.row, h.also_in) for h in drop_overlaps(hits, rows)]


def _unique_text_rows(rows) -> list[int]:
    from tqa.chunktable import words

    first: dict[str, int] = {}
    for i, c in enumerate(rows):
        first.setdefault(words(c.text), i)
    return list(first.values())


def test_copies_ranked_below_the_hits_taken_are_never_read(tmp_path, monkeypatch):
    """A caller that takes the first k hits has read the texts of those candidates only whose keys are shared by
    one reached on the way (to compare their words and name the other documents): copies of passages ranked
    lower are not read. What it takes is the start of what taking every hit gives."""
    import itertools

    from tqa.chunktable import ChunkTable
    from tqa.retrieval import Scored, drop_overlaps
    from tqa.store import load_index

    build_index(_corpus_of_repeats(tmp_path), tmp_path / "index", embedder=FakeEmbedder(), progress=False,
                chunking=SMALL)
    index = load_index(tmp_path / "index")
    read: list[int] = []
    texts = ChunkTable.texts

    def recorded(self, rows):
        read.extend(int(r) for r in rows)
        return texts(self, rows)

    monkeypatch.setattr(ChunkTable, "texts", recorded)
    n = len(index.chunks)
    rng = np.random.default_rng(5)
    fewer = 0
    for _ in range(30):
        ranking = rng.permutation(n)[:rng.integers(20, n)]
        whole = _dropped(index, ranking)
        read_whole = len(read)
        read.clear()
        hits = [Scored(int(r), 1.0 - i / 1000, None, None) for i, r in enumerate(ranking)]
        taken = [(h.row, h.also_in) for h in itertools.islice(drop_overlaps(hits, index.chunks), 2)]
        assert taken == whole[:2]
        reached = ranking[:ranking.tolist().index(taken[-1][0]) + 1]
        hashes = dict(zip(ranking.tolist(), index.chunks.keys(ranking)[0].tolist(), strict=True))
        assert {hashes[r] for r in read} <= {hashes[int(r)] for r in reached}
        fewer += len(read) < read_whole
        read.clear()
    assert fewer  # (taking every hit reads copies that taking two does not)


def test_rows_whose_keys_collide_are_compared_by_their_words(tmp_path, monkeypatch):
    """Keys are hashes: rows that share one by chance are still told apart by their words, never merged."""
    import tqa.chunktable as ct
    from tqa.store import load_index

    monkeypatch.setattr(ct, "text_key", lambda text: 7)  # every row's key the same
    build_index(_corpus_of_repeats(tmp_path), tmp_path / "index", embedder=FakeEmbedder(), progress=False,
                chunking=SMALL)
    index = load_index(tmp_path / "index")
    rows = list(index.chunks)
    assert len(set(index.chunks.keys(np.arange(len(rows)))[0].tolist())) == 1
    rng = np.random.default_rng(1)
    for _ in range(10):
        ranking = rng.permutation(len(rows))[:20]
        assert _dropped(index, ranking) == _dropped_from_list(rows, ranking)


def test_an_index_written_before_the_keys_answers_as_one_with_them(tmp_path):
    from tqa.store import load_index

    from .test_chunktable import without_keys

    build_index(_corpus_of_repeats(tmp_path), tmp_path / "index", embedder=FakeEmbedder(), progress=False,
                chunking=SMALL)
    with_keys = Assistant.load(tmp_path / "index", embedder=FakeEmbedder())
    questions = ["police in district 3", "hotlines and shelters", "Paragraph 7"]
    before = [[(p.source, p.start, p.also_in) for p in with_keys.ask(q).passages] for q in questions]
    with_keys.index.close()
    without_keys(tmp_path / "index")
    old = load_index(tmp_path / "index")
    assert not old.chunks.has_keys
    qa_old = Assistant(old, FakeEmbedder(), with_keys.settings)
    assert [[(p.source, p.start, p.also_in) for p in qa_old.ask(q).passages] for q in questions] == before
    assert any(also for ans in before for _, _, also in ans)

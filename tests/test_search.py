"""The public surface evaluation and tools use: Assistant.search (the ranking ask answers from, deeper and without
highlights), Assistant.documents, and the index's own lookups (rows of a source, the section around an offset)."""

from __future__ import annotations

import pytest

from tqa import Assistant, build_index
from tqa.config import MAX_K, MAX_SEARCH_K, ChunkSettings
from tqa.errors import BadQuestion
from tqa.loaders import SUPPORTED

from .support import CORPUS, FakeEmbedder

QUESTION = "How do traffickers use social media to recruit victims?"


@pytest.fixture(scope="module")
def qa(tmp_path_factory) -> Assistant:
    """The default corpus in small overlapping chunks, so that passages overlap and sections hold several."""
    index = tmp_path_factory.mktemp("search") / "index"
    build_index(CORPUS, index, embedder=FakeEmbedder(), chunking=ChunkSettings(400, 150))
    return Assistant.load(index, embedder=FakeEmbedder())


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_search_ranks_as_ask_answers(qa, mode):
    hits = qa.search(QUESTION, k=10, mode=mode)
    passages = qa.ask(QUESTION, k=10, mode=mode).passages
    assert [(h.source, h.start, h.end) for h in hits] == [(p.source, p.start, p.end) for p in passages]
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert [round(h.score, 6) for h in hits] == [p.score for p in passages]
    for h, p in zip(hits, passages, strict=True):
        assert (h.section, h.page, h.text) == (p.section, p.page, p.text)
    if mode == "bm25":
        assert all(h.relevance is None for h in hits)  # the question is not encoded for a keyword ranking
    else:
        assert [round(h.relevance, 4) for h in hits] == [p.relevance for p in passages]


def test_hits_point_into_the_documents_the_assistant_holds(qa):
    texts = dict(qa.documents())
    assert sorted(texts) == qa.sources()
    hits = qa.search(QUESTION, k=50, mode="hybrid")
    assert hits and all(texts[h.source][h.start:h.end] == h.text for h in hits)
    assert set(hits[0].to_dict()) == {"rank", "source", "start", "end", "section", "page", "score", "relevance",
                                      "keyword_score", "text", "ocr", "page_unit", "also_in"}


def test_search_reads_deeper_than_an_answer_and_may_keep_overlaps(qa):
    with pytest.raises(BadQuestion, match=f"from 1 to {MAX_K}"):
        qa.ask(QUESTION, k=MAX_K + 1)
    deep = qa.search(QUESTION, k=MAX_K + 30, mode="bm25", dedupe=False)
    assert len(deep) > MAX_K
    kept = qa.search(QUESTION, k=MAX_K + 30, mode="bm25")
    spans = [(h.source, h.start, h.end) for h in kept]
    assert not any(s == t and a < d and c < b for i, (s, a, b) in enumerate(spans) for (t, c, d) in spans[i + 1:])
    overlapping = [(h.source, h.start, h.end) for h in deep]
    assert any(s == t and a < d and c < b for i, (s, a, b) in enumerate(overlapping)
               for (t, c, d) in overlapping[i + 1:])  # without de-duplication, overlapping chunks both rank
    with pytest.raises(BadQuestion, match=f"from 1 to {MAX_SEARCH_K}"):
        qa.search(QUESTION, k=MAX_SEARCH_K + 1)


def test_search_checks_its_request_as_ask_does(qa):
    for bad in ({"question": "  "}, {"question": QUESTION, "mode": "magic"}, {"question": QUESTION, "k": True},
                {"question": QUESTION, "sources": ["nowhere.txt"]}, {"question": QUESTION, "sources": [3]}):
        with pytest.raises(BadQuestion) as from_search:
            qa.search(**bad)
        with pytest.raises(BadQuestion) as from_ask:
            qa.ask(**bad)
        assert str(from_search.value) == str(from_ask.value).replace(f"to {MAX_K}.", f"to {MAX_SEARCH_K}.")
    source = qa.sources()[0]
    assert {h.source for h in qa.search(QUESTION, k=5, sources=source)} == {source}


def test_the_index_finds_a_documents_rows_and_the_section_around_an_offset(qa):
    index = qa.index
    source = index.sources[0]
    rows = index.rows_of(source)
    assert [index.chunks[int(i)].source for i in rows] == [source] * len(rows) == [
        c.source for c in index.chunks if c.source == source]
    assert len(index.rows_of("no such document")) == 0
    chunk = index.chunks[int(rows[len(rows) // 2])]
    section = index.section_at(source, chunk.start)
    assert section is not None and section.trail == chunk.section
    assert section.start <= chunk.start < chunk.end <= section.end
    assert all(c.section == chunk.section for c in index.chunks if c.source == source
               and section.start <= c.start < section.end)
    assert index.section_at(source, 10**9) is None and index.section_at("no such document", 0) is None
    assert index.folder == index.path.parent and index.threshold == qa.manifest.calibration.threshold


def test_the_types_an_index_accepts_are_the_loaders(qa):
    assert qa.document_types == tuple(sorted(SUPPORTED))
    with pytest.raises(BadQuestion, match=".docx, .eml"):
        qa.add_documents([("tool.exe", b"MZ")])


QUESTIONS = (QUESTION, "What does the protocol ask of states?", "shelters funding police",
             "Which countries cooperate on border data?")


def _ranked(qa, mode, sources=None):
    return [[(h.source, h.start, h.end, round(h.score, 6)) for h in qa.search(q, k=20, mode=mode, sources=sources)]
            for q in QUESTIONS]


@pytest.mark.parametrize("mode", ["hybrid", "dense"])
def test_vector_searches_beside_the_keyword_search_rank_as_one_after_the_other(qa, mode, monkeypatch):
    """Above retrieval.PARALLEL_POSTINGS the vector searches run in a thread of their own (FAISS at one thread
    there, the caller's setting untouched) while the keyword search runs: the same ranking, filters included."""
    import threading

    import tqa.retrieval as retrieval
    from tqa.vectors import _faiss

    sources = qa.sources()[:1]
    monkeypatch.setattr(retrieval, "PARALLEL_POSTINGS", 10**12)
    alone = _ranked(qa, mode), _ranked(qa, mode, sources)
    threads: list[tuple[str, int]] = []
    search = type(qa.index.vectors).search

    def recorded(self, *args, **kwargs):
        threads.append((threading.current_thread().name, _faiss().omp_get_max_threads()))
        return search(self, *args, **kwargs)

    monkeypatch.setattr(type(qa.index.vectors), "search", recorded)
    monkeypatch.setattr(retrieval, "PARALLEL_POSTINGS", 0)
    caller = _faiss().omp_get_max_threads()
    assert (_ranked(qa, mode), _ranked(qa, mode, sources)) == alone
    assert threads and all(name.startswith("tqa-dense") and n == 1 for name, n in threads)
    assert _faiss().omp_get_max_threads() == caller


def test_a_failure_on_either_side_of_a_parallel_search_is_the_callers_one_line_error(qa, monkeypatch):
    """A vector search that fails in its thread raises in the caller; a keyword search that fails waits for the
    vector searches first (none left running on an index its caller may close) and raises its own error."""
    import threading
    import time

    import tqa.retrieval as retrieval
    from tqa.errors import IndexCorrupt

    monkeypatch.setattr(retrieval, "PARALLEL_POSTINGS", 0)
    vectors, keywords = type(qa.index.vectors), type(qa.index.keywords)
    search = vectors.search

    def damaged(self, *args, **kwargs):
        raise IndexCorrupt("The vector file is damaged. Run `tqa index --rebuild` to build it again.")

    monkeypatch.setattr(vectors, "search", damaged)
    with pytest.raises(IndexCorrupt, match="vector file"):
        qa.search(QUESTION, k=5)
    done = threading.Event()

    def slow(self, *args, **kwargs):
        time.sleep(0.2)
        done.set()
        return search(self, *args, **kwargs)

    def broken(self, *args, **kwargs):
        raise IndexCorrupt("The keyword index is damaged. Run `tqa index --rebuild` to build it again.")

    monkeypatch.setattr(vectors, "search", slow)
    monkeypatch.setattr(keywords, "search", broken)
    with pytest.raises(IndexCorrupt, match="keyword index"):
        qa.search(QUESTION, k=5)
    assert done.is_set()


def test_a_process_forked_after_a_parallel_search_searches_in_parallel_too(qa, monkeypatch):
    """A forked process has none of its parent's threads: its vector searches get a pool of its own instead of
    waiting for ever on the parent's (a server or a build that forks after answering)."""
    import multiprocessing

    import tqa.retrieval as retrieval

    monkeypatch.setattr(retrieval, "PARALLEL_POSTINGS", 0)
    expected = [(h.source, h.start) for h in qa.search(QUESTION, k=5)]  # (the parent's pool now has its threads)

    def child(out) -> None:
        out.put([(h.source, h.start) for h in qa.search(QUESTION, k=5)])

    context = multiprocessing.get_context("fork")
    out = context.Queue()
    process = context.Process(target=child, args=(out,))
    process.start()
    process.join(60)
    if process.is_alive():
        process.kill()
    assert process.exitcode == 0 and out.get(timeout=5) == expected

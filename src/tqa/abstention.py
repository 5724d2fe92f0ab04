"""Abstention: whether the passages found can answer the question, and if not, why (a phrase for the reader).

``check`` runs these checks in order; the first that fires gives the reason:

1. **relevance**: the best passage's dense score is under the index's calibrated threshold (any language);
2. **years**: the question names a year (four digits) that the documents searched never use (any language);
3. **names** (languages that capitalise names only: English, Dutch, French, Spanish, Italian, Portuguese): the
   question names someone or something, a capitalised word, that the documents never use: not as a word, nor
   as the start of a capitalised word ("Swedish" where they say "Sweden"), nor as the initials of a run of
   capitalised words ("UN"), nor, for the parts of a hyphenated compound ("NGO-government"), part by part;
   a plural or possessive counts as its singular ("NGO" where they say "NGOs"). The evidence decides how much
   a name weighs: below ``strong_level`` any unknown name abstains; above it, only a name that is no adjective
   or demonym of a place ("American" where the documents say "United States") does, because a passage that
   matches the whole question that well is likely to speak of the same thing in other words;
4. **answer types** (English questions on English documents only): the question asks for an amount of money,
   a date, a duration or a person, and none of the sentences that best answer in the best passages holds
   anything of that kind; or it asks for a figure (how many, what percentage) and none holds a number.

Every check is a pure function of what the assistant passes: the question, the best passages (text, score and
the sentence(s) that best answer), the vocabulary of the documents searched, the threshold and the corpus's
language (``detect_language``, computed once at build time). Nothing here reads a file or an index.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

LOW_RELEVANCE = "no passage is relevant enough"
NAME_PREFIX = 4  # as many first letters as a name and its derived forms share ("Swed": Sweden, Swedish)
STRONG_SHARE = 0.5  # evidence is strong from halfway between the threshold and a perfect match

# Languages whose writing capitalises proper names and not common nouns: where the name check can work.
CAPITALISING = frozenset({"en", "nl", "fr", "es", "it", "pt"})
ANSWER_TYPE_LANGUAGES = frozenset({"en"})


class Vocabulary(Protocol):
    """What the searched documents say: their analysed terms (``knows``) and name prefixes (``names``)."""

    @property
    def names(self) -> frozenset[str]: ...

    def knows(self, term: str) -> bool: ...


# ---------------------------------------------------------------- language, cheaply

_STOPWORDS = {
    "en": "the of and to in is that for it with as was on be by are this which or from not have has an".split(),
    "nl": "de het een van en in is dat op te zijn voor met niet aan worden door die wordt bij ook als".split(),
    "de": "der die das und zu den von ist nicht mit sich des auf für im dem eine ein werden auch".split(),
    "fr": "le la les de des et est en un une du que qui dans pour pas sur au par sont ce avec".split(),
    "es": "el la los las de del y en que un una por con para es se no al lo como su más".split(),
    "it": "il la di che e un una per non sono del della con si le gli è da nel alla".split(),
    "pt": "o a os as de do da e que um uma para com não em no na por se mais dos".split(),
}
_LANG_WORDS = {lang: frozenset(words) for lang, words in _STOPWORDS.items()}
_TOKEN = re.compile(r"[^\W\d_]+", re.UNICODE)


def language_shares(texts: Iterable[str], max_words: int = 200_000) -> dict[str, float]:
    """For each known language, the share of the words of ``texts`` that are among its commonest words."""
    counts = dict.fromkeys(_LANG_WORDS, 0)
    total = 0
    for text in texts:
        for w in _TOKEN.findall(text.lower()):
            total += 1
            for lang, words in _LANG_WORDS.items():
                if w in words:
                    counts[lang] += 1
            if total >= max_words:
                break
        if total >= max_words:
            break
    return {lang: (c / total if total else 0.0) for lang, c in counts.items()}


def detect_language(texts: Iterable[str]) -> str:
    """The main language of ``texts`` as an ISO 639-1 code, or ``und`` when none of the known languages'
    commonest words make up at least 10% of the words (another language, or too little text). Counting the
    commonest words of seven languages: cheap, and enough to tell which checks can work."""
    shares = language_shares(texts)
    lang, share = max(shares.items(), key=lambda kv: kv[1])
    return lang if share >= 0.10 else "und"


def question_language(question: str) -> str:
    """The known language whose commonest words a question uses most (English question words count), or
    ``und``."""
    words = _TOKEN.findall(question.lower())
    hits = {lang: sum(w in ws for w in words) for lang, ws in _LANG_WORDS.items()}
    hits["en"] += sum(w in _ENGLISH_QUESTION for w in words)
    lang, n = max(hits.items(), key=lambda kv: kv[1])
    return lang if n > 0 and list(hits.values()).count(n) == 1 else "und"


_ENGLISH_QUESTION = frozenset(
    "what how who whom whose which when where why does do did can could may might must shall should will would "
    "a an many much long".split()
)


def is_english(question: str) -> bool:
    """Whether a question is in English: it uses more of English's commonest words (question words included)
    than of any other known language's."""
    return question_language(question) == "en"


# ---------------------------------------------------------------- years and names

_YEAR = re.compile(r"(?<![\w.,])(1[0-9]{3}|20[0-9]{2})(?![\w.,]\d)")
_NAME = re.compile(r"(?<![\w'’])[A-Z][\w’'-]*\w", re.UNICODE)
_QUESTION_WORDS = frozenset(
    "what how which who whom whose when where why is are was were do does did can could should would will "
    "i in on of the a an and or to for by with about according if under after before".split()
)
_POSSESSIVE = re.compile(r"[’']s?$")
# Endings of adjectives and demonyms made from names (American, Swedish, Chinese, Iraqi, Nordic, European)
_ADJECTIVE = re.compile(r"(an|ian|ean|ese|ish|i|ic|ch)$")
# Demonyms whose place is spelt otherwise: the place's name prefixes and initials.
_DEMONYMS = {
    "american": ("united states", "us", "usa", "america"), "dutch": ("netherlands", "holland", "nederland"),
    "british": ("united kingdom", "uk", "britain", "england"), "english": ("england", "united kingdom", "uk"),
    "french": ("france",), "welsh": ("wales",), "scottish": ("scotland",), "irish": ("ireland",),
    "swiss": ("switzerland",), "greek": ("greece",), "spanish": ("spain",), "danish": ("denmark",),
    "finnish": ("finland",), "norwegian": ("norway",), "thai": ("thailand",), "filipino": ("philippines",),
    "german": ("germany",), "belgian": ("belgium",), "peruvian": ("peru",), "congolese": ("congo",),
    "emirati": ("united arab emirates", "uae"), "saudi": ("saudi arabia",), "kiwi": ("new zealand",),
    "european": ("europe", "eu", "european union"), "soviet": ("ussr", "soviet union"),
}
_NAME_RUN = re.compile(r"[A-Z][\w-]*(?:\s+(?:(?:of|and|for|on|the|to|in)\s+)*[A-Z][\w-]*)+")
_RUN_FILLERS = frozenset({"of", "and", "for", "on", "the", "to", "in"})


def name_prefixes(texts: Iterable[str]) -> list[str]:
    """Lower-cased prefixes of the capitalised words of some documents, and the initials of runs of capitalised
    words ("United States" gives "us"); computed once, when the index is built."""
    found: set[str] = set()
    for text in texts:
        found.update(m.group(0)[:NAME_PREFIX].lower() for m in _NAME.finditer(text))
        for run in _NAME_RUN.finditer(text):
            words = [w for w in run.group(0).split() if w not in _RUN_FILLERS]
            for i in range(len(words)):
                for j in range(i + 2, len(words) + 1):
                    found.add("".join(w[0] for w in words[i:j]).lower()[:NAME_PREFIX])
    return sorted(found)


def unknown_years(question: str, vocab: Vocabulary) -> list[str]:
    """Years (four digits from 1000 to 2099) in the question that the documents never use."""
    return list(dict.fromkeys(y for y in _YEAR.findall(question) if not vocab.knows(y)))


def _known_word(word: str, vocab: Vocabulary, analyze: Analyzer) -> bool:
    terms = analyze(word)
    if terms and all(vocab.knows(t) for t in terms):
        return True
    lower = word.lower()
    # a plural the stemmer keeps as it is ("NGOs") and its singular ("NGO"), both ways
    for variant in (lower + "s", lower + "es", lower[:-1] if lower.endswith("s") else ""):
        if variant and all(vocab.knows(t) for t in analyze(variant) or ["\0"]):
            return True
    return lower[:NAME_PREFIX] in vocab.names


class Analyzer(Protocol):
    def __call__(self, text: str) -> list[str]: ...


def unknown_names(question: str, vocab: Vocabulary, analyze: Analyzer, *, strong: bool = False) -> list[str]:
    """Capitalised words of ``question`` that the documents never use (see the module docstring). With
    ``strong`` evidence, adjectives and demonyms of names are not counted."""
    unknown = []
    first = True
    for m in _NAME.finditer(question):
        word = _POSSESSIVE.sub("", m.group(0))
        at_start = first and not question[:m.start()].strip(" \"'“‘(¿¡")
        first = False
        if not word or (at_start and not word.isupper()) or word.lower() in _QUESTION_WORDS:
            continue  # the question's first word is capitalised as a sentence start
        parts = [p for p in re.split(r"[-–/]", word) if p]
        if parts and all(_known_word(p, vocab, analyze) for p in parts):
            continue
        lower = word.lower()
        places = _DEMONYMS.get(lower, ())
        if any(_known_place(p, vocab, analyze) for p in places):
            continue
        if strong and (places or _ADJECTIVE.search(lower) or len(parts) > 1):
            continue  # strong evidence: an adjective or a compound does not overrule it
        unknown.append(word)
    return list(dict.fromkeys(unknown))


def _known_place(place: str, vocab: Vocabulary, analyze: Analyzer) -> bool:
    words = place.split()
    if len(words) == 1:
        return _known_word(place, vocab, analyze) if len(place) > 3 else place[:NAME_PREFIX] in vocab.names
    return all(vocab.knows(t) for w in words for t in analyze(w)) or \
        "".join(w[0] for w in words)[:NAME_PREFIX] in vocab.names


# ---------------------------------------------------------------- answer types (English)

_NUMBER_WORDS = (
    r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|"
    r"eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|million|billion|"
    r"dozen|half|a|an|several|few"
)
_FIGURE = re.compile(
    r"\d|\b(two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
    r"seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|million|"
    r"billion|percent|per cent|dozen|half|quarter|majority|minority|all|none|no)\b",
    re.IGNORECASE,
)
_MONEY = re.compile(
    r"[$€£¥₹]\s?\d|\d[\d.,]*\s?(?:[$€£¥₹]|usd|eur|gbp|dollars?|euros?|pounds?|francs?|yen|rupees?|cents?)\b"
    r"|\b(?:usd|eur|gbp|chf)\s?\d|\b(?:" + _NUMBER_WORDS + r")\s+(?:dollars?|euros?|pounds?|francs?)\b",
    re.IGNORECASE,
)
_MONTHS = r"january|february|march|april|may|june|july|august|september|october|november|december"
_DATE = re.compile(
    r"\b(1[0-9]{3}|20[0-9]{2})\b|\b(" + _MONTHS + r")\b|\b\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b"
    r"|\bthousand\b|\bhundred\b",  # a year written out ("the year two thousand and eleven")
    re.IGNORECASE,
)
_DURATION = re.compile(
    r"(\d[\d.,]*|\b(?:" + _NUMBER_WORDS + r"))[\s-]+(?:\w+[\s-]+)?(?:years?|months?|weeks?|days?|hours?|"
    r"minutes?|decades?)\b|\blife\b|\bindefinite(ly)?\b|\bperpetu",
    re.IGNORECASE,
)
_TITLES = r"Mr|Mrs|Ms|Dr|Prof|Sir|Dame|Lord|Lady|Judge|Justice|President|Minister|Secretary|Ambassador"
_PERSON = re.compile(
    r"\b(?:" + _TITLES + r")\.?\s+[A-Z][a-z]+|\b[A-Z][a-z]+\s+(?:[A-Z]\.\s+)?[A-Z][a-z]{2,}\b"
    r"|\b[A-Z]\.\s*[A-Z][a-z]+|\b[A-Z]{2,}\s[A-Z]{2,}\b"
)
_NOT_A_PERSON = re.compile(
    r"\b(?:Nations?|Convention|Conventions|Organi[sz]ation|Office|Committee|Conference|States?|Protocol|Council|"
    r"Assembly|Labour|Labor|International|Union|Court|Commission|Parties|Party|Member|Members|Secretary|General|"
    r"Declaration|Rights|Article|Government|Department|Agency|Republic|Kingdom|Act|Law|Rules?|Governing|Body|"
    r"Director|Child|Children|Women|Human|Protection|Prevention|Office|Annex|Preamble|Section|Chapter|Part|Session|"
    r"Meeting|First|Second|Third|Fourth|Fifth|\w+teenth|\w+tieth|" + _MONTHS.title() + r")\b"
)
_FREQUENCY = re.compile(
    r"\b(once|twice|daily|weekly|monthly|yearly|annually|every|each|regular(ly)?|per (day|week|month|year))\b"
    r"|\d|\b(" + _NUMBER_WORDS + r") times\b",
    re.IGNORECASE,
)
_PENALTY_WORDS = r"(imprison\w*|prison|jail|sentence[sd]?|custod\w*|detention|detained|deprivation of liberty)"
_PRISON_TERM = re.compile(
    r"(" + _DURATION.pattern + r").{0,120}\b" + _PENALTY_WORDS + r"|\b" + _PENALTY_WORDS + r"\b.{0,120}("
    + _DURATION.pattern + r")|\blife imprisonment\b",
    re.IGNORECASE,
)
_ASKS = (
    ("prison term", re.compile(
        r"\b(how (long|many years|many months))\b.*\b(prison|jail|imprison\w*|sentence[sd]?|custody)\b"
        r"|\bwhat (prison|jail) (sentence|term)\b|\b(maximum|minimum|longest|shortest) (prison |jail )?"
        r"(sentence|term of imprisonment|prison term|penalty)\b",
        re.IGNORECASE), _PRISON_TERM, "the closest passages give no prison term"),
    ("money", re.compile(
        r"\bhow much (money|compensation|funding|does|do|did|is|are|was|were|will|should|must|can)\b.*"
        r"\b(cost|costs|spend|spent|pay|paid|earn|earns|wage|wages|salary|fine|fee|fees|price|compensation|"
        r"budget|worth|money|funding|fund)\b|\bhow much money\b|\bwhat (amount|sum) of money\b"
        r"|\bhow much\b.*\b(wage|salary|compensation|fine|fee|price|budget)\b",
        re.IGNORECASE), _MONEY, "the closest passages give no amount of money"),
    ("date", re.compile(
        r"\b(on|by) what date\b|\b(in )?(what|which) year\b|\bwhen (was|were|did|will|is|are)\b.*"
        r"\b(ratif\w*|adopt\w*|sign\w*|enter\w*|entered|founded|established|born|die\w*|publish\w*|held|elected|"
        r"appointed|created|passed|enacted|abolished)\b",
        re.IGNORECASE), _DATE, "the closest passages give no date"),
    ("duration", re.compile(
        r"\bhow long\b|\bhow many (years|months|weeks|days|hours|decades)\b"
        r"|\b(maximum|minimum|longest|shortest) (period|length|duration|term)\b",
        re.IGNORECASE), _DURATION, "the closest passages give no length of time"),
    ("person", re.compile(
        r"^\s*who (is|was|were|are) (the )?(current |first |last |former |present |then )?"
        r"([\w-]+ ){0,3}(director|director-general|chair|chairperson|chairman|chairwoman|president|secretary|"
        r"secretary-general|head|minister|founder|leader|author|judge|rapporteur|ambassador|commissioner|ceo)\b"
        r"|^\s*who (founded|wrote|chaired|signed|led|heads|leads|chairs)\b",
        re.IGNORECASE), _PERSON, "the closest passages name no person"),
    ("frequency", re.compile(r"\bhow often\b|\bhow many times\b", re.IGNORECASE), _FREQUENCY,
     "the closest passages say nothing of how often"),
    ("figure", re.compile(
        r"\b(how (many|much|old)|what (percentage|proportion|share|fraction|number)|"
        r"(maximum|minimum|total) number of|(what|which) (article|section|clause|paragraph|chapter))\b",
        re.IGNORECASE), _FIGURE, "the closest passages give no figure"),
)


_CLAUSE_END = re.compile(r"[,;]\s*(and|or|but)?\s*(how|what|which|when|who|where|why|in what)\b|[;?]"
                         r"|\s(and|or) (how|what|which|when|who|where|why)\b", re.IGNORECASE)


def main_clause(question: str) -> str:
    """The question's first clause: what it asks first ("How many ratifications did it need, and how long
    afterwards?" asks for a number; the length of time is a second question)."""
    m = _CLAUSE_END.search(question)
    return question[:m.start()] if m and m.start() > 0 else question


def asked_type(question: str) -> tuple[str, re.Pattern[str], str] | None:
    """(kind, what an answer of that kind looks like, the reason) for the first kind the question's main clause
    asks for."""
    clause = main_clause(question)
    for kind, asks, looks, reason in _ASKS:
        if asks.search(clause):
            return kind, looks, reason
    return None


def has_type(looks: re.Pattern[str], kind: str, text: str) -> bool:
    if kind != "person":
        return bool(looks.search(text))
    return any(not _NOT_A_PERSON.search(m.group(0)) for m in looks.finditer(text))


# ---------------------------------------------------------------- the check


@dataclass(frozen=True)
class Evidence:
    """One of the best passages: its text, its dense score and the sentence(s) that best answer."""

    text: str
    score: float
    highlight: str = ""


def strong_level(threshold: float) -> float:
    """The dense score from which evidence is strong: halfway from the threshold to a perfect match."""
    return threshold + STRONG_SHARE * (1.0 - threshold)


def active_checks(language: str) -> list[str]:
    """The checks that can abstain on a corpus in ``language`` (for ``tqa info``)."""
    checks = ["relevance", "years"]
    if language in CAPITALISING:
        checks.append("names")
    if language in ANSWER_TYPE_LANGUAGES:
        checks.append("answer types")
    return checks


def check(question: str, passages: Sequence[tuple[str, float]] | Sequence[Evidence], vocab: Vocabulary, *,
          threshold: float, language: str, highlights: Sequence[str] | None = None,
          analyze: Analyzer | None = None, top: int = 3, relevance: float | None = None,
          calibrated: float | None = None) -> str | None:
    """Why the documents searched can't answer ``question`` (a phrase for the reader), or None.

    ``passages``: the best passages, best first, as ``(text, dense score)`` pairs or ``Evidence``;
    ``highlights``: the sentence(s) that best answer in each (else the passages' whole text is used);
    ``vocab``: the vocabulary of the documents searched; ``threshold``: the index's calibrated threshold;
    ``language``: the corpus's (``detect_language``); ``analyze``: the keyword analyser (``vocab``'s terms are
    its output; defaults to the index's); ``relevance``: the best dense score of any passage of the documents
    searched, when the search measured it beyond ``passages`` (None: the best of ``passages``); ``calibrated``: the
    index's calibrated threshold, from which strong evidence is measured (``strong_level``) even when the reader
    set another ``threshold`` (None: ``threshold``)."""
    evidence = [p if isinstance(p, Evidence) else Evidence(p[0], float(p[1])) for p in passages]
    if highlights is not None:
        evidence = [Evidence(e.text, e.score, h) for e, h in zip(evidence, highlights, strict=False)]
    best = relevance if relevance is not None else max((e.score for e in evidence), default=None)
    if best is None or best < threshold:
        return LOW_RELEVANCE
    if analyze is None:
        from .keywords import KeywordIndex

        analyze = KeywordIndex.analyze
    years = unknown_years(question, vocab)
    if years:
        return f"they never mention {_quoted(years)}"
    if language in CAPITALISING and question_language(question) in CAPITALISING | {"und"}:
        strong = best >= strong_level(threshold if calibrated is None else calibrated)
        names = unknown_names(question, vocab, analyze, strong=strong)
        if names:
            return f"they never mention {_quoted(names)}"
    if language in ANSWER_TYPE_LANGUAGES and is_english(question):
        asked = asked_type(question)
        if asked is not None:
            kind, looks, reason = asked
            shown = [e.highlight or e.text for e in evidence[:top]]
            if not any(has_type(looks, kind, s) for s in shown):
                return reason
    return None


def _quoted(words: Sequence[str]) -> str:
    return ", ".join(f"“{w}”" for w in words[:3])

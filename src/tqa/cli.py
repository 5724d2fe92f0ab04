"""The ``tqa`` command: argument parsing and printing only; the work (and every check of a question, ``-k``,
mode, source or setting) is done by the library.

Exit codes: 0 success, 1 a user error (one line on stderr, no traceback), 2 bad usage, 141 (128 + SIGPIPE, as
for any Unix tool) when the reader of the output goes away early, as ``| head -1`` does: then nothing more is
printed, not even a message, since the reader has what it asked for.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from . import __version__
from .config import MAX_K, MODES, debug_requested, default_index
from .errors import TqaError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE

# Characters that would break a printed line or reach the terminal as a command: C0 and C1 controls (newline,
# carriage return, escape...), line and paragraph separators, bidirectional overrides, and lone surrogates.
_NOT_INLINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def inline(value: object) -> str:
    """``value`` as text that stays on its line: such characters are shown escaped (a file named "a\\nb.md"
    prints as ``a\\nb.md``), so a name from the corpus can neither split a line nor drive the terminal."""
    return _NOT_INLINE.sub(lambda m: repr(m.group())[1:-1], str(value))


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, not {port}")
    return port
DEFAULT_AUTH_FILE = "tqa-users.json"  # the same as tqa.auth.DEFAULT_AUTH_FILE (not imported: `tqa --help` stays light)


def _add_index(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", metavar="DIR", default=default_index(),
                   help="index folder (default: index/, or $TQA_INDEX)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tqa",
        description="Answer questions about your documents with exact, cited passages.",
        epilog="Start with `tqa index CORPUS`, then `tqa ask \"your question\"` or `tqa serve`.",
    )
    parser.add_argument("--version", action="version", version=f"tqa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _declare_index(sub)
    _declare_ask(sub)
    _declare_info(sub)
    _declare_eval(sub)
    _declare_tune(sub)
    _declare_serve(sub)
    _declare_user(sub)
    return parser


def _declare_index(sub: Any) -> None:
    p = sub.add_parser("index", help="build or update the index of a folder of documents",
                       description="Index a folder of documents, embedding only what changed.")
    p.add_argument("corpus", nargs="?", default="corpus", help="folder of documents (default: corpus/)")
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild from scratch (needed to change model, chunking or corpus folder)")
    p.add_argument("--force", action="store_true",
                   help="build in a folder that is neither empty nor a tqa index (tqa still never deletes or "
                        "replaces anything it did not write)")
    p.add_argument("--model", metavar="M", default=None,
                   help="sentence-transformers model name or folder (default: the bundled all-MiniLM-L6-v2, "
                        "or $TQA_MODEL)")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="extract, chunk and embed on a Ray cluster: HOST:PORT of its head, or auto for a local one "
                        "(needs `pip install 'tqa[ray]'`); planning and publishing stay here")
    p.add_argument("--ray-workers", metavar="N", type=int, default=None,
                   help="Ray workers to start, one CPU each (default: one per CPU of the cluster)")
    p.add_argument("--ray-gpus", metavar="N", type=float, default=None,
                   help="GPUs per Ray worker (1, or 0.5 to share one GPU between two workers): workers embed on "
                        "their GPU")
    p.add_argument("--compact", action="store_true",
                   help="rebuild the index's vector and keyword indexes whole from the index itself (no document "
                        "read, nothing embedded again): re-trains what updates changed in place")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_index(p)


def _declare_ask(sub: Any) -> None:
    p = sub.add_parser("ask", help="answer a question with cited passages",
                       description="Answer a question with passages quoted from the documents.")
    p.add_argument("question", help="the question, in your own words")
    p.add_argument("-k", type=int, default=None, metavar="N", help=f"number of passages, 1-{MAX_K} (default: 5)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="search mode (default: hybrid)")
    p.add_argument("--source", action="append", metavar="FILE", help="search only this document (repeatable)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    _add_index(p)


def _declare_info(sub: Any) -> None:
    p = sub.add_parser("info", help="show what the index holds (its manifest)",
                       description="Show the index's model, chunking, documents and counts.")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    _add_index(p)


def _declare_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="measure retrieval quality and fail when it falls below the thresholds",
                       description="Evaluate retrieval on a question set (default) or a BEIR set (--beir), print "
                                   "the metrics, and exit 1 when one falls below eval/thresholds.toml.")
    p.add_argument("--questions", default="eval/questions.jsonl", metavar="FILE",
                   help="question set, JSON lines (default: eval/questions.jsonl)")
    p.add_argument("--corpus", default="corpus", metavar="DIR",
                   help="corpus the questions are about; the index is updated from it first (default: corpus/)")
    p.add_argument("--beir", metavar="DIR", help="evaluate a BEIR-format set instead (corpus, queries, qrels)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--mode", choices=MODES, default=None,
                       help="search mode to evaluate and gate (default: hybrid)")
    group.add_argument("--modes", choices=("all",), default=None,
                       help="all: every mode and the standard LangChain recipe side by side (gates the default)")
    p.add_argument("--thresholds", default="eval/thresholds.toml", metavar="FILE",
                   help="minimums (and maximums) to gate on (default: eval/thresholds.toml)")
    p.add_argument("--no-gate", action="store_true", help="report only; never exit 1 for a metric")
    p.add_argument("--json", metavar="FILE", dest="json_out", help="write the full report to FILE")
    p.add_argument("--compare", metavar="OLD", help="list questions that newly fail, newly pass or moved since OLD")
    _add_index(p)


def _declare_tune(sub: Any) -> None:
    p = sub.add_parser("tune", help="tune the index's model on its own passages (kept only if it finds them better)",
                       description=(
                           "Tune the index's embedding model on the index's own passages (no labels: the model "
                           "learns which paragraph each sentence came from), then re-embed the index with it and "
                           "publish it as a new generation. The tuned model is kept only when held-out sentences "
                           "find their passages better and, where there is a question set, when its MRR@10 does not "
                           "fall; otherwise nothing changes. The tuned model is saved in the index folder, under "
                           "models/."))
    p.add_argument("--revert", action="store_true",
                   help="go back to the base model (re-embeds the index with it and removes the tuned model)")
    p.add_argument("--corpus", metavar="DIR", default=None,
                   help="the corpus the index is of (checked); corpus/ selects the default question set")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--questions", metavar="FILE", default=None,
                       help="question set (JSON lines, as for `tqa eval`) the tuned index must not answer worse "
                            "(default: eval/questions.jsonl for an index of corpus/)")
    group.add_argument("--no-questions", action="store_true",
                       help="decide on held-out sentences alone (a larger gain is then required)")
    p.add_argument("--epochs", metavar="N", type=_positive, default=None, help="passes over the pairs (default: 2)")
    p.add_argument("--max-pairs", metavar="N", type=_positive, default=None,
                   help="training pairs at most; a larger corpus is sampled (default: 2000)")
    p.add_argument("--min-gain", metavar="X", type=_gain, default=None,
                   help="held-out MRR@10 gain required to keep the model (default: 0.01 with a question set, "
                        "0.03 without)")
    p.add_argument("--json", action="store_true", help="print the result and its figures as JSON")
    _add_index(p)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _gain(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not -1 <= value <= 1:  # (NaN too): MRR@10 lies between 0 and 1
        raise argparse.ArgumentTypeError(f"a gain in MRR@10 is a number from -1 to 1, not {text}")
    return value


def _declare_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve the web page",
                       description="Serve the web page for asking questions.")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default: {DEFAULT_HOST})")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--auth-file", metavar="FILE",
                       help="require a login: the users in FILE (made by `tqa user add`); needed for a non-local "
                            "--host")
    group.add_argument("--insecure-no-auth", action="store_true",
                       help="serve a non-local --host without a login (anyone who can reach it can ask questions "
                            "and add documents)")
    _add_index(p)


def _declare_user(sub: Any) -> None:
    p = sub.add_parser("user", help="manage the logins of the web page (`tqa serve --auth-file FILE`)",
                       description="Add, remove or list the users who may log in to `tqa serve --auth-file FILE`. "
                                   "The file keeps salted argon2id hashes, never passwords.")
    actions = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    a = actions.add_parser("add", help="add a user, or replace their password",
                           description="Add a user, or replace their password. The password is asked twice on a "
                                       "terminal, or read as one line from standard input otherwise (for scripts); "
                                       "never from the command line.")
    a.add_argument("name", help="user name: letters, digits, spaces and . _ - @ + ' (at most 64)")
    r = actions.add_parser("remove", help="remove a user (their open sessions end)")
    r.add_argument("name", help="user name")
    ls = actions.add_parser("list", help="list the user names")
    for q in (a, r, ls):
        q.add_argument("--auth-file", metavar="FILE", default=DEFAULT_AUTH_FILE,
                       help=f"the users file (default: {DEFAULT_AUTH_FILE})")


def _print_answer(answer: Any) -> None:
    width = 100
    if answer.abstained:
        print(inline(answer.message))
        if answer.passages:
            print("\nClosest passages (not an answer):")
    for p in answer.passages:
        rel = f"relevance {p.relevance:.2f}" if p.relevance is not None else f"score {p.score:.3f}"
        origin = f" \u00b7 {p.origin()}" if p.origin() else ""  # an e-mail's (or its attachment's) sender, date
        print(f"\n[{p.rank}] {inline(p.citation() + origin)}  ({rel})")
        if p.also_in:
            print(f"    same text also in: {inline(', '.join(p.also_in))}")
        print(textwrap.fill(f"» {_flat(p.highlight)}", width, initial_indent="    ", subsequent_indent="      "))
        print(textwrap.fill(_flat(p.text), width, initial_indent="    ", subsequent_indent="    "))
    for w in answer.warnings:
        print(f"warning: {inline(w)}", file=sys.stderr)


def _flat(text: str) -> str:
    """Passage text for the terminal: whitespace runs (line breaks included) as one space, controls escaped."""
    return inline(" ".join(text.split()))


def _cmd_index(args: argparse.Namespace) -> int:
    from .indexing import build_index

    for flag, value in (("--ray-workers", args.ray_workers), ("--ray-gpus", args.ray_gpus)):
        if value is not None and args.ray is None:
            raise TqaError(f"{flag} needs --ray ADDRESS (or --ray auto).")
    if args.compact:
        clash = [flag for flag, on in (("--rebuild", args.rebuild), ("--model", args.model), ("--ray", args.ray),
                                       ("--force", args.force)) if on]
        if clash:
            raise TqaError(f"--compact works on the index as it is; drop {' '.join(clash)}.")
        from .indexing import compact_index

        summary = compact_index(args.index)
    else:
        summary = build_index(args.corpus, args.index, model=args.model, rebuild=args.rebuild, force=args.force,
                              ray=args.ray, ray_workers=args.ray_workers, ray_gpus=args.ray_gpus)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False))
    else:
        print("\n".join(inline(line) for line in summary.lines()))  # one line per fact, whatever a name holds
    return 0


def _cmd_ask(args: argparse.Namespace) -> int:
    from .assistant import Assistant, prepare_query
    from .config import Settings

    settings = Settings.from_env()
    # checked before the model is loaded, so that bad input is refused at once (Assistant.ask checks the same)
    prepare_query(args.question, args.k, args.mode, args.source, settings=settings)
    answer = Assistant.load(args.index, settings=settings).ask(args.question, k=args.k, mode=args.mode,
                                                               sources=args.source)
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_answer(answer)
    return 0


def _vectors_line(v: Any) -> str:
    """The vector index of chunks (and units), as ``tqa info`` shows it."""
    def one(v: Any) -> str:
        parts = [] if v.vectors is None else [f"{v.vectors:,} vectors"]
        if v.nlist:
            parts.append(f"{v.nlist} lists, {v.nprobe} probed")
        if v.compressed:
            parts.append(f"{v.code_bytes} bytes of code a vector, {v.rerank_depth} re-ranked from {v.stored} rows")
        return v.type + (f" ({', '.join(parts)})" if parts else "")
    return one(v) + ("" if v.units is None else f"; units {one(v.units)}")


def _cmd_info(args: argparse.Namespace) -> int:
    from .store import read_manifest

    m = read_manifest(args.index)
    if args.json:
        print(json.dumps(m.to_dict(), indent=2, ensure_ascii=False))
        return 0
    lines = [
        f"index:      {args.index} (format {m.format_version}, tqa {m.tqa_version})",
        f"built:      {m.created} from {m.corpus}",
        f"model:      {m.model.name} ({m.model.dim} dimensions)",
        f"chunking:   {m.chunking.to_dict()}",
        f"documents:  {m.counts.files}    chunks: {m.counts.chunks}    vectors: {_vectors_line(m.vector_index)}",
        f"abstain below relevance {m.calibration.abstain_threshold} (calibrated on {m.calibration.probes} probes)",
        _abstention_line(m),
        _ranking_line(m),
        _tuning_line(m),
    ]
    for src, meta in sorted(m.files.items()):
        page = f", {meta.pages} pages" if meta.pages else ""
        lines.append(f"  {src}  ({meta.format}, {meta.chunks} chunks{page})")
    for s in m.skipped:
        lines.append(f"  skipped {s.path}: {s.reason}")
    for line in lines:
        print(inline(line))  # one line per document, whatever its name holds
    return 0


def _abstention_line(m: Any) -> str:
    """Which abstention checks are active for the index's documents, and why."""
    from .abstention import active_checks

    if m.language is None:
        return ("abstention: checks chosen by the documents' language, detected when the index is loaded (built "
                "before it was recorded; `tqa index --rebuild` records it)")
    shown = "not one tqa recognises" if m.language == "und" else m.language
    return f"abstention: {', '.join(active_checks(m.language))} (documents' language: {shown})"


def _ranking_line(m: Any) -> str:
    """What the build learned about ranking, in one sentence, and whether it is used."""
    from .config import Settings

    if m.ranking is None:
        return "ranking:    shipped (nothing learned: built before tqa learned a ranking)"
    used = Settings.from_env().ranking == "learned"
    state = "learned" if used else "shipped (TQA_RANKING=shipped); learned, unused"
    return f"ranking:    {state}: {m.ranking.why}"


def _tuning_line(m: Any) -> str:
    """Whether the index uses a model tuned on its corpus, and the figures it was kept on."""
    t = m.tuning
    if t is None:
        return "tuning:     none (the model as published; `tqa tune` adapts it to these documents)"
    questions = (f", {t.questions} MRR@10 {t.questions_mrr_before:.3f} -> {t.questions_mrr_after:.3f}"
                 if t.questions is not None and t.questions_mrr_before is not None
                 and t.questions_mrr_after is not None else ", no question set checked")
    return (f"tuning:     tuned from {t.base_model} on {t.pairs} pairs ({t.folder}): held-out MRR@10 "
            f"{t.held_out_mrr_before:.3f} -> {t.held_out_mrr_after:.3f}{questions}; {t.seconds:.0f} s, {t.created}")


def _cmd_tune(args: argparse.Namespace) -> int:
    from .tuning import revert_tuning, tune_index

    if args.revert:
        tuning_only = [flag for flag, value in (("--corpus", args.corpus), ("--questions", args.questions),
                                                ("--no-questions", args.no_questions or None),
                                                ("--epochs", args.epochs), ("--max-pairs", args.max_pairs),
                                                ("--min-gain", args.min_gain)) if value is not None]
        if tuning_only:
            raise TqaError(f"--revert takes no tuning options ({', '.join(tuning_only)}).")
        result = revert_tuning(args.index)
    else:
        result = tune_index(args.index, corpus=args.corpus, questions=args.questions,
                            use_questions=not args.no_questions, epochs=args.epochs, max_pairs=args.max_pairs,
                            min_gain=args.min_gain)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(inline(result.message))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import run_eval

    report, lines, failures = run_eval(
        questions=args.questions, corpus=args.corpus, index=args.index, beir=args.beir,
        mode=args.mode, all_modes=args.modes == "all", thresholds=None if args.no_gate else args.thresholds,
        json_out=args.json_out, compare_with=args.compare,
    )
    print("\n".join(lines))
    if failures:
        print("\nFAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .web import serve

    serve(index=args.index, host=args.host, port=args.port, auth_file=args.auth_file,
          insecure_no_auth=args.insecure_no_auth)
    return 0


def _read_new_password(name: str) -> str:
    """Twice with getpass on a terminal; otherwise one line from standard input (so scripts can pipe it in)."""
    import getpass

    from .auth import PASSWORD_MAX, check_password

    try:
        if sys.stdin is not None and sys.stdin.isatty():
            first = getpass.getpass(f"Password for {name}: ")
            check_password(first)
            if getpass.getpass("The same password again: ") != first:
                raise TqaError("The two passwords differ. Nothing was changed; run the command again.")
            return first
        text = sys.stdin.read(PASSWORD_MAX + 3) if sys.stdin is not None else ""
    except EOFError:
        raise TqaError("No password was given. Nothing was changed.") from None
    except UnicodeDecodeError:
        raise TqaError("The password on standard input is not UTF-8 text. Nothing was changed.") from None
    if text.endswith("\n"):
        text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
    if "\n" in text or "\r" in text:
        raise TqaError("Standard input holds more than one line: give the password alone, on one line.")
    return text


def _cmd_user(args: argparse.Namespace) -> int:
    from .auth import add_user, check_name, list_users, remove_user

    path = args.auth_file
    if args.user_command == "list":
        for name in list_users(path):
            print(name)
        return 0
    if args.user_command == "remove":
        left = remove_user(path, args.name)
        print(f"removed {args.name} from {path} ({left} user{'s' if left != 1 else ''} left)", file=sys.stderr)
        if not left:
            print(f"warning: {path} has no users: `tqa serve --auth-file {path}` will not start until you add one.",
                  file=sys.stderr)
        return 0
    name = check_name(args.name)  # refuse a bad name before asking for a password
    replaced = add_user(path, name, _read_new_password(name))
    print(f"{'replaced the password of' if replaced else 'added'} {name} in {path}", file=sys.stderr)
    return 0


COMMANDS = {"index": _cmd_index, "ask": _cmd_ask, "info": _cmd_info, "eval": _cmd_eval, "tune": _cmd_tune,
            "serve": _cmd_serve, "user": _cmd_user}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Text that cannot be encoded (a lone surrogate from an undecodable file name) is printed escaped, never
    # turned into an error halfway through the output.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # here, so that a reader gone away is seen here too
        return code
    except BrokenPipeError:
        _detach_stdout()
        return EXIT_BROKEN_PIPE
    except TqaError as exc:
        if debug_requested():
            raise
        print(f"error: {inline(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback for developers and tests
        if debug_requested() or "PYTEST_CURRENT_TEST" in os.environ:
            raise
        print(f"error: unexpected {type(exc).__name__}: {inline(exc)} (run with TQA_DEBUG=1 for details and "
              "report it)", file=sys.stderr)
        return 1


def _detach_stdout() -> None:
    """After the reader of stdout went away: point stdout at /dev/null, so that the output still buffered is
    dropped quietly at exit instead of raising BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (captured output): nothing to drop
        pass


def run() -> None:
    sys.exit(main())

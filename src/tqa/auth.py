"""Logins for the web page: a file of users with salted password hashes, and the check the server calls.

The auth file is JSON with one entry per user; each value is an argon2id hash string that carries its own salt and
parameters, so no password (and nothing a password could be read back from cheaply) is ever written::

    {
     "format": "tqa-users",
     "version": 1,
     "users": {
      "alice": "$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>"
     }
    }

``tqa user add/remove/list`` edit it (one command at a time per folder; the file is replaced atomically, mode 0600).
``tqa serve --auth-file`` reads it at start (a missing, damaged or empty file stops the server with one line) and
re-reads it whenever it changes: a new user or password works at the next login, and the sessions of a removed
user, or of one whose password changed, end at their next request, all without a restart.

Failed logins are rate-limited per user name and overall (``RateLimiter``); an unknown name is checked against a
dummy hash with the same parameters, so it costs what a known one does. Heavy lifting (argon2, the constant-time
comparison) is argon2-cffi's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import sys
import threading
import time
import unicodedata
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AuthError, AuthRequired

FORMAT = "tqa-users"
VERSION = 1
DEFAULT_AUTH_FILE = "tqa-users.json"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
NAME_MAX = 64
NAME_PUNCTUATION = " ._-@+'"
PASSWORD_MAX = 1024  # characters; argon2 hashes any length, this only bounds the work one login can ask for
MAX_FILE_BYTES = 16 << 20
# Bounds on a stored hash's parameters, so that a damaged or hand-edited file cannot make each login take minutes
# or gigabytes. tqa itself writes argon2-cffi's default profile (RFC 9106 "low memory": 64 MiB, 3 passes, 4 lanes).
MAX_MEMORY_KIB = 256 * 1024
MAX_TIME_COST = 10
MAX_PARALLELISM = 16
MIN_SALT_BYTES = 8
MIN_HASH_BYTES = 16
_HASH_RE = re.compile(r"\$argon2id\$v=19\$m=\d{1,10},t=\d{1,10},p=\d{1,10}\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{22,}")
VERIFY_SLOTS = 2  # logins hashed at once (each takes argon2's memory, 64 MiB by default); the rest wait their turn
LOCK_WAIT_SECONDS = 10.0


def _show(text: str) -> str:
    """A name or value for a one-line message: quoted, control and invisible characters escaped, cut at 80."""
    return repr(text[:80] + ("\u2026" if len(text) > 80 else ""))


# ----------------------------------------------------------------------------------------------------------
# Exposure: who may serve without a login
# ----------------------------------------------------------------------------------------------------------


def is_local(host: str) -> bool:
    """True for the loopback names tqa serves on without a login (127.0.0.1, localhost, ::1)."""
    return host.lower() in LOCAL_HOSTS


def check_exposure(host: str, *, auth: bool, insecure_no_auth: bool = False) -> str | None:
    """Refuse (``AuthRequired``) to serve a non-local ``host`` with no login unless ``insecure_no_auth``; return
    the warning to print when serving it without one anyway, else None."""
    if auth or is_local(host):
        return None
    if not insecure_no_auth:
        raise AuthRequired(
            f"Serving on {host} needs a login: pass --auth-file FILE (create it with `tqa user add NAME "
            "--auth-file FILE`), or --insecure-no-auth to let anyone who can reach it ask and add documents.")
    return (f"warning: serving on {host} without authentication (--insecure-no-auth); anyone who can reach it can "
            "ask questions and add documents.")


# ----------------------------------------------------------------------------------------------------------
# Names, passwords, hashes
# ----------------------------------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """The user name in NFC, or ``AuthError`` saying what is wrong with it. Names are 1-64 letters, digits, marks,
    spaces and ``. _ - @ + '``, with no space at either end (the login form strips those)."""
    if not isinstance(name, str):
        raise AuthError("A user name must be text.")
    n = unicodedata.normalize("NFC", name)
    if not n:
        raise AuthError("A user name cannot be empty.")
    if len(n) > NAME_MAX:
        raise AuthError(f"A user name is at most {NAME_MAX} characters; {_show(n)} has {len(n)}.")
    for i, ch in enumerate(n):
        kind = unicodedata.category(ch)[0]
        if kind in "LN" or (kind == "M" and i > 0) or ch in NAME_PUNCTUATION:
            continue
        raise AuthError(f"A user name may hold only letters, digits, spaces and . _ - @ + ' characters; "
                        f"{_show(n)} holds {ch!r} (U+{ord(ch):04X}).")
    if n != n.strip():
        raise AuthError(f"A user name cannot start or end with a space: {_show(n)}.")
    return n


def check_password(password: str) -> str:
    """The password in NFC (so that the same characters typed on any system match), or ``AuthError``."""
    if not isinstance(password, str):
        raise AuthError("A password must be text.")
    if not password.strip():
        raise AuthError("The password cannot be empty or only spaces.")
    if len(password) > PASSWORD_MAX:
        raise AuthError(f"A password is at most {PASSWORD_MAX} characters.")
    if any(c in password for c in "\n\r\x00"):
        raise AuthError("A password cannot hold line breaks or NUL characters.")
    return unicodedata.normalize("NFC", password)


def password_hasher() -> Any:
    """argon2-cffi's default hasher: argon2id with the RFC 9106 low-memory profile and a random 16-byte salt."""
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str, hasher: Any = None) -> str:
    """The argon2id hash string of ``password`` (salt and parameters included)."""
    return str((hasher or password_hasher()).hash(check_password(password)))


def hash_parameters(h: str) -> Any:
    """The parameters of a stored hash (``argon2.Parameters``), or ``ValueError`` saying why it is unusable."""
    from argon2 import Type, extract_parameters
    from argon2.exceptions import InvalidHashError

    if not isinstance(h, str) or not _HASH_RE.fullmatch(h):
        raise ValueError("not an argon2id hash")
    try:
        p = extract_parameters(h)
    except InvalidHashError:
        raise ValueError("not an argon2id hash") from None
    if p.type is not Type.ID:
        raise ValueError("not an argon2id hash")
    if not (8 * p.parallelism <= p.memory_cost <= MAX_MEMORY_KIB and 1 <= p.time_cost <= MAX_TIME_COST
            and 1 <= p.parallelism <= MAX_PARALLELISM):
        raise ValueError(f"parameters out of bounds (m={p.memory_cost}, t={p.time_cost}, p={p.parallelism})")
    if p.salt_len < MIN_SALT_BYTES or p.hash_len < MIN_HASH_BYTES:
        raise ValueError("salt or hash too short")
    return p


# ----------------------------------------------------------------------------------------------------------
# The auth file
# ----------------------------------------------------------------------------------------------------------


def _damaged(path: Path, why: str) -> AuthError:
    return AuthError(f"The auth file {path} is damaged ({why}). Fix it, or move it away and recreate it with "
                     f"`tqa user add NAME --auth-file {path}`.")


def _read_raw(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise AuthError(f"There is no auth file at {path}. Create it with "
                        f"`tqa user add NAME --auth-file {path}`.") from None
    except IsADirectoryError:
        raise AuthError(f"The auth file {path} is a folder. Pass the path of a file.") from None
    except OSError as exc:
        raise AuthError(f"Cannot read the auth file {path}: {exc.strerror or exc}. Check its permissions.") from None
    if len(raw) > MAX_FILE_BYTES:
        raise _damaged(path, f"larger than {MAX_FILE_BYTES >> 20} MiB")
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"{_show(k)} appears twice")
        out[k] = v
    return out


def parse_users(raw: bytes, path: str | Path = "the auth file") -> dict[str, str]:
    """The users of an auth file's bytes (name -> hash), checked whole: ``AuthError`` names the first problem."""
    path = Path(path)
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise _damaged(path, "not UTF-8 text") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError; so is a duplicate name
        raise _damaged(path, f"not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _damaged(path, f'not a tqa users file: no "format": "{FORMAT}"')
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _damaged(path, '"version" is not a positive integer')
    if version > VERSION:
        raise AuthError(f"The auth file {path} was written by a newer tqa (format version {version}; this tqa reads "
                        f"{VERSION}). Upgrade tqa.")
    users = data.get("users")
    if not isinstance(users, dict):
        raise _damaged(path, '"users" is not an object')
    out: dict[str, str] = {}
    for name, h in users.items():
        try:
            good = check_name(name)
        except AuthError as exc:
            raise _damaged(path, f"bad user name: {exc}") from None
        if good != name:
            raise _damaged(path, f"user name {_show(name)} is not in NFC")
        try:
            hash_parameters(h)
        except ValueError as exc:
            raise _damaged(path, f"the hash of {_show(name)} is unusable: {exc}") from None
        out[name] = h
    return out


def read_users(path: str | Path) -> dict[str, str]:
    """The users in the auth file at ``path`` (name -> argon2id hash); ``AuthError`` if missing or damaged."""
    return parse_users(_read_raw(Path(path)), path)


def write_users(path: str | Path, users: dict[str, str]) -> None:
    """Replace the auth file atomically with ``users`` (mode 0600; a symlink is followed to its target)."""
    target = Path(os.path.realpath(path))
    body = json.dumps({"format": FORMAT, "version": VERSION, "users": dict(sorted(users.items()))},
                      indent=1, ensure_ascii=False) + "\n"
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the umask can only take bits away; this makes it exactly owner read/write
            with os.fdopen(fd, "wb", closefd=False) as f:
                f.write(body.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise AuthError(f"Cannot write the auth file {path}: {exc.strerror or exc}. Nothing was changed.") from None
    with contextlib.suppress(OSError):
        dfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def _editing(path: str | Path) -> Iterator[None]:
    """One ``tqa user`` command at a time changes the auth files of a folder (a lock on the folder itself, so no
    lock file is left behind); another one waits up to ``LOCK_WAIT_SECONDS``."""
    import fcntl

    folder = Path(os.path.realpath(path)).parent
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise AuthError(f"Cannot open the folder of the auth file {path}: {exc.strerror or exc}.") from None
    try:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AuthError(f"Another `tqa user` command is changing {path}. Wait for it, then run again."
                                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def add_user(path: str | Path, name: str, password: str, *, hasher: Any = None) -> bool:
    """Add ``name`` with ``password`` (hashed) to the auth file, creating the file if needed, or replace that
    user's password. Returns True when the user existed. A damaged file is refused, never overwritten."""
    name = check_name(name)
    h = hash_password(password, hasher)  # slow on purpose: done before taking the lock
    with _editing(path):
        try:
            users = read_users(path)
        except AuthError:
            if os.path.lexists(path):
                raise
            users = {}
        existed = name in users
        users[name] = h
        write_users(path, users)
    return existed


def remove_user(path: str | Path, name: str) -> int:
    """Remove ``name`` from the auth file; returns how many users are left. ``AuthError`` if there is no such user."""
    name = unicodedata.normalize("NFC", name) if isinstance(name, str) else name
    with _editing(path):
        users = read_users(path)
        if name not in users:
            raise AuthError(f"There is no user {_show(name)} in {path}. `tqa user list --auth-file {path}` "
                            "shows the users.")
        del users[name]
        write_users(path, users)
    return len(users)


def list_users(path: str | Path) -> list[str]:
    """The user names in the auth file, sorted."""
    return sorted(read_users(path))


# ----------------------------------------------------------------------------------------------------------
# Rate limiting
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _NameState:
    failures: int = 0
    in_flight: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class RateLimiter:
    """Failed logins, limited per user name and overall.

    Per name: ``free`` failures are allowed; each one after that locks the name for ``base_delay`` seconds,
    doubled at every further failure up to ``max_delay`` (1 s, 2 s, 4 s ... 15 min by default). Attempts made while
    a name is locked are refused without checking the password and do not count. A name's failures are forgotten
    after a successful login or ``forget_after`` seconds without a failure. Overall: at most ``overall_limit``
    failed logins in any ``overall_window`` seconds, whatever the names, which bounds password spraying across
    names and the CPU spent hashing.

    An attempt counts as a failure from ``begin`` until ``end`` says it succeeded, so parallel attempts cannot slip
    past the limits while their passwords are being checked. ``clock`` is injectable (tests never sleep).
    """

    def __init__(self, *, free: int = 5, base_delay: float = 1.0, max_delay: float = 900.0,
                 forget_after: float = 3600.0, overall_limit: int = 60, overall_window: float = 60.0,
                 max_names: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.base_delay, self.max_delay = free, base_delay, max_delay
        self.forget_after, self.overall_limit, self.overall_window = forget_after, overall_limit, overall_window
        self.max_names, self.clock = max_names, clock
        self._names: OrderedDict[str, _NameState] = OrderedDict()
        self._failures: deque[float] = deque()  # times of recent failures, all names
        self._in_flight = 0
        self._lock = threading.Lock()

    def _state(self, name: str, now: float) -> _NameState:
        st = self._names.get(name)
        if st is not None and st.in_flight == 0 and st.failures and now - st.last_failure > self.forget_after:
            st = None
        if st is None:
            self._evict(keep=self.max_names - 1)
            st = self._names[name] = _NameState()
        self._names.move_to_end(name)
        return st

    def _evict(self, keep: int) -> None:
        """Forget names until ``keep`` are left: the least recently tried first, never one being checked."""
        while len(self._names) > keep:
            victim = next((k for k, st in self._names.items() if st.in_flight == 0), None)
            if victim is None:
                return
            del self._names[victim]

    def begin(self, name: str) -> float:
        """0.0 when ``name`` may try now (the attempt is then counted until ``end``), else the seconds to wait."""
        with self._lock:
            now = self.clock()
            while self._failures and now - self._failures[0] >= self.overall_window:
                self._failures.popleft()
            if len(self._failures) + self._in_flight >= self.overall_limit:
                wait = (self._failures[0] + self.overall_window - now) if self._failures else 1.0
                return max(wait, 0.001)
            st = self._state(name, now)
            if now < st.locked_until:
                return st.locked_until - now
            if st.failures + st.in_flight >= self.free and st.in_flight:
                return 1.0  # one attempt at a time once the free ones are used up
            st.in_flight += 1
            self._in_flight += 1
            return 0.0

    def end(self, name: str, ok: bool) -> str | None:
        """Record how an attempt that ``begin`` allowed ended; returns a line to log when a lock starts."""
        with self._lock:
            now = self.clock()
            self._in_flight -= 1
            st = self._names.get(name)
            if st is None:  # never: a name is not forgotten while an attempt is in flight
                st = self._state(name, now)
                st.in_flight = 1
            st.in_flight -= 1
            if ok:
                st.failures, st.locked_until = 0, 0.0
                return None
            st.failures += 1
            st.last_failure = now
            self._failures.append(now)
            notes = []
            if st.failures >= self.free:
                delay = min(self.base_delay * 2 ** (st.failures - self.free), self.max_delay)
                st.locked_until = now + delay
                notes.append(f"{st.failures} failed logins in a row for {_show(name)}; the next attempt for that "
                             f"name waits {delay:g} s")
            if len(self._failures) == self.overall_limit:
                notes.append(f"{self.overall_limit} failed logins in {self.overall_window:g} s; every login waits "
                             "until the oldest is that old")
            return "; ".join(notes) or None


# ----------------------------------------------------------------------------------------------------------
# The check the server calls
# ----------------------------------------------------------------------------------------------------------


class _Verifier:
    """argon2-cffi's verify, made once on first use; it reads the parameters from the hash it is given."""

    _hasher: Any = None

    def verify(self, h: str, password: str) -> bool:
        if self._hasher is None:
            self._hasher = password_hasher()
        return bool(self._hasher.verify(h, password))


_VERIFIER = _Verifier()


def _params_key(p: Any) -> tuple[Any, ...]:
    return (p.type, p.version, p.salt_len, p.hash_len, p.time_cost, p.memory_cost, p.parallelism)


@dataclass(frozen=True)
class Attempt:
    """How a login attempt ended: ``ok``, or refused; ``retry_after`` > 0 when refused by the rate limiter."""

    ok: bool
    retry_after: float = 0.0


def _stderr(line: str) -> None:
    print(f"tqa: {line}", file=sys.stderr, flush=True)


class Authenticator:
    """The users of an auth file, kept current, and the login check (``verify``; ``gradio_check`` for Gradio).

    The file is read at construction: missing, unreadable, damaged or without users is ``AuthError``, so the
    server never starts on it. ``refresh`` re-reads it when it changed (called on every login and, through
    ``sessions``, on every request that carries a session); if it has become unreadable or damaged, new logins are
    refused (the error is logged once) while the last good list still backs existing sessions.
    """

    RACY_SECONDS = 2.0  # a file changed this recently is re-read even when its size, times and inode look the same

    def __init__(self, path: str | Path, *, limiter: RateLimiter | None = None,
                 log: Callable[[str], None] = _stderr, wall_clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.limiter = limiter or RateLimiter()
        self.log, self.wall_clock = log, wall_clock
        self.problem: str | None = None
        self._lock = threading.RLock()
        self._slots = threading.BoundedSemaphore(VERIFY_SLOTS)
        self._listeners: list[Callable[[set[str]], None]] = []
        self._dummies: dict[Any, str] = {}
        sig = self._signature()
        raw = _read_raw(self.path)
        users = parse_users(raw, self.path)
        if not users:
            raise AuthError(f"The auth file {self.path} has no users. Add one with "
                            f"`tqa user add NAME --auth-file {self.path}`.")
        self._sig, self._raw, self._users = sig, raw, users
        self._dummy_for(users)  # made now, so that the first unknown name costs what a known one does

    # -- the file ------------------------------------------------------------------------------------------

    def _signature(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def users(self) -> list[str]:
        with self._lock:
            return sorted(self._users)

    def on_change(self, listener: Callable[[set[str]], None]) -> None:
        """Call ``listener(names)`` with the users removed or given a new password whenever the file changes."""
        self._listeners.append(listener)

    def refresh(self) -> None:
        """Re-read the file if it changed since the last read."""
        with self._lock:
            sig = self._signature()
            if sig is not None and sig == self._sig:
                newest = max(sig[3], sig[4]) / 1e9
                if self.wall_clock() - newest > self.RACY_SECONDS:
                    return  # unchanged, and old enough that a same-size rewrite would have shown in its times
            try:
                raw = _read_raw(self.path)
                if sig == self._sig and raw == self._raw:
                    return
                users = parse_users(raw, self.path)
            except AuthError as exc:
                if self.problem != str(exc):
                    self.problem = str(exc)
                    self.log(f"{exc} New logins are refused until it is fixed.")
                self._sig = sig
                return
            if self.problem:
                self.log(f"the auth file {self.path} is readable again ({len(users)} users).")
            self.problem = None
            old, self._users, self._sig, self._raw = self._users, users, sig, raw
            gone = {n for n, h in old.items() if users.get(n) != h}
            self._dummy_for(users)
        if gone:
            for listener in self._listeners:
                listener(gone)

    def _dummy_for(self, users: dict[str, str]) -> str:
        """A hash of a random password with the parameters most users' hashes have, checked for unknown names."""
        from argon2 import PasswordHasher

        params = {_params_key(p): p for p in map(hash_parameters, users.values())}
        common = Counter(_params_key(hash_parameters(h)) for h in users.values()).most_common(1)
        key = common[0][0] if common else None
        if key not in self._dummies:
            hasher = PasswordHasher.from_parameters(params[key]) if key else password_hasher()
            self._dummies[key] = hasher.hash(secrets.token_urlsafe(24))
        self._dummy = self._dummies[key]
        return self._dummy

    # -- logins --------------------------------------------------------------------------------------------

    def verify(self, name: str, password: str) -> Attempt:
        """Check a login. Blocking (argon2 takes about a quarter of a second with the default profile); call it
        from a worker thread in a server."""
        from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

        self.refresh()
        name = unicodedata.normalize("NFC", name if isinstance(name, str) else "")
        key = name[:NAME_MAX + 1]  # bounded memory per name tried, whatever a client sends
        with self._lock:
            if self.problem:
                return Attempt(False)
        wait = self.limiter.begin(key)
        if wait > 0:
            return Attempt(False, retry_after=wait)
        ok = False
        try:
            with self._lock:
                stored, dummy = self._users.get(name), self._dummy
            candidate = password if isinstance(password, str) else ""
            fits = bool(candidate) and len(candidate) <= PASSWORD_MAX
            with self._slots:
                try:
                    # An unknown name, or a password no user could have: the dummy hash is checked all the same, so
                    # the refusal takes as long as for a known name (the hash's own parameters set the cost).
                    h = stored if stored is not None and fits else dummy
                    _VERIFIER.verify(h, unicodedata.normalize("NFC", candidate) if fits else "-")
                    ok = stored is not None and fits
                except (VerifyMismatchError, VerificationError, InvalidHashError):
                    ok = False
        finally:
            note = self.limiter.end(key, ok)
            if note:
                self.log(note)
        return Attempt(ok)

    async def gradio_check(self, username: str, password: str) -> bool:
        """The ``auth=`` callable for Gradio's ``launch``: a coroutine, so argon2 runs in a worker thread and never
        blocks the server. A rate-limited attempt is refused with HTTP 400 (what the login page shows as
        incorrect credentials) and says when to retry; API clients see that message."""
        result = await asyncio.to_thread(self.verify, username, password)
        if result.retry_after > 0:
            from fastapi import HTTPException

            raise HTTPException(status_code=400, detail=f"Too many failed logins; try again in "
                                                        f"{math.ceil(result.retry_after)} s.")
        return result.ok

    def sessions(self, tokens: dict[str, str]) -> dict[str, str]:
        """A session table (token -> user name, as Gradio keeps it) that re-reads the auth file whenever a session
        is looked up, and drops the sessions of users removed from it or given a new password."""
        table = _Sessions(tokens, self)

        def end(names: set[str]) -> None:
            for token, user in list(table.items()):
                if unicodedata.normalize("NFC", str(user)) in names:
                    table.pop(token, None)

        self.on_change(end)
        return table


class _Sessions(dict):  # type: ignore[type-arg]
    def __init__(self, tokens: dict[str, str], auth: Authenticator) -> None:
        super().__init__(tokens)
        self._auth = auth

    def get(self, key: Any, default: Any = None) -> Any:
        self._auth.refresh()
        return super().get(key, default)

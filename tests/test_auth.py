"""Logins for the web page: the auth file, hashing, the rate limiter (with an injected clock), the `tqa user`
commands, the refusal to serve a non-local address without a login, and a running server that refuses an
unauthenticated client on every route that answers or serves something.

Most tests hash with weak argon2 parameters (fast); the CLI tests and one hashing test use the real defaults.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import subprocess
import sys
import threading
import unicodedata
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher, extract_parameters

import tqa.auth as auth
from tqa import Assistant, build_index
from tqa.auth import (
    Authenticator,
    RateLimiter,
    add_user,
    check_exposure,
    check_name,
    check_password,
    hash_password,
    list_users,
    parse_users,
    read_users,
    remove_user,
    write_users,
)
from tqa.cli import main
from tqa.errors import AuthError, AuthRequired

from .support import FakeEmbedder, free_port

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # weak on purpose: tests only

# Gradio opens asyncio event loops it never closes; their ResourceWarnings are third-party noise (as in test_web.py).
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(scope="module", autouse=True)
def _collect_gradio_garbage(collect_gradio_garbage):
    yield


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, text
    return text


@pytest.fixture
def users_file(tmp_path) -> Path:
    path = tmp_path / "users.json"
    add_user(path, "alice", "correct horse", hasher=FAST)
    add_user(path, "bob", "battery staple", hasher=FAST)
    return path


# ---- names and passwords --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "Jane Doe", "o'brien", "a.b-c_d@e+f", "José", "Łukasz", "李雷", "x" * 64])
def test_good_names_are_accepted(name):
    assert check_name(name) == name


def test_names_are_compared_in_nfc():
    nfd = unicodedata.normalize("NFD", "José")
    assert nfd != "José" and check_name(nfd) == "José"


@pytest.mark.parametrize("name, needle", [
    ("", "empty"),
    (" alice", "start or end with a space"),
    ("alice ", "start or end with a space"),
    ("a:b", "':'"),
    ("a\nb", "'\\n'"),
    ("a\rb", "'\\r'"),
    ("a\tb", "'\\t'"),
    ("a\x00b", "'\\x00'"),
    ("a\x1bb", "'\\x1b'"),
    ("ad\u202emin", "U+202E"),  # right-to-left override: would make one name look like another
    ("a\u200bb", "U+200B"),  # zero-width space
    ("a/b", "'/'"),
    ("a<b>", "'<'"),
    ("\u0301a", "U+0301"),  # a combining mark with nothing to combine with
    ("x" * 65, "at most 64"),
])
def test_unsafe_names_are_refused_in_one_line(name, needle):
    with pytest.raises(AuthError) as e:
        check_name(name)
    assert needle in one_line(e.value)


@pytest.mark.parametrize("password, needle", [
    ("", "empty"), ("   ", "empty"), ("a\nb", "line breaks"), ("a\rb", "line breaks"), ("a\x00b", "NUL"),
    ("x" * 1025, "at most 1024"),
])
def test_bad_passwords_are_refused_in_one_line(password, needle):
    with pytest.raises(AuthError) as e:
        check_password(password)
    assert needle in one_line(e.value)


# ---- hashing ------------------------------------------------------------------------------------------------


def test_hash_is_salted_argon2id_with_its_parameters_and_verifies():
    h1, h2 = hash_password("s3cret pass"), hash_password("s3cret pass")  # the real default parameters
    assert h1 != h2  # a fresh salt each time
    for h in (h1, h2):
        p = extract_parameters(h)
        assert h.startswith("$argon2id$v=19$m=65536,t=3,p=4$") and p.salt_len >= 16
        assert "s3cret" not in h
        assert PasswordHasher().verify(h, "s3cret pass")
        auth.hash_parameters(h)  # within the bounds a stored hash must meet


def test_the_same_password_typed_in_nfd_or_nfc_matches():
    h = hash_password(unicodedata.normalize("NFD", "café crème"), FAST)
    assert FAST.verify(h, "café crème")


# ---- the file -----------------------------------------------------------------------------------------------


def test_add_list_remove_and_the_file_format(tmp_path):
    path = tmp_path / "users.json"
    assert add_user(path, "alice", "correct horse", hasher=FAST) is False
    assert add_user(path, "bob", "battery staple", hasher=FAST) is False
    raw = path.read_bytes()
    assert b"correct horse" not in raw and b"battery staple" not in raw
    data = json.loads(raw)
    assert data["format"] == "tqa-users" and data["version"] == 1
    assert sorted(data["users"]) == ["alice", "bob"]
    assert all(h.startswith("$argon2id$") for h in data["users"].values())
    assert list_users(path) == ["alice", "bob"]
    old = read_users(path)["alice"]
    assert add_user(path, "alice", "new password", hasher=FAST) is True  # replaced
    users = read_users(path)
    assert users["alice"] != old and FAST.verify(users["alice"], "new password")
    assert users["bob"] == data["users"]["bob"]  # the others are kept as they were
    assert remove_user(path, "alice") == 1
    assert list_users(path) == ["bob"]
    with pytest.raises(AuthError, match="no user 'alice'"):
        remove_user(path, "alice")
    assert remove_user(path, "bob") == 0 and list_users(path) == []


def test_file_is_written_with_mode_0600_whatever_the_umask_or_the_old_mode(tmp_path):
    path = tmp_path / "users.json"
    old = os.umask(0)
    try:
        add_user(path, "alice", "pw one", hasher=FAST)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        path.chmod(0o644)
        add_user(path, "bob", "pw two", hasher=FAST)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        path.chmod(0o666)
        remove_user(path, "bob")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, users_file, monkeypatch):
    before = users_file.read_bytes()

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(auth.os, "replace", full_disk)
    with pytest.raises(AuthError) as e:
        add_user(users_file, "carol", "pw three", hasher=FAST)
    assert "No space left on device" in one_line(e.value) and "Nothing was changed" in str(e.value)
    assert users_file.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.json"]


def test_a_symlinked_auth_file_is_written_through_to_its_target(tmp_path):
    target = tmp_path / "real.json"
    link = tmp_path / "link.json"
    add_user(target, "alice", "pw one", hasher=FAST)
    link.symlink_to(target)
    add_user(link, "bob", "pw two", hasher=FAST)
    assert link.is_symlink() and list_users(target) == ["alice", "bob"]


def test_concurrent_adds_lose_no_user(tmp_path):
    path = tmp_path / "users.json"
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            add_user(path, f"user{i}", f"password {i}", hasher=FAST)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert list_users(path) == sorted(f"user{i}" for i in range(12))


def _hash() -> str:
    return FAST.hash("x")


def _doc(users) -> bytes:
    return json.dumps({"format": "tqa-users", "version": 1, "users": users}).encode()


@pytest.mark.parametrize("raw, needle", [
    (b"", "not valid JSON"),
    (b"{", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[]", "not a tqa users file"),
    (b'{"users": {}}', "not a tqa users file"),
    (b'{"format": "tqa-users", "version": "1", "users": {}}', "version"),
    (b'{"format": "tqa-users", "version": true, "users": {}}', "version"),
    (b'{"format": "tqa-users", "version": 1, "users": []}', '"users" is not an object'),
    (_doc({"a:b": "$argon2id$"}), "bad user name"),
    (_doc({"": "$argon2id$"}), "bad user name"),
    (_doc({unicodedata.normalize("NFD", "José"): "x"}), "not in NFC"),
    (_doc({"alice": "correct horse"}), "unusable"),  # a plaintext password where a hash belongs
    (_doc({"alice": None}), "unusable"),
    (_doc({"alice": "$2b$12$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"}), "unusable"),  # bcrypt
    (_doc({"alice": PasswordHasher(type=__import__("argon2").Type.I, time_cost=1, memory_cost=8,
                                   parallelism=1).hash("x")}), "unusable"),  # argon2i, not argon2id
    (_doc({"alice": "$argon2id$v=19$m=4194304,t=3,p=4$c2FsdHNhbHRzYWx0$"
                    "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"}), "out of bounds"),  # 4 GiB a login
    (_doc({"alice": "$argon2id$v=19$m=8,t=1000,p=1$c2FsdHNhbHRzYWx0$"
                    "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"}), "out of bounds"),
    (b'{"format": "tqa-users", "version": 1, "users": {"a": "h", "a": "h"}}', "appears twice"),
])
def test_damaged_files_are_refused_in_one_line(raw, needle, tmp_path):
    path = tmp_path / "users.json"
    path.write_bytes(raw)
    for call in (lambda: read_users(path), lambda: Authenticator(path)):
        with pytest.raises(AuthError) as e:
            call()
        msg = one_line(e.value)
        assert needle in msg and str(path) in msg, msg
    with pytest.raises(AuthError):  # a damaged file is never overwritten by `tqa user add`
        add_user(path, "carol", "pw three", hasher=FAST)
    assert path.read_bytes() == raw


def test_truncated_hash_is_refused(users_file):
    data = json.loads(users_file.read_text())
    data["users"]["alice"] = data["users"]["alice"][:-30]  # 13 of 43 characters left
    with pytest.raises(AuthError, match="unusable"):
        parse_users(json.dumps(data).encode(), users_file)


def test_a_file_from_a_newer_tqa_says_to_upgrade(tmp_path):
    path = tmp_path / "users.json"
    path.write_bytes(json.dumps({"format": "tqa-users", "version": 2, "users": {}}).encode())
    with pytest.raises(AuthError, match="newer tqa"):
        read_users(path)


@pytest.mark.parametrize("make, needle", [
    (lambda p: None, "There is no auth file"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: write_users(p, {}), "has no users"),
])
def test_the_server_does_not_start_on_a_missing_folder_or_empty_file(tmp_path, make, needle):
    path = tmp_path / "users.json"
    make(path)
    with pytest.raises(AuthError) as e:
        Authenticator(path)
    assert needle in one_line(e.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_refused(users_file):
    users_file.chmod(0)
    with pytest.raises(AuthError, match="Cannot read the auth file"):
        Authenticator(users_file)


def test_an_oversized_file_is_refused_without_reading_it_all(tmp_path, monkeypatch):
    monkeypatch.setattr(auth, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "users.json"
    path.write_bytes(b" " * 5000)
    with pytest.raises(AuthError, match="larger than"):
        read_users(path)


# ---- the rate limiter (an injected clock: no sleeping) -------------------------------------------------------


def fail(limiter: RateLimiter, name: str) -> float:
    """One wrong-password attempt; returns the wait when it was refused instead (0.0 when it was checked)."""
    wait = limiter.begin(name)
    if wait == 0:
        limiter.end(name, False)
    return wait


def test_guessing_one_name_is_refused_quickly_and_backs_off_exponentially():
    clock = Clock()
    lim = RateLimiter(clock=clock)  # the defaults the README states: 5 free, then 1 s doubling up to 15 minutes
    assert [fail(lim, "alice") for _ in range(5)] == [0.0] * 5  # a few typos are free
    assert lim.begin("alice") == pytest.approx(1.0)  # the 6th guess is refused at once, not checked
    assert lim.begin("alice") == pytest.approx(1.0)  # and refused attempts don't extend the wait
    waits = []
    for _ in range(12):
        clock.advance(waits[-1] if waits else 1.0)
        assert fail(lim, "alice") == 0.0
        waits.append(lim.begin("alice"))
    assert waits[:4] == pytest.approx([2.0, 4.0, 8.0, 16.0])
    assert waits[-1] == pytest.approx(900.0) and max(waits) == pytest.approx(900.0)  # capped at 15 minutes


def test_the_right_password_works_for_the_user_after_the_window():
    clock = Clock()
    lim = RateLimiter(free=3, base_delay=10.0, clock=clock)
    for _ in range(3):
        fail(lim, "alice")
    assert lim.begin("alice") > 0  # the legitimate user is refused while the name waits...
    clock.advance(10.0)
    assert lim.begin("alice") == 0.0  # ...and admitted after the window
    lim.end("alice", True)
    assert [fail(lim, "alice") for _ in range(3)] == [0.0] * 3  # a success forgets the failures


def test_one_name_under_attack_does_not_lock_another():
    lim = RateLimiter(free=3, clock=Clock())
    for _ in range(10):
        fail(lim, "alice")
    assert lim.begin("alice") > 0
    assert lim.begin("bob") == 0.0


def test_parallel_attempts_cannot_slip_past_the_limit():
    lim = RateLimiter(free=3, clock=Clock())
    assert [lim.begin("alice") for _ in range(3)] == [0.0] * 3  # three passwords being checked at once
    assert lim.begin("alice") > 0  # a fourth must wait, though none has failed yet


def test_failures_across_many_names_are_limited_overall():
    clock = Clock()
    lim = RateLimiter(clock=clock)  # the README's default: 60 failed logins a minute in all
    for i in range(60):
        assert fail(lim, f"user{i}") == 0.0  # password spraying: one guess per name
    wait = lim.begin("someone-new")
    assert wait == pytest.approx(60.0)
    clock.advance(30.0)
    assert lim.begin("someone-new") == pytest.approx(30.0)
    clock.advance(30.0)
    assert lim.begin("someone-new") == 0.0


def test_old_failures_are_forgotten():
    clock = Clock()
    lim = RateLimiter(free=3, forget_after=3600.0, clock=clock)
    for _ in range(3):
        fail(lim, "alice")
    clock.advance(3601.0)
    assert [fail(lim, "alice") for _ in range(3)] == [0.0] * 3


def test_the_limiter_remembers_a_bounded_number_of_names():
    lim = RateLimiter(max_names=100, overall_limit=10**9, clock=Clock())
    for i in range(1000):
        fail(lim, f"random-{i}")
    assert len(lim._names) <= 100


# ---- the authenticator --------------------------------------------------------------------------------------


class Recorder:
    """Stands in for argon2's verify and records which hashes were checked."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    def verify(self, h: str, password: str) -> bool:
        self.checked.append(h)
        return bool(FAST.verify(h, password))


def test_right_password_admitted_wrong_refused(users_file):
    a = Authenticator(users_file, log=lambda line: None)
    assert a.verify("alice", "correct horse").ok
    assert not a.verify("alice", "battery staple").ok  # bob's password
    assert not a.verify("bob", "correct horse").ok
    assert not a.verify("carol", "correct horse").ok
    assert not a.verify("Alice", "correct horse").ok  # names are exact
    assert not a.verify("alice", "").ok and not a.verify("alice", "x" * 5000).ok
    assert a.verify(unicodedata.normalize("NFD", "alice"), "correct horse").ok


def test_an_unknown_name_costs_one_hash_with_the_same_parameters_as_a_known_one(users_file, monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(auth, "_VERIFIER", rec)
    a = Authenticator(users_file, log=lambda line: None)
    users = read_users(users_file)
    for name, password in [("alice", "wrong"), ("nobody", "wrong"), ("alice", "correct horse"),
                           ("nobody", "correct horse"), ("alice", ""), ("nobody", "")]:
        before = len(rec.checked)
        a.verify(name, password)
        [h] = rec.checked[before:]  # exactly one argon2 check, known name or not
        assert extract_parameters(h) == extract_parameters(users["alice"])
        assert (h == users["alice"]) == (name == "alice" and password != "")


def test_rate_limited_logins_are_refused_without_hashing(users_file, monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(auth, "_VERIFIER", rec)
    clock = Clock()
    logged: list[str] = []
    a = Authenticator(users_file, limiter=RateLimiter(free=3, base_delay=5.0, clock=clock), log=logged.append)
    for _ in range(3):
        assert a.verify("alice", "guess") == auth.Attempt(False)
    assert any("3 failed logins in a row for 'alice'" in line for line in logged)
    n = len(rec.checked)
    refused = a.verify("alice", "correct horse")
    assert not refused.ok and refused.retry_after == pytest.approx(5.0) and len(rec.checked) == n
    refused = a.verify("nosuchuser", "x")  # unknown names are limited the same way (no enumeration)
    assert refused.retry_after == 0.0
    clock.advance(5.0)
    assert a.verify("alice", "correct horse").ok


def test_gradio_check_is_a_coroutine_that_refuses_with_a_retry_message(users_file):
    import inspect

    from fastapi import HTTPException

    clock = Clock()
    a = Authenticator(users_file, limiter=RateLimiter(free=1, base_delay=30.0, clock=clock), log=lambda line: None)
    assert inspect.iscoroutinefunction(a.gradio_check)  # Gradio awaits it: argon2 never blocks the server
    assert asyncio.run(a.gradio_check("alice", "wrong")) is False
    with pytest.raises(HTTPException) as e:
        asyncio.run(a.gradio_check("alice", "correct horse"))
    assert e.value.status_code == 400 and "try again in 30 s" in e.value.detail
    clock.advance(30)
    assert asyncio.run(a.gradio_check("alice", "correct horse")) is True


def test_changes_to_the_file_take_effect_without_a_restart(users_file):
    a = Authenticator(users_file, log=lambda line: None)
    changed: list[set[str]] = []
    a.on_change(changed.append)
    assert not a.verify("carol", "pw three").ok
    add_user(users_file, "carol", "pw three", hasher=FAST)
    assert a.verify("carol", "pw three").ok and changed == []  # a new user ends nobody's session
    add_user(users_file, "alice", "new password", hasher=FAST)  # same size, same second: seen all the same
    assert not a.verify("alice", "correct horse").ok
    assert a.verify("alice", "new password").ok
    assert changed == [{"alice"}]
    remove_user(users_file, "bob")
    assert not a.verify("bob", "battery staple").ok
    assert changed[-1] == {"bob"} and a.users() == ["alice", "carol"]


def test_a_same_size_rewrite_with_old_times_is_still_seen(users_file):
    """A file replaced in place with its times set back (as `cp -p` does) changes its ctime, which is checked."""
    a = Authenticator(users_file, log=lambda line: None)
    st = users_file.stat()
    old = (st.st_atime - 100, st.st_mtime - 100)
    os.utime(users_file, old)
    a.refresh()
    data = json.loads(users_file.read_text())
    data["users"]["alice"] = FAST.hash("other pw12345")[: len(data["users"]["alice"])]
    body = json.dumps(data, indent=1).encode() + b"\n"
    users_file.write_bytes(body)
    os.utime(users_file, old)
    a.wall_clock = lambda: st.st_mtime + 3600  # long after the last change: only the signature decides
    a.refresh()
    assert read_users(users_file)["alice"] == data["users"]["alice"]
    assert a._users["alice"] == data["users"]["alice"]


def test_a_recent_change_is_seen_even_when_size_times_and_inode_look_the_same(users_file, monkeypatch):
    """Within a clock tick, an atomic replace can reuse the old inode and keep the size (hashes have a fixed
    length): a file changed in the last seconds is read again and compared."""
    a = Authenticator(users_file, log=lambda line: None)
    monkeypatch.setattr(a, "_signature", lambda: (1, 2, 3, 4, 5))
    a._sig = (1, 2, 3, 4, 5)
    now = users_file.stat().st_mtime
    a.wall_clock = lambda: now  # the file's times (4 and 5 ns after the epoch) are long past...
    add_user(users_file, "alice", "new password", hasher=FAST)
    assert a.verify("alice", "correct horse").ok  # ...so the unchanged signature is trusted
    a.wall_clock = lambda: 1.0  # but a file changed within RACY_SECONDS is read and compared
    assert a.verify("alice", "new password").ok


def test_a_file_damaged_while_serving_refuses_new_logins_until_fixed(users_file):
    logged: list[str] = []
    a = Authenticator(users_file, log=logged.append)
    good = users_file.read_bytes()
    users_file.write_bytes(b"{ not json")
    assert not a.verify("alice", "correct horse").ok
    assert not a.verify("alice", "correct horse").ok
    assert len([line for line in logged if "damaged" in line]) == 1  # said once, not at every attempt
    assert "New logins are refused" in logged[0]
    users_file.unlink()
    assert not a.verify("alice", "correct horse").ok
    assert any("There is no auth file" in line for line in logged)
    users_file.write_bytes(good)
    assert a.verify("alice", "correct horse").ok
    assert "readable again" in logged[-1]


def test_sessions_of_removed_users_or_changed_passwords_end(users_file):
    a = Authenticator(users_file, log=lambda line: None)
    table = a.sessions({"t-alice": "alice", "t-bob": "bob"})
    table["t-alice-2"] = "alice"  # as Gradio's /login adds one
    assert table.get("t-alice") == "alice" and table.get("t-bob") == "bob"
    remove_user(users_file, "alice")
    assert table.get("t-alice") is None and table.get("t-alice-2") is None  # looked up: the file is re-read
    assert table.get("t-bob") == "bob"
    add_user(users_file, "bob", "a new password", hasher=FAST)
    assert table.get("t-bob") is None


# ---- who may serve without a login ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LocalHost", "::1"])
def test_local_hosts_need_no_login(host):
    assert check_exposure(host, auth=False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "127.0.0.2", "192.168.1.20", "10.0.0.1", "example.org",
                                  "localhost.example.org", "0"])
def test_other_hosts_need_a_login_or_the_insecure_flag(host):
    with pytest.raises(AuthRequired) as e:
        check_exposure(host, auth=False)
    msg = one_line(e.value)
    assert "--auth-file" in msg and "--insecure-no-auth" in msg
    assert check_exposure(host, auth=True) is None
    warning = check_exposure(host, auth=False, insecure_no_auth=True)
    assert warning and "without authentication" in warning


# ---- the `tqa user` commands ------------------------------------------------------------------------------------


@pytest.fixture
def fast_cli(monkeypatch):
    """The CLI hashing with weak parameters, so that these tests stay quick."""
    monkeypatch.setattr(auth, "password_hasher", lambda: FAST)


def run_main(monkeypatch, capsys, args, stdin: str | None = "", tty: bool = False):
    stream = io.StringIO(stdin or "")
    stream.isatty = lambda: tty  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "stdin", stream)
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_user_add_from_stdin_list_and_remove(tmp_path, monkeypatch, capsys, fast_cli):
    path = str(tmp_path / "users.json")
    code, _, err = run_main(monkeypatch, capsys, ["user", "add", "alice", "--auth-file", path], "correct horse\n")
    assert code == 0 and "added alice" in err
    code, _, err = run_main(monkeypatch, capsys, ["user", "add", "bob", "--auth-file", path], "b pw\r\n")
    assert code == 0
    assert FAST.verify(read_users(path)["bob"], "b pw")  # the line ending is not part of the password
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    code, out, _ = run_main(monkeypatch, capsys, ["user", "list", "--auth-file", path])
    assert code == 0 and out.splitlines() == ["alice", "bob"] and "argon2" not in out
    code, _, err = run_main(monkeypatch, capsys, ["user", "add", "alice", "--auth-file", path], "another one")
    assert code == 0 and "replaced the password of alice" in err
    assert FAST.verify(read_users(path)["alice"], "another one")
    code, _, err = run_main(monkeypatch, capsys, ["user", "remove", "alice", "--auth-file", path])
    assert code == 0 and "1 user left" in err
    code, _, err = run_main(monkeypatch, capsys, ["user", "remove", "bob", "--auth-file", path])
    assert code == 0 and "will not start until you add one" in err
    assert list_users(path) == []


def test_user_commands_default_to_tqa_users_json(tmp_path, monkeypatch, capsys, fast_cli):
    monkeypatch.chdir(tmp_path)
    assert run_main(monkeypatch, capsys, ["user", "add", "alice"], "pw here")[0] == 0
    assert list_users(tmp_path / "tqa-users.json") == ["alice"]


@pytest.mark.parametrize("name, stdin, needle", [
    ("", "pw", "cannot be empty"),
    ("a:b", "pw", "':'"),
    ("a\x1bb", "pw", "'\\x1b'"),
    (" alice", "pw", "start or end with a space"),
    ("x" * 65, "pw", "at most 64"),
    ("alice", "", "password cannot be empty"),
    ("alice", "\n", "password cannot be empty"),
    ("alice", "   \n", "password cannot be empty"),
    ("alice", "one\ntwo\n", "more than one line"),
    ("alice", "x" * 2000, "at most 1024"),
])
def test_user_add_refuses_bad_names_and_passwords_in_one_line(tmp_path, monkeypatch, capsys, fast_cli, name, stdin,
                                                              needle):
    path = tmp_path / "users.json"
    code, out, err = run_main(monkeypatch, capsys, ["user", "add", "--auth-file", str(path), "--", name], stdin)
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not path.exists()


def test_user_add_on_a_terminal_asks_twice(tmp_path, monkeypatch, capsys, fast_cli):
    import getpass

    path = tmp_path / "users.json"
    answers = iter(["first pw", "first pw", "typed", "mistyped"])
    prompts: list[str] = []

    def fake_getpass(prompt=""):
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    code, _, _ = run_main(monkeypatch, capsys, ["user", "add", "alice", "--auth-file", str(path)], None, tty=True)
    assert code == 0 and len(prompts) == 2 and FAST.verify(read_users(path)["alice"], "first pw")
    code, _, err = run_main(monkeypatch, capsys, ["user", "add", "bob", "--auth-file", str(path)], None, tty=True)
    assert code == 1 and "passwords differ" in err and list_users(path) == ["alice"]


def test_the_password_is_never_taken_from_the_command_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["user", "add", "alice", "--password", "x"])
    assert e.value.code == 2
    capsys.readouterr()


def test_user_list_and_remove_on_a_missing_or_damaged_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users.json"
    for args in (["user", "list"], ["user", "remove", "alice"]):
        code, _, err = run_main(monkeypatch, capsys, [*args, "--auth-file", str(path)])
        assert code == 1 and "There is no auth file" in err and len(err.strip().splitlines()) == 1
    path.write_text("garbage")
    code, _, err = run_main(monkeypatch, capsys, ["user", "list", "--auth-file", str(path)])
    assert code == 1 and "damaged" in err and len(err.strip().splitlines()) == 1


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run([sys.executable, "-m", "tqa", *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=120)


def test_user_add_through_a_pipe_with_the_real_hasher(tmp_path):
    path = tmp_path / "users.json"
    r = cli("user", "add", "alice", "--auth-file", str(path), stdin="correct horse\n")
    assert r.returncode == 0, r.stderr
    h = read_users(path)["alice"]
    assert h.startswith("$argon2id$v=19$m=65536,t=3,p=4$") and PasswordHasher().verify(h, "correct horse")
    r = cli("user", "list", "--auth-file", str(path))
    assert r.returncode == 0 and r.stdout == "alice\n"


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.2", "192.168.1.20"])
def test_serve_on_a_non_local_host_without_a_login_is_refused_before_anything_starts(tmp_path, host):
    # No index exists: the refusal comes first, in one line, and nothing is loaded or bound.
    r = cli("serve", "--host", host, "--port", str(free_port()), "--index", str(tmp_path / "none"))
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"error: Serving on {host} needs a login: pass --auth-file FILE (create it with `tqa user add NAME "
        "--auth-file FILE`), or --insecure-no-auth to let anyone who can reach it ask and add documents.")


def test_serve_with_a_missing_or_damaged_auth_file_stops_in_one_line(tmp_path):
    path = tmp_path / "users.json"
    for make, needle in ((lambda: None, "There is no auth file"), (lambda: path.write_text("{"), "damaged"),
                         (lambda: write_users(path, {}), "has no users")):
        make()
        r = cli("serve", "--auth-file", str(path), "--index", str(tmp_path / "none"))
        assert r.returncode == 1 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_serve_refuses_both_a_login_and_no_login(tmp_path):
    r = cli("serve", "--auth-file", "x.json", "--insecure-no-auth")
    assert r.returncode == 2 and "not allowed with" in r.stderr


def test_launch_refuses_a_non_local_host_without_a_login_and_binds_nothing(users_file):
    from tqa.web import launch

    class NoServer:
        tqa_page = None

        def launch(self, **kwargs):  # pragma: no cover - must not be reached
            raise AssertionError("a server was started")

    with pytest.raises(AuthRequired):
        launch(NoServer(), None, host="0.0.0.0", port=free_port())  # type: ignore[arg-type]


# ---- a running server ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qa(tmp_path_factory) -> Assistant:
    root = tmp_path_factory.mktemp("auth-web")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "sweden.md").write_text(
        "# Sweden\n\nSweden criminalises the purchase of sex rather than its sale.\n", encoding="utf-8")
    (corpus / "tech.txt").write_text("Traffickers use social media to recruit victims.\n", encoding="utf-8")
    embedder = FakeEmbedder()
    build_index(corpus, root / "index", embedder=embedder)
    return Assistant.load(root / "index", embedder=embedder)


@pytest.fixture(scope="module")
def served(qa, tmp_path_factory):
    """The app with a login, on a free loopback port; its limiter runs on a clock the tests move."""
    from tqa.web import build_app, launch

    path = tmp_path_factory.mktemp("auth-users") / "users.json"
    add_user(path, "alice", "correct horse", hasher=FAST)
    add_user(path, "bob", "battery staple", hasher=FAST)
    clock = Clock()
    authenticator = Authenticator(path, limiter=RateLimiter(free=3, base_delay=60.0, clock=clock),
                                  log=lambda line: None)
    app = build_app(qa, max_upload_bytes=64 * 1024)
    _, url, _ = launch(app, qa, host="127.0.0.1", port=free_port(), auth=authenticator, block=False, quiet=True)
    try:
        yield url.rstrip("/"), path, clock
    finally:
        app.close()


def login(url: str, name: str, password: str) -> httpx.Response:
    return httpx.post(f"{url}/login", data={"username": name, "password": password}, timeout=30)


def logged_in(url: str, name: str, password: str) -> httpx.Client:
    r = login(url, name, password)
    assert r.status_code == 200, r.text
    return httpx.Client(base_url=url, cookies=r.cookies, timeout=30)


def ask_fn_index(url: str, http: httpx.Client) -> int:
    config = http.get("/config").json()
    return next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "ask")


def test_the_ask_api_refuses_an_unauthenticated_client_and_answers_an_authenticated_one(served, qa):
    from gradio_client import Client
    from gradio_client.exceptions import AuthenticationError

    url, _, _ = served
    with pytest.raises(AuthenticationError):
        Client(url, verbose=False)
    with pytest.raises(ValueError, match="Could not login"):
        Client(url, auth=("alice", "wrong password"), verbose=False)
    client = Client(url, auth=("alice", "correct horse"), verbose=False)
    res = client.predict("Sweden purchase of sex", 2, "hybrid", None, api_name="/ask")
    assert res == qa.ask("Sweden purchase of sex", k=2).to_dict()
    assert res["passages"][0]["source"] == "sweden.md"


def test_every_route_that_answers_or_serves_refuses_an_unauthenticated_client(served, qa):
    url, users, _ = served
    with logged_in(url, "bob", "battery staple") as http:
        fn = ask_fn_index(url, http)
        [upload] = http.post("/gradio_api/upload", files={"files": ("a.md", b"# A\n\nhello\n", "text/markdown")}
                             ).json()
        assert http.get(f"/gradio_api/file={upload}").status_code == 200  # so the refusals below mean something
        assert http.post("/gradio_api/call/ask", json={"data": ["Sweden", 2, "hybrid", None]}).status_code == 200
    question = {"data": ["Sweden purchase of sex", 2, "hybrid", None]}
    forged = {"access-token-unsecure-x": "not-a-token", "access-token-x": "not-a-token"}
    for cookies in ({}, forged):
        with httpx.Client(base_url=url, cookies=cookies, timeout=30) as anon:
            refused = [
                anon.get("/config"),
                anon.get("/gradio_api/info"),
                anon.get("/gradio_api/openapi.json"),
                anon.post("/gradio_api/call/ask", json=question),
                anon.post("/gradio_api/call/v2/ask", json=question),
                anon.post("/gradio_api/run/ask", json=question),
                anon.post("/gradio_api/api/ask", json=question),
                anon.post("/gradio_api/queue/join", json={**question, "fn_index": fn, "session_hash": "abcdef"}),
                anon.get("/gradio_api/queue/data", params={"session_hash": "abcdef"}),
                anon.get(f"/gradio_api/file={upload}"),
                anon.get(f"/gradio_api/file/{upload}"),
                anon.post("/gradio_api/upload", files={"files": ("b.md", b"# B\n", "text/markdown")}),
            ]
            for r in refused:
                assert r.status_code == 401, (r.request.url, r.status_code, r.text[:200])
                assert "Sweden" not in r.text and "hello" not in r.text
            page = anon.get("/")  # the page itself is the login form: no components, no documents
            assert page.status_code == 200 and '"auth_required":true' in page.text.replace(" ", "")
            assert "sweden.md" not in page.text


def test_the_auth_file_is_never_served_even_to_a_logged_in_user(served):
    url, users, _ = served
    with logged_in(url, "alice", "correct horse") as http:
        r = http.get(f"/gradio_api/file={users.resolve()}")
        assert r.status_code in (400, 403, 404) and "argon2" not in r.text


def test_failed_logins_through_the_server_are_limited_and_the_user_gets_in_after_the_window(served):
    url, _, clock = served
    for _ in range(3):
        r = login(url, "bob", "guess")
        assert r.status_code == 400 and "Incorrect credentials" in r.text
    r = login(url, "bob", "battery staple")  # right password, but the name is waiting
    assert r.status_code == 400 and "Too many failed logins; try again in 60 s" in r.text
    assert login(url, "alice", "correct horse").status_code == 200  # another name is not held up
    clock.advance(60)
    assert login(url, "bob", "battery staple").status_code == 200


def test_a_user_added_while_serving_can_log_in_and_a_removed_one_is_logged_out(served):
    url, users, _ = served
    assert login(url, "carol", "pw three").status_code == 400
    add_user(users, "carol", "pw three", hasher=FAST)
    with logged_in(url, "carol", "pw three") as http:
        assert http.get("/config").status_code == 200
        remove_user(users, "carol")
        assert http.get("/config").status_code == 401  # the session ended at its next request
        assert http.post("/gradio_api/call/ask", json={"data": ["Sweden", 2, "hybrid", None]}).status_code == 401
    assert login(url, "carol", "pw three").status_code == 400


def test_a_new_password_ends_the_old_sessions(served):
    url, users, _ = served
    with logged_in(url, "alice", "correct horse") as http:
        assert http.get("/config").status_code == 200
        add_user(users, "alice", "a fresh password", hasher=FAST)
        assert http.get("/config").status_code == 401
    assert login(url, "alice", "correct horse").status_code == 400
    assert login(url, "alice", "a fresh password").status_code == 200
    add_user(users, "alice", "correct horse", hasher=FAST)  # as the other tests expect


def test_a_login_on_a_non_local_loopback_address(qa, tmp_path):
    """127.0.0.2 counts as non-local (only 127.0.0.1, localhost and ::1 do not), yet never leaves the machine."""
    from gradio_client import Client

    from tqa.web import build_app, launch

    path = tmp_path / "users.json"
    add_user(path, "alice", "correct horse", hasher=FAST)
    app = build_app(qa)
    port = free_port()
    with pytest.raises(AuthRequired):
        launch(app, qa, host="127.0.0.2", port=port, block=False, quiet=True)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.2:{port}/", timeout=5)  # nothing was bound
    _, url, _ = launch(app, qa, host="127.0.0.2", port=port, auth=Authenticator(path, log=lambda line: None),
                       block=False, quiet=True)
    try:
        assert httpx.get(f"{url.rstrip('/')}/config", timeout=10).status_code == 401
        client = Client(url, auth=("alice", "correct horse"), verbose=False)
        assert client.predict("Sweden", api_name="/ask")["passages"]
    finally:
        app.close()


@pytest.mark.model
@pytest.mark.slow
def test_tqa_serve_with_an_auth_file_end_to_end(default_index, tmp_path):
    """`tqa user add` through a pipe, then `tqa serve --auth-file` on a non-local loopback address: the process
    says a login is required, refuses an unauthenticated client, answers an authenticated one."""
    import signal
    import tempfile
    import time

    from gradio_client import Client
    from gradio_client.exceptions import AuthenticationError

    users = tmp_path / "users.json"
    assert cli("user", "add", "alice", "--auth-file", str(users), stdin="correct horse\n").returncode == 0
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    env.pop("PYTEST_CURRENT_TEST", None)
    with tempfile.TemporaryFile(mode="w+") as log:  # a file, not a pipe: the server can never block on it
        proc = subprocess.Popen([sys.executable, "-m", "tqa", "serve", "--index", str(default_index), "--host",
                                 "127.0.0.2", "--port", str(port), "--auth-file", str(users)],
                                env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            deadline, err = time.time() + 120, ""
            while time.time() < deadline and "Ctrl+C" not in err and proc.poll() is None:
                time.sleep(0.3)
                log.seek(0)
                err = log.read()
            assert "Ctrl+C" in err, err
            assert f"login required (1 user in {users})" in err and "warning" not in err
            url = f"http://127.0.0.2:{port}/"
            with pytest.raises(AuthenticationError):
                Client(url, verbose=False)
            client = Client(url, auth=("alice", "correct horse"), verbose=False)
            answer = client.predict("How has technology changed human trafficking?", api_name="/ask")
            assert answer["passages"] and not answer["abstained"]
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

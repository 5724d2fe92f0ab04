"""Load against a real `tqa serve` on loopback: 8 clients asking for 60 s through the HTTP API.

No errors, the same answers as one client asking the same questions one at a time, and a clear "queue full"
refusal (not a hang) when more requests arrive than the queue holds. Requests go only to 127.0.0.1 and the
loops are bounded in count and time. Figures are written to test-artifacts/load.json.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from .support import free_port

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "How has technology changed human trafficking?",
    "What responsibilities does the Palermo Protocol lay out for countries?",
    "How does Sweden's law treat people who buy sex?",
    "Why do NGOs matter in fighting trafficking?",
    "What makes national policies differ?",
    "How does corruption undermine international agreements?",
    "What is the tallest mountain in Africa?",
    "What should future strategies include?",
]
CLIENTS = 8
DURATION = float(os.environ.get("TQA_LOAD_SECONDS", "60"))
MAX_REQUESTS = 5000  # a bound on the whole test, whatever the speed

pytestmark = [pytest.mark.slow, pytest.mark.model]


def start_server(index: Path, env_extra: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", **(env_extra or {}))
    env.pop("PYTEST_CURRENT_TEST", None)
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty server can never block on it
    proc = subprocess.Popen([sys.executable, "-m", "tqa", "serve", "--index", str(index), "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    proc.log = log  # type: ignore[attr-defined]
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            message = log.read()
            stop(proc)
            raise AssertionError(f"server died: {message}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.3)
    else:
        stop(proc)
        raise AssertionError("server did not start")
    return proc, f"http://127.0.0.1:{port}/"


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.log.close()  # type: ignore[attr-defined]


def comparable(answer: dict) -> str:
    return json.dumps(answer, sort_keys=True)


def test_eight_clients_for_a_minute_get_the_serial_answers(default_index):
    from gradio_client import Client

    proc, url = start_server(default_index)
    try:
        serial_client = Client(url, verbose=False)
        serial = {q: comparable(serial_client.predict(q, 5, "hybrid", None, api_name="/ask")) for q in QUESTIONS}
        serial_latency = []
        for q in QUESTIONS * 2:
            t = time.perf_counter()
            serial_client.predict(q, 5, "hybrid", None, api_name="/ask")
            serial_latency.append(time.perf_counter() - t)

        results: list[tuple[float, bool]] = []  # (latency, same as serial)
        errors: list[str] = []
        lock = threading.Lock()
        stop_at = time.perf_counter() + DURATION

        def worker(n: int) -> None:
            client = Client(url, verbose=False)
            i = n
            while time.perf_counter() < stop_at:
                with lock:
                    if len(results) + len(errors) >= MAX_REQUESTS:
                        return
                q = QUESTIONS[i % len(QUESTIONS)]
                i += 1
                t = time.perf_counter()
                try:
                    answer = client.predict(q, 5, "hybrid", None, api_name="/ask")
                except Exception as exc:  # any failure is a finding
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    results.append((time.perf_counter() - t, comparable(answer) == serial[q]))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(CLIENTS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=DURATION + 120)
        elapsed = time.perf_counter() - t0
    finally:
        stop(proc)

    latencies = sorted(lat for lat, _ in results)
    report = {
        "clients": CLIENTS,
        "seconds": round(elapsed, 1),
        "requests": len(results),
        "errors": len(errors),
        "throughput_per_s": round(len(results) / elapsed, 2),
        "p50_s": round(statistics.median(latencies), 4),
        "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 4),
        "serial_p50_s": round(statistics.median(serial_latency), 4),
        "serial_throughput_per_s": round(1 / statistics.median(serial_latency), 2),
    }
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    assert not errors, errors[:3]
    assert len(results) >= CLIENTS * 5
    assert all(same for _, same in results), "a concurrent answer differed from the serial one"


def test_a_full_queue_answers_busy_at_once_instead_of_hanging(default_index):
    from gradio_client import Client

    proc, url = start_server(default_index, {"TQA_QUEUE_SIZE": "1"})
    outcomes: list[str] = []
    lock = threading.Lock()
    try:
        Client(url, verbose=False).predict("warm up", 5, "hybrid", None, api_name="/ask")

        def one(n: int) -> None:
            try:
                Client(url, verbose=False).predict(QUESTIONS[n % len(QUESTIONS)], 10, "hybrid", None,
                                                   api_name="/ask")
                result = "ok"
            except Exception as exc:
                result = str(exc)
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=one, args=(n,)) for n in range(24)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        elapsed = time.perf_counter() - t0
    finally:
        stop(proc)
    assert len(outcomes) == 24 and elapsed < 120, "a client hung"
    refused = [o for o in outcomes if o != "ok"]
    assert refused, "24 simultaneous requests never filled a queue of 1"
    assert all("full" in o.lower() or "busy" in o.lower() for o in refused), refused[:3]
    assert "ok" in outcomes


def _listening(port: int) -> list[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(addr)
    return found


def test_serve_listens_on_loopback_only_by_default(default_index):
    proc, url = start_server(default_index)
    try:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        addresses = _listening(port)
    finally:
        stop(proc)
    assert addresses == ["0100007F"], addresses  # 127.0.0.1, and nothing on 0.0.0.0 or ::


def test_serve_on_another_address_warns(default_index):
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    # 127.0.0.2 is loopback too (nothing leaves the machine) but is not the default: without a login tqa refuses
    # it (tests/test_auth.py), and with --insecure-no-auth it must warn
    proc = subprocess.Popen([sys.executable, "-m", "tqa", "serve", "--index", str(default_index), "--host",
                             "127.0.0.2", "--port", str(port), "--insecure-no-auth"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, err = time.time() + 90, ""
        while time.time() < deadline and "serving" not in err:
            line = proc.stderr.readline()
            if not line:
                break
            err += line
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert "warning: serving on 127.0.0.2 without authentication" in err

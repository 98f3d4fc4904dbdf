"""sd_notify against a real unix datagram socket the test listens on, as systemd would: the
engine (a real ``chargebridge engine`` process) sends READY=1 only once its API answers, keeps
sending WATCHDOG=1, and says STOPPING=1 on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from agent import sdnotify


def _listen(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(30)
    return s, path


def test_notify_and_watchdog_interval(tmp_path, monkeypatch):
    s, path = _listen(tmp_path)
    with s:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        assert sdnotify.notify("READY=1") is False  # no manager: nothing, no error
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sdnotify.notify("READY=1\nSTATUS=hi") is True
        assert s.recv(4096) == b"READY=1\nSTATUS=hi"
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
        assert sdnotify.notify("READY=1") is False
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}) == 10.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert sdnotify.watchdog_interval({}) is None


def test_abstract_socket_address(monkeypatch):
    name = f"cb-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(10)
    with s:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("WATCHDOG=1")
        assert s.recv(100) == b"WATCHDOG=1"


def test_watchdog_stops_pinging_when_the_engine_is_not_alive(tmp_path, monkeypatch):
    s, path = _listen(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    alive = {"ok": True}
    dog = sdnotify.Watchdog(lambda: alive["ok"], 0.05)
    dog._thread.start()
    with s:
        assert s.recv(100) == b"WATCHDOG=1"
        alive["ok"] = False
        dog._stop.wait(0.1)  # the ping in flight, if any, arrives now
        s.settimeout(0.01)
        try:
            while s.recv(100):
                pass
        except TimeoutError:
            pass
        s.settimeout(0.5)  # ten intervals without a ping
        try:
            got = s.recv(100)
        except TimeoutError:
            got = b""
        assert got == b""
        dog.stop()


def test_engine_ready_after_api_then_watchdog_then_stopping(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "chargebridge.toml").write_text("[api]\nport = 0\n")
    s, path = _listen(tmp_path)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="200000")  # pings every 0.1 s
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "--home", str(home), "engine"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with s:
            first = s.recv(4096).decode()
            assert first.startswith("READY=1\n"), first
            assert f"MAINPID={proc.pid}" in first
            # READY=1 came after the API was up: it answers at once
            info = json.loads((home / "engine.json").read_text())
            assert requests.get(f"http://127.0.0.1:{info['port']}/api/v1/health", timeout=5).json()["ok"]
            pings = [s.recv(100) for _ in range(5)]
            assert pings == [b"WATCHDOG=1"] * 5
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            msg = b""
            while time.monotonic() < deadline and msg != b"STOPPING=1":
                msg = s.recv(100)
            assert msg == b"STOPPING=1"
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""Tray and windows (PySide6). Talks to the engine only through its API."""

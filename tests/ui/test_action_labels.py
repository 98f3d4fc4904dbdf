"""The Activity page shows words for every alert the engine audits (alert.<kind>), not raw names."""

from __future__ import annotations

from core.states import AlertKind
from ui.models import ACTION_LABEL


def test_every_alert_kind_has_a_label() -> None:
    for kind in AlertKind:
        label = ACTION_LABEL.get(f"alert.{kind.value}", "")
        assert label.startswith("Alert: ") and kind.value not in label, kind

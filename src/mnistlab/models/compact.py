"""Compact models of the drill-down (filled by the drill-down experiments)."""

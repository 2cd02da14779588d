"""Enrichment: names for what the sensors report as numbers (see stage.py)."""

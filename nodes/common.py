"""Shared node constants."""

CATEGORY = "MCA-Ctrl"

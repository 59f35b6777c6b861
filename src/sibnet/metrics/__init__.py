"""Metrics, each with a function form; classification metrics live in ``classification``."""

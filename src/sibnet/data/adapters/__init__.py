"""Adapters: each turns one kind of source into the prepared layout.

See :mod:`sibnet.data.prepared` for the layout.
"""

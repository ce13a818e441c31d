"""The ``kitpin`` command line: one module per command (``resolve``, ``pin``, ``check``,
``run``), what they share in ``common``, and the parser and dispatch in ``app`` (the
console script ``kitpin = controller.cli:main``; ``python -m controller.cli`` too)."""

from __future__ import annotations

from controller.cli.app import build_parser, main

__all__ = ["build_parser", "main"]

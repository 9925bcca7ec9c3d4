"""Allow ``python -m bridge``."""

from __future__ import annotations

from bridge import cli

raise SystemExit(cli.main())

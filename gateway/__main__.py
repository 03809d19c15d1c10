"""``python -m gateway`` is ``claude-gateway``."""

from gateway.cli import main

raise SystemExit(main())

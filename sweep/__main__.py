"""python -m sweep: see sweep/__init__.py."""

from sweep.cli import main

raise SystemExit(main())

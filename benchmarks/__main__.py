"""python -m benchmarks --run runs/NAME [--threads 1,2,4] [--merge rows.json] ...: see benchmarks.cli."""

from benchmarks.cli import main

raise SystemExit(main())

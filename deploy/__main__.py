"""python -m deploy --run runs/NAME [--format FORMAT] [--out dist]: the same as python -m deploy.bundle."""

from deploy.bundle import main

raise SystemExit(main())

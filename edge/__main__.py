"""python -m edge --model runs/NAME/export/tflite_int8.tflite [--source 0] [--headless] ...: see edge.cli."""

from edge.cli import main

raise SystemExit(main())

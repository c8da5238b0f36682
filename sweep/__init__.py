"""python -m sweep: MobileNetV2 widths x input sizes -> the most accurate model within a latency budget.

python -m sweep --data digits --alphas 0.35,0.5 --sizes 96,128 --device pi4 --budget-ms 30
make sweep ARGS="--data ~/photos/flowers --device pi5 --budget-ms 20 --max-minutes 240"
python -m sweep --engine dask --scheduler tcp://HOST:8786 --out /shared/sweep-flowers ...   # over machines

Each grid point is an ordinary run, runs/sweep-NAME/aA-sS/ (e.g. a0.35-s96), made by train's, export's and the
benchmark's own functions on the same data. What is done is reused: train reuses a finished run of the same settings,
export is skipped while its manifest comes from the current model files, and the benchmark while bench/results.json
is newer than the manifest and has the rows asked for. So the same command, run again after an interruption, goes
on from where it stopped. Raspberry Pi latency is predicted (sweep/devices.py) unless rows measured on the board
are given with --merge. Writes sweep.csv, sweep.json, pareto.png and sweep.md into the sweep folder, and
sweep_engine.json (where each point ran). The points run one after another here, or with --engine dask on the
workers of a Dask cluster (sweep/engines.py: what the machines must share).

Exit codes: 0 a pick (sweep.md names it and the `make bundle` command); 2 a flag, the data or a --merge file cannot
be used (one line naming it); 3 nothing fits the budget, or no point produced a usable artifact (sweep.md names the
fastest option and its latency, or says why); 130 interrupted (run the same command again to go on).

One job per file: cli.py (the flags), settings.py (SweepSettings, resolve), run.py (train, export and benchmark
each point, then rank), engines.py (where the points run: here, or on a Dask cluster), rows.py (sweep.csv's
columns), devices.py (Raspberry Pi latency prediction), pareto.py (the front, the pick, the runner-up), report.py
(sweep.csv, sweep.json, pareto.png, sweep.md).
"""

"""The quality yardstick (issue 4): every model on every dataset and user segment.

    .venv/bin/python -m benchmarks.quality --datasets ml-100k,ml-latest-small,lastfm,synth \
        --seeds 3 --out docs/results-tables.md

See benchmarks/quality/run.py for the protocol and docs/results.md for the tables.
"""

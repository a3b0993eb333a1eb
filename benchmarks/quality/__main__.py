"""Command line of the quality yardstick: `python -m benchmarks.quality --help`."""

from benchmarks.quality.run import main

if __name__ == "__main__":
    main()

"""``python -m statesaga.cli``: the ``statesaga`` command."""

from statesaga.cli import main

if __name__ == "__main__":  # pragma: no cover - run as a program
    main()

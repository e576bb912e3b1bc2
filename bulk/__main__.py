"""`python -m bulk score INPUT OUTPUT ...`: see bulk/cli.py."""

from bulk.cli import main

if __name__ == "__main__":
    main()

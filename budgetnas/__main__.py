"""``python -m budgetnas`` behaves like the ``budgetnas`` console script."""

import sys

from budgetnas.cli import main

if __name__ == "__main__":
    sys.exit(main())

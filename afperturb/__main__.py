"""``python -m afperturb``: the same as the ``afperturb`` console script."""

from afperturb.cli import main

raise SystemExit(main())

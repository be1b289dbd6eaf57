"""`python -m loadtest` is `souk-loadtest`."""

from loadtest.cli import main

raise SystemExit(main())

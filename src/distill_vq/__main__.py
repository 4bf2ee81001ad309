"""`python -m distill_vq`: the `distill-vq` command."""

from .cli import main

raise SystemExit(main())

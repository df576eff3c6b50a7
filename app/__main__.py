"""`python -m app …` is the same as the `seedance-gateway` command."""

from app.cli import main

main()

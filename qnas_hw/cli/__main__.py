"""``python -m qnas_hw.cli``: the ``qnas-hw`` command."""

from qnas_hw.cli import main

main()

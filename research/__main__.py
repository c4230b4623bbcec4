"""``python -m research COMMAND ...``: the edgecifar command line with the experiment recipes registered.

The product's ``edgecifar train`` knows the shipped recipes only; experiments (research/recipes.py) train, resume
and export through this entry, from a clone of the repository (research/ is not in the wheel).
"""

import research.recipes  # noqa: F401  (registers the experiment recipes)
from edgecifar.cli import main

if __name__ == "__main__":
    main(prog_name="python -m research")

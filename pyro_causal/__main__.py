"""``python -m pyro_causal`` (or ``torchrun ... -m pyro_causal fit ...``): the ``pyro-causal`` command."""
import sys

from .cli import main

sys.exit(main())

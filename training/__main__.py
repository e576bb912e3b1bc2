"""``python -m training``: train the default model's layers (see training.cli)."""

import sys

from training.cli import main

sys.exit(main())

import sys

from mass_core.cli import main

sys.exit(main())

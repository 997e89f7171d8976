import sys

from slt_probe.cli import main

sys.exit(main())

"""``python -m tests.harness.demo up|play|info|down --dir DIR [--scale MB] [--seed S]``."""
import sys

from tests.harness.demo.host import main

sys.exit(main())

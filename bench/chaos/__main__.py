import sys

from bench.chaos.runner import main

sys.exit(main())

import sys

from bench.chaos.runner import main
from bench.common import stop_cleanly_on_sigterm

stop_cleanly_on_sigterm()
sys.exit(main())

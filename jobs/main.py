"""spark-submit's application file: `spark-submit jobs/main.py JOB [options]` (submit.sh does this)."""

import sys

from distill.cli import main

sys.exit(main())

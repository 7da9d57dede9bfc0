import sys

from detzoo.cli import main

sys.exit(main())

import sys

from detzoo.cli import entry_point

sys.exit(entry_point())

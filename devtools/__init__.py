"""Development tools of the detzoo repository, shared by tests/ and benchmarks/: not part of
the detzoo package, not in its sdist or wheel (pyproject.toml's package discovery,
MANIFEST.in). pytest finds it by pyproject.toml's ``pythonpath``; the benchmark scripts put
the repository root on ``sys.path``."""

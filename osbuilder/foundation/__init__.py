"""What every stage uses: errors, the runner, file and path safety, architectures, settings,
templates, progress, the cache. It imports nothing above it (tests/unit/test_structure.py)."""

"""The test suite; a package so that pipeline/smoke.py can reuse its mock board and fixtures."""

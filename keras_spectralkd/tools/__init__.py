"""Command-line tools, each a module with `main(argv=None) -> int` (console scripts in
pyproject.toml; thin wrappers in the repository's tools/ folder)."""

"""Weight blob: one binary file per model holding every weight tensor (see FORMAT.md)."""

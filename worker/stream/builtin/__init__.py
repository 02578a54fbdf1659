"""Label sets labelq ships, one JSON document each (the stored format: `{"version": N, "set": {...}}`), written
by tools/fit_builtin_labelsets.py from public data whose licences allow it (each set's `provenance` says which)."""

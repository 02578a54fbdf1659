"""The `labelq` command's groups, one module each (labelq/cli.py assembles them). Each is a thin shell: it reads
flags, calls the library (worker/, producer/, labelq's own demo and health), and prints; no logic of its own."""

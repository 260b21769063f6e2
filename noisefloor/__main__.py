from noisefloor.cli import main

# Guarded: the sweep's worker processes are spawned, and spawn re-imports the
# parent's __main__ module under another name.
if __name__ == "__main__":
    raise SystemExit(main())

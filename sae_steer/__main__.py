"""`python -m sae_steer ...` — see `sae_steer.cli`."""
from sae_steer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m sae_steer ...` — see `sae_steer.ui.cli`."""
from sae_steer.ui.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m definitions.checkout.provider``: the simulated provider as an HTTP service."""

from definitions.checkout.provider_service import main

main()

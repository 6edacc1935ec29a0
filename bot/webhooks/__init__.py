"""Provider webhooks, one module per channel; each exposes routes()."""

"""Channel adapters: pure parse/render functions per provider, thin HTTP glue in bot/web.py."""
